/**
 * The simulated world: nodes on a virtual clock, each running the very shell
 * core a real node runs (jobs/driver.ts) with the simulator's ports: the
 * network and gossip models instead of libp2p, an in-memory store instead of
 * level (sim/store.ts), a timed stand-in for the sandbox, the virtual clock.
 * The pieces: the network's shape (sim/network.ts), sealing and opening
 * messages (sim/wire.ts), carrying them between nodes (sim/carrier.ts), and
 * each node's process on the simulator's ports (sim/host.ts). Here are the
 * clock, the nodes and their lives. The observer watches what the network
 * carries.
 *
 * House rules (DESIGN.md, Rule 2): no protocol decision here. What travels on
 * a topic and what goes directly is jobs/routing.ts's to say, and every
 * message is handed to the receiver's driver, whose admission decides.
 *
 * Determinism: one seeded generator draws everything in event order; events
 * at the same instant run in the order they were scheduled; no wall clock.
 */
import type { Identity, ProjectTrust } from "../crypto/index.ts";
import {
  type Admission,
  type Availability,
  type Channel,
  type ExecutionRequest,
  keyOf,
  type MasterConfig,
  type NodeDriver,
  type Outcome,
  type StampedMessage,
  type WorkerState,
} from "../jobs/index.ts";
import type { Replayer, Spammer, Throwaway } from "./actors.ts";
import { Carrier } from "./carrier.ts";
import { GossipModel, type GossipParams } from "./gossip.ts";
import { NodeHost } from "./host.ts";
import { Network, type NetworkParams, type PartitionParams } from "./network.ts";
import type { Observer } from "./observer.ts";
import { EventQueue, simEpochMs } from "./queue.ts";
import type { Rng } from "./rng.ts";
import { SimStore } from "./store.ts";
import { type Wire, Wires } from "./wire.ts";

export { simEpochMs } from "./queue.ts";
export type { Wire } from "./wire.ts";

export type Role = "master" | "worker" | "spammer" | "forger" | "replayer" | "throwaway";
/**
 * What a worker reports: the truth; its own wrong digest (liar); its group's wrong digest from the first run
 * (sybil); its group's wrong digest once it has run `patience` jobs of the project honestly (colluder).
 */
export type Behaviour = "honest" | "liar" | "sybil" | "colluder";

export interface SimNode {
  readonly index: number;
  readonly role: Role;
  readonly key: string;
  readonly signer: Uint8Array;
  readonly identity: Identity | null;
  readonly topics: readonly number[];
  /** The network prefix (an IPv4 /24, as text) of the node's address: what a direct message's receiver sees. */
  readonly prefix: string;
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
  readonly executing: Map<string, { readonly token: number; readonly startMs: number }>;
  runsStarted: number;
  everOnline: boolean;
  spammer: Spammer<Wire> | null;
  replayer: Replayer<Wire> | null;
  throwaway: Throwaway<Wire> | null;
}

export type SimNodeFields = Partial<
  Pick<SimNode, "project" | "behaviour" | "group" | "speed" | "nightOnly" | "availability">
> & { topics: number[]; prefix: string };

/** What a run in the simulated sandbox reports, and after how long. */
export interface SimRun {
  readonly durationMs: number;
  readonly outcome: Outcome;
  readonly outputsDigest: string | null;
  /**
   * Told once the run has started, with a way to end it `afterMs` from then with another report instead (while it
   * still runs): a colluder that lies only together with a partner of its group uses it when one joins.
   */
  readonly started?: (finishEarly: (afterMs: number, report: Omit<SimRun, "started">) => void) => void;
}

export interface WorldSetup {
  readonly seed: number;
  readonly rng: Rng;
  readonly signatures: "real" | "fast";
  readonly network: NetworkParams;
  readonly gossip: GossipParams;
  /** Partitions that may come and go (activePartitions): a fraction of the nodes on the far side. */
  readonly partitions: readonly PartitionParams[];
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

export class SimWorld {
  readonly setup: WorldSetup;
  readonly rng: Rng;
  readonly queue = new EventQueue();
  readonly nodes: SimNode[] = [];
  readonly observer: Observer;
  readonly network: Network;
  readonly wires: Wires;
  readonly gossip: GossipModel;
  readonly carrier: Carrier;
  /** Virtual milliseconds since the start. */
  nowMs = 0;
  private readonly host: NodeHost;
  private readonly keyIndex = new Map<string, number>();
  private repairScheduled = false;
  /** Slot time runs took on workers, ended runs only. */
  busySlotMs = 0;
  /** Time workers spent online in spans that have ended (workerOnlineMs adds those still open). */
  private closedWorkerOnlineMs = 0;
  /** When each worker online now came online. */
  private readonly workerOnlineSince = new Map<number, number>();

