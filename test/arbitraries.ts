/**
 * fast-check arbitraries for every message body of the protocol, shared by the
 * message tests and by later tests of the scheduling core.
 *
 * Every arbitrary here generates bodies that their zod schema accepts and whose
 * sealed envelope fits their domain's maxBytes, and it reaches for the limits:
 * strings at exactly their maximum length (ASCII and multi-byte), astral
 * characters in free text, empty arrays and arrays at their maximum count,
 * null and present nullable fields, numbers at both ends of their range.
 *
 * Time: every body is valid at `baseNowMs`. issuedAtMs <= baseNowMs <= expiresAtMs,
 * and expiresAtMs - issuedAtMs <= the domain's maxLifetimeMs, so
 * `openEnvelope(domain, bytes, baseNowMs)` passes the time check.
 *
 * Size: the field limits of a message are each reachable, but not all at once
 * (sixty-four steps of 16 KiB commands would not fit any envelope); the domain's
 * maxBytes is the aggregate limit. So a body is typical in most places and
 * large in at most one: a "large" variant puts one array at its maximum count
 * with compact items, or one field at its maximum length, next to otherwise
 * typical fields. Each variant's worst case is noted next to it; the message
 * tests seal thousands of generated bodies, and sealing refuses an oversize one.
 *
 * Free text never holds a lone surrogate: UTF-8 cannot carry one, and the
 * canonical encoder would silently replace it, so the body would not round-trip.
 * Nor does it start with U+FEFF: cborg decodes text with a TextDecoder that
 * strips a leading byte order mark, so encodeCanonical refuses such text
 * (test/crypto-encoding-refusals.test.ts); `withoutLeadingBom` keeps the
 * generated bodies valid.
 */
import { sha256 } from "@noble/hashes/sha2.js";
import fc from "fast-check";
import { base32 } from "multiformats/bases/base32";
import {
  type Availability,
  availabilitySchema,
  type CapabilitySpec,
  type Dimensions,
  maxCores,
  maxDiskBytes,
  maxLabelChars,
  maxLabels,
  maxMemoryBytes,
  maxPlatformsPerSpec,
  maxSelfCheckSteps,
  maxSelfCheckTimeoutMs,
  maxSemverRangeChars,
  maxSlots,
  maxSpecsPerAdvert,
  maxSpecVersion,
  maxStepCommandChars,
  maxToolNameChars,
  maxToolsPerSpec,
  maxToolsPerWorker,
  maxVersionChars,
  type Requirements,
  type Step,
} from "../capabilities/index.ts";
import {
  type Announcer,
  type Domain,
  type Identity,
  identityFromSeed,
  type KeysetBody,
  keysetDomain,
  maxAnnouncerKeys,
  maxIdChars,
  maxNameChars,
  maxReasonChars,
  maxRootKeys,
  maxSeq,
  maxTimestampMs,
  publicKeyBytes,
  seedBytes,
} from "../crypto/index.ts";
import { maxKeysetVersion } from "../crypto/keyset.ts";
import {
  type Award,
  type Bid,
  type Cancel,
  type JobAnnouncement,
  type JobSpec,
  type LeaseRenew,
  type LogChunk,
  maxAnnouncementRounds,
  maxAttemptNumber,
  maxAttemptsPerJob,
  maxAwardsSeen,
  maxCachedInputBytes,
  maxDigestChars,
  maxDurationMs,
  maxEligiblePool,
  maxEnvNameChars,
  maxEnvValueChars,
  maxEnvVars,
  maxExitCode,
  maxJobCpus,
  maxJobDiskBytes,
  maxJobMemoryBytes,
  maxJobProcesses,
  maxJobTimeoutMs,
  maxLockCount,
  maxLockNameChars,
  maxLocksPerJob,
  maxLogChunkBytes,
  maxLogOffsetBytes,
  maxOutputPathChars,
  maxOutputsPerJob,
  maxPriority,
  maxReplicas,
  maxRequiredSpecs,
  maxRunningJobs,
  maxShards,
  maxSourceRevisionChars,
  maxSourceUrlChars,
  maxStepsPerJob,
  maxSummaryChars,
  maxWantedRuns,
  maxWorkerLocks,
  messageDomains,
  type Offer,
  type Outcome,
  outcomeSchema,
  type Reject,
  type Report,
  type ReportAck,
  type ReportStep,
  type Resources,
  type Result,
  type ResultAck,
  type SpecClaim,
  type Verdict,
} from "../jobs/index.ts";

/** The instant every generated body is valid at; verify with this as `nowMs`. */
export const baseNowMs = 1_800_000_000_000;

const minuteMs = 60 * 1000;
const dayMs = 24 * 60 * minuteMs;

/** platformNameSchema's regex allows 1..16 characters; no constant names that limit. */
const maxPlatformNameChars = 16;
/** How many items a "typical" array holds at most. */
const fewItems = 8;

// ---------------------------------------------------------------------------
// Building blocks
// ---------------------------------------------------------------------------

/** fc.record, always with an ordinary prototype (a null-prototype object would not deep-equal its decoded copy). */
function record<T>(model: { [K in keyof T]: fc.Arbitrary<T[K]> }): fc.Arbitrary<T> {
  return fc.record(model, { noNullPrototype: true }) as fc.Arbitrary<T>;
}

/** Mostly `typical`, sometimes `rare`. */
function mostly<T>(typical: fc.Arbitrary<T>, ...rare: fc.Arbitrary<T>[]): fc.Arbitrary<T> {
  return fc.oneof(
    { weight: 4 * rare.length, arbitrary: typical },
    ...rare.map((arbitrary) => ({ weight: 1, arbitrary })),
  );
}

