/**
 * Projects and keysets (crypto/keyset.ts; DESIGN.md, Trust): a project id that
 * proves itself, keysets accepted only newer, unexpired and signed by the root
 * threshold, root rotation one step at a time, revocation, and recovery from a
 * fast-forward by rotating the roots; the project's masters a keyset names
 * (announcersOf), and the project a keyset names, read before it is judged
 * (keysetProjectOf).
 */
import { fc, testProp } from "@fast-check/ava";
import test, { type ExecutionContext } from "ava";
import {
  AnnouncerNotAuthorizedError,
  acceptKeyset,
  anchorFromGenesis,
  announcersOf,
  CimeshError,
  checkAnnouncer,
  decodeCanonical,
  encodeCanonical,
  type Identity,
  identityFromSeed,
  type KeysetBody,
  KeysetChainError,
  KeysetExpiredError,
  KeysetRollbackError,
  keysetDomain,
  keysetProjectOf,
  maxClockSkewMs,
  maxKeysetLifetimeMs,
  NotYetValidError,
  openAnyEnvelope,
  type ProjectTrust,
  projectIdChars,
  projectIdOf,
  projectIdSchema,
  SchemaError,
  sealEnvelope,
  sealKeyset,
  ThresholdNotMetError,
  trustFromAnchor,
  UnknownDomainError,
} from "../crypto/index.ts";
import { messageDomains, messageRegistry } from "../jobs/index.ts";
import { arbitraries, arbSeed } from "./arbitraries.ts";

const nowMs = 1_800_000_000_000;
const hourMs = 60 * 60 * 1000;
const dayMs = 24 * hourMs;

function identity(n: number): Identity {
  return identityFromSeed(new Uint8Array(32).fill(n));
}

// Genesis roots (rootVersion 1), the roots after a rotation, announcers (masters), and a key nobody trusts.
const [a1, a2, a3] = [identity(0x11), identity(0x12), identity(0x13)] as [Identity, Identity, Identity];
const [b1, b2, b3] = [identity(0x21), identity(0x22), identity(0x23)] as [Identity, Identity, Identity];
const [c1, c2] = [identity(0x31), identity(0x32)] as [Identity, Identity];
const [m1, m2] = [identity(0x41), identity(0x42)] as [Identity, Identity];
const stranger = identity(0x51);

const keysOf = (ids: readonly Identity[]) => ids.map((id) => id.publicKey);
const anchor = anchorFromGenesis(keysOf([a1, a2, a3]), 2);
const project = anchor.project;
const genesis = trustFromAnchor(anchor);

function keyset(rootVersion: number, version: number, overrides: Partial<KeysetBody> = {}): KeysetBody {
  return {
    project,
    rootVersion,
    version,
    issuedAtMs: nowMs,
    expiresAtMs: nowMs + 30 * dayMs,
    roots: keysOf([a1, a2, a3]),
    threshold: 2,
    announcers: [
      { key: m1.publicKey, label: "master-1", expiresAtMs: nowMs + 30 * dayMs },
      { key: m2.publicKey, label: "master-2", expiresAtMs: nowMs + 30 * dayMs },
    ],
    ...overrides,
  };
}

const rootsB = { roots: keysOf([b1, b2, b3]), threshold: 2 };
const rootsC = { roots: keysOf([c1, c2]), threshold: 2 };

function accept(trust: ProjectTrust, body: KeysetBody, signers: readonly Identity[], at = nowMs): ProjectTrust {
  return acceptKeyset(trust, sealKeyset(body, signers), at);
}

function refused<E extends Error>(
  t: ExecutionContext,
  run: () => unknown,
  errorClass: abstract new (...args: never[]) => E,
  message?: RegExp,
): E | undefined {
  const error = t.throws(run, message === undefined ? { instanceOf: errorClass } : { instanceOf: errorClass, message });
  t.true(error instanceof CimeshError);
  return error as E | undefined;
}

