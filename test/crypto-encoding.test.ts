/**
 * Canonical encoding (crypto/encoding.ts): values round-trip, every byte string
 * that is not the deterministic encoding of its own value is refused with its
 * own error class, and no input whatever makes the decoders throw anything but
 * a CimeshError.
 */
import { fc, testProp } from "@fast-check/ava";
import test from "ava";
import {
  CimeshError,
  DuplicateKeyError,
  decodeCanonical,
  encodeCanonical,
  identityFromSeed,
  type KeysetBody,
  keysetDomain,
  MalformedEncodingError,
  maxCanonicalBytes,
  NonCanonicalError,
  OversizeError,
  openAnyEnvelope,
  openMultiEnvelope,
  projectIdOf,
  sealEnvelope,
  sealKeyset,
} from "../crypto/index.ts";
import { bidDomain, cancelDomain, messageRegistry, resultDomain } from "../jobs/index.ts";

const nowMs = 1_800_000_000_000;

// --- raw CBOR, written by hand -------------------------------------------------

function bytes(...parts: readonly (Uint8Array | readonly number[])[]): Uint8Array {
  const out: number[] = [];
  for (const part of parts) out.push(...part);
  return Uint8Array.from(out);
}

/** A text string item in canonical form. */
function text(value: string): Uint8Array {
  return encodeCanonical(value);
}

/** A map header in canonical form followed by the given already-encoded keys and values, in the order given. */
function rawMap(entries: readonly (readonly [Uint8Array, Uint8Array])[]): Uint8Array {
  if (entries.length > 23) throw new Error("rawMap: at most 23 entries");
  return bytes([0xa0 + entries.length], ...entries.flat());
}

function refuses(t: import("ava").ExecutionContext, input: Uint8Array, errorClass: new (...args: never[]) => Error) {
  const error = t.throws(() => decodeCanonical(input), { instanceOf: errorClass });
  t.true(error instanceof CimeshError, `expected a CimeshError, got ${String(error)}`);
}

// --- round trip ------------------------------------------------------------------

const canonicalValue = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: "small", maxDepth: 4 },
    fc.constant(null),
    fc.boolean(),
    fc.maxSafeInteger(),
    fc.string({ unit: "binary", maxLength: 24 }),
    fc.uint8Array({ maxLength: 48 }),
    fc.array(tie("value"), { maxLength: 5 }),
    fc.dictionary(fc.string({ unit: "binary", maxLength: 12 }), tie("value"), { maxKeys: 5, noNullPrototype: true }),
  ),
})).value;

testProp(
  "decodeCanonical(encodeCanonical(v)) gives v back, and its bytes are canonical",
  [canonicalValue],
  (t, value) => {
    const encoded = encodeCanonical(value);
    const decoded = decodeCanonical(encoded);
    t.deepEqual(decoded, value);
    t.deepEqual(encodeCanonical(decoded), encoded);
  },
  { numRuns: 500 },
);

