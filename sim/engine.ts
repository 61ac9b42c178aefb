/**
 * The simulator's core: a discrete-event loop on a virtual clock in which
 * every simulated cimesh node runs the very shell core a real node runs
 * (jobs/driver.ts: admission, the machines, persistence, sequence, restarts),
 * with only its ports replaced: the network and gossip models instead of
 * libp2p, an in-memory store instead of level, a timed stand-in for the
 * sandbox, the virtual clock. Messages are sealed and opened with crypto/
 * (unless signatures are "fast", where the body travels as is and only a
 * forger's tampering is marked). The observer (sim/observer.ts) watches from
 * outside and checks the invariants against what the network carried.
 *
 * House rules (DESIGN.md, Rule 2): the shell makes no protocol decision. It
 * routes gossip by jobs/routing.ts (adverts to masters, the rest to workers)
 * and hands every message to the receiver's driver, whose admission decides.
 *
 * Determinism: one seeded generator (sim/rng.ts) draws everything in event
 * order; events at the same instant run in the order they were scheduled;
 * no wall clock is read here.
 */
import {
  acceptKeyset,
  BadSignatureError,
  checkTime,
  type Identity,
  identityFromSeed,
  openAnyEnvelope,
  type ProjectTrust,
  sealEnvelope,
  sealKeyset,
  trustFromAnchor,
} from "../crypto/index.ts";
import {
  type Availability,
  createWorker,
  type DriverPorts,
  hexOf,
  type JobSpec,
  keyOf,
  type MessageDomainName,
  messageDomains,
  messageRegistry,
  NodeDriver,
  type Opened,
  type StampedMessage,
  topicRoute,
  type WorkerState,
} from "../jobs/index.ts";
import { type ActorWorld, Replayer, Spammer, startForger } from "./actors.ts";
import { GossipModel, type Links } from "./gossip.ts";
import {
  honestDigest,
  invariantNames,
  type JobTruth,
  liarDigest,
  Observer,
  type Sabotage,
  sybilDigest,
  type Violation,
} from "./observer.ts";
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
import { SimStore } from "./store.ts";

export { invariantNames, type Sabotage, type Violation };

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
/** The first advert of a worker comes within this much of its start (or one advert interval, if shorter). */
export const maxAdvertJitterMs = 5_000;
/** How long the simulated projects' keysets are valid from the start of the run. */
export const simKeysetLifetimeMs = 300 * dayMs;
/** Envelope sizes in fast-signature mode (no envelope is made): typical sealed sizes measured in real mode. */
export const fastEnvelopeBytes: Readonly<Record<string, number>> = {
  jobAnnouncement: 700,
  workerAdvert: 300,
  bid: 240,
  award: 240,
  reject: 300,
  leaseRenew: 260,
  logChunk: 400,
  result: 400,
  resultAck: 240,
  verdict: 420,
  cancel: 300,
};

/** A message on the wire: the stamped body in both modes, and the sealed bytes in real mode. */
export interface Wire {
  /** The node that put it on the network. */
  readonly from: number;
  /** The node whose key signed it (another than `from` for a replay). */
  readonly signer: number;
  readonly domain: MessageDomainName;
  readonly body: Record<string, unknown>;
  readonly bytes: Uint8Array | null;
  readonly size: number;
  /** Set by forgers: a broken signature. In real mode the bytes carry the damage. */
  readonly tampered: boolean;
  /** Sent by a forger (tampered or not): must never reach a machine. Known to the observer only. */
  readonly forged?: boolean;
  /** Sent again by a replayer: must never reach a machine. Known to the observer only. */
  readonly replayed?: boolean;
  /** Opened once, then shared by every receiver (opening is a pure function of the bytes and the time). */
  opened?: Opened;
}

type Role = "master" | "worker" | "spammer" | "forger" | "replayer";
type Behaviour = "honest" | "liar" | "sybil";

