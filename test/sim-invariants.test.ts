/**
 * The invariants hold over many seeds of every example scenario (at test size), and the checker catches a system
 * under test that breaks them.
 */
import test from "ava";
import {
  assertInvariants,
  exampleScenarioNames,
  exampleScenarioPath,
  InvariantError,
  loadScenario,
  type Metrics,
  type Scenario,
  shrinkScenario,
  simulate,
} from "../sim/index.ts";

function small(name: string, signatures: "real" | "fast", workers = 24, jobs = 40): Scenario {
  return shrinkScenario(loadScenario(exampleScenarioPath(name)), { workers, jobs, signatures });
}

/** Seeds per example scenario with fast signatures, and with real ones: 5 × (40 + 2) = 210 runs over both files. */
const fastSeedsCount = 40;
const realSeedsCount = 2;

function checkRun(t: { true(value: boolean, message?: string): void }, name: string, metrics: Metrics): void {
  assertInvariants(metrics, exampleScenarioPath(name));
  const j = metrics.jobs;
  t.true(j.submitted > 0, `${name} seed ${metrics.seed}: submitted jobs`);
  t.true(
    j.passed + j.failed + j.cancelled === j.submitted && j.lost === 0,
    `${name} seed ${metrics.seed}: every job ended (${JSON.stringify(j)})`,
  );
}

for (const name of exampleScenarioNames.slice(2)) {
  test(`${name}: invariants hold over ${fastSeedsCount} fast-signature seeds and ${realSeedsCount} real ones`, (t) => {
    let wrong = 0;
    let spam = 0;
    let refused = 0;
    for (let seed = 1; seed <= fastSeedsCount; seed++) {
      const metrics = simulate(small(name, "fast"), seed);
      checkRun(t, name, metrics);
      wrong += metrics.jobs.wrongResultsAccepted;
      spam += metrics.security.spamBids ?? 0;
      refused += (metrics.security.refusedSignature ?? 0) + (metrics.security.refusedUntrusted ?? 0);
    }
    for (let seed = 1; seed <= realSeedsCount; seed++) checkRun(t, name, simulate(small(name, "real"), 1000 + seed));
    if (name === "liars-10pct") {
      // The actors act: spammers bid, forgeries are refused (none accepted: that is an invariant).
      t.true(spam > 0);
      t.true(refused > 0);
    }
    t.log(`${name}: wrong results accepted over ${fastSeedsCount} seeds: ${wrong}`);
  });
}

test("a lost verdict is caught as a lost job, with the seed and the command to reproduce", (t) => {
  const metrics = simulate(small("calm", "fast", 10, 10), 5, { sabotage: "drop-verdict" });
  const names = metrics.invariants.violations.map((v) => v.invariant);
  t.true(names.includes("ends-after-heal"));
  t.true(names.includes("no-job-lost"));
  const error = t.throws(() => assertInvariants(metrics, "sim/scenarios/calm.yaml"), { instanceOf: InvariantError });
  t.regex(error.message, /seed 5/);
  t.regex(error.message, /npx cimesh sim sim\/scenarios\/calm\.yaml --seed 5/);
});

test("a second verdict for one job is caught", (t) => {
  const metrics = simulate(small("calm", "fast", 10, 10), 5, { sabotage: "duplicate-verdict" });
  t.true(metrics.invariants.violations.some((v) => v.invariant === "accepted-once"));
});

test("a verdict accepting a digest no quorum reported is caught", (t) => {
  const metrics = simulate(small("calm", "fast", 10, 10), 5, { sabotage: "unreported-digest" });
  const violation = metrics.invariants.violations.find((v) => v.invariant === "quorum");
  t.truthy(violation);
  t.regex(violation?.detail ?? "", /0 agreeing result/);
});

test("liars acting alone never win a quorum of two", (t) => {
  const base = small("liars-10pct", "fast", 30, 40);
  const scenario = { ...base, actors: { ...base.actors, liars: 0.3, sybilGroups: 0, sybilGroupSize: 0 } };
  for (let seed = 1; seed <= 5; seed++) {
    const metrics = simulate(scenario, seed);
    t.true((metrics.security.wrongResultsSent ?? 0) > 0, "the liars did send wrong results");
    t.is(metrics.jobs.wrongResultsAccepted, 0);
  }
});
