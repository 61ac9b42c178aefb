/**
 * Message bodies owned by jobs/ (DESIGN.md, Messages): the job itself, its
 * announcement, and everything a master and a worker say about it. Every
 * string, array, map and number has a named limit, units in the name.
 */

import * as z from "zod";
import {
  availabilitySchema,
  capabilitySpecDomain,
  dimensionsSchema,
  maxSlots,
  maxSpecsPerAdvert,
  maxSpecVersion,
  platformNameSchema,
  specUuidSchema,
  stepSchema,
} from "../capabilities/index.ts";
import {
  boundedBytes,
  createDomainRegistry,
  type DomainRegistry,
  defineDomain,
  idSchema,
  maxNameChars,
  projectIdSchema,
  publicKeySchema,
  reasonSchema,
  signedHeaderShape,
  timestampMsSchema,
} from "../crypto/index.ts";

const minuteMs = 60 * 1000;
const hourMs = 60 * minuteMs;
const dayMs = 24 * hourMs;

export const maxStepsPerJob = 64;
export const maxEnvVars = 64;
export const maxEnvNameChars = 128;
export const maxEnvValueChars = 4096;
export const maxJobTimeoutMs = dayMs;
export const maxJobCpus = 256;
export const maxJobMemoryBytes = 2 ** 40;
export const maxJobDiskBytes = 2 ** 44;
export const maxJobProcesses = 65_536;
export const maxOutputsPerJob = 64;
export const maxOutputPathChars = 256;
/** A content id as text (CIDv1, multibase base32): long enough for sha-256 and the codecs we use. */
export const maxDigestChars = 128;
export const maxReplicas = 16;
export const maxShards = 256;
export const maxPriority = 1000;
export const maxAttemptsPerJob = 64;
export const maxRequiredSpecs = 16;
/** Re-announcements of one job: at the 30 s default interval, about a year. */
export const maxAnnouncementRounds = 1_000_000;
export const maxEligiblePool = 10_000_000;
export const maxWantedRuns = maxReplicas * maxShards;
export const maxAttemptNumber = maxAttemptsPerJob * maxShards * maxReplicas;
export const maxLogChunkBytes = 64 * 1024;
export const maxLogOffsetBytes = 2 ** 40;
export const maxSummaryChars = 4096;
export const maxExitCode = 255;
export const maxDurationMs = maxJobTimeoutMs * 2;
export const maxCachedInputBytes = 2 ** 53 - 1;
export const maxRunningJobs = 256;
/** A reported build's source stamp: the repository's URL and its revision (a commit id, a tag). */
export const maxSourceUrlChars = 2048;
export const maxSourceRevisionChars = 256;
/** Locks one job may hold at once (a project's lock and a worker's lock of the same name are one entry). */
export const maxLocksPerJob = 8;
/** The most holders a lock may allow: a count above it would be no bound at all. */
export const maxLockCount = 100_000;
/** Local locks one worker may declare, and so name in an offer. */
export const maxWorkerLocks = 16;
/** A lock name: lowercase letters, digits, '.', '_' and '-', starting with a letter or digit. */
export const maxLockNameChars = 64;

export const maxAnnouncementBytes = 64 * 1024;
export const maxBidBytes = 2 * 1024;
/** An award carries the job it gives (the worker may never have seen its announcement): an announcement's room. */
export const maxAwardBytes = maxAnnouncementBytes + 2 * 1024;
export const maxOfferBytes = 16 * 1024;
export const maxRejectBytes = 4 * 1024;
export const maxLeaseRenewBytes = 2 * 1024;
export const maxLogChunkEnvelopeBytes = maxLogChunkBytes + 4 * 1024;
export const maxResultBytes = 16 * 1024;
/**
 * A verdict names one accepted digest per shard: maxShards digests of up to maxDigestChars
 * (about 33 KiB), plus the agreeing workers' keys and the reason, must fit.
 */
export const maxVerdictBytes = 64 * 1024;
export const maxCancelBytes = 4 * 1024;
/** A report names up to maxStepsPerJob steps and maxSpecsPerAdvert spec claims beside the reporter's dimensions. */
export const maxReportBytes = 64 * 1024;
export const maxReportAckBytes = 4 * 1024;
export const maxResultAckBytes = 2 * 1024;

