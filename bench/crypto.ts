/**
 * The cryptography's figures: envelope sign and verify per second, canonical encode and
 * decode of a typical job announcement (the smallest valid one seals to 562
 * bytes; the typical one of test/arbitraries.ts to about 730), raw node:crypto ed25519 verify on the
 * same machine in the same run, and the ratio envelope-verify / raw-verify.
 * @noble/ed25519 (sync API, @noble/hashes sha512) is measured beside
 * node:crypto because the choice between them is made by this measurement.
 */
import { createPublicKey, sign as nodeSign, verify as nodeVerify } from "node:crypto";
import * as ed from "@noble/ed25519";
import { sha512 } from "@noble/hashes/sha2.js";
import {
  anchorFromGenesis,
  decodeCanonical,
  encodeCanonical,
  identityFromSeed,
  openEnvelope,
  sealEnvelope,
} from "../crypto/index.ts";
import { jobAnnouncementDomain } from "../jobs/index.ts";
import { typicalAnnouncement } from "../test/arbitraries.ts";
import { formatRate, measureRate, type Rate } from "./harness.ts";

ed.hashes.sha512 = sha512;

export interface CryptoFigures {
  readonly rates: readonly Rate[];
  readonly envelopeBytes: number;
  readonly verifyRatio: number;
  readonly nodeOverNobleVerify: number;
}

export function benchCrypto(): CryptoFigures {
  const nowMs = 1_800_000_000_000;
  const master = identityFromSeed(new Uint8Array(32).fill(3));
  const project = anchorFromGenesis([master.publicKey], 1).project;
  const body = typicalAnnouncement(project, nowMs);
  const envelope = sealEnvelope(jobAnnouncementDomain, body, master);
  const signed = envelope.subarray(0, envelope.length - 66);
  const signature = envelope.subarray(envelope.length - 64);
  const spki = Buffer.concat([Buffer.from("302a300506032b6570032100", "hex"), Buffer.from(master.publicKey)]);
  const verifyKey = createPublicKey({ key: spki, format: "der", type: "spki" });
  const wire = [jobAnnouncementDomain.tag, body, master.publicKey, signature];
  const encoded = encodeCanonical(wire);

  const rates = [
    measureRate("raw node:crypto ed25519 verify (parsed key)", () => nodeVerify(null, signed, verifyKey, signature)),
    measureRate("raw node:crypto ed25519 sign", () => nodeSign(null, signed, master.signingKey)),
    measureRate("raw @noble/ed25519 verify (sync, noble sha512)", () => ed.verify(signature, signed, master.publicKey)),
    measureRate("raw @noble/ed25519 sign (sync, noble sha512)", () => ed.sign(signed, master.seed)),
    measureRate(`envelope verify (job announcement, ${envelope.length} B)`, () =>
      openEnvelope(jobAnnouncementDomain, envelope, nowMs),
    ),
    measureRate(`envelope sign (job announcement, ${envelope.length} B)`, () =>
      sealEnvelope(jobAnnouncementDomain, body, master),
    ),
    measureRate(`canonical encode (job announcement, ${encoded.length} B)`, () => encodeCanonical(wire)),
    measureRate(`canonical decode (job announcement, ${encoded.length} B)`, () => decodeCanonical(encoded)),
  ];
  const rate = (prefix: string) => rates.find((r) => r.name.startsWith(prefix))?.medianPerSecond ?? Number.NaN;
  for (const r of rates) console.log(formatRate(r));
  const verifyRatio = rate("envelope verify") / rate("raw node:crypto ed25519 verify");
  const nodeOverNobleVerify = rate("raw node:crypto ed25519 verify") / rate("raw @noble/ed25519 verify");
  console.log(`ratio envelope verify / raw node:crypto verify:             ${verifyRatio.toFixed(3)}   (goal >= 0.7)`);
  console.log(`ratio node:crypto verify / @noble/ed25519 verify:           ${nodeOverNobleVerify.toFixed(1)}x`);
  return { rates, envelopeBytes: envelope.length, verifyRatio, nodeOverNobleVerify };
}
