/**
 * The invariants hold over many seeds of every example scenario (at test size), and the checker catches a system
 * under test that breaks them.
 */
import test from "ava";
import { assertInvariants, exampleScenarioNames, InvariantError, simulate } from "../sim/index.ts";
import { Observer } from "../sim/observer.ts";
import { firstSweepNames, seedSweep, small } from "./sim-seeds.ts";

seedSweep(exampleScenarioNames.filter((name) => !firstSweepNames.includes(name)));

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

test("a master going back to an older offer of a worker is caught; keeping or replacing with a newer one is not", (t) => {
  const observer = new Observer(1, undefined);
  observer.offerHeld(0, "ab".repeat(32), undefined, 7);
  observer.offerHeld(0, "ab".repeat(32), 7, 7);
  observer.offerHeld(0, "ab".repeat(32), 7, 9);
  t.deepEqual(observer.invariants.listed(), []);
  observer.offerHeld(0, "ab".repeat(32), 9, 7);
  t.deepEqual(
    observer.invariants.listed().map((v) => v.invariant),
    ["offer-newest"],
  );
});
