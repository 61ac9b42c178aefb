/**
 * Replay ledger (crypto/ledger.ts): an IPsec-style sliding window per signer,
 * a bounded number of signers, and a floor that keeps a forgotten signer's
 * still-valid messages from being replayed.
 */

import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { fc, testProp } from "@fast-check/ava";
import test from "ava";
import {
  admitSeq,
  CimeshError,
  checkTime,
  createReplayLedger,
  defaultReplayLedgerLimits,
  ExpiredError,
  maxClockSkewMs,
  ReplayError,
  type ReplayLedger,
  type ReplayLedgerLimits,
  type ReplayVerdict,
  recordSeq,
  restoreReplayLedger,
  snapshotReplayLedger,
} from "../crypto/index.ts";

const nowMs = 1_800_000_000_000;
const expiresAtMs = nowMs + 60_000;

function signer(n: number): Uint8Array {
  const key = new Uint8Array(32);
  new DataView(key.buffer).setUint32(0, n);
  key[31] = 0xaa;
  return key;
}

const alice = signer(1);
const bob = signer(2);
const carol = signer(3);

function verdict(ledger: ReplayLedger, key: Uint8Array, seq: number, expires = expiresAtMs, at = nowMs): ReplayVerdict {
  return recordSeq(ledger, key, seq, expires, at).verdict;
}

// --- the window --------------------------------------------------------------------

test("a sequence number is fresh once, then a replay", (t) => {
  const ledger = createReplayLedger();
  t.is(verdict(ledger, alice, 5), "fresh");
  t.is(verdict(ledger, alice, 5), "replay");
  t.is(verdict(ledger, alice, 5), "replay");
  // Another signer has its own numbers.
  t.is(verdict(ledger, bob, 5), "fresh");
  t.is(verdict(ledger, bob, 5), "replay");
  // The first number of a signer may be anything, 0 and the largest included.
  t.is(verdict(ledger, carol, Number.MAX_SAFE_INTEGER), "fresh");
  t.is(verdict(ledger, carol, Number.MAX_SAFE_INTEGER), "replay");
  t.is(verdict(ledger, signer(4), 0), "fresh");
  t.is(verdict(ledger, signer(4), 0), "replay");
});

test("recordSeq returns the ledger to use next, and a refusal leaves it as it was", (t) => {
  const ledger = createReplayLedger();
  const first = recordSeq(ledger, alice, 1, expiresAtMs, nowMs);
  t.is(first.ledger, ledger);
  const before = snapshotReplayLedger(first.ledger);
  const again = recordSeq(first.ledger, alice, 1, expiresAtMs, nowMs);
  t.is(again.verdict, "replay");
  t.deepEqual(snapshotReplayLedger(again.ledger), before);
});

test("out-of-order numbers within the window are accepted once each", (t) => {
  const ledger = createReplayLedger();
  const { windowSeqs } = ledger.limits;
  const order = [100, 3, 57, 99, 4, 100 - windowSeqs + 1, 64, 65, 63, 1, 2, 98];
  // 100 - 255 is below zero: every number from 0 to 100 stays inside the window.
  for (const seq of order) t.is(verdict(ledger, alice, seq), "fresh", `seq ${seq}`);
  for (const seq of order) t.is(verdict(ledger, alice, seq), "replay", `seq ${seq} again`);
  // The gaps are still open.
  for (const seq of [0, 5, 50, 97]) t.is(verdict(ledger, alice, seq), "fresh", `gap ${seq}`);
});

