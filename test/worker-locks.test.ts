/**
 * Worker locks (jobs/worker.ts) and the job file's `locks`: a volunteer's local
 * semaphore (`worker.locks: { vm: 1 }`) bounds the runs of jobs naming it on
 * that worker, whatever its slots; its offers say so, so a master awards such
 * jobs elsewhere; an award that would exceed it is refused at once.
 */
import test from "ava";
import { anchorFromGenesis, identityFromSeed } from "../crypto/index.ts";
import {
  type Award,
  createWorker,
  type Effect,
  type JobSpec,
  keyOf,
  type Result,
  stepWorker,
  type WorkerInput,
  type WorkerState,
} from "../jobs/index.ts";
import { parseJobFile } from "../node/files/index.ts";
import { type Behaviour, honest, Loop, seededRng } from "./loop.ts";

const project = anchorFromGenesis([identityFromSeed(new Uint8Array(32).fill(5)).publicKey], 1).project;
const dimensions = {
  os: "linux",
  arch: "x64",
  cores: 8,
  memoryBytes: 16 * 2 ** 30,
  diskBytes: 2 ** 38,
  tools: [],
  labels: [],
};
const runMs = 5_000;
const slow: Behaviour = (run, worker) => ({
  ...(honest(run, worker) as NonNullable<ReturnType<Behaviour>>),
  durationMs: runMs,
});

function spec(deadlineMs: number, locks?: JobSpec["locks"]): JobSpec {
  return {
    name: "vm test",
    steps: [{ name: "test", run: "make vm-test" }],
    env: {},
    timeoutMs: 600_000,
    resources: { cpus: 1, memoryBytes: 2 ** 30, diskBytes: 0, processes: 64 },
    network: false,
    outputs: [],
    inputsDigest: null,
    requiredSpecs: [],
    os: "linux",
    replicas: 1,
    quorum: 1,
    shards: 1,
    priority: 0,
    maxAttempts: 3,
    deadlineMs,
    ...(locks === undefined ? {} : { locks }),
  };
}

/** What admission says of the n-th worker: one of the project's runners, whose result decides a shard alone. */
const runner = (n: number) => ({ runner: true, prefix: `192.0.2.${n}/32` });

/** Each worker's runs as [job, start, end], from its own effects: start-execution, then the result it sent. */
function runsOf(loop: Loop): Map<string, { jobId: string; startMs: number; endMs: number }[]> {
  const runs = new Map<string, { jobId: string; startMs: number; endMs: number }[]>();
  const open = new Map<string, { jobId: string; startMs: number; endMs: number }>();
  for (const { atMs, node, effect } of loop.log) {
    if (effect.type === "start-execution") {
      const run = { jobId: effect.run.jobId, startMs: atMs, endMs: Number.POSITIVE_INFINITY };
      open.set(`${node}/${effect.run.jobId}/${effect.run.attempt}`, run);
      runs.set(node, [...(runs.get(node) ?? []), run]);
    } else if (effect.type === "send" && effect.message.domain === "result") {
      const body = effect.message.body;
      const run = open.get(`${node}/${body.jobId}/${body.attempt}`);
      if (run !== undefined) run.endMs = Math.min(run.endMs, atMs);
    }
  }
  return runs;
}

/** The most runs among `runs` under way at one instant. */
function mostAtOnce(runs: readonly { startMs: number; endMs: number }[]): number {
  const edges = runs.flatMap((run) => [
    [run.startMs, 1],
    [run.endMs, -1],
  ]);
  // An end before a start at the same instant: the slot was handed on.
  edges.sort((a, b) => (a[0] as number) - (b[0] as number) || (a[1] as number) - (b[1] as number));
  let now = 0;
  let most = 0;
  for (const [, delta] of edges) {
    now += delta as number;
    most = Math.max(most, now);
  }
  return most;
}

