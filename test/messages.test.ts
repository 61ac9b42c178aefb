/**
 * Property tests of the message bodies: every message type survives
 * sign → encode → decode → verify unchanged, no envelope verifies as another
 * type, schema failures name the field, and envelopes stay within their limits.
 */
import { fc, testProp } from "@fast-check/ava";
import test, { type ExecutionContext } from "ava";
import { maxSlots, maxSpecsPerAdvert, maxSpecVersion } from "../capabilities/index.ts";
import {
  acceptKeyset,
  anchorFromGenesis,
  BadSignatureError,
  checkTime,
  compareBytes,
  type Domain,
  DomainMismatchError,
  defineDomain,
  encodeCanonical,
  type Identity,
  identityFromSeed,
  keysetDomain,
  maxNameChars,
  maxReasonChars,
  maxSeq,
  maxTimestampMs,
  openAnyEnvelope,
  openEnvelope,
  openMultiEnvelope,
  projectIdOf,
  SchemaError,
  sealEnvelope,
  sealKeyset,
  sealMultiEnvelope,
  ThresholdNotMetError,
  trustFromAnchor,
  UnknownDomainError,
} from "../crypto/index.ts";
import {
  cancelSchema,
  type JobAnnouncement,
  type JobSpec,
  maxAnnouncementBytes,
  maxAnnouncementRounds,
  maxAttemptNumber,
  maxAttemptsPerJob,
  maxAwardBytes,
  maxCachedInputBytes,
  maxDigestChars,
  maxDurationMs,
  maxEligiblePool,
  maxEnvVars,
  maxExitCode,
  maxJobCpus,
  maxJobDiskBytes,
  maxJobMemoryBytes,
  maxJobProcesses,
  maxJobTimeoutMs,
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
  messageDomains,
  messageRegistry,
  type Verdict,
} from "../jobs/index.ts";
import {
  arbitraries,
  arbProjectId,
  arbSeed,
  baseNowMs,
  cidOfText,
  type MessageArbitraries,
  typicalAnnouncement,
  typicalSpecUuid,
} from "./arbitraries.ts";

interface Timed {
  issuedAtMs: number;
  expiresAtMs: number;
}

interface Case {
  readonly name: keyof MessageArbitraries;
  readonly domain: Domain;
  readonly arbitrary: fc.Arbitrary<Timed>;
}

const messageNames = Object.keys(messageDomains) as (keyof typeof messageDomains)[];

/** The single-signed message types. */
const messageCases: readonly Case[] = messageNames.map((name) => ({
  name,
  domain: messageDomains[name],
  arbitrary: arbitraries[name],
}));

/** Every domain, the multi-signed keyset included. */
const allCases: readonly Case[] = [
  ...messageCases,
  { name: "keyset", domain: keysetDomain, arbitrary: arbitraries.keyset },
];

/** Distinct public keys in byte order: the signers openMultiEnvelope reports. */
function signersOf(identities: readonly Identity[]): Uint8Array[] {
  const keys = identities.map((identity) => identity.publicKey).sort(compareBytes);
  return keys.filter((key, i) => i === 0 || compareBytes(keys[i - 1] as Uint8Array, key) !== 0);
}

/** A fixed signer for tests about bodies rather than keys. */
const signer = identityFromSeed(new Uint8Array(32).fill(9));

// ---------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------

test("the arbitraries cover every message domain and the keyset", (t) => {
  t.deepEqual(Object.keys(arbitraries).sort(), [...messageNames, "keyset"].sort());
});

for (const { name, domain, arbitrary } of messageCases) {
  testProp(
    `${name}: seal, then open, gives back the body and the signer`,
    [arbitrary, arbSeed],
    (t, body, seed) => {
      const identity = identityFromSeed(seed);
      const bytes = sealEnvelope(domain, body, identity);
      t.true(bytes.length <= domain.maxBytes);

      const opened = openEnvelope(domain, bytes, baseNowMs);
      t.is(opened.domain, domain.tag);
      t.deepEqual(opened.body, body);
      t.deepEqual(opened.signer, identity.publicKey);
      t.deepEqual(opened.bytes, bytes);

      const any = openAnyEnvelope(messageRegistry, bytes, baseNowMs);
      t.is(any.domain, domain.tag);
      t.deepEqual(any.body, body);
      t.deepEqual(any.signer, identity.publicKey);

      // One value, one encoding, and ed25519 is deterministic: resealing what arrived gives the same bytes.
      t.deepEqual(sealEnvelope(domain, opened.body, identity), bytes);
    },
    { numRuns: 200 },
  );
}

