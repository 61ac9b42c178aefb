/**
 * The simulator's core: a discrete-event loop on a virtual clock that runs the
 * real jobs/ state machines (stepMaster, stepWorker) inside simulated nodes,
 * carries their effects over a simulated network and gossip mesh, seals and
 * opens every message with crypto/ (unless signatures are "fast"), injects
 * faults and actors, and watches the run from outside: the invariants are
 * checked against what the network carried, never against the machines' own
 * books.
 *
 * House rules (DESIGN.md, Rule 2): the shell makes no protocol decision. The
 * only `if`s about messages here are the ones a real node's shell makes too:
 * a signature that does not verify, or an announcement, verdict or cancel
 * not signed by the project's announcer, is dropped before the machine sees
 * it.
 *
 * Determinism: one seeded generator (sim/rng.ts) draws everything in event
 * order; events at the same instant run in the order they were scheduled;
 * no wall clock is read here.
 */
import { type Identity, identityFromSeed, openEnvelope, sealEnvelope } from "../crypto/index.ts";
import {
  type Availability,
  advertOf,
  createMaster,
  createWorker,
  directSide,
  type Effect,
  hexOf,
  type JobSpec,
  type MasterInput,
  type MasterState,
  type MessageDomainName,
  masterInputOf,
  messageDomains,
  resultDigest,
  stepMaster,
  stepWorker,
  topicRoute,
  type WorkerInput,
  type WorkerState,
  workerInputOf,
} from "../jobs/index.ts";
import { GossipModel, type Links } from "./gossip.ts";
import { EventQueue } from "./queue.ts";
import {
  exponential,
  hashUnit,
  logNormal,
  logNormalTable,
  normalTableCount,
  pick,
  type Rng,
  seededRng,
} from "./rng.ts";
import type { Scenario } from "./scenario.ts";
import { exactQuantile, Histogram, jainIndex, type Percentiles, round } from "./stats.ts";

/** Virtual time 0 is this instant: a midnight UTC (2027-01-15), so local hours of the simulated day are easy to read. */
export const simEpochMs = 1_799_971_200_000;
export const dayMs = 86_400_000;
export const hourMs = 3_600_000;
/** How often (in events) the loop reports progress. */
export const progressEveryEventsCount = 1 << 10;
/** Night-only volunteers take work from this minute of the day (20:00)... */
export const nightStartMinute = 20 * 60;
/** ...until this one (08:00). */
export const nightEndMinute = 8 * 60;
/** How long an advert says it lasts, in advert intervals. */
export const advertLifetimeIntervalsCount = 3;
/** Bytes of an IHAVE or IWANT in the gossip model's arithmetic. */
export const controlMessageBytes = 64;
/** Envelope sizes in fast-signature mode (no envelope is made): typical sealed sizes measured in real mode. */
export const fastEnvelopeBytes: Readonly<Record<string, number>> = {
  jobAnnouncement: 700,
  workerAdvert: 300,
  bid: 240,
  award: 240,
  reject: 300,
  leaseRenew: 260,
  result: 400,
  verdict: 420,
  cancel: 300,
};
/** Violations kept in the metrics: the first ones say enough. */
export const maxListedViolationsCount = 50;

type Domain = keyof typeof fastEnvelopeBytes;

/** A message on the wire: sealed bytes in real mode, the body itself in fast mode. */
interface Wire {
  readonly from: number;
  readonly domain: Domain;
  readonly body: unknown;
  readonly bytes: Uint8Array | null;
  readonly size: number;
  /** The project and job a verdict is about (read by the publisher, before sealing). */
  readonly project: string;
  readonly jobId: string;
  /** Set by forgers: a tampered signature. In real mode the bytes carry the damage and this is only for counting. */
  readonly tampered: boolean;
  /** Sent by a forger (tampered or not): must never reach a machine. Known to the observer only. */
  forged?: boolean;
  /** Verified once, then shared by every receiver (opening is a pure function of the bytes and the time). */
  opened?: { readonly body: unknown; readonly signer: string } | null;
}

type Role = "master" | "worker" | "spammer" | "forger";
type Behaviour = "honest" | "liar" | "sybil";

interface SimNode {
  readonly index: number;
  readonly role: Role;
  readonly key: string;
  readonly identity: Identity | null;
  readonly topics: readonly number[];
  online: boolean;
  /** Bumped whenever the node goes down: events meant for an older life are dropped. */
  epoch: number;
  /** The master's project, or -1. */
  readonly project: number;
  master: MasterState | null;
  worker: WorkerState | null;
  readonly behaviour: Behaviour;
  readonly group: number;
  readonly speed: number;
  readonly nightOnly: boolean;
  readonly availability: Availability;
  /** Runs in flight: runId → token, so a killed run's finish is ignored. */
  readonly executing: Map<string, number>;
  advertSeq: number;
  /** Bumped by every set-timer: only the latest wake-up ticks the machine. */
  timerSeq: number;
  runsStarted: number;
  everOnline: boolean;
}

/** What the run knows about a job from outside the machines: the truth and what the network carried. */
interface JobTruth {
  readonly index: number;
  readonly project: number;
  readonly submittedAtMs: number;
  readonly durationMs: number;
  readonly failing: boolean;
  readonly quorum: number;
  readonly shards: number;
  firstAwardAtMs: number | null;
  endedAtMs: number | null;
  status: "open" | "passed" | "failed" | "cancelled";
  terminalMessages: number;
  /** Per shard: digest → workers whose result with that digest reached the master. */
  results: Map<string, Set<number>>[] | null;
  trustedAlone: Set<number> | null;
}

export interface Violation {
  readonly invariant: "no-job-lost" | "accepted-once" | "quorum" | "ends-after-heal" | "no-forgery-accepted";
  readonly jobId: string;
  readonly detail: string;
}

export interface SeriesPoint {
  readonly tMs: number;
  readonly openJobs: number;
  readonly liveWorkers: number;
  readonly messages: number;
  readonly bids: number;
  readonly verdicts: number;
  readonly claimP50Ms: number | null;
  readonly verdictP50Ms: number | null;
}

