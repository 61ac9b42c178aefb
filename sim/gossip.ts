/**
 * A model of gossipsub on one topic per project, close enough to predict who
 * gets a message and when, cheap enough for ten thousand nodes:
 *
 * - Mesh: each subscriber keeps about `meshDegree` peers (symmetric links);
 *   at a heartbeat a node below `meshDegreeLow` grafts reachable peers up to
 *   `meshDegree`, one above `meshDegreeHigh` prunes down to it, and links to
 *   peers that left or sit across a partition are dropped.
 * - Eager push: a message floods along mesh links; each node forwards it once,
 *   on first receipt, to its mesh peers but the one it came from (the
 *   seen-cache turns later copies into counted duplicates). First arrival
 *   times are computed at publish time (Dijkstra over the mesh, each hop a
 *   fresh latency draw, each hop lost with the network's loss probability),
 *   so a publish costs one pass over the mesh, not one event per hop.
 * - Lazy pull: a node the push missed can learn of the message from IHAVE
 *   gossip. At each of `historyGossip` heartbeats after the publish, every
 *   holder sends IHAVE to `lazyDegree` random non-mesh peers; a node that one
 *   reaches (probability 1 - (1 - q)^h for h holders it can reach) asks with
 *   IWANT and gets the message three legs later.
 *
 * Not modelled: peer scoring, fanout (every publisher here is subscribed),
 * flood-publish, backoff timers, message batching in one RPC.
 */
import { pick, type Rng } from "./rng.ts";

export interface GossipParams {
  readonly meshDegree: number;
  readonly meshDegreeLow: number;
  readonly meshDegreeHigh: number;
  readonly lazyDegree: number;
  readonly heartbeatMs: number;
  readonly historyGossip: number;
  readonly seenTtlMs: number;
}

/** gossipsub's own defaults (constants.ts of @libp2p/gossipsub): scenarios start from them, the libp2p check uses them. */
export const gossipsubDefaults: GossipParams = {
  meshDegree: 6,
  meshDegreeLow: 4,
  meshDegreeHigh: 12,
  lazyDegree: 6,
  heartbeatMs: 1000,
  historyGossip: 3,
  seenTtlMs: 120_000,
};

/** What the model asks of the network it runs on. */
export interface Links {
  /** Whether a and b can talk now: both online and on the same side of every partition. */
  reachable(a: number, b: number): boolean;
  /** A reachability class: nodes with the same class can reach each other. */
  classOf(node: number): number;
  /** One delivery time from a to b for `bytes` bytes (a fresh draw). */
  latencyMs(a: number, b: number, bytes: number): number;
  /** Whether one transmission is lost (a fresh draw). */
  lost(): boolean;
  /** Whether `lost` can ever say yes. */
  readonly lossy: boolean;
}

export interface Delivery {
  readonly node: number;
  readonly atMs: number;
  /** Hops from the publisher on the path that got there first (a lazy pull counts as one hop more than its holder). */
  readonly hops: number;
}

export interface PublishOutcome {
  /** Every subscriber but the publisher that gets the message, by first arrival. */
  readonly deliveries: Delivery[];
  /** Subscribers (other than the publisher) when it was published. */
  readonly subscribers: number;
  /** Copies sent over mesh links, duplicates included, plus IWANT answers. */
  readonly transmissions: number;
  /** Copies that arrived at a node that had the message already. */
  readonly duplicates: number;
  /** IHAVE and IWANT control messages attributed to this message. */
  readonly control: number;
}

/** Attempts to find a graftable peer before a repair gives up until the next heartbeat. */
export const maxGraftTriesCount = 64;

class Topic {
  readonly members: number[] = [];
  readonly position = new Map<number, number>();
  readonly mesh = new Map<number, number[]>();
}

function removeFrom(list: number[], value: number): void {
  const index = list.indexOf(value);
  if (index >= 0) {
    list[index] = list[list.length - 1] as number;
    list.pop();
  }
}

/**
 * The mesh of each topic and its upkeep: who is subscribed, who is linked to
 * whom, and the grafting and pruning that keep degrees in bounds as nodes
 * join, leave and are cut off.
 */
class GossipMesh {
  readonly params: GossipParams;
  protected readonly rng: Rng;
  protected readonly links: Links;
  protected readonly topics = new Map<number, Topic>();
  private readonly dirty = new Map<number, Set<number>>();
  protected maxNode = -1;
  /** Called when a repair is wanted: the shell runs `repair()` at its next heartbeat. */
  onDirty: () => void = () => undefined;

  constructor(params: GossipParams, rng: Rng, links: Links) {
    this.params = params;
    this.rng = rng;
    this.links = links;
  }

