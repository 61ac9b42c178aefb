/**
 * `cimesh sim <scenario.yaml> --sweep <dotted.field>=<v1>,<v2>,... [--sweep ...] --seeds N [--seed S] [--out DIR]`:
 * every combination of the swept values (the first `--sweep` outermost), each
 * over the seeds S .. S+N-1 (S: the scenario's seed unless given), run on
 * every core (worker threads running the same simulate() as a single run; a
 * run depends on its scenario and seed alone). Results are gathered by their
 * place in that order, not by when they finish, so the output is the same
 * bytes whatever the scheduling: comparison.json and comparison.html (the
 * distribution of the key metrics over the seeds of each combination, with
 * confidence intervals, and the best or within noise per metric; compare.ts).
 * A run that breaks an invariant or throws is named with its combination,
 * seed and the command that reproduces it, its own metrics and report written
 * under failures/, and the others' results are still written.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { Worker } from "node:worker_threads";
import cliProgress from "cli-progress";
import { type Comparison, compareGroups, comparisonJson, type GroupInput, type RunFailure } from "./compare.ts";
import { renderComparison } from "./compare-report.ts";
import type { Sabotage } from "./observer.ts";
import { renderReport, reproduceCommand } from "./report.ts";
import { maxSeed, metricsJson } from "./run.ts";
import type { Scenario } from "./scenario.ts";
import {
  maxSweepCombinationsCount,
  maxSweepFieldsCount,
  parseFieldValues,
  readScenarioSource,
  type SweptField,
  scenarioWith,
} from "./sweep-fields.ts";
import { runSweepTask, type SweepTask, type SweepTaskResult } from "./sweep-task.ts";

export const maxSweepSeedsCount = 10_000;
/** Runs of a sweep at most: combinations × seeds. */
export const maxSweepRunsCount = 1_000_000;

export interface SweepOptions {
  /** The `--sweep` texts, `dotted.field=v1,v2,...`. */
  readonly sweeps: readonly string[];
  /** Seeds per combination. */
  readonly seeds: number;
  /** The first seed (default: the scenario's). */
  readonly seed?: number;
  /** Worker threads (default: the machine's cores; 0 runs everything in this thread). */
  readonly threads?: number;
  readonly onProgress?: (done: number, total: number) => void;
  /** Test-only: break the run of this combination (by index) and seed on purpose. */
  readonly sabotage?: { readonly combination: number; readonly seed: number; readonly kind: Sabotage };
}

export interface Combination {
  readonly label: string;
  /** `dotted.field=value` of each swept field, in the order swept. */
  readonly sets: readonly string[];
  readonly scenario: Scenario;
}

export interface SweepOutcome {
  readonly comparison: Comparison;
  /** Runs that broke an invariant, with their metrics (for their own report). */
  readonly broken: readonly {
    readonly combination: Combination;
    readonly seed: number;
    readonly result: SweepTaskResult;
  }[];
}

/** Every combination of the swept values, the first field outermost, each validated as the file is. */
export function sweepCombinations(scenarioPath: string, sweeps: readonly string[]): Combination[] {
  if (sweeps.length === 0) throw new Error("--sweep: expected at least one <dotted.field>=<v1>,<v2>,...");
  if (sweeps.length > maxSweepFieldsCount)
    throw new Error(`--sweep: expected at most ${maxSweepFieldsCount} swept fields, got ${sweeps.length}`);
  const fields: SweptField[] = sweeps.map((text) => parseFieldValues("--sweep", text));
  const seen = new Set<string>();
  for (const f of fields) {
    if (seen.has(f.field)) throw new Error(`--sweep ${f.field}: expected each field swept once, got it twice`);
    seen.add(f.field);
  }
  const total = fields.reduce((n, f) => n * f.values.length, 1);
  if (total > maxSweepCombinationsCount)
    throw new Error(`--sweep: expected at most ${maxSweepCombinationsCount} combinations, got ${total}`);
  const source = readScenarioSource(scenarioPath);
  scenarioWith(source, []);
  const picks: { field: string; value: unknown; text: string }[][] = [[]];
  for (const f of fields) {
    const next: { field: string; value: unknown; text: string }[][] = [];
    for (const prefix of picks)
      f.values.forEach((value, i) => {
        next.push([...prefix, { field: f.field, value, text: f.texts[i] as string }]);
      });
    picks.splice(0, picks.length, ...next);
  }
  return picks.map((sets) => {
    const texts = sets.map((s) => `${s.field}=${s.text}`);
    return { label: texts.join(", "), sets: texts, scenario: scenarioWith(source, sets) };
  });
}

