/**
 * The gossip model against real libp2p: the same small scenario (N nodes on
 * one topic, M messages from random publishers) run by real libp2p nodes in
 * this process over @libp2p/memory (noise, yamux, identify, gossipsub with
 * StrictNoSign and a sha-256 content id, as node/host runs them) and by the
 * model in sim/gossip.ts with the same per-hop latency, compared by delivery
 * fraction and latency percentiles.
 *
 * Real nodes measure wall time, so their figures move with the machine's
 * load: the comparison belongs in a benchmark, and a test only checks that it
 * runs, delivers, and stops every node.
 */
import { performance } from "node:perf_hooks";
import { noise } from "@chainsafe/libp2p-noise";
import { yamux } from "@chainsafe/libp2p-yamux";
import { type GossipSub, gossipsub, StrictNoSign } from "@libp2p/gossipsub";
import { identify } from "@libp2p/identify";
import { memory } from "@libp2p/memory";
import { createLibp2p, type Libp2p } from "libp2p";
import { gossipMessageId } from "../node/host/index.ts";
import { GossipModel, gossipsubDefaults } from "./gossip.ts";
import { logNormal, pick, type Rng, seededRng } from "./rng.ts";
import { exactQuantile, round } from "./stats.ts";

export interface ComparisonOptions {
  readonly nodes: number;
  readonly messages: number;
  /** Latency the memory transport adds to every buffer, and the model's per-hop latency. */
  readonly hopLatencyMs: number;
  /** Connections each real node dials (the model's mesh is drawn from all subscribers). */
  readonly dialsPerNode: number;
  /** Time between two publishes. */
  readonly publishIntervalMs: number;
  readonly seed: number;
}

export const defaultComparison: ComparisonOptions = {
  nodes: 50,
  messages: 40,
  hopLatencyMs: 10,
  dialsPerNode: 5,
  publishIntervalMs: 100,
  seed: 1,
};

/** How long the real mesh gets to form before the first publish. */
export const meshFormTimeoutMs = 15_000;
/** How long after the last publish the real nodes get to deliver. */
export const deliveryWaitMs = 5_000;
/** How long all nodes get to stop. */
export const stopTimeoutMs = 10_000;
/** The topic both sides use. */
export const comparisonTopic = "cimesh/sim-check/v1";

export interface SideFigures {
  readonly deliveryFraction: number;
  /** Mean hops from the publisher on the path each delivery came by. */
  readonly meanHops: number | null;
  /** Median of latency / hops over deliveries: what one hop costs. */
  readonly perHopP50Ms: number | null;
  readonly p50Ms: number | null;
  readonly p90Ms: number | null;
  readonly p99Ms: number | null;
  readonly maxMs: number | null;
}

export interface Comparison {
  readonly options: ComparisonOptions;
  /** The measured one-hop latency of the real stack that the model is given. */
  readonly hop: HopLatency;
  readonly model: SideFigures;
  /** The model with the transport's added latency only, as if noise, yamux and gossipsub cost nothing. */
  readonly modelAtTransportLatency: SideFigures;
  /** The same factor for modelAtTransportLatency. */
  readonly uncalibratedLatencyFactor: number | null;
  readonly libp2p: SideFigures;
  /** max over p50, p90, p99 of max(libp2p/model, model/libp2p): 1 is perfect agreement. */
  readonly latencyFactor: number | null;
  /** libp2p's mean hops over the model's: how alike the two meshes' shapes are, whatever the CPU. */
  readonly hopsFactor: number | null;
  /** |libp2p − model| delivery fraction. */
  readonly deliveryGap: number;
  /** Mesh degrees of the real nodes when publishing began (min, median, max). */
  readonly realMeshDegree: readonly [number, number, number];
  readonly meshFormedMs: number;
}

function figures(latencies: number[], hops: number[], expected: number): SideFigures {
  const sorted = [...latencies].sort((a, b) => a - b);
  const q = (p: number) => {
    const v = exactQuantile(sorted, p);
    return v === null ? null : round(v);
  };
  const known = hops.map((h, i) => [h, latencies[i] as number] as const).filter(([h]) => h > 0);
  const perHop = known.map(([h, latency]) => latency / h).sort((a, b) => a - b);
  const perHopP50 = exactQuantile(perHop, 0.5);
  return {
    deliveryFraction: round(latencies.length / Math.max(1, expected)),
    meanHops: known.length === 0 ? null : round(known.reduce((sum, [h]) => sum + h, 0) / known.length),
    perHopP50Ms: perHopP50 === null ? null : round(perHopP50),
    p50Ms: q(0.5),
    p90Ms: q(0.9),
    p99Ms: q(0.99),
    maxMs: q(1),
  };
}

