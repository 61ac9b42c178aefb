/**
 * A small benchmark harness: each figure is the median of several timed
 * samples, each sample long enough to swamp timer noise. Medians and ratios
 * only; these machines are shared and noisy.
 */
import { performance } from "node:perf_hooks";

export const defaultSamples = 7;
export const defaultSampleMs = 250;

export interface Rate {
  readonly name: string;
  readonly medianPerSecond: number;
  readonly minPerSecond: number;
  readonly maxPerSecond: number;
  readonly samples: number;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

/** Calls `operation` in a loop and reports its rate; `operation` must do one unit of work per call. */
export function measureRate(
  name: string,
  operation: () => unknown,
  samples = defaultSamples,
  sampleMs = defaultSampleMs,
): Rate {
  // Warm up so the JIT has compiled the hot path before any sample counts.
  const warmupEnd = performance.now() + sampleMs;
  let sink: unknown;
  while (performance.now() < warmupEnd) for (let i = 0; i < 64; i++) sink = operation();
  const rates: number[] = [];
  for (let s = 0; s < samples; s++) {
    let count = 0;
    const start = performance.now();
    let elapsed = 0;
    while (elapsed < sampleMs) {
      for (let i = 0; i < 64; i++) sink = operation();
      count += 64;
      elapsed = performance.now() - start;
    }
    rates.push((count * 1000) / elapsed);
  }
  if (sink === Symbol.for("never")) console.log(sink);
  return {
    name,
    medianPerSecond: median(rates),
    minPerSecond: Math.min(...rates),
    maxPerSecond: Math.max(...rates),
    samples,
  };
}

export function formatRate(rate: Rate): string {
  const fmt = (n: number) => Math.round(n).toLocaleString("en-US");
  return `${rate.name.padEnd(58)} ${fmt(rate.medianPerSecond).padStart(12)} /s   (min ${fmt(rate.minPerSecond)}, max ${fmt(rate.maxPerSecond)})`;
}
