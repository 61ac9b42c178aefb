/**
 * Projects and keysets (DESIGN.md, Trust).
 *
 * A project is a threshold of root keys; its id is the hash of its first roots
 * and threshold, so the name proves itself. The roots sign keysets: versioned,
 * expiring lists of the announcer keys that may sign the project's jobs.
 *
 * Keysets are ordered by (rootVersion, version). rootVersion counts root
 * rotations and must advance one step at a time, each step signed by the
 * threshold of the roots before it and of the roots after it, so a node can
 * follow the chain from the roots it pinned. Within one rootVersion the roots
 * are fixed and version may jump. As in TUF (the update framework's spec,
 * §5.3 and its fast-forward recovery), a root rotation is also how a project
 * recovers from a fast-forward: a keyset pushed to an absurd version under the
 * old roots is overtaken by the first keyset of the next rootVersion.
 *
 * Refused, each with its own error: a keyset not newer than the trusted one
 * (rollback), an expired one (freeze), too few root signatures (threshold not
 * met), a project or root chain that does not follow. An announcement signed
 * by a key absent from the newest keyset is refused (revocation).
 */
import { sha256 } from "@noble/hashes/sha2.js";
import { base32 } from "multiformats/bases/base32";
import * as z from "zod";
import { bytesEqual, encodeCanonical } from "./encoding.ts";
import { defineDomain, maxClockSkewMs, openMultiEnvelope, sealMultiEnvelope } from "./envelope.ts";
import {
  AnnouncerNotAuthorizedError,
  KeysetChainError,
  KeysetExpiredError,
  KeysetRollbackError,
  NotYetValidError,
  SchemaError,
  ThresholdNotMetError,
} from "./errors.ts";
import type { Identity } from "./keys.ts";
import { maxNameChars, publicKeySchema, timestampMsSchema } from "./schema.ts";

export const maxRootKeys = 16;
export const maxAnnouncerKeys = 256;
/** Trusted runners a keyset may name besides its announcers. */
export const maxRunnerKeys = 256;
export const maxKeysetBytes = 64 * 1024;
/** A keyset may claim to stay valid for at most this long: it must be renewed, so a frozen node notices. */
export const maxKeysetLifetimeMs = 400 * 24 * 60 * 60 * 1000;
export const maxKeysetVersion = Number.MAX_SAFE_INTEGER;
/** Length of a project id: multibase 'b' + base32 of a sha-256. */
export const projectIdChars = 53;

export const projectIdSchema = z
  .string()
  .length(projectIdChars, `expected a project id of ${projectIdChars} characters`)
  .regex(/^b[a-z2-7]+$/, "expected a project id: 'b' then lowercase base32");

const announcerSchema = z.strictObject({
  key: publicKeySchema,
  label: z.string().max(maxNameChars),
  expiresAtMs: timestampMsSchema,
});

export const keysetBodySchema = z
  .strictObject({
    project: projectIdSchema,
    rootVersion: z.number().int().min(1).max(maxKeysetVersion),
    version: z.number().int().min(1).max(maxKeysetVersion),
    issuedAtMs: timestampMsSchema,
    expiresAtMs: timestampMsSchema,
    roots: z.array(publicKeySchema).min(1).max(maxRootKeys),
    threshold: z.number().int().min(1).max(maxRootKeys),
    announcers: z.array(announcerSchema).max(maxAnnouncerKeys),
    /**
     * The project's own machines: workers whose results anchor a quorum (jobs/master.ts). Announcers are runners too.
     * Absent in a keyset that names none.
     */
    runners: z.array(announcerSchema).max(maxRunnerKeys).optional(),
  })
  .superRefine((body, ctx) => {
    if (body.threshold > body.roots.length) {
      ctx.addIssue({
        code: "custom",
        path: ["threshold"],
        message: `expected at most the ${body.roots.length} roots listed`,
      });
    }
    if (new Set(body.roots.map((key) => Buffer.from(key).toString("hex"))).size !== body.roots.length) {
      ctx.addIssue({ code: "custom", path: ["roots"], message: "expected distinct root keys" });
    }
  });

export type KeysetBody = z.infer<typeof keysetBodySchema>;
export type Announcer = KeysetBody["announcers"][number];