function workerUrl(): URL {
  return new URL(import.meta.url.endsWith(".ts") ? "./sweep-worker.ts" : "./sweep-worker.js", import.meta.url);
}

/** Runs the tasks on `threads` worker threads (or here, with 0), each result put at its task's index. */
async function runTasks(tasks: readonly SweepTask[], threads: number, done: () => void): Promise<SweepTaskResult[]> {
  const results: SweepTaskResult[] = new Array(tasks.length);
  if (threads <= 0) {
    for (const task of tasks) {
      results[task.index] = runSweepTask(task);
      done();
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    return results;
  }
  let next = 0;
  const lane = () =>
    new Promise<void>((resolve) => {
      const worker = new Worker(workerUrl());
      let current: SweepTask | null = null;
      const feed = () => {
        const task = tasks[next];
        if (task === undefined) {
          current = null;
          void worker.terminate().then(() => resolve());
          return;
        }
        next++;
        current = task;
        worker.postMessage(task);
      };
      worker.on("message", (result: SweepTaskResult) => {
        results[result.index] = result;
        done();
        feed();
      });
      // A thread that dies (out of memory, say) fails its run; the lane goes on in a fresh thread.
      worker.on("error", (error) => {
        const task = current;
        if (task !== null) {
          results[task.index] = {
            index: task.index,
            figures: null,
            violations: [],
            metrics: null,
            error: String(error),
          };
          done();
        }
        void worker.terminate();
        void lane().then(resolve);
      });
      feed();
    });
  await Promise.all(Array.from({ length: Math.min(threads, tasks.length) }, lane));
  return results;
}

/** The sweep's command line, for the report. */
export function sweepCommand(scenarioPath: string, sweeps: readonly string[], seeds: number, seed: number): string {
  return [
    `npx cimesh sim ${scenarioPath}`,
    ...sweeps.map((s) => `--sweep ${s}`),
    `--seeds ${seeds}`,
    `--seed ${seed}`,
  ].join(" ");
}

/** Runs a sweep and compares its combinations. Throws (naming the option and field) before any run on a bad input. */
export async function runSweep(scenarioPath: string, options: SweepOptions): Promise<SweepOutcome> {
  const combinations = sweepCombinations(scenarioPath, options.sweeps);
  const base = combinations[0]?.scenario as Scenario;
  const first = options.seed ?? base.seed;
  const seeds = options.seeds;
  if (!Number.isInteger(seeds) || seeds < 1 || seeds > maxSweepSeedsCount)
    throw new Error(`--seeds: expected a whole number from 1 to ${maxSweepSeedsCount}, got ${String(seeds)}`);
  if (!Number.isInteger(first) || first < 0 || first + seeds - 1 > maxSeed)
    throw new Error(`--seed: expected a whole number from 0 to ${maxSeed - seeds + 1}, got ${String(first)}`);
  if (combinations.length * seeds > maxSweepRunsCount)
    throw new Error(`--seeds: expected at most ${maxSweepRunsCount} runs in all, got ${combinations.length * seeds}`);
  const tasks: SweepTask[] = [];
  combinations.forEach((c, ci) => {
    for (let s = 0; s < seeds; s++) {
      const seed = first + s;
      const sabotage =
        options.sabotage !== undefined && options.sabotage.combination === ci && options.sabotage.seed === seed
          ? options.sabotage.kind
          : undefined;
      tasks.push({ index: tasks.length, scenario: c.scenario, seed, ...(sabotage === undefined ? {} : { sabotage }) });
    }
  });
  let done = 0;
  const threads = options.threads ?? availableParallelism();
  const results = await runTasks(tasks, threads, () => {
    done++;
    options.onProgress?.(done, tasks.length);
  });
  const failures: RunFailure[] = [];
  const broken: { combination: Combination; seed: number; result: SweepTaskResult }[] = [];
  const inputs: GroupInput[] = combinations.map((c, ci) => {
    const runs: GroupInput["runs"][number][] = [];
    for (let s = 0; s < seeds; s++) {
      const result = results[ci * seeds + s] as SweepTaskResult;
      const seed = first + s;
      const command = reproduceCommand(scenarioPath, seed, c.sets);
      if (result.error !== null) failures.push({ group: c.label, seed, problems: [`threw: ${result.error}`], command });
      else if (result.violations.length > 0) {
        failures.push({ group: c.label, seed, problems: result.violations, command });
        broken.push({ combination: c, seed, result });
      }
      if (result.figures !== null && result.error === null && result.violations.length === 0)
        runs.push({ seed, figures: result.figures });
    }
    return { label: c.label, sets: c.sets, runs };
  });
  const fields = options.sweeps.map((s) => s.slice(0, s.indexOf("=")));
  const comparison = compareGroups(
    "sweep",
    `${base.name}: ${fields.join(" × ")} over seeds ${first}..${first + seeds - 1}`,
    fields,
    inputs,
    failures,
    {
      scenario: base.name,
      scenarioPath,
      seeds: `${first}..${first + seeds - 1}`,
      runs: tasks.length,
      command: sweepCommand(scenarioPath, options.sweeps, seeds, first),
      note: "Runs that broke an invariant or threw are left out of the figures and listed as failures.",
    },
  );
  return { comparison, broken };
}

/** Writes comparison.json, comparison.html and, per broken run, its metrics and report under failures/. */
export function writeSweep(out: string, outcome: SweepOutcome, scenarioPath: string): void {
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, "comparison.json"), comparisonJson(outcome.comparison));
  writeFileSync(join(out, "comparison.html"), renderComparison(outcome.comparison));
  outcome.broken.forEach(({ combination, seed, result }) => {
    if (result.metrics === null) return;
    const dir = join(out, "failures", `${combination.sets.join("_").replace(/[^\w.=-]/g, "-")}-seed${seed}`);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "metrics.json"), metricsJson(result.metrics));
    writeFileSync(join(dir, "report.html"), renderReport(result.metrics, { scenarioPath, sets: combination.sets }));
  });
}

