/**
 * DHT keyset records (node/runtime/records.ts keysetRecordRules): the
 * validator refuses each bad kind against the node's pinned roots (expired,
 * future-dated, below threshold, another chain, rolled back) and, for a
 * project it does not pin, at least the time and the threshold of the
 * record's own roots; the selector never prefers what the validator refuses.
 * Then over real hosts: a record an attacker stores is refused and logged by
 * honest nodes, and a fresh node finds the real keyset although the attacker
 * answers with its own.
 */
import test, { type ExecutionContext } from "ava";
import {
  acceptKeyset,
  anchorFromGenesis,
  BadSignatureError,
  type Identity,
  identityFromSeed,
  type KeysetBody,
  KeysetChainError,
  KeysetExpiredError,
  KeysetRollbackError,
  maxClockSkewMs,
  NotYetValidError,
  type ProjectTrust,
  sealKeyset,
  ThresholdNotMetError,
  trustFromAnchor,
} from "../crypto/index.ts";
import { createHost, type Host } from "../node/host/index.ts";
import { keysetRecordRules } from "../node/runtime/index.ts";

const nowMs = 1_800_000_000_000;
const dayMs = 24 * 60 * 60 * 1000;
const boundMs = 30_000;

const identity = (n: number): Identity => identityFromSeed(new Uint8Array(32).fill(n));
const keysOf = (ids: readonly Identity[]) => ids.map((id) => id.publicKey);
const [a1, a2, a3] = [identity(0x61), identity(0x62), identity(0x63)] as [Identity, Identity, Identity];
const [b1, b2] = [identity(0x64), identity(0x65)] as [Identity, Identity];
const [s1, s2] = [identity(0x71), identity(0x72)] as [Identity, Identity];
const announcer = identity(0x73);
const anchor = anchorFromGenesis(keysOf([a1, a2, a3]), 2);
const project = anchor.project;

function body(rootVersion: number, version: number, overrides: Partial<KeysetBody> = {}): KeysetBody {
  return {
    project,
    rootVersion,
    version,
    issuedAtMs: nowMs - dayMs,
    expiresAtMs: nowMs + 30 * dayMs,
    roots: keysOf([a1, a2, a3]),
    threshold: 2,
    announcers: [{ key: announcer.publicKey, label: "master", expiresAtMs: nowMs + 30 * dayMs }],
    ...overrides,
  };
}

const real1 = sealKeyset(body(1, 1), [a1, a2]);
const real2 = sealKeyset(body(1, 2), [a1, a2]);
const expired = sealKeyset(body(1, 5, { issuedAtMs: nowMs - 10 * dayMs, expiresAtMs: nowMs - 2 * dayMs }), [a1, a2]);
const futureDated = sealKeyset(
  body(1, 6, { issuedAtMs: nowMs + maxClockSkewMs + dayMs, expiresAtMs: nowMs + 30 * dayMs }),
  [a1, a2],
);
const belowThreshold = sealKeyset(body(1, 7), [a1]);
/** A keyset of the project by keys that are none of its roots, self-consistent: its own roots signed it. */
const otherChain = sealKeyset(body(1, 999, { roots: keysOf([s1]), threshold: 1 }), [s1]);
/** A root rotation claimed by strangers. */
const strangerRotation = sealKeyset(body(2, 1, { roots: keysOf([s1, s2]), threshold: 2 }), [s1, s2]);
/** A real root rotation: signed by the old threshold and the new one. */
const rotation = sealKeyset(body(2, 1, { roots: keysOf([b1, b2]), threshold: 2 }), [a1, a2, b1, b2]);
/** The newest real keyset with one signature byte changed. */
const badSignature = real2.map((byte, at) => (at === real2.length - 1 ? byte ^ 1 : byte));
/** Below the threshold of its own roots: 2 of [s1, s2] needed, s1 alone signed. */
const selfBelow = sealKeyset(body(1, 8, { roots: keysOf([s1, s2]), threshold: 2 }), [s1]);