/** An integer in min..max with both ends well represented. */
function int(min: number, max: number): fc.Arbitrary<number> {
  return fc.oneof(
    { weight: 6, arbitrary: fc.integer({ min, max }) },
    { weight: 1, arbitrary: fc.constantFrom(min, max) },
  );
}

/** A value or null, each about half the time. */
function nullable<T>(arbitrary: fc.Arbitrary<T>): fc.Arbitrary<T | null> {
  return fc.option(arbitrary, { nil: null, freq: 2 });
}

/** Arrays of up to `fewItems` items, or (rarely) exactly `max` items. */
function arrayOf<T>(item: fc.Arbitrary<T>, max: number, minLength = 0): fc.Arbitrary<T[]> {
  return mostly(
    fc.array(item, { minLength, maxLength: Math.min(max, fewItems) }),
    fc.array(item, { minLength: max, maxLength: max }),
  );
}

/** Arrays of `minLength`..`max` items, reaching `max` often: for variants that fill one array. */
function manyOf<T>(item: fc.Arbitrary<T>, max: number, minLength = 0): fc.Arbitrary<T[]> {
  return fc.oneof(
    fc.array(item, { minLength, maxLength: max, size: "max" }),
    fc.array(item, { minLength: max, maxLength: max }),
  );
}

const digits = "0123456789";
const lower = "abcdefghijklmnopqrstuvwxyz";
const upper = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";

function chars(set: string): fc.Arbitrary<string> {
  return fc.constantFrom(...set);
}

/**
 * Strings matching `first` then `rest`{0,maxRest}: mostly short, sometimes of
 * exactly 1 + maxRest characters. Every character is ASCII.
 */
function pattern(first: string, rest: string, maxRest: number, shortRest = 12): fc.Arbitrary<string> {
  const tail = mostly(
    fc.string({ unit: chars(rest), maxLength: Math.min(maxRest, shortRest) }),
    fc.string({ unit: chars(rest), minLength: maxRest, maxLength: maxRest }),
  );
  return fc.tuple(chars(first), tail).map(([head, more]) => head + more);
}

/** A character of the basic multilingual plane, not a surrogate: one UTF-16 unit, up to 3 UTF-8 bytes. */
const bmpChar = fc
  .oneof(fc.integer({ min: 0, max: 0xd7ff }), fc.integer({ min: 0xe000, max: 0xffff }))
  .map((code) => String.fromCharCode(code));

/** Cuts `text` to at most `maxUnits` UTF-16 units without splitting a surrogate pair. */
function truncateUnits(text: string, maxUnits: number): string {
  let out = "";
  for (const char of text) {
    if (out.length + char.length > maxUnits) break;
    out += char;
  }
  return out;
}

/** Replaces a leading U+FEFF, which encodeCanonical refuses (see the header). */
function withoutLeadingBom(text: string): string {
  return text.startsWith("\uFEFF") ? ` ${text.slice(1)}` : text;
}

/**
 * Well-formed free text of minChars..maxChars UTF-16 units (what zod's .min/.max count).
 * Mostly short (astral characters, control characters, printable ASCII); sometimes
 * exactly maxChars of ASCII or of 3-byte characters, or close to maxChars with
 * astral characters. Worst case 3 * maxChars UTF-8 bytes.
 */
export function arbText(maxChars: number, minChars = 0): fc.Arbitrary<string> {
  if (minChars > 1 || maxChars < 16) throw new RangeError("arbText: expected minChars <= 1 and maxChars >= 16");
  const short = Math.min(maxChars, 32);
  return mostly(
    fc.oneof(
      fc.string({ unit: "binary", minLength: minChars, maxLength: Math.floor(short / 2) }),
      fc.string({ unit: "grapheme-ascii", minLength: minChars, maxLength: short }),
    ),
    fc.string({ unit: "binary-ascii", minLength: maxChars, maxLength: maxChars }),
    fc.string({ unit: bmpChar, minLength: maxChars, maxLength: maxChars }),
    fc
      .string({ unit: "binary", minLength: Math.ceil(maxChars / 2), maxLength: maxChars })
      // At least ceil(maxChars / 2) code points, so at least minChars units once cut.
      .map((text) => truncateUnits(text, maxChars)),
  ).map(withoutLeadingBom);
}

/** ASCII text of exactly `length` characters: a long command, a long label, at one byte per character. */
function asciiOfLength(length: number): fc.Arbitrary<string> {
  return fc.string({ unit: "binary-ascii", minLength: length, maxLength: length });
}

// ---------------------------------------------------------------------------
// Shared fields
// ---------------------------------------------------------------------------

/** 32 bytes to pass to identityFromSeed. */
export const arbSeed: fc.Arbitrary<Uint8Array> = fc.uint8Array({ minLength: seedBytes, maxLength: seedBytes });

/** A signing identity from a generated seed. */
export const arbIdentity: fc.Arbitrary<Identity> = arbSeed.map((seed) => identityFromSeed(seed));

/** 32 bytes in a public key field. The schema does not check they are a curve point, and neither does this. */
export const arbPublicKey: fc.Arbitrary<Uint8Array> = fc.uint8Array({
  minLength: publicKeyBytes,
  maxLength: publicKeyBytes,
});

/** A project id: multibase 'b' + base32 of 32 bytes, the form projectIdOf gives (53 characters). */
export const arbProjectId: fc.Arbitrary<string> = fc
  .uint8Array({ minLength: 32, maxLength: 32 })
  .map((bytes) => base32.encode(bytes));

/** The CIDv1 text of raw bytes with this sha-256: 'bafkrei' + 52 base32 characters. */
export function cidOfSha256(hash: Uint8Array): string {
  return base32.encode(Uint8Array.from([0x01, 0x55, 0x12, 0x20, ...hash]));
}