/** Trust after the first keyset (1, 1). */
const v1 = accept(genesis, keyset(1, 1), [a1, a2]);

// --- project ids -------------------------------------------------------------------

test("a project id follows from its roots and threshold, whatever their order", (t) => {
  const id = projectIdOf(keysOf([a1, a2, a3]), 2);
  t.is(id.length, projectIdChars);
  t.true(projectIdSchema.safeParse(id).success);
  t.is(projectIdOf(keysOf([a1, a2, a3]), 2), id);
  t.is(projectIdOf(keysOf([a3, a1, a2]), 2), id);
  t.is(anchor.project, id);
  t.is(anchorFromGenesis(keysOf([a2, a3, a1]), 2).project, id);
});

test("a project id differs for other roots or another threshold", (t) => {
  const id = projectIdOf(keysOf([a1, a2, a3]), 2);
  const others = [
    projectIdOf(keysOf([a1, a2, a3]), 1),
    projectIdOf(keysOf([a1, a2, a3]), 3),
    projectIdOf(keysOf([a1, a2]), 2),
    projectIdOf(keysOf([a1, a2, b3]), 2),
    projectIdOf(keysOf([b1, b2, b3]), 2),
  ];
  for (const other of others) t.not(other, id);
  t.is(new Set(others).size, others.length);
});

test("anchorFromGenesis refuses a threshold outside 1..roots", (t) => {
  refused(t, () => anchorFromGenesis(keysOf([a1, a2]), 0), SchemaError);
  refused(t, () => anchorFromGenesis(keysOf([a1, a2]), 3), SchemaError);
});

// --- accepting ---------------------------------------------------------------------

test("the first keyset is accepted from the pinned roots", (t) => {
  t.deepEqual(v1.keyset, keyset(1, 1));
  t.is(v1.anchor, anchor);
  t.truthy(v1.keysetBytes);
  // The stored bytes are the envelope itself: accepting them again on a fresh node gives the same trust.
  t.deepEqual(acceptKeyset(genesis, v1.keysetBytes as Uint8Array, nowMs), v1);
  // Any two roots make the threshold, and all three do too.
  t.notThrows(() => accept(genesis, keyset(1, 1), [a2, a3]));
  t.notThrows(() => accept(genesis, keyset(1, 1), [a3, a1, a2]));
});

test("an announcer of the accepted keyset may announce", (t) => {
  t.is(checkAnnouncer(v1, m1.publicKey, nowMs).label, "master-1");
  t.is(checkAnnouncer(v1, m2.publicKey, nowMs).label, "master-2");
});

test("a newer keyset is accepted, and version may jump", (t) => {
  const v2 = accept(v1, keyset(1, 2), [a1, a3]);
  t.is(v2.keyset?.version, 2);
  const v10 = accept(v2, keyset(1, 10), [a2, a3]);
  t.is(v10.keyset?.version, 10);
  t.is(v10.keyset?.rootVersion, 1);
});

test("rollback: a keyset not newer than the trusted one is KeysetRollbackError", (t) => {
  const v5 = accept(v1, keyset(1, 5), [a1, a2]);
  refused(t, () => accept(v5, keyset(1, 4), [a1, a2]), KeysetRollbackError, /\(rootVersion 1, version 5\)/);
  refused(t, () => accept(v5, keyset(1, 1), [a1, a2]), KeysetRollbackError);
  // The same version again, as the same bytes or with other content.
  refused(t, () => acceptKeyset(v5, v5.keysetBytes as Uint8Array, nowMs), KeysetRollbackError);
  refused(t, () => accept(v5, keyset(1, 5, { announcers: [] }), [a1, a2]), KeysetRollbackError);
  const error = refused(t, () => accept(v5, keyset(1, 5), [a1, a2, a3]), KeysetRollbackError);
  t.is(error?.code, "ERR_KEYSET_ROLLBACK");
});