test("below the window is too-old; the window's last number is still judged", (t) => {
  const ledger = createReplayLedger();
  const { windowSeqs } = ledger.limits;
  const highest = 10_000;
  t.is(verdict(ledger, alice, highest), "fresh");
  t.is(verdict(ledger, alice, highest - windowSeqs), "too-old");
  t.is(verdict(ledger, alice, 0), "too-old");
  t.is(verdict(ledger, alice, highest - windowSeqs + 1), "fresh");
  t.is(verdict(ledger, alice, highest - windowSeqs + 1), "replay");
  // Moving the window up turns what was inside into too-old.
  t.is(verdict(ledger, alice, highest + 1), "fresh");
  t.is(verdict(ledger, alice, highest - windowSeqs + 1), "too-old");
  // A jump far past the window forgets the whole bitmap.
  t.is(verdict(ledger, alice, highest + 10 * windowSeqs), "fresh");
  t.is(verdict(ledger, alice, highest + 10 * windowSeqs - 1), "fresh");
  t.is(verdict(ledger, alice, highest + 1), "too-old");
});

test("admitSeq returns the ledger for a fresh number and throws ReplayError otherwise", (t) => {
  let ledger = createReplayLedger({ windowSeqs: 32, maxSigners: 1 });
  ledger = admitSeq(ledger, alice, 40, expiresAtMs, nowMs);
  const replay = t.throws(() => admitSeq(ledger, alice, 40, expiresAtMs, nowMs), { instanceOf: ReplayError });
  t.is(replay?.code, "ERR_REPLAY");
  t.true(replay instanceof CimeshError);
  t.regex(replay?.message ?? "", /seq 40 a second time/);
  t.throws(() => admitSeq(ledger, alice, 8, expiresAtMs, nowMs), {
    instanceOf: ReplayError,
    message: /below the highest/,
  });
  // Bob pushes Alice out while her message is still valid: her messages are now refused as forgotten.
  ledger = admitSeq(ledger, bob, 1, expiresAtMs, nowMs);
  t.throws(() => admitSeq(ledger, alice, 40, expiresAtMs, nowMs), { instanceOf: ReplayError, message: /floor/ });
});

test("createReplayLedger refuses limits it cannot keep", (t) => {
  for (const limits of [
    { windowSeqs: 0, maxSigners: 1 },
    { windowSeqs: 33, maxSigners: 1 },
    { windowSeqs: 32.5, maxSigners: 1 },
    { windowSeqs: 32, maxSigners: 0 },
    { windowSeqs: 32, maxSigners: 1.5 },
  ]) {
    t.throws(() => createReplayLedger(limits), { instanceOf: RangeError }, JSON.stringify(limits));
  }
});

// --- against a model ------------------------------------------------------------------

/** The sliding window as a set of every number seen: what the bitmap must agree with. */
class NaiveWindow {
  readonly seen = new Set<number>();
  highest = -1;
  readonly windowSeqs: number;
  constructor(windowSeqs: number) {
    this.windowSeqs = windowSeqs;
  }
  record(seq: number): ReplayVerdict {
    if (this.highest >= 0 && seq <= this.highest) {
      if (this.highest - seq >= this.windowSeqs) return "too-old";
      if (this.seen.has(seq)) return "replay";
    }
    this.seen.add(seq);
    if (seq > this.highest) this.highest = seq;
    return "fresh";
  }
}

const windowSizes = fc.constantFrom(32, 64, 96, 256);
const seqArb = fc.oneof(
  { weight: 8, arbitrary: fc.integer({ min: 0, max: 400 }) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 2 ** 40 }) },
);

testProp(
  "the window agrees with a Set of every number seen, for any order of numbers",
  [windowSizes, fc.array(fc.tuple(fc.integer({ min: 0, max: 2 }), seqArb), { maxLength: 300 })],
  (t, windowSeqs, records) => {
    const ledger = createReplayLedger({ windowSeqs, maxSigners: 16 });
    const models = [0, 1, 2].map(() => new NaiveWindow(windowSeqs));
    for (const [who, seq] of records) {
      const expected = (models[who] as NaiveWindow).record(seq);
      const actual = verdict(ledger, signer(who), seq);
      if (actual !== expected) {
        t.fail(`signer ${who} seq ${seq}: expected ${expected}, got ${actual}`);
        return;
      }
    }
    t.pass();
  },
  { numRuns: 300 },
);