  private topic(id: number): Topic {
    let topic = this.topics.get(id);
    if (topic === undefined) {
      topic = new Topic();
      this.topics.set(id, topic);
    }
    return topic;
  }

  subscribers(topicId: number): readonly number[] {
    return this.topics.get(topicId)?.members ?? [];
  }

  meshOf(topicId: number, node: number): readonly number[] {
    return this.topics.get(topicId)?.mesh.get(node) ?? [];
  }

  private markDirty(topicId: number, node: number): void {
    let set = this.dirty.get(topicId);
    if (set === undefined) {
      set = new Set();
      this.dirty.set(topicId, set);
    }
    set.add(node);
    this.onDirty();
  }

  private link(topic: Topic, topicId: number, a: number, b: number): void {
    (topic.mesh.get(a) as number[]).push(b);
    const peers = topic.mesh.get(b) as number[];
    peers.push(a);
    if (peers.length > this.params.meshDegreeHigh) this.markDirty(topicId, b);
  }

  private unlink(topic: Topic, topicId: number, a: number, b: number): void {
    const pa = topic.mesh.get(a);
    const pb = topic.mesh.get(b);
    if (pa !== undefined) removeFrom(pa, b);
    if (pb !== undefined) {
      removeFrom(pb, a);
      if (pb.length < this.params.meshDegreeLow) this.markDirty(topicId, b);
    }
  }

  /** Grafts reachable peers to `node` until it has `meshDegree`. */
  private graft(topic: Topic, topicId: number, node: number): void {
    const peers = topic.mesh.get(node) as number[];
    const n = topic.members.length;
    for (let tries = 0; peers.length < this.params.meshDegree && tries < maxGraftTriesCount; tries++) {
      if (n <= 1) return;
      const candidate = topic.members[pick(this.rng, n)] as number;
      if (candidate === node || peers.includes(candidate) || !this.links.reachable(node, candidate)) continue;
      this.link(topic, topicId, node, candidate);
    }
  }

  join(topicId: number, node: number): void {
    if (node > this.maxNode) this.maxNode = node;
    const topic = this.topic(topicId);
    if (topic.position.has(node)) return;
    topic.position.set(node, topic.members.length);
    topic.members.push(node);
    topic.mesh.set(node, []);
    this.graft(topic, topicId, node);
  }

  leave(topicId: number, node: number): void {
    const topic = this.topics.get(topicId);
    const index = topic?.position.get(node);
    if (topic === undefined || index === undefined) return;
    const last = topic.members.pop() as number;
    if (last !== node) {
      topic.members[index] = last;
      topic.position.set(last, index);
    }
    topic.position.delete(node);
    for (const peer of [...(topic.mesh.get(node) ?? [])]) this.unlink(topic, topicId, node, peer);
    topic.mesh.delete(node);
  }

  /** A partition began: links across it die; both sides repair at the next heartbeat. */
  cutUnreachable(): void {
    for (const [topicId, topic] of this.topics)
      for (const node of topic.members)
        for (const peer of [...(topic.mesh.get(node) as number[])])
          if (!this.links.reachable(node, peer)) this.unlink(topic, topicId, node, peer);
  }

  /** A partition healed: some nodes graft one peer anywhere (gossipsub's opportunistic grafting), the rest is gossip. */
  reconnect(): void {
    for (const [topicId, topic] of this.topics) {
      const n = topic.members.length;
      for (const node of topic.members) {
        const peers = topic.mesh.get(node) as number[];
        if (peers.length >= this.params.meshDegreeHigh || this.rng() >= 0.5 || n <= 1) continue;
        const candidate = topic.members[pick(this.rng, n)] as number;
        if (candidate !== node && !peers.includes(candidate) && this.links.reachable(node, candidate))
          this.link(topic, topicId, node, candidate);
      }
    }
  }

  hasDirty(): boolean {
    return this.dirty.size > 0;
  }

  /** The heartbeat's mesh maintenance, for the nodes whose mesh changed since the last one. */
  repair(): void {
    const work = [...this.dirty.entries()].sort((a, b) => a[0] - b[0]);
    this.dirty.clear();
    for (const [topicId, nodes] of work) {
      const topic = this.topics.get(topicId);
      if (topic === undefined) continue;
      for (const node of [...nodes].sort((a, b) => a - b)) {
        const peers = topic.mesh.get(node);
        if (peers === undefined) continue;
        for (const peer of [...peers]) if (!this.links.reachable(node, peer)) this.unlink(topic, topicId, node, peer);
        if (peers.length < this.params.meshDegreeLow) this.graft(topic, topicId, node);
        while (peers.length > this.params.meshDegreeHigh) {
          const peer = peers[pick(this.rng, peers.length)] as number;
          this.unlink(topic, topicId, node, peer);
        }
      }
    }
  }
}