testProp(
  "keyset: sealKeyset, then openMultiEnvelope, gives back the body and its distinct signers",
  [arbitraries.keyset, fc.array(arbSeed, { minLength: 1, maxLength: 3 })],
  (t, body, seeds) => {
    const roots = seeds.map((seed) => identityFromSeed(seed));
    const bytes = sealKeyset(body, roots);
    t.true(bytes.length <= keysetDomain.maxBytes);

    const opened = openMultiEnvelope(keysetDomain, bytes);
    t.is(opened.domain, keysetDomain.tag);
    t.deepEqual(opened.body, body);
    t.deepEqual([...opened.signers], signersOf(roots));
    t.deepEqual(opened.bytes, bytes);
    t.notThrows(() => checkTime(opened.body, baseNowMs, "keyset"));

    // Signer order does not matter: signatures are sorted by key.
    t.deepEqual(sealMultiEnvelope(keysetDomain, body, [...roots].reverse()), bytes);
  },
  { numRuns: 200 },
);

testProp(
  "keyset: a genesis keyset signed by at least its threshold of roots is accepted, by fewer refused",
  [
    arbitraries.keyset,
    fc.uniqueArray(arbSeed, { minLength: 1, maxLength: 3, selector: (seed) => Buffer.from(seed).toString("hex") }),
    fc.nat(),
    fc.nat(),
  ],
  (t, generated, seeds, pickThreshold, pickSigners) => {
    const roots = seeds.map((seed) => identityFromSeed(seed));
    const keys = roots.map((root) => root.publicKey);
    const threshold = 1 + (pickThreshold % keys.length);
    const body = { ...generated, roots: keys, threshold, project: projectIdOf(keys, threshold) };
    const trust = trustFromAnchor(anchorFromGenesis(keys, threshold));
    const signing = roots.slice(0, 1 + (pickSigners % roots.length));
    const bytes = sealKeyset(body, signing);
    if (signing.length >= threshold) {
      const accepted = acceptKeyset(trust, bytes, baseNowMs);
      t.deepEqual(accepted.keyset, body);
      t.deepEqual(accepted.keysetBytes, bytes);
    } else {
      t.throws(() => acceptKeyset(trust, bytes, baseNowMs), { instanceOf: ThresholdNotMetError });
    }
  },
  { numRuns: 100 },
);

// ---------------------------------------------------------------------------
// Domain separation
// ---------------------------------------------------------------------------

for (const { name, domain, arbitrary } of allCases) {
  testProp(
    `cross-domain: an envelope sealed as ${name} opens as no other type`,
    [arbitrary],
    (t, body) => {
      const single = sealEnvelope(domain, body, signer);
      const multi = sealMultiEnvelope(domain, body, [signer]);
      for (const other of allCases) {
        if (other.domain === domain) continue;
        const error = t.throws(() => openEnvelope(other.domain, single, baseNowMs), {
          instanceOf: DomainMismatchError,
        });
        t.is(error.expected, other.domain.tag);
        t.is(error.actual, domain.tag);
        t.throws(() => openMultiEnvelope(other.domain, multi), { instanceOf: DomainMismatchError });
      }
      // The mismatch is the only thing wrong: under its own domain the envelope opens.
      t.deepEqual(openEnvelope(domain, single, baseNowMs).body, body);
      t.deepEqual(openMultiEnvelope(domain, multi).body, body);
      if (domain === keysetDomain) {
        t.throws(() => openAnyEnvelope(messageRegistry, single, baseNowMs), { instanceOf: UnknownDomainError });
      } else {
        t.is(openAnyEnvelope(messageRegistry, single, baseNowMs).domain, domain.tag);
      }
    },
    { numRuns: 25 },
  );
}

testProp(
  "cross-domain: the tag is signed, so an envelope re-tagged for a type of the same shape fails its signature",
  [arbitraries.cancel],
  (t, body) => {
    const first = defineDomain("test/first/v1", cancelSchema, { maxBytes: 4096, maxLifetimeMs: maxTimestampMs });
    const second = defineDomain("test/second/v1", cancelSchema, { maxBytes: 4096, maxLifetimeMs: maxTimestampMs });
    const bytes = sealEnvelope(first, body, signer);
    const signature = bytes.subarray(bytes.length - 64);
    const retagged = encodeCanonical([second.tag, body, signer.publicKey, signature]);
    t.throws(() => openEnvelope(second, retagged, baseNowMs), { instanceOf: BadSignatureError });
  },
  { numRuns: 50 },
);

