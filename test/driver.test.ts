/**
 * The shell core (jobs/driver.ts): NodeDriver runs a node's machines against
 * in-memory ports. A tiny network on a virtual clock carries real sealed
 * envelopes (crypto/) between a master node and workers; each node has a
 * store that applies the batches persist() receives, from which a node is
 * rebuilt after a crash. Every port call is recorded in order, so the tests
 * can check the driver's house rules: one strictly increasing sequence per
 * node, reserved in the store before a message uses it; a step's writes
 * persisted before its effects; steps serial when persistence is a promise;
 * and what survives a restart.
 */
import { fc, testProp } from "@fast-check/ava";
import test, { type ExecutionContext } from "ava";
import {
  acceptKeyset,
  anchorFromGenesis,
  CimeshError,
  createReplayLedger,
  type Domain,
  defaultReplayLedgerLimits,
  type Identity,
  identityFromSeed,
  openAnyEnvelopeUnverified,
  type ProjectTrust,
  restoreReplayLedger,
  type SignerWindow,
  sealEnvelope,
  sealKeyset,
  trustFromAnchor,
} from "../crypto/index.ts";
import {
  type Admission,
  createWorker,
  type DriverPorts,
  type ExecutionReport,
  type ExecutionRequest,
  hexOf,
  type JobRecord,
  type JobSpec,
  type LogChunkRecord,
  type MasterConfig,
  messageDomains,
  messageRegistry,
  NodeDriver,
  type Opened,
  type Reputation,
  type SignedBody,
  type StampedMessage,
  type StoredNode,
  type StoreWrite,
  seqBlockSize,
  seqPerMs,
  sequenceFloorAt,
  type WorkerState,
} from "../jobs/index.ts";
import { seededRng } from "./loop.ts";

const startMs = 1_800_000_000_000;
const secondMs = 1000;
const minuteMs = 60 * secondMs;
const hourMs = 60 * minuteMs;
const dayMs = 24 * hourMs;

function identity(n: number): Identity {
  return identityFromSeed(new Uint8Array(32).fill(n));
}

const masterId = identity(0x41);
const otherMasterId = identity(0x42);
const workerIds = [identity(0x61), identity(0x62), identity(0x63)] as const;

/**
 * A project whose keyset, signed by its genesis root, names `announcer` as its one announcer and `runners` as its
 * runners (its own machines, whose results decide a shard under the master's default quorum rules).
 */
function projectTrust(root: Identity, announcer: Identity, runners: readonly Identity[] = []): ProjectTrust {
  const anchor = anchorFromGenesis([root.publicKey], 1);
  return acceptKeyset(
    trustFromAnchor(anchor),
    sealKeyset(
      {
        project: anchor.project,
        rootVersion: 1,
        version: 1,
        issuedAtMs: startMs,
        expiresAtMs: startMs + 30 * dayMs,
        roots: [root.publicKey],
        threshold: 1,
        announcers: [{ key: announcer.publicKey, label: "master", expiresAtMs: startMs + 30 * dayMs }],
        ...(runners.length === 0
          ? {}
          : {
              runners: runners.map((runner, i) => ({
                key: runner.publicKey,
                label: `runner ${i}`,
                expiresAtMs: startMs + 30 * dayMs,
              })),
            }),
      },
      [root],
    ),
    startMs,
  );
}

/**
 * Every node pins both projects: the first announced by the master node, with the first two workers its runners (the
 * third is a volunteer without a record), the second by another.
 */
const trust = projectTrust(identity(0x11), masterId, [workerIds[0], workerIds[1]]);
const runnerKeys = new Set([workerIds[0], workerIds[1]].map((id) => hexOf(id.publicKey)));
const otherTrust = projectTrust(identity(0x12), otherMasterId);
const project = trust.anchor.project;
const otherProject = otherTrust.anchor.project;

const dimensions = {
  os: "linux",
  arch: "x64",
  cores: 4,
  memoryBytes: 8 * 2 ** 30,
  diskBytes: 2 ** 36,
  tools: [],
  labels: [],
};

function jobSpec(overrides: Partial<JobSpec> = {}): JobSpec {
  return {
    name: "test",
    steps: [{ name: "check", run: "npm test" }],
    env: {},
    timeoutMs: 10 * minuteMs,
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
    maxAttempts: 4,
    deadlineMs: startMs + dayMs,
    ...overrides,
  };
}

const report: Omit<ExecutionReport, "runId"> = {
  outcome: "succeeded",
  exitCode: 0,
  outputsDigest: "bafkreihonestoutputsaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
  logDigest: null,
  summary: "ok",
  durationMs: 1000,
};

// ---------------------------------------------------------------------------
// A store in memory: applies the batches persist() receives, and gives back a StoredNode
// ---------------------------------------------------------------------------

class MemoryStore {
  worker: WorkerState | null = null;
  readonly jobs = new Map<string, Map<string, JobRecord>>();
  readonly reputation = new Map<string, Record<string, Reputation>>();
  readonly logs: { jobId: string; chunk: LogChunkRecord }[] = [];
  readonly windows = new Map<string, { signer: Uint8Array; window: SignerWindow }>();
  floorExpiresAtMs = Number.NEGATIVE_INFINITY;
  readonly keysets = new Map<string, Uint8Array>();
  seqReservedUpTo = 0;

