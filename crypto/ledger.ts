/**
 * Replay ledger: refuses a signer's sequence number it has already seen.
 *
 * Per signer it keeps the anti-replay sliding window of IPsec (RFC 4303
 * §3.4.3, bitmap form of RFC 6479): the highest sequence number seen and a
 * bitmap of the `windowSeqs` numbers below it. Numbers inside the window are
 * accepted once each, in any order; numbers below it are refused as too old.
 *
 * The number of signers is bounded. When a new signer would pass the bound,
 * the least recently seen one is dropped. If any message of the dropped signer
 * could still be fresh, the ledger raises a floor on expiresAtMs, under which
 * it refuses everything: forgetting a signer must never reopen its messages
 * to replay. A message past its expiry is refused by the time check anyway,
 * so a signer whose messages have all expired is dropped for free.
 *
 * State in, state out: recordSeq takes the ledger and returns the one to use
 * next. For speed the ledger is updated in place; the caller must not keep
 * using the one it passed in.
 */
import { maxClockSkewMs } from "./envelope.ts";
import { ReplayError } from "./errors.ts";

export interface ReplayLedgerLimits {
  /** Sequence numbers remembered below the highest, per signer: how far a signer's messages may arrive out of order. */
  readonly windowSeqs: number;
  /** Signers remembered at once. */
  readonly maxSigners: number;
}

export const defaultReplayLedgerLimits: ReplayLedgerLimits = { windowSeqs: 256, maxSigners: 65_536 };

export interface SignerWindow {
  highestSeq: number;
  /** Bit i of the window is sequence number highestSeq - i. */
  readonly bitmap: Uint32Array;
  /** The latest expiresAtMs of any message accepted from this signer. */
  latestExpiresAtMs: number;
}

export interface ReplayLedger {
  readonly limits: ReplayLedgerLimits;
  /** Keyed by the signer's key as latin1 text; in least-recently-seen order. */
  readonly signers: Map<string, SignerWindow>;
  /** Messages expiring at or before this instant are refused: some signer that may have sent them was forgotten. */
  floorExpiresAtMs: number;
}

export type ReplayVerdict = "fresh" | "replay" | "too-old" | "forgotten";

export interface ReplayOutcome {
  readonly ledger: ReplayLedger;
  readonly verdict: ReplayVerdict;
  /** When fresh: the signer's key in `ledger.signers` and its window, as they now are (to persist). */
  readonly recorded?: { readonly key: string; readonly window: SignerWindow };
}

export function createReplayLedger(limits: ReplayLedgerLimits = defaultReplayLedgerLimits): ReplayLedger {
  if (!Number.isInteger(limits.windowSeqs) || limits.windowSeqs < 32 || limits.windowSeqs % 32 !== 0) {
    throw new RangeError(`windowSeqs: expected a positive multiple of 32, got ${limits.windowSeqs}`);
  }
  if (!Number.isInteger(limits.maxSigners) || limits.maxSigners < 1) {
    throw new RangeError(`maxSigners: expected a positive integer, got ${limits.maxSigners}`);
  }
  return { limits, signers: new Map(), floorExpiresAtMs: Number.NEGATIVE_INFINITY };
}

function signerKey(signer: Uint8Array): string {
  return Buffer.from(signer.buffer, signer.byteOffset, signer.byteLength).toString("latin1");
}

function testBit(bitmap: Uint32Array, index: number): boolean {
  return (((bitmap[index >>> 5] as number) >>> (index & 31)) & 1) === 1;
}

function setBit(bitmap: Uint32Array, index: number): void {
  bitmap[index >>> 5] = ((bitmap[index >>> 5] as number) | (1 << (index & 31))) >>> 0;
}

/** Moves the window up by `shift` sequence numbers: bit i becomes bit i + shift. */
function shiftWindow(bitmap: Uint32Array, shift: number): void {
  const words = bitmap.length;
  if (shift >= words * 32) {
    bitmap.fill(0);
    return;
  }
  const wordShift = shift >>> 5;
  const bitShift = shift & 31;
  for (let i = words - 1; i >= 0; i--) {
    const from = i - wordShift;
    const low = from >= 0 ? (bitmap[from] as number) : 0;
    const lower = from - 1 >= 0 ? (bitmap[from - 1] as number) : 0;
    bitmap[i] = bitShift === 0 ? low : ((low << bitShift) | (lower >>> (32 - bitShift))) >>> 0;
  }
}

/**
 * One live iterator per ledger, kept across calls, yields its least recently seen signer.
 * A fresh `signers.entries()` per eviction would walk from the start of the map's
 * table over every entry deleted since its last compaction (up to maxSigners of
 * them), so each new signer would cost time in proportion to maxSigners. A Map
 * iterator skips entries deleted after it was made and visits entries added after
 * it (ECMA-262, CreateMapIterator); makeRoom deletes every entry it is given, so
 * nothing live stands before the iterator and its next entry is the oldest left.
 */
const evictionCursors = new WeakMap<ReplayLedger, Iterator<[string, SignerWindow]>>();