// ---------------------------------------------------------------------------
// Schema errors name the field
// ---------------------------------------------------------------------------

/** Asserts that sealing `body` throws a SchemaError for `field`, its message starting with the field. */
function assertSchemaError<T extends Timed>(t: ExecutionContext, domain: Domain<T>, body: T, field: string): void {
  const error = t.throws(() => sealEnvelope(domain, body, signer), { instanceOf: SchemaError });
  t.is(error.field, field);
  t.true(error.message.startsWith(`${field}: `), error.message);
}

const schemaRuns = { numRuns: 50 };

testProp(
  "schema: a job name over maxNameChars is refused as body.job.name",
  [arbitraries.jobAnnouncement],
  (t, body) => {
    const broken = { ...body, job: { ...body.job, name: "n".repeat(maxNameChars + 1) } };
    assertSchemaError(t, messageDomains.jobAnnouncement, broken, "body.job.name");
  },
  schemaRuns,
);

testProp(
  "schema: quorum above replicas is refused as body.job.quorum",
  [arbitraries.jobAnnouncement],
  (t, body) => {
    const broken = { ...body, job: { ...body.job, quorum: body.job.replicas + 1 } };
    assertSchemaError(t, messageDomains.jobAnnouncement, broken, "body.job.quorum");
  },
  schemaRuns,
);

testProp(
  "schema: an output path with a '..', empty or absolute segment is refused as body.job.outputs[i]",
  [arbitraries.jobAnnouncement, fc.constantFrom("..", "a/../b", "src/..", "/etc/passwd", "a//b", "a/", "a\\b", "")],
  (t, body, path) => {
    const outputs = body.job.outputs.slice(0, maxOutputsPerJob - 1);
    const broken = { ...body, job: { ...body.job, outputs: [...outputs, path] } };
    assertSchemaError(t, messageDomains.jobAnnouncement, broken, `body.job.outputs[${outputs.length}]`);
  },
  schemaRuns,
);

testProp(
  "schema: an env var name with a space, or that starts with a digit, is refused as body.job.env.<name>",
  [arbitraries.jobAnnouncement, fc.constantFrom("MY VAR", " CI", "1PATH", "A-B", "")],
  (t, body, name) => {
    const env: Record<string, string> = { [name]: "x" };
    const broken = { ...body, job: { ...body.job, env } };
    assertSchemaError(t, messageDomains.jobAnnouncement, broken, `body.job.env.${name}`);
  },
  schemaRuns,
);

test("schema: an env var named __proto__ is refused, not dropped from what is signed", (t) => {
  const body = typicalAnnouncement(`b${"a".repeat(52)}`, baseNowMs);
  const env = JSON.parse('{"__proto__": "x", "CI": "true"}') as Record<string, string>;
  t.deepEqual(Object.keys(env), ["__proto__", "CI"]);
  const broken = { ...body, job: { ...body.job, env } };
  assertSchemaError(t, messageDomains.jobAnnouncement, broken, "body.job.env");
  // Nor is it dropped from what arrives: the decoder keeps the key, and the schema refuses it before the signature.
  const arrived = encodeCanonical([messageDomains.jobAnnouncement.tag, broken, signer.publicKey, new Uint8Array(64)]);
  const error = t.throws(() => openEnvelope(messageDomains.jobAnnouncement, arrived, baseNowMs), {
    instanceOf: SchemaError,
  });
  t.is(error.field, "body.job.env");
});

testProp(
  "schema: more than maxEnvVars env vars are refused as body.job.env",
  [arbitraries.jobAnnouncement],
  (t, body) => {
    const env = Object.fromEntries(Array.from({ length: maxEnvVars + 1 }, (_, i) => [`VAR_${i}`, ""]));
    assertSchemaError(t, messageDomains.jobAnnouncement, { ...body, job: { ...body.job, env } }, "body.job.env");
  },
  schemaRuns,
);

testProp(
  "schema: a negative count is refused as that field",
  [arbitraries.bid, fc.constantFrom("runningJobs" as const, "freeSlots" as const, "cachedInputBytes" as const)],
  (t, body, field) => {
    assertSchemaError(t, messageDomains.bid, { ...body, [field]: -1 }, `body.${field}`);
  },
  schemaRuns,
);