export const maxAnnouncementLifetimeMs = hourMs;
export const maxBidLifetimeMs = 5 * minuteMs;
export const maxAwardLifetimeMs = 10 * minuteMs;
/** A standing offer lasts at most this long: a worker that vanished holds no master's slots for longer. */
export const maxOfferLifetimeMs = hourMs;
export const maxLeaseRenewLifetimeMs = 10 * minuteMs;
export const maxLogChunkLifetimeMs = dayMs;
export const maxResultLifetimeMs = 7 * dayMs;
export const maxVerdictLifetimeMs = 30 * dayMs;
export const maxCancelLifetimeMs = 7 * dayMs;
/** A report is signed anew at each try of its delivery: its lifetime covers one try, not the wait in the outbox. */
export const maxReportLifetimeMs = hourMs;
export const maxReportAckLifetimeMs = 10 * minuteMs;
export const maxResultAckLifetimeMs = 10 * minuteMs;

/** A content id as text: multibase base32 CIDv1 ('b' then lowercase base32). */
export const digestSchema = z
  .string()
  .min(8)
  .max(maxDigestChars)
  .regex(/^b[a-z2-7]+$/, "expected a content id: 'b' then lowercase base32 (CIDv1)");

/** A path inside the job's work folder: relative, no '..' segment, no empty segment. */
export const relativePathSchema = z
  .string()
  .min(1)
  .max(maxOutputPathChars)
  .refine(
    (path) =>
      !path.startsWith("/") &&
      !path.includes("\\") &&
      !path.includes("\0") &&
      path.split("/").every((part) => part !== "" && part !== ".."),
    "expected a relative path inside the work folder, with no '..' or empty segment",
  );

export const envNameSchema = z
  .string()
  .regex(
    /^[A-Za-z_][A-Za-z0-9_]{0,127}$/,
    "expected an environment variable name: a letter or '_', then letters, digits or '_'",
  );

export const lockNameSchema = z
  .string()
  .regex(
    new RegExp(`^[a-z0-9][a-z0-9._-]{0,${maxLockNameChars - 1}}$`),
    `expected a lock name: up to ${maxLockNameChars} lowercase letters, digits, '.', '_' or '-', starting with a letter or digit`,
  );

/**
 * A lock a job holds while each of its runs runs: at most `count` runs naming it run at once across the project's
 * mesh (the master's bound), and on a worker that declares a lock of the same name, at most as many as it declares.
 */
export const jobLockSchema = z.strictObject({
  name: lockNameSchema,
  count: z.number().int().min(1).max(maxLockCount),
});

export const jobLocksSchema = z
  .array(jobLockSchema)
  .max(maxLocksPerJob)
  .refine((locks) => new Set(locks.map((lock) => lock.name)).size === locks.length, "expected each lock named once");

/** A worker's local lock in its offer: how many more runs naming it the worker takes now. */
export const offerLockSchema = z.strictObject({
  name: lockNameSchema,
  free: z.number().int().min(0).max(maxLockCount),
});

export const resourcesSchema = z.strictObject({
  cpus: z.number().int().min(1).max(maxJobCpus),
  memoryBytes: z.number().int().min(1).max(maxJobMemoryBytes),
  diskBytes: z.number().int().min(0).max(maxJobDiskBytes),
  processes: z.number().int().min(1).max(maxJobProcesses),
});

export const jobSpecSchema = z
  .strictObject({
    name: z.string().min(1).max(maxNameChars),
    steps: z.array(stepSchema).min(1).max(maxStepsPerJob),
    env: z
      // zod's record drops a key named __proto__ without an issue: refuse it rather than sign a smaller env than given.
      .custom<unknown>(
        (env) => typeof env !== "object" || env === null || !Object.hasOwn(env, "__proto__"),
        "expected no environment variable named __proto__",
      )
      .pipe(
        z
          .record(envNameSchema, z.string().max(maxEnvValueChars))
          .refine((env) => Object.keys(env).length <= maxEnvVars, `expected at most ${maxEnvVars} variables`),
      ),
    timeoutMs: z.number().int().min(1).max(maxJobTimeoutMs),
    resources: resourcesSchema,
    network: z.boolean(),
    outputs: z.array(relativePathSchema).max(maxOutputsPerJob),
    inputsDigest: digestSchema.nullable(),
    requiredSpecs: z.array(specUuidSchema).max(maxRequiredSpecs),
    os: platformNameSchema.nullable(),
    replicas: z.number().int().min(1).max(maxReplicas),
    quorum: z.number().int().min(1).max(maxReplicas),
    shards: z.number().int().min(1).max(maxShards),
    priority: z.number().int().min(0).max(maxPriority),
    maxAttempts: z.number().int().min(1).max(maxAttemptsPerJob),
    deadlineMs: timestampMsSchema,
    /** Locks each run of the job holds; absent means none. */
    locks: jobLocksSchema.optional(),
    /** The root filesystem the steps run in: the CID of a tree (`cimesh image import`); absent means the worker's own system. */
    image: digestSchema.optional(),
  })
  .refine((job) => job.quorum <= job.replicas, { path: ["quorum"], message: "expected at most replicas" });