interface SimNode {
  readonly index: number;
  readonly role: Role;
  readonly key: string;
  readonly signer: Uint8Array;
  readonly identity: Identity | null;
  readonly topics: readonly number[];
  online: boolean;
  /** Bumped whenever the node goes down: the facts it was fed before are not fed twice. */
  epoch: number;
  /** The node's process: its driver, replaced by a new one at each restart. */
  driver: NodeDriver<Wire> | null;
  store: SimStore;
  /** The master's project, or -1. */
  readonly project: number;
  readonly behaviour: Behaviour;
  readonly group: number;
  readonly speed: number;
  readonly nightOnly: boolean;
  readonly availability: Availability;
  /** Runs in flight: runId → token, so a killed run's finish is ignored. */
  readonly executing: Map<string, number>;
  runsStarted: number;
  everOnline: boolean;
  spammer: Spammer<Wire> | null;
  replayer: Replayer<Wire> | null;
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
  /** Admission verdicts of every node, by reason (jobs/admission.ts). */
  readonly admissions: Record<string, number>;
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

export interface RunOptions {
  /** Called every few thousand events with the simulated time reached: for a progress bar. */
  readonly onProgress?: (simulatedMs: number, endMs: number, events: number) => void;
  /** Test-only: break the run on purpose to show that the invariants catch it. */
  readonly sabotage?: Sabotage;
}

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
  private readonly driver: NodeDriver<Wire> | null;
  private readonly topic: number;
  private readonly wire: Wire;
  constructor(atMs: number, sim: Simulation, receiver: SimNode, topic: number, wire: Wire) {
    this.atMs = atMs;
    this.sim = sim;
    this.receiver = receiver;
    this.driver = receiver.driver;
    this.topic = topic;
    this.wire = wire;
  }
  run(): void {
    this.sim.deliverGossip(this.receiver, this.driver, this.topic, this.wire);
  }
}

export class Simulation implements ActorWorld<Wire> {
  readonly scenario: Scenario;
  readonly seed: number;
  readonly rng: Rng;
  readonly queue = new EventQueue();
  readonly nodes: SimNode[] = [];
  readonly gossip: GossipModel;
  private nowMsValue = 0;
  private events = 0;
  private readonly real: boolean;
  private readonly keyIndex = new Map<string, number>();
  private readonly masters: number[] = [];
  private readonly topicOfProject = new Map<string, number>();
  /** Each project's trust as every node pinned it: its anchor and its keyset naming the master's key, accepted once. */
  private readonly projectTrust: ProjectTrust[] = [];
  private readonly activePartitions: number[] = [];
  private arrivalsDone = false;
  private repairScheduled = false;
  private readonly observer: Observer;
  private readonly gossipLatency = new Histogram();
  private readonly counters: Record<string, number> = {
    gossipTransmissions: 0,
    gossipDuplicates: 0,
    gossipControl: 0,
    direct: 0,
    directDropped: 0,
    deliveriesDropped: 0,
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
    replayers: 0,
    liars: 0,
    sybils: 0,
  };
  private gossipPublishes = 0;
  private gossipExpected = 0;
  private gossipDelivered = 0;
  private readonly series: SeriesPoint[] = [];
  private executionToken = 0;
  /** Each node's place on the latency ring, in [0, 1). */
  private positions = new Float64Array(1024);
  private readonly latencyTable: Float64Array;
  private readonly pendingSubmits = new Map<number, (() => void)[]>();