testProp(
  "schema: an unknown field is refused at the object that holds it, naming the field",
  [arbitraries.bid, arbitraries.jobAnnouncement],
  (t, bid, announcement) => {
    const extra = { ...bid, extra: 1 };
    const topLevel = t.throws(() => sealEnvelope(messageDomains.bid, extra, signer), {
      instanceOf: SchemaError,
    });
    t.is(topLevel.field, "body");
    t.true(topLevel.message.startsWith("body: "));
    t.true(topLevel.message.includes('"extra"'));

    const nested = { ...announcement, job: { ...announcement.job, sandbox: false } };
    const error = t.throws(() => sealEnvelope(messageDomains.jobAnnouncement, nested, signer), {
      instanceOf: SchemaError,
    });
    t.is(error.field, "body.job");
    t.true(error.message.includes('"sandbox"'));
  },
  schemaRuns,
);

testProp(
  "schema: an offer's freeSlots above totalSlots is refused as body.freeSlots",
  [arbitraries.offer],
  (t, body) => {
    const totalSlots = Math.min(body.totalSlots, maxSlots - 1);
    const broken = { ...body, totalSlots, freeSlots: totalSlots + 1 };
    const error = t.throws(() => sealEnvelope(messageDomains.offer, broken, signer), {
      instanceOf: SchemaError,
    });
    t.is(error.field, "body.freeSlots");
    t.is(error.message, "body.freeSlots: expected at most totalSlots");
  },
  schemaRuns,
);

testProp(
  "schema: an offer of no slots in all, or of more than maxSlots, is refused as body.totalSlots",
  [arbitraries.offer, fc.constantFrom(0, -1, maxSlots + 1)],
  (t, body, totalSlots) => {
    assertSchemaError(t, messageDomains.offer, { ...body, totalSlots, freeSlots: 0 }, "body.totalSlots");
  },
  schemaRuns,
);

testProp(
  "schema: an offer names one project (not a list), and more than maxSpecsPerAdvert claims are refused as body.specs",
  [arbitraries.offer],
  (t, body) => {
    assertSchemaError(t, messageDomains.offer, { ...body, project: [body.project] as never }, "body.project");
    const claim = { uuid: typicalSpecUuid, version: 1, passed: true, checkedAtMs: baseNowMs };
    const specs = Array.from({ length: maxSpecsPerAdvert + 1 }, () => claim);
    assertSchemaError(t, messageDomains.offer, { ...body, specs }, "body.specs");
  },
  schemaRuns,
);

testProp(
  "schema: an award without the job it gives is refused as body.job, one with a broken job as that field",
  [arbitraries.award],
  (t, body) => {
    const { job: _, ...withoutJob } = body;
    assertSchemaError(t, messageDomains.award, withoutJob as never, "body.job");
    assertSchemaError(
      t,
      messageDomains.award,
      { ...body, job: { ...body.job, quorum: body.job.replicas + 1 } },
      "body.job.quorum",
    );
  },
  schemaRuns,
);

testProp(
  "schema: a reason over maxReasonChars is refused as body.reason",
  [arbitraries.reject],
  (t, body) => {
    assertSchemaError(t, messageDomains.reject, { ...body, reason: "r".repeat(maxReasonChars + 1) }, "body.reason");
  },
  schemaRuns,
);

testProp(
  "schema: a worker key of the wrong length is refused as body.worker",
  [arbitraries.award, fc.constantFrom(0, 31, 33, 64)],
  (t, body, length) => {
    assertSchemaError(t, messageDomains.award, { ...body, worker: new Uint8Array(length) }, "body.worker");
  },
  schemaRuns,
);

testProp(
  "schema: log data over maxLogChunkBytes is refused as body.data",
  [arbitraries.logChunk],
  (t, body) => {
    assertSchemaError(t, messageDomains.logChunk, { ...body, data: new Uint8Array(maxLogChunkBytes + 1) }, "body.data");
  },
  { numRuns: 10 },
);

testProp(
  "schema: a verdict with no shard, or a bad digest, is refused as body.acceptedDigests",
  [arbitraries.verdict, fc.constantFrom("Bafy", "bafy", "b1234567", `b${"a".repeat(maxDigestChars)}`)],
  (t, body, digest) => {
    assertSchemaError(t, messageDomains.verdict, { ...body, acceptedDigests: [] }, "body.acceptedDigests");
    const acceptedDigests = [digest, ...body.acceptedDigests.slice(1)];
    assertSchemaError(t, messageDomains.verdict, { ...body, acceptedDigests }, "body.acceptedDigests[0]");
  },
  schemaRuns,
);

