import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "ava";
import {
  exampleScenarioNames,
  exampleScenarioPath,
  loadScenario,
  parseDurationMs,
  parseScenario,
  runSimCommand,
  ScenarioError,
} from "../sim/index.ts";

const minimal = `name: tiny
duration: 10m
drain: 1h
projects: 1
workers:
  count: 4
jobs:
  count: 3
  deadline: 1h
`;

function errorOf(text: string): ScenarioError {
  try {
    parseScenario(text, "s.yaml");
  } catch (error) {
    if (error instanceof ScenarioError) return error;
    throw error;
  }
  throw new Error("expected a ScenarioError");
}

test("every example scenario parses, the large one and the colluders included", (t) => {
  for (const name of [...exampleScenarioNames, "scale-10k", "colluders-15pct"])
    t.notThrows(() => loadScenario(exampleScenarioPath(name)), name);
});

test("durations: units and whole milliseconds", (t) => {
  t.is(parseDurationMs("250ms"), 250);
  t.is(parseDurationMs("1h30m"), 5_400_000);
  t.is(parseDurationMs("2d"), 172_800_000);
  t.is(parseDurationMs(90), 90);
  t.is(parseDurationMs("ten minutes"), null);
  t.is(parseDurationMs(-1), null);
});

test("a wrong value names its line, field, what was expected and what it got", (t) => {
  const error = errorOf(minimal.replace("  count: 4", "  count: -4"));
  t.is(error.line, 6);
  t.is(error.field, "workers.count");
  t.regex(error.message, /^s\.yaml:6: workers\.count: expected at least 0, got -4/);
});

test("a missing field names the mapping's line", (t) => {
  const error = errorOf(minimal.replace("projects: 1\n", ""));
  t.is(error.field, "projects");
  t.regex(error.message, /expected a number, got nothing/);
});

test("an unknown field is named with its own line", (t) => {
  const error = errorOf(`${minimal}network:\n  latncy: 5ms\n`);
  t.is(error.field, "network.latncy");
  t.is(error.line, 11);
  t.regex(error.message, /no such field/);
});

test("a bad duration says what a duration looks like", (t) => {
  const error = errorOf(minimal.replace("duration: 10m", "duration: soon"));
  t.is(error.line, 2);
  t.regex(error.message, /duration: expected a duration such as "250ms".*got the text "soon"/);
});

test("rules across fields: quorum above replicas, a partition healing after the run's faults", (t) => {
  t.regex(
    errorOf(`${minimal}  replicas: 1\n  quorum: 2\n`).message,
    /s\.yaml:11: jobs\.quorum: expected at most jobs\.replicas/,
  );
  const partition = errorOf(`${minimal}partitions:\n  - { at: 5m, heal: 20m, fraction: 0.5 }\n`);
  t.is(partition.field, "partitions[0].heal");
  t.is(partition.line, 11);
});

test("broken YAML names its line", (t) => {
  const error = errorOf("name: x\nworkers: [1, 2\n");
  t.regex(error.message, /^s\.yaml:\d+: \(file\): expected well-formed YAML/);
});

test("cimesh sim writes metrics.json and report.html and returns 0; a bad scenario returns 1 naming the line", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "cimesh-sim-"));
  try {
    const path = join(dir, "tiny.yaml");
    writeFileSync(path, minimal);
    const out = join(dir, "out");
    t.is(await runSimCommand(path, { seed: 3, out }), 0);
    const metrics = JSON.parse(readFileSync(join(out, "metrics.json"), "utf8"));
    t.is(metrics.seed, 3);
    t.is(metrics.jobs.submitted, 3);
    t.true(readFileSync(join(out, "report.html"), "utf8").includes("uPlot"));
    writeFileSync(path, minimal.replace("projects: 1", "projects: many"));
    t.is(await runSimCommand(path, { out }), 1);
    t.is(await runSimCommand(join(dir, "missing.yaml"), { out }), 1);
    t.is(await runSimCommand(path.replace("tiny", "tiny"), { seed: -1, out }), 1);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