  constructor(scenario: Scenario, seed: number, sabotage?: Sabotage) {
    this.scenario = scenario;
    this.seed = seed;
    this.rng = seededRng(seed);
    this.real = scenario.signatures === "real";
    this.latencyTable = logNormalTable(scenario.network.latencySigma);
    this.observer = new Observer(scenario.projects, sabotage);
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

  nowMs(): number {
    return this.nowMsValue;
  }

  absMs(): number {
    return simEpochMs + Math.floor(this.nowMsValue);
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
      signer: keyOf(key),
      identity,
      topics: fields.topics,
      online: false,
      epoch: 0,
      driver: null,
      store: new SimStore(),
      project: fields.project ?? -1,
      behaviour: fields.behaviour ?? "honest",
      group: fields.group ?? -1,
      speed: fields.speed ?? 1,
      nightOnly: fields.nightOnly ?? false,
      availability: fields.availability ?? "eager",
      executing: new Map(),
      runsStarted: 0,
      everOnline: false,
      spammer: null,
      replayer: null,
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
    const w = this.scenario.workers;
    return createWorker(
      node.key,
      {
        slots: w.slots,
        maxSeenRounds: w.seenRounds,
        renewIntervalMs: w.renewInterval,
        advertIntervalMs: this.scenario.advertInterval,
        advertJitterMs: Math.min(this.scenario.advertInterval, maxAdvertJitterMs),
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
    return this.addNode("worker", {
      topics: this.pickProjects(),
      behaviour,
      group,
      speed: w.slowest + this.rng() * (w.fastest - w.slowest),
      nightOnly: this.rng() < w.nightOnly,
      availability,
    });
  }

  /** The projects' keysets: one root per project (seeded), its master's key the one announcer. */
  private makeTrust(): void {
    for (let p = 0; p < this.scenario.projects; p++) {
      const seed = new Uint8Array(32);
      const view = new DataView(seed.buffer);
      view.setUint32(0, this.seed);
      view.setUint32(4, p);
      view.setUint32(8, 0x2007);
      const root = identityFromSeed(seed);
      const project = simProjectId(p);
      const master = this.nodes[this.masters[p] as number] as SimNode;
      const keyset = sealKeyset(
        {
          project,
          rootVersion: 1,
          version: 1,
          issuedAtMs: simEpochMs,
          expiresAtMs: simEpochMs + simKeysetLifetimeMs,
          roots: [root.publicKey],
          threshold: 1,
          announcers: [{ key: master.signer, label: `master ${p}`, expiresAtMs: simEpochMs + simKeysetLifetimeMs }],
        },
        [root],
      );
      const anchor = trustFromAnchor({ project, roots: [root.publicKey], threshold: 1 });
      this.projectTrust.push(acceptKeyset(anchor, keyset, simEpochMs));
      this.topicOfProject.set(project, p);
    }
  }

  /** A node's process starts (or starts again) from its store: a new driver, then the restart input. */
  private boot(node: SimNode): void {
    const trust = new Map<string, ProjectTrust>();
    for (const topic of node.topics) trust.set(simProjectId(topic), this.projectTrust[topic] as ProjectTrust);
    const s = this.scenario;
    const driver = new NodeDriver<Wire>({
      self: node.key,
      ports: this.portsFor(node),
      trust,
      masters:
        node.role === "master"
          ? [
              {
                project: simProjectId(node.project),
                bidWindowMs: s.master.bidWindow,
                leaseMs: s.master.lease,
                targetBidsPerRun: s.master.targetBidsPerRun,
                reannounceIntervalMs: s.master.reannounceInterval,
                trustAloneAfterValid: s.master.trustAloneAfterValid,
                maxJobs: Math.max(100_000, s.jobs.count + 1),
              },
            ]
          : [],
      worker: node.role === "worker" ? this.newWorkerState(node) : null,
      stored: node.store.load(),
    });
    node.driver = driver;
    driver.start();
  }

  private bringOnline(node: SimNode): void {
    node.online = true;
    node.everOnline = true;
    for (const topic of node.topics) this.gossip.join(topic, node.index);
    if (node.role !== "master" && node.role !== "worker") return;
    if (node.driver === null) this.boot(node);
    else node.driver.wake();
    if (node.nightOnly) this.feedFacts(node);
  }

  /** The node's process dies (or, with `keepProcess`, only its network goes): events for it are dropped. */
  private takeOffline(node: SimNode, keepProcess = false): void {
    node.online = false;
    node.epoch++;
    node.executing.clear();
    if (!keepProcess) node.driver = null;
    for (const topic of node.topics) this.gossip.leave(topic, node.index);
  }

  // ---- ports: what a simulated node's driver does in the world ----

  private portsFor(node: SimNode): DriverPorts<Wire> {
    return {
      nowMs: () => this.absMs(),
      rng: this.rng,
      seal: (message) => this.wire(node.index, message),
      open: (wire, nowMs) => this.open(wire, nowMs),
      publish: (topic, wire, message) => this.publishFromNode(node, topic, wire, message),
      send: (to, wire, message) => {
        this.observer.sent(message);
        const index = this.keyIndex.get(to);
        if (index !== undefined) this.sendWire(node.index, index, wire);
      },
      wakeAt: (atMs) => {
        const driver = node.driver;
        this.at(atMs - simEpochMs, () => {
          if (node.online && node.driver === driver && driver !== null) driver.wake();
        });
      },
      startRun: (run) => this.execute(node, run.runId, run.jobId, run.shard),
      killRun: (runId) => {
        node.executing.delete(runId);
      },
      persist: (batch) => node.store.persist(batch),
      log: (event, fields) => this.observer.logged(event, fields),
      admitted: (_channel, admission, wire) => this.observer.admitted(node.index, admission, wire),
    };
  }

  /** A master's gossip passes the observer (which may sabotage it, in the checker's tests) before the network. */
  private publishFromNode(node: SimNode, topic: string, wire: Wire, message: StampedMessage): void {
    const topicIndex = this.topicOfProject.get(topic);
    if (topicIndex === undefined) return;
    if (node.role !== "master") {
      this.observer.carried(message);
      this.publishWire(node.index, topicIndex, wire);
      return;
    }
    for (const out of this.observer.published(node.index, message))
      this.publishWire(node.index, topicIndex, out === message ? wire : this.wire(node.index, out));
  }

  // ---- scheduling helpers ----

  at(atMs: number, run: () => void): void {
    this.queue.push(Math.max(atMs, this.nowMsValue), run);
  }

  private scheduleRepair(): void {
    if (this.repairScheduled) return;
    this.repairScheduled = true;
    const hb = this.scenario.gossip.heartbeat;
    this.at((Math.floor(this.nowMsValue / hb) + 1) * hb, () => {
      this.repairScheduled = false;
      this.gossip.repair();
    });
  }

  // ---- messages ----

  wire(from: number, message: StampedMessage, tampered = false): Wire {
    const node = this.nodes[from] as SimNode;
    const domain = message.domain as MessageDomainName;
    if (!this.real || node.identity === null)
      return {
        from,
        signer: from,
        domain,
        body: message.body,
        bytes: null,
        size: fastEnvelopeBytes[domain] ?? 256,
        tampered,
      };
    const bytes = sealEnvelope(messageDomains[domain] as never, message.body as never, node.identity);
    if (tampered) bytes[bytes.length - 1] = (bytes[bytes.length - 1] as number) ^ 0x01;
    return { from, signer: from, domain, body: message.body, bytes, size: bytes.length, tampered };
  }

  replay(from: number, original: Wire): Wire {
    return { ...original, from, opened: undefined, replayed: true };
  }

  signerOf(wire: Wire): string | null {
    const opened = this.open(wire, this.absMs());
    return opened.kind === "message" ? hexOf(opened.signer) : null;
  }

  /**
   * What opening the wire gives a receiver: in fast mode the body as sent, its times checked as crypto/ checks them,
   * unless a forger broke its signature.
   */
  private open(wire: Wire, nowMs: number): Opened {
    if (wire.opened !== undefined) return wire.opened;
    let opened: Opened;
    if (wire.bytes === null) {
      opened = wire.tampered
        ? { kind: "unreadable", error: new BadSignatureError("envelope") }
        : {
            kind: "message",
            tag: messageDomains[wire.domain].tag,
            signer: (this.nodes[wire.signer] as SimNode).signer,
            body: wire.body as never,
          };
      // crypto/ checks the signature before the time: a broken one is forged whatever its time says.
      if (!wire.tampered)
        try {
          checkTime(wire.body as never, nowMs);
        } catch (error) {
          opened = { kind: "unreadable", error };
        }
    } else {
      try {
        const verified = openAnyEnvelope(messageRegistry, wire.bytes, nowMs);
        opened = { kind: "message", tag: verified.domain, signer: verified.signer, body: verified.body as never };
      } catch (error) {
        opened = { kind: "unreadable", error };
      }
    }
    wire.opened = opened;
    return opened;
  }

  /** Gossip on a topic, routed as jobs/routing.ts says: adverts to the project's master, the rest to workers. */
  publishWire(from: number, topic: number, wire: Wire): void {
    this.gossipPublishes++;
    if (topicRoute(wire.domain)?.to === "master") {
      this.publishToMaster(from, topic, wire);
      return;
    }
    const out = this.gossip.publish(topic, from, this.nowMsValue, wire.size);
    this.counters.gossipTransmissions = (this.counters.gossipTransmissions as number) + out.transmissions;
    this.counters.gossipDuplicates = (this.counters.gossipDuplicates as number) + out.duplicates;
    this.counters.gossipControl = (this.counters.gossipControl as number) + out.control;
    this.observer.interval.messages += out.transmissions + out.control;
    this.gossipExpected += out.subscribers;
    this.gossipDelivered += out.deliveries.length;
    for (const { node, atMs } of out.deliveries) {
      this.gossipLatency.add(atMs - this.nowMsValue);
      const receiver = this.nodes[node] as SimNode;
      // Only nodes whose machine takes it (and the actors that listen) get an event; the rest forward it, counted above.
      if (receiver.role === "master" || receiver.role === "forger") continue;
      this.queue.pushEvent(new GossipDelivery(Math.max(atMs, this.nowMsValue), this, receiver, topic, wire));
    }
  }

  /** An advert: flooded on the topic (counted), taken by the project's master only (see GossipModel.publishTo). */
  private publishToMaster(from: number, topic: number, wire: Wire): void {
    const master = this.nodes[this.masters[topic] as number] as SimNode;
    const out = this.gossip.publishTo(topic, from, master.index, this.nowMsValue, wire.size);
    this.counters.gossipTransmissions = (this.counters.gossipTransmissions as number) + out.transmissions;
    this.counters.gossipDuplicates = (this.counters.gossipDuplicates as number) + out.duplicates;
    this.observer.interval.messages += out.transmissions;
    if (out.atMs === null) return;
    this.gossipLatency.add(out.atMs - this.nowMsValue);
    this.queue.pushEvent(new GossipDelivery(Math.max(out.atMs, this.nowMsValue), this, master, topic, wire));
  }

  sendWire(from: number, to: number, wire: Wire): void {
    this.counters.direct = (this.counters.direct as number) + 1;
    this.observer.interval.messages++;
    const receiver = this.nodes[to];
    if (
      receiver === undefined ||
      !this.reachable(from, to) ||
      (this.scenario.network.loss > 0 && this.rng() < this.scenario.network.loss)
    ) {
      this.counters.directDropped = (this.counters.directDropped as number) + 1;
      return;
    }
    const driver = receiver.driver;
    const peer = (this.nodes[from] as SimNode).key;
    this.at(this.nowMsValue + this.latencyMs(from, to, wire.size), () => {
      if (!receiver.online || receiver.driver !== driver || driver === null) {
        this.counters.directDropped = (this.counters.directDropped as number) + 1;
        return;
      }
      driver.receive({ kind: "direct", peer }, wire);
    });
  }

  /** A gossip delivery came due (see GossipDelivery). */
  deliverGossip(receiver: SimNode, driver: NodeDriver<Wire> | null, topic: number, wire: Wire): void {
    if (!receiver.online || receiver.driver !== driver) {
      this.counters.deliveriesDropped = (this.counters.deliveriesDropped as number) + 1;
      return;
    }
    if (driver !== null) driver.receive({ kind: "topic", topic: simProjectId(topic) }, wire);
    receiver.spammer?.heard(wire, topic);
    receiver.replayer?.heard(wire);
  }

  private execute(node: SimNode, runId: string, jobId: string, shard: number): void {
    const truth = this.observer.jobs.get(jobId);
    if (truth === undefined) return;
    node.runsStarted++;
    const token = ++this.executionToken;
    node.executing.set(runId, token);
    const durationMs = Math.max(1, Math.round(truth.durationMs / node.speed));
    let outputsDigest = honestDigest(truth.index, shard);
    let outcome: "succeeded" | "failed" = truth.failing ? "failed" : "succeeded";
    if (node.behaviour === "liar") {
      outputsDigest = liarDigest(node.index);
      outcome = "succeeded";
    } else if (node.behaviour === "sybil") {
      outputsDigest = sybilDigest(node.group);
      outcome = "succeeded";
    }
    if (node.behaviour !== "honest") this.count("wrongResultsSent");
    const driver = node.driver;
    this.at(this.nowMsValue + durationMs, () => {
      if (!node.online || node.driver !== driver || driver === null || node.executing.get(runId) !== token) return;
      node.executing.delete(runId);
      driver.runFinished({
        runId,
        outcome,
        exitCode: outcome === "succeeded" ? 0 : 1,
        outputsDigest,
        logDigest: null,
        summary: outcome,
        durationMs,
      });
    });
  }

  count(counter: "spamBids" | "forgeriesSent" | "replaysSent" | "wrongResultsSent"): void {
    this.observer.security[counter] = (this.observer.security[counter] ?? 0) + 1;
  }

  masterOf(topic: number): number {
    return this.masters[topic] as number;
  }

  projectId(topic: number): string {
    return simProjectId(topic);
  }

  durationMs(): number {
    return this.scenario.jobs.medianDuration;
  }

  // ---- workload ----

  jobSpec(deadlineMs: number, durationMs: number): JobSpec {
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
      submittedAtMs: this.nowMsValue,
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
    this.observer.submit(truth, jobId);
    const master = this.nodes[this.masters[project] as number] as SimNode;
    // The project submits to its master node's store: a master that is down takes the job when it is back.
    const deliver = () =>
      master.driver?.toMaster(simProjectId(project), {
        kind: "submit",
        jobId,
        job: this.jobSpec(this.absMs() + j.deadline, durationMs),
      });
    if (master.online) deliver();
    else {
      const pending = this.pendingSubmits.get(master.index);
      if (pending === undefined) this.pendingSubmits.set(master.index, [deliver]);
      else pending.push(deliver);
    }
  }

  private feedFacts(node: SimNode): void {
    const epoch = node.epoch;
    const minuteMs = 60_000;
    const feed = () => {
      if (!node.online || node.epoch !== epoch || node.driver === null) return;
      const minute = Math.floor((this.nowMsValue % dayMs) / minuteMs);
      const day = (Math.floor(this.absMs() / dayMs) + 4) % 7;
      node.driver.toWorker({ kind: "facts", facts: { localMinuteOfDay: minute, localDayOfWeek: day, loadAverage: 0 } });
      // Next boundary of the night window.
      const dayStart = Math.floor(this.nowMsValue / dayMs) * dayMs;
      const candidates = [nightEndMinute, nightStartMinute, nightEndMinute + 24 * 60].map(
        (m) => dayStart + m * minuteMs,
      );
      const nextAt = candidates.find((t) => t > this.nowMsValue) as number;
      this.at(nextAt, feed);
    };
    this.at(this.nowMsValue, feed);
  }

  // ---- faults and actors ----

  private scheduleChurn(): void {
    const c = this.scenario.churn;
    const initial = this.scenario.workers.count;
    const duration = this.scenario.duration;
    const workerIndices = () => this.nodes.filter((n) => n.role === "worker").map((n) => n.index);
    // Joins: a Poisson process over the whole mesh.
    if (c.joinPerHour > 0 && initial > 0) {
      const mean = hourMs / (c.joinPerHour * initial);
      const join = () => {
        if (this.nowMsValue >= duration) return;
        const node = this.createWorkerNode(
          this.scenario.actors.liars > 0 && this.rng() < this.scenario.actors.liars ? "liar" : "honest",
          -1,
        );
        this.nodeCounts.joined = (this.nodeCounts.joined as number) + 1;
        this.bringOnline(node);
        this.at(this.nowMsValue + exponential(this.rng, mean), join);
      };
      this.at(exponential(this.rng, mean), join);
    }
    // Leaves and crashes: per-worker rates, drawn as one mesh-wide process that picks a live worker.
    const perWorker = (rate: number, act: (node: SimNode) => void) => {
      if (rate <= 0 || initial <= 0) return;
      const mean = hourMs / (rate * initial);
      const tick = () => {
        if (this.nowMsValue >= duration) return;
        const candidates = workerIndices();
        const node = this.nodes[candidates[pick(this.rng, candidates.length)] as number] as SimNode;
        if (node.online) act(node);
        this.at(this.nowMsValue + exponential(this.rng, mean), tick);
      };
      this.at(exponential(this.rng, mean), tick);
    };
    perWorker(c.leavePerHour, (node) => {
      this.nodeCounts.left = (this.nodeCounts.left as number) + 1;
      node.driver?.toWorker({ kind: "set-availability", availability: "offline" });
      this.takeOffline(node);
    });
    perWorker(c.crashPerHour, (node) => {
      const losesStore = this.rng() < c.crashLosesStore;
      this.nodeCounts.crashed = (this.nodeCounts.crashed as number) + 1;
      if (losesStore) this.nodeCounts.crashedLosingStore = (this.nodeCounts.crashedLosingStore as number) + 1;
      this.takeOffline(node);
      const back = Math.min(this.nowMsValue + c.restartAfter, duration);
      this.at(back, () => {
        if (node.online) return;
        // A lost store is a new volunteer under the same key: its sequence starts again from the clock's floor.
        if (losesStore) node.store = new SimStore();
        this.bringOnline(node);
      });
    });
  }

  private scheduleExodus(): void {
    this.scenario.exodus.forEach((exodus) => {
      const gone: SimNode[] = [];
      this.at(exodus.at, () => {
        for (const node of this.nodes) {
          if (node.role !== "worker" || !node.online || this.rng() >= exodus.fraction) continue;
          gone.push(node);
          node.driver?.toWorker({ kind: "set-availability", availability: "offline" });
          this.takeOffline(node, true);
        }
        this.nodeCounts.exodusDepartures = (this.nodeCounts.exodusDepartures as number) + gone.length;
      });
      this.at(exodus.back, () => {
        for (const node of gone) {
          if (node.online) continue;
          this.bringOnline(node);
          node.driver?.toWorker({ kind: "set-availability", availability: node.availability });
        }
      });
    });
  }

  private scheduleFaults(): void {
    const s = this.scenario;
    this.scheduleExodus();
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
        // The master kept its store: a new process carries on from it (restoreMaster, then the restart input).
        this.bringOnline(node);
        const pending = this.pendingSubmits.get(node.index) ?? [];
        this.pendingSubmits.delete(node.index);
        for (const deliver of pending) deliver();
      });
    });
  }

  private startActors(): void {
    const a = this.scenario.actors;
    for (let i = 0; i < a.spammers; i++) {
      const node = this.addNode("spammer", { topics: this.pickProjects() });
      node.spammer = new Spammer(this, node.index);
      this.nodeCounts.spammers = (this.nodeCounts.spammers as number) + 1;
    }
    for (let i = 0; i < a.forgers; i++) {
      const node = this.addNode("forger", { topics: [pick(this.rng, this.scenario.projects)] });
      startForger(this, node.index, node.topics[0] as number, i, a.forgeriesPerHour, this.scenario.duration);
      this.nodeCounts.forgers = (this.nodeCounts.forgers as number) + 1;
    }
    for (let i = 0; i < a.replayers; i++) {
      const topic = pick(this.rng, this.scenario.projects);
      const node = this.addNode("replayer", { topics: [topic] });
      node.replayer = new Replayer(this, node.index, topic);
      node.replayer.start(a.replaysPerHour, this.scenario.duration);
      this.nodeCounts.replayers = (this.nodeCounts.replayers as number) + 1;
    }
  }

  private scheduleSamples(endMs: number): void {
    const every = this.scenario.sampleInterval;
    const sample = () => {
      let liveWorkers = 0;
      for (const node of this.nodes) if (node.online && node.role === "worker") liveWorkers++;
      this.series.push({
        tMs: this.nowMsValue,
        openJobs: this.observer.openJobs,
        liveWorkers,
        ...this.observer.takeInterval(),
      });
      if (this.nowMsValue + every <= endMs) this.at(this.nowMsValue + every, sample);
    };
    this.at(0, sample);
  }

  // ---- the run ----

  private setUp(): void {
    const s = this.scenario;
    for (let p = 0; p < s.projects; p++) {
      const node = this.addNode("master", { topics: [p], project: p });
      this.masters.push(node.index);
      this.nodeCounts.masters = (this.nodeCounts.masters as number) + 1;
    }
    this.makeTrust();
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
    this.startActors();
    for (const node of this.nodes) this.bringOnline(node);
    this.scheduleArrivals();
    this.scheduleChurn();
    this.scheduleFaults();
  }

  run(options: RunOptions = {}): Metrics {
    const s = this.scenario;
    const endMs = s.duration + s.drain;
    this.setUp();
    this.scheduleSamples(endMs);
    let endedEarly = false;
    for (;;) {
      const next = this.queue.peekMs();
      if (next === null || next > endMs) break;
      if (next >= s.duration && this.arrivalsDone && this.observer.openJobs === 0 && this.pendingSubmitsCount() === 0) {
        endedEarly = true;
        break;
      }
      const event = this.queue.pop();
      if (event === undefined) break;
      this.nowMsValue = event.atMs;
      this.observer.at(this.nowMsValue);
      event.run();
      this.events++;
      if (options.onProgress !== undefined && (this.events & (progressEveryEventsCount - 1)) === 0)
        options.onProgress(this.nowMsValue, endMs, this.events);
    }
    if (!endedEarly) this.nowMsValue = Math.max(this.nowMsValue, Math.min(endMs, this.queue.peekMs() ?? endMs));
    return this.collect(endedEarly);
  }

  private pendingSubmitsCount(): number {
    let n = 0;
    for (const list of this.pendingSubmits.values()) n += list.length;
    return n;
  }

  private collect(endedEarly: boolean): Metrics {
    const s = this.scenario;
    const observer = this.observer;
    const lost = observer.checkEnded(this.nowMsValue, s.duration);
    const workers = this.nodes.filter((n) => n.role === "worker" && n.everOnline);
    const runs = workers.map((n) => n.runsStarted).sort((a, b) => a - b);
    const perProject = observer.perProject();
    const withJobs = perProject.filter((p) => p.submitted > 0);
    const totalMessages =
      (this.counters.gossipTransmissions as number) +
      (this.counters.gossipControl as number) +
      (this.counters.direct as number);
    const submitted = observer.submitted;
    return {
      scenario: s.name,
      seed: this.seed,
      signatures: s.signatures,
      settings: s,
      run: { simulatedMs: Math.round(this.nowMsValue), events: this.events, endedWhenAllJobsEnded: endedEarly },
      nodes: this.nodeCounts,
      jobs: {
        submitted,
        passed: observer.jobCounts.passed,
        failed: observer.jobCounts.failed,
        cancelled: observer.jobCounts.cancelled,
        lost,
        wrongResultsAccepted: observer.jobCounts.wrongResultsAccepted,
      },
      claimLatencyMs: observer.claim.summary(),
      timeToVerdictMs: observer.verdictLatency.summary(),
      bidsPerJob: round(observer.bids / Math.max(1, submitted)),
      messagesPerJob: round(totalMessages / Math.max(1, submitted)),
      messages: { ...this.counters, total: totalMessages },
      messagesByDomain: observer.byDomain,
      admissions: observer.admissions,
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
      security: observer.security,
      invariants: { checked: invariantNames, violations: observer.listedViolations() },
      series: this.series,
    };
  }
}

/** Runs one scenario with one seed. */
export function simulate(scenario: Scenario, seed: number = scenario.seed, options: RunOptions = {}): Metrics {
  return new Simulation(scenario, seed, options.sabotage).run(options);
}