export interface Metrics {
  readonly scenario: string;
  readonly seed: number;
  readonly signatures: "real" | "fast";
  readonly settings: Scenario;
  readonly run: { readonly simulatedMs: number; readonly events: number; readonly endedWhenAllJobsEnded: boolean };
  readonly nodes: Record<string, number>;
  readonly jobs: {
    readonly submitted: number;
    readonly passed: number;
    readonly failed: number;
    readonly cancelled: number;
    readonly lost: number;
    readonly wrongResultsAccepted: number;
  };
  readonly claimLatencyMs: Percentiles;
  readonly timeToVerdictMs: Percentiles;
  readonly bidsPerJob: number;
  readonly messagesPerJob: number;
  readonly messages: Record<string, number>;
  readonly messagesByDomain: Record<string, number>;
  readonly gossip: { readonly publishes: number; readonly deliveryFraction: number; readonly latencyMs: Percentiles };
  readonly load: {
    readonly workersEverOnline: number;
    readonly runsPerWorker: { mean: number; p50: number | null; p90: number | null; max: number };
    readonly idleWorkers: number;
  };
  readonly fairness: {
    readonly jainCompletion: number | null;
    readonly jainTimeToVerdict: number | null;
    readonly perProject: readonly {
      project: number;
      submitted: number;
      passed: number;
      failed: number;
      p50TimeToVerdictMs: number | null;
    }[];
  };
  readonly security: Record<string, number>;
  readonly invariants: { readonly checked: readonly string[]; readonly violations: readonly Violation[] };
  readonly series: readonly SeriesPoint[];
}

/**
 * Deliberate defects in the system under test, for the tests of the invariant checker only: each one breaks the
 * first verdict a master publishes, between the machine and the network.
 */
export type Sabotage = "drop-verdict" | "duplicate-verdict" | "unreported-digest";

export interface RunOptions {
  /** Called every few thousand events with the simulated time reached: for a progress bar. */
  readonly onProgress?: (simulatedMs: number, endMs: number, events: number) => void;
  /** Test-only: break the run on purpose to show that the invariants catch it. */
  readonly sabotage?: Sabotage;
}

export const invariantNames = [
  "no-job-lost: every submitted job ends with exactly one verdict or cancel",
  "accepted-once: no job gets a second verdict",
  "quorum: every accepted digest was reported by at least quorum distinct workers (1 where the master trusted a worker alone)",
  "ends-after-heal: every job has ended when the run stops, after every fault healed and the drain",
  "no-forgery-accepted: no tampered or untrusted message reaches a state machine",
] as const;

function letters(n: number): string {
  let out = "";
  let v = n;
  do {
    out = String.fromCharCode(97 + (v % 26)) + out;
    v = Math.floor(v / 26);
  } while (v > 0);
  return out;
}

/** A valid project id: 'b' then 52 lowercase base32 characters, derived from the index. */
export function simProjectId(index: number): string {
  return `bsim${letters(index)}`.padEnd(53, "a");
}

export function simJobId(project: number, index: number): string {
  return `p${project}-j${index}`;
}

function honestDigest(job: number, shard: number): string {
  return `bhonest${letters(job)}z${letters(shard)}`;
}

const baseDimensions = {
  os: "linux",
  arch: "x64",
  cores: 8,
  memoryBytes: 16 * 2 ** 30,
  diskBytes: 2 ** 40,
  tools: [],
  labels: [],
};

/** One gossip message arriving at one node: the most common event, so an object with a method rather than a closure. */
class GossipDelivery {
  readonly atMs: number;
  order = 0;
  private readonly sim: Simulation;
  private readonly receiver: SimNode;
  private readonly epoch: number;
  private readonly topic: number;
  private readonly wire: Wire;
  constructor(atMs: number, sim: Simulation, receiver: SimNode, topic: number, wire: Wire) {
    this.atMs = atMs;
    this.sim = sim;
    this.receiver = receiver;
    this.epoch = receiver.epoch;
    this.topic = topic;
    this.wire = wire;
  }
  run(): void {
    this.sim.deliverGossip(this.receiver, this.epoch, this.topic, this.wire);
  }
}

function holdsJob(state: WorkerState, project: string, jobId: string): boolean {
  const key = `${project}/${jobId}`;
  if (key in state.candidates || key in state.pending) return true;
  const prefix = `${key}/`;
  for (const runId in state.running) if (runId.startsWith(prefix)) return true;
  return false;
}

export class Simulation {
  readonly scenario: Scenario;
  readonly seed: number;
  readonly rng: Rng;
  readonly queue = new EventQueue();
  readonly nodes: SimNode[] = [];
  readonly gossip: GossipModel;
  private nowMs = 0;
  private events = 0;
  private readonly real: boolean;
  private readonly keyIndex = new Map<string, number>();
  private readonly masters: number[] = [];
  private readonly jobs = new Map<string, JobTruth>();
  private readonly activePartitions: number[] = [];
  private openJobs = 0;
  private submitted = 0;
  private arrivalsDone = false;
  private repairScheduled = false;
  private readonly violations: Violation[] = [];
  private violationCount = 0;
  // Figures.
  private readonly claim = new Histogram();
  private readonly verdictLatency = new Histogram();
  private readonly gossipLatency = new Histogram();
  private readonly perProjectVerdict: Histogram[];
  private readonly counters: Record<string, number> = {
    gossipTransmissions: 0,
    gossipDuplicates: 0,
    gossipControl: 0,
    direct: 0,
    directDropped: 0,
    deliveriesDropped: 0,
  };
  private readonly byDomain: Record<string, number> = {};
  private readonly security: Record<string, number> = {
    forgeriesSent: 0,
    refusedSignature: 0,
    refusedUntrusted: 0,
    forgeriesAccepted: 0,
    spamBids: 0,
    wrongResultsSent: 0,
  };
  private readonly nodeCounts: Record<string, number> = {
    masters: 0,
    workersInitial: 0,
    joined: 0,
    left: 0,
    crashed: 0,
    crashedLosingStore: 0,
    exodusDepartures: 0,
    masterCrashes: 0,
    spammers: 0,
    forgers: 0,
    liars: 0,
    sybils: 0,
  };
  private bids = 0;
  private gossipPublishes = 0;
  private gossipExpected = 0;
  private gossipDelivered = 0;
  private readonly jobCounts = { passed: 0, failed: 0, cancelled: 0, wrongResultsAccepted: 0 };
  private readonly series: SeriesPoint[] = [];
  private interval = { messages: 0, bids: 0, verdicts: 0, claims: [] as number[], verdictTimes: [] as number[] };
  private executionToken = 0;
  private sabotage: Sabotage | undefined;

  constructor(scenario: Scenario, seed: number) {
    this.scenario = scenario;
    this.seed = seed;
    this.rng = seededRng(seed);
    this.real = scenario.signatures === "real";
    this.latencyTable = logNormalTable(scenario.network.latencySigma);
    this.perProjectVerdict = Array.from({ length: scenario.projects }, () => new Histogram());
    const links: Links = {
      reachable: (a, b) => this.reachable(a, b),
      classOf: (node) => this.classOf(node),
      latencyMs: (a, b, bytes) => this.latencyMs(a, b, bytes),
      lost: () => scenario.network.loss > 0 && this.rng() < scenario.network.loss,
      lossy: scenario.network.loss > 0,
    };
    const g = scenario.gossip;
    this.gossip = new GossipModel(
      {
        meshDegree: g.meshDegree,
        meshDegreeLow: g.meshDegreeLow,
        meshDegreeHigh: g.meshDegreeHigh,
        lazyDegree: g.lazyDegree,
        heartbeatMs: g.heartbeat,
        historyGossip: g.historyGossip,
        seenTtlMs: g.seenTtl,
      },
      this.rng,
      links,
    );
    this.gossip.onDirty = () => this.scheduleRepair();
  }

