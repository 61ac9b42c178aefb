/**
 * The gossip model against real libp2p nodes (in this process, over @libp2p/memory). Latencies are wall time, so
 * they are compared in the benchmark (`npm run bench -- sim`); here: both sides run, deliver, and every node stops.
 */
import test from "ava";
import { compareGossipWithLibp2p } from "../sim/index.ts";

test("real libp2p and the gossip model both deliver every message of a small scenario", async (t) => {
  const result = await compareGossipWithLibp2p({ nodes: 16, messages: 10, publishIntervalMs: 50, dialsPerNode: 4 });
  t.log(JSON.stringify(result));
  t.is(result.model.deliveryFraction, 1);
  t.true(result.libp2p.deliveryFraction >= 0.95, `libp2p delivered ${result.libp2p.deliveryFraction}`);
  t.not(result.libp2p.p50Ms, null);
  t.not(result.latencyFactor, null);
  t.true(result.realMeshDegree[0] >= 1, "every real node had a mesh peer");
});
