/**
 * Sweeps of the simulator (sim/sweep.ts): two fields × three values × 20 seeds of the small example give a
 * comparison whose bytes do not depend on the threads that ran it; a run broken on purpose is named with its seed,
 * combination and reproduce command while the others' results are written; a bad swept field names the field;
 * `cimesh sim compare` compares runs made separately.
 */

import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "ava";
import {
  compareFiles,
  comparisonTable,
  distribution,
  exampleScenarioPath,
  loadScenarioWith,
  metricsJson,
  runSweep,
  simulate,
  sweepCombinations,
  tQuantile975,
  writeSweep,
} from "../sim/index.ts";

const scenarioPath = "sim/scenarios/sweep-small.yaml";
const sweeps = ["jobs.replicas=2,3,4", "network.medianLatency=20ms,40ms,80ms"];
const seedsCount = 20;
/** Bound on one `cimesh sim` process of these tests. */
const cliWaitMs = 60_000;

function tempDir(t: { teardown(fn: () => void): void }, prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test("2 fields × 3 values × 20 seeds: a comparison report, byte-identical on a second run with other threads", async (t) => {
  const dirs = [tempDir(t, "cimesh-sweep-a-"), tempDir(t, "cimesh-sweep-b-")];
  const threadCounts = [2, 3];
  const outputs: string[][] = [];
  for (let i = 0; i < 2; i++) {
    const outcome = await runSweep(scenarioPath, { sweeps, seeds: seedsCount, threads: threadCounts[i] as number });
    const c = outcome.comparison;
    t.is(c.groups.length, 9);
    t.deepEqual(c.failures, []);
    t.deepEqual(c.groups[0]?.sets, ["jobs.replicas=2", "network.medianLatency=20ms"]);
    t.deepEqual(c.groups[8]?.sets, ["jobs.replicas=4", "network.medianLatency=80ms"]);
    for (const g of c.groups)
      t.deepEqual(
        g.seeds,
        Array.from({ length: seedsCount }, (_, s) => 1 + s),
      );
    const latency = c.groups[0]?.metrics.claimP50Ms;
    t.truthy(latency);
    t.true((latency?.ciLow ?? Number.NaN) <= (latency?.mean ?? 0) && (latency?.mean ?? 0) <= (latency?.ciHigh ?? -1));
    for (const m of c.metrics) t.truthy(c.verdicts[m.key]?.text, `a verdict for ${m.key}`);
    writeSweep(dirs[i] as string, outcome, scenarioPath);
    outputs.push(["comparison.json", "comparison.html"].map((f) => readFileSync(join(dirs[i] as string, f), "utf8")));
  }
  t.is(outputs[1]?.[0], outputs[0]?.[0], "comparison.json is the same bytes");
  t.is(outputs[1]?.[1], outputs[0]?.[1], "comparison.html is the same bytes");
  const html = outputs[0]?.[1] ?? "";
  t.true(html.includes("uPlot"));
  t.true(html.includes("chart-claimP50Ms"));
  t.false(/20\d\d-\d\d-\d\dT/.test(html), "no wall-clock time in the report");
  // More replicas, more runs per worker: the sweep does change the scenario.
  const runs = (k: number) => outcome0(outputs).groups[k]?.metrics.runsPerWorker?.mean ?? 0;
  t.true(runs(6) > runs(0), `runs per worker with 4 replicas (${runs(6)}) over 2 (${runs(0)})`);
});

function outcome0(outputs: string[][]): {
  groups: { metrics: Record<string, { mean: number } | null> }[];
} {
  return JSON.parse(outputs[0]?.[0] ?? "{}");
}

test("a run broken on purpose is named with its seed, combination and reproduce command; the others are written", async (t) => {
  const out = tempDir(t, "cimesh-sweep-broken-");
  const outcome = await runSweep(scenarioPath, {
    sweeps: ["jobs.replicas=2,3"],
    seeds: 4,
    seed: 1,
    sabotage: { combination: 1, seed: 3, kind: "drop-verdict" },
  });
  writeSweep(out, outcome, scenarioPath);
  const c = outcome.comparison;
  t.is(c.failures.length, 1);
  const failure = c.failures[0];
  t.is(failure?.seed, 3);
  t.is(failure?.group, "jobs.replicas=3");
  t.is(failure?.command, "npx cimesh sim sim/scenarios/sweep-small.yaml --seed 3 --set jobs.replicas=3");
  t.true(failure?.problems.some((p) => p.startsWith("no-job-lost")));
  t.deepEqual(c.groups[0]?.seeds, [1, 2, 3, 4]);
  t.deepEqual(c.groups[1]?.seeds, [1, 2, 4], "the broken run is left out of the figures, the others kept");
  const json = JSON.parse(readFileSync(join(out, "comparison.json"), "utf8"));
  t.is(json.failures[0].seed, 3);
  const html = readFileSync(join(out, "comparison.html"), "utf8");
  t.true(html.includes("--seed 3 --set jobs.replicas=3"));
  const failed = readdirSync(join(out, "failures"));
  t.deepEqual(failed, ["jobs.replicas=3-seed3"]);
  t.true(existsSync(join(out, "failures", failed[0] as string, "report.html")));
  // The command's --set gives the very scenario the sweep ran.
  t.deepEqual(
    loadScenarioWith(scenarioPath, ["jobs.replicas=3"]),
    sweepCombinations(scenarioPath, ["jobs.replicas=3"])[0]?.scenario,
  );
});

test("a swept field is validated as the file is: a bad path or value names the field and what was expected", (t) => {
  const path = exampleScenarioPath("sweep-small");
  t.throws(() => sweepCombinations(path, ["jobs.replicas=2,x"]), { message: /jobs\.replicas: expected a number/ });
  t.throws(() => sweepCombinations(path, ["jobs.nope=2"]), { message: /jobs\.nope: expected no such field/ });
  t.throws(() => sweepCombinations(path, ["jobs.replicas.x=2"]), { message: /jobs\.replicas is not a mapping/ });
  t.throws(() => sweepCombinations(path, ["network.loss=0,2"]), { message: /network\.loss: expected at most 1/ });
  t.throws(() => sweepCombinations(path, ["jobs.replicas"]), { message: /expected <dotted.field>=<value>/ });
  t.is(sweepCombinations(path, ["network.medianLatency=20ms,1s"])[1]?.scenario.network.medianLatency, 1000);
});

test("confidence intervals: Student's t, and one run has none", (t) => {
  t.is(tQuantile975(1), 12.706);
  t.is(tQuantile975(19), 2.093);
  t.true(Math.abs(tQuantile975(60) - 2.0) < 0.002);
  const d = distribution([1, 2, 3, 4, null]);
  t.is(d?.n, 4);
  t.is(d?.mean, 2.5);
  // s = 1.291, half = 3.182 × 1.291 / 2 = 2.054
  t.is(d?.ciLow, 0.446);
  t.is(d?.ciHigh, 4.554);
  t.is(distribution([7])?.ciLow, null);
  t.is(distribution([null]), null);
});

test("cimesh sim compare: runs made separately side by side, each path one group", (t) => {
  const dir = tempDir(t, "cimesh-compare-");
  const base = loadScenarioWith(scenarioPath, []);
  const more = loadScenarioWith(scenarioPath, ["jobs.replicas=3"]);
  for (const [name, scenario] of [
    ["before", base],
    ["after", more],
  ] as const)
    for (const seed of [1, 2, 3]) {
      const runDir = join(dir, name, `seed${seed}`);
      const metrics = simulate(scenario, seed);
      mkdirSync(runDir, { recursive: true });
      writeFileSync(join(runDir, "metrics.json"), metricsJson(metrics));
    }
  const c = compareFiles([join(dir, "before"), join(dir, "after", "seed1", "metrics.json")]);
  t.is(c.groups.length, 2);
  t.deepEqual(c.groups[0]?.seeds, [1, 2, 3]);
  t.deepEqual(c.groups[1]?.seeds, [1]);
  const text = comparisonTable(c);
  t.regex(text, /#1: .*before \(3 run\(s\)\)/);
  t.regex(text, /claim latency p50 +\d/);
  t.throws(() => compareFiles([join(dir, "nowhere")]), { message: /nowhere: expected a metrics\.json file/ });
});

test("the command: cimesh sim --sweep writes the comparison and returns 0; sim compare --out writes compare.html; a bad field returns 1", async (t) => {
  const dir = tempDir(t, "cimesh-sweep-cli-");
  const run = (args: readonly string[]) =>
    spawnSync(process.execPath, ["bin/cimesh.js", "sim", ...args], { encoding: "utf8", timeout: cliWaitMs });
  const sweep = run([scenarioPath, "--sweep", "jobs.replicas=2,3", "--seeds", "2", "--threads", "1", "--out", dir]);
  t.is(sweep.status, 0, sweep.stderr);
  t.regex(sweep.stdout, /2 combination\(s\) × 2 seed\(s\) = 4 runs/);
  t.regex(sweep.stdout, /invariants: held in all 4 runs/);
  t.true(existsSync(join(dir, "comparison.html")));
  const single = run([scenarioPath, "--set", "jobs.replicas=3", "--out", join(dir, "one")]);
  t.is(single.status, 0, single.stderr);
  const compare = run(["compare", join(dir, "one"), "--out", join(dir, "cmp")]);
  t.is(compare.status, 0, compare.stderr);
  t.true(existsSync(join(dir, "cmp", "compare.html")));
  const bad = run([scenarioPath, "--sweep", "network.loss=0,2", "--out", join(dir, "bad")]);
  t.is(bad.status, 1);
  t.regex(bad.stderr, /--sweep network\.loss=2: network\.loss: expected at most 1, got 2/);
  t.false(existsSync(join(dir, "bad")));
});