/** The CIDv1 text of `text`'s UTF-8 bytes: a realistic, fixed content id. */
export function cidOfText(text: string): string {
  return cidOfSha256(sha256(new TextEncoder().encode(text)));
}

/**
 * A content id as digestSchema accepts it: 'b' + base32 of some bytes, so it
 * also decodes with multiformats' base32. Mostly a realistic sha-256 CIDv1
 * (59 characters); sometimes the shortest (8) or longest (maxDigestChars)
 * base32 text, or anything between.
 */
export const arbDigest: fc.Arbitrary<string> = (() => {
  // base32 of n bytes is ceil(8n / 5) characters, plus the 'b' prefix.
  const minBytes = 4; // 1 + ceil(32 / 5) = 8 characters, digestSchema's minimum
  const maxBytes = Math.floor(((maxDigestChars - 1) * 5) / 8); // 79 bytes: 1 + 127 = 128 characters
  const bytes = (min: number, max: number) => fc.uint8Array({ minLength: min, maxLength: max });
  return mostly(
    bytes(32, 32).map(cidOfSha256),
    bytes(minBytes, maxBytes).map((raw) => base32.encode(raw)),
    fc.constantFrom(minBytes, maxBytes).chain((n) => bytes(n, n).map((raw) => base32.encode(raw))),
  );
})();

/** A capability spec UUID: lowercase RFC 9562 text. */
export const arbSpecUuid: fc.Arbitrary<string> = fc.uuid();

/** A timestamp the schema accepts: mostly within a month of baseNowMs, sometimes anywhere in 0..maxTimestampMs. */
export const arbTimestampMs: fc.Arbitrary<number> = mostly(
  fc.integer({ min: baseNowMs - 30 * dayMs, max: baseNowMs + 30 * dayMs }),
  fc.integer({ min: 0, max: maxTimestampMs }),
  fc.constantFrom(0, maxTimestampMs),
);

/** A sequence number: mostly small, sometimes anywhere up to maxSeq. */
export const arbSeq: fc.Arbitrary<number> = mostly(fc.nat({ max: 1000 }), fc.integer({ min: 0, max: maxSeq }));

/** issuedAtMs <= baseNowMs <= expiresAtMs <= issuedAtMs + maxLifetimeMs. */
export function arbLifetime(maxLifetimeMs: number): fc.Arbitrary<{ issuedAtMs: number; expiresAtMs: number }> {
  return fc.tuple(int(0, maxLifetimeMs), int(0, maxLifetimeMs)).map(([age, pick]) => {
    const issuedAtMs = baseNowMs - age;
    // expiresAtMs ranges over baseNowMs .. issuedAtMs + maxLifetimeMs, a span of maxLifetimeMs - age.
    const expiresAtMs = baseNowMs + (pick % (maxLifetimeMs - age + 1));
    return { issuedAtMs, expiresAtMs };
  });
}

/** The signed header every single-signed body of `domain` carries, valid at baseNowMs. */
export function arbHeader(domain: Domain): fc.Arbitrary<{ issuedAtMs: number; expiresAtMs: number; seq: number }> {
  return fc.tuple(arbLifetime(domain.maxLifetimeMs), arbSeq).map(([lifetime, seq]) => ({ ...lifetime, seq }));
}

/** Adds the signed header of `domain` to generated fields. */
function withHeader<T>(domain: Domain, fields: fc.Arbitrary<T>) {
  return fc.tuple(arbHeader(domain), fields).map(([header, rest]) => ({ ...header, ...rest }));
}

/** A job id, step name and the like (idSchema): mostly short, sometimes maxIdChars. */
export const arbId: fc.Arbitrary<string> = pattern(
  `${lower}${upper}${digits}`,
  `${lower}${upper}${digits}._-`,
  maxIdChars - 1,
);

const arbPlatformName: fc.Arbitrary<string> = mostly(
  fc.constantFrom("linux", "darwin", "win32", "freebsd", "openbsd", "x64", "arm64", "ia32", "riscv64", "s390x"),
  pattern(`${lower}${digits}_`, `${lower}${digits}_`, maxPlatformNameChars - 1),
);

const arbLabel: fc.Arbitrary<string> = mostly(
  fc.constantFrom("gpu", "docker", "kvm", "fast-disk", "region:eu-west", "nix"),
  pattern(`${lower}${digits}`, `${lower}${digits}._:-`, maxLabelChars - 1),
);

const arbToolName: fc.Arbitrary<string> = mostly(
  fc.constantFrom("node", "npm", "gcc", "clang", "cargo", "go", "python3", "g++", "java"),
  pattern(`${lower}${upper}${digits}`, `${lower}${upper}${digits}._+-`, maxToolNameChars - 1),
);

/** A tool name no longer than 16 characters: for arrays that fill up to their maximum count. */
const arbShortToolName: fc.Arbitrary<string> = pattern(
  `${lower}${upper}${digits}`,
  `${lower}${upper}${digits}._+-`,
  15,
  15,
);

const arbAvailability: fc.Arbitrary<Availability> = fc.constantFrom(...availabilitySchema.options);
const arbOutcome: fc.Arbitrary<Outcome> = fc.constantFrom(...outcomeSchema.options);

/** Text of some bytes: a semver range or version as people write them, or free text up to `maxChars`. */
function arbVersionLike(maxChars: number): fc.Arbitrary<string> {
  return mostly(
    fc.constantFrom(">=18", "^22.1.0", "~1.2", "*", "1.x || >=2.5.0", "14.2.0", "1.78.0-nightly", "v22.18.0"),
    asciiOfLength(maxChars),
    arbText(Math.min(maxChars, 16), 1),
  );
}