  // ---- network ----

  private sideOf(partition: number, node: number): number {
    const p = this.scenario.partitions[partition];
    const n = this.nodes[node];
    if (p === undefined || n === undefined) return 0;
    if (n.role === "master" && !p.mastersSplit) return 0;
    return hashUnit(this.seed, partition, node) < p.fraction ? 1 : 0;
  }

  reachable(a: number, b: number): boolean {
    const na = this.nodes[a];
    const nb = this.nodes[b];
    if (na === undefined || nb === undefined || !na.online || !nb.online) return false;
    for (const p of this.activePartitions) if (this.sideOf(p, a) !== this.sideOf(p, b)) return false;
    return true;
  }

  private classOf(node: number): number {
    if (!(this.nodes[node]?.online ?? false)) return -1;
    let cls = 0;
    for (const p of this.activePartitions) cls = cls * 2 + this.sideOf(p, node);
    return cls;
  }

  /** Per-link latency: nodes sit on a ring; a link's median grows with their distance; each message is a fresh log-normal draw. */
  private latencyMs(a: number, b: number, bytes: number): number {
    const net = this.scenario.network;
    const d = Math.abs((this.positions[a] as number) - (this.positions[b] as number));
    const distance = Math.min(d, 1 - d) * 2;
    const median = net.medianLatency * (0.5 + distance);
    const transfer = (bytes * 8) / (net.bandwidthMbps * 1000);
    const spread = this.latencyTable[Math.floor(this.rng() * normalTableCount)] as number;
    return median * spread + transfer;
  }

  // ---- nodes ----

  private keyFor(index: number): { key: string; identity: Identity | null } {
    if (!this.real) return { key: (index + 1).toString(16).padStart(64, "0"), identity: null };
    const seed = new Uint8Array(32);
    const view = new DataView(seed.buffer);
    view.setUint32(0, this.seed);
    view.setUint32(4, index);
    view.setUint32(8, 0x51a1);
    const identity = identityFromSeed(seed);
    return { key: hexOf(identity.publicKey), identity };
  }

  private addNode(
    role: Role,
    fields: Partial<Pick<SimNode, "project" | "behaviour" | "group" | "speed" | "nightOnly" | "availability">> & {
      topics: number[];
    },
  ): SimNode {
    const index = this.nodes.length;
    const { key, identity } = this.keyFor(index);
    if (index >= this.positions.length) {
      const grown = new Float64Array(this.positions.length * 2);
      grown.set(this.positions);
      this.positions = grown;
    }
    this.positions[index] = hashUnit(this.seed, 7, index);
    const node: SimNode = {
      index,
      role,
      key,
      identity,
      topics: fields.topics,
      online: false,
      epoch: 0,
      project: fields.project ?? -1,
      master: null,
      worker: null,
      behaviour: fields.behaviour ?? "honest",
      group: fields.group ?? -1,
      speed: fields.speed ?? 1,
      nightOnly: fields.nightOnly ?? false,
      availability: fields.availability ?? "eager",
      executing: new Map(),
      advertSeq: 0,
      timerSeq: 0,
      runsStarted: 0,
      everOnline: false,
    };
    this.nodes.push(node);
    this.keyIndex.set(key, index);
    return node;
  }

  private pickProjects(): number[] {
    const count = this.scenario.workers.projectsPerWorker;
    const chosen: number[] = [];
    while (chosen.length < count) {
      const p = pick(this.rng, this.scenario.projects);
      if (!chosen.includes(p)) chosen.push(p);
    }
    return chosen.sort((a, b) => a - b);
  }

  private newWorkerState(node: SimNode): WorkerState {
    const shares: Record<string, number> = {};
    for (const p of node.topics) shares[simProjectId(p)] = 1;
    return createWorker(
      node.key,
      {
        slots: this.scenario.workers.slots,
        maxSeenRounds: this.scenario.workers.seenRounds,
        renewIntervalMs: this.scenario.workers.renewInterval,
        shares,
        dimensions: baseDimensions,
        specs: [],
        rules: {
          windows: node.nightOnly ? [{ days: [], startMinute: nightStartMinute, endMinute: nightEndMinute }] : [],
          maxLoadAverage: null,
        },
      },
      node.availability,
    );
  }

  private createWorkerNode(behaviour: Behaviour, group: number): SimNode {
    const w = this.scenario.workers;
    const r = this.rng();
    const availability: Availability = r < w.reluctant ? "reluctant" : r < w.reluctant + w.paused ? "paused" : "eager";
    const node = this.addNode("worker", {
      topics: this.pickProjects(),
      behaviour,
      group,
      speed: w.slowest + this.rng() * (w.fastest - w.slowest),
      nightOnly: this.rng() < w.nightOnly,
      availability,
    });
    node.worker = this.newWorkerState(node);
    return node;
  }

  private bringOnline(node: SimNode): void {
    node.online = true;
    node.everOnline = true;
    node.epoch++;
    for (const topic of node.topics) this.gossip.join(topic, node.index);
    if (node.role === "worker") {
      if (node.nightOnly) this.feedFacts(node);
      this.startAdverts(node);
    }
  }

  private takeOffline(node: SimNode): void {
    node.online = false;
    node.epoch++;
    node.executing.clear();
    for (const topic of node.topics) this.gossip.leave(topic, node.index);
  }

  // ---- scheduling helpers ----

  private at(atMs: number, run: () => void): void {
    this.queue.push(Math.max(atMs, this.nowMs), run);
  }

  private scheduleRepair(): void {
    if (this.repairScheduled) return;
    this.repairScheduled = true;
    const hb = this.scenario.gossip.heartbeat;
    this.at((Math.floor(this.nowMs / hb) + 1) * hb, () => {
      this.repairScheduled = false;
      this.gossip.repair();
    });
  }

  private abs(): number {
    return simEpochMs + Math.floor(this.nowMs);
  }

  // ---- messages ----

  private wire(from: SimNode, domain: Domain, body: unknown, tampered = false): Wire {
    this.byDomain[domain] = (this.byDomain[domain] ?? 0) + 1;
    const about = body as { project?: unknown; jobId?: unknown };
    const project = typeof about.project === "string" ? about.project : "";
    const jobId = typeof about.jobId === "string" ? about.jobId : "";
    if (!this.real || from.identity === null) {
      return {
        from: from.index,
        domain,
        body,
        bytes: null,
        size: fastEnvelopeBytes[domain] ?? 256,
        tampered,
        project,
        jobId,
      };
    }
    const bytes = sealEnvelope(
      messageDomains[domain as keyof typeof messageDomains] as never,
      body as never,
      from.identity,
    );
    if (tampered) bytes[bytes.length - 1] = (bytes[bytes.length - 1] as number) ^ 0x01;
    return { from: from.index, domain, body: null, bytes, size: bytes.length, tampered, project, jobId };
  }

