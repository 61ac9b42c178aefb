/**
 * The host's per-peer limits, driven by the clock they are given: token
 * buckets (burst, refill, waiting turns, a bounded table), the log a flood
 * cannot fill, and the penalty record (decay, ban at the bound, caps, bounded
 * tables).
 */
import test from "ava";
import {
  banMs,
  banPoints,
  EventLog,
  maxPenalizedPeers,
  maxPenaltyPoints,
  offenceCosts,
  PeerPenalties,
  penaltyHalfLifeMs,
  RateLimiter,
} from "../node/host/index.ts";
import { offenceOf } from "../node/runtime/index.ts";

test("a token bucket lets a burst through, then the refill rate", (t) => {
  const limiter = new RateLimiter({ burst: 10, perSecond: 5 });
  let taken = 0;
  for (let index = 0; index < 100; index++) if (limiter.take("p", 0)) taken++;
  t.is(taken, 10, "the burst at once");
  taken = 0;
  for (let ms = 0; ms <= 2_000; ms += 10) if (limiter.take("p", ms)) taken++;
  t.is(taken, 10, "then 5 per second for 2 s");
  t.true(limiter.take("other", 2_000), "each key has its own bucket");
});

test("a reservation waits its turn at the refill rate, and is refused past the longest wait", (t) => {
  const limiter = new RateLimiter({ burst: 2, perSecond: 10 });
  t.is(limiter.reserve("p", 0, 500), 0);
  t.is(limiter.reserve("p", 0, 500), 0);
  const waits: number[] = [];
  for (let index = 0; index < 5; index++) waits.push(limiter.reserve("p", 0, 500) ?? -1);
  t.deepEqual(
    waits.map((ms) => Math.round(ms)),
    [100, 200, 300, 400, 500],
  );
  t.is(limiter.reserve("p", 0, 500), null, "a wait over 500 ms is refused, nothing reserved");
  t.is(Math.round(limiter.reserve("p", 1_000, 500) ?? -1), 0, "a second later the turns have come");
});

test("the bucket table is bounded, and a key in use is not the one forgotten", (t) => {
  const limiter = new RateLimiter({ burst: 3, perSecond: 0.001 }, 4);
  for (let index = 0; index < 3; index++) limiter.take("flooder", 0);
  t.false(limiter.take("flooder", 0), "the flooder's bucket is empty");
  for (let index = 0; index < 100; index++) {
    limiter.take(`churn-${index}`, 0);
    limiter.take("flooder", 0); // still flooding: used most recently
  }
  t.is(limiter.size, 4);
  t.false(limiter.take("flooder", 0), "churning 100 other keys did not refill the flooder's bucket");
});

test("a flood writes the first lines per peer and reason, then one summary per window", (t) => {
  const lines: { event: string; fields: Record<string, unknown> }[] = [];
  let nowMs = 0;
  const clockLog = new EventLog(
    (event, fields) => lines.push({ event, fields }),
    { linesPerKey: 3, linesPerEvent: 10, windowMs: 60_000 },
    () => nowMs,
  );
  for (let index = 0; index < 20_000; index++)
    clockLog.note("gossip-ignore", { from: "attacker", reason: "stale", why: `message ${index}` });
  for (let index = 0; index < 100; index++) clockLog.note("gossip-ignore", { from: `fresh-${index}`, reason: "stale" });
  clockLog.note("gossip-reject", { from: "attacker", reason: "forged" });
  t.is(
    lines.filter((line) => line.event === "gossip-ignore").length,
    10,
    "3 from the attacker, 7 fresh: the event's 10",
  );
  t.is(lines.filter((line) => line.event === "gossip-reject").length, 1, "another event has its own lines");
  nowMs = 60_000;
  clockLog.note("gossip-ignore", { from: "attacker", reason: "stale" });
  const summaries = lines.filter((line) => line.event === "log-suppressed");
  t.is(summaries.length, 1, "one summary line for the window");
  t.like(summaries[0]?.fields, { of: "gossip-ignore", reason: "stale", suppressed: 20_000 + 100 - 10, peers: 94 });
  t.is(lines.at(-1)?.event, "gossip-ignore", "a new window writes again");
  t.is(clockLog.suppressedTotals.get("gossip-ignore"), 20_090);
  clockLog.close();
});

test("penalty points decay by half every half-life, and are forgotten near zero", (t) => {
  const penalties = new PeerPenalties();
  penalties.charge("p", "forged", 0);
  penalties.charge("p", "forged", 0);
  t.is(penalties.points("p", 0), 2 * offenceCosts.forged);
  t.is(penalties.score("p", 0), -2 * offenceCosts.forged, "the application-specific score is minus the points");
  t.is(Math.round(penalties.points("p", penaltyHalfLifeMs) * 1000) / 1000, offenceCosts.forged);
  t.is(Math.round(penalties.points("p", 3 * penaltyHalfLifeMs) * 1000) / 1000, offenceCosts.forged / 4);
  t.is(penalties.points("p", 10 * penaltyHalfLifeMs), 0);
  t.is(penalties.size, 0, "a forgotten peer leaves the table");
});

