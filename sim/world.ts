/**
 * The simulated world: nodes on a virtual clock, each running the very shell
 * core a real node runs (jobs/driver.ts) with the simulator's ports: the
 * network and gossip models instead of libp2p, an in-memory store instead of
 * level (sim/store.ts), a timed stand-in for the sandbox, the virtual clock.
 * Messages are sealed and opened with crypto/ (unless signatures are "fast",
 * where the body travels as is, its times checked as crypto/ checks them, and
 * only a forger's tampering is marked). The observer watches what the network
 * carries.
 *
 * House rules (DESIGN.md, Rule 2): no protocol decision here. Gossip is routed
 * by jobs/routing.ts (adverts to masters, the rest to workers) and every
 * message is handed to the receiver's driver, whose admission decides.
 *
 * Determinism: one seeded generator draws everything in event order; events
 * at the same instant run in the order they were scheduled; no wall clock.
 */
import {
  BadSignatureError,
  checkTime,
  type Identity,
  identityFromSeed,
  openAnyEnvelope,
  type ProjectTrust,
  sealEnvelope,
} from "../crypto/index.ts";
import {
  type Admission,
  type Availability,
  type Channel,
  type DriverPorts,
  type ExecutionRequest,
  hexOf,
  keyOf,
  type MasterConfig,
  type MessageDomainName,
  messageDomains,
  messageRegistry,
  NodeDriver,
  type Opened,
  type Outcome,
  type StampedMessage,
  topicRoute,
  type WorkerState,
} from "../jobs/index.ts";
import type { Replayer, Spammer } from "./actors.ts";
import { GossipModel, type GossipParams, type Links } from "./gossip.ts";
import type { Observer } from "./observer.ts";
import { EventQueue } from "./queue.ts";
import { hashUnit, logNormalTable, normalTableCount, type Rng } from "./rng.ts";
import { Histogram } from "./stats.ts";
import { SimStore } from "./store.ts";

/** Virtual time 0 is this instant: a midnight UTC (2027-01-15), so local hours of the simulated day are easy to read. */
export const simEpochMs = 1_799_971_200_000;
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
  /** The wire a replayer sent again (set on the copy): a node that took it must not take it twice. */
  readonly original?: Wire;
  /** Receivers whose machine took this wire, kept by the observer while replayers act. */
  takenBy?: Set<object>;
  /** Opened once, then shared by every receiver (opening is a pure function of the bytes and the time). */
  opened?: Opened;
}

export type Role = "master" | "worker" | "spammer" | "forger" | "replayer";
export type Behaviour = "honest" | "liar" | "sybil";