  /** What a receiving node's shell gets from the wire: the verified body and signer, or null (refused and counted). */
  private open(wire: Wire): { body: unknown; signer: string } | null {
    if (wire.opened !== undefined) return wire.opened;
    let opened: { body: unknown; signer: string } | null;
    if (wire.bytes === null) {
      opened = wire.tampered ? null : { body: wire.body, signer: (this.nodes[wire.from] as SimNode).key };
    } else {
      try {
        const verified = openEnvelope(
          messageDomains[wire.domain as keyof typeof messageDomains] as never,
          wire.bytes,
          this.abs(),
        );
        opened = { body: verified.body, signer: hexOf(verified.signer) };
      } catch {
        opened = null;
      }
    }
    wire.opened = opened;
    return opened;
  }

  private refuse(reason: "refusedSignature" | "refusedUntrusted"): void {
    this.security[reason] = (this.security[reason] ?? 0) + 1;
  }

  private publish(from: SimNode, topic: number, wire: Wire): void {
    this.gossipPublishes++;
    const out = this.gossip.publish(topic, from.index, this.nowMs, wire.size);
    this.counters.gossipTransmissions = (this.counters.gossipTransmissions as number) + out.transmissions;
    this.counters.gossipDuplicates = (this.counters.gossipDuplicates as number) + out.duplicates;
    this.counters.gossipControl = (this.counters.gossipControl as number) + out.control;
    this.interval.messages += out.transmissions + out.control;
    this.gossipExpected += out.subscribers;
    this.gossipDelivered += out.deliveries.length;
    for (const { node, atMs } of out.deliveries) {
      this.gossipLatency.add(atMs - this.nowMs);
      const receiver = this.nodes[node] as SimNode;
      // Only nodes whose machine takes this kind of message get an event; the rest forward it and count it above.
      if (wire.domain === "workerAdvert" ? receiver.role !== "master" : receiver.role === "master") continue;
      if (receiver.role === "forger") continue;
      // A verdict about a job the worker holds nothing of (no candidate, bid or run) changes nothing in its machine:
      // the shell only forwards it, so no event is made for it. This halves the steps of a big mesh.
      if (wire.domain === "verdict" && receiver.worker !== null && !holdsJob(receiver.worker, wire.project, wire.jobId))
        continue;
      this.queue.pushEvent(new GossipDelivery(Math.max(atMs, this.nowMs), this, receiver, topic, wire));
    }
  }

  /** An advert: flooded on the topic (counted), acted on by the project's master only (see GossipModel.publishTo). */
  private publishAdvert(from: SimNode, topic: number, wire: Wire): void {
    this.gossipPublishes++;
    const master = this.nodes[this.masters[topic] as number] as SimNode;
    const out = this.gossip.publishTo(topic, from.index, master.index, this.nowMs, wire.size);
    this.counters.gossipTransmissions = (this.counters.gossipTransmissions as number) + out.transmissions;
    this.counters.gossipDuplicates = (this.counters.gossipDuplicates as number) + out.duplicates;
    this.interval.messages += out.transmissions;
    if (out.atMs === null) return;
    this.gossipLatency.add(out.atMs - this.nowMs);
    this.queue.pushEvent(new GossipDelivery(Math.max(out.atMs, this.nowMs), this, master, topic, wire));
  }

  private send(from: SimNode, to: number, wire: Wire): void {
    this.counters.direct = (this.counters.direct as number) + 1;
    this.interval.messages++;
    const receiver = this.nodes[to];
    if (
      receiver === undefined ||
      !this.reachable(from.index, to) ||
      (this.scenario.network.loss > 0 && this.rng() < this.scenario.network.loss)
    ) {
      this.counters.directDropped = (this.counters.directDropped as number) + 1;
      return;
    }
    const epoch = receiver.epoch;
    this.at(this.nowMs + this.latencyMs(from.index, to, wire.size), () => {
      if (!receiver.online || receiver.epoch !== epoch) {
        this.counters.directDropped = (this.counters.directDropped as number) + 1;
        return;
      }
      this.onDirect(receiver, wire);
    });
  }

  /** A gossip delivery came due (see GossipDelivery). */
  deliverGossip(receiver: SimNode, epoch: number, topic: number, wire: Wire): void {
    if (!receiver.online || receiver.epoch !== epoch) {
      this.counters.deliveriesDropped = (this.counters.deliveriesDropped as number) + 1;
      return;
    }
    this.onGossip(receiver, topic, wire);
  }

  private onGossip(node: SimNode, topic: number, wire: Wire): void {
    const opened = this.open(wire);
    if (opened === null) {
      this.refuse("refusedSignature");
      return;
    }
    const name = wire.domain as MessageDomainName;
    const route = topicRoute(name);
    if (route === null) return;
    if (route.to === "master") {
      const input = masterInputOf(name, opened.signer, opened.body);
      if (node.master !== null && input !== null) this.toMaster(node, input);
      return;
    }
    // Trust is modelled as one announcer key per project (the real node checks the keyset).
    const announcer = this.nodes[this.masters[topic] as number] as SimNode;
    if (opened.signer !== announcer.key) {
      this.refuse("refusedUntrusted");
      return;
    }
    if (wire.forged === true) this.forgeryAccepted(wire);
    if (node.role === "spammer") {
      if (name === "jobAnnouncement") this.spamBid(node, announcer, opened.body as never);
      return;
    }
    const input = workerInputOf(name, opened.signer, opened.body);
    if (node.worker !== null && input !== null) this.toWorker(node, input);
  }

  private onDirect(node: SimNode, wire: Wire): void {
    const opened = this.open(wire);
    if (opened === null) {
      this.refuse("refusedSignature");
      return;
    }
    const { signer, body } = opened;
    const name = wire.domain as MessageDomainName;
    const side = directSide(name, body as { worker?: Uint8Array }, signer);
    if (side === "master" && node.master !== null) {
      const input = masterInputOf(name, signer, body);
      if (input === null) return;
      if (input.kind === "result") this.observeResult(wire.from, input.result);
      this.toMaster(node, input);
      return;
    }
    if (side === "worker" && node.worker !== null) {
      const input = workerInputOf(name, signer, body);
      if (input !== null) this.toWorker(node, input);
    }
  }

  // ---- machines ----

  private toMaster(node: SimNode, input: MasterInput): void {
    const { state, effects } = stepMaster(node.master as MasterState, input, this.abs(), this.rng);
    node.master = state;
    this.carryOut(node, effects);
  }

