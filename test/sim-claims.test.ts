/**
 * What standing offers cost and bring in the simulator's two claim examples, at full size, seed 1 (fast signatures):
 * sim/scenarios/mixed-400.yaml (400 workers, 6 projects, 3 per worker, 2 slots, jobs of 2 shards × 2 replicas, churn
 * and a partition) and sim/scenarios/bid-storm-10k.yaml (10,000 workers on one project). Every job ends and every
 * invariant holds in both; the mixed mesh carries at most maxMessagesPerJob messages per job. The claim traffic jobs
 * cause, bids and offers other than a worker's first to a master and its renewals (sim/metrics.ts,
 * claimMessagesPerWantedRun), is at most maxOffersAndBidsPerWantedRun per wanted run (one of the shards × replicas of
 * a submitted job) in both; the log gives every offer's kind, and every offer and bid counted.
 */
import { relative } from "node:path";
import test from "ava";
import {
  assertInvariants,
  exampleScenarioPath,
  loadScenario,
  type Metrics,
  reproduceCommand,
  simulate,
} from "../sim/index.ts";

/** The bounds for the examples. */
export const maxMessagesPerJob = 5_000;
export const maxOffersAndBidsPerWantedRun = 3;
const runs = new Map<string, Metrics>();

/** The example's run with its own seed, made once for the tests that read it. */
function run(name: string): Metrics {
  let metrics = runs.get(name);
  if (metrics === undefined) {
    const scenario = loadScenario(exampleScenarioPath(name));
    metrics = simulate(scenario, scenario.seed);
    runs.set(name, metrics);
  }
  return metrics;
}

function describe(m: Metrics): string {
  return [
    `${m.scenario} seed ${m.seed}: jobs ${JSON.stringify(m.jobs)}`,
    `wanted runs ${m.wantedRuns}; offers per job ${m.offersPerJob}, bids per job ${m.bidsPerJob}; per wanted run: offers ${m.offersPerWantedRun}, bids ${m.bidsPerWantedRun}, together ${m.offersAndBidsPerWantedRun}, awards ${m.awardsPerWantedRun}`,
    `offers ${JSON.stringify(m.offers)}`,
    `messages per job ${m.messagesPerJob}; per worker per hour ${m.messagesPerWorkerHour} (${m.messagesPerWorkerHourArriving} while jobs arrive); slots busy ${m.load.busySlotFraction}`,
    `claim latency (submit to first run started) ${JSON.stringify(m.claimLatencyMs)}`,
    `messages by type ${JSON.stringify(m.messagesByDomain)}`,
  ].join("\n");
}

for (const name of ["mixed-400", "bid-storm-10k"]) {
  const shownPath = relative(process.cwd(), exampleScenarioPath(name));

  test.serial(`${name}: every job ends and every invariant holds`, (t) => {
    const m = run(name);
    t.log(describe(m));
    assertInvariants(m, shownPath);
    const j = m.jobs;
    t.true(
      j.passed + j.failed + j.cancelled === j.submitted && j.lost === 0,
      `every job ended (${JSON.stringify(j)}); reproduce: ${reproduceCommand(shownPath, m.seed)}`,
    );
    if (name === "mixed-400")
      t.true(m.messagesPerJob <= maxMessagesPerJob, `messages per job ${m.messagesPerJob} > ${maxMessagesPerJob}`);
  });

  test.serial(`${name}: offers and bids per wanted run within the bound`, (t) => {
    const m = run(name);
    t.log(
      `claim messages (bids, offers a job caused) per wanted run: ${m.claimMessagesPerWantedRun} (bound ${maxOffersAndBidsPerWantedRun}); every offer and bid counted: ${m.offersAndBidsPerWantedRun}; offers ${JSON.stringify(m.offers)}`,
    );
    t.true(
      m.claimMessagesPerWantedRun <= maxOffersAndBidsPerWantedRun,
      `${m.claimMessagesPerWantedRun} offers and bids per wanted run > ${maxOffersAndBidsPerWantedRun} (offers ${JSON.stringify(m.offers)}, bids ${m.bidsPerJob} per job)`,
    );
  });
}