  /** Writes a batch; copies what it keeps, since the machines go on changing their state in place. */
  apply(batch: readonly StoreWrite[]): void {
    for (const write of batch) {
      switch (write.space) {
        case "worker":
          this.worker = structuredClone(write.state);
          break;
        case "job": {
          const jobs = this.jobs.get(write.project) ?? new Map<string, JobRecord>();
          this.jobs.set(write.project, jobs);
          if (write.record === null) jobs.delete(write.jobId);
          else jobs.set(write.jobId, structuredClone(write.record));
          break;
        }
        case "reputation": {
          const records = this.reputation.get(write.project) ?? {};
          if (write.record === null) delete records[write.worker];
          else records[write.worker] = structuredClone(write.record);
          this.reputation.set(write.project, records);
          break;
        }
        case "log":
          this.logs.push({ jobId: write.jobId, chunk: structuredClone(write.chunk) });
          break;
        case "ledger":
          this.windows.set(hexOf(write.signer), {
            signer: write.signer.slice(),
            window: structuredClone(write.window),
          });
          this.floorExpiresAtMs = write.floorExpiresAtMs;
          break;
        case "keyset":
          this.keysets.set(write.project, write.bytes.slice());
          break;
        case "seq":
          this.seqReservedUpTo = write.reservedUpTo;
          break;
      }
    }
  }

  /** What a node finds in this store when it starts. */
  stored(): StoredNode {
    const masters = new Map<string, { jobs: JobRecord[]; reputation: Record<string, Reputation> }>();
    for (const [name, jobs] of this.jobs)
      masters.set(name, {
        jobs: [...jobs.values()].map((record) => structuredClone(record)),
        reputation: structuredClone(this.reputation.get(name) ?? {}),
      });
    const ledger = restoreReplayLedger({
      limits: defaultReplayLedgerLimits,
      floorExpiresAtMs: Number.isFinite(this.floorExpiresAtMs) ? this.floorExpiresAtMs : null,
      signers: [...this.windows.values()].map(({ signer, window }) => ({
        key: hexOf(signer),
        highestSeq: window.highestSeq,
        bitmap: [...window.bitmap],
        latestExpiresAtMs: window.latestExpiresAtMs,
      })),
    });
    return {
      worker: this.worker === null ? null : structuredClone(this.worker),
      masters,
      ledger,
      keysets: new Map(this.keysets),
      seqReservedUpTo: this.seqReservedUpTo,
    };
  }
}

function emptyStore(): StoredNode {
  return { worker: null, masters: new Map(), ledger: createReplayLedger(), keysets: new Map(), seqReservedUpTo: 0 };
}

// ---------------------------------------------------------------------------
// The network: a virtual clock, a latency, gossip to every other node, direct streams
// ---------------------------------------------------------------------------

/** One port call, in the order the driver made it. */
type Call =
  | { readonly kind: "persist"; readonly batch: readonly StoreWrite[]; readonly atMs: number }
  | { readonly kind: "persisted" }
  | { readonly kind: "seal"; readonly seq: number; readonly domain: string }
  | { readonly kind: "send"; readonly to: string; readonly message: StampedMessage }
  | { readonly kind: "publish"; readonly topic: string; readonly message: StampedMessage }
  | { readonly kind: "start-run"; readonly run: ExecutionRequest }
  | { readonly kind: "kill-run"; readonly runId: string };

interface HostOptions {
  readonly masters?: readonly (Partial<MasterConfig> & { project: string })[];
  readonly worker?: boolean;
  /** The projects the worker pins. Default: the first project only. */
  readonly shares?: readonly string[];
  /** Persistence answers with a promise that settles on a later turn of the event loop, as level does. */
  readonly asyncPersist?: boolean;
  /** How long a run takes; null: it never ends. */
  readonly runMs?: number | null;
  /** The worker's availability from the start. Default eager. */
  readonly availability?: "eager" | "reluctant";
}

class Host {
  readonly key: string;
  readonly store = new MemoryStore();
  readonly calls: Call[] = [];
  readonly admissions: Admission[] = [];
  driver: NodeDriver<Uint8Array>;
  /** A node that is down hears nothing, and nothing it asked for before it went down reaches its next process. */
  down = false;
  /** Bumped by each new process, so a wake-up or run of an old one never reaches the new one. */
  private generation = 0;
  private wakeToken = 0;
  private inFlight = 0;
  maxInFlight = 0;
  readonly options: HostOptions;
  private readonly net: Net;
  readonly identity: Identity;

  constructor(net: Net, id: Identity, options: HostOptions) {
    this.net = net;
    this.identity = id;
    this.key = hexOf(id.publicKey);
    this.options = options;
    this.driver = this.boot(emptyStore());
  }

  /** A new process of this node, from `stored`. */
  boot(stored: StoredNode): NodeDriver<Uint8Array> {
    this.generation++;
    this.down = false;
    const shares = Object.fromEntries((this.options.shares ?? [project]).map((name) => [name, 1]));
    const worker = this.options.worker ? createWorker(this.key, { shares, dimensions, specs: [] }) : null;
    if (worker !== null && this.options.availability !== undefined) worker.availability = this.options.availability;
    this.driver = new NodeDriver<Uint8Array>({
      self: this.key,
      ports: this.ports(this.generation),
      trust: new Map([
        [project, trust],
        [otherProject, otherTrust],
      ]),
      masters: this.options.masters ?? [],
      worker,
      stored,
    });
    return this.driver;
  }

  /** Crashes the process and starts another from what its store holds. */
  restart(): void {
    this.boot(this.store.stored());
    this.driver.start();
  }

