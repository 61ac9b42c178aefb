/**
 * gossipsub's peer score under cimesh's parameters (node/host/scoring.ts),
 * driven directly through its PeerScore class and a clock of the test's own:
 * a churn of short-lived peers from one IP no longer graylists the honest
 * peers that stay on it, many peers connected at once from one IP still are,
 * and the penalty record (P5) outlives a reconnection, which gossipsub's own
 * counters do not.
 */
import {
  createPeerScoreParams,
  createPeerScoreThresholds,
  PeerScore,
  type PeerScoreParams,
} from "@libp2p/gossipsub/score";
import test from "ava";
import { banPoints, gossipScoreParams, PeerPenalties, topicScoreParams } from "../node/host/index.ts";

const thresholds = createPeerScoreThresholds();
const sharedIp = "203.0.113.7";
const topic = "project";

/** A clock the test moves; PeerScore reads Date.now. */
let clockMs = 1_000_000;
const realNow = Date.now;

function silentLogger() {
  const log = Object.assign(() => undefined, { error: () => undefined, trace: () => undefined, enabled: false });
  return { forComponent: () => log } as never;
}

function peerScore(params: PeerScoreParams): PeerScore {
  return new PeerScore(params, null, silentLogger(), { scoreCacheValidityMs: 0 });
}

function connect(score: PeerScore, id: string, ip = sharedIp): void {
  score.addPeer(id);
  score.addIP(id, ip);
}

/** Moves the clock, running gossipsub's background refresh every decayInterval as its timer would. */
function advance(score: PeerScore, params: PeerScoreParams, ms: number): void {
  const end = clockMs + ms;
  while (clockMs < end) {
    clockMs = Math.min(end, clockMs + params.decayInterval);
    score.refreshScores();
  }
}

/**
 * An attacker on the honest peers' IP opens a peer, keeps it liveMs, closes it, and does it again `count` times;
 * returns the lowest score an honest peer had while it did.
 */
function churn(score: PeerScore, params: PeerScoreParams, count: number, liveMs: number): number {
  let lowest = Number.POSITIVE_INFINITY;
  for (let index = 0; index < count; index++) {
    const id = `attacker-${index}`;
    connect(score, id);
    advance(score, params, liveMs);
    lowest = Math.min(lowest, score.score("honest-1"));
    score.removePeer(id);
  }
  return lowest;
}

test.before(() => {
  Date.now = () => clockMs;
});
test.after.always(() => {
  Date.now = realNow;
});

test.serial(
  "gossipsub's default retention: 45 short-lived peers from one IP graylist the honest peers there for an hour",
  (t) => {
    const params = createPeerScoreParams({});
    const score = peerScore(params);
    connect(score, "honest-1");
    connect(score, "honest-2");
    churn(score, params, 45, 1_000);
    t.true(score.score("honest-1") < thresholds.graylistThreshold, `scored ${score.score("honest-1")}`);
    advance(score, params, 59 * 60_000);
    t.true(score.score("honest-2") < thresholds.graylistThreshold, "still, 59 minutes later");
  },
);

test.serial("cimesh's parameters: the same churn leaves the honest peers at 0, during it and after", (t) => {
  const params = createPeerScoreParams(gossipScoreParams({ appSpecificScore: () => 0 }));
  const score = peerScore(params);
  connect(score, "honest-1");
  connect(score, "honest-2");
  const lowest = churn(score, params, 45, 1_000);
  t.is(lowest, 0, "no peer retained on the IP: 3 known at a time, under the threshold of 10");
  advance(score, params, params.decayInterval);
  t.is(score.score("honest-1"), 0);
  t.is(score.score("honest-2"), 0);
});

test.serial("cimesh's parameters: a burst of 45 peers closed at once is forgotten at the next decay", (t) => {
  const params = createPeerScoreParams(gossipScoreParams({ appSpecificScore: () => 0 }));
  const score = peerScore(params);
  connect(score, "honest-1");
  for (let index = 0; index < 45; index++) connect(score, `attacker-${index}`);
  t.true(score.score("honest-1") < thresholds.graylistThreshold, "45 connected at once: the colocation defence holds");
  for (let index = 0; index < 45; index++) score.removePeer(`attacker-${index}`);
  advance(score, params, params.decayInterval);
  t.is(score.score("honest-1"), 0, "gone from the count within one decayInterval of leaving");
});

test.serial("cimesh's parameters: 16 peers connected at once from one IP are all below the graylist threshold", (t) => {
  const params = createPeerScoreParams(gossipScoreParams({ appSpecificScore: () => 0 }));
  const score = peerScore(params);
  for (let index = 0; index < 16; index++) connect(score, `sybil-${index}`);
  connect(score, "elsewhere", "198.51.100.1");
  advance(score, params, 10 * 60_000);
  for (let index = 0; index < 16; index++)
    t.true(score.score(`sybil-${index}`) < thresholds.graylistThreshold, `sybil-${index}`);
  t.is(score.score("elsewhere"), 0, "a peer on another IP is not touched");
  // 10 on one IP is gossipsub's threshold: volunteers behind one NAT up to that are never penalized for it.
  const small = peerScore(params);
  for (let index = 0; index < 10; index++) connect(small, `neighbour-${index}`);
  t.is(small.score("neighbour-0"), 0);
});

test.serial(
  "penalty points (P5) outlive a reconnection; gossipsub starts a reconnecting peer's own counters afresh",
  (t) => {
    const penalties = new PeerPenalties();
    const params = createPeerScoreParams({
      ...gossipScoreParams({ appSpecificScore: (peer) => penalties.score(peer, Date.now()) }),
      topics: { [topic]: topicScoreParams() },
    });
    const score = peerScore(params);
    connect(score, "forger", "198.51.100.2");
    score.rejectInvalidMessage("forger", topic);
    t.true(score.score("forger") < thresholds.graylistThreshold, "a forgery (P4) is below the graylist threshold");
    score.removePeer("forger");
    connect(score, "forger", "198.51.100.2");
    t.is(score.score("forger"), 0, "gossipsub forgot it on reconnection");

    for (let index = 0; index < 100; index++) penalties.charge("flooder", "useless", Date.now());
    connect(score, "flooder", "198.51.100.3");
    t.true(
      score.score("flooder") < thresholds.graylistThreshold,
      `100 useless messages: scored ${score.score("flooder")}`,
    );
    score.removePeer("flooder");
    advance(score, params, params.decayInterval);
    connect(score, "flooder", "198.51.100.3");
    t.true(score.score("flooder") < thresholds.graylistThreshold, "still after reconnecting: P5 is kept by peer id");
  },
);

test("a peer is banned no later than its penalty points alone would graylist it, so every offence before is counted", (t) => {
  const params = createPeerScoreParams(gossipScoreParams({ appSpecificScore: () => 0 }));
  t.true(-banPoints * params.appSpecificWeight >= thresholds.graylistThreshold);
  t.true(-banPoints * params.appSpecificWeight < thresholds.publishThreshold, "past the publish threshold first");
});