/** The same value with every map's keys inserted in reverse order. */
function reversedKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(reversedKeys);
  if (value === null || typeof value !== "object" || value instanceof Uint8Array) return value;
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(value).reverse()) {
    Object.defineProperty(out, key, {
      value: reversedKeys((value as Record<string, unknown>)[key]),
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return out;
}

testProp(
  "one value has one encoding, whatever order its map keys were inserted in",
  [canonicalValue],
  (t, value) => {
    t.deepEqual(encodeCanonical(reversedKeys(value)), encodeCanonical(value));
  },
  { numRuns: 300 },
);

testProp(
  "finite doubles other than -0 round-trip in their shortest form",
  [fc.double({ noNaN: true, noDefaultInfinity: true }).filter((x) => !Object.is(x, -0))],
  (t, value) => {
    const encoded = encodeCanonical(value);
    t.is(decodeCanonical(encoded), value);
  },
  { numRuns: 500 },
);

test("a decoded value is independent of the bytes it came from", (t) => {
  const encoded = encodeCanonical({ key: Uint8Array.of(1, 2, 3) });
  const decoded = decodeCanonical(encoded) as { key: Uint8Array };
  encoded.fill(0);
  t.deepEqual(decoded.key, Uint8Array.of(1, 2, 3));
});

// --- refusals, one error class each ---------------------------------------------

test("oversize: more bytes than the limit is OversizeError, before any decoding", (t) => {
  refuses(t, new Uint8Array(maxCanonicalBytes + 1), OversizeError);
  // Not even well-formed CBOR, yet the size is what is reported.
  refuses(t, new Uint8Array(maxCanonicalBytes + 1).fill(0xff), OversizeError);
  const hello = encodeCanonical("hello");
  t.throws(() => decodeCanonical(hello, "greeting", hello.length - 1), {
    instanceOf: OversizeError,
    message: /^greeting: expected at most 5 bytes, got 6$/,
  });
  t.is(decodeCanonical(hello, "greeting", hello.length), "hello");
});

test("non-canonical: map keys out of order is NonCanonicalError", (t) => {
  const one = Uint8Array.of(0x01);
  const two = Uint8Array.of(0x02);
  // {"b": 1, "a": 2}, written with b first.
  refuses(
    t,
    rawMap([
      [text("b"), one],
      [text("a"), two],
    ]),
    NonCanonicalError,
  );
  // Canonical order is by encoded bytes, so a shorter key sorts first: "b" before "aa".
  refuses(
    t,
    rawMap([
      [text("aa"), one],
      [text("b"), two],
    ]),
    NonCanonicalError,
  );
  t.deepEqual(
    decodeCanonical(
      rawMap([
        [text("b"), two],
        [text("aa"), one],
      ]),
    ),
    { aa: 1, b: 2 },
  );
});

test("non-canonical: a float wider than needed is NonCanonicalError", (t) => {
  // 1.5 as float64, and as float32: the canonical form is the float16 0xf9 0x3e 0x00.
  refuses(t, Uint8Array.of(0xfb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0), NonCanonicalError);
  refuses(t, Uint8Array.of(0xfa, 0x3f, 0xc0, 0, 0), NonCanonicalError);
  t.is(decodeCanonical(Uint8Array.of(0xf9, 0x3e, 0x00)), 1.5);
  // An integral value written as a float: the canonical form is the integer.
  refuses(t, Uint8Array.of(0xf9, 0x3c, 0x00), NonCanonicalError);
  // -0.0 is not distinguished from 0 by the encoder, so its float form is not canonical.
  refuses(t, Uint8Array.of(0xf9, 0x80, 0x00), NonCanonicalError);
});

test("non-minimal integer and length headers are MalformedEncodingError", (t) => {
  refuses(t, Uint8Array.of(0x18, 0x01), MalformedEncodingError); // 1 in one extra byte
  refuses(t, Uint8Array.of(0x19, 0x00, 0x01), MalformedEncodingError); // 1 in two extra bytes
  refuses(t, Uint8Array.of(0x1a, 0x00, 0x00, 0x00, 0x18), MalformedEncodingError);
  refuses(t, Uint8Array.of(0x38, 0x00), MalformedEncodingError); // -1
  refuses(t, Uint8Array.of(0x78, 0x01, 0x61), MalformedEncodingError); // "a" with a one-byte length
  refuses(t, Uint8Array.of(0x58, 0x01, 0x61), MalformedEncodingError); // h'61' with a one-byte length
  refuses(t, Uint8Array.of(0x98, 0x01, 0x00), MalformedEncodingError); // [0]
  refuses(t, bytes([0xb8, 0x01], text("a"), [0x00]), MalformedEncodingError); // {"a": 0}
  t.is(decodeCanonical(Uint8Array.of(0x18, 0x18)), 24);
});

test("a map naming a key twice is DuplicateKeyError", (t) => {
  refuses(
    t,
    rawMap([
      [text("a"), Uint8Array.of(0x01)],
      [text("a"), Uint8Array.of(0x02)],
    ]),
    DuplicateKeyError,
  );
  // Same value twice, and deeper inside an array.
  const dup = rawMap([
    [text("seq"), Uint8Array.of(0x01)],
    [text("seq"), Uint8Array.of(0x01)],
  ]);
  refuses(t, dup, DuplicateKeyError);
  refuses(t, bytes([0x82, 0x00], dup), DuplicateKeyError);
});

test("indefinite lengths are MalformedEncodingError", (t) => {
  refuses(t, Uint8Array.of(0x9f, 0x01, 0xff), MalformedEncodingError); // [_ 1]
  refuses(t, Uint8Array.of(0xbf, 0x61, 0x61, 0x01, 0xff), MalformedEncodingError); // {_ "a": 1}
  refuses(t, Uint8Array.of(0x5f, 0x41, 0x00, 0xff), MalformedEncodingError); // (_ h'00')
  refuses(t, Uint8Array.of(0x7f, 0x61, 0x61, 0xff), MalformedEncodingError); // (_ "a")
  refuses(t, Uint8Array.of(0x81, 0x9f, 0xff), MalformedEncodingError); // [[_ ]]
});

test("tags are MalformedEncodingError", (t) => {
  refuses(t, bytes([0xc0], text("2013-03-21T20:04:00Z")), MalformedEncodingError); // date/time string
  refuses(t, Uint8Array.of(0xc1, 0x1a, 0x51, 0x4b, 0x67, 0xb0), MalformedEncodingError); // epoch time
  refuses(t, Uint8Array.of(0xc2, 0x41, 0x01), MalformedEncodingError); // bignum
  refuses(t, Uint8Array.of(0xd8, 0x2a, 0x41, 0x00), MalformedEncodingError); // tag 42 (CID)
  refuses(t, Uint8Array.of(0x81, 0xd9, 0xd9, 0xf7, 0x00), MalformedEncodingError); // self-described CBOR, nested
});

test("undefined and the other simple values are MalformedEncodingError", (t) => {
  refuses(t, Uint8Array.of(0xf7), MalformedEncodingError);
  refuses(t, Uint8Array.of(0x82, 0x00, 0xf7), MalformedEncodingError);
  refuses(t, bytes([0xa1], text("a"), [0xf7]), MalformedEncodingError);
  refuses(t, Uint8Array.of(0xf0), MalformedEncodingError); // simple(16)
  refuses(t, Uint8Array.of(0xf8, 0x20), MalformedEncodingError); // simple(32)
  t.is(decodeCanonical(Uint8Array.of(0xf6)), null);
  t.is(decodeCanonical(Uint8Array.of(0xf5)), true);
});

test("NaN, infinities and integers beyond 2^53 are MalformedEncodingError", (t) => {
  refuses(t, Uint8Array.of(0xf9, 0x7e, 0x00), MalformedEncodingError);
  refuses(t, Uint8Array.of(0xf9, 0x7c, 0x00), MalformedEncodingError);
  refuses(t, Uint8Array.of(0xf9, 0xfc, 0x00), MalformedEncodingError);
  refuses(t, Uint8Array.of(0x1b, 0x00, 0x20, 0, 0, 0, 0, 0, 0), MalformedEncodingError); // 2^53
  refuses(t, Uint8Array.of(0x3b, 0x00, 0x20, 0, 0, 0, 0, 0, 0), MalformedEncodingError); // -2^53 - 1
  refuses(t, Uint8Array.of(0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), MalformedEncodingError);
  t.is(decodeCanonical(Uint8Array.of(0x1b, 0x00, 0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)), Number.MAX_SAFE_INTEGER);
});

test("truncated, empty, trailing and non-text-keyed input is MalformedEncodingError", (t) => {
  refuses(t, new Uint8Array(0), MalformedEncodingError);
  refuses(t, Uint8Array.of(0x19, 0x01), MalformedEncodingError);
  refuses(t, Uint8Array.of(0x82, 0x01), MalformedEncodingError);
  refuses(t, Uint8Array.of(0x01, 0x02), MalformedEncodingError);
  refuses(t, Uint8Array.of(0xa1, 0x01, 0x02), MalformedEncodingError); // {1: 2}
  refuses(t, Uint8Array.of(0x9b, 0, 0, 0, 1, 0, 0, 0, 0), MalformedEncodingError); // array of 2^32 items
  refuses(t, Uint8Array.of(0x5a, 0xff, 0xff, 0xff, 0xff), MalformedEncodingError); // 4 GiB of bytes promised
  t.throws(() => decodeCanonical("not bytes" as unknown as Uint8Array), { instanceOf: MalformedEncodingError });
});

test("nesting deeper than the stack is refused with a CimeshError, not a RangeError", (t) => {
  const depth = 200_000;
  const nested = new Uint8Array(depth + 1).fill(0x81);
  nested[depth] = 0x00;
  const error = t.throws(() => decodeCanonical(nested));
  t.true(error instanceof CimeshError, `got ${String(error)}`);
});

// --- no input makes a decoder throw anything but a CimeshError -------------------

const root = identityFromSeed(new Uint8Array(32).fill(1));
const root2 = identityFromSeed(new Uint8Array(32).fill(2));
const worker = identityFromSeed(new Uint8Array(32).fill(3));
const project = projectIdOf([root.publicKey, root2.publicKey], 2);

const header = { issuedAtMs: nowMs, expiresAtMs: nowMs + 60_000, seq: 7, project, jobId: "job-1" };
const validBid = sealEnvelope(
  bidDomain,
  {
    ...header,
    round: 0,
    availability: "eager",
    runningJobs: 1,
    freeSlots: 3,
    cachedInputBytes: 1234,
  },
  worker,
);
const validResult = sealEnvelope(
  resultDomain,
  {
    ...header,
    attempt: 2,
    shard: 0,
    exitCode: 0,
    outcome: "succeeded",
    outputsDigest: `b${"a".repeat(58)}`,
    logDigest: null,
    summary: "ok",
    durationMs: 1500,
  },
  worker,
);
const validCancel = sealEnvelope(cancelDomain, { ...header, attempt: null, reason: "superseded" }, root);
const keysetBody: KeysetBody = {
  project,
  rootVersion: 1,
  version: 3,
  issuedAtMs: nowMs,
  expiresAtMs: nowMs + 86_400_000,
  roots: [root.publicKey, root2.publicKey],
  threshold: 2,
  announcers: [{ key: worker.publicKey, label: "master-1", expiresAtMs: nowMs + 86_400_000 }],
};
const validKeyset = sealKeyset(keysetBody, [root, root2]);
const validEnvelopes = [validBid, validResult, validCancel, validKeyset];

test("the sample envelopes used for fuzzing are valid", (t) => {
  for (const envelope of [validBid, validResult, validCancel]) {
    t.notThrows(() => openAnyEnvelope(messageRegistry, envelope, nowMs));
  }
  t.deepEqual(openMultiEnvelope(keysetDomain, validKeyset).body, keysetBody);
});

/** Runs every decoder over `input` and fails the test on any throw that is not a CimeshError. */
function onlyCimeshErrors(t: import("ava").ExecutionContext, input: Uint8Array): void {
  const decoders: readonly [string, () => unknown][] = [
    ["decodeCanonical", () => decodeCanonical(input)],
    ["openAnyEnvelope", () => openAnyEnvelope(messageRegistry, input, nowMs)],
    ["openMultiEnvelope", () => openMultiEnvelope(keysetDomain, input)],
  ];
  for (const [name, run] of decoders) {
    try {
      run();
    } catch (error) {
      if (!(error instanceof CimeshError)) {
        t.fail(`${name} threw a non-CimeshError for ${Buffer.from(input).toString("hex")}: ${String(error)}`);
        return;
      }
      t.true(error.code.startsWith("ERR_"), `${name}: error code ${error.code}`);
    }
  }
  t.pass();
}

testProp(
  "random bytes make every decoder throw only CimeshErrors",
  [fc.uint8Array({ maxLength: 512 })],
  (t, input) => {
    onlyCimeshErrors(t, input);
  },
  { numRuns: 10_000 },
);

/** Random bytes that look like CBOR: each starts with a plausible header byte. */
const cborish = fc
  .array(
    fc.oneof(
      fc.integer({ min: 0x00, max: 0x1b }),
      fc.integer({ min: 0x40, max: 0x5b }),
      fc.integer({ min: 0x60, max: 0x7b }),
      fc.integer({ min: 0x80, max: 0x9f }),
      fc.integer({ min: 0xa0, max: 0xbf }),
      fc.integer({ min: 0xc0, max: 0xff }),
      fc.integer({ min: 0x00, max: 0xff }),
    ),
    { maxLength: 256 },
  )
  .map((list) => Uint8Array.from(list));

type Mutation =
  | { kind: "set"; at: number; value: number }
  | { kind: "flip"; at: number; bit: number }
  | { kind: "insert"; at: number; data: Uint8Array }
  | { kind: "delete"; at: number; count: number }
  | { kind: "truncate"; at: number }
  | { kind: "tail"; at: number; data: Uint8Array };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant("set" as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ kind: fc.constant("flip" as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({
    kind: fc.constant("insert" as const),
    at: fc.nat(),
    data: fc.uint8Array({ minLength: 1, maxLength: 8 }),
  }),
  fc.record({ kind: fc.constant("delete" as const), at: fc.nat(), count: fc.integer({ min: 1, max: 16 }) }),
  fc.record({ kind: fc.constant("truncate" as const), at: fc.nat() }),
  fc.record({
    kind: fc.constant("tail" as const),
    at: fc.nat(),
    data: fc.oneof(fc.uint8Array({ maxLength: 64 }), cborish),
  }),
);

function mutate(input: Uint8Array, change: Mutation): Uint8Array {
  const at = input.length === 0 ? 0 : change.at % (input.length + 1);
  const before = input.subarray(0, at);
  switch (change.kind) {
    case "set":
    case "flip": {
      if (input.length === 0) return input;
      const out = Uint8Array.from(input);
      const index = change.at % input.length;
      out[index] = change.kind === "set" ? change.value : (out[index] as number) ^ (1 << change.bit);
      return out;
    }
    case "insert":
      return bytes(before, change.data, input.subarray(at));
    case "delete":
      return bytes(before, input.subarray(at + change.count));
    case "truncate":
      return Uint8Array.from(before);
    case "tail":
      return bytes(before, change.data);
  }
}

/** A valid envelope after one to four mutations. */
const mutatedEnvelope = fc
  .tuple(fc.integer({ min: 0, max: validEnvelopes.length - 1 }), fc.array(mutation, { minLength: 1, maxLength: 4 }))
  .map(([which, changes]) => changes.reduce(mutate, validEnvelopes[which] as Uint8Array));

/** A prefix of a valid envelope followed by random bytes. */
const prefixedEnvelope = fc
  .tuple(
    fc.integer({ min: 0, max: validEnvelopes.length - 1 }),
    fc.nat(),
    fc.oneof(fc.uint8Array({ maxLength: 128 }), cborish),
  )
  .map(([which, cut, tail]) => {
    const envelope = validEnvelopes[which] as Uint8Array;
    return bytes(envelope.subarray(0, cut % (envelope.length + 1)), tail);
  });

const tags = [...messageRegistry.keys(), keysetDomain.tag];

/**
 * Well-formed canonical envelopes whose parts are replaced by random values:
 * these pass the canonical check and reach the domain, schema and signature checks.
 */
const structuredEnvelope = fc
  .record({
    which: fc.integer({ min: 0, max: validEnvelopes.length - 1 }),
    fieldChanges: fc.array(
      fc.tuple(
        fc.oneof(fc.nat({ max: 31 }), fc.string({ maxLength: 3 }), fc.constantFrom("seq", "project", "roots", "jobId")),
        fc.oneof(canonicalValue, fc.constantFrom<unknown>(undefined, -1, 1e300, 0.5, "", project)),
      ),
      { maxLength: 3 },
    ),
    tag: fc.oneof(fc.constant(null), fc.constantFrom(...tags), fc.string({ maxLength: 8 })),
    replacement: fc.oneof(fc.constant(null), canonicalValue),
    replaceAt: fc.integer({ min: 0, max: 4 }),
  })
  .map(({ which, fieldChanges, tag, replacement, replaceAt }) => {
    const envelope = [...(decodeCanonical(validEnvelopes[which] as Uint8Array) as unknown[])];
    const body = { ...(envelope[1] as Record<string, unknown>) };
    for (const [field, value] of fieldChanges) {
      // A number picks one of the body's own fields; a string names a field, known or not.
      const keys = Object.keys(body);
      const key = typeof field === "number" ? (keys[field % keys.length] as string) : field;
      if (value === undefined) delete body[key];
      else body[key] = value;
    }
    envelope[1] = body;
    if (tag !== null) envelope[0] = tag;
    if (replacement !== null) {
      if (replaceAt < envelope.length) envelope[replaceAt] = replacement;
      else envelope.push(replacement);
    }
    return encodeCanonical(envelope);
  });

testProp(
  "mutated valid envelopes make every decoder throw only CimeshErrors",
  [mutatedEnvelope],
  (t, input) => {
    onlyCimeshErrors(t, input);
  },
  { numRuns: 10_000 },
);

testProp(
  "a valid prefix followed by random bytes makes every decoder throw only CimeshErrors",
  [prefixedEnvelope],
  (t, input) => {
    onlyCimeshErrors(t, input);
  },
  { numRuns: 5_000 },
);

testProp(
  "canonical envelopes with random parts make every decoder throw only CimeshErrors",
  [structuredEnvelope],
  (t, input) => {
    onlyCimeshErrors(t, input);
  },
  { numRuns: 3_000 },
);

test("the fuzz inputs get deep: between them they fail at every stage of openAnyEnvelope", (t) => {
  const codes = new Set<string>();
  const inputs = [
    ...fc.sample(mutatedEnvelope, { numRuns: 2_000, seed: 1 }),
    ...fc.sample(prefixedEnvelope, { numRuns: 500, seed: 2 }),
    ...fc.sample(structuredEnvelope, { numRuns: 2_000, seed: 3 }),
  ];
  for (const input of inputs) {
    try {
      openAnyEnvelope(messageRegistry, input, nowMs);
      codes.add("opened");
    } catch (error) {
      codes.add(error instanceof CimeshError ? error.code : String(error));
    }
  }
  for (const code of [
    "ERR_MALFORMED_ENCODING",
    "ERR_NON_CANONICAL",
    "ERR_UNKNOWN_DOMAIN",
    "ERR_SCHEMA",
    "ERR_BAD_SIGNATURE",
  ]) {
    t.true(codes.has(code), `no fuzz input failed with ${code}; got ${[...codes].join(", ")}`);
  }
});
