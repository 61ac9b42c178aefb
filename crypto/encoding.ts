/**
 * Canonical encoding: RFC 8949 §4.2.1 core deterministic CBOR.
 *
 * Decoding accepts only the canonical encoding of its own value: it decodes with
 * cborg in strict mode (shortest integer and length headers), refuses
 * indefinite lengths, undefined, NaN, infinities, big integers, tags and
 * duplicate map keys, then re-encodes the value and compares the bytes. That
 * closes every remaining freedom (key order, float width) in one rule, so one
 * value has exactly one byte string and a signature covers exactly one value.
 */
import { decode, encode, rfc8949EncodeOptions } from "cborg";
import type { DecodeOptions, EncodeOptions } from "cborg/interface";
import { CimeshError, DuplicateKeyError, MalformedEncodingError, NonCanonicalError, OversizeError } from "./errors.ts";

/** Largest input decodeCanonical accepts unless the caller passes a smaller limit. */
export const maxCanonicalBytes = 1024 * 1024;

/**
 * RFC 8949 orders map keys by the bytewise order of their encodings. Our maps
 * have text keys only (decoding refuses others), and for text keys that order
 * is cborg's default one: shorter UTF-8 first, then bytewise, because a text
 * key's header grows with its length. The default sorter compares the strings
 * it already has instead of encoding every key again, which halves the cost
 * of encoding; test/encoding-order.test.ts checks both give the same bytes.
 */
export const canonicalEncodeOptions: EncodeOptions = { float64: false };
/** The spelled-out RFC 8949 options, kept for that check. */
export const rfc8949ReferenceEncodeOptions: EncodeOptions = { ...rfc8949EncodeOptions, float64: false };
const encodeOptions = canonicalEncodeOptions;

const decodeOptions: DecodeOptions = {
  strict: true,
  allowIndefinite: false,
  allowUndefined: false,
  allowInfinity: false,
  allowNaN: false,
  allowBigInt: false,
  useMaps: false,
  rejectDuplicateMapKeys: true,
  tags: {},
};

/** Values that have a canonical encoding: what the message bodies are made of. */
export type CanonicalValue =
  | null
  | boolean
  | number
  | string
  | Uint8Array
  | readonly CanonicalValue[]
  | { readonly [key: string]: CanonicalValue };

/**
 * Refuses values whose encoding would not decode back to themselves: a lone
 * UTF-16 surrogate (the encoder would write U+FFFD), text opening with U+FEFF
 * (the decoder's UTF-8 reader drops a leading byte-order mark), undefined,
 * NaN and infinities (refused when decoding), keys of a Map. Signing such a
 * value would make an envelope no peer can open, or one that says less than
 * its signer meant.
 */
function checkEncodable(value: unknown, path: string): void {
  switch (typeof value) {
    case "string":
      if (!value.isWellFormed()) throw new MalformedEncodingError(path, "got text with a lone UTF-16 surrogate");
      if (value.charCodeAt(0) === 0xfeff)
        throw new MalformedEncodingError(path, "got text starting with U+FEFF, which UTF-8 readers drop");
      return;
    case "number":
      if (!Number.isFinite(value)) throw new MalformedEncodingError(path, `got ${value}`);
      return;
    case "boolean":
      return;
    case "object": {
      if (value === null || value instanceof Uint8Array) return;
      if (Array.isArray(value)) {
        for (let i = 0; i < value.length; i++) checkEncodable(value[i], `${path}[${i}]`);
        return;
      }
      if (Object.getPrototypeOf(value) !== Object.prototype && Object.getPrototypeOf(value) !== null) {
        throw new MalformedEncodingError(path, "got an object that is not plain data");
      }
      for (const key of Object.keys(value)) {
        checkEncodable(key, `${path}.${key}`);
        checkEncodable((value as Record<string, unknown>)[key], `${path}.${key}`);
      }
      return;
    }
    default:
      throw new MalformedEncodingError(path, `got ${typeof value}`);
  }
}

/** Encodes a value as deterministic CBOR. Throws MalformedEncodingError for values that would not decode back to themselves. */
export function encodeCanonical(value: unknown, what = "value"): Uint8Array {
  checkEncodable(value, what);
  try {
    return encode(value, encodeOptions);
  } catch (error) {
    throw new MalformedEncodingError(what, `could not encode: ${(error as Error).message}`);
  }
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Decodes bytes that must be the canonical encoding of one value.
 * Throws only CimeshErrors: OversizeError, DuplicateKeyError, MalformedEncodingError, NonCanonicalError.
 */
export function decodeCanonical(bytes: Uint8Array, what = "value", maxBytes = maxCanonicalBytes): unknown {
  if (!(bytes instanceof Uint8Array)) {
    throw new MalformedEncodingError(what, `got ${typeof bytes} instead of bytes`);
  }
  if (bytes.length > maxBytes) throw new OversizeError(what, bytes.length, maxBytes);
  let value: unknown;
  try {
    value = decode(bytes, decodeOptions);
  } catch (error) {
    if (error instanceof CimeshError) throw error;
    const message = error instanceof Error ? error.message : String(error);
    if (message.includes("repeat map key")) throw new DuplicateKeyError(what, message);
    throw new MalformedEncodingError(what, message);
  }
  let again: Uint8Array;
  try {
    again = encode(value, encodeOptions);
  } catch {
    throw new NonCanonicalError(what);
  }
  if (!bytesEqual(again, bytes)) throw new NonCanonicalError(what);
  return value;
}
