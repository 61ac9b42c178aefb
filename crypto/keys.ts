/**
 * ed25519 identities, signing and verification (RFC 8032 §5.1, PureEdDSA).
 *
 * Backed by node:crypto (OpenSSL): measured on this machine against
 * @noble/ed25519's sync API, it verifies an order of magnitude faster
 * (`npm run bench` prints both). This module takes its randomness from the
 * caller: a seed comes in, nothing is drawn here.
 */
import { createPrivateKey, createPublicKey, type KeyObject, sign, verify } from "node:crypto";
import { InvalidKeyError } from "./errors.ts";

export const publicKeyBytes = 32;
export const seedBytes = 32;
export const signatureBytes = 64;
/** Verification keys kept parsed; parsing a key costs about a fifth of a verify. */
export const maxCachedVerifyKeys = 4096;

// DER prefixes of PKCS#8 and SPKI for Ed25519 (RFC 8410 §7, §10.3): a raw key appended makes the whole structure.
const pkcs8Ed25519Prefix = Uint8Array.from([
  0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
]);
const spkiEd25519Prefix = Uint8Array.from([0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00]);

/** A signing identity: the 32-byte seed (RFC 8032's private key) and its public key. */
export interface Identity {
  readonly publicKey: Uint8Array;
  readonly seed: Uint8Array;
  readonly signingKey: KeyObject;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

/** Builds an identity from 32 random bytes the caller drew (node/ draws them from the OS). */
export function identityFromSeed(seed: Uint8Array): Identity {
  if (!(seed instanceof Uint8Array) || seed.length !== seedBytes) {
    throw new InvalidKeyError(
      "seed",
      `${seedBytes} bytes, got ${seed instanceof Uint8Array ? seed.length : typeof seed}`,
    );
  }
  const signingKey = createPrivateKey({
    key: Buffer.from(concat(pkcs8Ed25519Prefix, seed)),
    format: "der",
    type: "pkcs8",
  });
  const spki = createPublicKey(signingKey).export({ format: "der", type: "spki" });
  const publicKey = new Uint8Array(spki.subarray(spki.length - publicKeyBytes));
  return { publicKey, seed: Uint8Array.from(seed), signingKey };
}

export function signBytes(identity: Identity, message: Uint8Array): Uint8Array {
  return new Uint8Array(sign(null, message, identity.signingKey));
}

const verifyKeyCache = new Map<string, KeyObject | null>();

function verifyKeyOf(publicKey: Uint8Array): KeyObject | null {
  const id = Buffer.from(publicKey.buffer, publicKey.byteOffset, publicKey.byteLength).toString("latin1");
  const cached = verifyKeyCache.get(id);
  if (cached !== undefined) return cached;
  let key: KeyObject | null;
  try {
    key = createPublicKey({ key: Buffer.from(concat(spkiEd25519Prefix, publicKey)), format: "der", type: "spki" });
  } catch {
    key = null;
  }
  if (verifyKeyCache.size >= maxCachedVerifyKeys) {
    const oldest = verifyKeyCache.keys().next().value;
    if (oldest !== undefined) verifyKeyCache.delete(oldest);
  }
  verifyKeyCache.set(id, key);
  return key;
}

/** True when `signature` is a valid RFC 8032 Ed25519 signature of `message` by `publicKey`; never throws on bad input. */
export function verifyBytes(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  if (publicKey.length !== publicKeyBytes || signature.length !== signatureBytes) return false;
  const key = verifyKeyOf(publicKey);
  if (key === null) return false;
  try {
    return verify(null, message, key, signature);
  } catch {
    return false;
  }
}