function oldestSigner(ledger: ReplayLedger): [string, SignerWindow] | undefined {
  let cursor = evictionCursors.get(ledger);
  let next = cursor?.next();
  if (cursor === undefined || next === undefined || next.done === true) {
    cursor = ledger.signers.entries();
    evictionCursors.set(ledger, cursor);
    next = cursor.next();
  }
  return next.done === true ? undefined : next.value;
}

function makeRoom(ledger: ReplayLedger, nowMs: number): void {
  while (ledger.signers.size >= ledger.limits.maxSigners) {
    const oldest = oldestSigner(ledger);
    if (oldest === undefined) return;
    const [key, window] = oldest;
    ledger.signers.delete(key);
    if (window.latestExpiresAtMs + maxClockSkewMs >= nowMs && window.latestExpiresAtMs > ledger.floorExpiresAtMs) {
      ledger.floorExpiresAtMs = window.latestExpiresAtMs;
    }
  }
}

/**
 * Records that `signer` sent sequence number `seq` in a message valid until `expiresAtMs`.
 * A verdict other than "fresh" leaves the ledger as it was.
 */
export function recordSeq(
  ledger: ReplayLedger,
  signer: Uint8Array,
  seq: number,
  expiresAtMs: number,
  nowMs: number,
): ReplayOutcome {
  if (expiresAtMs <= ledger.floorExpiresAtMs) return { ledger, verdict: "forgotten" };
  const key = signerKey(signer);
  const window = ledger.signers.get(key);
  if (window === undefined) {
    makeRoom(ledger, nowMs);
    const bitmap = new Uint32Array(ledger.limits.windowSeqs / 32);
    bitmap[0] = 1;
    const created = { highestSeq: seq, bitmap, latestExpiresAtMs: expiresAtMs };
    ledger.signers.set(key, created);
    return { ledger, verdict: "fresh", recorded: { key, window: created } };
  }
  if (seq > window.highestSeq) {
    shiftWindow(window.bitmap, Math.min(seq - window.highestSeq, ledger.limits.windowSeqs));
    window.highestSeq = seq;
    setBit(window.bitmap, 0);
  } else {
    const behind = window.highestSeq - seq;
    if (behind >= ledger.limits.windowSeqs) return { ledger, verdict: "too-old" };
    if (testBit(window.bitmap, behind)) return { ledger, verdict: "replay" };
    setBit(window.bitmap, behind);
  }
  if (expiresAtMs > window.latestExpiresAtMs) window.latestExpiresAtMs = expiresAtMs;
  ledger.signers.delete(key);
  ledger.signers.set(key, window);
  return { ledger, verdict: "fresh", recorded: { key, window } };
}

/** recordSeq for callers that treat anything but "fresh" as an error. */
export function admitSeq(
  ledger: ReplayLedger,
  signer: Uint8Array,
  seq: number,
  expiresAtMs: number,
  nowMs: number,
): ReplayLedger {
  const outcome = recordSeq(ledger, signer, seq, expiresAtMs, nowMs);
  switch (outcome.verdict) {
    case "fresh":
      return outcome.ledger;
    case "replay":
      throw new ReplayError(`got seq ${seq} a second time`);
    case "too-old":
      throw new ReplayError(`got seq ${seq}, more than ${ledger.limits.windowSeqs} below the highest seen`);
    case "forgotten":
      throw new ReplayError(
        `got a message expiring at ${expiresAtMs}, at or before the ledger's floor ${ledger.floorExpiresAtMs}`,
      );
  }
}

/** Plain data for a store: the ledger as JSON-safe values. */
export interface ReplayLedgerSnapshot {
  readonly limits: ReplayLedgerLimits;
  readonly floorExpiresAtMs: number | null;
  readonly signers: readonly { key: string; highestSeq: number; bitmap: number[]; latestExpiresAtMs: number }[];
}

export function snapshotReplayLedger(ledger: ReplayLedger): ReplayLedgerSnapshot {
  return {
    limits: ledger.limits,
    floorExpiresAtMs: Number.isFinite(ledger.floorExpiresAtMs) ? ledger.floorExpiresAtMs : null,
    signers: [...ledger.signers].map(([key, window]) => ({
      key: Buffer.from(key, "latin1").toString("hex"),
      highestSeq: window.highestSeq,
      bitmap: [...window.bitmap],
      latestExpiresAtMs: window.latestExpiresAtMs,
    })),
  };
}

export function restoreReplayLedger(snapshot: ReplayLedgerSnapshot): ReplayLedger {
  const ledger = createReplayLedger(snapshot.limits);
  ledger.floorExpiresAtMs = snapshot.floorExpiresAtMs ?? Number.NEGATIVE_INFINITY;
  for (const entry of snapshot.signers.slice(-snapshot.limits.maxSigners)) {
    const bitmap = new Uint32Array(snapshot.limits.windowSeqs / 32);
    bitmap.set(entry.bitmap.slice(0, bitmap.length));
    ledger.signers.set(Buffer.from(entry.key, "hex").toString("latin1"), {
      highestSeq: entry.highestSeq,
      bitmap,
      latestExpiresAtMs: entry.latestExpiresAtMs,
    });
  }
  return ledger;
}