  private toWorker(node: SimNode, input: WorkerInput): void {
    const { state, effects } = stepWorker(node.worker as WorkerState, input, this.abs(), this.rng);
    node.worker = state;
    this.carryOut(node, effects);
  }

  private carryOut(node: SimNode, effects: readonly Effect[]): void {
    for (const effect of effects) {
      switch (effect.type) {
        case "publish": {
          let message = effect.message;
          let copies = 1;
          if (this.sabotage !== undefined && node.role === "master" && message.domain === "verdict") {
            const sabotage = this.sabotage;
            this.sabotage = undefined;
            if (sabotage === "drop-verdict") break;
            if (sabotage === "duplicate-verdict") copies = 2;
            if (sabotage === "unreported-digest")
              message = {
                domain: "verdict",
                body: {
                  ...message.body,
                  acceptedDigests: message.body.acceptedDigests.map(() => "bnobodyreportedthis"),
                },
              };
          }
          for (let copy = 0; copy < copies; copy++) {
            if (node.role === "master") this.observeMasterPublish(node, message.domain, message.body);
            this.publish(node, node.project, this.wire(node, message.domain, message.body));
          }
          break;
        }
        case "send": {
          const to = this.keyIndex.get(effect.to);
          const message = effect.message;
          if (message.domain === "bid") {
            this.bids++;
            this.interval.bids++;
          }
          if (message.domain === "award") this.observeAward(message.body.jobId);
          if (to !== undefined) this.send(node, to, this.wire(node, message.domain, message.body));
          break;
        }
        case "set-timer":
          this.armTimer(node, effect.atMs);
          break;
        case "start-execution":
          this.execute(node, effect.run.runId, effect.run.jobId, effect.run.shard);
          break;
        case "kill-execution":
          node.executing.delete(effect.runId);
          break;
        case "log":
          if (effect.event === "trusted-alone") {
            const truth = this.jobs.get(String(effect.fields.jobId));
            if (truth !== undefined) {
              if (truth.trustedAlone === null) truth.trustedAlone = new Set();
              truth.trustedAlone.add(Number(effect.fields.shard));
            }
          }
          break;
      }
    }
  }

  /**
   * The node's one wake-up, as a real shell keeps it (clearTimeout, then setTimeout): a new set-timer replaces the
   * pending one, so stale wake-ups never tick the machine.
   */
  private armTimer(node: SimNode, atMsAbsolute: number): void {
    const epoch = node.epoch;
    const seq = ++node.timerSeq;
    this.at(atMsAbsolute - simEpochMs, () => {
      if (!node.online || node.epoch !== epoch || node.timerSeq !== seq) return;
      if (node.master !== null) this.toMaster(node, { kind: "tick" });
      else if (node.worker !== null) this.toWorker(node, { kind: "tick" });
    });
  }

  private execute(node: SimNode, runId: string, jobId: string, shard: number): void {
    const truth = this.jobs.get(jobId);
    if (truth === undefined) return;
    node.runsStarted++;
    const token = ++this.executionToken;
    node.executing.set(runId, token);
    const durationMs = Math.max(1, Math.round(truth.durationMs / node.speed));
    let outputsDigest = honestDigest(truth.index, shard);
    let outcome: "succeeded" | "failed" = truth.failing ? "failed" : "succeeded";
    if (node.behaviour === "liar") {
      outputsDigest = `bliarout${letters(node.index)}`;
      outcome = "succeeded";
    } else if (node.behaviour === "sybil") {
      outputsDigest = `bsybilout${letters(node.group)}`;
      outcome = "succeeded";
    }
    if (node.behaviour !== "honest") this.security.wrongResultsSent = (this.security.wrongResultsSent as number) + 1;
    this.at(this.nowMs + durationMs, () => {
      if (!node.online || node.executing.get(runId) !== token) return;
      node.executing.delete(runId);
      this.toWorker(node, {
        kind: "execution-finished",
        report: {
          runId,
          outcome,
          exitCode: outcome === "succeeded" ? 0 : 1,
          outputsDigest,
          logDigest: null,
          summary: outcome,
          durationMs,
        },
      });
    });
  }

  // ---- observation and invariants (outside the machines) ----

  private violate(invariant: Violation["invariant"], jobId: string, detail: string): void {
    this.violationCount++;
    if (this.violations.length < maxListedViolationsCount) this.violations.push({ invariant, jobId, detail });
  }

  private forgeryAccepted(wire: Wire): void {
    this.security.forgeriesAccepted = (this.security.forgeriesAccepted as number) + 1;
    this.violate(
      "no-forgery-accepted",
      "-",
      `a tampered ${wire.domain} from node ${wire.from} passed the shell's checks`,
    );
  }

  private observeAward(jobId: string): void {
    const truth = this.jobs.get(jobId);
    if (truth === undefined || truth.firstAwardAtMs !== null) return;
    truth.firstAwardAtMs = this.nowMs;
    const latency = this.nowMs - truth.submittedAtMs;
    this.claim.add(latency);
    this.interval.claims.push(latency);
  }

  private observeResult(
    from: number,
    result: { jobId: string; shard: number; outcome: string; exitCode: number | null; outputsDigest: string | null },
  ): void {
    const truth = this.jobs.get(result.jobId);
    if (truth === undefined || truth.results === null || result.outcome === "refused") return;
    const digest = resultDigest(result as never);
    const shard = truth.results[result.shard];
    if (shard === undefined) return;
    let workers = shard.get(digest);
    if (workers === undefined) {
      workers = new Set();
      shard.set(digest, workers);
    }
    workers.add(from);
  }

  private observeMasterPublish(node: SimNode, domain: string, body: unknown): void {
    if (domain !== "verdict" && !(domain === "cancel" && (body as { attempt: number | null }).attempt === null)) return;
    const { jobId } = body as { jobId: string };
    const truth = this.jobs.get(jobId);
    if (truth === undefined) {
      this.violate("no-job-lost", jobId, `master of project ${node.project} ended a job nobody submitted`);
      return;
    }
    truth.terminalMessages++;
    if (truth.terminalMessages > 1) {
      this.violate("accepted-once", jobId, `verdict or cancel number ${truth.terminalMessages} for the job`);
      return;
    }
    truth.endedAtMs = this.nowMs;
    this.openJobs--;
    this.interval.verdicts++;
    const latency = this.nowMs - truth.submittedAtMs;
    this.verdictLatency.add(latency);
    this.perProjectVerdict[truth.project]?.add(latency);
    this.interval.verdictTimes.push(latency);
    if (domain === "cancel") {
      truth.status = "cancelled";
      this.jobCounts.cancelled++;
    } else {
      const verdict = body as { outcome: "passed" | "failed"; acceptedDigests: (string | null)[] };
      truth.status = verdict.outcome;
      if (verdict.outcome === "passed") this.jobCounts.passed++;
      else this.jobCounts.failed++;
      let wrong = false;
      verdict.acceptedDigests.forEach((digest, shard) => {
        if (digest === null) return;
        const agreeing = truth.results?.[shard]?.get(digest)?.size ?? 0;
        const needed = truth.trustedAlone?.has(shard) === true ? 1 : truth.quorum;
        if (agreeing < needed)
          this.violate(
            "quorum",
            jobId,
            `shard ${shard} accepted ${digest.slice(0, 16)}… with ${agreeing} agreeing result(s) delivered, quorum ${needed}`,
          );
        const honest = resultDigest({
          outcome: truth.failing ? "failed" : "succeeded",
          exitCode: truth.failing ? 1 : 0,
          outputsDigest: honestDigest(truth.index, shard),
        });
        if (digest !== honest) wrong = true;
      });
      if (wrong) this.jobCounts.wrongResultsAccepted++;
    }
    truth.results = null;
    truth.trustedAlone = null;
  }