// ---------------------------------------------------------------------------
// capabilities/: CapabilitySpec, and the dimensions and spec claims of an offer
// ---------------------------------------------------------------------------

function arbStep(maxName: number, maxRun: number): fc.Arbitrary<Step> {
  return record<Step>({ name: arbText(maxName, 1), run: arbText(maxRun, 1) });
}

/** A step with a command of exactly maxStepCommandChars ASCII characters (16 KiB). */
const arbHugeStep: fc.Arbitrary<Step> = record<Step>({
  name: arbText(32, 1),
  run: asciiOfLength(maxStepCommandChars),
});

/** Inserts `item` into `items` at a generated position. */
function withOneOf<T>(items: fc.Arbitrary<T[]>, item: fc.Arbitrary<T>): fc.Arbitrary<T[]> {
  return fc.tuple(items, item, fc.nat()).map(([list, one, at]) => {
    const out = [...list];
    out.splice(at % (list.length + 1), 0, one);
    return out;
  });
}

const arbRequirements: fc.Arbitrary<Requirements> = record<Requirements>({
  os: arrayOf(arbPlatformName, maxPlatformsPerSpec),
  arch: arrayOf(arbPlatformName, maxPlatformsPerSpec),
  minCores: int(0, maxCores),
  minMemoryBytes: int(0, maxMemoryBytes),
  minDiskBytes: int(0, maxDiskBytes),
  // Worst case 32 * (65 + 128 + 12) bytes: ranges reach their maximum in ASCII only.
  tools: arrayOf(record({ name: arbToolName, range: arbVersionLike(maxSemverRangeChars) }), maxToolsPerSpec),
  labels: arrayOf(arbLabel, maxLabels),
});

/**
 * Capability spec bodies. Self-check steps: up to maxSelfCheckSteps with names up to
 * maxNameChars and commands up to 256 characters (16 * 1.2 KiB), or one 16 KiB
 * command among them. Worst case about 45 KiB of maxSpecBytes (64 KiB).
 */
export const arbCapabilitySpec: fc.Arbitrary<CapabilitySpec> = withHeader(
  messageDomains.capabilitySpec,
  record({
    uuid: arbSpecUuid,
    name: arbText(maxNameChars, 1),
    version: int(1, maxSpecVersion),
    requirements: arbRequirements,
    selfCheck: record({
      steps: mostly(
        arrayOf(arbStep(maxNameChars, 256), maxSelfCheckSteps),
        withOneOf(fc.array(arbStep(maxNameChars, 256), { maxLength: maxSelfCheckSteps - 1 }), arbHugeStep),
      ),
      timeoutMs: int(1, maxSelfCheckTimeoutMs),
    }),
  }),
);

/** Free and total slots with free <= total; an offer has at least one slot in all. */
const arbSlots: fc.Arbitrary<{ freeSlots: number; totalSlots: number }> = fc
  .tuple(int(0, maxSlots), int(1, maxSlots))
  .map(([a, b]) => ({ freeSlots: Math.min(a, b), totalSlots: Math.max(a, b) }));

function arbDimensions(tools: fc.Arbitrary<Dimensions["tools"]>, labels: fc.Arbitrary<string[]>) {
  return record<Dimensions>({
    os: arbPlatformName,
    arch: arbPlatformName,
    cores: int(1, maxCores),
    memoryBytes: int(0, maxMemoryBytes),
    diskBytes: int(0, maxDiskBytes),
    tools,
    labels,
  });
}

const arbSpecClaim = record<SpecClaim>({
  uuid: arbSpecUuid,
  version: int(1, maxSpecVersion),
  passed: fc.boolean(),
  checkedAtMs: arbTimestampMs,
});

/** A lock name (lockNameSchema): a lowercase letter or digit, then up to maxLockNameChars - 1 of them, '.', '_', '-'. */
const arbLockName: fc.Arbitrary<string> = pattern(`${lower}${digits}`, `${lower}${digits}._-`, maxLockNameChars - 1);

/** A worker's local locks in its offer: absent mostly, else up to maxWorkerLocks distinct names. */
const arbOfferLocks = fc.option(
  fc.uniqueArray(record({ name: arbLockName, free: mostly(int(0, 4), int(0, maxLockCount)) }), {
    maxLength: maxWorkerLocks,
    selector: (lock) => lock.name,
  }),
  { nil: undefined },
);

/**
 * Standing offer bodies: one project, the worker's slots, dimensions and spec claims. Typical: up to 8 specs, tools
 * (name and version up to their maximum) and labels, about 6 KiB at worst. Large variants fill one array: 64 specs
 * (6 KiB), 128 tools of names and versions up to 16 characters (10 KiB) or 32 labels of 64 characters (2 KiB); any
 * may carry up to maxWorkerLocks local locks (about 1.4 KiB). Worst case about 13.5 KiB of maxOfferBytes (16 KiB).
 */