/** Lines that say, per metric, which combination is best or that it is within noise. */
export function verdictLines(comparison: Comparison): string[] {
  return comparison.metrics.map(
    (m) => `  ${m.title} (${m.better} is better): ${comparison.verdicts[m.key]?.text ?? "–"}`,
  );
}

export async function runSweepCommand(
  scenarioPath: string,
  options: { sweep: readonly string[]; seeds: number; seed?: number; out?: string; threads?: number },
): Promise<number> {
  let combinations: Combination[];
  try {
    combinations = sweepCombinations(scenarioPath, options.sweep);
  } catch (error) {
    process.stderr.write(`cimesh: ${(error as Error).message}\n`);
    return 1;
  }
  const name = combinations[0]?.scenario.name ?? "sweep";
  const out = options.out ?? join("sim-out", `${name}-sweep`);
  const threads = options.threads ?? availableParallelism();
  const total = combinations.length * options.seeds;
  process.stdout.write(
    `cimesh sim: sweep of ${combinations.length} combination(s) × ${options.seeds} seed(s) = ${total} runs of ${name} (${scenarioPath}) on ${threads} thread(s)\n`,
  );
  const bar = new cliProgress.SingleBar(
    {
      stream: process.stderr,
      format: "sweep [{bar}] {value}/{total} runs | {remaining} left | about {eta_formatted} more",
      hideCursor: true,
      etaBuffer: 50,
    },
    cliProgress.Presets.shades_classic,
  );
  bar.start(total, 0, { remaining: total });
  let outcome: SweepOutcome;
  try {
    outcome = await runSweep(scenarioPath, {
      sweeps: options.sweep,
      seeds: options.seeds,
      threads,
      ...(options.seed === undefined ? {} : { seed: options.seed }),
      onProgress: (done, all) => bar.update(done, { remaining: all - done }),
    });
  } catch (error) {
    bar.stop();
    process.stderr.write(`cimesh: ${(error as Error).message}\n`);
    return 1;
  }
  bar.stop();
  writeSweep(out, outcome, scenarioPath);
  const c = outcome.comparison;
  process.stdout.write(
    [...verdictLines(c), `wrote ${join(out, "comparison.json")} and ${join(out, "comparison.html")}`, ""].join("\n"),
  );
  if (c.failures.length === 0) {
    process.stdout.write(`invariants: held in all ${total} runs\n`);
    return 0;
  }
  process.stderr.write(
    [
      `cimesh: ${c.failures.length} of ${total} runs failed (their figures are left out; the others' are written):`,
      ...c.failures.flatMap((f) => [
        `  ${f.group}, seed ${f.seed}: ${f.problems[0] ?? ""}${f.problems.length > 1 ? ` (and ${f.problems.length - 1} more)` : ""}`,
        `    reproduce: ${f.command}`,
      ]),
      "",
    ].join("\n"),
  );
  return 1;
}