/** One hop of the model: a log-normal draw with this median and shape. */
export interface HopLatency {
  readonly medianMs: number;
  readonly sigma: number;
}

/** The model's side: the same nodes, publishers and publish times, each hop a draw from `hop`. */
export function runModel(options: ComparisonOptions, hop: HopLatency): SideFigures {
  const rng: Rng = seededRng(options.seed);
  const model = new GossipModel(gossipsubDefaults, rng, {
    reachable: () => true,
    classOf: () => 0,
    latencyMs: () => logNormal(rng, hop.medianMs, hop.sigma),
    lost: () => false,
    lossy: false,
  });
  for (let node = 0; node < options.nodes; node++) model.join(0, node);
  model.repair();
  const latencies: number[] = [];
  const hops: number[] = [];
  for (let m = 0; m < options.messages; m++) {
    const from = pick(rng, options.nodes);
    const at = m * options.publishIntervalMs;
    for (const delivery of model.publish(0, from, at, 256).deliveries) {
      latencies.push(delivery.atMs - at);
      hops.push(delivery.hops);
    }
  }
  return figures(latencies, hops, options.messages * (options.nodes - 1));
}

async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: expected it within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** The real side: N libp2p nodes in this process. Every node is stopped before this returns or throws. */
export async function runLibp2p(
  options: ComparisonOptions,
  minMeshDegree = 4,
): Promise<{ figures: SideFigures; meshDegree: [number, number, number]; meshFormedMs: number }> {
  const rng = seededRng(options.seed + 1);
  const nodes: Libp2p<{ pubsub: GossipSub }>[] = [];
  try {
    for (let i = 0; i < options.nodes; i++) {
      const node = await createLibp2p({
        addresses: { listen: [`/memory/cimesh-sim-check-${options.seed}-${i}`] },
        transports: [memory({ latency: options.hopLatencyMs })],
        connectionEncrypters: [noise()],
        streamMuxers: [yamux()],
        // The connection monitor pings every connection; in a big in-process mesh it is most of the idle CPU.
        connectionMonitor: { enabled: false },
        services: {
          identify: identify(),
          pubsub: gossipsub({
            globalSignaturePolicy: StrictNoSign,
            msgIdFn: gossipMessageId,
            allowPublishToZeroTopicPeers: true,
            emitSelf: false,
            // The model has no flood-publish: the publisher pushes to its mesh only, as every other hop does.
            floodPublish: false,
            scoreParams: { IPColocationFactorWeight: 0 },
          }),
        },
      });
      nodes.push(node as unknown as Libp2p<{ pubsub: GossipSub }>);
    }
    const received = new Map<string, number>();
    /** message:node → index of the peer it came from (gossipsub's propagation source). */
    const cameFrom = new Map<string, number>();
    const sentAt = new Map<number, number>();
    const indexOfPeer = new Map<string, number>();
    nodes.forEach((node, index) => {
      indexOfPeer.set(node.peerId.toString(), index);
    });
    nodes.forEach((node, index) => {
      node.services.pubsub.addEventListener("gossipsub:message", (event) => {
        const data = event.detail.msg.data;
        const id = new DataView(data.buffer, data.byteOffset, data.byteLength).getUint32(0);
        const key = `${id}:${index}`;
        if (received.has(key)) return;
        received.set(key, performance.now());
        cameFrom.set(key, indexOfPeer.get(event.detail.propagationSource.toString()) ?? -1);
      });
      node.services.pubsub.subscribe(comparisonTopic);
    });
    for (let i = 0; i < nodes.length; i++) {
      const node = nodes[i] as Libp2p<{ pubsub: GossipSub }>;
      for (let d = 0; d < options.dialsPerNode; d++) {
        let j = pick(rng, nodes.length);
        if (j === i) j = (j + 1) % nodes.length;
        const address = (nodes[j] as Libp2p).getMultiaddrs()[0];
        if (address !== undefined)
          await withTimeout(node.dial(address), meshFormTimeoutMs, `dial ${i}→${j}`).catch(() => undefined);
      }
    }
    const formStart = performance.now();
    // getMeshPeers is on gossipsub's class, not on its exported interface.
    const meshPeers = (node: Libp2p<{ pubsub: GossipSub }>) =>
      (node.services.pubsub as unknown as { getMeshPeers(topic: string): string[] }).getMeshPeers(comparisonTopic);
    const degrees = () => nodes.map((node) => meshPeers(node).length).sort((a, b) => a - b);
    while (performance.now() - formStart < meshFormTimeoutMs) {
      if ((degrees()[0] ?? 0) >= minMeshDegree) break;
      await sleep(100);
    }
    const meshFormedMs = Math.round(performance.now() - formStart);
    const d = degrees();
    const meshDegree: [number, number, number] = [d[0] ?? 0, d[d.length >> 1] ?? 0, d[d.length - 1] ?? 0];
    const publishers: number[] = [];
    for (let m = 0; m < options.messages; m++) {
      const from = pick(rng, nodes.length);
      publishers.push(from);
      const data = new Uint8Array(256);
      new DataView(data.buffer).setUint32(0, m);
      data.fill(m & 0xff, 4);
      sentAt.set(m, performance.now());
      await (nodes[from] as Libp2p<{ pubsub: GossipSub }>).services.pubsub
        .publish(comparisonTopic, data)
        .catch(() => undefined);
      await sleep(options.publishIntervalMs);
    }
    const expected = options.messages * (options.nodes - 1);
    const waitStart = performance.now();
    while (received.size < expected && performance.now() - waitStart < deliveryWaitMs) await sleep(50);
    const latencies: number[] = [];
    const hops: number[] = [];
    const hopsOf = (id: number, node: number, depth: number): number => {
      if (publishers[id] === node) return 0;
      const source = cameFrom.get(`${id}:${node}`);
      if (source === undefined || source < 0 || depth > nodes.length) return -1;
      const above = hopsOf(id, source, depth + 1);
      return above < 0 ? -1 : above + 1;
    };
    for (const [key, at] of received) {
      const [id, node] = key.split(":").map(Number) as [number, number];
      if (publishers[id] === node) continue;
      latencies.push(at - (sentAt.get(id) as number));
      hops.push(hopsOf(id, node, 0));
    }
    return { figures: figures(latencies, hops, expected), meshDegree, meshFormedMs };
  } finally {
    await withTimeout(
      Promise.allSettled(nodes.map((node) => node.stop())),
      stopTimeoutMs,
      "stopping the libp2p nodes",
    ).catch(() => undefined);
  }
}