export const arbOffer: fc.Arbitrary<Offer> = (() => {
  const tool = record({ name: arbToolName, version: arbVersionLike(maxVersionChars) });
  const shortTool = record({ name: arbShortToolName, version: arbText(16, 1) });
  const typicalTools = fc.array(tool, { maxLength: fewItems });
  const typicalLabels = fc.array(arbLabel, { maxLength: fewItems });
  const parts = (specs: fc.Arbitrary<SpecClaim[]>, dimensions: fc.Arbitrary<Dimensions>) =>
    withHeader(
      messageDomains.offer,
      fc
        .tuple(
          record({
            project: arbProjectId,
            specs,
            dimensions,
            availability: arbAvailability,
            network: fc.boolean(),
            epoch: arbTimestampMs,
            awardsSeen: mostly(int(0, 64), int(0, maxAwardsSeen)),
          }),
          arbSlots,
          arbOfferLocks,
        )
        .map(([fields, slots, locks]) => ({ ...fields, ...slots, ...(locks === undefined ? {} : { locks }) })),
    );
  const typicalSpecs = fc.array(arbSpecClaim, { maxLength: fewItems });
  return mostly(
    parts(typicalSpecs, arbDimensions(typicalTools, typicalLabels)),
    parts(manyOf(arbSpecClaim, maxSpecsPerAdvert), arbDimensions(typicalTools, typicalLabels)),
    parts(typicalSpecs, arbDimensions(manyOf(shortTool, maxToolsPerWorker), typicalLabels)),
    parts(typicalSpecs, arbDimensions(typicalTools, manyOf(arbLabel, maxLabels))),
  );
})();

// ---------------------------------------------------------------------------
// jobs/: the job spec and announcement
// ---------------------------------------------------------------------------

/** An environment variable name: common ones, or generated up to maxEnvNameChars. Never "__proto__". */
const arbEnvName: fc.Arbitrary<string> = mostly(
  fc.constantFrom("CI", "NODE_ENV", "RUST_BACKTRACE", "_", "GOFLAGS", "npm_config_cache"),
  pattern(`${lower}${upper}_`, `${lower}${upper}${digits}_`, maxEnvNameChars - 1),
).map((name) => (name === "__proto__" ? "__proto_" : name));

/** A short env name (at most 16 characters): for an env that fills up to maxEnvVars. */
const arbShortEnvName: fc.Arbitrary<string> = pattern(`${lower}${upper}_`, `${lower}${upper}${digits}_`, 15, 15).map(
  (name) => (name === "__proto__" ? "__proto_" : name),
);

function arbEnv(
  name: fc.Arbitrary<string>,
  value: fc.Arbitrary<string>,
  minKeys: number,
  maxKeys: number,
): fc.Arbitrary<Record<string, string>> {
  return fc.dictionary(name, value, { minKeys, maxKeys, noNullPrototype: true, size: "max" });
}

const pathSafe = `${lower}${upper}${digits}._-+@ `;

/** One path segment: never empty and never "..". */
function arbSegment(maxChars: number, unicode: boolean): fc.Arbitrary<string> {
  const unit = unicode
    ? fc.oneof(
        { weight: 4, arbitrary: chars(pathSafe) },
        { weight: 1, arbitrary: fc.constantFrom("é", "ß", "日", "本", "😀") },
      )
    : chars(pathSafe);
  return fc
    .string({ unit, minLength: 1, maxLength: maxChars })
    .map((segment) => truncateUnits(segment, maxChars))
    .map((segment) => (segment === ".." ? "..." : segment === "" ? "x" : segment));
}

/**
 * A relative path inside the work folder (relativePathSchema): mostly 1..3 short
 * segments (at most 50 characters), sometimes exactly maxOutputPathChars ASCII.
 */
export const arbRelativePath: fc.Arbitrary<string> = mostly(
  fc.array(arbSegment(16, true), { minLength: 1, maxLength: 3 }).map((segments) => segments.join("/")),
  fc
    .tuple(
      fc.array(arbSegment(31, false), { maxLength: 7 }),
      fc.string({ unit: chars(pathSafe), minLength: maxOutputPathChars, maxLength: maxOutputPathChars }),
    )
    // The directories take at most 7 * 32 characters, so the file name keeps at least 32: never empty, never "..".
    .map(([dirs, filler]) => {
      const prefix = dirs.map((dir) => `${dir}/`).join("");
      return prefix + filler.slice(0, maxOutputPathChars - prefix.length);
    }),
);

/** A long ASCII path of exactly maxOutputPathChars: for outputs that fill up to maxOutputsPerJob. */
const arbLongPath: fc.Arbitrary<string> = fc
  .string({ unit: chars(`${lower}${digits}_-`), minLength: maxOutputPathChars, maxLength: maxOutputPathChars })
  .map((text) => `out/${text.slice(4)}`);

const arbResources: fc.Arbitrary<Resources> = record<Resources>({
  cpus: int(1, maxJobCpus),
  memoryBytes: int(1, maxJobMemoryBytes),
  diskBytes: int(0, maxJobDiskBytes),
  processes: int(1, maxJobProcesses),
});

/** Replicas and quorum with quorum <= replicas. */
const arbReplication: fc.Arbitrary<{ replicas: number; quorum: number }> = fc
  .tuple(int(1, maxReplicas), int(1, maxReplicas))
  .map(([a, b]) => ({ replicas: Math.max(a, b), quorum: Math.min(a, b) }));

interface JobParts {
  steps: fc.Arbitrary<Step[]>;
  env: fc.Arbitrary<Record<string, string>>;
  outputs: fc.Arbitrary<string[]>;
}

/** A job's locks (jobLocksSchema): absent mostly, else up to maxLocksPerJob distinct names. */
const arbJobLocks = fc.option(
  fc.uniqueArray(record({ name: arbLockName, count: mostly(int(1, 8), int(1, maxLockCount)) }), {
    minLength: 1,
    maxLength: maxLocksPerJob,
    selector: (lock) => lock.name,
  }),
  { nil: undefined },
);

