import { fc, testProp } from "@fast-check/ava";
import { encode } from "cborg";
import { canonicalEncodeOptions, rfc8949ReferenceEncodeOptions } from "../crypto/index.ts";

// crypto/encoding.ts encodes with cborg's default key order and claims it equals
// RFC 8949's bytewise order of encoded keys whenever keys are text. Keys here
// mix ASCII, multi-byte UTF-8 and lengths across the 23/24 and 255/256 header steps.
const key = fc.oneof(
  fc.string({ maxLength: 30 }),
  fc.string({ unit: "binary", maxLength: 30 }),
  fc.string({ minLength: 250, maxLength: 260 }),
);
const value = fc.letrec((tie) => ({
  node: fc.oneof(
    { depthSize: "small" },
    fc.integer(),
    fc.double({ noNaN: true, noDefaultInfinity: true }),
    fc.string(),
    fc.uint8Array({ maxLength: 8 }),
    fc.boolean(),
    fc.constant(null),
    fc.array(tie("node"), { maxLength: 4 }),
    fc.dictionary(key, tie("node"), { maxKeys: 8 }),
  ),
})).node;

testProp(
  "the default key order encodes exactly as RFC 8949's bytewise order for text keys",
  [fc.dictionary(key, value, { maxKeys: 12 })],
  (t, object) => {
    t.deepEqual(encode(object, canonicalEncodeOptions), encode(object, rfc8949ReferenceEncodeOptions));
  },
  { numRuns: 2000 },
);