const jobRef = {
  project: projectIdSchema,
  jobId: idSchema,
};

const attemptSchema = z.number().int().min(0).max(maxAttemptNumber);
const shardSchema = z
  .number()
  .int()
  .min(0)
  .max(maxShards - 1);
const roundSchema = z.number().int().min(0).max(maxAnnouncementRounds);

export const jobAnnouncementSchema = z.strictObject({
  ...signedHeaderShape,
  ...jobRef,
  job: jobSpecSchema,
  /** 0 for the first announcement, +1 for each re-announcement. */
  round: roundSchema,
  /** Probability with which each eligible worker should bid (DESIGN.md, Claiming work without a bid storm). */
  bidProbability: z.number().gt(0).max(1),
  wantedRuns: z.number().int().min(1).max(maxWantedRuns),
  eligiblePoolEstimate: z.number().int().min(0).max(maxEligiblePool),
});

export const bidSchema = z.strictObject({
  ...signedHeaderShape,
  ...jobRef,
  round: roundSchema,
  availability: availabilitySchema,
  runningJobs: z.number().int().min(0).max(maxRunningJobs),
  freeSlots: z.number().int().min(0).max(maxRunningJobs),
  cachedInputBytes: z.number().int().min(0).max(maxCachedInputBytes),
});

export const awardSchema = z.strictObject({
  ...signedHeaderShape,
  ...jobRef,
  worker: publicKeySchema,
  attempt: attemptSchema,
  shard: shardSchema,
  /** Awards of this shard before this one (0 on its first): what the job sees as CIMESH_ATTEMPT. */
  shardAttempt: attemptSchema,
  leaseExpiresAtMs: timestampMsSchema,
  /** The job to run: an award made from a standing offer reaches a worker that never saw the job's announcement. */
  job: jobSpecSchema,
});

/** A capability spec the worker ran the self-check of, and whether it passed: what eligibility for a job rests on. */
export const specClaimSchema = z.strictObject({
  uuid: specUuidSchema,
  version: z.number().int().min(1).max(maxSpecVersion),
  passed: z.boolean(),
  checkedAtMs: timestampMsSchema,
});

/** Awards one worker process has counted from one master: a count that never wraps. */
export const maxAwardsSeen = Number.MAX_SAFE_INTEGER;

/**
 * A worker's signed standing offer to one master of a project (Swarming's polling bot, signed): "freeSlots slots for
 * this project, my dimensions and capability claims, until expiresAtMs". It is also the worker's advert: 0 free slots
 * says the worker exists (busy, reluctant or paused) without offering anything. A newer offer supersedes an older one.
 * `epoch` names the worker process (its start) and `awardsSeen` the awards it had from this master since: the master
 * takes off the slots of the awards it made that the worker had not seen, so an offer that crosses an award in flight
 * does not offer that slot twice.
 */
export const offerSchema = z
  .strictObject({
    ...signedHeaderShape,
    project: projectIdSchema,
    freeSlots: z.number().int().min(0).max(maxSlots),
    totalSlots: z.number().int().min(1).max(maxSlots),
    availability: availabilitySchema,
    /** Whether the volunteer lets a job that asks for the network have it: a master awards such jobs only then. */
    network: z.boolean(),
    epoch: timestampMsSchema,
    awardsSeen: z.number().int().min(0).max(maxAwardsSeen),
    dimensions: dimensionsSchema,
    specs: z.array(specClaimSchema).max(maxSpecsPerAdvert),
    /** The worker's local locks and the runs naming each it takes now; absent means it declares none. */
    locks: z.array(offerLockSchema).max(maxWorkerLocks).optional(),
  })
  .refine((offer) => offer.freeSlots <= offer.totalSlots, {
    path: ["freeSlots"],
    message: "expected at most totalSlots",
  });

export const rejectSchema = z.strictObject({
  ...signedHeaderShape,
  ...jobRef,
  worker: publicKeySchema,
  round: roundSchema,
  reason: reasonSchema,
});

export const leaseRenewSchema = z.strictObject({
  ...signedHeaderShape,
  ...jobRef,
  worker: publicKeySchema,
  attempt: attemptSchema,
  /** Per mille of the job done, as the worker guesses it; 0 when unknown. */
  progressPermille: z.number().int().min(0).max(1000),
  leaseExpiresAtMs: timestampMsSchema,
});