  private ports(generation: number): DriverPorts<Uint8Array> {
    const net = this.net;
    const live = () => generation === this.generation && !this.down;
    return {
      nowMs: () => net.nowMs,
      rng: net.rng,
      seal: (message) => {
        this.calls.push({ kind: "seal", seq: message.body.seq as number, domain: message.domain });
        return sealEnvelope(messageDomains[message.domain] as Domain, message.body as never, this.identity);
      },
      open: (wire, nowMs) => open(wire, nowMs),
      publish: (topic, wire, message) => {
        this.effectWhileIdle("publish");
        this.calls.push({ kind: "publish", topic, message });
        for (const host of net.hosts)
          if (host !== this)
            net.at(net.nowMs + net.latencyMs, () => {
              if (!host.down) host.driver.receive({ kind: "topic", topic }, wire);
            });
      },
      send: (to, wire, message) => {
        this.effectWhileIdle("send");
        this.calls.push({ kind: "send", to, message });
        const host = net.host(to);
        net.at(net.nowMs + net.latencyMs, () => {
          if (!host.down) host.driver.receive({ kind: "direct", peer: this.key }, wire);
        });
      },
      wakeAt: (atMs) => {
        const token = ++this.wakeToken;
        net.at(atMs, () => {
          if (live() && token === this.wakeToken) this.driver.wake();
        });
      },
      startRun: (run) => {
        this.effectWhileIdle("start-run");
        this.calls.push({ kind: "start-run", run });
        const runMs = this.options.runMs === undefined ? report.durationMs : this.options.runMs;
        if (runMs === null) return;
        net.at(net.nowMs + 1, () => {
          if (live())
            this.driver.runOutput(run.runId, { stream: "stdout", offset: 0, data: new TextEncoder().encode("ok\n") });
        });
        net.at(net.nowMs + runMs, () => {
          if (live() && !this.killed.has(run.runId)) this.driver.runFinished({ ...report, runId: run.runId });
        });
      },
      killRun: (runId) => {
        this.calls.push({ kind: "kill-run", runId });
        this.killed.add(runId);
      },
      persist: (batch) => {
        if (this.inFlight > 0) throw new Error("a batch was written while another was being written");
        // A copy: the machines go on changing in place the states a batch hands over.
        this.calls.push({ kind: "persist", batch: structuredClone(batch), atMs: net.nowMs });
        this.store.apply(batch);
        if (!this.options.asyncPersist) return;
        this.inFlight++;
        this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
        return new Promise<void>((resolve) =>
          setImmediate(() => {
            this.inFlight--;
            this.calls.push({ kind: "persisted" });
            resolve();
          }),
        );
      },
      log: () => {},
      admitted: (_channel, admission) => {
        this.admissions.push(admission);
      },
    };
  }

  private readonly killed = new Set<string>();

  /** A step's effects wait for its batch: none may happen while one is being written. */
  private effectWhileIdle(what: string): void {
    if (this.inFlight > 0) throw new Error(`${what} while a batch was still being written`);
  }

  /** The sequence numbers this node stamped, in the order it sealed them. */
  seqs(): number[] {
    return this.calls.flatMap((call) => (call.kind === "seal" ? [call.seq] : []));
  }
}

/**
 * What a shell's opening (crypto/) gives the driver, as node/runtime/ports.ts opens it: the message with every check
 * made but the signature, left to admission, a keyset (the multi-signed envelope the single-signed reader refuses as
 * its envelope), or why its bytes are unreadable.
 */
function open(wire: Uint8Array, nowMs: number): Opened {
  try {
    const opened = openAnyEnvelopeUnverified(messageRegistry, wire, nowMs);
    return {
      kind: "message",
      tag: opened.domain,
      signer: opened.signer,
      body: opened.body as SignedBody,
      signatureValid: opened.signatureValid,
    };
  } catch (error) {
    if (
      error instanceof CimeshError &&
      error.code === "ERR_SCHEMA" &&
      (error as { field?: string }).field === "envelope"
    )
      return { kind: "keyset", bytes: wire };
    return { kind: "unreadable", error };
  }
}

interface Event {
  readonly atMs: number;
  readonly run: () => void;
}

class Net {
  nowMs = startMs;
  readonly latencyMs = 10;
  readonly rng = seededRng(5);
  readonly hosts: Host[] = [];
  private events: Event[] = [];

  add(id: Identity, options: HostOptions): Host {
    const host = new Host(this, id, options);
    this.hosts.push(host);
    return host;
  }

  host(key: string): Host {
    const host = this.hosts.find((candidate) => candidate.key === key);
    if (host === undefined) throw new Error(`no host ${key}`);
    return host;
  }

  /** Keeps the events in time order, and in the order they were made at one time. */
  at(atMs: number, run: () => void): void {
    let low = 0;
    let high = this.events.length;
    while (low < high) {
      const middle = (low + high) >> 1;
      if ((this.events[middle] as Event).atMs <= atMs) low = middle + 1;
      else high = middle;
    }
    this.events.splice(low, 0, { atMs, run });
  }

  /** Every node starts: its machines are told they (re)started. */
  start(): void {
    for (const host of this.hosts) host.driver.start();
  }

  /** Runs events in time order until none is left before untilMs, waiting for every node to go idle after each. */
  async run(untilMs: number): Promise<void> {
    await this.idle();
    for (;;) {
      const next = this.events[0];
      if (next === undefined || next.atMs > untilMs) break;
      this.events.shift();
      this.nowMs = Math.max(this.nowMs, next.atMs);
      next.run();
      await this.idle();
    }
    this.nowMs = Math.max(this.nowMs, untilMs);
  }

  idle(): Promise<unknown> {
    return Promise.all(this.hosts.map((host) => host.driver.idle()));
  }
}

function masterNet(options: { workers?: number; master?: HostOptions; worker?: HostOptions } = {}) {
  const net = new Net();
  const master = net.add(masterId, { masters: [{ project }], ...options.master });
  const workers = workerIds
    .slice(0, options.workers ?? 2)
    .map((id) => net.add(id, { worker: true, ...options.worker }));
  return { net, master, workers };
}

function jobOf(host: Host, jobId: string): JobRecord {
  const job = host.driver.masterState(project)?.jobs[jobId];
  if (job === undefined) throw new Error(`no job ${jobId}`);
  return job;
}

