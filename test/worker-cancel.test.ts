import test from "ava";
import { anchorFromGenesis, identityFromSeed } from "../crypto/index.ts";
import {
  type Cancel,
  createWorker,
  effectiveAvailability,
  hexOf,
  type JobSpec,
  offerStatus,
  stepWorker,
  type WorkerState,
} from "../jobs/index.ts";
import { seededRng } from "./loop.ts";

const project = anchorFromGenesis([identityFromSeed(new Uint8Array(32).fill(8)).publicKey], 1).project;
const master = "aa".repeat(32);
const self = hexOf(identityFromSeed(new Uint8Array(32).fill(9)).publicKey);
const nowMs = 1_800_000_000_000;
const job: JobSpec = {
  name: "t",
  steps: [{ name: "s", run: "true" }],
  env: {},
  timeoutMs: 60_000,
  resources: { cpus: 1, memoryBytes: 2 ** 20, diskBytes: 0, processes: 8 },
  network: false,
  outputs: [],
  inputsDigest: null,
  requiredSpecs: [],
  os: null,
  replicas: 1,
  quorum: 1,
  shards: 2,
  priority: 0,
  maxAttempts: 3,
  deadlineMs: nowMs + 3_600_000,
};

function running(): WorkerState {
  const rng = seededRng(1);
  let state = createWorker(self, {
    shares: { [project]: 1 },
    dimensions: { os: "linux", arch: "x64", cores: 2, memoryBytes: 2 ** 32, diskBytes: 2 ** 32, tools: [], labels: [] },
    specs: [],
  });
  const header = { issuedAtMs: nowMs, expiresAtMs: nowMs + 60_000, seq: 0 };
  state = stepWorker(state, { kind: "restart" }, nowMs, rng).state;
  state = stepWorker(state, { kind: "masters", project, masters: [master] }, nowMs, rng).state;
  // An award made from the worker's standing offer: it carries the job, which the worker never saw announced.
  const award = {
    ...header,
    project,
    jobId: "j",
    worker: identityFromSeed(new Uint8Array(32).fill(9)).publicKey,
    attempt: 5,
    shard: 1,
    shardAttempt: 0,
    leaseExpiresAtMs: nowMs + 60_000,
    job,
  };
  const out = stepWorker(state, { kind: "award", signer: master, award }, nowMs, rng);
  if (!out.effects.some((effect) => effect.type === "start-execution"))
    throw new Error("the award did not start a run");
  return out.state;
}

function cancel(attempt: number | null): Cancel {
  return { issuedAtMs: nowMs, expiresAtMs: nowMs + 60_000, seq: 9, project, jobId: "j", attempt, reason: "test" };
}

test("a cancel naming another attempt of the job leaves this run alone; one naming it, or the whole job, kills it", (t) => {
  const rng = seededRng(2);
  const other = stepWorker(running(), { kind: "cancel", signer: master, cancel: cancel(3) }, nowMs + 1, rng);
  t.false(other.effects.some((effect) => effect.type === "kill-execution"));
  t.is(Object.keys(other.state.running).length, 1);
  for (const attempt of [5, null]) {
    const out = stepWorker(running(), { kind: "cancel", signer: master, cancel: cancel(attempt) }, nowMs + 1, rng);
    t.true(
      out.effects.some((effect) => effect.type === "kill-execution"),
      `attempt ${attempt}`,
    );
    t.is(Object.keys(out.state.running).length, 0);
    // A run its master stopped is not reported: nothing waits in the outbox for an acknowledgement.
    t.false(out.effects.some((effect) => effect.type === "send" && effect.message.domain === "result"));
    t.deepEqual(out.state.outbox, {});
  }
  const stranger = stepWorker(
    running(),
    { kind: "cancel", signer: "bb".repeat(32), cancel: cancel(null) },
    nowMs + 1,
    rng,
  );
  t.false(
    stranger.effects.some((effect) => effect.type === "kill-execution"),
    "only the master that awarded the run may stop it",
  );
});

test("a worker that cannot run (no sandbox) acts paused, offers no slot and bids on nothing, and keeps its volunteer's choice for when it can", (t) => {
  const rng = seededRng(2);
  const dimensions = {
    os: "linux",
    arch: "x64",
    cores: 2,
    memoryBytes: 2 ** 32,
    diskBytes: 2 ** 32,
    tools: [],
    labels: [],
  };
  let blocked = createWorker(
    self,
    { shares: { [project]: 1 }, dimensions, specs: [], cannotRun: "no sandbox" },
    "eager",
  );
  t.is(effectiveAvailability(blocked), "paused");
  t.is(blocked.availability, "eager", "the volunteer's choice is kept");
  const header = { issuedAtMs: nowMs, expiresAtMs: nowMs + 60_000, seq: 0 };
  const { effects } = stepWorker(
    blocked,
    {
      kind: "announcement",
      signer: master,
      announcement: {
        ...header,
        project,
        jobId: "j",
        job,
        round: 0,
        bidProbability: 1,
        wantedRuns: 1,
        eligiblePoolEstimate: 1,
      },
    },
    nowMs,
    rng,
  );
  t.false(
    effects.some((effect) => effect.type === "send"),
    "no bid",
  );
  t.deepEqual(offerStatus(blocked), { availability: "paused", freeSlots: 0 }, "its offers say so");
  const offers = [];
  // The first offer goes out within offerJitterMs of the (re)start, once the worker knows its project's master.
  const inputs = [
    [{ kind: "restart" }, nowMs],
    [{ kind: "masters", project, masters: [master] }, nowMs],
    [{ kind: "tick" }, nowMs + blocked.config.offerJitterMs],
  ] as const;
  for (const [input, atMs] of inputs) {
    const out = stepWorker(blocked, input, atMs, rng);
    blocked = out.state;
    for (const effect of out.effects)
      if (effect.type === "send" && effect.message.domain === "offer") offers.push(effect.message.body);
  }
  t.is(offers.length, 1, "it tells its master it exists");
  t.like(offers[0], { freeSlots: 0, availability: "paused" });
  const able = { ...blocked, config: { ...blocked.config, cannotRun: "" } };
  t.is(effectiveAvailability(able), "eager");
});