  constructor(setup: WorldSetup) {
    this.setup = setup;
    this.rng = setup.rng;
    this.observer = setup.observer;
    this.network = new Network(setup.seed, this.rng, setup.network, setup.partitions, this.nodes);
    this.wires = new Wires(setup.seed, setup.signatures === "real", this.nodes);
    this.gossip = new GossipModel(setup.gossip, this.rng, this.network.links());
    this.gossip.onDirty = () => this.scheduleRepair();
    this.carrier = new Carrier(this);
    this.host = new NodeHost(this);
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

  /** The gossip mesh is repaired at the next heartbeat after it changed. */
  scheduleRepair(): void {
    if (this.repairScheduled) return;
    this.repairScheduled = true;
    const hb = this.setup.gossip.heartbeatMs;
    this.at((Math.floor(this.nowMs / hb) + 1) * hb, () => {
      this.repairScheduled = false;
      this.gossip.repair();
    });
  }

  addNode(role: Role, fields: SimNodeFields): SimNode {
    const index = this.nodes.length;
    const { key, identity } = this.wires.keysOf(index);
    this.network.place(index);
    const node: SimNode = {
      index,
      role,
      key,
      signer: keyOf(key),
      identity,
      topics: fields.topics,
      prefix: fields.prefix,
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
      throwaway: null,
    };
    this.nodes.push(node);
    this.keyIndex.set(key, index);
    return node;
  }

  /** A run on the node ends (finished, killed, or its node gone): its slot time is counted. */
  endRun(node: SimNode, runId: string): void {
    const run = node.executing.get(runId);
    if (run === undefined) return;
    this.busySlotMs += this.nowMs - run.startMs;
    node.executing.delete(runId);
  }

  /** Time all workers together spent online up to now: what per-worker rates are taken over. */
  workerOnlineMs(): number {
    let open = 0;
    for (const since of this.workerOnlineSince.values()) open += this.nowMs - since;
    return this.closedWorkerOnlineMs + open;
  }

  indexOfKey(key: string): number | undefined {
    return this.keyIndex.get(key);
  }

  /** The node's network comes up; a node whose process died starts a new one from its store. */
  bringOnline(node: SimNode): void {
    node.online = true;
    node.everOnline = true;
    if (node.role === "worker" && !this.workerOnlineSince.has(node.index))
      this.workerOnlineSince.set(node.index, this.nowMs);
    for (const topic of node.topics) this.gossip.join(topic, node.index);
    if (node.role !== "master" && node.role !== "worker") return;
    if (node.driver === null) this.host.boot(node);
    else node.driver.wake();
    this.setup.onOnline?.(node);
  }

  /** The node's process dies (or, with `keepProcess`, only its network goes): events for it are dropped. */
  takeOffline(node: SimNode, keepProcess = false): void {
    node.online = false;
    const since = this.workerOnlineSince.get(node.index);
    if (since !== undefined) {
      this.closedWorkerOnlineMs += this.nowMs - since;
      this.workerOnlineSince.delete(node.index);
    }
    node.epoch++;
    for (const runId of [...node.executing.keys()]) this.endRun(node, runId);
    if (!keepProcess) node.driver = null;
    for (const topic of node.topics) this.gossip.leave(topic, node.index);
    this.network.forget(node.index);
  }

  /** Seals a message as node `from` (see Wires.seal). */
  wire(from: number, message: StampedMessage, tampered = false): Wire {
    return this.wires.seal(from, message, tampered);
  }

  /** The same signed message once more, sent by `from`. */
  replay(from: number, original: Wire): Wire {
    return this.wires.replay(from, original);
  }

  /** The key that signed the wire, opened now; null if unreadable. */
  signerOf(wire: Wire): string | null {
    return this.wires.signerOf(wire, this.absMs());
  }

  /** Gossip on a topic (see Carrier.publish). */
  publishWire(from: number, topic: number, wire: Wire): void {
    this.carrier.publish(from, topic, wire);
  }

  /** A direct message (see Carrier.send). */
  sendWire(from: number, to: number, wire: Wire): void {
    this.carrier.send(from, to, wire);
  }
}
