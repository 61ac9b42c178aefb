/**
 * Workers behind NAT in the simulator (sim/network.ts): the calm example with half of its workers, then all of them,
 * behind NAT, against none (fast signatures, seed 1). A message to a NATed worker that has not dialled its sender goes
 * through its relay (a master). Workers dial out to offer and bid and masters answer them on those connections, so
 * in a calm mesh nothing needs the relay: every job passes with the same claim latency as without NAT (logged, with
 * the relayed messages).
 */
import test from "ava";
import {
  assertInvariants,
  exampleScenarioPath,
  loadScenario,
  type Metrics,
  Network,
  seededRng,
  simulate,
} from "../sim/index.ts";

function calmWith(behindNat: number): Metrics {
  const scenario = loadScenario(exampleScenarioPath("calm"));
  const shaped = { ...scenario, signatures: "fast" as const, network: { ...scenario.network, behindNat } };
  return simulate(shaped, shaped.seed);
}

test("a fraction of workers behind NAT: messages to them go relayed until they dial out; every job still ends", (t) => {
  const byFraction = new Map<number, Metrics>();
  for (const fraction of [0, 0.5, 1]) {
    const metrics = calmWith(fraction);
    assertInvariants(metrics, exampleScenarioPath("calm"));
    byFraction.set(fraction, metrics);
    t.log(
      `behindNat ${fraction}: jobs ${JSON.stringify(metrics.jobs)}; direct ${metrics.messages.direct}, relayed ${metrics.messages.directRelayed} ` +
        `(${metrics.messages.directRelayedMs} ms in all); claim latency ${JSON.stringify(metrics.claimLatencyMs)}`,
    );
  }
  const none = byFraction.get(0) as Metrics;
  const half = byFraction.get(0.5) as Metrics;
  const all = byFraction.get(1) as Metrics;
  t.is(none.messages.directRelayed, 0, "no NAT, nothing relayed");
  for (const metrics of [half, all]) {
    t.is(metrics.jobs.passed, none.jobs.passed, "every job passes behind NAT as without it");
    // Workers pull: they dial their masters to offer and bid, and masters answer on those connections.
    t.is(metrics.claimLatencyMs.p50, none.claimLatencyMs.p50, "claims cost no relay: the same median");
  }
});

test("the connection-level relay: a message to a NATed worker goes through its master until the worker dials out", (t) => {
  const nodes = [
    { role: "master", online: true },
    { role: "master", online: true },
    { role: "worker", online: true },
    { role: "worker", online: true },
  ];
  const params = { medianLatency: 40, latencySigma: 0, bandwidthMbps: 100, loss: 0, behindNat: 1 };
  const network = new Network(1, seededRng(1), params, [], nodes);
  for (let index = 0; index < nodes.length; index++) network.place(index);
  t.false(network.behindNat(0), "masters are never behind NAT");
  t.true(network.behindNat(2) && network.behindNat(3));
  const relay = network.relayOf(2) as number;
  t.true(relay === 0 || relay === 1, "a NATed worker's relay is a master");
  const other = relay === 0 ? 1 : 0;
  t.is(network.routeOf(relay, 2), null, "its relay reaches it on the reservation's connection");
  t.is(network.routeOf(other, 2), relay, "another master goes through the relay");
  t.is(network.routeOf(3, 2), network.relayOf(2), "so does another NATed worker");
  t.is(network.routeOf(2, other), null, "the worker dials out");
  t.is(network.routeOf(other, 2), null, "and the connection it opened carries the answer");
  network.forget(2);
  t.is(network.routeOf(other, 2), relay, "once it went down, the connection is gone");
});
