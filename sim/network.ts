/**
 * The simulated network's shape: nodes sit on a latency ring (a link's median
 * latency grows with their distance, each message a fresh log-normal draw
 * plus its transfer time), messages are lost with a fixed probability, and
 * each active partition cuts every link across it. These are the links the
 * gossip model (sim/gossip.ts) and direct messages travel.
 *
 * A fraction of the workers (`behindNat`) sit behind NAT: nobody can dial them. Relays are modelled at the connection
 * level only: such a worker holds a reservation on one master (its relay, a standing connection); a direct message to
 * it from a node it has no connection with goes through that relay (two hops of latency and transfer), until the
 * worker itself sends to that node (it dials out, and the connection then carries both ways). No data or time limit,
 * no hole punching.
 */
import type { Links } from "./gossip.ts";
import { hashUnit, logNormalTable, normalTableCount, type Rng } from "./rng.ts";

export interface NetworkParams {
  readonly medianLatency: number;
  readonly latencySigma: number;
  readonly bandwidthMbps: number;
  readonly loss: number;
  /** Fraction of the workers behind NAT (unreachable by incoming dials). */
  readonly behindNat?: number;
}

/** The hash stream that picks which workers are behind NAT. */
const natStream = 11;
/** The hash stream that picks each NATed worker's relay among the masters. */
const relayStream = 12;

/** A partition that may come and go: a fraction of the nodes on the far side, the masters too if `mastersSplit`. */
export interface PartitionParams {
  readonly fraction: number;
  readonly mastersSplit: boolean;
}

/** What the network knows of a node. */
export interface NetworkNode {
  readonly role: string;
  readonly online: boolean;
}

export class Network {
  /** The partitions in force, by their index in the scenario's list. */
  readonly activePartitions: number[] = [];
  private readonly seed: number;
  private readonly rng: Rng;
  private readonly params: NetworkParams;
  private readonly partitions: readonly PartitionParams[];
  /** The world's nodes, by index (the list grows as nodes are added). */
  private readonly nodes: readonly NetworkNode[];
  /** Each node's place on the latency ring, in [0, 1). */
  private positions = new Float64Array(1024);
  private readonly latencyTable: Float64Array;
  /** Node pairs (ordered low, high) with a connection that a NATed one of them opened by dialling out. */
  private readonly connected = new Set<number>();
  /** The masters' indices, as of when the world had `count` nodes. */
  private mastersOf: { count: number; masters: number[] } = { count: -1, masters: [] };

  constructor(
    seed: number,
    rng: Rng,
    params: NetworkParams,
    partitions: readonly PartitionParams[],
    nodes: readonly NetworkNode[],
  ) {
    this.seed = seed;
    this.rng = rng;
    this.params = params;
    this.partitions = partitions;
    this.nodes = nodes;
    this.latencyTable = logNormalTable(params.latencySigma);
  }

  /** The links as the gossip model sees them. */
  links(): Links {
    const loss = this.params.loss;
    return {
      reachable: (a, b) => this.reachable(a, b),
      classOf: (node) => this.classOf(node),
      latencyMs: (a, b, bytes) => this.latencyMs(a, b, bytes),
      lost: () => this.lost(),
      lossy: loss > 0,
    };
  }

  /** Puts node `index` on the ring: a place drawn from the seed, not from the generator. */
  place(index: number): void {
    if (index >= this.positions.length) {
      const grown = new Float64Array(this.positions.length * 2);
      grown.set(this.positions);
      this.positions = grown;
    }
    this.positions[index] = hashUnit(this.seed, 7, index);
  }

  split(partition: number): void {
    this.activePartitions.push(partition);
  }

  heal(partition: number): void {
    const i = this.activePartitions.indexOf(partition);
    if (i >= 0) this.activePartitions.splice(i, 1);
  }

  private sideOf(partition: number, node: number): number {
    const p = this.partitions[partition];
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

  /** Which side of every active partition a node is on, as one number; -1 when it is offline. */
  private classOf(node: number): number {
    if (!(this.nodes[node]?.online ?? false)) return -1;
    let cls = 0;
    for (const p of this.activePartitions) cls = cls * 2 + this.sideOf(p, node);
    return cls;
  }

  /** Per-link latency: a link's median grows with the nodes' distance on the ring; each message is a fresh draw. */
  latencyMs(a: number, b: number, bytes: number): number {
    const net = this.params;
    const d = Math.abs((this.positions[a] as number) - (this.positions[b] as number));
    const distance = Math.min(d, 1 - d) * 2;
    const median = net.medianLatency * (0.5 + distance);
    const transfer = (bytes * 8) / (net.bandwidthMbps * 1000);
    const spread = this.latencyTable[Math.floor(this.rng() * normalTableCount)] as number;
    return median * spread + transfer;
  }

  /** Whether a node is a worker behind NAT: drawn from the seed, not from the generator. */
  behindNat(node: number): boolean {
    const fraction = this.params.behindNat ?? 0;
    return fraction > 0 && this.nodes[node]?.role === "worker" && hashUnit(this.seed, natStream, node) < fraction;
  }

  /** The master a NATed worker holds its relay reservation on (the masters are the relays), or null when none is. */
  relayOf(node: number): number | null {
    if (this.mastersOf.count !== this.nodes.length) {
      const masters: number[] = [];
      for (let index = 0; index < this.nodes.length; index++)
        if (this.nodes[index]?.role === "master") masters.push(index);
      this.mastersOf = { count: this.nodes.length, masters };
    }
    const { masters } = this.mastersOf;
    if (masters.length === 0) return null;
    return masters[Math.floor(hashUnit(this.seed, relayStream, node) * masters.length)] as number;
  }

  /**
   * How a direct message from `from` reaches `to`: null when directly (a dial, or a connection open), else the relay
   * it goes through. Sending opens a connection when the sender is behind NAT and the receiver is not: it dialled out.
   */
  routeOf(from: number, to: number): number | null {
    const key = from < to ? from * 2 ** 26 + to : to * 2 ** 26 + from;
    // A NATed sender dials out; it cannot dial another NATed node, which it reaches through that one's relay.
    if (this.behindNat(from) && !this.behindNat(to)) this.connected.add(key);
    if (!this.behindNat(to) || this.connected.has(key)) return null;
    const relay = this.relayOf(to);
    return relay === null || relay === from ? null : relay;
  }

  /** A node went down: the connections NATed workers had opened with it are gone (they dial again when they send). */
  forget(node: number): void {
    if ((this.params.behindNat ?? 0) === 0) return;
    for (const key of this.connected) {
      const low = Math.floor(key / 2 ** 26);
      if (low === node || key - low * 2 ** 26 === node) this.connected.delete(key);
    }
  }

  /** Whether the network loses one message (a draw only when it loses any). */
  lost(): boolean {
    const loss = this.params.loss;
    return loss > 0 && this.rng() < loss;
  }
}