export const logChunkSchema = z.strictObject({
  ...signedHeaderShape,
  ...jobRef,
  attempt: attemptSchema,
  stream: z.enum(["stdout", "stderr"]),
  offset: z.number().int().min(0).max(maxLogOffsetBytes),
  data: boundedBytes(maxLogChunkBytes, "log bytes"),
});

export const outcomeSchema = z.enum(["succeeded", "failed", "timed-out", "killed", "refused"]);

const resultFields = {
  exitCode: z.number().int().min(-maxExitCode).max(maxExitCode).nullable(),
  outcome: outcomeSchema,
  outputsDigest: digestSchema.nullable(),
  logDigest: digestSchema.nullable(),
  summary: z.string().max(maxSummaryChars),
  durationMs: z.number().int().min(0).max(maxDurationMs),
};

export const resultSchema = z.strictObject({
  ...signedHeaderShape,
  ...jobRef,
  attempt: attemptSchema,
  shard: shardSchema,
  ...resultFields,
});

export const verdictSchema = z.strictObject({
  ...signedHeaderShape,
  ...jobRef,
  outcome: z.enum(["passed", "failed"]),
  /** Per shard, the result digest the quorum agreed on; null where none was reached. */
  acceptedDigests: z.array(digestSchema.nullable()).min(1).max(maxShards),
  agreeingWorkers: z.array(publicKeySchema).max(maxReplicas * 4),
  reason: reasonSchema,
});

export const cancelSchema = z.strictObject({
  ...signedHeaderShape,
  ...jobRef,
  /** The one attempt to stop (sent directly to its worker); null stops the whole job (gossiped). */
  attempt: attemptSchema.nullable(),
  reason: reasonSchema,
});

/** The master's receipt for a result: the worker keeps a finished run's result in its outbox until one comes. */
export const resultAckSchema = z.strictObject({
  ...signedHeaderShape,
  ...jobRef,
  worker: publicKeySchema,
  attempt: attemptSchema,
});

/** A source stamp: the repository and the revision a build was made of (URL@REV on the command line). */
export const sourceStampSchema = z.strictObject({
  url: z.string().min(1).max(maxSourceUrlChars),
  revision: z.string().min(1).max(maxSourceRevisionChars),
});

/** One step of a reported build, as the reporter's sandbox ran it; a step after a failing one did not run (skipped). */
export const reportStepSchema = z.strictObject({
  name: z.string().max(maxNameChars),
  outcome: z.enum(["succeeded", "failed", "skipped"]),
  exitCode: z.number().int().min(-maxExitCode).max(maxExitCode).nullable(),
  durationMs: z.number().int().min(0).max(maxDurationMs),
});

/** A report's id, chosen by its reporter: `report-` then letters, digits or '-', apart from every job id's form. */
export const reportIdSchema = z
  .string()
  .regex(/^report-[a-z0-9-]{1,57}$/, "expected a report id: 'report-' then up to 57 lowercase letters, digits or '-'");

/**
 * A push-only build (Tinderbox style): a node ran a project's job file on its own initiative, in its own sandbox,
 * and reports what came of it to the project's masters. `jobDigest` names the job file's bytes; `specs` are the
 * capability specs the reporter's self-checks passed; `logDigest` and `outputsDigest` are trees in the reporter's
 * blob store, which the master fetches through the mesh.
 */
export const reportSchema = z
  .strictObject({
    ...signedHeaderShape,
    project: projectIdSchema,
    reportId: reportIdSchema,
    jobName: z.string().min(1).max(maxNameChars),
    jobDigest: digestSchema,
    source: sourceStampSchema.nullable(),
    shard: shardSchema,
    shards: z.number().int().min(1).max(maxShards),
    dimensions: dimensionsSchema,
    specs: z.array(specClaimSchema).max(maxSpecsPerAdvert),
    steps: z.array(reportStepSchema).min(1).max(maxStepsPerJob),
    ...resultFields,
    startedAtMs: timestampMsSchema,
    endedAtMs: timestampMsSchema,
  })
  .refine((report) => report.startedAtMs <= report.endedAtMs, {
    path: ["endedAtMs"],
    message: "expected at or after startedAtMs",
  })
  .refine((report) => report.shard < report.shards, { path: ["shard"], message: "expected below shards" });

/** The master's answer to a report: taken (recorded now, or before: a report sent again), or refused and why. */
export const reportAckSchema = z.strictObject({
  ...signedHeaderShape,
  project: projectIdSchema,
  reportId: reportIdSchema,
  reporter: publicKeySchema,
  verdict: z.enum(["accepted", "duplicate", "refused"]),
  reason: reasonSchema,
});