/** The node's calls as one line each, for a failure message. */
function trace(host: Host): string {
  return host.calls
    .map((call) =>
      call.kind === "persist"
        ? `persist ${call.batch.map((write) => write.space).join(",")}`
        : call.kind === "seal"
          ? `seal ${call.domain} ${call.seq}`
          : call.kind,
    )
    .join("\n");
}

/**
 * Every sequence number a node stamped is above the last it stamped (across its processes), and below a reservation
 * persisted before it was sealed.
 */
function checkSequence(t: ExecutionContext, host: Host): void {
  let reserved = 0;
  let last = -1;
  for (const call of host.calls) {
    if (call.kind === "persist")
      for (const write of call.batch) if (write.space === "seq") reserved = Math.max(reserved, write.reservedUpTo);
    if (call.kind !== "seal") continue;
    if (call.seq <= last) t.fail(`seq ${call.seq} after ${last}\n${trace(host)}`);
    if (call.seq >= reserved) t.fail(`seq ${call.seq} sealed before its reservation was persisted (up to ${reserved})`);
    last = call.seq;
  }
  t.pass();
}

// ---------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------

test("a job passes end to end over sealed envelopes: offers, awards carrying the job at once, log, result, acknowledgement; no announcement, no verdict gossip", async (t) => {
  const { net, master, workers } = masterNet({ workers: 3 });
  net.start();
  await net.run(startMs + 2 * secondMs);
  const state = master.driver.masterState(project);
  t.deepEqual(
    Object.keys(state?.workers ?? {}).sort(),
    [...runnerKeys].sort(),
    "the master knows the runners from their offers, as proven",
  );
  t.deepEqual(
    Object.keys(state?.unproven ?? {}),
    [hexOf(workerIds[2].publicKey)],
    "and the volunteer without a record, apart",
  );
  t.true(Object.values(state?.workers ?? {}).every((known) => known.runner));
  master.driver.toMaster(project, { kind: "submit", jobId: "job-1", job: jobSpec({ replicas: 2, quorum: 2 }) });
  await net.run(net.nowMs + minuteMs);

  const job = jobOf(master, "job-1");
  t.is(job.status, "passed", job.reason);
  t.is(job.attempts.length, 2);
  t.is(new Set(job.attempts.map((attempt) => attempt.worker)).size, 2);
  for (const attempt of job.attempts)
    t.is(attempt.runner, runnerKeys.has(attempt.worker), "admission told the master which bidders are runners");
  t.true(
    job.attempts.some((attempt) => attempt.runner),
    "a runner ran the first replica",
  );
  const ran = new Set(job.attempts.map((attempt) => attempt.worker));
  for (const host of workers.filter((candidate) => ran.has(candidate.key))) {
    t.deepEqual(host.driver.workerState()?.outbox, {}, "every result was acknowledged");
    t.deepEqual(host.store.worker?.outbox, {}, "and the store knows it");
    t.true(host.admissions.some((admission) => admission.deliveries[0]?.input.kind === "result-ack"));
  }
  t.is(master.store.jobs.get(project)?.get("job-1")?.status, "passed", "the ended job is persisted");
  t.is(master.store.logs.filter((entry) => entry.jobId === "job-1").length, 2, "each run's output was stored");
  t.deepEqual(master.store.logs[0]?.chunk.data, new TextEncoder().encode("ok\n"));
  const published = master.calls.flatMap((call) => (call.kind === "publish" ? [call.message.domain] : []));
  t.deepEqual(published, [], "awarded from offers: nothing announced, so no verdict for anyone else to hear");
  const awards = master.calls.flatMap((call) =>
    call.kind === "send" && call.message.domain === "award" ? [call.message.body] : [],
  );
  t.is(awards.length, 2, "both replicas awarded");
  for (const body of awards) t.deepEqual((body as { job: JobSpec }).job, jobSpec({ replicas: 2, quorum: 2 }));
  for (const host of workers) {
    const offers = host.calls.flatMap((call) =>
      call.kind === "send" && call.message.domain === "offer" ? [call] : [],
    );
    t.true(offers.length >= 1, "each worker offered its slot");
    t.true(
      offers.every((call) => call.kind === "send" && call.to === master.key),
      "to the project's master only",
    );
    t.deepEqual(
      host.calls.filter((call) => call.kind === "publish"),
      [],
      "a worker gossips nothing",
    );
  }
  t.true(
    [master, ...workers].every((host) => host.admissions.every((admission) => admission.verdict !== "reject")),
    "no node refused anything another sent",
  );
});

test("a job no offer covers is announced to reluctant workers, bid on, awarded, and its verdict gossiped", async (t) => {
  const { net, master, workers } = masterNet({ workers: 2, worker: { availability: "reluctant" } });
  net.start();
  await net.run(startMs + 2 * secondMs);
  const known = master.driver.masterState(project)?.workers ?? {};
  t.deepEqual(
    Object.values(known).map((worker) => [worker.availability, worker.freeSlots]),
    [
      ["reluctant", 0],
      ["reluctant", 0],
    ],
    "reluctant workers offer no slot, yet the master knows them",
  );
  master.driver.toMaster(project, { kind: "submit", jobId: "announced", job: jobSpec() });
  await net.run(net.nowMs + 2 * minuteMs);
  const job = jobOf(master, "announced");
  t.is(job.status, "passed", job.reason);
  t.true(job.announcements >= 2, "a reluctant worker bids on a re-announcement only");
  const published = master.calls.flatMap((call) => (call.kind === "publish" ? [call.message.domain] : []));
  t.true(published.includes("jobAnnouncement"));
  t.is(published.filter((domain) => domain === "verdict").length, 1, "an announced job's verdict is gossiped");
  t.true(
    workers.some((host) => host.calls.some((call) => call.kind === "send" && call.message.domain === "bid")),
    "a worker bid",
  );
});

