/**
 * Signed envelopes.
 *
 * Wire form, one canonical CBOR array (see encoding.ts):
 *
 *     [domain tag, body, signer public key (32 bytes), signature (64 bytes)]
 *
 * The signature is Ed25519 over the envelope's own bytes up to the signature:
 * the array header, the domain tag, the body and the signer key, all in
 * canonical form. So a signature binds one message type and version (a bid can
 * never pass as a result), one value, and one signer, and verifying needs no
 * re-encoding: the signed bytes are a prefix of what arrived.
 *
 * Verification runs its checks in a fixed order, each with its own error:
 * size, canonical form, domain, body schema, signature, time.
 *
 * A multi-signed envelope (keysets: several root keys sign one body) is
 *
 *     [domain tag, body, [[signer, signature], ...]]   (signers in byte order, distinct)
 *
 * where each signature is over the single-signer prefix [tag, body, signer] as above,
 * so a root's signature means the same thing in both forms.
 */
import type { ZodType } from "zod";
import { bytesEqual, decodeCanonical, encodeCanonical } from "./encoding.ts";
import {
  BadSignatureError,
  DomainMismatchError,
  ExpiredError,
  NotYetValidError,
  OversizeError,
  SchemaError,
  UnknownDomainError,
} from "./errors.ts";
import { type Identity, publicKeyBytes, signatureBytes, signBytes, verifyBytes } from "./keys.ts";
import { parseWith } from "./schema.ts";

/** No envelope of any type is larger; a domain may set a smaller limit. */
export const maxEnvelopeBytes = 256 * 1024;
/** How far a peer's clock may run ahead of or behind ours before its timestamps count against it. */
export const maxClockSkewMs = 30_000;
export const maxDomainTagChars = 64;
export const maxSignaturesPerEnvelope = 16;

/** The bytes the signature field takes at the end of an envelope: a 0x58 0x40 header and 64 bytes. */
const signatureFieldBytes = 2 + signatureBytes;

interface TimedBody {
  readonly issuedAtMs: number;
  readonly expiresAtMs: number;
}

/** One message type at one version: its tag, body schema and limits. */
export interface Domain<T extends TimedBody = TimedBody> {
  readonly tag: string;
  readonly schema: ZodType<T>;
  readonly maxBytes: number;
  readonly maxLifetimeMs: number;
}

export interface DomainOptions {
  /** Envelope size limit for this type, at most maxEnvelopeBytes. */
  maxBytes: number;
  /** Longest span from issuedAtMs to expiresAtMs a body of this type may claim. */
  maxLifetimeMs: number;
}

export function defineDomain<T extends TimedBody>(tag: string, schema: ZodType<T>, options: DomainOptions): Domain<T> {
  if (tag.length === 0 || tag.length > maxDomainTagChars)
    throw new RangeError(`domain tag: expected 1..${maxDomainTagChars} characters`);
  if (options.maxBytes > maxEnvelopeBytes) throw new RangeError(`domain ${tag}: maxBytes above maxEnvelopeBytes`);
  return Object.freeze({ tag, schema, maxBytes: options.maxBytes, maxLifetimeMs: options.maxLifetimeMs });
}

export type DomainRegistry = ReadonlyMap<string, Domain>;

export function createDomainRegistry(domains: readonly Domain[]): DomainRegistry {
  const registry = new Map<string, Domain>();
  for (const domain of domains) {
    if (registry.has(domain.tag)) throw new RangeError(`domain ${domain.tag} registered twice`);
    registry.set(domain.tag, domain);
  }
  return registry;
}

/** A body whose envelope passed every check. */
export interface Verified<T> {
  readonly domain: string;
  readonly body: T;
  readonly signer: Uint8Array;
  /** The envelope as it arrived; hashing it gives the message id. */
  readonly bytes: Uint8Array;
}

function checkLifetime(domain: Domain, body: TimedBody): void {
  if (body.expiresAtMs < body.issuedAtMs) {
    throw new SchemaError(
      "body.expiresAtMs",
      `expected at or after issuedAtMs ${body.issuedAtMs}, got ${body.expiresAtMs}`,
    );
  }
  if (body.expiresAtMs - body.issuedAtMs > domain.maxLifetimeMs) {
    throw new SchemaError(
      "body.expiresAtMs",
      `expected at most ${domain.maxLifetimeMs} ms after issuedAtMs for ${domain.tag}, got ${body.expiresAtMs - body.issuedAtMs} ms`,
    );
  }
}

/** Checks issued-at / expires-at against `nowMs`, allowing maxClockSkewMs either way. */
export function checkTime(body: TimedBody, nowMs: number, what = "body"): void {
  if (body.issuedAtMs > nowMs + maxClockSkewMs)
    throw new NotYetValidError(`${what}.issuedAtMs`, body.issuedAtMs, nowMs);
  if (body.expiresAtMs + maxClockSkewMs < nowMs) throw new ExpiredError(`${what}.expiresAtMs`, body.expiresAtMs, nowMs);
}

