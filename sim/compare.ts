/**
 * Side-by-side figures of groups of runs: a sweep's combinations (each over
 * its seeds, sim/sweep.ts) or runs made separately (`cimesh sim compare`).
 * For each key metric and group: the distribution over the runs (quartiles,
 * mean and its 95% confidence interval, Student's t), and per metric which
 * group is best or whether the best is within noise of others (intervals
 * overlap). Everything here is a pure function of the runs, in their order,
 * so the same runs give the same bytes.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import type { Metrics } from "./metrics.ts";
import { formatMs, formatNumber } from "./report.ts";
import { exactQuantile, round } from "./stats.ts";

export type MetricUnit = "count" | "ms" | "ratio" | "index";

/** One figure of a run that a comparison shows, and which way is better. */
export interface KeyMetric {
  readonly key: string;
  readonly title: string;
  readonly unit: MetricUnit;
  readonly better: "lower" | "higher";
  readonly of: (m: Metrics) => number | null;
}

export const keyMetrics: readonly KeyMetric[] = [
  { key: "jobsLost", title: "jobs lost", unit: "count", better: "lower", of: (m) => m.jobs.lost },
  {
    key: "wrongResultsAccepted",
    title: "wrong results accepted",
    unit: "count",
    better: "lower",
    of: (m) => m.jobs.wrongResultsAccepted,
  },
  { key: "jobsFailed", title: "jobs failed", unit: "count", better: "lower", of: (m) => m.jobs.failed },
  { key: "claimP50Ms", title: "claim latency p50", unit: "ms", better: "lower", of: (m) => m.claimLatencyMs.p50 },
  { key: "claimP99Ms", title: "claim latency p99", unit: "ms", better: "lower", of: (m) => m.claimLatencyMs.p99 },
  { key: "verdictP50Ms", title: "time to verdict p50", unit: "ms", better: "lower", of: (m) => m.timeToVerdictMs.p50 },
  { key: "verdictP99Ms", title: "time to verdict p99", unit: "ms", better: "lower", of: (m) => m.timeToVerdictMs.p99 },
  { key: "bidsPerJob", title: "bids per job", unit: "ratio", better: "lower", of: (m) => m.bidsPerJob },
  { key: "offersPerJob", title: "offers per job", unit: "ratio", better: "lower", of: (m) => m.offersPerJob },
  { key: "messagesPerJob", title: "messages per job", unit: "ratio", better: "lower", of: (m) => m.messagesPerJob },
  {
    key: "claimMessagesPerWantedRun",
    title: "claim messages per wanted run",
    unit: "ratio",
    better: "lower",
    of: (m) => m.claimMessagesPerWantedRun,
  },
  {
    key: "runsPerWorker",
    title: "runs per worker (mean; fewer for the same jobs is less waste)",
    unit: "ratio",
    better: "lower",
    of: (m) => m.load.runsPerWorker.mean,
  },
  {
    key: "jainCompletion",
    title: "fairness: Jain index of completion across projects",
    unit: "index",
    better: "higher",
    of: (m) => m.fairness.jainCompletion,
  },
  {
    key: "jainTimeToVerdict",
    title: "fairness: Jain index of speed across projects",
    unit: "index",
    better: "higher",
    of: (m) => m.fairness.jainTimeToVerdict,
  },
];

/** The key metrics of one run, by key (null where the run had none, e.g. no job ended). */
export type RunFigures = Record<string, number | null>;

export function runFigures(metrics: Metrics): RunFigures {
  const figures: RunFigures = {};
  for (const k of keyMetrics) figures[k.key] = k.of(metrics);
  return figures;
}

/** Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom. */
const t975ByDf = [
  12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.16, 2.145, 2.131, 2.12, 2.11,
  2.101, 2.093, 2.086, 2.08, 2.074, 2.069, 2.064, 2.06, 2.056, 2.052, 2.048, 2.045, 2.042,
];

