import test from "ava";
import { anchorFromGenesis, identityFromSeed } from "../crypto/index.ts";
import { explainJob, type JobSpec } from "../jobs/index.ts";
import { honest, Loop } from "./loop.ts";

const project = anchorFromGenesis([identityFromSeed(new Uint8Array(32).fill(4)).publicKey], 1).project;
const dimensions = {
  os: "linux",
  arch: "x64",
  cores: 2,
  memoryBytes: 4 * 2 ** 30,
  diskBytes: 2 ** 36,
  tools: [],
  labels: [],
};
const wantedSpec = "0f8fad5b-d9cb-469f-a165-70867728950e";

function job(deadlineMs: number, overrides: Partial<JobSpec> = {}): JobSpec {
  return {
    name: "build",
    steps: [{ name: "make", run: "make" }],
    env: {},
    timeoutMs: 60_000,
    resources: { cpus: 8, memoryBytes: 2 ** 30, diskBytes: 0, processes: 64 },
    network: false,
    outputs: [],
    inputsDigest: null,
    requiredSpecs: [wantedSpec],
    os: "linux",
    replicas: 1,
    quorum: 1,
    shards: 1,
    priority: 0,
    maxAttempts: 3,
    deadlineMs,
    ...overrides,
  };
}

test("explainJob answers 'no worker picked up my job' with the requirement that blocks it", (t) => {
  const loop = new Loop({ seed: 3 });
  const master = loop.addMaster({ project });
  for (let i = 0; i < 4; i++) loop.addWorker({ shares: { [project]: 1 }, dimensions, specs: [] }, honest);
  loop.offerAll();
  loop.toMaster(master, { kind: "submit", jobId: "big-build", job: job(loop.nowMs + 3_600_000) });
  loop.run(loop.nowMs + 120_000);
  const state = loop.master(master).state;
  t.is(state.jobs["big-build"]?.status, "open");
  t.is(state.jobs["big-build"]?.bidsReceived, 0);
  const text = explainJob(state, "big-build", loop.nowMs);
  t.log(text);
  t.regex(text, /0 bid\(s\) received/);
  t.regex(text, /0 of 4 known workers are eligible/);
  t.regex(text, new RegExp(`spec ${wantedSpec.slice(0, 8)}`));
  t.regex(text, /cores/);
});

test("explainJob on a finished job gives its verdict and reason", (t) => {
  const loop = new Loop({ seed: 4 });
  const master = loop.addMaster({ project });
  // One of the project's own runners: a lone volunteer's result weighs nothing, so it would decide no shard.
  loop.addWorker({ shares: { [project]: 1 }, dimensions, specs: [] }, honest, "eager", { runner: true });
  loop.offerAll();
  loop.toMaster(master, {
    kind: "submit",
    jobId: "small",
    job: job(loop.nowMs + 3_600_000, {
      requiredSpecs: [],
      resources: { cpus: 1, memoryBytes: 2 ** 20, diskBytes: 0, processes: 8 },
    }),
  });
  loop.run(loop.nowMs + 120_000);
  const text = explainJob(loop.master(master).state, "small", loop.nowMs);
  t.regex(text, /^job small: passed/);
  t.regex(text, /shard 0: decided \(succeeded\)/);
  t.regex(text, /1 of 1 known worker is eligible/, "a runner's offer makes it a known worker");
  t.is(explainJob(loop.master(master).state, "nope", loop.nowMs), "no job nope on this master");
});

// Three volunteers without a record: the first result agrees with itself but weighs nothing, and the master then waits
// for a weighed bid that none of them can make. Failing until explainJob says so (or the job ends at its bound): it
// now says only "undecided", and the job waits for its deadline.
test("explainJob on a job that volunteers without a record could not decide says their results weigh nothing", (t) => {
  const loop = new Loop({ seed: 5 });
  const master = loop.addMaster({ project });
  for (let i = 0; i < 3; i++) loop.addWorker({ shares: { [project]: 1 }, dimensions, specs: [] }, honest);
  loop.offerAll();
  loop.toMaster(master, {
    kind: "submit",
    jobId: "agreed",
    job: job(loop.nowMs + 3_600_000, {
      requiredSpecs: [],
      resources: { cpus: 1, memoryBytes: 2 ** 20, diskBytes: 0, processes: 8 },
    }),
  });
  loop.run(loop.nowMs + 120_000);
  const state = loop.master(master).state;
  const text = explainJob(state, "agreed", loop.nowMs);
  t.log(text);
  t.regex(text, /3 of 3 known workers are eligible/, "unproven workers' offers still count in the pool");
  t.is(Object.keys(state.unproven).length, 3);
  t.is(Object.keys(state.workers).length, 0);
  t.regex(text, /weigh/, "the explanation names the weight the results lack");
});