  // ---- workload and faults ----

  private jobSpec(deadlineMs: number, durationMs: number): JobSpec {
    const j = this.scenario.jobs;
    return {
      name: "simulated job",
      steps: [{ name: "test", run: "npm test" }],
      env: {},
      timeoutMs: Math.min(dayMs, Math.max(60_000, durationMs * 4)),
      resources: { cpus: 2, memoryBytes: 2 ** 31, diskBytes: 2 ** 32, processes: 256 },
      network: false,
      outputs: [],
      inputsDigest: null,
      requiredSpecs: [],
      os: "linux",
      replicas: j.replicas,
      quorum: j.quorum,
      shards: j.shards,
      priority: 0,
      maxAttempts: j.maxAttempts,
      deadlineMs,
    };
  }

  private scheduleArrivals(): void {
    const j = this.scenario.jobs;
    const times: number[] = [];
    for (let i = 0; i < j.count; i++) times.push(Math.floor(this.rng() * this.scenario.duration));
    times.sort((a, b) => a - b);
    const next = (i: number) => {
      if (i >= times.length) {
        this.arrivalsDone = true;
        return;
      }
      this.at(times[i] as number, () => {
        this.submit(i);
        next(i + 1);
      });
    };
    next(0);
  }

  private submit(index: number): void {
    const j = this.scenario.jobs;
    const project = pick(this.rng, this.scenario.projects);
    const durationMs = Math.max(1, Math.round(logNormal(this.rng, j.medianDuration, j.durationSigma)));
    const failing = this.rng() < j.failing;
    const jobId = simJobId(project, index);
    const truth: JobTruth = {
      index,
      project,
      submittedAtMs: this.nowMs,
      durationMs,
      failing,
      quorum: j.quorum,
      shards: j.shards,
      firstAwardAtMs: null,
      endedAtMs: null,
      status: "open",
      terminalMessages: 0,
      results: Array.from({ length: j.shards }, () => new Map()),
      trustedAlone: null,
    };
    this.jobs.set(jobId, truth);
    this.submitted++;
    this.openJobs++;
    const master = this.nodes[this.masters[project] as number] as SimNode;
    // The project submits to its master node's store: a master that is down takes the job when it is back.
    const deliver = () =>
      this.toMaster(master, { kind: "submit", jobId, job: this.jobSpec(this.abs() + j.deadline, durationMs) });
    if (master.online) deliver();
    else {
      const pending = this.pendingSubmits.get(master.index);
      if (pending === undefined) this.pendingSubmits.set(master.index, [deliver]);
      else pending.push(deliver);
    }
  }

  /** Each node's place on the latency ring, in [0, 1). */
  private positions = new Float64Array(1024);
  private readonly latencyTable: Float64Array;
  private readonly pendingSubmits = new Map<number, (() => void)[]>();

  private startAdverts(node: SimNode): void {
    const epoch = node.epoch;
    const interval = this.scenario.advertInterval;
    const advert = () => {
      if (!node.online || node.epoch !== epoch || node.worker === null) return;
      const body = {
        ...advertOf(node.worker),
        issuedAtMs: this.abs(),
        expiresAtMs: this.abs() + Math.min(dayMs, interval * advertLifetimeIntervalsCount),
        seq: node.advertSeq++,
      };
      for (const topic of node.topics) this.publishAdvert(node, topic, this.wire(node, "workerAdvert", body));
      this.at(this.nowMs + interval, advert);
    };
    // The first advert goes out soon after joining, at a random phase, so a thousand joins are not one burst.
    this.at(this.nowMs + Math.floor(this.rng() * Math.min(interval, 5_000)), advert);
  }

  private feedFacts(node: SimNode): void {
    const epoch = node.epoch;
    const minuteMs = 60_000;
    const feed = () => {
      if (!node.online || node.epoch !== epoch || node.worker === null) return;
      const minute = Math.floor((this.nowMs % dayMs) / minuteMs);
      const day = (Math.floor(this.abs() / dayMs) + 4) % 7;
      this.toWorker(node, { kind: "facts", facts: { localMinuteOfDay: minute, localDayOfWeek: day, loadAverage: 0 } });
      // Next boundary of the night window.
      const dayStart = Math.floor(this.nowMs / dayMs) * dayMs;
      const candidates = [nightEndMinute, nightStartMinute, nightEndMinute + 24 * 60].map(
        (m) => dayStart + m * minuteMs,
      );
      const nextAt = candidates.find((t) => t > this.nowMs) as number;
      this.at(nextAt, feed);
    };
    this.at(this.nowMs, feed);
  }

  private spamBid(
    node: SimNode,
    master: SimNode,
    announcement: { project: string; jobId: string; round: number },
  ): void {
    this.security.spamBids = (this.security.spamBids as number) + 1;
    this.bids++;
    this.interval.bids++;
    const body = {
      issuedAtMs: this.abs(),
      expiresAtMs: this.abs() + 60_000,
      seq: node.advertSeq++,
      project: announcement.project,
      jobId: announcement.jobId,
      round: announcement.round,
      availability: "eager",
      runningJobs: 0,
      freeSlots: 1,
      cachedInputBytes: 0,
    };
    this.send(node, master.index, this.wire(node, "bid", body));
  }

  private startForger(node: SimNode, number: number): void {
    const perHour = this.scenario.actors.forgeriesPerHour;
    if (perHour <= 0) return;
    let count = 0;
    const forge = () => {
      if (this.nowMs >= this.scenario.duration) return;
      const topic = node.topics[0] as number;
      const tampered = count++ % 2 === 0;
      const body = {
        issuedAtMs: this.abs(),
        expiresAtMs: this.abs() + 600_000,
        seq: node.advertSeq++,
        project: simProjectId(topic),
        jobId: `forged-${number}-${count}`,
        job: this.jobSpec(this.abs() + hourMs, 60_000),
        round: 0,
        bidProbability: 1,
        wantedRuns: 1,
        eligiblePoolEstimate: 1,
      };
      this.security.forgeriesSent = (this.security.forgeriesSent as number) + 1;
      // Tampered: claims to be a valid announcement but the signature is broken. Otherwise: well signed, by a key the
      // project never delegated.
      const wire = this.wire(node, "jobAnnouncement", body, tampered);
      wire.forged = true;
      this.publish(node, topic, wire);
      this.at(this.nowMs + Math.max(1, Math.round(exponential(this.rng, hourMs / perHour))), forge);
    };
    this.at(Math.round(exponential(this.rng, hourMs / perHour)), forge);
  }

