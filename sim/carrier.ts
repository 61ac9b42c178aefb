/**
 * What the simulated network carries between nodes: gossip through the gossip
 * model, routed as jobs/routing.ts says (adverts to the project's masters, the
 * rest to workers), and direct messages over the network's links, each with
 * the network prefix of its sender's address (as a real node's transport
 * knows it). Each wire that arrives is an event handing it to the receiver's
 * driver, whose admission decides, and to the actors that listen. The
 * traffic is counted.
 */
import { changesNothing, type NodeDriver, topicRoute, workerInputOf } from "../jobs/index.ts";
import { Histogram } from "./stats.ts";
import type { Wire } from "./wire.ts";
import type { SimNode, SimWorld } from "./world.ts";

/** The sequence number of the advert a master's machine holds of a worker, or undefined when it holds none. */
function heldAdvertSeq(driver: NodeDriver<Wire>, project: string, worker: string): number | undefined {
  const state = driver.masterState(project);
  return (state?.workers[worker] ?? state?.unproven[worker])?.seq;
}

/** One gossip message arriving at one node: the most common event, so an object with a method rather than a closure. */
class GossipDelivery {
  readonly atMs: number;
  order = 0;
  private readonly carrier: Carrier;
  private readonly receiver: SimNode;
  private readonly driver: NodeDriver<Wire> | null;
  private readonly topic: number;
  private readonly wire: Wire;
  constructor(atMs: number, carrier: Carrier, receiver: SimNode, topic: number, wire: Wire) {
    this.atMs = atMs;
    this.carrier = carrier;
    this.receiver = receiver;
    this.driver = receiver.driver;
    this.topic = topic;
    this.wire = wire;
  }
  run(): void {
    this.carrier.deliverGossip(this.receiver, this.driver, this.topic, this.wire);
  }
}

export class Carrier {
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
  private readonly world: SimWorld;
  private readonly mastersByTopic = new Map<number, number[]>();
  /** Actors that record adverts on a topic besides its masters (replayers). */
  private readonly advertListenersByTopic = new Map<number, SimNode[]>();

  constructor(world: SimWorld) {
    this.world = world;
  }

  /** A master joined: adverts on its topics are for it. */
  addMaster(master: SimNode): void {
    for (const topic of master.topics) {
      const masters = this.mastersByTopic.get(topic);
      if (masters === undefined) this.mastersByTopic.set(topic, [master.index]);
      else masters.push(master.index);
    }
  }

  /** An actor hears the adverts of its topics too (a replayer records them, as a real mesh's subscriber would). */
  addAdvertListener(node: SimNode): void {
    for (const topic of node.topics) {
      const listeners = this.advertListenersByTopic.get(topic);
      if (listeners === undefined) this.advertListenersByTopic.set(topic, [node]);
      else listeners.push(node);
    }
  }

  /** Gossip on a topic, routed as jobs/routing.ts says: adverts to the project's master, the rest to workers. */
  publish(from: number, topic: number, wire: Wire): void {
    const world = this.world;
    this.gossipPublishes++;
    if (topicRoute(wire.domain)?.to === "master") {
      this.publishToMasters(from, topic, wire);
      return;
    }
    const out = world.gossip.publish(topic, from, world.nowMs, wire.size);
    this.counters.gossipTransmissions = (this.counters.gossipTransmissions as number) + out.transmissions;
    this.counters.gossipDuplicates = (this.counters.gossipDuplicates as number) + out.duplicates;
    this.counters.gossipControl = (this.counters.gossipControl as number) + out.control;
    world.observer.figures.interval.messages += out.transmissions + out.control;
    this.gossipExpected += out.subscribers;
    this.gossipDelivered += out.deliveries.length;
    // A replayed message always reaches every worker, so that each one's replay ledger judges it.
    const input =
      wire.original === undefined
        ? workerInputOf(wire.domain, (world.nodes[wire.signer] as SimNode).key, wire.body)
        : null;
    for (const { node, atMs } of out.deliveries) {
      this.gossipLatency.add(atMs - world.nowMs);
      const receiver = world.nodes[node] as SimNode;
      // Only nodes whose machine takes it (and the actors that listen) get an event; the rest forward it, counted above.
      if (receiver.role === "master" || receiver.role === "forger") continue;
      // Nor does a worker whose machine it would leave as it is (a verdict about a job it holds nothing of).
      const worker = receiver.driver?.workerState() ?? null;
      if (input !== null && worker !== null && changesNothing(worker, input)) continue;
      world.queue.pushEvent(new GossipDelivery(Math.max(atMs, world.nowMs), this, receiver, topic, wire));
    }
  }