/** Student's t at 97.5% for `df` degrees of freedom (beyond 30: 1.96 + 2.4/df, within 0.002 of the exact value). */
export function tQuantile975(df: number): number {
  if (df < 1) return Number.NaN;
  return t975ByDf[df - 1] ?? 1.96 + 2.4 / df;
}

/** A metric's values over a group's runs: quartiles, and the mean with its 95% interval (null with one run). */
export interface Distribution {
  readonly n: number;
  readonly mean: number;
  readonly ciLow: number | null;
  readonly ciHigh: number | null;
  readonly min: number;
  readonly p25: number;
  readonly p50: number;
  readonly p75: number;
  readonly max: number;
}

export function distribution(values: readonly (number | null)[]): Distribution | null {
  const xs = values.filter((v): v is number => v !== null && Number.isFinite(v)).sort((a, b) => a - b);
  const n = xs.length;
  if (n === 0) return null;
  const mean = xs.reduce((a, b) => a + b, 0) / n;
  let half: number | null = null;
  if (n > 1) {
    const variance = xs.reduce((a, x) => a + (x - mean) ** 2, 0) / (n - 1);
    half = tQuantile975(n - 1) * Math.sqrt(variance / n);
  }
  const q = (p: number) => exactQuantile(xs, p) as number;
  return {
    n,
    mean: round(mean),
    ciLow: half === null ? null : round(mean - half),
    ciHigh: half === null ? null : round(mean + half),
    min: xs[0] as number,
    p25: q(0.25),
    p50: q(0.5),
    p75: q(0.75),
    max: xs[n - 1] as number,
  };
}

/** A run that broke an invariant or threw: what to tell the operator. */
export interface RunFailure {
  readonly group: string;
  readonly seed: number;
  readonly problems: readonly string[];
  readonly command: string;
}

/** Runs to compare as one: a sweep's combination over its seeds, or the runs under one path. */
export interface GroupInput {
  readonly label: string;
  /** The fields set for this group (`dotted.field=value`), empty for runs compared from files. */
  readonly sets: readonly string[];
  readonly runs: readonly { readonly seed: number; readonly figures: RunFigures }[];
}

export interface GroupSummary {
  readonly label: string;
  readonly sets: readonly string[];
  readonly seeds: readonly number[];
  readonly metrics: Record<string, Distribution | null>;
  /** The figures of every run, in seed order: the distribution drawn from. */
  readonly runs: readonly RunFigures[];
}

/** Per metric: the best group by mean, and the groups whose interval overlaps the best's (within noise). */
export interface MetricVerdict {
  readonly best: string | null;
  readonly withinNoise: readonly string[];
  readonly text: string;
}

export interface Comparison {
  readonly kind: "sweep" | "compare";
  readonly title: string;
  /** What the groups vary: the swept fields in order, or empty when compared from files. */
  readonly fields: readonly string[];
  readonly metrics: readonly { key: string; title: string; unit: MetricUnit; better: "lower" | "higher" }[];
  readonly groups: readonly GroupSummary[];
  readonly verdicts: Record<string, MetricVerdict>;
  readonly failures: readonly RunFailure[];
  /** Anything else the comparison was made from (the scenario, the seeds, the reproduce command). */
  readonly context: Record<string, string | number | readonly string[]>;
}

function overlaps(a: Distribution, b: Distribution): boolean {
  const aLow = a.ciLow ?? a.mean;
  const aHigh = a.ciHigh ?? a.mean;
  const bLow = b.ciLow ?? b.mean;
  const bHigh = b.ciHigh ?? b.mean;
  return aLow <= bHigh && bLow <= aHigh;
}

