/**
 * Signed envelopes (crypto/envelope.ts). Verification runs its checks in a
 * fixed order, each with its own error: size, canonical form, domain, body
 * schema, time, signature (every check cheaper than a verification comes
 * before it, so a stale message costs its receiver no verification). Each
 * check is tried alone, then against the next one, so a test also fails when
 * two checks swap places.
 */
import { fc, testProp } from "@fast-check/ava";
import test, { type ExecutionContext } from "ava";
import { z } from "zod";
import {
  BadSignatureError,
  CimeshError,
  DomainMismatchError,
  DuplicateKeyError,
  decodeCanonical,
  defineDomain,
  ExpiredError,
  encodeCanonical,
  identityFromSeed,
  MalformedEncodingError,
  maxClockSkewMs,
  maxEnvelopeBytes,
  maxSignaturesPerEnvelope,
  NonCanonicalError,
  NotYetValidError,
  OversizeError,
  openAnyEnvelope,
  openAnyEnvelopeUnverified,
  openEnvelope,
  openMultiEnvelope,
  projectIdOf,
  SchemaError,
  sealEnvelope,
  sealMultiEnvelope,
  signedHeaderShape,
  UnknownDomainError,
} from "../crypto/index.ts";
import { type Bid, bidDomain, maxBidBytes, maxBidLifetimeMs, messageRegistry, resultDomain } from "../jobs/index.ts";

const nowMs = 1_800_000_000_000;
const worker = identityFromSeed(new Uint8Array(32).fill(7));
const stranger = identityFromSeed(new Uint8Array(32).fill(8));
const project = projectIdOf([identityFromSeed(new Uint8Array(32).fill(9)).publicKey], 1);

const bid: Bid = {
  issuedAtMs: nowMs,
  expiresAtMs: nowMs + 60_000,
  seq: 7,
  project,
  jobId: "job-1",
  round: 0,
  availability: "eager",
  runningJobs: 1,
  freeSlots: 3,
  cachedInputBytes: 1234,
};
const sealedBid = sealEnvelope(bidDomain, bid, worker);

// --- building envelopes by hand ------------------------------------------------

function concat(...parts: readonly (Uint8Array | readonly number[])[]): Uint8Array {
  const out: number[] = [];
  for (const part of parts) out.push(...part);
  return Uint8Array.from(out);
}

type Entry = readonly [Uint8Array, Uint8Array];

/** A CBOR map with the given encoded entries in the order given (no sorting, no deduplication). */
function rawMap(entries: readonly Entry[]): Uint8Array {
  if (entries.length > 23) throw new Error("rawMap: at most 23 entries");
  return concat([0xa0 + entries.length], ...entries.flat());
}

/** The entries of a body, each encoded canonically, in canonical order. */
function canonicalEntries(body: Record<string, unknown>): Entry[] {
  return Object.entries(body)
    .map(([key, value]): Entry => [encodeCanonical(key), encodeCanonical(value)])
    .sort(([a], [b]) => Buffer.compare(a, b));
}

/** A single-signer envelope [tag, body, signer, signature] with the body's bytes given raw. */
function rawEnvelope(tag: string, body: Uint8Array, signer: Uint8Array, signature: Uint8Array): Uint8Array {
  return concat([0x84], encodeCanonical(tag), body, encodeCanonical(signer), encodeCanonical(signature));
}

/** The parts of a sealed single-signer envelope. */
function parts(envelope: Uint8Array): {
  tag: string;
  body: Record<string, unknown>;
  signer: Uint8Array;
  sig: Uint8Array;
} {
  const [tag, body, signer, sig] = decodeCanonical(envelope) as [
    string,
    Record<string, unknown>,
    Uint8Array,
    Uint8Array,
  ];
  return { tag, body, signer, sig };
}

/** The bid envelope with its body replaced and the rest (signer, signature) kept. */
function withBody(body: Record<string, unknown>, envelope = sealedBid): Uint8Array {
  const { tag, signer, sig } = parts(envelope);
  return encodeCanonical([tag, body, signer, sig]);
}

function flipped(bytes: Uint8Array, index: number, bit = 0): Uint8Array {
  const out = Uint8Array.from(bytes);
  out[index] = (out[index] as number) ^ (1 << bit);
  return out;
}

