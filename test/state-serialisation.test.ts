import test from "ava";
import { anchorFromGenesis, identityFromSeed } from "../crypto/index.ts";
import type { JobSpec, MasterState, WorkerState } from "../jobs/index.ts";
import { honest, Loop } from "./loop.ts";

const project = anchorFromGenesis([identityFromSeed(new Uint8Array(32).fill(6)).publicKey], 1).project;
const dimensions = {
  os: "linux",
  arch: "x64",
  cores: 4,
  memoryBytes: 8 * 2 ** 30,
  diskBytes: 2 ** 36,
  tools: [],
  labels: [],
};

function spec(deadlineMs: number, overrides: Partial<JobSpec> = {}): JobSpec {
  return {
    name: "tests",
    steps: [{ name: "test", run: "make test" }],
    env: {},
    timeoutMs: 600_000,
    resources: { cpus: 1, memoryBytes: 2 ** 30, diskBytes: 0, processes: 64 },
    network: false,
    outputs: [],
    inputsDigest: null,
    requiredSpecs: [],
    os: "linux",
    replicas: 2,
    quorum: 2,
    shards: 2,
    priority: 0,
    maxAttempts: 4,
    deadlineMs,
    ...overrides,
  };
}

const roundTrip = <T>(value: T): T => JSON.parse(JSON.stringify(value)) as T;

/** What admission says of the n-th runner: the project's own machine, each on a network prefix of its own. */
const runnerFacts = (n: number) => ({ runner: true, prefix: `192.0.2.${n}/32` });

test("master and worker states survive JSON mid-job, as a store would keep them, and the jobs still finish", (t) => {
  const loop = new Loop({ seed: 21 });
  const master = loop.addMaster({ project });
  // The project's runners, whose results decide under the default quorum rules, and a volunteer without a record, whose
  // offer the master keeps apart (unproven): the round trip carries both tables and the new attempt fields.
  const slow = (run: Parameters<typeof honest>[0], worker: string) => ({
    ...(honest(run, worker) as NonNullable<ReturnType<typeof honest>>),
    durationMs: 30_000,
  });
  const workers = Array.from({ length: 4 }, (_, n) =>
    loop.addWorker({ shares: { [project]: 1 }, dimensions, specs: [] }, slow, "eager", runnerFacts(n)),
  );
  workers.push(
    loop.addWorker({ shares: { [project]: 1 }, dimensions, specs: [] }, slow, "eager", { prefix: "198.51.100.0/24" }),
  );
  loop.offerAll();
  t.is(Object.keys(loop.master(master).state.workers).length, 4, "the runners are known workers");
  t.is(Object.keys(loop.master(master).state.unproven).length, 1, "the volunteer is known, unproven");
  loop.toMaster(master, { kind: "submit", jobId: "a", job: spec(loop.nowMs + 3_600_000) });
  loop.toMaster(master, { kind: "submit", jobId: "b", job: spec(loop.nowMs + 3_600_000, { shards: 1 }) });
  loop.run(loop.nowMs + 10_000);
  const before = loop.master(master).state;
  t.true(Object.values(before.jobs).some((job) => job.attempts.some((attempt) => attempt.state === "running")));
  loop.master(master).state = roundTrip<MasterState>(before);
  t.deepEqual(loop.master(master).state, before);
  for (const key of workers) loop.worker(key).state = roundTrip<WorkerState>(loop.worker(key).state);
  loop.run(loop.nowMs + 600_000);
  const after = loop.master(master).state;
  t.is(after.jobs.a?.status, "passed");
  t.is(after.jobs.b?.status, "passed");
  for (const job of Object.values(after.jobs))
    for (const attempt of job.attempts)
      t.is(attempt.runner, attempt.worker !== workers[4], "an attempt keeps whether its worker is a runner");
});