function jobSpecOf(parts: JobParts): fc.Arbitrary<JobSpec> {
  return fc
    .tuple(
      record({
        name: arbText(maxNameChars, 1),
        steps: parts.steps,
        env: parts.env,
        timeoutMs: int(1, maxJobTimeoutMs),
        resources: arbResources,
        network: fc.boolean(),
        outputs: parts.outputs,
        inputsDigest: nullable(arbDigest),
        requiredSpecs: arrayOf(arbSpecUuid, maxRequiredSpecs),
        os: nullable(arbPlatformName),
        shards: int(1, maxShards),
        priority: int(0, maxPriority),
        maxAttempts: int(1, maxAttemptsPerJob),
        deadlineMs: arbTimestampMs,
      }),
      arbReplication,
      arbJobLocks,
    )
    .map(([fields, replication, locks]) => ({ ...fields, ...replication, ...(locks === undefined ? {} : { locks }) }));
}

/**
 * Job specs. Typical parts: up to 8 steps (names up to maxNameChars, commands up to
 * 256 characters; 9.4 KiB at worst), up to 8 env vars (values up to 256 characters;
 * 7.2 KiB), up to 8 short outputs, up to maxRequiredSpecs specs: about 19 KiB at
 * worst. A large variant replaces one part: maxStepsPerJob compact steps (16 KiB),
 * one 16 KiB command, maxEnvVars compact vars (7.5 KiB), one value of
 * maxEnvValueChars (12 KiB), or maxOutputsPerJob paths of maxOutputPathChars
 * (16.6 KiB). Worst case about 36 KiB of maxAnnouncementBytes (64 KiB).
 */
export const arbJobSpec: fc.Arbitrary<JobSpec> = (() => {
  const typicalSteps = fc.array(arbStep(maxNameChars, 256), { minLength: 1, maxLength: fewItems });
  const typicalEnv = arbEnv(arbEnvName, arbText(256), 0, fewItems);
  const typicalOutputs = fc.array(arbRelativePath, { maxLength: fewItems });
  const typical: JobParts = { steps: typicalSteps, env: typicalEnv, outputs: typicalOutputs };
  return mostly(
    jobSpecOf(typical),
    jobSpecOf({ ...typical, steps: manyOf(arbStep(16, 64), maxStepsPerJob, 1) }),
    jobSpecOf({
      ...typical,
      steps: withOneOf(fc.array(arbStep(maxNameChars, 256), { maxLength: fewItems - 1 }), arbHugeStep),
    }),
    jobSpecOf({ ...typical, env: arbEnv(arbShortEnvName, arbText(32), 0, maxEnvVars) }),
    jobSpecOf({
      ...typical,
      env: fc
        .tuple(arbEnv(arbEnvName, arbText(256), 0, fewItems - 1), arbText(maxEnvValueChars))
        .map(([env, long]) => ({ ...env, LONG_VALUE: long })),
    }),
    jobSpecOf({ ...typical, outputs: manyOf(arbLongPath, maxOutputsPerJob) }),
  );
})();

/** Job announcement bodies; see arbJobSpec for the size of the job. */
export const arbJobAnnouncement: fc.Arbitrary<JobAnnouncement> = withHeader(
  messageDomains.jobAnnouncement,
  record({
    project: arbProjectId,
    jobId: arbId,
    job: arbJobSpec,
    round: int(0, maxAnnouncementRounds),
    bidProbability: mostly(
      fc.double({ min: 0, max: 1, minExcluded: true, noNaN: true }),
      fc.constantFrom(1, Number.MIN_VALUE, 0.5, 0.1),
    ),
    wantedRuns: int(1, maxWantedRuns),
    eligiblePoolEstimate: int(0, maxEligiblePool),
  }),
);

// ---------------------------------------------------------------------------
// jobs/: what masters and workers say about a job
// ---------------------------------------------------------------------------

const arbAttempt = int(0, maxAttemptNumber);
const arbShard = int(0, maxShards - 1);
const arbRound = int(0, maxAnnouncementRounds);

/** Bid bodies (at most about 250 bytes of maxBidBytes). */
export const arbBid: fc.Arbitrary<Bid> = withHeader(
  messageDomains.bid,
  record({
    project: arbProjectId,
    jobId: arbId,
    round: arbRound,
    availability: arbAvailability,
    runningJobs: int(0, maxRunningJobs),
    freeSlots: int(0, maxRunningJobs),
    cachedInputBytes: int(0, maxCachedInputBytes),
  }),
);

/** Award bodies: they carry the job they give; see arbJobSpec for its size (maxAwardBytes leaves it an announcement's room). */
export const arbAward: fc.Arbitrary<Award> = withHeader(
  messageDomains.award,
  record({
    project: arbProjectId,
    jobId: arbId,
    worker: arbPublicKey,
    attempt: arbAttempt,
    shard: arbShard,
    shardAttempt: arbAttempt,
    leaseExpiresAtMs: arbTimestampMs,
    job: arbJobSpec,
  }),
);

/** Reject bodies: the reason reaches maxReasonChars of 3-byte characters (3 KiB of maxRejectBytes' 4). */
export const arbReject: fc.Arbitrary<Reject> = withHeader(
  messageDomains.reject,
  record({
    project: arbProjectId,
    jobId: arbId,
    worker: arbPublicKey,
    round: arbRound,
    reason: arbText(maxReasonChars),
  }),
);

/** Lease renewal bodies. */
export const arbLeaseRenew: fc.Arbitrary<LeaseRenew> = withHeader(
  messageDomains.leaseRenew,
  record({
    project: arbProjectId,
    jobId: arbId,
    worker: arbPublicKey,
    attempt: arbAttempt,
    progressPermille: int(0, 1000),
    leaseExpiresAtMs: arbTimestampMs,
  }),
);

