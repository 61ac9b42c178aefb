/**
 * What the simulated network carries between nodes: gossip through the gossip
 * model (only what jobs/routing.ts lets travel on a topic: announcements,
 * verdicts and cancels, for workers), and direct messages over the network's
 * links (offers, bids, results, awards and the rest), each with the network
 * prefix of its sender's address (as a real node's transport knows it). Each
 * wire that arrives is an event handing it to the receiver's driver, whose
 * admission decides, and to the actors that listen. The traffic is counted.
 */
import { changesNothing, type NodeDriver, workerInputOf } from "../jobs/index.ts";
import { Histogram } from "./stats.ts";
import type { Wire } from "./wire.ts";
import type { SimNode, SimWorld } from "./world.ts";

/** The sequence number of the offer a master's machine holds of a worker, or undefined when it holds none. */
function heldOfferSeq(driver: NodeDriver<Wire>, project: string, worker: string): number | undefined {
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
    /** Direct messages that went through a relay to a worker behind NAT, and their latency in all (both hops). */
    directRelayed: 0,
    directRelayedMs: 0,
    deliveriesDropped: 0,
  };
  readonly gossipLatency = new Histogram();
  gossipPublishes = 0;
  gossipExpected = 0;
  gossipDelivered = 0;
  private readonly world: SimWorld;
  /** Replayers that get a copy of what reaches a master directly, by the master's node index. */
  private readonly tapsByMaster = new Map<number, SimNode[]>();

  constructor(world: SimWorld) {
    this.world = world;
  }

  /**
   * A replayer records what workers send a master directly (offers, bids, results) as an attacker on the master's
   * network path, or reading a leak of it, would: the strongest replayer (a real stream is encrypted end to end).
   */
  tapMaster(master: number, replayer: SimNode): void {
    const taps = this.tapsByMaster.get(master);
    if (taps === undefined) this.tapsByMaster.set(master, [replayer]);
    else taps.push(replayer);
  }

  /** Every transmission so far: gossip hops, gossip control messages and direct messages. */
  totalMessages(): number {
    const c = this.counters;
    return (c.gossipTransmissions as number) + (c.gossipControl as number) + (c.direct as number);
  }

  /** Gossip on a topic: every subscriber gets it (or relays it), and workers' machines take it (jobs/routing.ts). */
  publish(from: number, topic: number, wire: Wire): void {
    const world = this.world;
    this.gossipPublishes++;
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
    const relay = world.network.routeOf(from, to);
    let delayMs: number;
    if (relay === null) delayMs = world.network.latencyMs(from, to, wire.size);
    else {
      if (!world.network.reachable(from, relay) || !world.network.reachable(relay, to)) {
        this.counters.directDropped = (this.counters.directDropped as number) + 1;
        return;
      }
      delayMs = world.network.latencyMs(from, relay, wire.size) + world.network.latencyMs(relay, to, wire.size);
      this.counters.directRelayed = (this.counters.directRelayed as number) + 1;
      this.counters.directRelayedMs = (this.counters.directRelayedMs as number) + Math.round(delayMs);
    }
    world.at(world.nowMs + delayMs, () => {
      if (receiver.throwaway !== null && receiver.online) {
        receiver.throwaway.direct(wire);
        return;
      }
      if (!receiver.online || receiver.driver !== driver || driver === null) {
        this.counters.directDropped = (this.counters.directDropped as number) + 1;
        return;
      }
      if (receiver.role !== "master") {
        driver.receive(channel, wire);
        return;
      }
      if (wire.original === undefined && wire.forged !== true)
        for (const tap of this.tapsByMaster.get(to) ?? []) tap.replayer?.overheard(wire);
      if (!this.world.observer.watchesOfferHeld(wire)) {
        driver.receive(channel, wire);
        return;
      }
      // What the master holds of the offer's signer, before and after: it must never go back to an older offer.
      const project = String(wire.body.project);
      const signer = this.signerKey(wire);
      const before = heldOfferSeq(driver, project, signer);
      driver.receive(channel, wire);
      this.world.observer.offerHeld(to, signer, before, heldOfferSeq(driver, project, signer));
    });
  }

  /** A gossip delivery came due (see GossipDelivery). */
  deliverGossip(receiver: SimNode, driver: NodeDriver<Wire> | null, topic: number, wire: Wire): void {
    if (!receiver.online || receiver.driver !== driver) {
      this.counters.deliveriesDropped = (this.counters.deliveriesDropped as number) + 1;
      return;
    }
    if (driver !== null) driver.receive({ kind: "topic", topic: this.world.setup.projectOf(topic) }, wire);
    receiver.spammer?.heard(wire, topic);
    receiver.replayer?.heard(wire);
    receiver.throwaway?.heard(wire, topic);
  }

  private signerKey(wire: Wire): string {
    return (this.world.nodes[wire.signer] as SimNode).key;
  }
}