export interface SimNode {
  readonly index: number;
  readonly role: Role;
  readonly key: string;
  readonly signer: Uint8Array;
  readonly identity: Identity | null;
  readonly topics: readonly number[];
  online: boolean;
  /** Bumped whenever the node goes down: what was fed to its last life is not fed twice. */
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

export type SimNodeFields = Partial<
  Pick<SimNode, "project" | "behaviour" | "group" | "speed" | "nightOnly" | "availability">
> & { topics: number[] };

/** What a run in the simulated sandbox reports, and after how long. */
export interface SimRun {
  readonly durationMs: number;
  readonly outcome: Outcome;
  readonly outputsDigest: string | null;
}

export interface NetworkParams {
  readonly medianLatency: number;
  readonly latencySigma: number;
  readonly bandwidthMbps: number;
  readonly loss: number;
}

export interface WorldSetup {
  readonly seed: number;
  readonly rng: Rng;
  readonly signatures: "real" | "fast";
  readonly network: NetworkParams;
  readonly gossip: GossipParams;
  /** Partitions that may come and go (activePartitions): a fraction of the nodes on the far side. */
  readonly partitions: readonly { readonly fraction: number; readonly mastersSplit: boolean }[];
  readonly observer: Observer;
  /** What a node's driver is made of when its process (re)starts. */
  driverSetup(node: SimNode): {
    readonly trust: ReadonlyMap<string, ProjectTrust>;
    readonly masters: readonly (Partial<MasterConfig> & { project: string })[];
    readonly worker: WorkerState | null;
  };
  /** The simulated sandbox: what a run on this node reports. */
  runOf(node: SimNode, run: ExecutionRequest): SimRun | null;
  /** The topic (project index) of a project id. */
  topicOf(project: string): number | undefined;
  /** The project id of a topic. */
  projectOf(topic: number): string;
  /** Told after a node's process starts again or its network returns. */
  onOnline?(node: SimNode): void;
  /** Told of every admission of every node (the observer hears them too). */
  onAdmitted?(node: SimNode, channel: Channel, admission: Admission, wire: Wire): void;
}

/** One gossip message arriving at one node: the most common event, so an object with a method rather than a closure. */
class GossipDelivery {
  readonly atMs: number;
  order = 0;
  private readonly world: SimWorld;
  private readonly receiver: SimNode;
  private readonly driver: NodeDriver<Wire> | null;
  private readonly topic: number;
  private readonly wire: Wire;
  constructor(atMs: number, world: SimWorld, receiver: SimNode, topic: number, wire: Wire) {
    this.atMs = atMs;
    this.world = world;
    this.receiver = receiver;
    this.driver = receiver.driver;
    this.topic = topic;
    this.wire = wire;
  }
  run(): void {
    this.world.deliverGossip(this.receiver, this.driver, this.topic, this.wire);
  }
}

export class SimWorld {
  readonly setup: WorldSetup;
  readonly rng: Rng;
  readonly queue = new EventQueue();
  readonly nodes: SimNode[] = [];
  readonly gossip: GossipModel;
  readonly activePartitions: number[] = [];
  readonly counters: Record<string, number> = {
    gossipTransmissions: 0,
    gossipDuplicates: 0,
    gossipControl: 0,
    direct: 0,
    directDropped: 0,
    deliveriesDropped: 0,
  };
  readonly gossipLatency = new Histogram();
  gossipPublishes = 0;
  gossipExpected = 0;
  gossipDelivered = 0;
  /** Virtual milliseconds since the start. */
  nowMs = 0;
  private readonly real: boolean;
  private readonly keyIndex = new Map<string, number>();
  private readonly mastersByTopic = new Map<number, number[]>();
  private readonly observer: Observer;
  private repairScheduled = false;
  private executionToken = 0;
  /** Each node's place on the latency ring, in [0, 1). */
  private positions = new Float64Array(1024);
  private readonly latencyTable: Float64Array;

  constructor(setup: WorldSetup) {
    this.setup = setup;
    this.rng = setup.rng;
    this.real = setup.signatures === "real";
    this.observer = setup.observer;
    this.latencyTable = logNormalTable(setup.network.latencySigma);
    const loss = setup.network.loss;
    const links: Links = {
      reachable: (a, b) => this.reachable(a, b),
      classOf: (node) => this.classOf(node),
      latencyMs: (a, b, bytes) => this.latencyMs(a, b, bytes),
      lost: () => loss > 0 && this.rng() < loss,
      lossy: loss > 0,
    };
    this.gossip = new GossipModel(setup.gossip, this.rng, links);
    this.gossip.onDirty = () => this.scheduleRepair();
  }

  absMs(): number {
    return simEpochMs + Math.floor(this.nowMs);
  }

  at(atMs: number, run: () => void): void {
    this.queue.push(Math.max(atMs, this.nowMs), run);
  }

  /** Runs events in order until `done` says so or the clock would pass `endMs`; true when `done` held. */
  runUntil(done: () => boolean, endMs: number): boolean {
    for (;;) {
      if (done()) return true;
      const next = this.queue.peekMs();
      if (next === null || next > endMs) return false;
      const event = this.queue.pop();
      if (event === undefined) return false;
      this.nowMs = event.atMs;
      this.observer.at(this.nowMs);
      event.run();
    }
  }

  // ---- network ----