/** Log chunk bodies: data is empty, short, or exactly maxLogChunkBytes. */
export const arbLogChunk: fc.Arbitrary<LogChunk> = withHeader(
  messageDomains.logChunk,
  record({
    project: arbProjectId,
    jobId: arbId,
    attempt: arbAttempt,
    stream: fc.constantFrom("stdout" as const, "stderr" as const),
    offset: int(0, maxLogOffsetBytes),
    data: mostly(
      fc.uint8Array({ maxLength: 4096 }),
      fc.uint8Array({ minLength: maxLogChunkBytes, maxLength: maxLogChunkBytes }),
      fc.constant(new Uint8Array(0)),
    ),
  }),
);

/** The fields results and reports share: the summary reaches maxSummaryChars of 3-byte characters (12 KiB). */
const resultFields = {
  exitCode: nullable(int(-maxExitCode, maxExitCode)),
  outcome: arbOutcome,
  outputsDigest: nullable(arbDigest),
  logDigest: nullable(arbDigest),
  summary: arbText(maxSummaryChars),
  durationMs: int(0, maxDurationMs),
};

/** Result bodies (at most about 13 KiB of maxResultBytes' 16). */
export const arbResult: fc.Arbitrary<Result> = withHeader(
  messageDomains.result,
  record({
    project: arbProjectId,
    jobId: arbId,
    attempt: arbAttempt,
    shard: arbShard,
    ...resultFields,
  }),
);

/** Result acknowledgement bodies. */
export const arbResultAck: fc.Arbitrary<ResultAck> = withHeader(
  messageDomains.resultAck,
  record({
    project: arbProjectId,
    jobId: arbId,
    worker: arbPublicKey,
    attempt: arbAttempt,
  }),
);

/**
 * Verdict bodies: one digest or null per shard, up to maxShards of them, agreeing
 * workers up to maxReplicas * 4, the reason up to maxReasonChars. Every field may
 * be at its maximum at once (about 39 KiB of maxVerdictBytes).
 */
export const arbVerdict: fc.Arbitrary<Verdict> = withHeader(
  messageDomains.verdict,
  record({
    project: arbProjectId,
    jobId: arbId,
    outcome: fc.constantFrom("passed" as const, "failed" as const),
    acceptedDigests: arrayOf(nullable(arbDigest), maxShards, 1),
    agreeingWorkers: arrayOf(arbPublicKey, maxReplicas * 4),
    reason: arbText(maxReasonChars),
  }),
);

/** Cancel bodies. */
export const arbCancel: fc.Arbitrary<Cancel> = withHeader(
  messageDomains.cancel,
  record({
    project: arbProjectId,
    jobId: arbId,
    attempt: fc.option(fc.integer({ min: 0, max: maxAttemptNumber }), { nil: null }),
    reason: arbText(maxReasonChars),
  }),
);

/** One step of a reported build. */
const arbReportStep = record<ReportStep>({
  name: arbText(maxNameChars),
  outcome: fc.constantFrom("succeeded" as const, "failed" as const, "skipped" as const),
  exitCode: nullable(int(-maxExitCode, maxExitCode)),
  durationMs: int(0, maxDurationMs),
});

/** A report id: 'report-' then lowercase letters, digits or '-'. */
export const arbReportId: fc.Arbitrary<string> = pattern(`${lower}${digits}`, `${lower}${digits}-`, 56, 12).map(
  (rest) => `report-${rest}`,
);

/**
 * Report bodies: typical ones (a few steps and specs, a source stamp or none), and large variants that fill the
 * steps, the spec claims or the summary. Start and end are ordered, the shard below the shards.
 */
export const arbReport: fc.Arbitrary<Report> = withHeader(
  messageDomains.report,
  fc
    .tuple(
      record({
        project: arbProjectId,
        reportId: arbReportId,
        jobName: arbText(maxNameChars, 1),
        jobDigest: arbDigest,
        source: nullable(
          record({
            url: mostly(fc.constantFrom("https://example.org/repo.git", "git@host:x/y"), arbText(maxSourceUrlChars, 1)),
            revision: mostly(fc.constantFrom("main", "0123abcd"), arbText(maxSourceRevisionChars, 1)),
          }),
        ),
        dimensions: arbDimensions(
          fc.array(record({ name: arbShortToolName, version: arbText(16, 1) }), { maxLength: fewItems }),
          fc.array(arbLabel, { maxLength: fewItems }),
        ),
        specs: mostly(fc.array(arbSpecClaim, { maxLength: fewItems }), manyOf(arbSpecClaim, maxSpecsPerAdvert)),
        steps: mostly(
          fc.array(arbReportStep, { minLength: 1, maxLength: fewItems }),
          manyOf(arbReportStep, maxStepsPerJob, 1),
        ),
        ...resultFields,
      }),
      int(1, maxShards),
      int(0, maxShards - 1),
      arbTimestampMs,
      arbTimestampMs,
    )
    .map(([fields, shards, shard, a, b]) => ({
      ...fields,
      shards,
      shard: shard % shards,
      startedAtMs: Math.min(a, b),
      endedAtMs: Math.max(a, b),
    })),
);

/** Report acknowledgement bodies. */
export const arbReportAck: fc.Arbitrary<ReportAck> = withHeader(
  messageDomains.reportAck,
  record({
    project: arbProjectId,
    reportId: arbReportId,
    reporter: arbPublicKey,
    verdict: fc.constantFrom("accepted" as const, "duplicate" as const, "refused" as const),
    reason: arbText(maxReasonChars),
  }),
);

// ---------------------------------------------------------------------------
// crypto/: keysets
// ---------------------------------------------------------------------------