  /** An advert: flooded on the topic (counted), taken by the topic's masters only (see GossipModel.publishTo). */
  private publishToMasters(from: number, topic: number, wire: Wire): void {
    const world = this.world;
    for (const index of this.mastersByTopic.get(topic) ?? []) {
      const master = world.nodes[index] as SimNode;
      const out = world.gossip.publishTo(topic, from, master.index, world.nowMs, wire.size);
      this.counters.gossipTransmissions = (this.counters.gossipTransmissions as number) + out.transmissions;
      this.counters.gossipDuplicates = (this.counters.gossipDuplicates as number) + out.duplicates;
      world.observer.figures.interval.messages += out.transmissions;
      if (out.atMs === null) continue;
      this.gossipLatency.add(out.atMs - world.nowMs);
      world.queue.pushEvent(new GossipDelivery(Math.max(out.atMs, world.nowMs), this, master, topic, wire));
    }
    for (const listener of this.advertListenersByTopic.get(topic) ?? []) {
      if (listener.index === from || !world.network.reachable(from, listener.index)) continue;
      const atMs = world.nowMs + world.network.latencyMs(from, listener.index, wire.size);
      world.queue.pushEvent(new GossipDelivery(atMs, this, listener, topic, wire));
    }
  }

  /** A direct message: dropped when the receiver is unreachable, down by arrival, or the network loses it. */
  send(from: number, to: number, wire: Wire): void {
    const world = this.world;
    this.counters.direct = (this.counters.direct as number) + 1;
    world.observer.figures.interval.messages++;
    const receiver = world.nodes[to];
    if (receiver === undefined || !world.network.reachable(from, to) || world.network.lost()) {
      this.counters.directDropped = (this.counters.directDropped as number) + 1;
      return;
    }
    const driver = receiver.driver;
    const sender = world.nodes[from] as SimNode;
    const channel = { kind: "direct", peer: sender.key, prefix: sender.prefix } as const;
    world.at(world.nowMs + world.network.latencyMs(from, to, wire.size), () => {
      if (receiver.throwaway !== null && receiver.online) {
        receiver.throwaway.direct(wire);
        return;
      }
      if (!receiver.online || receiver.driver !== driver || driver === null) {
        this.counters.directDropped = (this.counters.directDropped as number) + 1;
        return;
      }
      driver.receive(channel, wire);
    });
  }

  /** A gossip delivery came due (see GossipDelivery). */
  deliverGossip(receiver: SimNode, driver: NodeDriver<Wire> | null, topic: number, wire: Wire): void {
    if (!receiver.online || receiver.driver !== driver) {
      this.counters.deliveriesDropped = (this.counters.deliveriesDropped as number) + 1;
      return;
    }
    if (driver !== null) {
      const project = this.world.setup.projectOf(topic);
      // What the master holds of the advert's signer, before and after: it must never go back to an older advert.
      const advertSigner = wire.domain === "workerAdvert" && receiver.role === "master" ? this.signerKey(wire) : null;
      const before = advertSigner === null ? undefined : heldAdvertSeq(driver, project, advertSigner);
      driver.receive({ kind: "topic", topic: project }, wire);
      if (advertSigner !== null)
        this.world.observer.advertHeld(
          receiver.index,
          advertSigner,
          before,
          heldAdvertSeq(driver, project, advertSigner),
        );
    }
    receiver.spammer?.heard(wire, topic);
    receiver.replayer?.heard(wire);
    receiver.throwaway?.heard(wire, topic);
  }

  private signerKey(wire: Wire): string {
    return (this.world.nodes[wire.signer] as SimNode).key;
  }
}