export type JobSpec = z.infer<typeof jobSpecSchema>;
export type Resources = z.infer<typeof resourcesSchema>;
export type JobLock = z.infer<typeof jobLockSchema>;
export type OfferLock = z.infer<typeof offerLockSchema>;
export type JobAnnouncement = z.infer<typeof jobAnnouncementSchema>;
export type Bid = z.infer<typeof bidSchema>;
export type Award = z.infer<typeof awardSchema>;
export type Offer = z.infer<typeof offerSchema>;
export type SpecClaim = z.infer<typeof specClaimSchema>;
export type Reject = z.infer<typeof rejectSchema>;
export type LeaseRenew = z.infer<typeof leaseRenewSchema>;
export type LogChunk = z.infer<typeof logChunkSchema>;
export type Outcome = z.infer<typeof outcomeSchema>;
export type Result = z.infer<typeof resultSchema>;
export type Verdict = z.infer<typeof verdictSchema>;
export type Cancel = z.infer<typeof cancelSchema>;
export type Report = z.infer<typeof reportSchema>;
export type ReportStep = z.infer<typeof reportStepSchema>;
export type SourceStamp = z.infer<typeof sourceStampSchema>;
export type ReportAck = z.infer<typeof reportAckSchema>;
export type ResultAck = z.infer<typeof resultAckSchema>;

export const jobAnnouncementDomain = defineDomain("cimesh/job-announcement/v1", jobAnnouncementSchema, {
  maxBytes: maxAnnouncementBytes,
  maxLifetimeMs: maxAnnouncementLifetimeMs,
});
export const bidDomain = defineDomain("cimesh/bid/v1", bidSchema, {
  maxBytes: maxBidBytes,
  maxLifetimeMs: maxBidLifetimeMs,
});
export const offerDomain = defineDomain("cimesh/offer/v1", offerSchema, {
  maxBytes: maxOfferBytes,
  maxLifetimeMs: maxOfferLifetimeMs,
});
export const awardDomain = defineDomain("cimesh/award/v1", awardSchema, {
  maxBytes: maxAwardBytes,
  maxLifetimeMs: maxAwardLifetimeMs,
});
export const rejectDomain = defineDomain("cimesh/reject/v1", rejectSchema, {
  maxBytes: maxRejectBytes,
  maxLifetimeMs: maxAwardLifetimeMs,
});
export const leaseRenewDomain = defineDomain("cimesh/lease-renew/v1", leaseRenewSchema, {
  maxBytes: maxLeaseRenewBytes,
  maxLifetimeMs: maxLeaseRenewLifetimeMs,
});
export const logChunkDomain = defineDomain("cimesh/log-chunk/v1", logChunkSchema, {
  maxBytes: maxLogChunkEnvelopeBytes,
  maxLifetimeMs: maxLogChunkLifetimeMs,
});
export const resultDomain = defineDomain("cimesh/result/v1", resultSchema, {
  maxBytes: maxResultBytes,
  maxLifetimeMs: maxResultLifetimeMs,
});
export const verdictDomain = defineDomain("cimesh/verdict/v1", verdictSchema, {
  maxBytes: maxVerdictBytes,
  maxLifetimeMs: maxVerdictLifetimeMs,
});
export const cancelDomain = defineDomain("cimesh/cancel/v1", cancelSchema, {
  maxBytes: maxCancelBytes,
  maxLifetimeMs: maxCancelLifetimeMs,
});
export const resultAckDomain = defineDomain("cimesh/result-ack/v1", resultAckSchema, {
  maxBytes: maxResultAckBytes,
  maxLifetimeMs: maxResultAckLifetimeMs,
});
export const reportDomain = defineDomain("cimesh/report/v1", reportSchema, {
  maxBytes: maxReportBytes,
  maxLifetimeMs: maxReportLifetimeMs,
});
export const reportAckDomain = defineDomain("cimesh/report-ack/v1", reportAckSchema, {
  maxBytes: maxReportAckBytes,
  maxLifetimeMs: maxReportAckLifetimeMs,
});

/** Every single-signed message type of the protocol; keysets are multi-signed and verified apart (crypto/keyset.ts). */
export const messageDomains = {
  capabilitySpec: capabilitySpecDomain,
  offer: offerDomain,
  jobAnnouncement: jobAnnouncementDomain,
  bid: bidDomain,
  award: awardDomain,
  reject: rejectDomain,
  leaseRenew: leaseRenewDomain,
  logChunk: logChunkDomain,
  result: resultDomain,
  resultAck: resultAckDomain,
  verdict: verdictDomain,
  cancel: cancelDomain,
  report: reportDomain,
  reportAck: reportAckDomain,
} as const;

export const messageRegistry: DomainRegistry = createDomainRegistry(Object.values(messageDomains));
