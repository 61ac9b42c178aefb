import test from "ava";
import {
  exampleScenarioPath,
  loadScenario,
  metricsJson,
  renderReport,
  type Scenario,
  shrinkScenario,
  simulate,
} from "../sim/index.ts";

function small(name: string, signatures: "real" | "fast", workers = 24, jobs = 40): Scenario {
  return shrinkScenario(loadScenario(exampleScenarioPath(name)), { workers, jobs, signatures });
}

test("the same seed gives byte-identical metrics and report; another seed differs", (t) => {
  const scenario = small("partition-heals", "real", 20, 30);
  const a = simulate(scenario, 7);
  const b = simulate(scenario, 7);
  const c = simulate(scenario, 8);
  t.is(metricsJson(a), metricsJson(b));
  t.is(renderReport(a), renderReport(b));
  t.not(metricsJson(a), metricsJson(c));
  t.not(renderReport(a), renderReport(c));
  t.deepEqual(a.invariants.violations, []);
});

test("fast signatures are deterministic too, and the seed reaches every random choice", (t) => {
  const scenario = small("liars-10pct", "fast", 24, 40);
  const a = simulate(scenario, 3);
  const b = simulate(scenario, 3);
  t.is(metricsJson(a), metricsJson(b));
  const other = simulate(scenario, 4);
  t.notDeepEqual(a.series, other.series);
});

test("the report is one self-contained file with the uPlot charts and no wall-clock time", (t) => {
  const metrics = simulate(small("calm", "fast", 10, 10), 1);
  const html = renderReport(metrics);
  t.true(html.startsWith("<!doctype html>"));
  t.true(html.includes("uPlot"));
  t.false(/<script[^>]+src=/.test(html), "no external script");
  t.false(/<link[^>]+href=/.test(html), "no external stylesheet");
  for (const id of ["queue", "latency", "live", "messages"]) t.true(html.includes(`id="${id}"`));
  t.false(html.includes(String(new Date().getUTCFullYear())) && html.includes(new Date().toISOString().slice(0, 10)));
});
