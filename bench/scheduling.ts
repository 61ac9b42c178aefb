/**
 * The master's bid throughput with and without signature
 * verification, against raw node:crypto verify in the same run, and whole
 * jobs per second through one master and its workers in one process, every
 * message signed by its sender and verified by each receiver.
 */
import { createPublicKey, verify as nodeVerify } from "node:crypto";
import { performance } from "node:perf_hooks";
import {
  acceptKeyset,
  anchorFromGenesis,
  createReplayLedger,
  type Identity,
  identityFromSeed,
  openEnvelope,
  projectIdOf,
  sealEnvelope,
  sealKeyset,
  signBytes,
  trustFromAnchor,
} from "../crypto/index.ts";
import {
  type Bid,
  createMaster,
  createWorker,
  type DriverPorts,
  hexOf,
  type JobSpec,
  type MasterState,
  messageDomains,
  NodeDriver,
  stepMaster,
} from "../jobs/index.ts";
import { openInbound } from "../node/runtime/index.ts";
import { seededRng } from "../test/loop.ts";
import { formatRate, measureRate, type Rate } from "./harness.ts";

const startMs = 1_800_000_000_000;
const dimensions = {
  os: "linux",
  arch: "x64",
  cores: 8,
  memoryBytes: 16 * 2 ** 30,
  diskBytes: 2 ** 40,
  tools: [],
  labels: [],
};

function identity(n: number): Identity {
  const seed = new Uint8Array(32);
  new DataView(seed.buffer).setUint32(0, n + 1);
  return identityFromSeed(seed);
}

/** A typical job of a project's CI, for the benchmarks. */
export function jobSpec(deadlineMs: number): JobSpec {
  return {
    name: "unit tests",
    steps: [
      { name: "install", run: "npm ci" },
      { name: "test", run: "npm test" },
    ],
    env: { CI: "true" },
    timeoutMs: 600_000,
    resources: { cpus: 2, memoryBytes: 2 ** 31, diskBytes: 2 ** 32, processes: 256 },
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
  };
}

/** Bids per second into one master: `bidsPerJob` workers bid on each of `jobs` open jobs. */
function bidThroughput(verify: boolean, jobs: number, bidsPerJob: number): Rate {
  const workers = Array.from({ length: bidsPerJob }, (_, i) => identity(i + 1));
  const project = "b".padEnd(53, "a");
  const bids: { signer: string; body: Bid; bytes: Uint8Array }[] = [];
  for (let j = 0; j < jobs; j++) {
    for (const [i, worker] of workers.entries()) {
      const body: Bid = {
        issuedAtMs: startMs,
        expiresAtMs: startMs + 60_000,
        seq: j * bidsPerJob + i,
        project,
        jobId: `job-${j}`,
        round: 0,
        availability: "eager",
        runningJobs: i % 3,
        freeSlots: 1,
        cachedInputBytes: 0,
      };
      bids.push({ signer: hexOf(worker.publicKey), body, bytes: sealEnvelope(messageDomains.bid, body, worker) });
    }
  }
  const rng = seededRng(7);
  const fresh = (): MasterState => {
    let state = createMaster({ project, bidWindowMs: 60_000 });
    for (let j = 0; j < jobs; j++)
      state = stepMaster(
        state,
        { kind: "submit", jobId: `job-${j}`, job: jobSpec(startMs + 3_600_000) },
        startMs,
        rng,
      ).state;
    return state;
  };
  // One unit of work is one bid; the master is rebuilt (untimed) when a pass over the bids ends.
  let state = fresh();
  let index = 0;
  const name = verify
    ? "master: bids handled (verify envelope + step)"
    : "master: bids handled (step only, core overhead)";
  return measureRate(name, () => {
    if (index === bids.length) {
      state = fresh();
      index = 0;
    }
    const bid = bids[index++] as (typeof bids)[number];
    const body = verify ? openEnvelope(messageDomains.bid, bid.bytes, startMs).body : bid.body;
    state = stepMaster(state, { kind: "bid", signer: bid.signer, bid: body }, startMs, rng).state;
  });
}