test("rollback: after a root rotation, any keyset of the old rootVersion is KeysetRollbackError", (t) => {
  const rotated = accept(v1, keyset(2, 1, rootsB), [a1, a2, b1, b2]);
  refused(t, () => accept(rotated, keyset(1, 2), [a1, a2]), KeysetRollbackError);
  refused(t, () => accept(rotated, keyset(1, 1_000_000), [a1, a2, a3]), KeysetRollbackError);
});

test("freeze: an expired keyset is KeysetExpiredError, on a fresh node and on one that trusts an older keyset", (t) => {
  const expired = keyset(1, 2, { issuedAtMs: nowMs - 10 * dayMs, expiresAtMs: nowMs - dayMs });
  const error = refused(t, () => accept(genesis, expired, [a1, a2]), KeysetExpiredError);
  t.is(error?.code, "ERR_KEYSET_EXPIRED");
  refused(t, () => accept(v1, expired, [a1, a2]), KeysetExpiredError);
  // Within the clock skew it still counts.
  const justExpired = keyset(1, 2, { issuedAtMs: nowMs - 10 * dayMs, expiresAtMs: nowMs - maxClockSkewMs });
  t.notThrows(() => accept(v1, justExpired, [a1, a2]));
  const pastSkew = keyset(1, 2, { issuedAtMs: nowMs - 10 * dayMs, expiresAtMs: nowMs - maxClockSkewMs - 1 });
  refused(t, () => accept(v1, pastSkew, [a1, a2]), KeysetExpiredError);
});

test("freeze: once the trusted keyset expires, checkAnnouncer is KeysetExpiredError", (t) => {
  const shortLived = accept(v1, keyset(1, 2, { expiresAtMs: nowMs + dayMs }), [a1, a2]);
  const edge = nowMs + dayMs + maxClockSkewMs;
  t.notThrows(() => checkAnnouncer(shortLived, m1.publicKey, edge));
  refused(t, () => checkAnnouncer(shortLived, m1.publicKey, edge + 1), KeysetExpiredError);
  // And a node that never saw a newer keyset stays frozen until it does.
  const renewed = accept(
    shortLived,
    keyset(1, 3, { issuedAtMs: edge, expiresAtMs: edge + 30 * dayMs }),
    [a1, a2],
    edge + 1,
  );
  t.notThrows(() => checkAnnouncer(renewed, m1.publicKey, edge + 1));
});

test("a keyset issued in the future (beyond the skew) is NotYetValidError", (t) => {
  const future = keyset(1, 2, { issuedAtMs: nowMs + maxClockSkewMs + 1, expiresAtMs: nowMs + 30 * dayMs });
  refused(t, () => accept(v1, future, [a1, a2]), NotYetValidError);
  const withinSkew = keyset(1, 2, { issuedAtMs: nowMs + maxClockSkewMs, expiresAtMs: nowMs + 30 * dayMs });
  t.notThrows(() => accept(v1, withinSkew, [a1, a2]));
});

test("threshold: 2-of-3 roots with only one signature is ThresholdNotMetError", (t) => {
  const error = refused(
    t,
    () => accept(genesis, keyset(1, 1), [a1]),
    ThresholdNotMetError,
    /by the current roots, got 1$/,
  );
  t.is(error?.code, "ERR_THRESHOLD_NOT_MET");
  refused(t, () => accept(v1, keyset(1, 2), [a3]), ThresholdNotMetError);
});

test("threshold: a signature by a key that is not a root does not count", (t) => {
  refused(t, () => accept(v1, keyset(1, 2), [a1, stranger]), ThresholdNotMetError, /got 1$/);
  refused(t, () => accept(v1, keyset(1, 2), [m1, m2]), ThresholdNotMetError, /got 0$/);
  refused(t, () => accept(v1, keyset(1, 2), [b1, b2, b3]), ThresholdNotMetError, /got 0$/);
});