/** Distinct root keys, 1..maxRootKeys of them, and a threshold in 1..roots.length. */
export const arbRoots: fc.Arbitrary<{ roots: Uint8Array[]; threshold: number }> = mostly(
  fc.uniqueArray(arbPublicKey, {
    minLength: 1,
    maxLength: 5,
    selector: (key) => Buffer.from(key).toString("hex"),
  }),
  fc.uniqueArray(arbPublicKey, {
    minLength: maxRootKeys,
    maxLength: maxRootKeys,
    selector: (key) => Buffer.from(key).toString("hex"),
  }),
).chain((roots) => int(1, roots.length).map((threshold) => ({ roots, threshold })));

function arbAnnouncer(maxLabel: number): fc.Arbitrary<Announcer> {
  return record<Announcer>({ key: arbPublicKey, label: arbText(maxLabel), expiresAtMs: arbTimestampMs });
}

/**
 * Keyset bodies. Announcers: up to 8 with labels up to maxNameChars (3.6 KiB at
 * worst), or up to maxAnnouncerKeys with labels up to 16 characters (30 KiB of
 * maxKeysetBytes' 64). Runners: mostly none (the field absent), else up to 8
 * with labels up to maxNameChars. The project id is generated, not derived from
 * the roots: use projectIdOf(roots, threshold) where a test needs the two to
 * agree.
 */
export const arbKeyset: fc.Arbitrary<KeysetBody> = fc
  .tuple(
    arbLifetime(keysetDomain.maxLifetimeMs),
    arbRoots,
    record({
      project: arbProjectId,
      rootVersion: mostly(int(1, 10), int(1, maxKeysetVersion)),
      version: mostly(int(1, 1000), int(1, maxKeysetVersion)),
      announcers: mostly(
        fc.array(arbAnnouncer(maxNameChars), { maxLength: fewItems }),
        manyOf(arbAnnouncer(16), maxAnnouncerKeys),
      ),
    }),
    mostly(fc.constant(null), fc.array(arbAnnouncer(maxNameChars), { maxLength: fewItems })),
  )
  .map(([lifetime, roots, rest, runners]) => ({
    ...rest,
    ...lifetime,
    ...roots,
    ...(runners === null ? {} : { runners }),
  }));

// ---------------------------------------------------------------------------
// All of them
// ---------------------------------------------------------------------------

/** One arbitrary per message type, keyed like messageDomains, plus the multi-signed keyset. */
export interface MessageArbitraries {
  readonly capabilitySpec: fc.Arbitrary<CapabilitySpec>;
  readonly offer: fc.Arbitrary<Offer>;
  readonly jobAnnouncement: fc.Arbitrary<JobAnnouncement>;
  readonly bid: fc.Arbitrary<Bid>;
  readonly award: fc.Arbitrary<Award>;
  readonly reject: fc.Arbitrary<Reject>;
  readonly leaseRenew: fc.Arbitrary<LeaseRenew>;
  readonly logChunk: fc.Arbitrary<LogChunk>;
  readonly result: fc.Arbitrary<Result>;
  readonly resultAck: fc.Arbitrary<ResultAck>;
  readonly verdict: fc.Arbitrary<Verdict>;
  readonly cancel: fc.Arbitrary<Cancel>;
  readonly report: fc.Arbitrary<Report>;
  readonly reportAck: fc.Arbitrary<ReportAck>;
  readonly keyset: fc.Arbitrary<KeysetBody>;
}

export const arbitraries: MessageArbitraries = {
  capabilitySpec: arbCapabilitySpec,
  offer: arbOffer,
  jobAnnouncement: arbJobAnnouncement,
  bid: arbBid,
  award: arbAward,
  reject: arbReject,
  leaseRenew: arbLeaseRenew,
  logChunk: arbLogChunk,
  result: arbResult,
  resultAck: arbResultAck,
  verdict: arbVerdict,
  cancel: arbCancel,
  report: arbReport,
  reportAck: arbReportAck,
  keyset: arbKeyset,
};

// ---------------------------------------------------------------------------
// A typical announcement, for size checks and benchmarks
// ---------------------------------------------------------------------------

/** The capability spec a typical job requires: a fixed UUID. */
export const typicalSpecUuid = "0f8fad5b-d9cb-469f-a165-70867728950e";

/**
 * A realistic job announcement of `project`, issued at `nowMs`: a Node project's
 * CI run (npm ci, npm test), two env vars, modest resources, the inputs digest,
 * one required spec and a deadline. Its envelope is about 730 bytes: an
 * announcement cannot be much smaller, since the envelope takes 129 bytes (tag,
 * signer, signature) and the body's 34 field names about 300 more. `seq` is 1
 * and the job id follows from nowMs; spread over the result to vary them.
 */
export function typicalAnnouncement(project: string, nowMs: number): JobAnnouncement {
  return {
    issuedAtMs: nowMs,
    expiresAtMs: nowMs + 10 * minuteMs,
    seq: 1,
    project,
    jobId: `ci-${nowMs.toString(36)}`,
    job: {
      name: "npm test",
      steps: [
        { name: "install", run: "npm ci" },
        { name: "test", run: "npm test" },
      ],
      env: { CI: "true", NODE_ENV: "test" },
      timeoutMs: 30 * minuteMs,
      resources: { cpus: 2, memoryBytes: 4 * 2 ** 30, diskBytes: 10 * 2 ** 30, processes: 512 },
      network: false,
      outputs: [],
      inputsDigest: cidOfText(`${project} inputs at ${nowMs}`),
      requiredSpecs: [typicalSpecUuid],
      os: "linux",
      replicas: 2,
      quorum: 2,
      shards: 1,
      priority: 500,
      maxAttempts: 3,
      deadlineMs: nowMs + 2 * 60 * minuteMs,
    },
    round: 0,
    bidProbability: 0.25,
    wantedRuns: 2,
    eligiblePoolEstimate: 40,
  };
}