/**
 * Whole jobs through one master node and `workerCount` worker nodes, each a NodeDriver (the shell core nodes run)
 * with in-memory ports: every message sealed by its sender and opened by each receiver, every admission made
 * (keyset trust, replay ledger), persistence a no-op (bench/master-store.ts measures the store).
 */
export function jobsThroughput(
  jobCount: number,
  workerCount: number,
): { jobsPerSecond: number; jobsPerCpuSecond: number; messagesPerJob: number; verifiesPerJob: number } {
  const rng = seededRng(11);
  const root = identity(99);
  const masterId = identity(100);
  const project = projectIdOf([root.publicKey], 1);
  const keyset = sealKeyset(
    {
      project,
      rootVersion: 1,
      version: 1,
      issuedAtMs: startMs,
      expiresAtMs: startMs + 86_400_000,
      roots: [root.publicKey],
      threshold: 1,
      announcers: [{ key: masterId.publicKey, label: "bench master", expiresAtMs: startMs + 86_400_000 }],
    },
    [root],
  );
  const trust = new Map([
    [project, acceptKeyset(trustFromAnchor(anchorFromGenesis([root.publicKey], 1)), keyset, startMs)],
  ]);
  let nowMs = startMs;
  let messages = 0;
  let verifies = 0;
  const queue: (() => void)[] = [];
  const wakeUps = new Map<string, number>();
  const drivers = new Map<string, NodeDriver<Uint8Array>>();
  const portsFor = (id: Identity): DriverPorts<Uint8Array> => {
    const key = hexOf(id.publicKey);
    const self = () => drivers.get(key) as NodeDriver<Uint8Array>;
    return {
      nowMs: () => nowMs,
      rng,
      seal: (message) => {
        messages++;
        return sealEnvelope(messageDomains[message.domain] as never, message.body as never, id);
      },
      open: (bytes, atMs) => {
        verifies++;
        return openInbound(bytes, atMs);
      },
      publish: (topic, bytes) => {
        // Every other node subscribes to the project's topic; each one's admission decides whether a machine takes it.
        for (const [other, driver] of drivers)
          if (other !== key) queue.push(() => driver.receive({ kind: "topic", topic }, bytes));
      },
      send: (to, bytes) => queue.push(() => drivers.get(to)?.receive({ kind: "direct", peer: key }, bytes)),
      wakeAt: (atMs) => wakeUps.set(key, atMs),
      startRun: (run) =>
        queue.push(() =>
          self().runFinished({
            runId: run.runId,
            outcome: "succeeded",
            exitCode: 0,
            outputsDigest: null,
            logDigest: null,
            summary: "",
            durationMs: 1,
          }),
        ),
      killRun: () => undefined,
      persist: () => undefined,
      log: () => undefined,
    };
  };
  const stored = () => ({
    worker: null,
    masters: new Map(),
    ledger: createReplayLedger(),
    keysets: new Map(),
    seqReservedUpTo: 0,
  });
  const master = new NodeDriver<Uint8Array>({
    self: hexOf(masterId.publicKey),
    ports: portsFor(masterId),
    trust,
    // Weight off (as bench/nodes.ts benchQuorum): one worker, new to the master, decides its shards alone.
    masters: [{ project, bidWindowMs: 100, quorumWeight: 0, distinctPrefixes: false }],
    worker: null,
    stored: stored(),
  });
  drivers.set(master.self, master);
  for (let i = 0; i < workerCount; i++) {
    const id = identity(200 + i);
    const key = hexOf(id.publicKey);
    const worker = createWorker(key, { shares: { [project]: 1 }, dimensions, specs: [], slots: 4 });
    drivers.set(key, new NodeDriver({ self: key, ports: portsFor(id), trust, masters: [], worker, stored: stored() }));
  }
  for (const driver of drivers.values()) driver.start();
  const drain = () => {
    for (let guard = 0; guard < 1_000_000; guard++) {
      const next = queue.shift();
      if (next === undefined) return;
      next();
    }
  };
  drain();
  messages = 0;
  verifies = 0;
  const started = performance.now();
  const cpuStart = process.cpuUsage();
  for (let j = 0; j < jobCount; j++) {
    master.toMaster(project, { kind: "submit", jobId: `job-${j}`, job: jobSpec(nowMs + 3_600_000) });
    for (let guard = 0; guard < 10_000; guard++) {
      drain();
      if (master.masterState(project)?.jobs[`job-${j}`]?.status !== "open") break;
      nowMs = Math.max(nowMs + 1, Math.min(...wakeUps.values()));
      for (const [key, atMs] of wakeUps)
        if (atMs <= nowMs) {
          wakeUps.delete(key);
          drivers.get(key)?.wake();
        }
    }
  }
  const elapsedMs = performance.now() - started;
  const cpu = process.cpuUsage(cpuStart);
  const done = Object.values(master.masterState(project)?.jobs ?? {}).filter((job) => job.status === "passed").length;
  if (done !== jobCount) throw new Error(`bench: expected ${jobCount} jobs passed, got ${done}`);
  return {
    jobsPerSecond: (jobCount * 1000) / elapsedMs,
    jobsPerCpuSecond: (jobCount * 1e6) / Math.max(1, cpu.user + cpu.system),
    messagesPerJob: messages / jobCount,
    verifiesPerJob: verifies / jobCount,
  };
}