test("a keyset for another project is KeysetChainError", (t) => {
  const otherProject = projectIdOf(keysOf([b1, b2, b3]), 2);
  const error = refused(
    t,
    () => accept(v1, keyset(1, 2, { project: otherProject }), [a1, a2]),
    KeysetChainError,
    /^keyset\.project: /,
  );
  t.is(error?.code, "ERR_KEYSET_CHAIN");
  // Even when that project's own roots signed it.
  refused(t, () => accept(genesis, keyset(1, 1, { project: otherProject, ...rootsB }), [b1, b2]), KeysetChainError);
});

test("roots or threshold changed within one rootVersion is KeysetChainError", (t) => {
  refused(t, () => accept(v1, keyset(1, 2, rootsB), [a1, a2, b1, b2]), KeysetChainError, /^keyset\.roots: /);
  refused(t, () => accept(v1, keyset(1, 2, { threshold: 1 }), [a1, a2, a3]), KeysetChainError, /^keyset\.roots: /);
  refused(t, () => accept(v1, keyset(1, 2, { roots: keysOf([a1, a2]) }), [a1, a2]), KeysetChainError);
  // On a fresh node: the same roots under another threshold is not the pinned project either.
  refused(t, () => accept(genesis, keyset(1, 1, { threshold: 3 }), [a1, a2, a3]), KeysetChainError);
});

// --- root rotation -----------------------------------------------------------------

test("rotation: rootVersion + 1 signed by the old threshold and the new threshold is accepted", (t) => {
  const rotated = accept(v1, keyset(2, 1, rootsB), [a1, a3, b2, b3]);
  t.is(rotated.keyset?.rootVersion, 2);
  t.deepEqual(rotated.keyset?.roots, rootsB.roots);
  // From now on the new roots speak for the project, and the old ones do not.
  const next = accept(rotated, keyset(2, 2, rootsB), [b1, b2]);
  t.is(next.keyset?.version, 2);
  refused(t, () => accept(rotated, keyset(2, 2, rootsB), [a1, a2, a3]), ThresholdNotMetError, /current roots/);
  // The project id stays the one of the genesis roots.
  t.is(next.anchor.project, project);
  t.is(next.keyset?.project, project);
});

test("rotation: signed only by the old roots is ThresholdNotMetError for the new roots", (t) => {
  refused(t, () => accept(v1, keyset(2, 1, rootsB), [a1, a2, a3]), ThresholdNotMetError, /by the new roots, got 0$/);
  refused(t, () => accept(v1, keyset(2, 1, rootsB), [a1, a2, b1]), ThresholdNotMetError, /by the new roots, got 1$/);
});

test("rotation: signed only by the new roots is ThresholdNotMetError for the current roots", (t) => {
  refused(t, () => accept(v1, keyset(2, 1, rootsB), [b1, b2, b3]), ThresholdNotMetError, /by the current roots/);
});

test("rotation: skipping a rootVersion is KeysetChainError", (t) => {
  refused(t, () => accept(v1, keyset(3, 1, rootsB), [a1, a2, b1, b2]), KeysetChainError, /^keyset\.rootVersion: /);
  const rotated = accept(v1, keyset(2, 1, rootsB), [a1, a2, b1, b2]);
  refused(t, () => accept(rotated, keyset(4, 1, rootsC), [b1, b2, c1, c2]), KeysetChainError);
  // One step at a time works.
  const twice = accept(rotated, keyset(3, 1, rootsC), [b1, b2, c1, c2]);
  t.is(twice.keyset?.rootVersion, 3);
  // A node pinned to the genesis roots cannot jump to the third roots without the step between.
  refused(t, () => accept(genesis, keyset(3, 1, rootsC), [b1, b2, c1, c2]), ThresholdNotMetError);
});

