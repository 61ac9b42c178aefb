/**
 * crypto/: keys, canonical encoding, signed envelopes, keysets, replay ledger.
 *
 * House rules (DESIGN.md, Rule 1): no I/O, no clock, no randomness of its own.
 * Time comes in as `nowMs`, seeds come in as bytes, and every failure is a
 * CimeshError subclass naming the field and what was expected.
 */
export {
  bytesEqual,
  type CanonicalValue,
  canonicalEncodeOptions,
  decodeCanonical,
  encodeCanonical,
  maxCanonicalBytes,
  rfc8949ReferenceEncodeOptions,
} from "./encoding.ts";
export {
  checkTime,
  compareBytes,
  createDomainRegistry,
  type Domain,
  type DomainOptions,
  type DomainRegistry,
  defineDomain,
  type MultiVerified,
  maxClockSkewMs,
  maxDomainTagChars,
  maxEnvelopeBytes,
  maxSignaturesPerEnvelope,
  openAnyEnvelope,
  openEnvelope,
  openMultiEnvelope,
  sealEnvelope,
  sealMultiEnvelope,
  type Verified,
} from "./envelope.ts";
export * from "./errors.ts";
export {
  type Identity,
  identityFromSeed,
  maxCachedVerifyKeys,
  publicKeyBytes,
  seedBytes,
  signatureBytes,
  signBytes,
  verifyBytes,
} from "./keys.ts";
export {
  type Announcer,
  acceptKeyset,
  anchorFromGenesis,
  checkAnnouncer,
  type KeysetBody,
  keysetBodySchema,
  keysetDomain,
  maxAnnouncerKeys,
  maxKeysetBytes,
  maxKeysetLifetimeMs,
  maxRootKeys,
  type ProjectTrust,
  projectIdChars,
  projectIdOf,
  projectIdSchema,
  sealKeyset,
  type TrustAnchor,
  trustFromAnchor,
} from "./keyset.ts";
export {
  admitSeq,
  createReplayLedger,
  defaultReplayLedgerLimits,
  type ReplayLedger,
  type ReplayLedgerLimits,
  type ReplayLedgerSnapshot,
  type ReplayOutcome,
  type ReplayVerdict,
  recordSeq,
  restoreReplayLedger,
  type SignerWindow,
  snapshotReplayLedger,
} from "./ledger.ts";
export {
  boundedBytes,
  fixedBytes,
  idSchema,
  maxIdChars,
  maxNameChars,
  maxReasonChars,
  maxSeq,
  maxTimestampMs,
  parseWith,
  publicKeySchema,
  reasonSchema,
  type SignedHeader,
  schemaErrorFrom,
  seqSchema,
  signatureSchema,
  signedHeaderShape,
  timestampMsSchema,
} from "./schema.ts";