export const keysetDomain = defineDomain("cimesh/keyset/v1", keysetBodySchema, {
  maxBytes: maxKeysetBytes,
  maxLifetimeMs: maxKeysetLifetimeMs,
});

function sortedKeys(keys: readonly Uint8Array[]): Uint8Array[] {
  return [...keys].sort((a, b) => Buffer.compare(a, b));
}

/** The id of the project whose first roots are `roots` with `threshold`: the hash of both, canonically encoded. */
export function projectIdOf(roots: readonly Uint8Array[], threshold: number): string {
  return base32.encode(sha256(encodeCanonical(["cimesh/project/v1", sortedKeys(roots), threshold])));
}

/** What a volunteer pins for a project: its id and the roots it trusts to speak for it. */
export interface TrustAnchor {
  readonly project: string;
  readonly roots: readonly Uint8Array[];
  readonly threshold: number;
}

/** A node's trust in one project: the anchor it pinned and the newest keyset it accepted. */
export interface ProjectTrust {
  readonly anchor: TrustAnchor;
  readonly keyset: KeysetBody | null;
  /** The envelope of `keyset`, to pass on to peers and to store. */
  readonly keysetBytes: Uint8Array | null;
}

/** Anchors trust in a project from its first roots: the id follows from them. */
export function anchorFromGenesis(roots: readonly Uint8Array[], threshold: number): TrustAnchor {
  if (threshold < 1 || threshold > roots.length) {
    throw new SchemaError("threshold", `expected 1..${roots.length}, got ${threshold}`);
  }
  return { project: projectIdOf(roots, threshold), roots: sortedKeys(roots), threshold };
}

export function trustFromAnchor(anchor: TrustAnchor): ProjectTrust {
  return { anchor, keyset: null, keysetBytes: null };
}

function countSigners(signers: readonly Uint8Array[], roots: readonly Uint8Array[]): number {
  let count = 0;
  for (const root of roots) if (signers.some((signer) => bytesEqual(signer, root))) count++;
  return count;
}

function sameRoots(a: readonly Uint8Array[], b: readonly Uint8Array[]): boolean {
  if (a.length !== b.length) return false;
  const sa = sortedKeys(a);
  const sb = sortedKeys(b);
  return sa.every((key, i) => bytesEqual(key, sb[i] as Uint8Array));
}

function describe(body: { rootVersion: number; version: number }): string {
  return `(rootVersion ${body.rootVersion}, version ${body.version})`;
}

/** Signs a keyset body with root identities. */
export function sealKeyset(body: KeysetBody, roots: readonly Identity[]): Uint8Array {
  return sealMultiEnvelope(keysetDomain, body, roots);
}

/** The project a keyset names, read without verifying it (acceptKeyset judges it), or null for bytes of no keyset. */
export function keysetProjectOf(bytes: Uint8Array): string | null {
  try {
    return openMultiEnvelope(keysetDomain, bytes, { verifySignatures: false }).body.project;
  } catch {
    return null;
  }
}

/**
 * Accepts a keyset into a project's trust, or throws why not.
 * Returns the new trust; the old one is left unchanged, so a refused keyset loses nothing.
 */