test("rotation: a node that pinned the genesis roots accepts a first keyset that rotates away from them", (t) => {
  const fresh = accept(genesis, keyset(2, 1, rootsB), [a1, a2, b1, b2]);
  t.deepEqual(fresh.keyset?.roots, rootsB.roots);
  refused(t, () => accept(genesis, keyset(2, 1, rootsB), [b1, b2, b3]), ThresholdNotMetError);
  refused(t, () => accept(genesis, keyset(2, 1, rootsB), [a1, a2, a3]), ThresholdNotMetError, /new roots/);
});

// --- revocation and delegation expiry -------------------------------------------------

test("revocation: an announcer absent from the newest keyset is AnnouncerNotAuthorizedError", (t) => {
  const onlyM1 = keyset(1, 2, { announcers: [{ key: m1.publicKey, label: "master-1", expiresAtMs: nowMs + dayMs }] });
  const v2 = accept(v1, onlyM1, [a1, a2]);
  t.notThrows(() => checkAnnouncer(v2, m1.publicKey, nowMs));
  const error = refused(t, () => checkAnnouncer(v2, m2.publicKey, nowMs), AnnouncerNotAuthorizedError);
  t.is(error?.code, "ERR_ANNOUNCER_NOT_AUTHORIZED");
  t.regex(error?.message ?? "", new RegExp(project));
  // The trust passed in still holds version 1, where m2 was listed.
  t.notThrows(() => checkAnnouncer(v1, m2.publicKey, nowMs));
});

test("an announcer never listed, or asked before any keyset is trusted, is AnnouncerNotAuthorizedError", (t) => {
  refused(t, () => checkAnnouncer(v1, stranger.publicKey, nowMs), AnnouncerNotAuthorizedError);
  refused(t, () => checkAnnouncer(v1, a1.publicKey, nowMs), AnnouncerNotAuthorizedError);
  refused(t, () => checkAnnouncer(genesis, m1.publicKey, nowMs), AnnouncerNotAuthorizedError, /no keyset/);
});

test("an announcer whose own expiresAtMs passed is AnnouncerNotAuthorizedError while the keyset is still valid", (t) => {
  const brief = keyset(1, 2, {
    announcers: [
      { key: m1.publicKey, label: "master-1", expiresAtMs: nowMs + hourMs },
      { key: m2.publicKey, label: "master-2", expiresAtMs: nowMs + 30 * dayMs },
    ],
  });
  const v2 = accept(v1, brief, [a1, a2]);
  const edge = nowMs + hourMs + maxClockSkewMs;
  t.notThrows(() => checkAnnouncer(v2, m1.publicKey, edge));
  refused(t, () => checkAnnouncer(v2, m1.publicKey, edge + 1), AnnouncerNotAuthorizedError, /expired/);
  t.notThrows(() => checkAnnouncer(v2, m2.publicKey, edge + 1));
});

// --- fast-forward recovery --------------------------------------------------------------

test("fast-forward: a keyset pushed to version 2^40 is overtaken by rotating the roots", (t) => {
  const pushed = accept(v1, keyset(1, 2 ** 40, { announcers: [] }), [a1, a2]);
  t.is(pushed.keyset?.version, 2 ** 40);
  // The honest next version now looks like a rollback.
  refused(t, () => accept(pushed, keyset(1, 2), [a1, a2]), KeysetRollbackError);
  // The first keyset of the next rootVersion overtakes it, whatever its version.
  const recovered = accept(pushed, keyset(2, 1, rootsB), [a1, a2, b1, b2]);
  t.deepEqual(recovered.keyset, keyset(2, 1, rootsB));
  t.notThrows(() => checkAnnouncer(recovered, m1.publicKey, nowMs));
  const later = accept(recovered, keyset(2, 2, rootsB), [b2, b3]);
  t.is(later.keyset?.version, 2);
  // The pushed line cannot come back.
  refused(t, () => accept(later, keyset(1, 2 ** 40 + 1), [a1, a2]), KeysetRollbackError);
});

// --- a refused keyset costs nothing -------------------------------------------------------

