/**
 * One named error class per failure. Every error the protocol core throws is a
 * CimeshError, so a shell can tell "the input was bad" (a CimeshError) from "the
 * code is broken" (anything else) and answer peers accordingly.
 */

export class CimeshError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
    this.name = new.target.name;
  }
}

/** Input larger than the limit for its kind. */
export class OversizeError extends CimeshError {
  constructor(what: string, sizeBytes: number, limitBytes: number) {
    super("ERR_OVERSIZE", `${what}: expected at most ${limitBytes} bytes, got ${sizeBytes}`);
  }
}

/** Bytes that are not well-formed CBOR of the accepted subset (no tags, no indefinite lengths, no undefined, safe integers only). */
export class MalformedEncodingError extends CimeshError {
  constructor(what: string, detail: string) {
    super("ERR_MALFORMED_ENCODING", `${what}: expected well-formed deterministic CBOR, ${detail}`);
  }
}

/** A CBOR map that names the same key twice. */
export class DuplicateKeyError extends CimeshError {
  constructor(what: string, detail: string) {
    super("ERR_DUPLICATE_KEY", `${what}: expected unique map keys, ${detail}`);
  }
}

/** Well-formed CBOR that is not the deterministic encoding (RFC 8949 §4.2.1) of its own value. */
export class NonCanonicalError extends CimeshError {
  constructor(what: string) {
    super(
      "ERR_NON_CANONICAL",
      `${what}: expected the RFC 8949 core deterministic encoding of the decoded value, got different bytes`,
    );
  }
}

/** An envelope whose domain tag names no known message type. */
export class UnknownDomainError extends CimeshError {
  readonly domain: string;
  constructor(domain: string) {
    super("ERR_UNKNOWN_DOMAIN", `envelope.domain: expected a known message type, got ${JSON.stringify(domain)}`);
    this.domain = domain;
  }
}

/** An envelope signed for another message type than the one the caller expects. */
export class DomainMismatchError extends CimeshError {
  readonly expected: string;
  readonly actual: string;
  constructor(expected: string, actual: string) {
    super(
      "ERR_DOMAIN_MISMATCH",
      `envelope.domain: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`,
    );
    this.expected = expected;
    this.actual = actual;
  }
}

/** A body or envelope whose fields do not match the schema of its message type. */
export class SchemaError extends CimeshError {
  readonly field: string;
  constructor(field: string, expected: string) {
    super("ERR_SCHEMA", `${field}: ${expected}`);
    this.field = field;
  }
}

/** A signature that does not verify under the signer key it names, or a key that is not a valid ed25519 point. */
export class BadSignatureError extends CimeshError {
  constructor(what: string) {
    super("ERR_BAD_SIGNATURE", `${what}: expected a valid ed25519 signature by the named signer, verification failed`);
  }
}

/** A signed body whose expires-at lies in the past (beyond the allowed clock skew). */
export class ExpiredError extends CimeshError {
  constructor(what: string, expiresAtMs: number, nowMs: number) {
    super("ERR_EXPIRED", `${what}: expected expiresAtMs >= now, got ${expiresAtMs} at now ${nowMs}`);
  }
}

/** A signed body whose issued-at lies in the future (beyond the allowed clock skew). */
export class NotYetValidError extends CimeshError {
  constructor(what: string, issuedAtMs: number, nowMs: number) {
    super("ERR_NOT_YET_VALID", `${what}: expected issuedAtMs <= now, got ${issuedAtMs} at now ${nowMs}`);
  }
}

/** A sequence number the replay ledger has already seen from this signer, or one too old to judge. */
export class ReplayError extends CimeshError {
  constructor(detail: string) {
    super("ERR_REPLAY", `replay ledger: expected a sequence number not seen before from this signer, ${detail}`);
  }
}

/** Key material of the wrong length or form. */
export class InvalidKeyError extends CimeshError {
  constructor(what: string, expected: string) {
    super("ERR_INVALID_KEY", `${what}: expected ${expected}`);
  }
}

/** A keyset whose (rootVersion, version) is not newer than the one already trusted. */
export class KeysetRollbackError extends CimeshError {
  constructor(current: string, offered: string) {
    super("ERR_KEYSET_ROLLBACK", `keyset.version: expected newer than the trusted ${current}, got ${offered}`);
  }
}

/** A keyset that has expired: accepting it would let an attacker freeze a node on stale keys. */
export class KeysetExpiredError extends CimeshError {
  constructor(expiresAtMs: number, nowMs: number) {
    super(
      "ERR_KEYSET_EXPIRED",
      `keyset.expiresAtMs: expected a keyset still valid at ${nowMs}, got one expired at ${expiresAtMs}`,
    );
  }
}

/** A keyset carrying fewer valid root signatures than its threshold. */
export class ThresholdNotMetError extends CimeshError {
  constructor(which: string, got: number, threshold: number) {
    super(
      "ERR_THRESHOLD_NOT_MET",
      `keyset signatures: expected at least ${threshold} valid signatures by the ${which} roots, got ${got}`,
    );
  }
}

/** A keyset that does not belong to the project, or whose roots do not follow from the pinned ones. */
export class KeysetChainError extends CimeshError {
  constructor(field: string, expected: string) {
    super("ERR_KEYSET_CHAIN", `keyset.${field}: expected ${expected}`);
  }
}

/** A signer that is not an announcer in the newest trusted keyset (never was, revoked, or its delegation expired). */
export class AnnouncerNotAuthorizedError extends CimeshError {
  constructor(project: string, detail: string) {
    super(
      "ERR_ANNOUNCER_NOT_AUTHORIZED",
      `signer: expected an announcer key of project ${project} in its newest keyset, ${detail}`,
    );
  }
}

/** Text that is not a CID at all: not a multibase string the decoder knows, or bytes that are no CID. */
export class MalformedCidError extends CimeshError {
  constructor(what: string, got: string) {
    super("ERR_MALFORMED_CID", `${what}: expected a CIDv1 in base32 (b...), got ${got}`);
  }
}

/** A well-formed CID of a version, hash or codec the content-addressed store does not take. */
export class UnsupportedCidError extends CimeshError {
  constructor(what: string, expected: string, got: string) {
    super("ERR_UNSUPPORTED_CID", `${what}: expected ${expected}, got ${got}`);
  }
}

/** Bytes that do not hash to the CID they were fetched, stored or read under. */
export class BlobMismatchError extends CimeshError {
  readonly expected: string;
  readonly actual: string;
  constructor(expected: string, actual: string) {
    super("ERR_BLOB_MISMATCH", `blob: expected bytes that hash to ${expected}, got bytes that hash to ${actual}`);
    this.expected = expected;
    this.actual = actual;
  }
}

/** A tree manifest that breaks one of its rules; the message names the field. */
export class TreeManifestError extends CimeshError {
  readonly field: string;
  constructor(field: string, detail: string) {
    super("ERR_TREE_MANIFEST", `${field}: ${detail}`);
    this.field = field;
  }
}