export function verdictOf(
  metric: KeyMetric | Comparison["metrics"][number],
  groups: readonly GroupSummary[],
): MetricVerdict {
  const present = groups.flatMap((g) => {
    const d = g.metrics[metric.key];
    return d === null || d === undefined ? [] : [{ label: g.label, d }];
  });
  if (present.length === 0) return { best: null, withinNoise: [], text: "no values" };
  if (present.length === 1) {
    const only = present[0] as (typeof present)[number];
    return { best: only.label, withinNoise: [], text: `only ${only.label}` };
  }
  const first = (present[0] as (typeof present)[number]).d;
  if (present.every((p) => p.d.min === first.min && p.d.max === first.min))
    return {
      best: null,
      withinNoise: present.map((p) => p.label),
      text: `the same in every group (${metric.unit === "ms" ? formatMs(first.min) : formatNumber(first.min, 4)})`,
    };
  const sign = metric.better === "lower" ? 1 : -1;
  let best = present[0] as (typeof present)[number];
  for (const p of present) if (sign * p.d.mean < sign * best.d.mean) best = p;
  const noise = present.filter((p) => p !== best && overlaps(p.d, best.d)).map((p) => p.label);
  if (noise.length === present.length - 1)
    return {
      best: null,
      withinNoise: present.map((p) => p.label),
      text: "within noise: every interval overlaps the best's",
    };
  if (noise.length > 0)
    return { best: best.label, withinNoise: noise, text: `best ${best.label}, within noise of ${noise.join("; ")}` };
  return { best: best.label, withinNoise: [], text: `best ${best.label}` };
}

export function compareGroups(
  kind: Comparison["kind"],
  title: string,
  fields: readonly string[],
  inputs: readonly GroupInput[],
  failures: readonly RunFailure[],
  context: Comparison["context"],
): Comparison {
  const groups: GroupSummary[] = inputs.map((g) => {
    const metrics: Record<string, Distribution | null> = {};
    for (const k of keyMetrics) metrics[k.key] = distribution(g.runs.map((r) => r.figures[k.key] ?? null));
    return {
      label: g.label,
      sets: g.sets,
      seeds: g.runs.map((r) => r.seed),
      metrics,
      runs: g.runs.map((r) => r.figures),
    };
  });
  const verdicts: Record<string, MetricVerdict> = {};
  for (const k of keyMetrics) verdicts[k.key] = verdictOf(k, groups);
  return {
    kind,
    title,
    fields,
    metrics: keyMetrics.map(({ key, title, unit, better }) => ({ key, title, unit, better })),
    groups,
    verdicts,
    failures,
    context,
  };
}

/** Stable key order and formatting, so the same comparison gives the same bytes. */
export function comparisonJson(comparison: Comparison): string {
  return `${JSON.stringify(comparison, null, 2)}\n`;
}

/** Deepest a directory given to `compare` is searched for metrics.json files. */
export const maxCompareDepthCount = 6;

/** The metrics.json files a path names: itself, or every one below a directory (sorted by path). */
export function metricsFilesUnder(path: string, depth = 0): string[] {
  const stat = statSync(path);
  if (!stat.isDirectory()) return [path];
  if (depth >= maxCompareDepthCount) return [];
  const found: string[] = [];
  for (const name of readdirSync(path).sort()) {
    const child = join(path, name);
    if (name === "metrics.json" && !statSync(child).isDirectory()) found.push(child);
    else if (statSync(child).isDirectory()) found.push(...metricsFilesUnder(child, depth + 1));
  }
  return found;
}

/** Reads a metrics.json file; the error names the file and what was expected. */
export function readMetricsFile(path: string): Metrics {
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(path, "utf8"));
  } catch (error) {
    throw new Error(`${path}: expected a metrics.json file written by cimesh sim: ${(error as Error).message}`);
  }
  const m = value as Partial<Metrics> | null;
  if (
    m === null ||
    typeof m !== "object" ||
    typeof m.seed !== "number" ||
    m.jobs === undefined ||
    m.claimLatencyMs === undefined
  )
    throw new Error(`${path}: expected a metrics.json file written by cimesh sim (with seed, jobs and claimLatencyMs)`);
  return m as Metrics;
}
