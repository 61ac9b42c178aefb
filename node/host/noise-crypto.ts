/**
 * The crypto noise runs on: its own default (node:crypto's ChaCha20-Poly1305 for all but short messages), except that
 * a message is sealed into one buffer, its ciphertext then its tag.
 *
 * noise hands the pieces of each sealed message to the transport, and TCP writes each piece to the socket as a write
 * of its own. The default seals a message that comes as a list (what the muxer always hands noise) into one piece per
 * piece of plaintext, then the tag: with noise's 2-byte length, 3 to 4 socket writes per 64 KiB message. Sealed into
 * one buffer it is 2 (the length, then the message), for one copy of the message.
 */
import { createCipheriv } from "node:crypto";
import type { ICryptoInterface } from "@chainsafe/libp2p-noise";
import { defaultCrypto } from "@chainsafe/libp2p-noise/crypto";

/** ChaCha20-Poly1305's tag, in bytes. */
const tagBytes = 16;
/** Below this, noise's default seals with its WebAssembly ChaCha20-Poly1305 (faster than node:crypto for short ones). */
const nativeSealMinBytes = 1200;

export const noiseCrypto: ICryptoInterface = {
  ...defaultCrypto,
  chaCha20Poly1305Encrypt(plaintext, nonce, ad, k) {
    if (plaintext instanceof Uint8Array || plaintext.byteLength < nativeSealMinBytes)
      return defaultCrypto.chaCha20Poly1305Encrypt(plaintext, nonce, ad, k);
    const cipher = createCipheriv("chacha20-poly1305", k, nonce, { authTagLength: tagBytes });
    cipher.setAAD(ad, { plaintextLength: plaintext.byteLength });
    const sealed = Buffer.allocUnsafe(plaintext.byteLength + tagBytes);
    let offset = 0;
    for (const piece of plaintext) offset += cipher.update(piece).copy(sealed, offset);
    offset += cipher.final().copy(sealed, offset);
    cipher.getAuthTag().copy(sealed, offset);
    return sealed;
  },
};