test("a refused keyset leaves the trust passed in unchanged; an accepted one returns a new trust", (t) => {
  const before = structuredClone(v1);
  const attempts: [string, () => unknown][] = [
    ["rollback", () => accept(v1, keyset(1, 1), [a1, a2])],
    ["threshold", () => accept(v1, keyset(1, 2), [a1])],
    ["expired", () => accept(v1, keyset(1, 2, { issuedAtMs: 0, expiresAtMs: dayMs }), [a1, a2])],
    ["chain", () => accept(v1, keyset(3, 1, rootsB), [a1, a2, b1, b2])],
    ["rotation", () => accept(v1, keyset(2, 1, rootsB), [a1, a2])],
    ["project", () => accept(v1, keyset(1, 2, { project: projectIdOf(keysOf([b1]), 1) }), [a1, a2])],
    ["garbage", () => acceptKeyset(v1, Uint8Array.of(0x83, 0x00), nowMs)],
  ];
  for (const [name, attempt] of attempts) {
    const error = t.throws(attempt, undefined, name);
    t.true(error instanceof CimeshError, name);
    t.deepEqual(v1, before, name);
  }
  const v2 = accept(v1, keyset(1, 2), [a1, a2]);
  t.not(v2, v1);
  t.deepEqual(v1, before);
  t.is(v1.keyset?.version, 1);
  t.is(v2.keyset?.version, 2);
});

// --- the keyset envelope itself -----------------------------------------------------------

test("a keyset body its schema refuses is never sealed nor accepted", (t) => {
  t.is(refused(t, () => sealKeyset(keyset(1, 2, { threshold: 4 }), [a1, a2]), SchemaError)?.field, "body.threshold");
  t.is(
    refused(t, () => sealKeyset(keyset(1, 2, { roots: keysOf([a1, a1, a2]) }), [a1, a2]), SchemaError)?.field,
    "body.roots",
  );
  t.is(
    refused(t, () => sealKeyset(keyset(1, 2, { expiresAtMs: nowMs + maxKeysetLifetimeMs + 1 }), [a1, a2]), SchemaError)
      ?.field,
    "body.expiresAtMs",
  );
  t.is(refused(t, () => sealKeyset(keyset(0, 1), [a1, a2]), SchemaError)?.field, "body.rootVersion");
  t.is(refused(t, () => sealKeyset(keyset(1, 0), [a1, a2]), SchemaError)?.field, "body.version");
});

test("a keyset envelope with any bit flipped is refused with a CimeshError", (t) => {
  const bytes = v1.keysetBytes as Uint8Array;
  t.true(bytes.length > 0);
  for (let index = 0; index < bytes.length; index++) {
    const changed = Uint8Array.from(bytes);
    changed[index] = (changed[index] as number) ^ (1 << (index % 8));
    const error = t.throws(() => acceptKeyset(genesis, changed, nowMs), undefined, `byte ${index}`);
    t.true(error instanceof CimeshError, `byte ${index}: ${String(error)}`);
  }
});

test("a keyset never passes as a single-signed message, nor a root's signature on it as one", (t) => {
  const bytes = v1.keysetBytes as Uint8Array;
  refused(t, () => openAnyEnvelope(messageRegistry, bytes, nowMs), SchemaError);
  const [tag, body, pairs] = decodeCanonical(bytes) as [string, unknown, [Uint8Array, Uint8Array][]];
  t.is(tag, keysetDomain.tag);
  const [signer, signature] = pairs[0] as [Uint8Array, Uint8Array];
  const single = encodeCanonical([tag, body, signer, signature]);
  refused(t, () => openAnyEnvelope(messageRegistry, single, nowMs), UnknownDomainError);
});