  private scheduleChurn(): void {
    const c = this.scenario.churn;
    const initial = this.scenario.workers.count;
    const duration = this.scenario.duration;
    const workerIndices = () => this.nodes.filter((n) => n.role === "worker").map((n) => n.index);
    // Joins: a Poisson process over the whole mesh.
    if (c.joinPerHour > 0 && initial > 0) {
      const mean = hourMs / (c.joinPerHour * initial);
      const join = () => {
        if (this.nowMs >= duration) return;
        const node = this.createWorkerNode(
          this.scenario.actors.liars > 0 && this.rng() < this.scenario.actors.liars ? "liar" : "honest",
          -1,
        );
        this.nodeCounts.joined = (this.nodeCounts.joined as number) + 1;
        this.bringOnline(node);
        this.at(this.nowMs + exponential(this.rng, mean), join);
      };
      this.at(exponential(this.rng, mean), join);
    }
    // Leaves and crashes: per-worker rates, drawn as one mesh-wide process that picks a live worker.
    const perWorker = (rate: number, act: (node: SimNode) => void) => {
      if (rate <= 0 || initial <= 0) return;
      const mean = hourMs / (rate * initial);
      const tick = () => {
        if (this.nowMs >= duration) return;
        const candidates = workerIndices();
        const node = this.nodes[candidates[pick(this.rng, candidates.length)] as number] as SimNode;
        if (node.online) act(node);
        this.at(this.nowMs + exponential(this.rng, mean), tick);
      };
      this.at(exponential(this.rng, mean), tick);
    };
    perWorker(c.leavePerHour, (node) => {
      this.nodeCounts.left = (this.nodeCounts.left as number) + 1;
      this.toWorker(node, { kind: "set-availability", availability: "offline" });
      this.takeOffline(node);
    });
    perWorker(c.crashPerHour, (node) => {
      const losesStore = this.rng() < c.crashLosesStore;
      this.nodeCounts.crashed = (this.nodeCounts.crashed as number) + 1;
      if (losesStore) this.nodeCounts.crashedLosingStore = (this.nodeCounts.crashedLosingStore as number) + 1;
      this.takeOffline(node);
      const back = Math.min(this.nowMs + c.restartAfter, duration);
      this.at(back, () => this.restartWorker(node, losesStore));
    });
  }

  private restartWorker(node: SimNode, losesStore: boolean): void {
    if (node.online) return;
    if (losesStore) node.worker = this.newWorkerState(node);
    this.bringOnline(node);
    if (!losesStore && node.worker !== null) {
      // Runs that were executing died with the process: the shell says so by going offline and back.
      this.toWorker(node, { kind: "set-availability", availability: "offline" });
      this.toWorker(node, { kind: "set-availability", availability: node.availability });
    }
    // The wake-up it had asked for died with the process: a tick makes it ask again.
    if (node.worker !== null) this.toWorker(node, { kind: "tick" });
  }

  private scheduleFaults(): void {
    const s = this.scenario;
    s.exodus.forEach((exodus) => {
      const gone: SimNode[] = [];
      this.at(exodus.at, () => {
        for (const node of this.nodes) {
          if (node.role !== "worker" || !node.online || this.rng() >= exodus.fraction) continue;
          gone.push(node);
          this.toWorker(node, { kind: "set-availability", availability: "offline" });
          this.takeOffline(node);
        }
        this.nodeCounts.exodusDepartures = (this.nodeCounts.exodusDepartures as number) + gone.length;
      });
      this.at(exodus.back, () => {
        for (const node of gone) {
          if (node.online) continue;
          this.bringOnline(node);
          this.toWorker(node, { kind: "set-availability", availability: node.availability });
          this.toWorker(node, { kind: "tick" });
        }
      });
    });
    s.partitions.forEach((partition, index) => {
      this.at(partition.at, () => {
        this.activePartitions.push(index);
        this.gossip.cutUnreachable();
        this.scheduleRepair();
      });
      this.at(partition.heal, () => {
        const i = this.activePartitions.indexOf(index);
        if (i >= 0) this.activePartitions.splice(i, 1);
        this.gossip.reconnect();
        this.scheduleRepair();
      });
    });
    s.masterCrashes.forEach((crash) => {
      const node = this.nodes[this.masters[crash.project] as number] as SimNode;
      this.at(crash.at, () => {
        if (!node.online) return;
        this.nodeCounts.masterCrashes = (this.nodeCounts.masterCrashes as number) + 1;
        this.takeOffline(node);
      });
      this.at(crash.back, () => {
        if (node.online) return;
        this.bringOnline(node);
        // The master kept its store: it carries on, and the shell re-arms the wake-up it had asked for.
        const pending = this.pendingSubmits.get(node.index) ?? [];
        this.pendingSubmits.delete(node.index);
        for (const deliver of pending) deliver();
        this.toMaster(node, { kind: "tick" });
        const timerAtMs = node.master?.timerAtMs ?? null;
        if (timerAtMs !== null) this.armTimer(node, timerAtMs);
      });
    });
  }

  private scheduleSamples(endMs: number): void {
    const every = this.scenario.sampleInterval;
    const sample = () => {
      const median = (values: number[]) =>
        exactQuantile(
          [...values].sort((a, b) => a - b),
          0.5,
        );
      let liveWorkers = 0;
      for (const node of this.nodes) if (node.online && node.role === "worker") liveWorkers++;
      this.series.push({
        tMs: this.nowMs,
        openJobs: this.openJobs,
        liveWorkers,
        messages: this.interval.messages,
        bids: this.interval.bids,
        verdicts: this.interval.verdicts,
        claimP50Ms: median(this.interval.claims),
        verdictP50Ms: median(this.interval.verdictTimes),
      });
      this.interval = { messages: 0, bids: 0, verdicts: 0, claims: [], verdictTimes: [] };
      if (this.nowMs + every <= endMs) this.at(this.nowMs + every, sample);
    };
    this.at(0, sample);
  }

  // ---- the run ----

