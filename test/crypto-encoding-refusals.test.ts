import test from "ava";
import {
  decodeCanonical,
  encodeCanonical,
  identityFromSeed,
  MalformedEncodingError,
  sealEnvelope,
} from "../crypto/index.ts";
import { cancelDomain } from "../jobs/index.ts";

// Values whose encoding would not decode back to themselves are refused before
// anything is signed: an envelope no peer could open, or one that says less than
// its signer meant, must never leave a node.
for (const [name, value, message] of [
  ["a lone surrogate", { reason: "a\ud800b" }, /value\.reason.*lone UTF-16 surrogate/],
  ["text opening with U+FEFF", { reason: "\ufeffhello" }, /value\.reason.*U\+FEFF/],
  ["undefined", { reason: undefined }, /value\.reason.*undefined/],
  ["NaN", [1, Number.NaN], /value\[1\].*NaN/],
  ["a Map", { m: new Map([[1, 2]]) }, /value\.m.*not plain data/],
] as const) {
  test(`encodeCanonical refuses ${name}`, (t) => {
    t.throws(() => encodeCanonical(value), { instanceOf: MalformedEncodingError, message });
  });
}

test("U+FEFF inside text, or well-formed astral text, still round-trips", (t) => {
  for (const text of ["a\ufeffb", "emoji 🦀 ok", ""]) t.is(decodeCanonical(encodeCanonical(text)), text);
});

test("sealing a cancel whose reason opens with U+FEFF is refused, not sealed into an unopenable envelope", (t) => {
  const signer = identityFromSeed(new Uint8Array(32).fill(2));
  const body = {
    issuedAtMs: 1,
    expiresAtMs: 2,
    seq: 0,
    project: `b${"a".repeat(52)}`,
    jobId: "j",
    attempt: null,
    reason: "\ufeffstop",
  };
  t.throws(() => sealEnvelope(cancelDomain, body, signer), { instanceOf: MalformedEncodingError });
});
