import { randomBytes } from "node:crypto";
import { defaultCrypto } from "@chainsafe/libp2p-noise/crypto";
import test from "ava";
import { Uint8ArrayList } from "uint8arraylist";
import { noiseCrypto } from "../node/host/noise-crypto.ts";

/** What noise's crypto takes and gives: a Uint8Array, or a list of them (noise's own copy of uint8arraylist). */
type Sealable = Parameters<typeof noiseCrypto.chaCha20Poly1305Encrypt>[0];
const listOf = (pieces: readonly Uint8Array[]) => new Uint8ArrayList(...pieces) as unknown as Sealable;
const joined = (bytes: Sealable) => (bytes instanceof Uint8Array ? bytes : bytes.subarray());

test("a message in pieces is sealed into one buffer, byte for byte what noise's own crypto seals, and opens", (t) => {
  const key = new Uint8Array(randomBytes(32));
  const nonce = new Uint8Array(12);
  nonce[4] = 7;
  const ad = new Uint8Array(0);
  for (const cuts of [[12, 65_519], [1, 2, 3, 40_000], [1_199, 1_300], [65_535]]) {
    const pieces = cuts.map((length) => new Uint8Array(randomBytes(length)));
    const plaintext = listOf(pieces);
    const sealed = noiseCrypto.chaCha20Poly1305Encrypt(plaintext, nonce, ad, key);
    t.true(sealed instanceof Uint8Array, `${cuts}: one buffer`);
    t.deepEqual(
      new Uint8Array(joined(sealed)),
      new Uint8Array(joined(defaultCrypto.chaCha20Poly1305Encrypt(listOf(pieces), nonce, ad, key))),
    );
    const opened = defaultCrypto.chaCha20Poly1305Decrypt(sealed, nonce, ad, key);
    t.deepEqual(new Uint8Array(joined(opened)), new Uint8Array(joined(plaintext)));
    const tampered = new Uint8Array(joined(sealed));
    tampered[0] = (tampered[0] as number) ^ 1;
    t.throws(() => defaultCrypto.chaCha20Poly1305Decrypt(tampered, nonce, ad, key));
  }
});