  private sideOf(partition: number, node: number): number {
    const p = this.setup.partitions[partition];
    const n = this.nodes[node];
    if (p === undefined || n === undefined) return 0;
    if (n.role === "master" && !p.mastersSplit) return 0;
    return hashUnit(this.setup.seed, partition, node) < p.fraction ? 1 : 0;
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
    const net = this.setup.network;
    const d = Math.abs((this.positions[a] as number) - (this.positions[b] as number));
    const distance = Math.min(d, 1 - d) * 2;
    const median = net.medianLatency * (0.5 + distance);
    const transfer = (bytes * 8) / (net.bandwidthMbps * 1000);
    const spread = this.latencyTable[Math.floor(this.rng() * normalTableCount)] as number;
    return median * spread + transfer;
  }

  scheduleRepair(): void {
    if (this.repairScheduled) return;
    this.repairScheduled = true;
    const hb = this.setup.gossip.heartbeatMs;
    this.at((Math.floor(this.nowMs / hb) + 1) * hb, () => {
      this.repairScheduled = false;
      this.gossip.repair();
    });
  }

  // ---- nodes ----

  private keyFor(index: number): { key: string; identity: Identity | null } {
    if (!this.real) return { key: (index + 1).toString(16).padStart(64, "0"), identity: null };
    const seed = new Uint8Array(32);
    const view = new DataView(seed.buffer);
    view.setUint32(0, this.setup.seed);
    view.setUint32(4, index);
    view.setUint32(8, 0x51a1);
    const identity = identityFromSeed(seed);
    return { key: hexOf(identity.publicKey), identity };
  }

  addNode(role: Role, fields: SimNodeFields): SimNode {
    const index = this.nodes.length;
    const { key, identity } = this.keyFor(index);
    if (index >= this.positions.length) {
      const grown = new Float64Array(this.positions.length * 2);
      grown.set(this.positions);
      this.positions = grown;
    }
    this.positions[index] = hashUnit(this.setup.seed, 7, index);
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
    if (role === "master")
      for (const topic of node.topics) {
        const masters = this.mastersByTopic.get(topic);
        if (masters === undefined) this.mastersByTopic.set(topic, [index]);
        else masters.push(index);
      }
    return node;
  }

  indexOfKey(key: string): number | undefined {
    return this.keyIndex.get(key);
  }

  /** A node's process starts (or starts again) from its store: a new driver, then the restart input. */
  private boot(node: SimNode): void {
    const made = this.setup.driverSetup(node);
    const driver = new NodeDriver<Wire>({
      self: node.key,
      ports: this.portsFor(node),
      trust: made.trust,
      masters: made.masters,
      worker: made.worker,
      stored: node.store.load(),
    });
    node.driver = driver;
    driver.start();
  }

  /** The node's network comes up; a node whose process died starts a new one from its store. */
  bringOnline(node: SimNode): void {
    node.online = true;
    node.everOnline = true;
    for (const topic of node.topics) this.gossip.join(topic, node.index);
    if (node.role !== "master" && node.role !== "worker") return;
    if (node.driver === null) this.boot(node);
    else node.driver.wake();
    this.setup.onOnline?.(node);
  }

  /** The node's process dies (or, with `keepProcess`, only its network goes): events for it are dropped. */
  takeOffline(node: SimNode, keepProcess = false): void {
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
      startRun: (run) => this.execute(node, run),
      killRun: (runId) => {
        node.executing.delete(runId);
      },
      persist: (batch) => node.store.persist(batch),
      log: (event, fields) => this.observer.logged(event, fields),
      admitted: (channel, admission, wire) => {
        this.observer.admitted(node.index, node.store, admission, wire);
        this.setup.onAdmitted?.(node, channel, admission, wire);
      },
    };
  }

  /** A master's gossip passes the observer (which may sabotage it, in the checker's tests) before the network. */
  private publishFromNode(node: SimNode, topic: string, wire: Wire, message: StampedMessage): void {
    const topicIndex = this.setup.topicOf(topic);
    if (topicIndex === undefined) return;
    if (node.role !== "master") {
      this.observer.carried(message);
      this.publishWire(node.index, topicIndex, wire);
      return;
    }
    for (const out of this.observer.published(node.index, message))
      this.publishWire(node.index, topicIndex, out === message ? wire : this.wire(node.index, out));
  }