test("an honest rate of useless messages stays far below the graylist threshold; a flood is banned", (t) => {
  const penalties = new PeerPenalties();
  // One stale message every 10 s for an hour: steady state about 0.1 × 60 / ln 2 ≈ 9 points.
  for (let ms = 0; ms < 3_600_000; ms += 10_000) penalties.charge("honest", "useless", ms);
  t.true(penalties.points("honest", 3_600_000) < 15);
  t.false(penalties.isBanned("honest", 3_600_000));

  let bannedAt = -1;
  for (let index = 0; index < 20_000; index++) {
    if (penalties.charge("flooder", "useless", 1_000).banned) {
      bannedAt = index;
      break;
    }
  }
  t.is(bannedAt, banPoints / offenceCosts.useless - 1, "banned by the message that reached banPoints");
  t.true(penalties.isBanned("flooder", 1_000));
  t.false(penalties.charge("flooder", "flooding", 1_000).banned, "banned once, not again while the ban runs");
  t.is(penalties.bannedUntil("flooder", 1_000), 1_000 + banMs);
  t.false(penalties.isBanned("flooder", 1_000 + banMs), "the ban ends");
});

test("points are capped, so a flooder is back near zero a bounded time after its ban", (t) => {
  const penalties = new PeerPenalties();
  for (let index = 0; index < 100_000; index++) penalties.charge("flooder", "forged", 0);
  t.is(penalties.points("flooder", 0), maxPenaltyPoints);
  t.true(penalties.points("flooder", banMs) < maxPenaltyPoints / 2 ** (banMs / penaltyHalfLifeMs) + 1e-9);
  t.true(penalties.points("flooder", banMs) < 1);
});

test("this node is never charged", (t) => {
  const penalties = new PeerPenalties();
  penalties.exemptPeer("self");
  for (let index = 0; index < 1_000; index++) t.false(penalties.charge("self", "forged", 0).banned);
  t.is(penalties.points("self", 0), 0);
  penalties.ban("self", 0);
  t.false(penalties.isBanned("self", 0));
});

test("the penalty table is bounded: when full, the peer with the fewest points is forgotten", (t) => {
  const penalties = new PeerPenalties();
  penalties.charge("worst", "forged", 0);
  penalties.charge("worst", "forged", 0);
  for (let index = 0; index < maxPenalizedPeers + 500; index++) penalties.charge(`fresh-${index}`, "useless", 0);
  t.is(penalties.size, maxPenalizedPeers);
  t.is(penalties.points("worst", 0), 2 * offenceCosts.forged, "the most penalized peer is kept");
});

test("status lists the most penalized peers first, and the bans in force", (t) => {
  const penalties = new PeerPenalties({ halfLifeMs: penaltyHalfLifeMs, banPoints: 20, banMs: 1_000 });
  penalties.charge("a", "useless", 0);
  penalties.charge("b", "forged", 0);
  penalties.charge("c", "forged", 0);
  penalties.charge("c", "forged", 0);
  const view = penalties.view(0, 2);
  t.deepEqual(
    view.penalized.map((entry) => entry.peer),
    ["c", "b"],
  );
  t.deepEqual(view.penalized[0]?.offences, { forged: 2 });
  t.deepEqual(view.banned, [{ peer: "c", untilMs: 1_000 }]);
  t.is(penalties.bansTotal, 1);
});

test("what an admission costs its sender: a forgery, a stale or replayed message; not what says more about this node", (t) => {
  t.is(offenceOf({ verdict: "reject", reason: "forged", detail: "BadSignatureError: ..." }), "forged");
  t.is(offenceOf({ verdict: "reject", reason: "untrusted-signer", detail: "..." }), "forged");
  t.is(offenceOf({ verdict: "ignore", reason: "stale", detail: "ExpiredError: expiresAtMs: ..." }), "useless");
  t.is(offenceOf({ verdict: "ignore", reason: "replay", detail: "seq 4 ..." }), "useless");
  for (const reason of ["untrusted-project", "no-keyset-yet", "no-machine", "keyset-old"])
    t.is(offenceOf({ verdict: "ignore", reason, detail: "" }), null, reason);
  t.is(
    offenceOf({ verdict: "ignore", reason: "keyset-expired", detail: "KeysetExpiredError: keyset.expiresAtMs: ..." }),
    null,
    "this node's keyset expired: the announcers are unknown here, the relay did nothing wrong",
  );
  t.is(offenceOf({ verdict: "accept", reason: "taken", detail: "" }), null);
});
