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
  loop.advertiseAll();
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
  loop.addWorker({ shares: { [project]: 1 }, dimensions, specs: [] }, honest);
  loop.advertiseAll();
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
  t.is(explainJob(loop.master(master).state, "nope", loop.nowMs), "no job nope on this master");
});