test("a bid from a worker whose own offer misses the job's requirements is rejected", (t) => {
  const loop = new Loop({ seed: 22 });
  const master = loop.addMaster({ project });
  const small = loop.addWorker(
    { shares: { [project]: 1 }, dimensions: { ...dimensions, cores: 1 }, specs: [] },
    honest,
  );
  loop.offerAll();
  loop.toMaster(master, {
    kind: "submit",
    jobId: "wide",
    job: spec(loop.nowMs + 3_600_000, {
      replicas: 1,
      quorum: 1,
      shards: 1,
      resources: { cpus: 4, memoryBytes: 2 ** 20, diskBytes: 0, processes: 8 },
    }),
  });
  loop.toMaster(master, {
    kind: "bid",
    signer: small,
    bid: {
      issuedAtMs: loop.nowMs,
      expiresAtMs: loop.nowMs + 60_000,
      seq: 0,
      project,
      jobId: "wide",
      round: 0,
      availability: "eager",
      runningJobs: 0,
      freeSlots: 1,
      cachedInputBytes: 0,
    },
  });
  const rejects = loop.log.filter((entry) => entry.effect.type === "send" && entry.effect.message.domain === "reject");
  t.is(rejects.length, 1);
  const reject = rejects[0]?.effect;
  t.true(
    reject?.type === "send" && reject.message.domain === "reject" && /not eligible/.test(reject.message.body.reason),
  );
  t.is(loop.master(master).state.jobs.wide?.bids.length, 0);
});

test("a master rebuilt mid-job from its job records and reputations through JSON, as the store keeps them, finishes its jobs", (t) => {
  const loop = new Loop({ seed: 23 });
  const master = loop.addMaster({ project });
  // The project's runners: their results decide under the default quorum rules.
  for (let i = 0; i < 4; i++)
    loop.addWorker(
      { shares: { [project]: 1 }, dimensions, specs: [] },
      (run, worker) => ({
        ...(honest(run, worker) as NonNullable<ReturnType<typeof honest>>),
        durationMs: 30_000,
      }),
      "eager",
      runnerFacts(i),
    );
  loop.offerAll();
  loop.toMaster(master, { kind: "submit", jobId: "a", job: spec(loop.nowMs + 3_600_000) });
  loop.run(loop.nowMs + 10_000);
  const before = loop.master(master).state;
  const running = Object.values(before.jobs).flatMap((job) => job.attempts.filter((a) => a.state === "running"));
  t.true(running.length > 0);
  loop.restartMaster(master);
  const after = loop.master(master).state;
  t.deepEqual(Object.keys(after.jobs), Object.keys(before.jobs));
  for (const attempt of Object.values(after.jobs).flatMap((job) => job.attempts))
    if (attempt.state === "running") t.true(attempt.leaseExpiresAtMs >= loop.nowMs + after.config.leaseMs);
  loop.run(loop.nowMs + 600_000);
  t.is(loop.master(master).state.jobs.a?.status, "passed");
  t.is(loop.master(master).state.jobs.a?.attempts.length, 4, "two replicas on each of two shards, none lost");
});

test("lock holds survive JSON and a master restart mid-job: the restored master keeps the bound, and every job still finishes", (t) => {
  const loop = new Loop({ seed: 23 });
  const master = loop.addMaster({ project });
  const slow = (run: Parameters<typeof honest>[0], worker: string) => ({
    ...(honest(run, worker) as NonNullable<ReturnType<typeof honest>>),
    durationMs: 20_000,
  });
  for (let n = 0; n < 5; n++)
    loop.addWorker({ shares: { [project]: 1 }, dimensions, specs: [] }, slow, "eager", runnerFacts(n));
  loop.offerAll();
  const locks = [{ name: "staging-db", count: 2 }];
  for (let n = 0; n < 6; n++)
    loop.toMaster(master, {
      kind: "submit",
      jobId: `deploy-${n}`,
      job: spec(loop.nowMs + 3_600_000, { replicas: 1, quorum: 1, shards: 1, locks }),
    });
  const holding = () =>
    Object.values(loop.master(master).state.jobs).flatMap((job) =>
      job.attempts.filter((attempt) => attempt.locksHeld === true),
    ).length;
  let most = 0;
  const step = (untilMs: number) => {
    while (loop.nowMs < untilMs) {
      loop.run(loop.nowMs + 500);
      most = Math.max(most, holding());
    }
  };
  step(loop.nowMs + 5_000);
  const before = loop.master(master).state;
  t.is(before.lockHolders["staging-db"]?.length, 2, "two runs hold the lock of count 2");
  t.is(Object.keys(before.lockWaits).length, 4, "four jobs wait for it");
  loop.stopMaster(master);
  step(loop.nowMs + 5_000);
  loop.restartMaster(master);
  const after = loop.master(master).state;
  t.deepEqual(after.lockHolders, before.lockHolders, "the holds come back from the job records");
  step(loop.nowMs + 600_000);
  t.is(most, 2, "never more than two holders, across the restart");
  for (const job of Object.values(loop.master(master).state.jobs)) t.is(job.status, "passed", job.jobId);
  t.deepEqual(loop.master(master).state.lockHolders, {});
});
