import test from "ava";
import { GossipModel, type GossipParams, gossipsubDefaults, type Links, seededRng } from "../sim/index.ts";

const params: GossipParams = gossipsubDefaults;

function mesh(nodes: number, links: Partial<Links> = {}, seed = 1) {
  const rng = seededRng(seed);
  const model = new GossipModel(params, rng, {
    reachable: () => true,
    classOf: () => 0,
    latencyMs: () => 10,
    lost: () => false,
    lossy: false,
    ...links,
  });
  for (let node = 0; node < nodes; node++) model.join(0, node);
  model.repair();
  return model;
}

test("with no loss every subscriber gets a message once, in hop multiples of the latency", (t) => {
  const model = mesh(200);
  const out = model.publish(0, 17, 1000, 256);
  t.is(out.subscribers, 199);
  t.is(out.deliveries.length, 199);
  t.is(new Set(out.deliveries.map((d) => d.node)).size, 199);
  t.false(out.deliveries.some((d) => d.node === 17));
  for (const d of out.deliveries) t.is((d.atMs - 1000) % 10, 0);
  t.true(out.duplicates > 0, "mesh push sends duplicates, counted");
  t.true(out.transmissions >= 199 + out.duplicates - 1);
});

test("mesh degrees stay within [meshDegreeLow, meshDegreeHigh] after a heartbeat, even after many leave", (t) => {
  const model = mesh(300);
  for (let node = 0; node < 300; node += 3) model.leave(0, node);
  model.repair();
  for (const node of model.subscribers(0)) {
    const degree = model.meshOf(0, node).length;
    t.true(degree >= params.meshDegreeLow && degree <= params.meshDegreeHigh, `node ${node}: degree ${degree}`);
  }
  t.is(model.publish(0, 1, 0, 256).deliveries.length, 199);
});

test("heavy loss: the lazy pull (IHAVE/IWANT) recovers much of what the push lost, heartbeats later", (t) => {
  const rng = seededRng(9);
  const lossy = mesh(200, { lost: () => rng() < 0.6, lossy: true });
  let pushed = 0;
  let pulled = 0;
  for (let m = 0; m < 20; m++) {
    const out = lossy.publish(0, m, 0, 256);
    // Push arrivals are whole hops of 10 ms; pulls land at a random point of a heartbeat.
    for (const d of out.deliveries)
      if (d.atMs % 10 === 0) pushed++;
      else {
        pulled++;
        t.true(d.atMs > 30, "a pull takes three legs at least");
      }
    t.true(out.control > 0 || out.deliveries.length === 199);
  }
  t.true(pulled > 0, `pulled ${pulled}`);
  t.true(pushed + pulled > 20 * 199 * 0.5, `delivered ${pushed + pulled} of ${20 * 199}`);
});

test("a partition: nothing crosses it, by push or by gossip", (t) => {
  const side = (node: number) => (node < 100 ? 0 : 1);
  const model = mesh(200);
  const cut = new GossipModel(params, seededRng(2), {
    reachable: (a, b) => side(a) === side(b),
    classOf: side,
    latencyMs: () => 10,
    lost: () => false,
    lossy: false,
  });
  for (let node = 0; node < 200; node++) cut.join(0, node);
  cut.cutUnreachable();
  cut.repair();
  const out = cut.publish(0, 5, 0, 256);
  t.true(out.deliveries.every((d) => d.node < 100));
  t.is(out.deliveries.length, 99);
  t.is(model.publish(0, 5, 0, 256).deliveries.length, 199);
});