/** A window size, and every offset inside such a window in some order. */
const shuffledWindow = windowSizes.chain((windowSeqs) =>
  fc.tuple(fc.constant(windowSeqs), fc.shuffledSubarray([...Array(windowSeqs).keys()], { minLength: windowSeqs })),
);

testProp(
  "within the window, every number is accepted exactly once whatever the order",
  [shuffledWindow, fc.nat({ max: 10_000 })],
  (t, [windowSeqs, offsets], base) => {
    const ledger = createReplayLedger({ windowSeqs, maxSigners: 1 });
    t.is(verdict(ledger, alice, base + windowSeqs - 1), "fresh");
    for (const offset of offsets) {
      t.is(verdict(ledger, alice, base + offset), offset === windowSeqs - 1 ? "replay" : "fresh");
    }
    for (const offset of offsets) t.is(verdict(ledger, alice, base + offset), "replay");
    if (base > 0) t.is(verdict(ledger, alice, base - 1), "too-old");
  },
  { numRuns: 50 },
);

// --- forgetting signers ---------------------------------------------------------------

test("forgetting a signer whose messages are still valid raises the floor: its replay is forgotten, not fresh", (t) => {
  const ledger = createReplayLedger({ windowSeqs: 32, maxSigners: 2 });
  t.is(verdict(ledger, alice, 1, nowMs + 60_000), "fresh");
  t.is(verdict(ledger, bob, 1, nowMs + 90_000), "fresh");
  t.is(ledger.floorExpiresAtMs, Number.NEGATIVE_INFINITY);
  // Carol makes a third signer: Alice, the least recently seen, is forgotten.
  t.is(verdict(ledger, carol, 1, nowMs + 10_000), "fresh");
  t.is(ledger.signers.size, 2);
  t.is(ledger.floorExpiresAtMs, nowMs + 60_000);
  t.is(verdict(ledger, alice, 1, nowMs + 60_000), "forgotten");
  // Nothing expiring at or before the floor passes, from anyone.
  t.is(verdict(ledger, bob, 2, nowMs + 60_000), "forgotten");
  t.is(verdict(ledger, bob, 2, nowMs + 60_001), "fresh");
  // Alice's new messages, expiring later than anything forgotten, pass.
  t.is(verdict(ledger, alice, 2, nowMs + 120_000), "fresh");
});

test("a signer whose messages have all expired is forgotten without raising the floor", (t) => {
  const ledger = createReplayLedger({ windowSeqs: 32, maxSigners: 2 });
  const early = nowMs;
  t.is(verdict(ledger, alice, 1, early + 1_000, early), "fresh");
  t.is(verdict(ledger, bob, 1, early + 600_000, early), "fresh");
  const later = early + 1_000 + maxClockSkewMs + 1;
  t.is(verdict(ledger, carol, 1, later + 60_000, later), "fresh");
  t.is(ledger.floorExpiresAtMs, Number.NEGATIVE_INFINITY);
  t.false(ledger.signers.has(Buffer.from(alice).toString("latin1")));
  // The ledger no longer knows Alice's message; the time check refuses it instead.
  t.throws(() => checkTime({ issuedAtMs: early, expiresAtMs: early + 1_000 }, later), { instanceOf: ExpiredError });
  // Bob's messages could still be replayed, so forgetting him raises the floor.
  t.is(verdict(ledger, signer(4), 1, later + 60_000, later), "fresh");
  t.is(ledger.floorExpiresAtMs, early + 600_000);
});