/** The model: the mesh of GossipMesh, and who gets a message published on it, and when. */
export class GossipModel extends GossipMesh {
  private readonly scratch = new PublishScratch();

  /** Publishes a message of `bytes` bytes from `from` at `nowMs`: who gets it and when. */
  publish(topicId: number, from: number, nowMs: number, bytes: number): PublishOutcome {
    const topic = this.topics.get(topicId);
    if (topic === undefined) return { deliveries: [], subscribers: 0, transmissions: 0, duplicates: 0, control: 0 };
    const scratch = this.scratch;
    scratch.ensure(this.maxNode);
    const stamp = ++scratch.generation;
    const pushed = pushAlongMesh(topic, this.links, scratch, stamp, from, nowMs, bytes);
    // Lazy pull for the subscribers the push missed.
    const pulled = pullLazily(topic, this.links, this.rng, this.params, scratch, stamp, pushed.reached, nowMs, bytes);
    const deliveries: Delivery[] = [];
    for (const node of pushed.reached)
      if (node !== from)
        deliveries.push({ node, atMs: scratch.arrivalAt[node] as number, hops: scratch.hopsOf[node] as number });
    deliveries.sort((a, b) => a.atMs - b.atMs || a.node - b.node);
    return {
      deliveries,
      subscribers: topic.position.has(from) ? topic.members.length - 1 : topic.members.length,
      transmissions: pushed.transmissions + pulled.transmissions,
      duplicates: pushed.duplicates,
      control: pulled.control,
    };
  }
}

/**
 * Arrays indexed by node that every publish reuses: stamped with the
 * publish's generation rather than cleared, so a publish costs what it
 * touches, not the size of the mesh.
 */
class PublishScratch {
  generation = 0;
  /** The node has the message (it was pushed or pulled to it). */
  seenStamp = new Uint32Array(0);
  /** The node has forwarded the message to its mesh peers. */
  doneStamp = new Uint32Array(0);
  /** When the message first reached the node. */
  arrivalAt = new Float64Array(0);
  /** The peer the first copy came from (-1 for the publisher). */
  via = new Int32Array(0);
  /** Hops from the publisher on the path that got there first. */
  hopsOf = new Int32Array(0);

  /** Makes every array long enough for nodes up to maxNode. */
  ensure(maxNode: number): void {
    if (this.seenStamp.length > maxNode) return;
    const size = Math.max(1024, (maxNode + 1) * 2);
    const grow = <T extends Uint32Array | Float64Array | Int32Array>(old: T, make: (n: number) => T): T => {
      const next = make(size);
      next.set(old as never);
      return next;
    };
    this.seenStamp = grow(this.seenStamp, (n) => new Uint32Array(n));
    this.doneStamp = grow(this.doneStamp, (n) => new Uint32Array(n));
    this.arrivalAt = grow(this.arrivalAt, (n) => new Float64Array(n));
    this.via = grow(this.via, (n) => new Int32Array(n));
    this.hopsOf = grow(this.hopsOf, (n) => new Int32Array(n));
  }
}

/** Arrivals to process, earliest first: a binary min-heap of [time, node] in two parallel arrays. */
class ArrivalHeap {
  private readonly times: number[] = [];
  private readonly nodes: number[] = [];

  get size(): number {
    return this.times.length;
  }

  push(t: number, node: number): void {
    const times = this.times;
    const nodes = this.nodes;
    let i = times.length;
    times.push(t);
    nodes.push(node);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if ((times[parent] as number) <= t) break;
      times[i] = times[parent] as number;
      nodes[i] = nodes[parent] as number;
      i = parent;
    }
    times[i] = t;
    nodes[i] = node;
  }

  /** The time of the earliest arrival (the heap is not empty). */
  firstTime(): number {
    return this.times[0] as number;
  }

  /** Removes the earliest arrival (the heap is not empty) and returns its node. */
  pop(): number {
    const times = this.times;
    const nodes = this.nodes;
    const node = nodes[0] as number;
    const lastT = times.pop() as number;
    const lastN = nodes.pop() as number;
    const n = times.length;
    if (n > 0) {
      let i = 0;
      for (;;) {
        const left = 2 * i + 1;
        if (left >= n) break;
        const right = left + 1;
        const child = right < n && (times[right] as number) < (times[left] as number) ? right : left;
        if ((times[child] as number) >= lastT) break;
        times[i] = times[child] as number;
        nodes[i] = nodes[child] as number;
        i = child;
      }
      times[i] = lastT;
      nodes[i] = lastN;
    }
    return node;
  }
}

