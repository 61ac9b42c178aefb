import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generateKeyPair, privateKeyToProtobuf } from "@libp2p/crypto/keys";
import { peerIdFromPrivateKey } from "@libp2p/peer-id";
import test from "ava";
import { openEnvelope, sealEnvelope } from "../crypto/index.ts";
import { bidDomain } from "../jobs/index.ts";
import {
  decodeIdentityFile,
  generateIdentity,
  KeyFileError,
  loadIdentity,
  peerIdOf,
  saveIdentity,
} from "../node/files/index.ts";

async function withTempDir(run: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "cimesh-identity-"));
  try {
    await run(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test("a saved identity loads back with the same keys, mode 0600, and is its libp2p PeerId", async (t) => {
  await withTempDir(async (dir) => {
    const path = join(dir, "node.key");
    const identity = generateIdentity();
    await saveIdentity(path, identity);
    const loaded = await loadIdentity(path);
    t.deepEqual(loaded.publicKey, identity.publicKey);
    t.deepEqual(loaded.seed, identity.seed);
    const libp2pKey = (await import("@libp2p/crypto/keys")).privateKeyFromProtobuf(
      new Uint8Array(await readFile(path)),
    );
    t.is(peerIdOf(loaded.publicKey).toString(), peerIdFromPrivateKey(libp2pKey).toString());
    const { stat } = await import("node:fs/promises");
    t.is((await stat(path)).mode & 0o777, 0o600);
  });
});

test("a key made by libp2p signs envelopes that verify under its PeerId's key", async (t) => {
  const libp2pKey = await generateKeyPair("Ed25519");
  const identity = decodeIdentityFile(privateKeyToProtobuf(libp2pKey));
  t.deepEqual(identity.publicKey, libp2pKey.publicKey.raw);
  const nowMs = 1_800_000_000_000;
  const bid = sealEnvelope(
    bidDomain,
    {
      issuedAtMs: nowMs,
      expiresAtMs: nowMs + 1000,
      seq: 0,
      project: `b${"q".repeat(52)}`,
      jobId: "j",
      round: 0,
      availability: "eager",
      runningJobs: 0,
      freeSlots: 1,
      cachedInputBytes: 0,
    },
    identity,
  );
  t.is(peerIdOf(openEnvelope(bidDomain, bid, nowMs).signer).toString(), peerIdFromPrivateKey(libp2pKey).toString());
});

test("saving never replaces an existing key", async (t) => {
  await withTempDir(async (dir) => {
    const path = join(dir, "node.key");
    const first = generateIdentity();
    await saveIdentity(path, first);
    await t.throwsAsync(saveIdentity(path, generateIdentity()), { instanceOf: KeyFileError, message: /already there/ });
    t.deepEqual((await loadIdentity(path)).publicKey, first.publicKey);
  });
});

test("a key file readable by others, or not a key, is refused with what to do", async (t) => {
  await withTempDir(async (dir) => {
    const path = join(dir, "node.key");
    await saveIdentity(path, generateIdentity());
    await chmod(path, 0o644);
    await t.throwsAsync(loadIdentity(path), { instanceOf: KeyFileError, message: /mode 0600.*chmod 600/ });
    const junk = join(dir, "junk.key");
    await writeFile(junk, "not a key", { mode: 0o600 });
    await t.throwsAsync(loadIdentity(junk), { instanceOf: KeyFileError, message: /libp2p protobuf private key/ });
  });
});