testProp(
  "schema: a report's uppercase spec UUID, or an end before its start, is refused by its field",
  [arbitraries.report],
  (t, body) => {
    const claim = { uuid: typicalSpecUuid.toUpperCase(), version: 1, passed: true, checkedAtMs: body.issuedAtMs };
    assertSchemaError(t, messageDomains.report, { ...body, specs: [claim] }, "body.specs[0].uuid");
    const endedAtMs = body.startedAtMs - 1;
    if (endedAtMs >= 0) assertSchemaError(t, messageDomains.report, { ...body, endedAtMs }, "body.endedAtMs");
  },
  schemaRuns,
);

testProp(
  "schema: a lifetime over the domain's maxLifetimeMs, or ending before it starts, is refused as body.expiresAtMs",
  [arbitraries.bid],
  (t, body) => {
    const tooLong = { ...body, expiresAtMs: body.issuedAtMs + messageDomains.bid.maxLifetimeMs + 1 };
    assertSchemaError(t, messageDomains.bid, tooLong, "body.expiresAtMs");
    const backwards = { ...body, expiresAtMs: body.issuedAtMs - 1 };
    assertSchemaError(t, messageDomains.bid, backwards, "body.expiresAtMs");
  },
  schemaRuns,
);

testProp(
  "schema: a keyset threshold above its roots, or a repeated root, is refused as that field",
  [arbitraries.keyset],
  (t, body) => {
    const threshold = t.throws(() => sealKeyset({ ...body, threshold: body.roots.length + 1 }, [signer]), {
      instanceOf: SchemaError,
    });
    t.is(threshold.field, "body.threshold");
    const [first] = body.roots;
    if (first === undefined) return t.fail("a keyset has at least one root");
    const repeated = t.throws(() => sealKeyset({ ...body, roots: [first, first], threshold: 1 }, [signer]), {
      instanceOf: SchemaError,
    });
    t.is(repeated.field, "body.roots");
  },
  schemaRuns,
);

// ---------------------------------------------------------------------------
// Sizes
// ---------------------------------------------------------------------------

/** Text of `length` characters of three UTF-8 bytes each: the most bytes a string of that length can take. */
function wide(length: number): string {
  return "€".repeat(length);
}

const longestDigest = `b${"a".repeat(maxDigestChars - 1)}`;
const longestId = "j".repeat(64);
const project = `b${"q".repeat(52)}`;
const worker = new Uint8Array(32).fill(1);

/** The header of a body valid at baseNowMs for `domain`, with the largest seq. */
function header(domain: Domain) {
  return { issuedAtMs: baseNowMs, expiresAtMs: baseNowMs + domain.maxLifetimeMs, seq: maxSeq };
}

test("size: a typical job announcement seals to a few hundred bytes and opens", (t) => {
  const body = typicalAnnouncement(projectIdOf([signer.publicKey], 1), baseNowMs);
  const bytes = sealEnvelope(messageDomains.jobAnnouncement, body, signer);
  t.log(`typical announcement: ${bytes.length} bytes`);
  t.true(bytes.length >= 400 && bytes.length <= 1000, `${bytes.length} bytes`);
  t.deepEqual(openEnvelope(messageDomains.jobAnnouncement, bytes, baseNowMs).body, body);
});

testProp(
  "size: typicalAnnouncement gives a valid body for any project and time",
  [arbProjectId, fc.integer({ min: 0, max: maxTimestampMs - maxJobTimeoutMs })],
  (t, projectId, nowMs) => {
    const bytes = sealEnvelope(messageDomains.jobAnnouncement, typicalAnnouncement(projectId, nowMs), signer);
    t.is(openEnvelope(messageDomains.jobAnnouncement, bytes, nowMs).body.project, projectId);
  },
  { numRuns: 50 },
);