/** Validates, encodes and signs a body. Refuses to sign a body its own schema would refuse. */
export function sealEnvelope<T extends TimedBody>(domain: Domain<T>, body: T, signer: Identity): Uint8Array {
  const parsed = parseWith(domain.schema, body, "body");
  checkLifetime(domain, parsed);
  const bytes = encodeCanonical([domain.tag, parsed, signer.publicKey, new Uint8Array(signatureBytes)], domain.tag);
  if (bytes.length > domain.maxBytes) throw new OversizeError(`${domain.tag} envelope`, bytes.length, domain.maxBytes);
  const signedLength = bytes.length - signatureBytes;
  bytes.set(signBytes(signer, bytes.subarray(0, signedLength - 2)), signedLength);
  return bytes;
}

interface Opened {
  tag: string;
  body: unknown;
  signer: Uint8Array;
  signature: Uint8Array;
}

function openShape(bytes: Uint8Array): Opened {
  if (bytes instanceof Uint8Array && bytes.length > maxEnvelopeBytes)
    throw new OversizeError("envelope", bytes.length, maxEnvelopeBytes);
  const value = decodeCanonical(bytes, "envelope", maxEnvelopeBytes);
  if (!Array.isArray(value) || value.length !== 4) {
    throw new SchemaError("envelope", "expected an array of [domain, body, signer, signature]");
  }
  const [tag, body, signer, signature] = value as unknown[];
  if (typeof tag !== "string") throw new SchemaError("envelope.domain", "expected a text domain tag");
  if (!(signer instanceof Uint8Array) || signer.length !== publicKeyBytes) {
    throw new SchemaError("envelope.signer", `expected an ed25519 public key of ${publicKeyBytes} bytes`);
  }
  if (!(signature instanceof Uint8Array) || signature.length !== signatureBytes) {
    throw new SchemaError("envelope.signature", `expected an ed25519 signature of ${signatureBytes} bytes`);
  }
  return { tag, body, signer, signature };
}

/**
 * An envelope whose size, canonical form, domain, schema, lifetime and time were checked, and whose signature was
 * not yet: the cheap checks come first, so a receiver can refuse by trust before it pays for a verification.
 */
export interface Unverified<T> extends Verified<T> {
  /** Whether the signature verifies: computed on the first call, remembered after. */
  signatureValid(): boolean;
}

function finishUnverified<T extends TimedBody>(
  domain: Domain<T>,
  opened: Opened,
  bytes: Uint8Array,
  nowMs: number,
): Unverified<T> {
  if (bytes.length > domain.maxBytes) throw new OversizeError(`${domain.tag} envelope`, bytes.length, domain.maxBytes);
  const body = parseWith(domain.schema, opened.body, "body");
  checkLifetime(domain, body);
  checkTime(body, nowMs);
  let valid: boolean | undefined;
  return {
    domain: domain.tag,
    body,
    signer: opened.signer,
    bytes,
    signatureValid: () => {
      // Canonical form fixes the layout: the signature's 66 bytes end the envelope, the signer's 34 precede them.
      valid ??= verifyBytes(opened.signer, bytes.subarray(0, bytes.length - signatureFieldBytes), opened.signature);
      return valid;
    },
  };
}

function finish<T extends TimedBody>(domain: Domain<T>, opened: Opened, bytes: Uint8Array, nowMs: number): Verified<T> {
  const unverified = finishUnverified(domain, opened, bytes, nowMs);
  if (!unverified.signatureValid()) throw new BadSignatureError(`${domain.tag} envelope`);
  return { domain: unverified.domain, body: unverified.body, signer: unverified.signer, bytes };
}

/** Verifies an envelope that must be of `domain`. */
export function openEnvelope<T extends TimedBody>(domain: Domain<T>, bytes: Uint8Array, nowMs: number): Verified<T> {
  const opened = openShape(bytes);
  if (opened.tag !== domain.tag) throw new DomainMismatchError(domain.tag, opened.tag);
  return finish(domain, opened, bytes, nowMs);
}

/** Verifies an envelope of any type the registry knows; the caller dispatches on `domain`. */
export function openAnyEnvelope(registry: DomainRegistry, bytes: Uint8Array, nowMs: number): Verified<TimedBody> {
  const opened = openShape(bytes);
  const domain = registry.get(opened.tag);
  if (domain === undefined) throw new UnknownDomainError(opened.tag);
  return finish(domain, opened, bytes, nowMs);
}

/**
 * openAnyEnvelope without the signature: every other check is made (size, form, domain, schema, lifetime, time, in
 * that order, each cheaper than a verification), and the signature is left to `signatureValid()`.
 */
export function openAnyEnvelopeUnverified(
  registry: DomainRegistry,
  bytes: Uint8Array,
  nowMs: number,
): Unverified<TimedBody> {
  const opened = openShape(bytes);
  const domain = registry.get(opened.tag);
  if (domain === undefined) throw new UnknownDomainError(opened.tag);
  return finishUnverified(domain, opened, bytes, nowMs);
}