  private setUp(): void {
    const s = this.scenario;
    for (let p = 0; p < s.projects; p++) {
      const node = this.addNode("master", { topics: [p], project: p });
      node.master = createMaster({
        project: simProjectId(p),
        bidWindowMs: s.master.bidWindow,
        leaseMs: s.master.lease,
        targetBidsPerRun: s.master.targetBidsPerRun,
        reannounceIntervalMs: s.master.reannounceInterval,
        trustAloneAfterValid: s.master.trustAloneAfterValid,
        maxJobs: Math.max(100_000, s.jobs.count + 1),
      });
      this.masters.push(node.index);
      this.nodeCounts.masters = (this.nodeCounts.masters as number) + 1;
    }
    const a = s.actors;
    for (let i = 0; i < s.workers.count; i++) {
      const liar = a.liars > 0 && this.rng() < a.liars;
      this.createWorkerNode(liar ? "liar" : "honest", -1);
      if (liar) this.nodeCounts.liars = (this.nodeCounts.liars as number) + 1;
    }
    this.nodeCounts.workersInitial = s.workers.count;
    for (let g = 0; g < a.sybilGroups; g++)
      for (let i = 0; i < a.sybilGroupSize; i++) {
        this.createWorkerNode("sybil", g);
        this.nodeCounts.sybils = (this.nodeCounts.sybils as number) + 1;
      }
    for (let i = 0; i < a.spammers; i++) {
      this.addNode("spammer", { topics: this.pickProjects() });
      this.nodeCounts.spammers = (this.nodeCounts.spammers as number) + 1;
    }
    const forgers: SimNode[] = [];
    for (let i = 0; i < a.forgers; i++) {
      forgers.push(this.addNode("forger", { topics: [pick(this.rng, s.projects)] }));
      this.nodeCounts.forgers = (this.nodeCounts.forgers as number) + 1;
    }
    for (const node of this.nodes) this.bringOnline(node);
    forgers.forEach((node, i) => {
      this.startForger(node, i);
    });
    this.scheduleArrivals();
    this.scheduleChurn();
    this.scheduleFaults();
  }

  run(options: RunOptions = {}): Metrics {
    const s = this.scenario;
    const endMs = s.duration + s.drain;
    this.sabotage = options.sabotage;
    this.setUp();
    this.scheduleSamples(endMs);
    let endedEarly = false;
    for (;;) {
      const next = this.queue.peekMs();
      if (next === null || next > endMs) break;
      if (next >= s.duration && this.arrivalsDone && this.openJobs === 0 && this.pendingSubmitsCount() === 0) {
        endedEarly = true;
        break;
      }
      const event = this.queue.pop();
      if (event === undefined) break;
      this.nowMs = event.atMs;
      event.run();
      this.events++;
      if (options.onProgress !== undefined && (this.events & (progressEveryEventsCount - 1)) === 0)
        options.onProgress(this.nowMs, endMs, this.events);
    }
    if (!endedEarly) this.nowMs = Math.max(this.nowMs, Math.min(endMs, this.queue.peekMs() ?? endMs));
    return this.collect(endedEarly);
  }

  private pendingSubmitsCount(): number {
    let n = 0;
    for (const list of this.pendingSubmits.values()) n += list.length;
    return n;
  }

  private collect(endedEarly: boolean): Metrics {
    const s = this.scenario;
    let lost = 0;
    for (const [jobId, truth] of this.jobs) {
      if (truth.terminalMessages > 0) continue;
      lost++;
      this.violate(
        "ends-after-heal",
        jobId,
        `submitted at ${truth.submittedAtMs} ms, still ${truth.status} at ${this.nowMs} ms (every fault healed by ${s.duration} ms)`,
      );
    }
    if (lost > 0) this.violate("no-job-lost", "-", `${lost} job(s) never ended`);
    const workers = this.nodes.filter((n) => n.role === "worker" && n.everOnline);
    const runs = workers.map((n) => n.runsStarted).sort((a, b) => a - b);
    const perProject = this.perProjectVerdict.map((histogram, project) => ({
      project,
      submitted: 0,
      passed: 0,
      failed: 0,
      p50TimeToVerdictMs: histogram.quantile(0.5),
    }));
    for (const truth of this.jobs.values()) {
      const entry = perProject[truth.project];
      if (entry === undefined) continue;
      entry.submitted++;
      if (truth.status === "passed") entry.passed++;
      if (truth.status === "failed") entry.failed++;
    }
    const withJobs = perProject.filter((p) => p.submitted > 0);
    const totalMessages =
      (this.counters.gossipTransmissions as number) +
      (this.counters.gossipControl as number) +
      (this.counters.direct as number);
    return {
      scenario: s.name,
      seed: this.seed,
      signatures: s.signatures,
      settings: s,
      run: { simulatedMs: Math.round(this.nowMs), events: this.events, endedWhenAllJobsEnded: endedEarly },
      nodes: this.nodeCounts,
      jobs: {
        submitted: this.submitted,
        passed: this.jobCounts.passed,
        failed: this.jobCounts.failed,
        cancelled: this.jobCounts.cancelled,
        lost,
        wrongResultsAccepted: this.jobCounts.wrongResultsAccepted,
      },
      claimLatencyMs: this.claim.summary(),
      timeToVerdictMs: this.verdictLatency.summary(),
      bidsPerJob: round(this.bids / Math.max(1, this.submitted)),
      messagesPerJob: round(totalMessages / Math.max(1, this.submitted)),
      messages: { ...this.counters, total: totalMessages },
      messagesByDomain: this.byDomain,
      gossip: {
        publishes: this.gossipPublishes,
        deliveryFraction: round(this.gossipDelivered / Math.max(1, this.gossipExpected)),
        latencyMs: this.gossipLatency.summary(),
      },
      load: {
        workersEverOnline: workers.length,
        runsPerWorker: {
          mean: round(runs.reduce((a, b) => a + b, 0) / Math.max(1, runs.length)),
          p50: exactQuantile(runs, 0.5),
          p90: exactQuantile(runs, 0.9),
          max: runs[runs.length - 1] ?? 0,
        },
        idleWorkers: runs.filter((r) => r === 0).length,
      },
      fairness: {
        jainCompletion: jainIndex(withJobs.map((p) => (p.passed + p.failed) / p.submitted)),
        jainTimeToVerdict: jainIndex(
          withJobs.flatMap((p) => (p.p50TimeToVerdictMs === null ? [] : [1 / Math.max(1, p.p50TimeToVerdictMs)])),
        ),
        perProject,
      },
      security: this.security,
      invariants: {
        checked: invariantNames,
        violations:
          this.violationCount > this.violations.length
            ? [
                ...this.violations,
                {
                  invariant: "no-job-lost",
                  jobId: "-",
                  detail: `(${this.violationCount - this.violations.length} more violations)`,
                },
              ]
            : this.violations,
      },
      series: this.series,
    };
  }
}

/** Runs one scenario with one seed. */
export function simulate(scenario: Scenario, seed: number = scenario.seed, options: RunOptions = {}): Metrics {
  return new Simulation(scenario, seed).run(options);
}