/** z of the 90th percentile of a standard normal: turns a measured p90/p50 into a log-normal shape. */
export const normalZ90 = 1.2815515655446004;

/**
 * The real stack's one-hop latency: two connected nodes, `samples` messages, the median and the p90/p50 spread of
 * publish-to-receive. The model is given this hop, so it compares how the mesh multiplies hops, not how fast noise
 * and yamux are on this machine.
 */
export async function calibrateHop(options: ComparisonOptions, samples = 30): Promise<HopLatency> {
  const pair = await runLibp2p({ ...options, nodes: 2, messages: samples, dialsPerNode: 1, publishIntervalMs: 50 }, 1);
  const median = pair.figures.p50Ms ?? options.hopLatencyMs;
  const p90 = pair.figures.p90Ms ?? median;
  return { medianMs: median, sigma: Math.max(0, Math.log(p90 / median) / normalZ90) };
}

function ratio(a: number | null, b: number | null): number | null {
  if (a === null || b === null || a <= 0 || b <= 0) return null;
  return Math.max(a / b, b / a);
}

export async function compareGossip(options: Partial<ComparisonOptions> = {}): Promise<Comparison> {
  const full = { ...defaultComparison, ...options };
  const hop = await calibrateHop(full);
  const model = runModel(full, hop);
  const uncalibrated = runModel(full, { medianMs: full.hopLatencyMs, sigma: 0 });
  const real = await runLibp2p(full);
  const factors = [
    ratio(real.figures.p50Ms, model.p50Ms),
    ratio(real.figures.p90Ms, model.p90Ms),
    ratio(real.figures.p99Ms, model.p99Ms),
  ].filter((f): f is number => f !== null);
  const rawFactors = [
    ratio(real.figures.p50Ms, uncalibrated.p50Ms),
    ratio(real.figures.p90Ms, uncalibrated.p90Ms),
    ratio(real.figures.p99Ms, uncalibrated.p99Ms),
  ].filter((f): f is number => f !== null);
  return {
    options: full,
    hop,
    model,
    modelAtTransportLatency: uncalibrated,
    libp2p: real.figures,
    uncalibratedLatencyFactor: rawFactors.length === 0 ? null : round(Math.max(...rawFactors)),
    latencyFactor: factors.length === 0 ? null : round(Math.max(...factors)),
    hopsFactor:
      real.figures.meanHops === null || model.meanHops === null ? null : round(real.figures.meanHops / model.meanHops),
    deliveryGap: round(Math.abs(real.figures.deliveryFraction - model.deliveryFraction)),
    realMeshDegree: real.meshDegree,
    meshFormedMs: real.meshFormedMs,
  };
}