/**
 * The eager push: the message floods the topic's mesh from `from`, each node
 * forwarding it once, on first receipt, to its mesh peers but its source;
 * first arrivals in order of time (Dijkstra, each hop a loss draw and a fresh
 * latency draw). Returns the nodes reached (the publisher first) and the
 * copies sent and duplicated; `scratch` holds when and by how many hops each
 * was reached.
 */
function pushAlongMesh(
  topic: Topic,
  links: Links,
  scratch: PublishScratch,
  stamp: number,
  from: number,
  nowMs: number,
  bytes: number,
): { reached: number[]; transmissions: number; duplicates: number } {
  const { seenStamp: seen, doneStamp, arrivalAt, via, hopsOf } = scratch;
  const reached: number[] = [from];
  seen[from] = stamp;
  arrivalAt[from] = nowMs;
  via[from] = -1;
  hopsOf[from] = 0;
  const heap = new ArrivalHeap();
  heap.push(nowMs, from);
  let transmissions = 0;
  let duplicates = 0;
  const lossy = links.lossy;
  while (heap.size > 0) {
    const t = heap.firstTime();
    const node = heap.pop();
    if (doneStamp[node] === stamp) continue;
    doneStamp[node] = stamp;
    const source = via[node];
    const peers = topic.mesh.get(node);
    if (peers === undefined) continue;
    for (let k = 0; k < peers.length; k++) {
      const peer = peers[k] as number;
      if (peer === source) continue;
      transmissions++;
      if (doneStamp[peer] === stamp) {
        duplicates++;
        continue;
      }
      // Mesh links only ever join reachable nodes (leaving and partitions cut them at once): only loss can stop a hop.
      if (lossy && links.lost()) continue;
      const at = t + links.latencyMs(node, peer, bytes);
      if (seen[peer] !== stamp) {
        seen[peer] = stamp;
        reached.push(peer);
        arrivalAt[peer] = at;
        via[peer] = node;
        hopsOf[peer] = (hopsOf[node] as number) + 1;
        heap.push(at, peer);
      } else {
        duplicates++;
        if (at < (arrivalAt[peer] as number)) {
          arrivalAt[peer] = at;
          via[peer] = node;
          hopsOf[peer] = (hopsOf[node] as number) + 1;
          heap.push(at, peer);
        }
      }
    }
  }
  return { reached, transmissions, duplicates };
}

/**
 * The lazy pull: at each of `historyGossip` heartbeats, every holder sends
 * IHAVE to `lazyDegree` random non-mesh peers; a member the push missed that
 * one reaches asks with IWANT and gets the message three legs later. Adds the
 * members it reaches to `reached` (and their arrival and hops to `scratch`);
 * returns the copies sent and the control messages.
 */
function pullLazily(
  topic: Topic,
  links: Links,
  rng: Rng,
  params: GossipParams,
  scratch: PublishScratch,
  stamp: number,
  reached: number[],
  nowMs: number,
  bytes: number,
): { transmissions: number; control: number } {
  const { seenStamp: seen, arrivalAt, hopsOf } = scratch;
  let transmissions = 0;
  let control = 0;
  const { historyGossip, heartbeatMs, lazyDegree, meshDegree } = params;
  const missed: number[] = [];
  for (const member of topic.members) if (seen[member] !== stamp) missed.push(member);
  if (missed.length === 0 || historyGossip <= 0 || lazyDegree <= 0) return { transmissions, control };
  const holdersByClass = new Map<number, number[]>();
  for (const holder of reached) {
    const cls = links.classOf(holder);
    if (cls < 0) continue;
    const list = holdersByClass.get(cls);
    if (list === undefined) holdersByClass.set(cls, [holder]);
    else list.push(holder);
  }
  const nonMesh = Math.max(1, topic.members.length - 1 - meshDegree);
  const q = Math.min(1, lazyDegree / nonMesh);
  control += reached.length * Math.min(lazyDegree, nonMesh) * historyGossip;
  for (const node of missed) {
    const holders = holdersByClass.get(links.classOf(node));
    if (holders === undefined || holders.length === 0) continue;
    const hit = 1 - (1 - q) ** holders.length;
    for (let k = 0; k < historyGossip; k++) {
      if (rng() >= hit) continue;
      const holder = holders[pick(rng, holders.length)] as number;
      control += 2;
      if (links.lost() || links.lost()) continue;
      const at =
        nowMs +
        (k + rng()) * heartbeatMs +
        links.latencyMs(holder, node, 64) +
        links.latencyMs(node, holder, 64) +
        links.latencyMs(holder, node, bytes);
      transmissions++;
      if (links.lost()) continue;
      seen[node] = stamp;
      arrivalAt[node] = at;
      hopsOf[node] = (hopsOf[holder] as number) + 1;
      reached.push(node);
      break;
    }
  }
  return { transmissions, control };
}