test("a signer whose latest message expires exactly at the skew edge still raises the floor", (t) => {
  const ledger = createReplayLedger({ windowSeqs: 32, maxSigners: 1 });
  t.is(verdict(ledger, alice, 1, nowMs, nowMs), "fresh");
  const edge = nowMs + maxClockSkewMs;
  t.notThrows(() => checkTime({ issuedAtMs: nowMs, expiresAtMs: nowMs }, edge));
  t.is(verdict(ledger, bob, 1, edge + 60_000, edge), "fresh");
  t.is(ledger.floorExpiresAtMs, nowMs);
  t.is(verdict(ledger, alice, 1, nowMs, edge), "forgotten");
});

test("the least recently seen signer is the one forgotten", (t) => {
  const ledger = createReplayLedger({ windowSeqs: 32, maxSigners: 2 });
  t.is(verdict(ledger, alice, 1), "fresh");
  t.is(verdict(ledger, bob, 1), "fresh");
  t.is(verdict(ledger, alice, 2), "fresh"); // Alice is now the most recent.
  t.is(verdict(ledger, carol, 1, expiresAtMs + 1), "fresh");
  t.true(ledger.signers.has(Buffer.from(alice).toString("latin1")));
  t.false(ledger.signers.has(Buffer.from(bob).toString("latin1")));
  // A refused message does not count as seeing its signer.
  t.is(verdict(ledger, alice, 2, expiresAtMs + 1), "replay");
  t.is(verdict(ledger, carol, 2, expiresAtMs + 1), "fresh");
  t.is(verdict(ledger, signer(4), 1, expiresAtMs + 1), "fresh");
  t.false(ledger.signers.has(Buffer.from(alice).toString("latin1")));
});

testProp(
  "the signers kept are always the most recently seen ones, in the order last seen",
  [
    fc.integer({ min: 1, max: 6 }),
    fc.array(fc.tuple(fc.integer({ min: 0, max: 9 }), fc.integer({ min: 0, max: 40 })), { maxLength: 400 }),
  ],
  (t, maxSigners, records) => {
    const ledger = createReplayLedger({ windowSeqs: 32, maxSigners });
    const order: string[] = [];
    records.forEach(([who, seq], step) => {
      const key = Buffer.from(signer(who)).toString("latin1");
      // Expiries rise with every message, so a raised floor never hides the order.
      const result = verdict(ledger, signer(who), seq, nowMs + 1_000_000 + step);
      if (result !== "fresh") return;
      const at = order.indexOf(key);
      if (at >= 0) order.splice(at, 1);
      else if (order.length >= maxSigners) order.shift();
      order.push(key);
    });
    t.deepEqual([...ledger.signers.keys()], order);
  },
  { numRuns: 300 },
);

type Op =
  | { kind: "send"; who: number; seq: number; lifetimeMs: number; advanceMs: number }
  | { kind: "replay"; pick: number; advanceMs: number };

const ops: fc.Arbitrary<Op[]> = fc.array(
  fc.oneof(
    fc.record({
      kind: fc.constant("send" as const),
      who: fc.integer({ min: 0, max: 5 }),
      seq: fc.integer({ min: 0, max: 80 }),
      lifetimeMs: fc.integer({ min: 0, max: 120_000 }),
      advanceMs: fc.integer({ min: 0, max: 20_000 }),
    }),
    fc.record({ kind: fc.constant("replay" as const), pick: fc.nat(), advanceMs: fc.integer({ min: 0, max: 20_000 }) }),
  ),
  { maxLength: 200 },
);

