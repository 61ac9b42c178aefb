/**
 * The seed sweep of the example scenarios, shared by the two test files that split it (so ava runs the halves on
 * two cores): each registers the sweep for its slice of the examples.
 */
import test from "ava";
import {
  assertInvariants,
  exampleScenarioPath,
  loadScenario,
  type Metrics,
  type Scenario,
  shrinkScenario,
  simulate,
} from "../sim/index.ts";

/** Seeds per example scenario with fast signatures (at sweep size), and with real ones (at test size). */
export const fastSeedsCount = 200;
export const realSeedsCount = 2;
/** The sweep's size: small enough for 200 seeds of each example in a test run, big enough for replicas and actors. */
export const sweepWorkersCount = 12;
export const sweepJobsCount = 16;
/** The examples sim-invariants-seeds.test.ts sweeps; sim-invariants.test.ts sweeps the others (about half each). */
export const firstSweepNames: readonly string[] = ["calm", "night-exodus", "mixed-400"];
/** Examples swept at another size: the mixed mesh's 6 projects of 3 per worker want more than 12 workers. */
export const sweepSizes: Readonly<Record<string, { readonly workers: number; readonly jobs: number }>> = {
  "mixed-400": { workers: 40, jobs: 60 },
};

export function small(name: string, signatures: "real" | "fast", workers = 24, jobs = 40): Scenario {
  return shrinkScenario(loadScenario(exampleScenarioPath(name)), { workers, jobs, signatures });
}

function checkRun(t: { true(value: boolean, message?: string): void }, name: string, metrics: Metrics): void {
  assertInvariants(metrics, exampleScenarioPath(name));
  const j = metrics.jobs;
  t.true(j.submitted > 0, `${name} seed ${metrics.seed}: submitted jobs`);
  t.true(
    j.passed + j.failed + j.cancelled === j.submitted && j.lost === 0,
    `${name} seed ${metrics.seed}: every job ended (${JSON.stringify(j)})`,
  );
}

/** Registers, for each named example, a test that runs its seeds and checks the invariants of every run. */
export function seedSweep(names: readonly string[]): void {
  for (const name of names) {
    test(`${name}: invariants hold over ${fastSeedsCount} fast-signature seeds and ${realSeedsCount} real ones`, (t) => {
      let wrong = 0;
      let spam = 0;
      let refused = 0;
      let replays = 0;
      let replaysRefused = 0;
      let retried = 0;
      const size = sweepSizes[name] ?? { workers: sweepWorkersCount, jobs: sweepJobsCount };
      const scenario = small(name, "fast", size.workers, size.jobs);
      for (let seed = 1; seed <= fastSeedsCount; seed++) {
        const metrics = simulate(scenario, seed);
        checkRun(t, name, metrics);
        wrong += metrics.jobs.wrongResultsAccepted;
        spam += metrics.security.spamBids ?? 0;
        refused += (metrics.security.refusedSignature ?? 0) + (metrics.security.refusedUntrusted ?? 0);
        replays += metrics.admissions.replay ?? 0;
        replaysRefused += metrics.security.replaysRefused ?? 0;
        retried += Math.max(0, (metrics.messagesByDomain.result ?? 0) - (metrics.messagesByDomain.resultAck ?? 0));
      }
      for (let seed = 1; seed <= realSeedsCount; seed++) checkRun(t, name, simulate(small(name, "real"), 1000 + seed));
      if (name === "liars-10pct") {
        // The actors act: spammers bid, forgeries and replays are refused (none accepted: those are invariants).
        t.true(spam > 0);
        t.true(refused > 0);
        t.true(replaysRefused > 0, "replayed messages were refused");
        t.true(replays > 0, "replayed announcements, verdicts or cancels reached the ledgers and were refused");
      }
      t.log(
        `${name}: wrong results accepted over ${fastSeedsCount} seeds: ${wrong}; replays refused: ${replaysRefused} (by a replay ledger: ${replays}); results sent beyond those acknowledged: ${retried}`,
      );
    });
  }
}