testProp(
  "within one rootVersion, a run of offered versions is accepted exactly when each beats the highest so far",
  [fc.array(fc.integer({ min: 1, max: 12 }), { minLength: 1, maxLength: 8 })],
  (t, versions) => {
    let trust = genesis;
    let highest = 0;
    for (const version of versions) {
      const bytes = sealKeyset(keyset(1, version), [a1, a2]);
      if (version > highest) {
        trust = acceptKeyset(trust, bytes, nowMs);
        highest = version;
      } else {
        t.throws(() => acceptKeyset(trust, bytes, nowMs), { instanceOf: KeysetRollbackError });
      }
      t.is(trust.keyset?.version, highest);
    }
  },
  { numRuns: 100 },
);

// --- the project's masters: where workers send their offers ---------------------------------

const hexOfKey = (identity: Identity) => Buffer.from(identity.publicKey).toString("hex");

test("announcersOf: none before any keyset is trusted; then the keyset's announcers as hex, sorted, each once", (t) => {
  t.deepEqual(announcersOf(genesis, nowMs), []);
  t.deepEqual(announcersOf(v1, nowMs), [hexOfKey(m1), hexOfKey(m2)].sort());
  const twice = accept(
    v1,
    keyset(1, 2, {
      announcers: [
        { key: m2.publicKey, label: "master-2", expiresAtMs: nowMs + dayMs },
        { key: m1.publicKey, label: "master-1", expiresAtMs: nowMs + dayMs },
        { key: m2.publicKey, label: "master-2 again", expiresAtMs: nowMs + 2 * dayMs },
      ],
    }),
    [a1, a2],
  );
  t.deepEqual(announcersOf(twice, nowMs), [hexOfKey(m1), hexOfKey(m2)].sort());
});

test("announcersOf: a runner is no master, and an announcer dropped from the newest keyset is no longer one", (t) => {
  const withRunner = accept(
    v1,
    keyset(1, 2, {
      announcers: [{ key: m1.publicKey, label: "master-1", expiresAtMs: nowMs + dayMs }],
      runners: [{ key: m2.publicKey, label: "runner", expiresAtMs: nowMs + dayMs }],
    }),
    [a1, a2],
  );
  t.deepEqual(announcersOf(withRunner, nowMs), [hexOfKey(m1)]);
  t.deepEqual(announcersOf(v1, nowMs), [hexOfKey(m1), hexOfKey(m2)].sort(), "the trust passed in is unchanged");
});

test("announcersOf: an announcer whose entry ended, beyond the clock skew, is left out; an expired keyset names none", (t) => {
  const brief = accept(
    v1,
    keyset(1, 2, {
      announcers: [
        { key: m1.publicKey, label: "master-1", expiresAtMs: nowMs + hourMs },
        { key: m2.publicKey, label: "master-2", expiresAtMs: nowMs + 30 * dayMs },
      ],
    }),
    [a1, a2],
  );
  const edge = nowMs + hourMs + maxClockSkewMs;
  t.deepEqual(announcersOf(brief, edge), [hexOfKey(m1), hexOfKey(m2)].sort());
  t.deepEqual(announcersOf(brief, edge + 1), [hexOfKey(m2)]);
  const keysetEdge = nowMs + 30 * dayMs + maxClockSkewMs;
  t.deepEqual(announcersOf(brief, keysetEdge), [hexOfKey(m2)]);
  t.deepEqual(announcersOf(brief, keysetEdge + 1), [], "a frozen keyset names no masters");
});