test("a worker's local lock bounds the runs naming it, whatever its slots; jobs naming no lock of it run beside them", (t) => {
  const loop = new Loop({ seed: 31 });
  const master = loop.addMaster({ project });
  const worker = loop.addWorker(
    { shares: { [project]: 1 }, dimensions, specs: [], slots: 3, locks: { vm: 1 } },
    slow,
    "eager",
    runner(1),
  );
  loop.offerAll();
  const deadlineMs = loop.nowMs + 3_600_000;
  for (let n = 0; n < 4; n++)
    loop.toMaster(master, { kind: "submit", jobId: `vm-${n}`, job: spec(deadlineMs, [{ name: "vm", count: 100 }]) });
  loop.toMaster(master, { kind: "submit", jobId: "plain", job: spec(deadlineMs) });
  loop.toMaster(master, { kind: "submit", jobId: "other-lock", job: spec(deadlineMs, [{ name: "db", count: 5 }]) });
  loop.run(loop.nowMs + 120_000);
  for (const job of Object.values(loop.master(master).state.jobs)) t.is(job.status, "passed", job.jobId);
  const runs = runsOf(loop).get(worker) ?? [];
  t.is(mostAtOnce(runs.filter((run) => run.jobId.startsWith("vm-"))), 1, "one vm job at a time");
  t.true(mostAtOnce(runs) >= 2, "jobs naming no lock of the worker take its other slots meanwhile");
  const refused = loop.log.filter(
    ({ effect }) =>
      effect.type === "send" && effect.message.domain === "result" && effect.message.body.outcome === "refused",
  );
  t.is(refused.length, 0, "the offers said the lock was taken: no award had to be refused");
});

test("a master awards a job naming a worker lock to a worker with some of it left, by what the offers say", (t) => {
  const loop = new Loop({ seed: 32 });
  const master = loop.addMaster({ project });
  const a = loop.addWorker(
    { shares: { [project]: 1 }, dimensions, specs: [], slots: 2, locks: { vm: 1 } },
    slow,
    "eager",
    runner(1),
  );
  const b = loop.addWorker(
    { shares: { [project]: 1 }, dimensions, specs: [], slots: 2, locks: { vm: 1 } },
    slow,
    "eager",
    runner(2),
  );
  loop.offerAll();
  const deadlineMs = loop.nowMs + 3_600_000;
  loop.toMaster(master, { kind: "submit", jobId: "vm-0", job: spec(deadlineMs, [{ name: "vm", count: 10 }]) });
  loop.toMaster(master, { kind: "submit", jobId: "vm-1", job: spec(deadlineMs, [{ name: "vm", count: 10 }]) });
  const awarded = loop.master(master).state;
  const workersOf = ["vm-0", "vm-1"].map((jobId) => awarded.jobs[jobId]?.attempts[0]?.worker);
  t.deepEqual(new Set(workersOf), new Set([a, b]), "one to each, in the submits' own steps");
  loop.run(loop.nowMs + 60_000);
  t.is(loop.master(master).state.jobs["vm-0"]?.status, "passed");
  t.is(loop.master(master).state.jobs["vm-1"]?.status, "passed");
});

function award(jobId: string, attempt: number, job: JobSpec, self: string, nowMs: number): Award {
  return {
    issuedAtMs: nowMs,
    expiresAtMs: nowMs + 60_000,
    seq: attempt + 1,
    project,
    jobId,
    worker: keyOf(self),
    attempt,
    shard: 0,
    shardAttempt: 0,
    leaseExpiresAtMs: nowMs + 60_000,
    job,
  };
}

