/**
 * Figures that must stay small whatever the run's size: latencies go into a
 * log-bucket histogram (2% wide), so a percentile costs no sorting and the
 * memory does not grow with the number of jobs.
 */

/** Relative width of one histogram bucket. */
export const histogramGrowth = 1.02;
/** Buckets of a histogram: covers 0 ms to beyond a week at 2% resolution. */
export const histogramBucketsCount = 1200;

export class Histogram {
  readonly counts = new Float64Array(histogramBucketsCount);
  count = 0;
  sum = 0;
  max = 0;

  add(value: number): void {
    const v = Math.max(0, value);
    const bucket = Math.min(histogramBucketsCount - 1, Math.floor(Math.log1p(v) / Math.log(histogramGrowth)));
    this.counts[bucket] = (this.counts[bucket] as number) + 1;
    this.count++;
    this.sum += v;
    if (v > this.max) this.max = v;
  }

  /** The value at quantile q (0..1): the middle of its bucket, rounded to a whole millisecond; null when empty. */
  quantile(q: number): number | null {
    if (this.count === 0) return null;
    const target = Math.max(1, Math.ceil(q * this.count));
    let seen = 0;
    for (let i = 0; i < histogramBucketsCount; i++) {
      seen += this.counts[i] as number;
      if (seen >= target) {
        const low = histogramGrowth ** i - 1;
        const high = histogramGrowth ** (i + 1) - 1;
        return Math.min(this.max, Math.round((low + high) / 2));
      }
    }
    return Math.round(this.max);
  }

  summary(): Percentiles {
    return {
      count: this.count,
      mean: this.count === 0 ? null : round(this.sum / this.count),
      p50: this.quantile(0.5),
      p90: this.quantile(0.9),
      p99: this.quantile(0.99),
      max: this.count === 0 ? null : Math.round(this.max),
    };
  }
}

export interface Percentiles {
  readonly count: number;
  readonly mean: number | null;
  readonly p50: number | null;
  readonly p90: number | null;
  readonly p99: number | null;
  readonly max: number | null;
}

/** Exact quantile of a sorted list (nearest rank). */
export function exactQuantile(sorted: readonly number[], q: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] as number;
}

/** Rounds to 4 significant decimals so that figures print the same everywhere. */
export function round(value: number): number {
  return Math.round(value * 10_000) / 10_000;
}

/** Jain's fairness index of non-negative values: 1 when all are equal, 1/n when one has everything. */
export function jainIndex(values: readonly number[]): number | null {
  if (values.length === 0) return null;
  let sum = 0;
  let squares = 0;
  for (const v of values) {
    sum += v;
    squares += v * v;
  }
  return squares === 0 ? 1 : round((sum * sum) / (values.length * squares));
}