testProp(
  "announcersOf names exactly the keys checkAnnouncer lets announce, at any time",
  [
    fc.array(fc.tuple(fc.constantFrom(m1, m2, stranger), fc.integer({ min: -2, max: 40 })), { maxLength: 6 }),
    fc.integer({ min: -1, max: 45 }),
  ],
  (t, entries, atDay) => {
    const body = keyset(1, 2, {
      announcers: entries.map(([who, days], i) => ({
        key: who.publicKey,
        label: `announcer ${i}`,
        expiresAtMs: nowMs + days * dayMs,
      })),
    });
    const trust = accept(v1, body, [a1, a2]);
    const atMs = nowMs + atDay * dayMs;
    const allowed = [m1, m2, stranger].filter((who) => {
      try {
        checkAnnouncer(trust, who.publicKey, atMs);
        return true;
      } catch {
        return false;
      }
    });
    const masters = announcersOf(trust, atMs);
    // A key listed twice counts by its first entry, as checkAnnouncer reads it.
    const firstEntries = entries.filter(([who], i) => entries.findIndex(([other]) => other === who) === i);
    const unexpired = firstEntries.filter(([, days]) => nowMs + days * dayMs + maxClockSkewMs >= atMs);
    t.deepEqual(
      masters,
      atMs > nowMs + 30 * dayMs + maxClockSkewMs ? [] : unexpired.map(([who]) => hexOfKey(who)).sort(),
      "the keys whose first entry is unexpired, in an unexpired keyset",
    );
    t.deepEqual(masters, allowed.map(hexOfKey).sort(), "exactly the announcers checkAnnouncer allows");
  },
  { numRuns: 100 },
);

// --- the project a keyset names, before it is judged ----------------------------------------

test("keysetProjectOf reads the project a keyset names, whoever signed it and whether or not it verifies", (t) => {
  t.is(keysetProjectOf(v1.keysetBytes as Uint8Array), project);
  const other = projectIdOf(keysOf([b1]), 1);
  const foreign = sealKeyset(keyset(1, 2, { project: other }), [stranger]);
  t.is(keysetProjectOf(foreign), other, "read, not judged: acceptKeyset judges it");
  const forged = Uint8Array.from(foreign);
  forged[forged.length - 1] = (forged[forged.length - 1] as number) ^ 1;
  t.is(keysetProjectOf(forged), other, "no signature is checked");
  refused(t, () => acceptKeyset(genesis, forged, nowMs), KeysetChainError);
});

test("keysetProjectOf is null for bytes that are no keyset: empty, garbage, or a single-signed message", (t) => {
  t.is(keysetProjectOf(new Uint8Array(0)), null);
  t.is(keysetProjectOf(Uint8Array.of(0x83, 0x00)), null);
  const bid = sealEnvelope(
    messageDomains.bid,
    {
      issuedAtMs: nowMs,
      expiresAtMs: nowMs + hourMs / 60,
      seq: 1,
      project,
      jobId: "job-1",
      round: 0,
      availability: "eager",
      runningJobs: 0,
      freeSlots: 1,
      cachedInputBytes: 0,
    },
    m1,
  );
  t.is(keysetProjectOf(bid), null);
});

testProp(
  "keysetProjectOf gives back the project of any sealed keyset body",
  [arbitraries.keyset, fc.array(arbSeed, { minLength: 1, maxLength: 3 })],
  (t, body, seeds) => {
    t.is(
      keysetProjectOf(
        sealKeyset(
          body,
          seeds.map((seed) => identityFromSeed(seed)),
        ),
      ),
      body.project,
    );
  },
  { numRuns: 100 },
);

testProp(
  "keysetProjectOf never throws: on any bytes, or a keyset with bytes changed, it is a valid project id or null",
  [
    fc.oneof(
      fc.uint8Array({ maxLength: 512 }),
      fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })).map(([at, mask]) => {
        const bytes = Uint8Array.from(v1.keysetBytes as Uint8Array);
        const index = at % bytes.length;
        bytes[index] = (bytes[index] as number) ^ mask;
        return bytes;
      }),
      fc.nat().map((cut) => (v1.keysetBytes as Uint8Array).subarray(0, cut % (v1.keysetBytes as Uint8Array).length)),
    ),
  ],
  (t, bytes) => {
    let named: string | null = null;
    t.notThrows(() => {
      named = keysetProjectOf(bytes);
    });
    if (named !== null) t.true(projectIdSchema.safeParse(named).success, named);
  },
  { numRuns: 500 },
);