function opensAsBid(bytes: Uint8Array, at = nowMs) {
  return () => openEnvelope(bidDomain, bytes, at);
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

// --- the happy path --------------------------------------------------------------

test("a sealed bid opens with its body, signer, domain and bytes", (t) => {
  const verified = openEnvelope(bidDomain, sealedBid, nowMs);
  t.deepEqual(verified.body, bid);
  t.deepEqual(verified.signer, worker.publicKey);
  t.is(verified.domain, bidDomain.tag);
  t.is(verified.bytes, sealedBid);
  const any = openAnyEnvelope(messageRegistry, sealedBid, nowMs);
  t.is(any.domain, bidDomain.tag);
  t.deepEqual(any.body, bid);
});

test("sealing is deterministic: the same body and key give the same bytes", (t) => {
  t.deepEqual(sealEnvelope(bidDomain, { ...bid }, worker), sealedBid);
  t.notDeepEqual(sealEnvelope(bidDomain, { ...bid, seq: 8 }, worker), sealedBid);
});

test("the envelope is [tag, body, signer, signature] in canonical form", (t) => {
  const { tag, body, signer, sig } = parts(sealedBid);
  t.is(tag, bidDomain.tag);
  t.deepEqual(body, bid);
  t.deepEqual(signer, worker.publicKey);
  t.is(sig.length, 64);
  t.deepEqual(encodeCanonical([tag, body, signer, sig]), sealedBid);
});

// --- 1. size ---------------------------------------------------------------------

test("size: more than maxEnvelopeBytes is OversizeError, before the canonical check", (t) => {
  const huge = new Uint8Array(maxEnvelopeBytes + 1).fill(0xff);
  refused(
    t,
    opensAsBid(huge),
    OversizeError,
    new RegExp(`^envelope: expected at most ${maxEnvelopeBytes} bytes, got ${maxEnvelopeBytes + 1}$`),
  );
  refused(t, () => openAnyEnvelope(messageRegistry, huge, nowMs), OversizeError);
  // A well-formed envelope past the limit, too.
  const padded = withBody({ ...bid, padding: "x".repeat(maxEnvelopeBytes) });
  refused(t, opensAsBid(padded), OversizeError, /^envelope:/);
});

test("size: a canonical bid envelope over the bid limit is OversizeError, before domain-specific checks", (t) => {
  // The padding field would be a SchemaError and the signature is stale: size comes first.
  const padded = withBody({ ...bid, padding: "x".repeat(maxBidBytes) });
  t.true(padded.length > maxBidBytes && padded.length < maxEnvelopeBytes);
  t.notThrows(() => decodeCanonical(padded));
  refused(
    t,
    opensAsBid(padded),
    OversizeError,
    new RegExp(`^cimesh/bid/v1 envelope: expected at most ${maxBidBytes} bytes, got ${padded.length}$`),
  );
  refused(t, () => openAnyEnvelope(messageRegistry, padded, nowMs), OversizeError);
});

const noteDomain = defineDomain("test/note/v1", z.strictObject({ ...signedHeaderShape, note: z.string() }), {
  maxBytes: 2048,
  maxLifetimeMs: 60_000,
});
const otherNoteDomain = defineDomain("test/other-note/v1", noteDomain.schema, {
  maxBytes: 2048,
  maxLifetimeMs: 60_000,
});
const note = { issuedAtMs: nowMs, expiresAtMs: nowMs + 1_000, seq: 1, note: "" };

test("size: an envelope of exactly domain.maxBytes is sealed and opened, one byte more is refused both ways", (t) => {
  const empty = sealEnvelope(noteDomain, note, worker);
  // The note's text header grows with its length: find the length that lands on the limit exactly.
  let fillChars = noteDomain.maxBytes - empty.length;
  while (empty.length - 1 + encodeCanonical("n".repeat(fillChars)).length > noteDomain.maxBytes) fillChars--;
  const fill = "n".repeat(fillChars);
  const atLimit = sealEnvelope(noteDomain, { ...note, note: fill }, worker);
  t.is(atLimit.length, noteDomain.maxBytes);
  t.is(openEnvelope(noteDomain, atLimit, nowMs).body.note, fill);
  refused(t, () => sealEnvelope(noteDomain, { ...note, note: `${fill}n` }, worker), OversizeError);
  // Opened under a domain with a smaller limit, the same bytes are too big.
  const tight = defineDomain(noteDomain.tag, noteDomain.schema, {
    maxBytes: noteDomain.maxBytes - 1,
    maxLifetimeMs: 60_000,
  });
  refused(
    t,
    () => openEnvelope(tight, atLimit, nowMs),
    OversizeError,
    new RegExp(
      `^test/note/v1 envelope: expected at most ${noteDomain.maxBytes - 1} bytes, got ${noteDomain.maxBytes}$`,
    ),
  );
});

// --- 2. canonical form -----------------------------------------------------------

test("canonical: body keys out of order is NonCanonicalError", (t) => {
  const { tag, signer, sig } = parts(sealedBid);
  const entries = canonicalEntries(bid as unknown as Record<string, unknown>);
  const unsorted = rawEnvelope(tag, rawMap([...entries].reverse()), signer, sig);
  refused(t, opensAsBid(unsorted), NonCanonicalError);
  // The same entries in canonical order are exactly the sealed envelope.
  t.deepEqual(rawEnvelope(tag, rawMap(entries), signer, sig), sealedBid);
});

test("canonical: an integer written as a float is NonCanonicalError", (t) => {
  const { tag, signer, sig } = parts(sealedBid);
  const entries = canonicalEntries(bid as unknown as Record<string, unknown>).map(
    ([key, value]): Entry => (decodeCanonical(key) === "round" ? [key, Uint8Array.of(0xf9, 0x00, 0x00)] : [key, value]),
  );
  refused(t, opensAsBid(rawEnvelope(tag, rawMap(entries), signer, sig)), NonCanonicalError);
});

test("canonical: an integer with a non-minimal header is MalformedEncodingError", (t) => {
  const { tag, signer, sig } = parts(sealedBid);
  const entries = canonicalEntries(bid as unknown as Record<string, unknown>).map(
    ([key, value]): Entry => (decodeCanonical(key) === "seq" ? [key, Uint8Array.of(0x18, 0x07)] : [key, value]),
  );
  refused(t, opensAsBid(rawEnvelope(tag, rawMap(entries), signer, sig)), MalformedEncodingError);
  // The array header with a one-byte length.
  refused(t, opensAsBid(concat([0x98, 0x04], sealedBid.subarray(1))), MalformedEncodingError);
});

test("canonical: a body naming a key twice is DuplicateKeyError", (t) => {
  const { tag, signer, sig } = parts(sealedBid);
  const entries = canonicalEntries(bid as unknown as Record<string, unknown>);
  const seq = entries.find(([key]) => decodeCanonical(key) === "seq") as Entry;
  const twice = rawEnvelope(tag, rawMap([...entries, seq]), signer, sig);
  refused(t, opensAsBid(twice), DuplicateKeyError);
});

test("canonical: indefinite lengths, tags and undefined are MalformedEncodingError", (t) => {
  const { tag, signer, sig } = parts(sealedBid);
  const body = encodeCanonical(bid);
  // [_ tag, body, signer, signature]
  refused(t, opensAsBid(concat([0x9f], sealedBid.subarray(1), [0xff])), MalformedEncodingError);
  // The body under tag 24 (embedded CBOR).
  refused(t, opensAsBid(rawEnvelope(tag, concat([0xd8, 0x18], body), signer, sig)), MalformedEncodingError);
  // One field undefined.
  const entries = canonicalEntries(bid as unknown as Record<string, unknown>).map(
    ([key, value]): Entry => (decodeCanonical(key) === "round" ? [key, Uint8Array.of(0xf7)] : [key, value]),
  );
  refused(t, opensAsBid(rawEnvelope(tag, rawMap(entries), signer, sig)), MalformedEncodingError);
});

test("canonical comes before domain: a non-canonical envelope of an unknown type is NonCanonicalError", (t) => {
  const { signer, sig } = parts(sealedBid);
  const entries = canonicalEntries(bid as unknown as Record<string, unknown>);
  const bytes = rawEnvelope("cimesh/nope/v1", rawMap([...entries].reverse()), signer, sig);
  refused(t, () => openAnyEnvelope(messageRegistry, bytes, nowMs), NonCanonicalError);
  refused(t, () => openEnvelope(resultDomain, bytes, nowMs), NonCanonicalError);
});

// --- 3. domain -------------------------------------------------------------------

test("domain: an unknown tag is UnknownDomainError via openAnyEnvelope", (t) => {
  const { body, signer, sig } = parts(sealedBid);
  const bytes = encodeCanonical(["cimesh/nope/v1", body, signer, sig]);
  const error = refused(t, () => openAnyEnvelope(messageRegistry, bytes, nowMs), UnknownDomainError);
  t.is(error?.domain, "cimesh/nope/v1");
  t.is(error?.code, "ERR_UNKNOWN_DOMAIN");
  // Before the schema: the body is not even a map.
  const junk = encodeCanonical(["cimesh/nope/v1", 5, signer, sig]);
  refused(t, () => openAnyEnvelope(messageRegistry, junk, nowMs), UnknownDomainError);
});

test("domain: a bid never verifies as a result (DomainMismatchError)", (t) => {
  const error = refused(t, () => openEnvelope(resultDomain, sealedBid, nowMs), DomainMismatchError);
  t.is(error?.expected, resultDomain.tag);
  t.is(error?.actual, bidDomain.tag);
  t.is(error?.code, "ERR_DOMAIN_MISMATCH");
});

test("domain: the tag is signed, so re-tagging an envelope breaks its signature even when the bodies agree", (t) => {
  const sealed = sealEnvelope(noteDomain, note, worker);
  t.notThrows(() => openEnvelope(noteDomain, sealed, nowMs));
  const { body, signer, sig } = parts(sealed);
  const retagged = encodeCanonical([otherNoteDomain.tag, body, signer, sig]);
  refused(t, () => openEnvelope(otherNoteDomain, retagged, nowMs), BadSignatureError);
  refused(t, () => openEnvelope(noteDomain, retagged, nowMs), DomainMismatchError);
  // A bid re-tagged as a result never gets past the result's schema, let alone its signature.
  const asResult = encodeCanonical([resultDomain.tag, bid, worker.publicKey, parts(sealedBid).sig]);
  refused(t, () => openAnyEnvelope(messageRegistry, asResult, nowMs), SchemaError);
});

test("domain comes before schema: a bid with a broken body opened as a result is DomainMismatchError", (t) => {
  const bytes = withBody({ ...bid, jobId: "not a job id!" });
  refused(t, () => openEnvelope(resultDomain, bytes, nowMs), DomainMismatchError);
});

// --- 4. schema -------------------------------------------------------------------

test("schema: a bad field is SchemaError naming the field", (t) => {
  const error = refused(t, opensAsBid(withBody({ ...bid, jobId: "not a job id!" })), SchemaError, /^body\.jobId: /);
  t.is(error?.field, "body.jobId");
  t.is(error?.code, "ERR_SCHEMA");
  const missing: Record<string, unknown> = { ...bid };
  delete missing.seq;
  t.is(refused(t, opensAsBid(withBody(missing)), SchemaError)?.field, "body.seq");
  t.is(refused(t, opensAsBid(withBody({ ...bid, round: -1 })), SchemaError)?.field, "body.round");
  t.is(refused(t, opensAsBid(withBody({ ...bid, availability: "busy" })), SchemaError)?.field, "body.availability");
  t.is(refused(t, opensAsBid(withBody({ ...bid, project: "b" })), SchemaError)?.field, "body.project");
  refused(t, opensAsBid(withBody({ ...bid, extra: 1 })), SchemaError, /^body: expected no such field, got "extra"$/);
});

test("schema: a body with an own __proto__ field is SchemaError, and pollutes nothing", (t) => {
  const { tag, signer, sig } = parts(sealedBid);
  const entries = [
    ...canonicalEntries(bid as unknown as Record<string, unknown>),
    [encodeCanonical("__proto__"), encodeCanonical({ polluted: true })] as const,
  ].sort(([a], [b]) => Buffer.compare(a, b));
  const bytes = rawEnvelope(tag, rawMap(entries), signer, sig);
  refused(t, opensAsBid(bytes), SchemaError, /^body: expected no such field, got "__proto__"$/);
  t.true((decodeCanonical(bytes) as unknown[])[1] instanceof Object);
  t.false("polluted" in {});
  t.false(Object.hasOwn(Object.prototype, "polluted"));
});

test("schema: a lifetime out of bounds is SchemaError on body.expiresAtMs", (t) => {
  const backwards = withBody({ ...bid, expiresAtMs: bid.issuedAtMs - 1 });
  t.is(refused(t, opensAsBid(backwards), SchemaError)?.field, "body.expiresAtMs");
  const tooLong = withBody({ ...bid, expiresAtMs: bid.issuedAtMs + maxBidLifetimeMs + 1 });
  t.is(refused(t, opensAsBid(tooLong), SchemaError)?.field, "body.expiresAtMs");
  t.is(
    refused(
      t,
      () => sealEnvelope(bidDomain, { ...bid, expiresAtMs: bid.issuedAtMs + maxBidLifetimeMs + 1 }, worker),
      SchemaError,
    )?.field,
    "body.expiresAtMs",
  );
});

test("schema: the envelope's own shape is SchemaError naming the part", (t) => {
  const { tag, body, signer, sig } = parts(sealedBid);
  const field = (value: unknown[]) => refused(t, opensAsBid(encodeCanonical(value)), SchemaError)?.field;
  t.is(field([tag, body, signer]), "envelope");
  t.is(field([tag, body, signer, sig, sig]), "envelope");
  t.is(field([7, body, signer, sig]), "envelope.domain");
  t.is(field([tag, body, signer.subarray(1), sig]), "envelope.signer");
  t.is(field([tag, body, "signer", sig]), "envelope.signer");
  t.is(field([tag, body, signer, sig.subarray(1)]), "envelope.signature");
  t.is(refused(t, opensAsBid(encodeCanonical({ tag })), SchemaError)?.field, "envelope");
});

test("schema: sealEnvelope refuses to sign a body its schema refuses", (t) => {
  const error = refused(
    t,
    () => sealEnvelope(bidDomain, { ...bid, jobId: "" } as Bid, worker),
    SchemaError,
    /^body\.jobId: /,
  );
  t.is(error?.field, "body.jobId");
  refused(t, () => sealEnvelope(bidDomain, { ...bid, extra: true } as Bid, worker), SchemaError);
});

test("schema comes before signature: a bad body with a forged signature is SchemaError", (t) => {
  const { tag, signer } = parts(sealedBid);
  const forged = encodeCanonical([tag, { ...bid, jobId: "" }, signer, new Uint8Array(64)]);
  t.is(refused(t, opensAsBid(forged), SchemaError)?.field, "body.jobId");
});

// --- 5. time ---------------------------------------------------------------------

test("time: past expiresAtMs + maxClockSkewMs is ExpiredError; up to it is accepted", (t) => {
  const edge = bid.expiresAtMs + maxClockSkewMs;
  t.notThrows(opensAsBid(sealedBid, bid.expiresAtMs));
  t.notThrows(opensAsBid(sealedBid, bid.expiresAtMs + 1));
  t.notThrows(opensAsBid(sealedBid, edge));
  const error = refused(t, opensAsBid(sealedBid, edge + 1), ExpiredError, /^body\.expiresAtMs: /);
  t.is(error?.code, "ERR_EXPIRED");
  refused(t, () => openAnyEnvelope(messageRegistry, sealedBid, edge + 1), ExpiredError);
});

test("time: before issuedAtMs - maxClockSkewMs is NotYetValidError; from it on is accepted", (t) => {
  const edge = bid.issuedAtMs - maxClockSkewMs;
  t.notThrows(opensAsBid(sealedBid, bid.issuedAtMs - 1));
  t.notThrows(opensAsBid(sealedBid, edge));
  const error = refused(t, opensAsBid(sealedBid, edge - 1), NotYetValidError, /^body\.issuedAtMs: /);
  t.is(error?.code, "ERR_NOT_YET_VALID");
});

test("time comes before signature: an expired or not yet valid forgery is ExpiredError or NotYetValidError", (t) => {
  const { tag, body, sig } = parts(sealedBid);
  const swapped = encodeCanonical([tag, body, stranger.publicKey, sig]);
  const late = bid.expiresAtMs + maxClockSkewMs + 1;
  const early = bid.issuedAtMs - maxClockSkewMs - 1;
  refused(t, opensAsBid(swapped, late), ExpiredError);
  refused(t, opensAsBid(swapped, early), NotYetValidError);
  refused(t, opensAsBid(swapped), BadSignatureError);
  refused(t, opensAsBid(sealedBid, late), ExpiredError);
});

// --- 6. signature ----------------------------------------------------------------

test("signature: another valid signer key is BadSignatureError", (t) => {
  const { tag, body, sig } = parts(sealedBid);
  const swapped = encodeCanonical([tag, body, stranger.publicKey, sig]);
  refused(t, opensAsBid(swapped), BadSignatureError, /^cimesh\/bid\/v1 envelope: /);
  refused(t, () => openAnyEnvelope(messageRegistry, swapped, nowMs), BadSignatureError);
});

test("signature: a flipped signature byte is BadSignatureError", (t) => {
  for (const index of [sealedBid.length - 64, sealedBid.length - 33, sealedBid.length - 1]) {
    refused(t, opensAsBid(flipped(sealedBid, index)), BadSignatureError);
  }
});

test("signature: a changed body under the old signature is BadSignatureError", (t) => {
  refused(t, opensAsBid(withBody({ ...bid, freeSlots: 4 })), BadSignatureError);
  refused(t, opensAsBid(withBody({ ...bid, seq: 8 })), BadSignatureError);
});

test("signature: a zero signature, and a signer key that is no curve point, are BadSignatureError", (t) => {
  const { tag, body, signer } = parts(sealedBid);
  refused(t, opensAsBid(encodeCanonical([tag, body, signer, new Uint8Array(64)])), BadSignatureError);
  const notAPoint = new Uint8Array(32).fill(0xff);
  refused(t, opensAsBid(encodeCanonical([tag, body, notAPoint, parts(sealedBid).sig])), BadSignatureError);
});

test("signature: a signature by the stranger over the same body names the stranger", (t) => {
  const theirs = sealEnvelope(bidDomain, bid, stranger);
  t.deepEqual(openEnvelope(bidDomain, theirs, nowMs).signer, stranger.publicKey);
  t.notDeepEqual(theirs, sealedBid);
});

// --- the signature left to the receiver ------------------------------------------

test("unverified: openAnyEnvelopeUnverified makes every check but the signature, which signatureValid() answers", (t) => {
  const { tag, body, sig } = parts(sealedBid);
  const swapped = encodeCanonical([tag, body, stranger.publicKey, sig]);
  const forged = openAnyEnvelopeUnverified(messageRegistry, swapped, nowMs);
  t.deepEqual(forged.body, bid);
  t.deepEqual(forged.signer, stranger.publicKey);
  t.is(forged.domain, bidDomain.tag);
  t.false(forged.signatureValid());
  t.false(forged.signatureValid(), "the answer is the same when asked again");
  const genuine = openAnyEnvelopeUnverified(messageRegistry, sealedBid, nowMs);
  t.true(genuine.signatureValid());
  t.is(genuine.bytes, sealedBid);
  // The cheap checks are all made: time, schema, domain, form and size refuse as openAnyEnvelope does.
  refused(
    t,
    () => openAnyEnvelopeUnverified(messageRegistry, swapped, bid.expiresAtMs + maxClockSkewMs + 1),
    ExpiredError,
  );
  const badBody = encodeCanonical([tag, { ...bid, jobId: "" }, stranger.publicKey, sig]);
  refused(t, () => openAnyEnvelopeUnverified(messageRegistry, badBody, nowMs), SchemaError);
  const unknown = encodeCanonical(["cimesh/nothing/v1", body, stranger.publicKey, sig]);
  refused(t, () => openAnyEnvelopeUnverified(messageRegistry, unknown, nowMs), UnknownDomainError);
  refused(
    t,
    () => openAnyEnvelopeUnverified(messageRegistry, new Uint8Array(maxEnvelopeBytes + 1), nowMs),
    OversizeError,
  );
});

// --- every single bit matters ------------------------------------------------------

const bitFlipCodes = new Set([
  "ERR_MALFORMED_ENCODING",
  "ERR_NON_CANONICAL",
  "ERR_DUPLICATE_KEY",
  "ERR_DOMAIN_MISMATCH",
  "ERR_SCHEMA",
  "ERR_EXPIRED",
  "ERR_NOT_YET_VALID",
  "ERR_BAD_SIGNATURE",
]);

function codeAfterFlip(index: number, bit: number): string {
  try {
    openEnvelope(bidDomain, flipped(sealedBid, index, bit), nowMs);
    return "opened";
  } catch (error) {
    return error instanceof CimeshError ? error.code : `not a CimeshError: ${String(error)}`;
  }
}

testProp(
  "flipping any single bit of a signed bid makes openEnvelope throw a CimeshError of an expected code",
  [fc.nat({ max: sealedBid.length - 1 }), fc.integer({ min: 0, max: 7 })],
  (t, index, bit) => {
    const code = codeAfterFlip(index, bit);
    t.true(bitFlipCodes.has(code), `byte ${index} bit ${bit}: ${code}`);
  },
  { numRuns: 2_000 },
);

test("flipping each bit of a signed bid in turn: never opens, and every stage of the check order shows up", (t) => {
  const seen = new Map<string, number>();
  for (let index = 0; index < sealedBid.length; index++) {
    for (let bit = 0; bit < 8; bit++) {
      const code = codeAfterFlip(index, bit);
      seen.set(code, (seen.get(code) ?? 0) + 1);
    }
  }
  t.log(Object.fromEntries(seen));
  t.false(seen.has("opened"));
  for (const code of seen.keys()) t.true(bitFlipCodes.has(code), `unexpected ${code}`);
  for (const code of [
    "ERR_MALFORMED_ENCODING",
    "ERR_NON_CANONICAL",
    "ERR_DOMAIN_MISMATCH",
    "ERR_SCHEMA",
    "ERR_NOT_YET_VALID",
    "ERR_BAD_SIGNATURE",
  ]) {
    t.true(seen.has(code), `no flip gave ${code}`);
  }
  // Every bit of the signer key and the signature is covered by the signature check.
  const signatureStart = sealedBid.length - 64;
  const signerStart = signatureStart - 2 - 32;
  for (let index = signerStart; index < sealedBid.length; index++) {
    if (index >= signatureStart - 2 && index < signatureStart) continue; // the signature's own header
    t.is(codeAfterFlip(index, 3), "ERR_BAD_SIGNATURE", `byte ${index}`);
  }
});

// --- multi-signed envelopes ------------------------------------------------------

const roots = [1, 2, 3, 4].map((n) => identityFromSeed(new Uint8Array(32).fill(0x40 + n)));
const sortedRoots = [...roots].sort((a, b) => Buffer.compare(a.publicKey, b.publicKey));

test("multi: signers come back sorted and distinct, a repeated identity signs once", (t) => {
  const sealed = sealMultiEnvelope(noteDomain, note, [roots[2], roots[0], roots[2], roots[1]] as typeof roots);
  const verified = openMultiEnvelope(noteDomain, sealed);
  t.deepEqual(verified.body, note);
  t.deepEqual(
    verified.signers,
    sortedRoots.filter((root) => root !== roots[3]).map((root) => root.publicKey),
  );
  t.is(verified.bytes, sealed);
  t.is(verified.domain, noteDomain.tag);
});

test("multi: a root's signature means the same in both forms (it verifies as a single-signer envelope)", (t) => {
  const sealed = sealMultiEnvelope(noteDomain, note, roots);
  const [tag, body, pairs] = decodeCanonical(sealed) as [string, unknown, [Uint8Array, Uint8Array][]];
  for (const [signer, signature] of pairs) {
    const single = encodeCanonical([tag, body, signer, signature]);
    t.deepEqual(openEnvelope(noteDomain, single, nowMs).signer, signer);
  }
});

function multiParts(sealed: Uint8Array): [string, unknown, [Uint8Array, Uint8Array][]] {
  return decodeCanonical(sealed) as [string, unknown, [Uint8Array, Uint8Array][]];
}

test("multi: signers out of byte order are refused", (t) => {
  const [tag, body, pairs] = multiParts(sealMultiEnvelope(noteDomain, note, roots));
  const unsorted = encodeCanonical([tag, body, [pairs[1], pairs[0], pairs[2], pairs[3]]]);
  const error = refused(t, () => openMultiEnvelope(noteDomain, unsorted), SchemaError, /sorted, no repeats/);
  t.is(error?.field, "envelope.signatures[1].signer");
  const reversed = encodeCanonical([tag, body, [...pairs].reverse()]);
  refused(t, () => openMultiEnvelope(noteDomain, reversed), SchemaError);
});

test("multi: a repeated signer is refused", (t) => {
  const [tag, body, pairs] = multiParts(sealMultiEnvelope(noteDomain, note, roots));
  const repeated = encodeCanonical([tag, body, [pairs[0], pairs[0], pairs[1]]]);
  t.is(refused(t, () => openMultiEnvelope(noteDomain, repeated), SchemaError)?.field, "envelope.signatures[1].signer");
  const last = encodeCanonical([tag, body, [...pairs, pairs[3]]]);
  t.is(refused(t, () => openMultiEnvelope(noteDomain, last), SchemaError)?.field, "envelope.signatures[4].signer");
});

test("multi: a bad signature is refused, wherever it stands", (t) => {
  const [tag, body, pairs] = multiParts(sealMultiEnvelope(noteDomain, note, roots));
  for (let index = 0; index < pairs.length; index++) {
    const broken = pairs.map(([signer, signature], i): [Uint8Array, Uint8Array] => [
      signer,
      i === index ? flipped(signature, 10) : signature,
    ]);
    refused(
      t,
      () => openMultiEnvelope(noteDomain, encodeCanonical([tag, body, broken])),
      BadSignatureError,
      new RegExp(`^envelope\\.signatures\\[${index}\\]: `),
    );
  }
  // A signature over another body.
  const [, , otherPairs] = multiParts(sealMultiEnvelope(noteDomain, { ...note, seq: 2 }, roots));
  const mixed = encodeCanonical([tag, body, [pairs[0], otherPairs[1]]]);
  refused(t, () => openMultiEnvelope(noteDomain, mixed), BadSignatureError);
  // The body changed under the signatures.
  const changed = encodeCanonical([tag, { ...note, note: "changed" }, pairs]);
  refused(t, () => openMultiEnvelope(noteDomain, changed), BadSignatureError);
});

test("multi: the signature list must hold 1..maxSignaturesPerEnvelope pairs of the right sizes", (t) => {
  const [tag, body, pairs] = multiParts(sealMultiEnvelope(noteDomain, note, roots));
  const field = (signatures: unknown) =>
    refused(t, () => openMultiEnvelope(noteDomain, encodeCanonical([tag, body, signatures])), SchemaError)?.field;
  t.is(field([]), "envelope.signatures");
  t.is(field("none"), "envelope.signatures");
  t.is(field(Array.from({ length: maxSignaturesPerEnvelope + 1 }, () => pairs[0])), "envelope.signatures");
  t.is(field([[pairs[0]?.[0]]]), "envelope.signatures[0]");
  t.is(field([[pairs[0]?.[0]?.subarray(1), pairs[0]?.[1]]]), "envelope.signatures[0].signer");
  t.is(field([[pairs[0]?.[0], pairs[0]?.[1]?.subarray(1)]]), "envelope.signatures[0].signature");
  t.is(refused(t, () => openMultiEnvelope(noteDomain, encodeCanonical([tag, body])), SchemaError)?.field, "envelope");
  refused(t, () => sealMultiEnvelope(noteDomain, note, []), SchemaError);
  const many = Array.from({ length: maxSignaturesPerEnvelope + 1 }, (_, n) =>
    identityFromSeed(new Uint8Array(32).fill(n)),
  );
  refused(t, () => sealMultiEnvelope(noteDomain, note, many), SchemaError);
});

test("multi: the same check order as single envelopes: size, canonical, domain, schema, signature", (t) => {
  const sealed = sealMultiEnvelope(noteDomain, note, roots);
  const [tag, , pairs] = multiParts(sealed);
  refused(t, () => openMultiEnvelope(noteDomain, new Uint8Array(maxEnvelopeBytes + 1)), OversizeError);
  const big = encodeCanonical([tag, { ...note, note: "x".repeat(noteDomain.maxBytes) }, pairs]);
  refused(t, () => openMultiEnvelope(noteDomain, big), OversizeError, /^test\/note\/v1 envelope: /);
  refused(t, () => openMultiEnvelope(noteDomain, concat([0x9f], sealed.subarray(1), [0xff])), MalformedEncodingError);
  refused(t, () => openMultiEnvelope(otherNoteDomain, sealed), DomainMismatchError);
  const badBody = encodeCanonical([tag, { ...note, seq: -1 }, pairs]);
  t.is(refused(t, () => openMultiEnvelope(noteDomain, badBody), SchemaError)?.field, "body.seq");
  // Time is left to the caller: an old multi envelope still opens.
  t.notThrows(() => openMultiEnvelope(noteDomain, sealed));
});

test("multi: verifySignatures false checks the signatures' shape and order but verifies none, and lists who claims to sign", (t) => {
  const [tag, body, pairs] = multiParts(sealMultiEnvelope(noteDomain, note, roots));
  const broken = pairs.map(([signer, signature]): [Uint8Array, Uint8Array] => [signer, flipped(signature, 10)]);
  const forged = encodeCanonical([tag, body, broken]);
  refused(t, () => openMultiEnvelope(noteDomain, forged), BadSignatureError);
  const claimed = openMultiEnvelope(noteDomain, forged, { verifySignatures: false });
  t.deepEqual(
    claimed.signers,
    sortedRoots.map((root) => root.publicKey),
  );
  t.deepEqual(claimed.body, note);
  const repeated = encodeCanonical([tag, body, [broken[0], broken[0]]]);
  refused(t, () => openMultiEnvelope(noteDomain, repeated, { verifySignatures: false }), SchemaError);
});