  private execute(node: SimNode, run: ExecutionRequest): void {
    const outcome = this.setup.runOf(node, run);
    if (outcome === null) return;
    node.runsStarted++;
    const token = ++this.executionToken;
    node.executing.set(run.runId, token);
    const driver = node.driver;
    this.at(this.nowMs + outcome.durationMs, () => {
      if (!node.online || node.driver !== driver || driver === null || node.executing.get(run.runId) !== token) return;
      node.executing.delete(run.runId);
      driver.runFinished({
        runId: run.runId,
        outcome: outcome.outcome,
        exitCode: outcome.outcome === "succeeded" ? 0 : 1,
        outputsDigest: outcome.outputsDigest,
        logDigest: null,
        summary: outcome.outcome,
        durationMs: outcome.durationMs,
      });
    });
  }

  // ---- messages ----

  /** Seals a message as node `from` (in fast mode, only its size is made up); a forger's is tampered. */
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

  /** The same signed message once more, sent by `from`. */
  replay(from: number, original: Wire): Wire {
    return { ...original, from, opened: undefined, original, takenBy: undefined };
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
      this.publishToMasters(from, topic, wire);
      return;
    }
    const out = this.gossip.publish(topic, from, this.nowMs, wire.size);
    this.counters.gossipTransmissions = (this.counters.gossipTransmissions as number) + out.transmissions;
    this.counters.gossipDuplicates = (this.counters.gossipDuplicates as number) + out.duplicates;
    this.counters.gossipControl = (this.counters.gossipControl as number) + out.control;
    this.observer.interval.messages += out.transmissions + out.control;
    this.gossipExpected += out.subscribers;
    this.gossipDelivered += out.deliveries.length;
    for (const { node, atMs } of out.deliveries) {
      this.gossipLatency.add(atMs - this.nowMs);
      const receiver = this.nodes[node] as SimNode;
      // Only nodes whose machine takes it (and the actors that listen) get an event; the rest forward it, counted above.
      if (receiver.role === "master" || receiver.role === "forger") continue;
      this.queue.pushEvent(new GossipDelivery(Math.max(atMs, this.nowMs), this, receiver, topic, wire));
    }
  }

  /** An advert: flooded on the topic (counted), taken by the topic's masters only (see GossipModel.publishTo). */
  private publishToMasters(from: number, topic: number, wire: Wire): void {
    for (const index of this.mastersByTopic.get(topic) ?? []) {
      const master = this.nodes[index] as SimNode;
      const out = this.gossip.publishTo(topic, from, master.index, this.nowMs, wire.size);
      this.counters.gossipTransmissions = (this.counters.gossipTransmissions as number) + out.transmissions;
      this.counters.gossipDuplicates = (this.counters.gossipDuplicates as number) + out.duplicates;
      this.observer.interval.messages += out.transmissions;
      if (out.atMs === null) continue;
      this.gossipLatency.add(out.atMs - this.nowMs);
      this.queue.pushEvent(new GossipDelivery(Math.max(out.atMs, this.nowMs), this, master, topic, wire));
    }
  }

  /** A direct message: dropped when the receiver is unreachable, down by arrival, or the network loses it. */
  sendWire(from: number, to: number, wire: Wire): void {
    this.counters.direct = (this.counters.direct as number) + 1;
    this.observer.interval.messages++;
    const receiver = this.nodes[to];
    if (
      receiver === undefined ||
      !this.reachable(from, to) ||
      (this.setup.network.loss > 0 && this.rng() < this.setup.network.loss)
    ) {
      this.counters.directDropped = (this.counters.directDropped as number) + 1;
      return;
    }
    const driver = receiver.driver;
    const peer = (this.nodes[from] as SimNode).key;
    this.at(this.nowMs + this.latencyMs(from, to, wire.size), () => {
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
    if (driver !== null) driver.receive({ kind: "topic", topic: this.setup.projectOf(topic) }, wire);
    receiver.spammer?.heard(wire, topic);
    receiver.replayer?.heard(wire);
  }
}