/** A job with every array at its maximum count and every number at its limit. */
const maximalJob: JobSpec = {
  name: wide(maxNameChars),
  steps: Array.from({ length: maxStepsPerJob }, (_, i) => ({
    name: `step ${i} ${"s".repeat(24)}`,
    run: `${"x".repeat(190)} ${i}`,
  })),
  env: Object.fromEntries(
    Array.from({ length: maxEnvVars }, (_, i) => [`VARIABLE_${i}_${"V".repeat(20)}`, "v".repeat(128)]),
  ),
  timeoutMs: maxJobTimeoutMs,
  resources: {
    cpus: maxJobCpus,
    memoryBytes: maxJobMemoryBytes,
    diskBytes: maxJobDiskBytes,
    processes: maxJobProcesses,
  },
  network: true,
  outputs: Array.from({ length: maxOutputsPerJob }, (_, i) =>
    `out/${i}/${"o".repeat(maxOutputPathChars)}`.slice(0, maxOutputPathChars),
  ),
  inputsDigest: longestDigest,
  requiredSpecs: Array.from({ length: maxRequiredSpecs }, () => typicalSpecUuid),
  os: "linux",
  replicas: maxReplicas,
  quorum: maxReplicas,
  shards: maxShards,
  priority: maxPriority,
  maxAttempts: maxAttemptsPerJob,
  deadlineMs: maxTimestampMs,
};

test("size: a maximal-ish job announcement, every array at its maximum count, fits maxAnnouncementBytes", (t) => {
  const body: JobAnnouncement = {
    ...header(messageDomains.jobAnnouncement),
    project,
    jobId: longestId,
    job: maximalJob,
    round: maxAnnouncementRounds,
    bidProbability: 1,
    wantedRuns: maxWantedRuns,
    eligiblePoolEstimate: maxEligiblePool,
  };
  const bytes = sealEnvelope(messageDomains.jobAnnouncement, body, signer);
  t.log(`maximal-ish announcement: ${bytes.length} of ${maxAnnouncementBytes} bytes`);
  t.true(bytes.length <= maxAnnouncementBytes);
  t.deepEqual(openEnvelope(messageDomains.jobAnnouncement, bytes, baseNowMs).body, body);
});

testProp(
  "size: the job of any announcement that fits fits an award: an award outgrows its announcement by less than maxAwardBytes leaves over maxAnnouncementBytes",
  [arbitraries.jobAnnouncement, arbSeed],
  (t, announcement, seed) => {
    const identity = identityFromSeed(seed);
    const award = {
      ...header(messageDomains.award),
      project: announcement.project,
      jobId: announcement.jobId,
      worker,
      attempt: maxAttemptNumber,
      shard: maxShards - 1,
      shardAttempt: maxAttemptNumber,
      leaseExpiresAtMs: maxTimestampMs,
      job: announcement.job,
    };
    const announced = sealEnvelope(messageDomains.jobAnnouncement, announcement, identity);
    const awarded = sealEnvelope(messageDomains.award, award, identity);
    t.true(
      awarded.length - announced.length <= maxAwardBytes - maxAnnouncementBytes,
      `${awarded.length - announced.length} bytes more`,
    );
    t.deepEqual(openEnvelope(messageDomains.award, awarded, baseNowMs).body.job, announcement.job);
  },
  { numRuns: 100 },
);

interface WorstCase {
  readonly name: string;
  readonly domain: Domain;
  readonly body: Timed;
}

function worstCase<T extends Timed>(name: string, domain: Domain<T>, body: T): WorstCase {
  return { name, domain, body };
}