test("an award that would exceed a worker lock is refused at once, as one that finds its slot taken; its offer says none is left", (t) => {
  const master = "aa".repeat(32);
  const self = "bb".repeat(32);
  const nowMs = 1_800_000_000_000;
  const rng = seededRng(3);
  let state: WorkerState = createWorker(self, {
    shares: { [project]: 1 },
    dimensions,
    specs: [],
    slots: 3,
    locks: { vm: 1 },
    offerJitterMs: 1,
  });
  const feed = (input: WorkerInput, atMs = nowMs): readonly Effect[] => {
    const output = stepWorker(state, input, atMs, rng);
    state = output.state;
    return output.effects;
  };
  feed({ kind: "restart" });
  const offered = feed({ kind: "masters", project, masters: [master] }, nowMs + 10);
  const offers = offered.flatMap((effect) =>
    effect.type === "send" && effect.message.domain === "offer" ? [effect.message.body] : [],
  );
  t.deepEqual(
    offers.map((offer) => [offer.freeSlots, offer.locks]),
    [[3, [{ name: "vm", free: 1 }]]],
  );
  const vm = spec(nowMs + 3_600_000, [{ name: "vm", count: 50 }]);
  const first = feed({ kind: "award", signer: master, award: award("vm-0", 0, vm, self, nowMs) }, nowMs + 20);
  t.true(first.some((effect) => effect.type === "start-execution"));
  const second = feed({ kind: "award", signer: master, award: award("vm-1", 0, vm, self, nowMs) }, nowMs + 30);
  t.false(second.some((effect) => effect.type === "start-execution"));
  const refusal = second.flatMap((effect) =>
    effect.type === "send" && effect.message.domain === "result" ? [effect.message.body as Omit<Result, "seq">] : [],
  );
  t.is(refusal.length, 1);
  t.is(refusal[0]?.outcome, "refused");
  t.regex(refusal[0]?.summary ?? "", /local lock vm/);
  // The master dropped the offer of a worker that refused: the worker offers again at once what it has, vm taken.
  const reoffer = second.flatMap((effect) =>
    effect.type === "send" && effect.message.domain === "offer" ? [effect.message.body] : [],
  );
  t.deepEqual(
    reoffer.map((offer) => [offer.freeSlots, offer.locks]),
    [[2, [{ name: "vm", free: 0 }]]],
  );
  // A job naming no lock of this worker still takes a free slot.
  const plain = feed(
    { kind: "award", signer: master, award: award("plain", 0, spec(nowMs + 3_600_000), self, nowMs) },
    nowMs + 40,
  );
  t.true(plain.some((effect) => effect.type === "start-execution"));
  t.throws(() => createWorker(self, { shares: {}, dimensions, specs: [], locks: { vm: 0 } }), {
    message: /locks\.vm: expected a count of 1\.\.100000, got 0/,
  });
  t.throws(() => createWorker(self, { shares: {}, dimensions, specs: [], locks: { "Big VM": 1 } }), {
    message: /locks\.Big VM: expected a lock name/,
  });
});

test("a job file names its locks; a bad name, count or a lock named twice names the line and field", (t) => {
  const nowMs = 1_800_000_000_000;
  const parsed = parseJobFile(
    `project: ${project}\nname: deploy\nsteps: [make deploy]\nlocks: [{ name: staging-db, count: 2 }, { name: vm, count: 1 }]\n`,
    "job.yaml",
    nowMs,
  );
  t.deepEqual(parsed.spec.locks, [
    { name: "staging-db", count: 2 },
    { name: "vm", count: 1 },
  ]);
  const plain = parseJobFile(`project: ${project}\nname: plain\nsteps: [make]\n`, "job.yaml", nowMs);
  t.false("locks" in plain.spec, "a job naming no lock signs no locks field");
  const cases: [string, RegExp][] = [
    ["locks:\n  - { name: Staging DB, count: 2 }\n", /job\.yaml:5: locks\[0\]\.name: expected a lock name/],
    ["locks:\n  - { name: db, count: 0 }\n", /job\.yaml:5: locks\[0\]\.count: /],
    [
      "locks:\n  - { name: db, count: 1 }\n  - { name: db, count: 2 }\n",
      /job\.yaml:5: locks: expected each lock named once/,
    ],
    ["locks:\n  - { name: db }\n", /job\.yaml:5: locks\[0\]\.count: /],
  ];
  for (const [tail, message] of cases)
    t.throws(() => parseJobFile(`project: ${project}\nname: n\nsteps: [make]\n${tail}`, "job.yaml", nowMs), {
      message,
    });
});