test("one node's sequence numbers rise strictly across its master's and its worker's messages", async (t) => {
  // Two nodes, each master of one project and worker of both: a node's worker hears its own master too.
  const net = new Net();
  const shares = [project, otherProject];
  const a = net.add(masterId, { masters: [{ project }], worker: true, shares });
  const b = net.add(otherMasterId, { masters: [{ project: otherProject }], worker: true, shares });
  net.start();
  await net.run(startMs + 2 * secondMs);
  for (let i = 0; i < 4; i++) {
    a.driver.toMaster(project, { kind: "submit", jobId: `a-${i}`, job: jobSpec() });
    b.driver.toMaster(otherProject, { kind: "submit", jobId: `b-${i}`, job: jobSpec() });
  }
  await net.run(net.nowMs + 2 * minuteMs);
  for (let i = 0; i < 4; i++) {
    t.is(jobOf(a, `a-${i}`).status, "passed");
    t.is(b.driver.masterState(otherProject)?.jobs[`b-${i}`]?.status, "passed");
  }

  for (const host of [a, b]) {
    const domains = new Set(host.calls.flatMap((call) => (call.kind === "seal" ? [call.domain] : [])));
    for (const domain of ["award", "resultAck", "offer", "result", "logChunk"])
      t.true(domains.has(domain), `the node signed a ${domain}`);
    checkSequence(t, host);
    t.true((host.seqs()[0] ?? 0) >= sequenceFloorAt(startMs), "a fresh node starts at the clock's floor");
  }
});

test("a node that is master and worker of one project works its own jobs: its own offer reaches its master through admission", async (t) => {
  const net = new Net();
  const alone = net.add(masterId, { masters: [{ project }], worker: true, shares: [project] });
  net.start();
  await net.run(startMs + 2 * secondMs);
  alone.driver.toMaster(project, { kind: "submit", jobId: "own-1", job: jobSpec() });
  await net.run(net.nowMs + minuteMs);
  const job = jobOf(alone, "own-1");
  t.is(job.status, "passed", job.reason);
  t.is(job.attempts[0]?.worker, alone.key);
  t.true(alone.admissions.some((admission) => admission.deliveries[0]?.input.kind === "offer"));
});

test("a node that is master and a reluctant worker of one project works its own announced job: its own gossip reaches its worker through admission", async (t) => {
  const net = new Net();
  const alone = net.add(masterId, {
    masters: [{ project }],
    worker: true,
    shares: [project],
    availability: "reluctant",
  });
  net.start();
  await net.run(startMs + 2 * secondMs);
  alone.driver.toMaster(project, { kind: "submit", jobId: "own-2", job: jobSpec() });
  await net.run(net.nowMs + 2 * minuteMs);
  const job = jobOf(alone, "own-2");
  t.is(job.status, "passed", job.reason);
  t.is(job.attempts[0]?.worker, alone.key);
  t.true(alone.admissions.some((admission) => admission.deliveries[0]?.input.kind === "announcement"));
});

test("a sequence reservation is persisted before the first message that uses it, and again when a block runs out", async (t) => {
  const { net, master, workers } = masterNet({ workers: 1, worker: { runMs: null } });
  const [worker] = workers as [Host];
  net.start();
  await net.run(startMs + 2 * secondMs);
  master.driver.toMaster(project, { kind: "submit", jobId: "reserved", job: jobSpec() });
  await net.run(net.nowMs + 2 * secondMs);
  t.is(jobOf(master, "reserved").attempts[0]?.state, "running");
  for (const host of [master, worker]) {
    const first = host.calls.findIndex((call) => call.kind === "seal");
    const reservation = host.calls.findIndex(
      (call) => call.kind === "persist" && call.batch.some((write) => write.space === "seq"),
    );
    t.true(first >= 0 && reservation >= 0 && reservation < first, trace(host));
    t.is(host.store.seqReservedUpTo, sequenceFloorAt(startMs) + seqBlockSize, "one block, from the clock's floor");
  }

  // More messages than a block holds: the run's output, a log chunk each (the master is away, so nothing is opened).
  master.down = true;
  const runId = `${project}/reserved/0`;
  const chunks = seqBlockSize + 50;
  for (let offset = 0; offset < chunks; offset++)
    worker.driver.runOutput(runId, { stream: "stdout", offset, data: new Uint8Array([0x2e]) });
  await net.idle();
  const reservations = worker.calls.flatMap((call) =>
    call.kind === "persist" ? call.batch.flatMap((write) => (write.space === "seq" ? [write.reservedUpTo] : [])) : [],
  );
  t.is(reservations.length, 2, "a second block when the first ran out");
  t.is(reservations[1], (reservations[0] ?? 0) + seqBlockSize);
  checkSequence(t, worker);

  // A node restarted from a store whose reservation is above the clock's floor carries on from the reservation.
  master.down = false;
  const stored = master.store.stored();
  const reservedUpTo = sequenceFloorAt(net.nowMs) + 5 * seqBlockSize;
  master.boot({ ...stored, seqReservedUpTo: reservedUpTo });
  master.driver.toMaster(project, { kind: "submit", jobId: "after", job: jobSpec() });
  await net.run(net.nowMs + 5 * secondMs);
  const sealedAfter = master.seqs().filter((seq) => seq >= reservedUpTo);
  t.true(sealedAfter.length > 0);
  t.is(Math.min(...sealedAfter), reservedUpTo, "the first number after a restart is the old reservation's end");
  t.is(master.store.seqReservedUpTo, reservedUpTo + seqBlockSize);
  checkSequence(t, master);
});

