/**
 * The cost of believing no one for free: sim/scenarios/colluders-15pct.yaml
 * (patient colluders in groups, throwaway identities joining mid-run, quorum
 * 2 of 3) run on the same seeds with the masters' default quorum rules and
 * without them (quorum weight 0, no runners in the keysets, no distinct
 * prefixes, no spot checks: a count of agreeing identities decides, as before
 * the Sybil rules). Per side: the jobs by outcome, the wrong results accepted,
 * the runs awarded per job and the time from submission to verdict (pooled
 * over every job of every seed), and the simulator's CPU time.
 *
 * `npm run bench -- sybil`.
 */
import { performance } from "node:perf_hooks";
import {
  type EndedJob,
  exactQuantile,
  exampleScenarioPath,
  loadScenario,
  type Scenario,
  simulate,
  withoutSybilRules,
} from "../sim/index.ts";

/** Seeds per side: the same seeds on both. */
export const sybilSeedsCount = 50;
export const sybilScenarioName = "colluders-15pct";

export interface SybilSide {
  readonly defence: "on" | "off";
  readonly seeds: number;
  readonly jobs: number;
  readonly passed: number;
  readonly failed: number;
  readonly cancelled: number;
  readonly wrongResultsAccepted: number;
  /** Seeds with at least one wrong result accepted. */
  readonly seedsWithWrong: number;
  readonly invariantViolations: number;
  /** Runs awarded per job, and beyond the replicas a job asks for. */
  readonly runsPerJob: number;
  readonly extraRunsPerJob: number;
  readonly timeToVerdictP50Ms: number | null;
  readonly timeToVerdictP95Ms: number | null;
  readonly cpuMs: number;
}

function round(value: number): number {
  return Math.round(value * 1000) / 1000;
}

/** Runs one side over seeds 1..seeds. */
export function runSide(scenario: Scenario, defence: "on" | "off", seeds: number): SybilSide {
  const ended: EndedJob[] = [];
  let passed = 0;
  let failed = 0;
  let cancelled = 0;
  let wrong = 0;
  let seedsWithWrong = 0;
  let violations = 0;
  const cpuStart = process.cpuUsage();
  for (let seed = 1; seed <= seeds; seed++) {
    const metrics = simulate(scenario, seed, { onJobEnded: (job) => ended.push(job) });
    passed += metrics.jobs.passed;
    failed += metrics.jobs.failed;
    cancelled += metrics.jobs.cancelled;
    wrong += metrics.jobs.wrongResultsAccepted;
    if (metrics.jobs.wrongResultsAccepted > 0) seedsWithWrong++;
    violations += metrics.invariants.violations.length;
  }
  const cpu = process.cpuUsage(cpuStart);
  const times = ended.map((job) => job.timeToVerdictMs).sort((a, b) => a - b);
  const runs = ended.reduce((sum, job) => sum + job.awards, 0);
  const wanted = ended.reduce((sum, job) => sum + job.shards * scenario.jobs.replicas, 0);
  return {
    defence,
    seeds,
    jobs: ended.length,
    passed,
    failed,
    cancelled,
    wrongResultsAccepted: wrong,
    seedsWithWrong,
    invariantViolations: violations,
    runsPerJob: round(runs / Math.max(1, ended.length)),
    extraRunsPerJob: round((runs - wanted) / Math.max(1, ended.length)),
    timeToVerdictP50Ms: exactQuantile(times, 0.5),
    timeToVerdictP95Ms: exactQuantile(times, 0.95),
    cpuMs: Math.round((cpu.user + cpu.system) / 1000),
  };
}

function seconds(ms: number | null): string {
  return ms === null ? "-" : `${(ms / 1000).toFixed(1)} s`;
}

/** Both sides, printed side by side. */
export function benchSybil(seeds = sybilSeedsCount): { on: SybilSide; off: SybilSide } {
  const scenario = loadScenario(exampleScenarioPath(sybilScenarioName));
  const started = performance.now();
  const on = runSide(scenario, "on", seeds);
  const off = runSide(withoutSybilRules(scenario), "off", seeds);
  const rows: [string, (side: SybilSide) => string][] = [
    ["jobs (passed/failed/cancelled)", (s) => `${s.jobs} (${s.passed}/${s.failed}/${s.cancelled})`],
    ["wrong results accepted", (s) => `${s.wrongResultsAccepted} (in ${s.seedsWithWrong} seeds)`],
    ["invariant violations", (s) => String(s.invariantViolations)],
    ["runs per job", (s) => String(s.runsPerJob)],
    [`runs per job beyond the ${scenario.jobs.replicas} replicas`, (s) => String(s.extraRunsPerJob)],
    ["time to verdict p50", (s) => seconds(s.timeToVerdictP50Ms)],
    ["time to verdict p95", (s) => seconds(s.timeToVerdictP95Ms)],
    ["simulator cpu", (s) => seconds(s.cpuMs)],
  ];
  const width = Math.max(...rows.map(([label]) => label.length));
  console.log(
    `${sybilScenarioName}, seeds 1..${seeds}: with the Sybil rules (defaults) | without (weight 0, no runners)`,
  );
  for (const [label, value] of rows) console.log(`  ${label.padEnd(width)}  ${value(on).padEnd(24)} | ${value(off)}`);
  console.log(
    `  extra runs per job for the defence: ${round(on.runsPerJob - off.runsPerJob)}; ${((performance.now() - started) / 1000).toFixed(1)} s wall`,
  );
  return { on, off };
}
