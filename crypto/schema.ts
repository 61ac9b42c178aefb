/**
 * Schema building blocks shared by every message body, and the one place that
 * turns a zod failure into a SchemaError naming the field and what was expected.
 */
import type { ZodError, ZodType } from "zod";
import * as z from "zod";
import { SchemaError } from "./errors.ts";
import { publicKeyBytes, signatureBytes } from "./keys.ts";

/** Latest instant a timestamp may name: the year 2286, far past any real deadline, far below 2^53. */
export const maxTimestampMs = 10_000_000_000_000;
export const maxSeq = Number.MAX_SAFE_INTEGER;
export const maxIdChars = 64;
export const maxNameChars = 128;
export const maxReasonChars = 1024;

export function fixedBytes(lengthBytes: number, what: string) {
  return z.custom<Uint8Array>(
    (value) => value instanceof Uint8Array && value.length === lengthBytes,
    `expected ${what} of ${lengthBytes} bytes`,
  );
}

export function boundedBytes(maxBytes: number, what: string) {
  return z.custom<Uint8Array>(
    (value) => value instanceof Uint8Array && value.length <= maxBytes,
    `expected ${what} of at most ${maxBytes} bytes`,
  );
}

export const publicKeySchema = fixedBytes(publicKeyBytes, "an ed25519 public key");
export const signatureSchema = fixedBytes(signatureBytes, "an ed25519 signature");
export const timestampMsSchema = z.number().int().min(0).max(maxTimestampMs);
export const seqSchema = z.number().int().min(0).max(maxSeq);
/** Names chosen by people or programs: job ids, step names. Printable, no separators that break logs or paths. */
export const idSchema = z
  .string()
  .min(1)
  .max(maxIdChars)
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, "expected letters, digits, '.', '_' or '-', starting with a letter or digit");
export const reasonSchema = z.string().max(maxReasonChars);

/** Every single-signed body carries these (DESIGN.md, Trust): when it was made, until when it counts, and the signer's sequence number for the replay ledger. */
export const signedHeaderShape = {
  issuedAtMs: timestampMsSchema,
  expiresAtMs: timestampMsSchema,
  seq: seqSchema,
};

export interface SignedHeader {
  readonly issuedAtMs: number;
  readonly expiresAtMs: number;
  readonly seq: number;
}

function formatPath(prefix: string, path: readonly PropertyKey[]): string {
  let out = prefix;
  for (const part of path) out += typeof part === "number" ? `[${part}]` : `.${String(part)}`;
  return out;
}

export function schemaErrorFrom(prefix: string, error: ZodError): SchemaError {
  const issue = error.issues[0];
  if (issue === undefined) return new SchemaError(prefix, "expected a valid value");
  const field = formatPath(prefix, issue.path);
  let expected = issue.message;
  if (issue.code === "unrecognized_keys")
    expected = `expected no such field, got ${issue.keys.map((key) => JSON.stringify(key)).join(", ")}`;
  return new SchemaError(field, expected);
}

/** Parses `value` with `schema` or throws a SchemaError whose field starts with `prefix`. */
export function parseWith<T>(schema: ZodType<T>, value: unknown, prefix: string): T {
  const result = schema.safeParse(value);
  if (!result.success) throw schemaErrorFrom(prefix, result.error);
  return result.data;
}