testProp(
  "with few signers remembered, no message is ever fresh twice while it is still valid",
  [fc.integer({ min: 1, max: 4 }), ops],
  (t, maxSigners, script) => {
    const ledger = createReplayLedger({ windowSeqs: 32, maxSigners });
    const accepted: { who: number; seq: number; expiresAtMs: number }[] = [];
    let at = nowMs;
    for (const op of script) {
      at += op.advanceMs;
      const message =
        op.kind === "send"
          ? { who: op.who, seq: op.seq, expiresAtMs: at + op.lifetimeMs }
          : accepted[op.pick % Math.max(accepted.length, 1)];
      if (message === undefined) continue;
      // The caller records only messages that passed the time check.
      if (message.expiresAtMs + maxClockSkewMs < at) continue;
      const result = verdict(ledger, signer(message.who), message.seq, message.expiresAtMs, at);
      t.true(ledger.signers.size <= maxSigners);
      const seenBefore = accepted.some(
        (earlier) =>
          earlier.who === message.who && earlier.seq === message.seq && earlier.expiresAtMs === message.expiresAtMs,
      );
      if (seenBefore && result === "fresh") {
        t.fail(`signer ${message.who} seq ${message.seq} accepted twice while valid at ${at}`);
        return;
      }
      if (result === "fresh") accepted.push(message);
    }
    t.pass();
  },
  { numRuns: 500 },
);

// --- snapshot and restore ----------------------------------------------------------------

const snapshotOps = fc.array(
  fc.tuple(fc.integer({ min: 0, max: 6 }), seqArb, fc.integer({ min: -10_000, max: 120_000 })),
  { maxLength: 120 },
);

testProp(
  "a restored snapshot gives the same verdicts as the ledger it was taken from",
  [
    fc.constantFrom<ReplayLedgerLimits>({ windowSeqs: 32, maxSigners: 3 }, { windowSeqs: 64, maxSigners: 16 }),
    snapshotOps,
    snapshotOps,
  ],
  (t, limits, before, after) => {
    const original = createReplayLedger(limits);
    for (const [who, seq, lifetimeMs] of before) recordSeq(original, signer(who), seq, nowMs + lifetimeMs, nowMs);
    const snapshot = snapshotReplayLedger(original);
    // The snapshot survives a trip through JSON, as a store would keep it.
    const restored = restoreReplayLedger(JSON.parse(JSON.stringify(snapshot)));
    t.deepEqual(snapshotReplayLedger(restored), snapshot);
    t.is(restored.floorExpiresAtMs, original.floorExpiresAtMs);
    for (const [who, seq, lifetimeMs] of after) {
      const later = nowMs + 1_000;
      const a = verdict(original, signer(who), seq, later + lifetimeMs, later);
      const b = verdict(restored, signer(who), seq, later + lifetimeMs, later);
      if (a !== b) {
        t.fail(`signer ${who} seq ${seq}: original says ${a}, restored says ${b}`);
        return;
      }
    }
    t.deepEqual(snapshotReplayLedger(restored), snapshotReplayLedger(original));
  },
  { numRuns: 200 },
);

test("a snapshot is plain data and shares nothing with the ledger", (t) => {
  const ledger = createReplayLedger({ windowSeqs: 32, maxSigners: 1 });
  recordSeq(ledger, alice, 10, expiresAtMs, nowMs);
  recordSeq(ledger, bob, 3, expiresAtMs, nowMs); // forgets Alice, raises the floor
  const snapshot = snapshotReplayLedger(ledger);
  t.is(snapshot.floorExpiresAtMs, expiresAtMs);
  t.deepEqual(JSON.parse(JSON.stringify(snapshot)), snapshot);
  t.is(snapshot.signers[0]?.key, Buffer.from(bob).toString("hex"));
  const restored = restoreReplayLedger(snapshot);
  t.is(verdict(restored, bob, 3, expiresAtMs + 1), "replay");
  t.is(verdict(restored, alice, 10, expiresAtMs), "forgotten");
  // Using the restored ledger does not touch the original or the snapshot.
  t.is(verdict(restored, bob, 4, expiresAtMs + 1), "fresh");
  t.is(verdict(ledger, bob, 4, expiresAtMs + 1), "fresh");
  t.is(snapshot.signers[0]?.highestSeq, 3);
  const empty = snapshotReplayLedger(createReplayLedger());
  t.is(empty.floorExpiresAtMs, null);
  t.is(restoreReplayLedger(empty).floorExpiresAtMs, Number.NEGATIVE_INFINITY);
});