const pinnedFresh = new Map<string, ProjectTrust>([[project, trustFromAnchor(anchor)]]);
const pinnedAt2 = new Map<string, ProjectTrust>([[project, acceptKeyset(trustFromAnchor(anchor), real2, nowMs)]]);
const unpinned = new Map<string, ProjectTrust>();
const rulesOf = (trust: ReadonlyMap<string, ProjectTrust>) =>
  keysetRecordRules(
    () => trust,
    () => nowMs,
  );

function refused(
  t: ExecutionContext,
  trust: ReadonlyMap<string, ProjectTrust>,
  bytes: Uint8Array,
  errorClass: abstract new (...args: never[]) => Error,
  what: string,
): void {
  t.throws(() => rulesOf(trust).validate(project, bytes), { instanceOf: errorClass }, what);
}

test("a pinned project: the records that follow from the pinned roots are valid", (t) => {
  t.notThrows(() => rulesOf(pinnedFresh).validate(project, real1));
  t.notThrows(() => rulesOf(pinnedFresh).validate(project, real2));
  t.notThrows(() => rulesOf(pinnedAt2).validate(project, real2), "the keyset the node trusts");
  t.notThrows(() => rulesOf(pinnedAt2).validate(project, rotation), "a root rotation signed by old and new roots");
});

test("a pinned project: expired, future-dated, below-threshold, other-chain and rolled-back records are refused", (t) => {
  refused(t, pinnedFresh, expired, KeysetExpiredError, "expired");
  refused(t, pinnedFresh, futureDated, NotYetValidError, "future-dated");
  refused(t, pinnedFresh, belowThreshold, ThresholdNotMetError, "below threshold");
  refused(t, pinnedFresh, otherChain, ThresholdNotMetError, "signed by other roots");
  refused(t, pinnedAt2, otherChain, KeysetChainError, "other roots, after a keyset");
  refused(t, pinnedAt2, strangerRotation, ThresholdNotMetError, "a rotation not signed by the current roots");
  refused(t, pinnedAt2, real1, KeysetRollbackError, "older than the trusted one");
  refused(t, pinnedFresh, badSignature, BadSignatureError, "a signature that does not verify");
  t.throws(() => rulesOf(pinnedFresh).validate("b".repeat(53), real2), undefined, "under another project's id");
});

test("a project not pinned here: at least the time and the threshold of the record's own roots", (t) => {
  t.notThrows(() => rulesOf(unpinned).validate(project, real2));
  refused(t, unpinned, expired, KeysetExpiredError, "expired");
  refused(t, unpinned, futureDated, NotYetValidError, "future-dated");
  refused(t, unpinned, belowThreshold, ThresholdNotMetError, "below threshold");
  refused(t, unpinned, selfBelow, ThresholdNotMetError, "below the threshold of its own roots");
  refused(t, unpinned, badSignature, BadSignatureError, "a signature that does not verify");
  t.throws(() => rulesOf(unpinned).validate("b".repeat(53), real2), undefined, "under another project's id");
  // Without the pinned roots a chain cannot be checked: a self-consistent keyset passes here, not where it matters.
  t.notThrows(() => rulesOf(unpinned).validate(project, otherChain));
});

test("the selector never prefers a record the validator refuses", (t) => {
  const offered = [otherChain, expired, futureDated, belowThreshold, strangerRotation, real1, real2, selfBelow];
  const pinned = rulesOf(pinnedFresh);
  t.is(offered[pinned.select(project, offered)], real2, "pinned: the newest of the real ones");
  const notPinned = rulesOf(unpinned);
  const chosen = offered[notPinned.select(project, offered)] as Uint8Array;
  t.notThrows(() => notPinned.validate(project, chosen));
  t.true(chosen !== expired && chosen !== futureDated && chosen !== belowThreshold && chosen !== selfBelow);
  t.is(pinned.select(project, [expired, futureDated]), 0, "none valid: the first, which kad never stores");
});