/** Single-signed types whose every field fits its domain at its limit at once, each built at that limit. */
const worstCases: readonly WorstCase[] = [
  worstCase("bid", messageDomains.bid, {
    ...header(messageDomains.bid),
    project,
    jobId: longestId,
    round: maxAnnouncementRounds,
    availability: "reluctant",
    runningJobs: maxRunningJobs,
    freeSlots: maxRunningJobs,
    cachedInputBytes: maxCachedInputBytes,
  }),
  worstCase("award", messageDomains.award, {
    ...header(messageDomains.award),
    project,
    jobId: longestId,
    worker,
    attempt: maxAttemptNumber,
    shard: maxShards - 1,
    shardAttempt: maxAttemptNumber,
    leaseExpiresAtMs: maxTimestampMs,
    job: maximalJob,
  }),
  worstCase("reject", messageDomains.reject, {
    ...header(messageDomains.reject),
    project,
    jobId: longestId,
    worker,
    round: maxAnnouncementRounds,
    reason: wide(maxReasonChars),
  }),
  worstCase("leaseRenew", messageDomains.leaseRenew, {
    ...header(messageDomains.leaseRenew),
    project,
    jobId: longestId,
    worker,
    attempt: maxAttemptNumber,
    progressPermille: 1000,
    leaseExpiresAtMs: maxTimestampMs,
  }),
  worstCase("logChunk", messageDomains.logChunk, {
    ...header(messageDomains.logChunk),
    project,
    jobId: longestId,
    attempt: maxAttemptNumber,
    stream: "stderr",
    offset: maxLogOffsetBytes,
    data: new Uint8Array(maxLogChunkBytes).fill(0xff),
  }),
  worstCase("result", messageDomains.result, {
    ...header(messageDomains.result),
    project,
    jobId: longestId,
    attempt: maxAttemptNumber,
    shard: maxShards - 1,
    exitCode: -maxExitCode,
    outcome: "timed-out",
    outputsDigest: longestDigest,
    logDigest: longestDigest,
    summary: wide(maxSummaryChars),
    durationMs: maxDurationMs,
  }),
  worstCase("resultAck", messageDomains.resultAck, {
    ...header(messageDomains.resultAck),
    project,
    jobId: longestId,
    worker,
    attempt: maxAttemptNumber,
  }),
  worstCase("verdict", messageDomains.verdict, {
    ...header(messageDomains.verdict),
    project,
    jobId: longestId,
    outcome: "failed",
    acceptedDigests: Array.from({ length: maxShards }, () => longestDigest),
    agreeingWorkers: Array.from({ length: maxReplicas * 4 }, () => worker),
    reason: wide(maxReasonChars),
  }),
  worstCase("cancel", messageDomains.cancel, {
    ...header(messageDomains.cancel),
    project,
    attempt: maxAttemptNumber,
    jobId: longestId,
    reason: wide(maxReasonChars),
  }),
  worstCase("report", messageDomains.report, {
    ...header(messageDomains.report),
    project,
    reportId: `report-${"a".repeat(57)}`,
    jobName: wide(maxNameChars),
    jobDigest: longestDigest,
    source: { url: wide(maxSourceUrlChars), revision: wide(maxSourceRevisionChars) },
    shard: maxShards - 1,
    shards: maxShards,
    dimensions: {
      os: "linux",
      arch: "x64",
      cores: 64,
      memoryBytes: 2 ** 40,
      diskBytes: 2 ** 44,
      tools: [],
      labels: [],
    },
    specs: Array.from({ length: maxSpecsPerAdvert }, () => ({
      uuid: typicalSpecUuid,
      version: maxSpecVersion,
      passed: true,
      checkedAtMs: maxTimestampMs,
    })),
    steps: Array.from({ length: maxStepsPerJob }, () => ({
      name: wide(maxNameChars),
      outcome: "skipped" as const,
      exitCode: -maxExitCode,
      durationMs: maxDurationMs,
    })),
    exitCode: maxExitCode,
    outcome: "refused",
    outputsDigest: longestDigest,
    logDigest: longestDigest,
    summary: wide(maxSummaryChars),
    durationMs: maxDurationMs,
    startedAtMs: maxTimestampMs,
    endedAtMs: maxTimestampMs,
  }),
  worstCase("reportAck", messageDomains.reportAck, {
    ...header(messageDomains.reportAck),
    project,
    reportId: `report-${"a".repeat(57)}`,
    reporter: worker,
    verdict: "duplicate",
    reason: wide(maxReasonChars),
  }),
];

for (const { name, domain, body } of worstCases) {
  test(`size: a ${name} with every field at its limit fits its domain's maxBytes`, (t) => {
    const bytes = sealEnvelope(domain, body, signer);
    t.log(`${name}: ${bytes.length} of ${domain.maxBytes} bytes`);
    t.true(bytes.length <= domain.maxBytes);
    t.deepEqual(openEnvelope(domain, bytes, baseNowMs).body, body);
  });
}

test("size: a verdict for a job of maxShards shards with realistic CIDs fits", (t) => {
  const body: Verdict = {
    ...header(messageDomains.verdict),
    project,
    jobId: "nightly-1",
    outcome: "passed",
    acceptedDigests: Array.from({ length: maxShards }, (_, shard) => cidOfText(`shard ${shard}`)),
    agreeingWorkers: Array.from({ length: maxReplicas }, () => worker),
    reason: "",
  };
  const bytes = sealEnvelope(messageDomains.verdict, body, signer);
  t.deepEqual(openEnvelope(messageDomains.verdict, bytes, baseNowMs).body, body);
});
