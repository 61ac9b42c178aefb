/**
 * The one seeded generator of a run (pure-rand's xoroshiro128+): every
 * latency, loss, churn, liar, arrival and the rng handed to the state
 * machines draw from it, in event order, so a seed fixes the whole run.
 */
import { uniformFloat64 } from "pure-rand/distribution/uniformFloat64";
import { xoroshiro128plus } from "pure-rand/generator/xoroshiro128plus";

export type Rng = () => number;

export function seededRng(seed: number): Rng {
  const generator = xoroshiro128plus(seed);
  return () => uniformFloat64(generator);
}

/** A standard normal draw (Box–Muller), from two uniforms. */
export function normal(rng: Rng): number {
  const u = 1 - rng();
  const v = rng();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

/** A log-normal draw with the given median and shape. */
export function logNormal(rng: Rng, median: number, sigma: number): number {
  return sigma === 0 ? median : median * Math.exp(sigma * normal(rng));
}

/** An exponential draw with the given mean (Poisson inter-arrival times). */
export function exponential(rng: Rng, mean: number): number {
  return -Math.log(1 - rng()) * mean;
}

/** A uniform whole number in [0, n). */
export function pick(rng: Rng, n: number): number {
  return Math.min(n - 1, Math.floor(rng() * n));
}

/** A stable hash of whole numbers to [0, 1), for assignments that must not depend on event order. */
export function hashUnit(a: number, b: number, c: number): number {
  let h =
    Math.imul(a ^ 0x9e3779b9, 0x85ebca6b) ^
    Math.imul(b + 0x632be5ab, 0xc2b2ae35) ^
    Math.imul(c + 0x165667b1, 0x27d4eb2f);
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d);
  h ^= h >>> 15;
  h = Math.imul(h, 0x846ca68b);
  h ^= h >>> 16;
  return (h >>> 0) / 2 ** 32;
}

/** Points of the tabulated standard normal: quantiles at (i + 0.5) / n. */
export const normalTableCount = 4096;

/** Inverse of the standard normal CDF (Acklam's rational approximation, |error| < 1.2e-9). */
export function inverseNormal(p: number): number {
  const a = [
    -39.69683028665376, 220.9460984245205, -275.9285104469687, 138.357751867269, -30.66479806614716, 2.506628277459239,
  ];
  const b = [-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572];
  const c = [
    -0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734, 4.374664141464968,
    2.938163982698783,
  ];
  const d = [0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416];
  const [a0, a1, a2, a3, a4, a5] = a as [number, number, number, number, number, number];
  const [b0, b1, b2, b3, b4] = b as [number, number, number, number, number];
  const [c0, c1, c2, c3, c4, c5] = c as [number, number, number, number, number, number];
  const [d0, d1, d2, d3] = d as [number, number, number, number];
  const low = 0.02425;
  if (p < low) {
    const q = Math.sqrt(-2 * Math.log(p));
    return (((((c0 * q + c1) * q + c2) * q + c3) * q + c4) * q + c5) / ((((d0 * q + d1) * q + d2) * q + d3) * q + 1);
  }
  if (p > 1 - low) {
    const q = Math.sqrt(-2 * Math.log(1 - p));
    return -(((((c0 * q + c1) * q + c2) * q + c3) * q + c4) * q + c5) / ((((d0 * q + d1) * q + d2) * q + d3) * q + 1);
  }
  const q = p - 0.5;
  const r = q * q;
  return (
    ((((((a0 * r + a1) * r + a2) * r + a3) * r + a4) * r + a5) * q) /
    (((((b0 * r + b1) * r + b2) * r + b3) * r + b4) * r + 1)
  );
}

/** exp(sigma * z) at the tabulated normal quantiles: a log-normal draw is then one uniform and one lookup. */
export function logNormalTable(sigma: number): Float64Array {
  const table = new Float64Array(normalTableCount);
  for (let i = 0; i < normalTableCount; i++) table[i] = Math.exp(sigma * inverseNormal((i + 0.5) / normalTableCount));
  return table;
}
