/**
 * `cimesh sim <scenario.yaml> [--seed N] [--set field=value]... [--out DIR]`: prints the seed and
 * settings first, runs the scenario with a progress bar on stderr (for runs
 * longer than a second), writes metrics.json and report.html, and fails
 * loudly, with the command that reproduces it, when an invariant broke.
 */
import { mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import cliProgress from "cli-progress";
import { simulate } from "./engine.ts";
import type { Metrics } from "./metrics.ts";
import { renderReport, reproduceCommand } from "./report.ts";
import { maxScenarioFileBytes, parseScenario, type Scenario, ScenarioError } from "./scenario.ts";
import { parseFieldValues, readScenarioSource, scenarioWith } from "./sweep-fields.ts";

export { reproduceCommand } from "./report.ts";

/** A run shows a progress bar once it has taken this long. */
export const progressBarAfterMs = 1000;
export const maxSeed = 2 ** 31 - 1;

/** A run that broke an invariant: the message says which, and how to run it again. */
export class InvariantError extends Error {
  readonly code = "ERR_SIM_INVARIANT";
  readonly seed: number;
  constructor(metrics: Metrics, scenarioPath: string, sets: readonly string[] = []) {
    const lines = metrics.invariants.violations.map((v) => `  ${v.invariant} ${v.jobId}: ${v.detail}`);
    super(
      [
        `simulation ${metrics.scenario} broke ${metrics.invariants.violations.length} invariant(s) with seed ${metrics.seed}:`,
        ...lines,
        `reproduce: ${reproduceCommand(scenarioPath, metrics.seed, sets)}`,
      ].join("\n"),
    );
    this.seed = metrics.seed;
  }
}

/** Throws InvariantError when the run broke an invariant. */
export function assertInvariants(metrics: Metrics, scenarioPath: string, sets: readonly string[] = []): void {
  if (metrics.invariants.violations.length > 0) throw new InvariantError(metrics, scenarioPath, sets);
}

/** Where an example scenario of sim/scenarios/ is, by name. */
export function exampleScenarioPath(name: string): string {
  return fileURLToPath(new URL(`./scenarios/${name}.yaml`, import.meta.url));
}

export function loadScenario(path: string): Scenario {
  let size: number;
  try {
    size = statSync(path).size;
  } catch {
    throw new ScenarioError(path, 1, "(file)", "expected a readable scenario file, found none at this path");
  }
  if (size > maxScenarioFileBytes)
    throw new ScenarioError(path, 1, "(file)", `expected at most ${maxScenarioFileBytes} bytes, got ${size}`);
  return parseScenario(readFileSync(path, "utf8"), path);
}

/** The metrics file: stable key order and formatting, so the same run gives the same bytes. */
export function metricsJson(metrics: Metrics): string {
  return `${JSON.stringify(metrics, null, 2)}\n`;
}

/** The scenario of the file, with `--set field=value` fields set and validated as the file is. */
export function loadScenarioWith(path: string, sets: readonly string[]): Scenario {
  if (sets.length === 0) return loadScenario(path);
  const fields = sets.map((text) => parseFieldValues("--set", text));
  return scenarioWith(
    readScenarioSource(path),
    fields.map((f) => ({ field: f.field, value: f.values[0], text: f.texts[0] as string })),
    "--set",
  );
}

export async function runSimCommand(
  scenarioPath: string,
  options: { seed?: number; out?: string; set?: readonly string[] },
): Promise<number> {
  let scenario: Scenario;
  const sets = options.set ?? [];
  try {
    scenario = loadScenarioWith(scenarioPath, sets);
  } catch (error) {
    process.stderr.write(`cimesh: ${(error as Error).message}\n`);
    return 1;
  }
  const seed = options.seed ?? scenario.seed;
  if (!Number.isInteger(seed) || seed < 0 || seed > maxSeed) {
    process.stderr.write(`cimesh: --seed: expected a whole number from 0 to ${maxSeed}, got ${String(options.seed)}\n`);
    return 1;
  }
  const out = options.out ?? join("sim-out", `${scenario.name}-seed${seed}`);
  process.stdout.write(`cimesh sim: seed ${seed}, scenario ${scenario.name} (${scenarioPath})\n`);
  process.stdout.write(`settings: ${JSON.stringify({ ...scenario, seed })}\n`);
  const started = performance.now();
  const cpuStart = process.cpuUsage();
  let bar: cliProgress.SingleBar | null = null;
  const metrics = simulate(scenario, seed, {
    onProgress: (simulatedMs, endMs, events) => {
      if (bar === null) {
        if (performance.now() - started < progressBarAfterMs) return;
        bar = new cliProgress.SingleBar(
          {
            stream: process.stderr,
            format: "simulating [{bar}] {percentage}% | {minutes}/{total} simulated min | {events} events",
            hideCursor: true,
          },
          cliProgress.Presets.shades_classic,
        );
        bar.start(Math.ceil(endMs / 60_000), 0, { minutes: 0, events: 0 });
      }
      const minutes = Math.floor(simulatedMs / 60_000);
      bar.update(minutes, { minutes, events });
    },
  });
  const progress = bar as cliProgress.SingleBar | null;
  if (progress !== null) {
    progress.update(progress.getTotal(), { minutes: progress.getTotal(), events: metrics.run.events });
    progress.stop();
  }
  const wallMs = performance.now() - started;
  const cpu = process.cpuUsage(cpuStart);
  const cpuMs = (cpu.user + cpu.system) / 1000;
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, "metrics.json"), metricsJson(metrics));
  writeFileSync(join(out, "report.html"), renderReport(metrics, { scenarioPath, sets }));
  const j = metrics.jobs;
  process.stdout.write(
    [
      `jobs: ${j.submitted} submitted, ${j.passed} passed, ${j.failed} failed, ${j.lost} lost, ${j.wrongResultsAccepted} wrong results accepted`,
      `claim latency (submit to first run started) p50/p99: ${metrics.claimLatencyMs.p50}/${metrics.claimLatencyMs.p99} ms; time to verdict p50/p99: ${metrics.timeToVerdictMs.p50}/${metrics.timeToVerdictMs.p99} ms`,
      `offers per job ${metrics.offersPerJob}, bids per job ${metrics.bidsPerJob}; per wanted run (shards × replicas): offers ${metrics.offersPerWantedRun}, bids ${metrics.bidsPerWantedRun}, together ${metrics.offersAndBidsPerWantedRun}, awards ${metrics.awardsPerWantedRun}`,
      `messages per job ${metrics.messagesPerJob}, per worker per hour online ${metrics.messagesPerWorkerHour}; gossip delivery ${metrics.gossip.deliveryFraction}`,
      `${metrics.run.events} events in ${(wallMs / 1000).toFixed(2)} s wall, ${(cpuMs / 1000).toFixed(2)} s cpu (${Math.round(metrics.run.events / (wallMs / 1000))} events/s), peak RSS ${Math.round(process.resourceUsage().maxRSS / 1024)} MiB`,
      `wrote ${join(out, "metrics.json")} and ${join(out, "report.html")}`,
      "",
    ].join("\n"),
  );
  try {
    assertInvariants(metrics, scenarioPath, sets);
  } catch (error) {
    process.stderr.write(`cimesh: ${(error as Error).message}\n`);
    return 1;
  }
  process.stdout.write(`invariants: all ${metrics.invariants.checked.length} held\n`);
  return 0;
}
