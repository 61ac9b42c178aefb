/**
 * A master's step plus its persistence, with 1,000 and with 100,000 jobs in
 * its store: the shell core (jobs/driver.ts) writes per step only the job
 * records the step changed, into the node's level store, so the cost of a
 * step must not grow with the jobs stored. For contrast, the cost of what a
 * whole-state save would encode per step (the master's state as JSON).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { createMaster, type JobRecord, NodeDriver, type StampedMessage, type StoreWrite } from "../jobs/index.ts";
import { openNodeStore } from "../node/store/index.ts";
import { jobSpec } from "./scheduling.ts";

export const storedJobCounts = [1_000, 100_000] as const;
/** Steps (submissions) timed per sample, and samples per stored count. */
export const stepsPerSample = 400;
export const samplesCount = 7;
const project = `b${"m".repeat(52)}`;
const prefillBatchRecords = 2_000;

function endedRecord(jobId: string, nowMs: number): JobRecord {
  return {
    jobId,
    spec: jobSpec(nowMs + 3_600_000),
    submittedAtMs: nowMs,
    status: "passed",
    reason: "every shard succeeded with quorum",
    endedAtMs: nowMs + 1000,
    round: 0,
    bidProbability: 1,
    eligibleEstimate: 5,
    lastAnnouncedAtMs: nowMs,
    windowEndsAtMs: null,
    reannounceAtMs: null,
    bids: [],
    attempts: [
      {
        attempt: 0,
        shard: 0,
        worker: "ab".repeat(32),
        runner: false,
        prefix: "",
        awardedAtMs: nowMs,
        leaseExpiresAtMs: nowMs + 60_000,
        state: "reported",
        digest: "bdigest",
        outcome: "succeeded",
        exitCode: 0,
        outputsDigest: null,
        logDigest: null,
        summary: "ok",
      },
    ],
    shards: [
      {
        decidedDigest: "bdigest",
        decidedOutcome: "succeeded",
        failure: "",
        runsAwarded: 1,
        trustedAlone: null,
        spotCheck: false,
      },
    ],
    bidsReceived: 1,
    announcements: 1,
  };
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[values.length >> 1] as number;

async function measure(stored: number) {
  const dir = await mkdtemp(join(tmpdir(), "cimesh-bench-master-"));
  const store = await openNodeStore(join(dir, "store"));
  try {
    const startMs = Date.now();
    for (let from = 0; from < stored; from += prefillBatchRecords) {
      const batch: StoreWrite[] = [];
      for (let i = from; i < Math.min(stored, from + prefillBatchRecords); i++)
        batch.push({ space: "job", project, jobId: `old-${i}`, record: endedRecord(`old-${i}`, startMs - 1000) });
      await store.persist(batch);
    }
    const driver = new NodeDriver<StampedMessage>({
      self: "cd".repeat(32),
      ports: {
        nowMs: () => Date.now(),
        rng: Math.random,
        seal: (message) => message,
        open: () => ({ kind: "unreadable", error: new Error("no inbound messages here") }),
        publish: () => undefined,
        send: () => undefined,
        wakeAt: () => undefined,
        startRun: () => undefined,
        killRun: () => undefined,
        persist: (batch) => store.persist(batch),
        log: () => undefined,
      },
      trust: new Map(),
      masters: [{ project, maxJobs: 2 * stored + samplesCount * stepsPerSample }],
      worker: null,
      stored: await store.load(),
    });
    driver.start();
    await driver.idle();
    const encodeStartMs = performance.now();
    const wholeStateBytes = JSON.stringify(driver.masterState(project) ?? createMaster({ project })).length;
    const wholeStateEncodeMs = performance.now() - encodeStartMs;
    const perStepMs: number[] = [];
    let next = 0;
    for (let sample = 0; sample < samplesCount; sample++) {
      const t0 = performance.now();
      for (let i = 0; i < stepsPerSample; i++) {
        const jobId = `new-${next++}`;
        await new Promise<void>((resolve, reject) =>
          driver.toMaster(project, { kind: "submit", jobId, job: jobSpec(Date.now() + 3_600_000) }, (error) =>
            error === undefined ? resolve() : reject(error),
          ),
        );
      }
      perStepMs.push((performance.now() - t0) / stepsPerSample);
    }
    await driver.stop();
    return { stored, medianStepMs: median(perStepMs), wholeStateBytes, wholeStateEncodeMs };
  } finally {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
}

export async function benchMasterStore() {
  const results = [];
  for (const stored of storedJobCounts) {
    const result = await measure(stored);
    results.push(result);
    console.log(
      `master step + persistence, ${stored.toLocaleString("en-US").padStart(7)} jobs stored: median ${result.medianStepMs.toFixed(3)} ms/step ` +
        `(a whole-state save would encode ${(result.wholeStateBytes / 2 ** 20).toFixed(1)} MiB per step, ${result.wholeStateEncodeMs.toFixed(1)} ms of JSON alone)`,
    );
  }
  const [small, large] = results;
  if (small !== undefined && large !== undefined)
    console.log(
      `ratio of step cost, ${large.stored.toLocaleString("en-US")} : ${small.stored.toLocaleString("en-US")} stored jobs = ${(large.medianStepMs / small.medianStepMs).toFixed(2)}`,
    );
  return results;
}