/** The bytes a signer signs for `body` under `domain`: the single-signer envelope up to its signature. */
function signedPrefix(tag: string, body: unknown, signer: Uint8Array): Uint8Array {
  const whole = encodeCanonical([tag, body, signer, new Uint8Array(signatureBytes)], tag);
  return whole.subarray(0, whole.length - signatureFieldBytes);
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const d = (a[i] as number) - (b[i] as number);
    if (d !== 0) return d;
  }
  return a.length - b.length;
}

/** Signs one body by several identities (a keyset by its roots). */
export function sealMultiEnvelope<T extends TimedBody>(
  domain: Domain<T>,
  body: T,
  signers: readonly Identity[],
): Uint8Array {
  const parsed = parseWith(domain.schema, body, "body");
  checkLifetime(domain, parsed);
  if (signers.length === 0 || signers.length > maxSignaturesPerEnvelope) {
    throw new SchemaError("signers", `expected 1..${maxSignaturesPerEnvelope} signers, got ${signers.length}`);
  }
  const sorted = [...signers].sort((a, b) => compareBytes(a.publicKey, b.publicKey));
  const signatures: [Uint8Array, Uint8Array][] = [];
  for (const signer of sorted) {
    const last = signatures[signatures.length - 1];
    if (last !== undefined && bytesEqual(last[0], signer.publicKey)) continue;
    signatures.push([signer.publicKey, signBytes(signer, signedPrefix(domain.tag, parsed, signer.publicKey))]);
  }
  const bytes = encodeCanonical([domain.tag, parsed, signatures], domain.tag);
  if (bytes.length > domain.maxBytes) throw new OversizeError(`${domain.tag} envelope`, bytes.length, domain.maxBytes);
  return bytes;
}

export interface MultiVerified<T> {
  readonly domain: string;
  readonly body: T;
  /** Every signer whose signature verified, in byte order, distinct. */
  readonly signers: readonly Uint8Array[];
  readonly bytes: Uint8Array;
}

/**
 * Verifies a multi-signed envelope: size, canonical form, domain, schema, every signature.
 * Time is left to the caller, whose rules for it (a keyset's freeze) are its own.
 * With `verifySignatures: false` the signatures' shape and order are checked but not verified, and `signers` lists
 * who claims to have signed: for the cheap checks a receiver makes before it pays for verifications.
 */
export function openMultiEnvelope<T extends TimedBody>(
  domain: Domain<T>,
  bytes: Uint8Array,
  options: { readonly verifySignatures?: boolean } = {},
): MultiVerified<T> {
  const verify = options.verifySignatures ?? true;
  if (bytes instanceof Uint8Array && bytes.length > maxEnvelopeBytes)
    throw new OversizeError("envelope", bytes.length, maxEnvelopeBytes);
  const value = decodeCanonical(bytes, "envelope", maxEnvelopeBytes);
  if (!Array.isArray(value) || value.length !== 3) {
    throw new SchemaError("envelope", "expected an array of [domain, body, signatures]");
  }
  const [tag, rawBody, rawSignatures] = value as unknown[];
  if (typeof tag !== "string") throw new SchemaError("envelope.domain", "expected a text domain tag");
  if (tag !== domain.tag) throw new DomainMismatchError(domain.tag, tag);
  if (bytes.length > domain.maxBytes) throw new OversizeError(`${domain.tag} envelope`, bytes.length, domain.maxBytes);
  if (!Array.isArray(rawSignatures) || rawSignatures.length === 0 || rawSignatures.length > maxSignaturesPerEnvelope) {
    throw new SchemaError("envelope.signatures", `expected 1..${maxSignaturesPerEnvelope} [signer, signature] pairs`);
  }
  const body = parseWith(domain.schema, rawBody, "body");
  checkLifetime(domain, body);
  const signers: Uint8Array[] = [];
  rawSignatures.forEach((pair: unknown, index) => {
    const field = `envelope.signatures[${index}]`;
    if (!Array.isArray(pair) || pair.length !== 2) throw new SchemaError(field, "expected a [signer, signature] pair");
    const [signer, signature] = pair as unknown[];
    if (!(signer instanceof Uint8Array) || signer.length !== publicKeyBytes) {
      throw new SchemaError(`${field}.signer`, `expected an ed25519 public key of ${publicKeyBytes} bytes`);
    }
    if (!(signature instanceof Uint8Array) || signature.length !== signatureBytes) {
      throw new SchemaError(`${field}.signature`, `expected an ed25519 signature of ${signatureBytes} bytes`);
    }
    const previous = signers[signers.length - 1];
    if (previous !== undefined && compareBytes(previous, signer) >= 0) {
      throw new SchemaError(
        `${field}.signer`,
        "expected signers in strictly increasing byte order (sorted, no repeats)",
      );
    }
    if (verify && !verifyBytes(signer, signedPrefix(tag, rawBody, signer), signature))
      throw new BadSignatureError(field);
    signers.push(signer);
  });
  return { domain: tag, body, signers, bytes };
}

export { compareBytes };
