/**
 * The node's identity on disk: one ed25519 key, stored in libp2p's own
 * protobuf private-key format, so the same file is the node's signing key and
 * its libp2p PeerId. crypto/ does the maths; this module draws the randomness
 * and does the file I/O that crypto/ must not.
 */
import { randomBytes } from "node:crypto";
import { chmod, link, open, readFile, rename, stat, unlink } from "node:fs/promises";
import { privateKeyFromProtobuf, privateKeyFromRaw, privateKeyToProtobuf, publicKeyFromRaw } from "@libp2p/crypto/keys";
import type { Ed25519PrivateKey, PeerId } from "@libp2p/interface";
import { peerIdFromPublicKey } from "@libp2p/peer-id";
import { bytesEqual, CimeshError, type Identity, identityFromSeed, seedBytes } from "../../crypto/index.ts";

/** A key file is a few dozen bytes; anything larger is not one. */
export const maxKeyFileBytes = 4096;
export const keyFileMode = 0o600;

export class KeyFileError extends CimeshError {
  constructor(path: string, expected: string) {
    super("ERR_KEY_FILE", `${path}: expected ${expected}`);
  }
}

export function generateIdentity(): Identity {
  return identityFromSeed(new Uint8Array(randomBytes(seedBytes)));
}

/** The identity as libp2p's private key, for the libp2p host. */
export function toLibp2pPrivateKey(identity: Identity): Ed25519PrivateKey {
  const raw = new Uint8Array(seedBytes * 2);
  raw.set(identity.seed, 0);
  raw.set(identity.publicKey, seedBytes);
  return privateKeyFromRaw(raw) as Ed25519PrivateKey;
}

export function peerIdOf(publicKey: Uint8Array): PeerId {
  return peerIdFromPublicKey(publicKeyFromRaw(publicKey));
}

export function encodeIdentityFile(identity: Identity): Uint8Array {
  return privateKeyToProtobuf(toLibp2pPrivateKey(identity));
}

export function decodeIdentityFile(bytes: Uint8Array, path = "key file"): Identity {
  let key: ReturnType<typeof privateKeyFromProtobuf>;
  try {
    key = privateKeyFromProtobuf(bytes);
  } catch (error) {
    throw new KeyFileError(path, `a libp2p protobuf private key (${(error as Error).message})`);
  }
  if (key.type !== "Ed25519") throw new KeyFileError(path, `an Ed25519 key, got ${key.type}`);
  const identity = identityFromSeed(key.raw.subarray(0, seedBytes));
  if (!bytesEqual(identity.publicKey, key.publicKey.raw)) {
    throw new KeyFileError(path, "a public key that matches its private key");
  }
  return identity;
}

/**
 * Writes the key with mode 0600 through a temporary file, so a crash never
 * leaves half a key. Refuses to replace an existing key unless told to: a
 * node's key is its identity, and losing it loses its reputation.
 */
export async function saveIdentity(
  path: string,
  identity: Identity,
  options: { replace?: boolean } = {},
): Promise<void> {
  const temporary = `${path}.${process.pid}.tmp`;
  const handle = await open(temporary, "wx", keyFileMode);
  try {
    await handle.writeFile(encodeIdentityFile(identity));
    await handle.sync();
  } finally {
    await handle.close();
  }
  await chmod(temporary, keyFileMode);
  if (options.replace === true) {
    await rename(temporary, path);
    return;
  }
  try {
    await link(temporary, path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "EEXIST")
      throw new KeyFileError(path, "no file yet: a key is already there and is kept");
    throw error;
  } finally {
    await unlink(temporary);
  }
}

export async function loadIdentity(path: string): Promise<Identity> {
  const info = await stat(path);
  if (info.size > maxKeyFileBytes) throw new KeyFileError(path, `at most ${maxKeyFileBytes} bytes, got ${info.size}`);
  if ((info.mode & 0o077) !== 0) {
    throw new KeyFileError(
      path,
      `mode 0600 (readable by its owner only), got ${(info.mode & 0o777).toString(8)}; run chmod 600 ${path}`,
    );
  }
  return decodeIdentityFile(new Uint8Array(await readFile(path)), path);
}