async function until(what: string, check: () => boolean | Promise<boolean>): Promise<void> {
  const deadline = Date.now() + boundMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`expected ${what} within ${boundMs} ms`);
}

test("over real hosts: an attacker's records are refused and logged, and a fresh node finds the real keyset", async (t) => {
  const liveNow = Date.now();
  const live = sealKeyset(body(1, 3, { issuedAtMs: liveNow - dayMs, expiresAtMs: liveNow + 30 * dayMs }), [a1, a2]);
  const forged = sealKeyset(
    body(1, 9_999, {
      issuedAtMs: liveNow - dayMs,
      expiresAtMs: liveNow + 30 * dayMs,
      roots: keysOf([s1]),
      threshold: 1,
    }),
    [s1],
  );
  const staleHigh = sealKeyset(body(1, 9_000, { issuedAtMs: liveNow - 10 * dayMs, expiresAtMs: liveNow - dayMs }), [
    a1,
    a2,
  ]);
  const refusals: Record<string, unknown>[] = [];
  const honest = (seed: number, trust: Map<string, ProjectTrust>, bootstrap: string[]) => {
    const rules = keysetRecordRules(() => trust);
    return createHost({
      identity: identityFromSeed(new Uint8Array(32).fill(seed)),
      listen: ["/ip4/127.0.0.1/tcp/0"],
      bootstrap,
      ipColocationWeight: 0,
      connectionMonitor: false,
      recordValidators: { keyset: rules.validate },
      recordSelectors: { keyset: rules.select },
      log: (event, fields) => {
        if (event === "dht-record-refused") refusals.push(fields);
      },
    });
  };
  const masterTrust = new Map([[project, acceptKeyset(trustFromAnchor(anchor), live, liveNow)]]);
  const hosts: Host[] = [];
  try {
    const master = await honest(0x81, masterTrust, []);
    hosts.push(master);
    const bootstrap = [master.multiaddrs()[0] as string];
    // The attacker stores anything and prefers the last record it got.
    const attacker = await createHost({
      identity: identityFromSeed(new Uint8Array(32).fill(0x82)),
      listen: ["/ip4/127.0.0.1/tcp/0"],
      bootstrap,
      ipColocationWeight: 0,
      connectionMonitor: false,
      recordValidators: { keyset: () => undefined },
      recordSelectors: { keyset: (_id, values) => values.length - 1 },
    });
    hosts.push(attacker);
    const relay = await honest(0x83, new Map(), bootstrap);
    hosts.push(relay);
    await until("connections", () => hosts.every((host) => host.peerCount() >= 2));
    await master.putRecord("keyset", project, live);
    await attacker.putRecord("keyset", project, forged).catch(() => undefined);
    await attacker.putRecord("keyset", project, staleHigh).catch(() => undefined);
    await until(`the forged and the stale record refused and logged (${JSON.stringify(refusals)})`, () => {
      const reasons = new Set(refusals.map((fields) => fields.reason));
      return reasons.has("ERR_KEYSET_CHAIN") && reasons.has("ERR_KEYSET_EXPIRED");
    });
    t.like(
      refusals.find((fields) => fields.reason === "ERR_KEYSET_EXPIRED"),
      { kind: "keyset" },
    );

    const fresh = await honest(0x84, new Map([[project, trustFromAnchor(anchor)]]), bootstrap);
    hosts.push(fresh);
    await until("the fresh node connected", () => fresh.peerCount() >= 3);
    let found: Uint8Array | null = null;
    await until("the keyset found", async () => {
      found = await fresh.getRecord("keyset", project);
      return found !== null;
    });
    t.true(
      Buffer.from(found as unknown as Uint8Array).equals(live),
      "the real keyset, not the attacker's higher versions",
    );
  } finally {
    await Promise.all(hosts.map((host) => host.stop()));
  }
});