test("a step's writes are persisted before its effects: the award after its job record, the run after the worker's state, the result after the outbox", async (t) => {
  const { net, master, workers } = masterNet({ workers: 1 });
  const [worker] = workers as [Host];
  net.start();
  await net.run(startMs + 2 * secondMs);
  master.driver.toMaster(project, { kind: "submit", jobId: "ordered", job: jobSpec() });
  await net.run(net.nowMs + minuteMs);
  t.is(jobOf(master, "ordered").status, "passed");

  // Replays the calls against a fresh store: at each effect, the store must already hold what the effect reveals.
  const replay = (host: Host, check: (store: MemoryStore, call: Call) => void) => {
    const store = new MemoryStore();
    for (const call of host.calls) {
      if (call.kind === "persist") store.apply(call.batch);
      else check(store, call);
    }
  };
  let awards = 0;
  replay(master, (store, call) => {
    if (call.kind !== "send" || call.message.domain !== "award") return;
    awards++;
    const { jobId, attempt } = call.message.body as { jobId: string; attempt: number };
    t.is(store.jobs.get(project)?.get(jobId)?.attempts[attempt]?.state, "running", "the award's attempt was stored");
  });
  t.is(awards, 1);
  let starts = 0;
  let results = 0;
  replay(worker, (store, call) => {
    if (call.kind === "start-run") {
      starts++;
      t.truthy(store.worker?.running[call.run.runId], "the run was stored before it started");
    }
    if (call.kind === "send" && call.message.domain === "result") {
      results++;
      const { jobId, attempt } = call.message.body as { jobId: string; attempt: number };
      t.truthy(store.worker?.outbox[`${project}/${jobId}/${attempt}`], "the result was in the stored outbox first");
    }
  });
  t.is(starts, 1);
  t.true(results >= 1);
  // The master's verdict goes out after the job's end is stored.
  replay(master, (store, call) => {
    if (call.kind === "publish" && call.message.domain === "verdict")
      t.is(store.jobs.get(project)?.get("ordered")?.status, "passed");
  });
});

test("with persistence a promise, steps stay serial: one batch at a time, no effect before its batch, inputs in order", async (t) => {
  const { net, master, workers } = masterNet({ master: { asyncPersist: true }, worker: { asyncPersist: true } });
  net.start();
  await net.run(startMs + 2 * secondMs);
  const [worker] = workers as [Host, Host];
  // Inputs queued at once are stepped one by one, in order, each persisted before the next step.
  const availabilities = ["paused", "eager", "reluctant", "eager"] as const;
  const from = worker.calls.length;
  for (const availability of availabilities) worker.driver.toWorker({ kind: "set-availability", availability });
  await net.idle();
  const persisted = worker.calls
    .slice(from)
    .flatMap((call) => (call.kind === "persist" ? call.batch : []))
    .flatMap((write) => (write.space === "worker" ? [write.state.availability] : []));
  t.deepEqual(persisted, [...availabilities]);

  for (let i = 0; i < 3; i++) master.driver.toMaster(project, { kind: "submit", jobId: `async-${i}`, job: jobSpec() });
  await net.run(net.nowMs + minuteMs);
  for (let i = 0; i < 3; i++) t.is(jobOf(master, `async-${i}`).status, "passed");
  for (const host of [master, ...workers]) {
    t.is(host.maxInFlight, 1, "one batch at a time");
    // Each persist is settled before the next persist or effect of the node.
    let pending = false;
    for (const call of host.calls) {
      if (call.kind === "persist") {
        t.false(pending, "a batch was written before the last one settled");
        pending = true;
      } else if (call.kind === "persisted") pending = false;
      else if (call.kind !== "seal") t.false(pending, `a ${call.kind} before its step's batch settled`);
    }
    checkSequence(t, host);
  }
});

test("a worker restarted from its store delivers the result in its outbox to a master that comes back later; the job passes with one run", async (t) => {
  const { net, master, workers } = masterNet({ workers: 1, worker: { runMs: 20 * secondMs } });
  const [worker] = workers as [Host];
  net.start();
  await net.run(startMs + 2 * secondMs);
  master.driver.toMaster(project, { kind: "submit", jobId: "survivor", job: jobSpec() });
  await net.run(net.nowMs + 3 * secondMs);
  t.is(jobOf(master, "survivor").attempts[0]?.state, "running");

  // The master's process dies; the run finishes; the result goes nowhere and waits in the outbox.
  master.down = true;
  await net.run(net.nowMs + 25 * secondMs);
  const runId = `${project}/survivor/0`;
  t.truthy(worker.store.worker?.outbox[runId], "the stored worker holds the result");
  const seqsBefore = worker.seqs();

  // The worker's process dies too, and starts again from its store.
  worker.restart();
  t.truthy(worker.driver.workerState()?.outbox[runId], "the restarted worker still holds it");
  await net.run(net.nowMs + 10 * secondMs);
  t.truthy(worker.driver.workerState()?.outbox[runId], "unacknowledged while the master is down");

  // The master comes back from its store: the attempt it awarded is still running, its lease extended.
  master.restart();
  const attempt = jobOf(master, "survivor").attempts[0];
  t.is(attempt?.state, "running");
  t.true((attempt?.leaseExpiresAtMs ?? 0) >= net.nowMs + 60 * secondMs);
  await net.run(net.nowMs + 30 * secondMs);

  const job = jobOf(master, "survivor");
  t.is(job.status, "passed", job.reason);
  t.is(job.attempts.length, 1, "the run that finished while the master was down counted");
  t.deepEqual(worker.driver.workerState()?.outbox, {}, "the master acknowledged it");
  t.deepEqual(worker.store.worker?.outbox, {});
  const resultsTaken = master.admissions.filter(
    (admission) => admission.reason === "taken" && admission.deliveries[0]?.input.kind === "result",
  );
  t.true(resultsTaken.length >= 1, "the restarted master took the result");
  t.true(
    worker
      .seqs()
      .slice(seqsBefore.length)
      .every((seq) => seq > Math.max(...seqsBefore)),
    "the new process signed above the old one",
  );
  checkSequence(t, worker);
});

