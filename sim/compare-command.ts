/**
 * `cimesh sim compare <a/metrics.json|dir> <b/metrics.json|dir> ...`: the
 * side-by-side view of a sweep for runs made separately (before and after a
 * code change, say). Each argument is one group: a metrics.json file, or a
 * directory whose metrics.json files below it (e.g. one per seed) are the
 * group's runs. Prints a table and writes compare.json and compare.html.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  type Comparison,
  compareGroups,
  comparisonJson,
  type GroupInput,
  metricsFilesUnder,
  readMetricsFile,
  runFigures,
} from "./compare.ts";
import { renderComparison } from "./compare-report.ts";
import { formatMs, formatNumber } from "./report.ts";

/** Groups a comparison takes at most. */
export const maxCompareGroupsCount = 100;

/** Reads each path as one group of runs; the error names the path and what was expected. */
export function compareFiles(paths: readonly string[]): Comparison {
  if (paths.length === 0) throw new Error("compare: expected at least one metrics.json file or directory");
  if (paths.length > maxCompareGroupsCount)
    throw new Error(`compare: expected at most ${maxCompareGroupsCount} paths, got ${paths.length}`);
  const inputs: GroupInput[] = paths.map((path) => {
    let files: string[];
    try {
      files = metricsFilesUnder(path);
    } catch {
      throw new Error(`${path}: expected a metrics.json file or a directory holding some, found nothing there`);
    }
    if (files.length === 0) throw new Error(`${path}: expected a metrics.json file below this directory, found none`);
    const runs = files.map((file) => {
      const metrics = readMetricsFile(file);
      return { seed: metrics.seed, figures: runFigures(metrics) };
    });
    return { label: path, sets: [], runs };
  });
  return compareGroups("compare", paths.join(" vs "), [], inputs, [], { groups: paths.length });
}

/** The comparison as a text table: a row per metric, a column per group (mean, and ± half the 95% interval). */
export function comparisonTable(comparison: Comparison): string {
  const header = ["metric", ...comparison.groups.map((_, i) => `#${i + 1}`), "verdict"];
  const rows = comparison.metrics.map((m) => [
    m.title,
    ...comparison.groups.map((g) => {
      const d = g.metrics[m.key];
      if (d === null || d === undefined) return "–";
      const show = (v: number) => (m.unit === "ms" ? formatMs(v) : formatNumber(v, m.unit === "index" ? 4 : 2));
      return d.ciLow === null || d.ciHigh === null
        ? show(d.mean)
        : `${show(d.mean)} ±${show((d.ciHigh - d.ciLow) / 2)}`;
    }),
    comparison.verdicts[m.key]?.text ?? "–",
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join("  ")
      .trimEnd();
  return [
    ...comparison.groups.map((g, i) => `#${i + 1}: ${g.label} (${g.seeds.length} run(s))`),
    line(header),
    ...rows.map(line),
    "",
  ].join("\n");
}

export function runCompareCommand(paths: readonly string[], options: { out?: string }): number {
  let comparison: Comparison;
  try {
    comparison = compareFiles(paths);
  } catch (error) {
    process.stderr.write(`cimesh: ${(error as Error).message}\n`);
    return 1;
  }
  const out = options.out ?? join("sim-out", "compare");
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, "compare.json"), comparisonJson(comparison));
  writeFileSync(join(out, "compare.html"), renderComparison(comparison));
  process.stdout.write(comparisonTable(comparison));
  process.stdout.write(`wrote ${join(out, "compare.json")} and ${join(out, "compare.html")}\n`);
  return 0;
}