// --- memory bound --------------------------------------------------------------------------

/** global.gc when node runs with --expose-gc (see the ava section of package.json), else one made on the spot. */
function garbageCollector(): () => void {
  const exposed = (globalThis as { gc?: () => void }).gc;
  if (typeof exposed === "function") return exposed;
  setFlagsFromString("--expose-gc");
  return runInNewContext("gc") as () => void;
}

test("a million distinct signers never hold more than maxSigners windows, nor more memory than they bound", (t) => {
  const gc = garbageCollector();
  const limits = defaultReplayLedgerLimits;
  const signers = 1_000_000;
  gc();
  const heapBefore = process.memoryUsage().heapUsed;
  const ledger = createReplayLedger();
  const key = new Uint8Array(32);
  const view = new DataView(key.buffer);
  let largest = 0;
  let notFresh = 0;
  for (let i = 0; i < signers; i++) {
    view.setUint32(0, i);
    view.setUint32(28, i ^ 0x5a5a5a5a);
    // A clock that moves 1 ms per message, each message valid for 1 s: a forgotten signer's messages have expired.
    const at = nowMs + i;
    if (recordSeq(ledger, key, i % 1000, at + 1_000, at).verdict !== "fresh") notFresh++;
    if (ledger.signers.size > largest) largest = ledger.signers.size;
  }
  t.is(notFresh, 0);
  t.is(largest, limits.maxSigners);
  t.true(ledger.signers.size <= limits.maxSigners);
  t.is(ledger.floorExpiresAtMs, Number.NEGATIVE_INFINITY);
  gc();
  const growth = process.memoryUsage().heapUsed - heapBefore;
  const bound = limits.maxSigners * 1024;
  t.log(`heap growth ${Math.round(growth / 1024)} KiB for ${ledger.signers.size} signers (bound ${bound / 1024} KiB)`);
  t.true(growth < bound, `heap grew by ${growth} bytes, bound ${bound}`);
  // Still working after all that: the newest signer's number is a replay.
  t.is(verdict(ledger, key, (signers - 1) % 1000, nowMs + signers + 1_000, nowMs + signers), "replay");
});

test("a flood of signers with long-lived messages stays bounded: later expiries pass the floor, equal ones are refused", (t) => {
  const limits = { windowSeqs: 32, maxSigners: 1_000 };
  // Expiry rising with the clock: each forgotten signer raises the floor to its own expiry,
  // which every later signer's message passes.
  const rising = createReplayLedger(limits);
  for (let i = 0; i < 100_000; i++) {
    const at = nowMs + i;
    const result = verdict(rising, signer(i), 0, at + 3_600_000, at);
    if (result !== "fresh" || rising.signers.size > limits.maxSigners) {
      t.fail(`signer ${i}: ${result}, ${rising.signers.size} signers`);
      return;
    }
  }
  t.is(rising.floorExpiresAtMs, nowMs + 100_000 - limits.maxSigners - 1 + 3_600_000);
  // All messages expiring at the same instant: once one signer is forgotten, the floor reaches that
  // instant and the ledger refuses what it could not tell apart from a replay.
  const level = createReplayLedger(limits);
  const verdicts = new Map<ReplayVerdict, number>();
  for (let i = 0; i < 100_000; i++) {
    const result = verdict(level, signer(i), 0, nowMs + 3_600_000, nowMs);
    verdicts.set(result, (verdicts.get(result) ?? 0) + 1);
    if (level.signers.size > limits.maxSigners) {
      t.fail(`${level.signers.size} signers after ${i}`);
      return;
    }
  }
  t.deepEqual(Object.fromEntries(verdicts), {
    fresh: limits.maxSigners + 1,
    forgotten: 100_000 - limits.maxSigners - 1,
  });
  t.is(level.floorExpiresAtMs, nowMs + 3_600_000);
});