test("a master restarted from its persisted job records extends the running leases, and keeps the run", async (t) => {
  const leaseMs = 30 * secondMs;
  const { net, master, workers } = masterNet({
    workers: 1,
    master: { masters: [{ project, leaseMs }] },
    worker: { runMs: null },
  });
  const [worker] = workers as [Host];
  net.start();
  await net.run(startMs + 2 * secondMs);
  master.driver.toMaster(project, { kind: "submit", jobId: "long", job: jobSpec() });
  await net.run(net.nowMs + 3 * secondMs);
  const awarded = jobOf(master, "long").attempts[0];
  if (awarded === undefined) return t.fail("no award");
  const firstLeaseEnd = awarded.leaseExpiresAtMs;

  // The master's process dies; a renewal the worker sends meanwhile is lost.
  master.down = true;
  await net.run(awarded.awardedAtMs + leaseMs / 2);
  t.is(master.store.jobs.get(project)?.get("long")?.attempts[0]?.leaseExpiresAtMs, firstLeaseEnd, "as awarded");
  const restartedAtMs = net.nowMs;
  master.restart();
  const config = master.driver.masterState(project)?.config;
  const graceMs = Math.max(config?.leaseMs ?? 0, config?.restartGraceMs ?? 0);
  const restored = jobOf(master, "long").attempts[0];
  t.is(restored?.state, "running");
  t.true((restored?.leaseExpiresAtMs ?? 0) >= restartedAtMs + graceMs, "extended from the restart");
  t.true((restored?.leaseExpiresAtMs ?? 0) > firstLeaseEnd);
  await net.idle();
  t.is(
    master.store.jobs.get(project)?.get("long")?.attempts[0]?.leaseExpiresAtMs,
    restored?.leaseExpiresAtMs,
    "and the extension is persisted",
  );
  await net.run(firstLeaseEnd + 2 * leaseMs);
  t.is(jobOf(master, "long").attempts[0]?.state, "running", "renewals reach the master again: the run is kept");
  t.is(jobOf(master, "long").attempts.length, 1);
  t.is(Object.keys(worker.driver.workerState()?.running ?? {}).length, 1);
});

test("a node restarted without its store signs above its old sequence: the clock's floor, and its peers take its messages", async (t) => {
  t.is(sequenceFloorAt(startMs), startMs * seqPerMs);
  t.is(sequenceFloorAt(-5), 0);
  const { net, master, workers } = masterNet({ workers: 1 });
  const [worker] = workers as [Host];
  net.start();
  // Offers are renewed when a quarter of their life (an hour) is left: a few renewals take a few hours.
  await net.run(startMs + 150 * minuteMs);
  const old = worker.seqs();
  t.true(old.length >= 3, "the worker offered, and renewed its offer, a few times");

  // The store is lost: the node starts from nothing, a second later.
  await net.run(net.nowMs + secondMs);
  worker.boot(emptyStore());
  worker.driver.start();
  await net.run(net.nowMs + 20 * secondMs);
  const fresh = worker.seqs().slice(old.length);
  t.true(fresh.length > 0);
  t.true(Math.min(...fresh) > Math.max(...old), "above every number of the lost process");
  const offers = master.admissions.filter((admission) => admission.deliveries[0]?.input.kind === "offer");
  t.true(offers.length > old.length, "the master took the new process's offer");
  const held = master.driver.masterState(project)?.workers[worker.key];
  t.is(held?.seq, Math.max(...fresh), "and holds it: its number is above the lost process's");
  t.false(
    master.admissions.some((admission) => admission.reason === "replay"),
    "none was refused as a replay",
  );
});

// ---------------------------------------------------------------------------
// The masters a worker offers its slots to: from trust, at start and with each keyset accepted
// ---------------------------------------------------------------------------

/** A keyset of the first project signed by its root, naming `announcers` (the runners stay the first two workers). */
function keysetOfProject(version: number, announcers: readonly Identity[], signer = identity(0x11)): Uint8Array {
  return sealKeyset(
    {
      project,
      rootVersion: 1,
      version,
      issuedAtMs: startMs,
      expiresAtMs: startMs + 30 * dayMs,
      roots: [identity(0x11).publicKey],
      threshold: 1,
      announcers: announcers.map((announcer, i) => ({
        key: announcer.publicKey,
        label: `master ${i}`,
        expiresAtMs: startMs + 30 * dayMs,
      })),
      runners: [workerIds[0], workerIds[1]].map((runner, i) => ({
        key: runner.publicKey,
        label: `runner ${i}`,
        expiresAtMs: startMs + 30 * dayMs,
      })),
    },
    [signer],
  );
}

/** Where a host sent offers, by recipient, from the call at `from` on. */
function offeredTo(host: Host, from = 0): string[] {
  return [
    ...new Set(
      host.calls
        .slice(from)
        .flatMap((call) => (call.kind === "send" && call.message.domain === "offer" ? [call.to] : [])),
    ),
  ].sort();
}