export function benchScheduling() {
  const probe = identity(999);
  const message = new Uint8Array(300).fill(1);
  const signature = signBytes(probe, message);
  const key = createPublicKey({
    key: Buffer.concat([Buffer.from("302a300506032b6570032100", "hex"), Buffer.from(probe.publicKey)]),
    format: "der",
    type: "spki",
  });
  const raw = measureRate("raw node:crypto ed25519 verify (300 B)", () => nodeVerify(null, message, key, signature));
  const withVerify = bidThroughput(true, 2000, 4);
  const coreOnly = bidThroughput(false, 2000, 4);
  for (const rate of [raw, withVerify, coreOnly]) console.log(formatRate(rate));
  const ratio = withVerify.medianPerSecond / raw.medianPerSecond;
  const coreShare = 1 / withVerify.medianPerSecond - 1 / raw.medianPerSecond;
  console.log(
    `ratio bids handled with verify / raw verify:                ${ratio.toFixed(3)}   (goal: core adds < 30%, ratio >= 0.77)`,
  );
  console.log(`time per bid beyond the raw verify:                        ${(coreShare * 1e6).toFixed(1)} µs`);
  const runs: number[] = [];
  let last = { jobsPerSecond: 0, jobsPerCpuSecond: 0, messagesPerJob: 0, verifiesPerJob: 0 };
  for (let i = 0; i < 5; i++) {
    last = jobsThroughput(400, 1);
    runs.push(last.jobsPerSecond);
  }
  runs.sort((a, b) => a - b);
  const oneWorker = runs[2] as number;
  console.log(
    `whole jobs/s, 1 master + 1 worker, all signed & verified:  ${Math.round(oneWorker).toLocaleString("en-US").padStart(8)}   (median of 5 x 400 jobs; ${last.messagesPerJob.toFixed(1)} messages, ${last.verifiesPerJob.toFixed(1)} verifies per job; goal >= 1,000)`,
  );
  const four = jobsThroughput(400, 4);
  console.log(
    `whole jobs/s, 1 master + 4 workers, all signed & verified: ${Math.round(four.jobsPerSecond).toLocaleString("en-US").padStart(8)}   (${four.messagesPerJob.toFixed(1)} messages, ${four.verifiesPerJob.toFixed(1)} verifies per job)`,
  );
  return {
    raw,
    withVerify,
    coreOnly,
    ratio,
    jobsPerSecondOneWorker: oneWorker,
    jobsPerSecondFourWorkers: four.jobsPerSecond,
  };
}