export function acceptKeyset(trust: ProjectTrust, bytes: Uint8Array, nowMs: number): ProjectTrust {
  // Everything but the signatures first: a stale, old or foreign keyset costs a decode, not up to 16 verifications.
  const { body, signers } = openMultiEnvelope(keysetDomain, bytes, { verifySignatures: false });
  if (body.project !== trust.anchor.project) {
    throw new KeysetChainError("project", `${trust.anchor.project}, got ${body.project}`);
  }
  if (body.issuedAtMs > nowMs + maxClockSkewMs) throw new NotYetValidError("keyset.issuedAtMs", body.issuedAtMs, nowMs);
  if (body.expiresAtMs + maxClockSkewMs < nowMs) throw new KeysetExpiredError(body.expiresAtMs, nowMs);

  const current = trust.keyset;
  if (current !== null) {
    const newer =
      body.rootVersion > current.rootVersion ||
      (body.rootVersion === current.rootVersion && body.version > current.version);
    if (!newer) throw new KeysetRollbackError(describe(current), describe(body));
    if (body.rootVersion > current.rootVersion + 1) {
      throw new KeysetChainError(
        "rootVersion",
        `${current.rootVersion} or ${current.rootVersion + 1}: a root rotation is accepted one step at a time, got ${body.rootVersion}`,
      );
    }
  }
  const authority = current ?? trust.anchor;
  const rotating =
    current !== null ? body.rootVersion === current.rootVersion + 1 : !sameRoots(body.roots, authority.roots);
  if (!rotating && (!sameRoots(body.roots, authority.roots) || body.threshold !== authority.threshold)) {
    throw new KeysetChainError("roots", "the trusted roots and threshold, unchanged within one rootVersion");
  }
  const byCurrent = countSigners(signers, authority.roots);
  if (byCurrent < authority.threshold) throw new ThresholdNotMetError("current", byCurrent, authority.threshold);
  if (rotating) {
    const byNew = countSigners(signers, body.roots);
    if (byNew < body.threshold) throw new ThresholdNotMetError("new", byNew, body.threshold);
  }
  // The claims hold up: now the signatures, every one of them (a bad one is a forgery, whoever else signed).
  openMultiEnvelope(keysetDomain, bytes);
  return { anchor: trust.anchor, keyset: body, keysetBytes: bytes };
}

/**
 * Checks that `signer` may announce jobs for the project now: it must be an
 * unexpired announcer of the newest accepted keyset, and that keyset unexpired.
 */
export function checkAnnouncer(trust: ProjectTrust, signer: Uint8Array, nowMs: number): Announcer {
  const keyset = trust.keyset;
  if (keyset === null)
    throw new AnnouncerNotAuthorizedError(trust.anchor.project, "got a signer while no keyset is trusted yet");
  if (keyset.expiresAtMs + maxClockSkewMs < nowMs) throw new KeysetExpiredError(keyset.expiresAtMs, nowMs);
  const announcer = keyset.announcers.find((entry) => bytesEqual(entry.key, signer));
  if (announcer === undefined) {
    throw new AnnouncerNotAuthorizedError(
      trust.anchor.project,
      `got ${Buffer.from(signer).toString("hex")}, absent from keyset ${describe(keyset)}`,
    );
  }
  if (announcer.expiresAtMs + maxClockSkewMs < nowMs) {
    throw new AnnouncerNotAuthorizedError(
      trust.anchor.project,
      `got ${announcer.label || "an announcer"} whose delegation expired at ${announcer.expiresAtMs}`,
    );
  }
  return announcer;
}

/**
 * The project's masters now: the unexpired announcer keys of its keyset (hex, sorted). A worker sends them its
 * standing offers (jobs/worker.ts); none while no keyset is known or it has expired.
 */
export function announcersOf(trust: ProjectTrust, nowMs: number): string[] {
  const keyset = trust.keyset;
  if (keyset === null || keyset.expiresAtMs + maxClockSkewMs < nowMs) return [];
  // A key listed twice counts by its first entry, as checkAnnouncer reads it: never a master whose awards are refused.
  const first = new Map<string, number>();
  for (const entry of keyset.announcers) {
    const key = Buffer.from(entry.key).toString("hex");
    if (!first.has(key)) first.set(key, entry.expiresAtMs);
  }
  return [...first]
    .filter(([, expiresAtMs]) => expiresAtMs + maxClockSkewMs >= nowMs)
    .map(([key]) => key)
    .sort();
}

/**
 * The keys whose results anchor a quorum of the project now (jobs/master.ts): the unexpired announcers and runners of
 * the newest keyset, as hex. Empty while no keyset is trusted or when it has expired.
 */
export function trustedRunnersOf(trust: ProjectTrust, nowMs: number): string[] {
  const keyset = trust.keyset;
  if (keyset === null || keyset.expiresAtMs + maxClockSkewMs < nowMs) return [];
  const keys = new Set<string>();
  for (const entry of [...keyset.announcers, ...(keyset.runners ?? [])])
    if (entry.expiresAtMs + maxClockSkewMs >= nowMs) keys.add(Buffer.from(entry.key).toString("hex"));
  return [...keys].sort();
}