test("the driver tells the worker its projects' masters at start and with each keyset accepted, directly or from the DHT; offers follow them", async (t) => {
  const net = new Net();
  const secondId = identity(0x43);
  const master = net.add(masterId, { masters: [{ project }] });
  const second = net.add(secondId, { masters: [{ project }] });
  const worker = net.add(workerIds[0], { worker: true });
  t.deepEqual(worker.driver.workerState()?.masters, {}, "no masters before the node starts");

  net.start();
  await net.run(startMs + 2 * secondMs);
  t.deepEqual(worker.driver.workerState()?.masters, { [project]: [master.key] }, "the pinned keyset's announcer");
  t.deepEqual(offeredTo(worker), [master.key]);

  // A master pushes a newer keyset naming a second master, on a direct stream.
  const both = keysetOfProject(2, [masterId, secondId]);
  let from = worker.calls.length;
  const pushed = worker.driver.receive({ kind: "direct", peer: master.key }, both);
  t.is(`${pushed.verdict} ${pushed.reason}`, "accept keyset-accepted");
  await net.run(net.nowMs + 2 * secondMs);
  t.deepEqual(worker.driver.workerState()?.masters, { [project]: [master.key, second.key].sort() });
  t.deepEqual(offeredTo(worker, from), [second.key], "the new master hears the offer; the old one holds it already");
  t.true(second.admissions.some((admission) => admission.deliveries[0]?.input.kind === "offer"));
  t.truthy(second.driver.masterState(project)?.workers[worker.key], "and knows the worker, a runner, as proven");
  t.deepEqual(worker.store.keysets.get(project), both, "the keyset is persisted");

  // Forged, or older: refused or ignored, and the masters stay as they are.
  const forged = worker.driver.receive({ kind: "direct", peer: master.key }, keysetOfProject(3, [], identity(0x51)));
  t.is(`${forged.verdict} ${forged.reason}`, "reject keyset-refused");
  const older = worker.driver.receive({ kind: "direct", peer: master.key }, keysetOfProject(1, [masterId]));
  t.is(`${older.verdict} ${older.reason}`, "ignore keyset-old");
  await net.run(net.nowMs + secondMs);
  t.deepEqual(worker.driver.workerState()?.masters, { [project]: [master.key, second.key].sort() });

  // The DHT's record drops the first master: its offer is forgotten, the second keeps its own.
  from = worker.calls.length;
  const record = worker.driver.receiveKeysetRecord(project, keysetOfProject(4, [secondId]));
  t.is(`${record.verdict} ${record.reason}`, "accept keyset-accepted");
  await net.run(net.nowMs + 2 * secondMs);
  const state = worker.driver.workerState();
  t.deepEqual(state?.masters, { [project]: [second.key] });
  t.deepEqual(
    Object.keys(state?.offers ?? {}),
    [`${project}/${second.key}`],
    "what the dropped master held is forgotten",
  );
  t.deepEqual(offeredTo(worker, from), [], "nothing new to say to the master left");

  // A new process of the worker learns its masters from the keyset it stored, and offers to them anew.
  from = worker.calls.length;
  worker.restart();
  await net.run(net.nowMs + 2 * secondMs);
  t.deepEqual(worker.driver.workerState()?.masters, { [project]: [second.key] });
  t.deepEqual(offeredTo(worker, from), [second.key]);
});

test("a keyset that comes before the node starts tells the worker nothing until start, which tells it the newest", async (t) => {
  const net = new Net();
  const secondId = identity(0x43);
  net.add(masterId, { masters: [{ project }] });
  const second = net.add(secondId, { masters: [{ project }] });
  const worker = net.add(workerIds[0], { worker: true });
  const record = worker.driver.receiveKeysetRecord(project, keysetOfProject(2, [secondId]));
  t.is(record.reason, "keyset-accepted");
  await net.idle();
  t.deepEqual(worker.driver.workerState()?.masters, {}, "the worker is woken by start, not before");
  net.start();
  await net.run(startMs + 2 * secondMs);
  t.deepEqual(worker.driver.workerState()?.masters, { [project]: [second.key] });
  t.deepEqual(offeredTo(worker), [second.key]);
});

// ---------------------------------------------------------------------------
// A property: sequence numbers under any traffic, crashes included
// ---------------------------------------------------------------------------

type Op =
  | { readonly kind: "submit"; readonly replicas: number }
  | { readonly kind: "advance"; readonly ms: number }
  | { readonly kind: "availability"; readonly host: number; readonly availability: "eager" | "paused" }
  | { readonly kind: "restart"; readonly host: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant("submit" as const), replicas: fc.integer({ min: 1, max: 3 }) }),
  fc.record({ kind: fc.constant("advance" as const), ms: fc.integer({ min: 0, max: 20 * secondMs }) }),
  fc.record({
    kind: fc.constant("availability" as const),
    host: fc.nat({ max: 2 }),
    availability: fc.constantFrom("eager" as const, "paused" as const),
  }),
  fc.record({ kind: fc.constant("restart" as const), host: fc.nat({ max: 2 }) }),
);

testProp(
  "whatever a node does and however often it crashes, its sequence numbers rise strictly and are reserved before use",
  [fc.array(opArb, { minLength: 1, maxLength: 25 }), fc.boolean()],
  async (t, ops, asyncPersist) => {
    const net = new Net();
    const hosts = [
      net.add(masterId, { masters: [{ project, leaseMs: 20 * secondMs }], worker: true, asyncPersist }),
      net.add(workerIds[0], { worker: true, asyncPersist }),
      net.add(workerIds[1], { worker: true, asyncPersist }),
    ];
    net.start();
    let jobs = 0;
    for (const op of ops) {
      const host = hosts[op.kind === "availability" || op.kind === "restart" ? op.host : 0] as Host;
      if (op.kind === "submit")
        host.driver.toMaster(project, {
          kind: "submit",
          jobId: `p-${jobs++}`,
          job: jobSpec({ replicas: op.replicas, quorum: 1 }),
        });
      else if (op.kind === "advance") await net.run(net.nowMs + op.ms);
      else if (op.kind === "availability")
        host.driver.toWorker({ kind: "set-availability", availability: op.availability });
      else host.restart();
      await net.idle();
    }
    await net.run(net.nowMs + minuteMs);
    for (const host of hosts) checkSequence(t, host);
    t.false(
      hosts.some((host) => host.admissions.some((admission) => admission.reason === "replay")),
      "no node's message was refused as a replay",
    );
  },
  { numRuns: 25 },
);
