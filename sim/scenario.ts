/**
 * A scenario file: YAML, validated before anything runs. Every error names the
 * file, the line and the field, and says what was expected:
 * `calm.yaml:12: workers.count: expected at most 100000, got 200000`. It is
 * read by node/files' YAML reading, as job and config files are (the line of
 * each field, the wording of each problem); its errors are ScenarioErrors.
 *
 * Durations are `250ms`, `90s`, `30m`, `1h30m`, `2d` or a whole number of
 * milliseconds; fractions are numbers in [0, 1].
 */
import * as z from "zod";
import { defaultMasterConfig, defaultWorkerConfig, jobLocksSchema, maxOfferLifetimeMs } from "../jobs/index.ts";
import {
  describeValue,
  FileFieldError,
  parseDurationMs as parseDurationText,
  problemLines,
  readYaml,
  validateYaml,
  YamlSyntaxError,
} from "../node/files/index.ts";
import { gossipsubDefaults } from "./gossip.ts";

/** Bounds of a scenario: what one process can simulate. */
export const maxProjectsCount = 1000;
export const maxWorkersCount = 100_000;
export const maxJobsCount = 1_000_000;
export const maxScenarioDurationMs = 7 * 24 * 60 * 60 * 1000;
export const maxDrainMs = 7 * 24 * 60 * 60 * 1000;
export const maxLatencyMs = 60_000;
export const maxJobDurationMs = 24 * 60 * 60 * 1000;
export const maxMeshDegreeCount = 64;
export const maxActorsCount = 10_000;
export const maxSampleCount = 2000;
export const minHeartbeatMs = 10;
export const maxScenarioFileBytes = 1024 * 1024;

/** A scenario file that cannot be used: the message names the file, the line and the field. */
export class ScenarioError extends Error {
  readonly code = "ERR_SCENARIO";
  readonly line: number;
  readonly field: string;
  constructor(fileName: string, line: number, field: string, expected: string, more: readonly string[] = []) {
    super([`${fileName}:${line}: ${field}: ${expected}`, ...more].join("\n"));
    this.line = line;
    this.field = field;
  }
}

/** Parses `250ms`, `90s`, `1h30m`, `2d` or a whole number of milliseconds; null when it is none of these. */
export function parseDurationMs(value: unknown): number | null {
  if (typeof value === "number") return Number.isInteger(value) && value >= 0 ? value : null;
  if (typeof value !== "string") return null;
  return parseDurationText(value);
}

const durationExpected = 'expected a duration such as "250ms", "90s", "30m", "1h30m", "2d" or whole milliseconds';

function duration(maxMs: number) {
  return z.unknown().transform((value, context) => {
    const ms = parseDurationMs(value);
    if (ms === null) {
      context.addIssue({ code: "custom", message: `${durationExpected}, got ${describeValue(value)}` });
      return z.NEVER;
    }
    if (ms > maxMs) {
      context.addIssue({ code: "custom", message: `expected a duration of at most ${maxMs} ms, got ${ms} ms` });
      return z.NEVER;
    }
    return ms;
  });
}

const fraction = z.number().min(0).max(1);
const count = (max: number) => z.number().int().min(0).max(max);

const workersSchema = z.strictObject({
  count: count(maxWorkersCount),
  slots: z.number().int().min(1).max(64).default(1),
  projectsPerWorker: z.number().int().min(1).max(64).default(1),
  reluctant: fraction.default(0),
  paused: fraction.default(0),
  /** Volunteers who work only between 20:00 and 08:00 their local time (a window rule). */
  nightOnly: fraction.default(0),
  /** Each worker runs jobs at a speed drawn uniformly from [slowest, fastest] (1 = nominal). */
  slowest: z.number().min(0.05).max(20).default(1),
  fastest: z.number().min(0.05).max(20).default(1),
  /** The worker machine's seen-rounds table (WorkerConfig.maxSeenRounds): its memory is most of a big run's. */
  seenRounds: z.number().int().min(16).max(1_000_000).default(4096),
  /** How often a running job's lease is renewed (WorkerConfig.renewIntervalMs; a third of the lease if shorter). */
  renewInterval: duration(3_600_000).default(20_000),
  /**
   * How long a worker's standing offer to a master lasts (WorkerConfig.offerLifetimeMs): it is renewed when a
   * quarter is left, so an idle worker sends each master of each of its projects one offer per three quarters of it.
   */
  offerLifetime: duration(maxOfferLifetimeMs).default(defaultWorkerConfig.offerLifetimeMs),
  /** A freed slot is offered to the project furthest below its share first, to each next one this much later. */
  offerStagger: duration(3_600_000).default(defaultWorkerConfig.offerStaggerMs),
  /**
   * Honest initial workers per project that its keyset names as runners (the project's own machines, whose results
   * anchor a quorum): eager, day-and-night ones first. 0 names none.
   */
  runnersPerProject: z.number().int().min(0).max(256).default(2),
});

const jobsSchema = z.strictObject({
  count: count(maxJobsCount),
  medianDuration: duration(maxJobDurationMs).default(60_000),
  durationSigma: z.number().min(0).max(3).default(0.5),
  replicas: z.number().int().min(1).max(16).default(1),
  quorum: z.number().int().min(1).max(16).default(1),
  shards: z.number().int().min(1).max(16).default(1),
  maxAttempts: z.number().int().min(1).max(64).default(4),
  deadline: duration(maxDrainMs).default(4 * 3_600_000),
  /** Fraction of jobs whose honest outcome is a failing test (the verdict is "failed", agreed by quorum). */
  failing: fraction.default(0),
  /** Project locks every job holds while each of its runs runs, e.g. [{ name: staging-db, count: 2 }]. */
  locks: jobLocksSchema.default([]),
});

const networkSchema = z.strictObject({
  medianLatency: duration(maxLatencyMs).default(40),
  latencySigma: z.number().min(0).max(3).default(0.4),
  /** Probability that one message (a gossip hop or a direct stream) is lost. */
  loss: fraction.default(0),
  /** Link bandwidth in megabits per second (transfer time = bytes / bandwidth). */
  bandwidthMbps: z.number().min(0.1).max(100_000).default(100),
  /**
   * Probability that an honest worker shares its network prefix (an IPv4 /24) with an earlier one, as volunteers
   * behind one NAT or on one campus do; the others each have a prefix of their own.
   */
  sharedPrefix: fraction.default(0.1),
  /**
   * Fraction of the honest workers behind NAT: no one can dial them; a message to one that has not dialled its sender
   * goes through its relay, a master (sim/network.ts).
   */
  behindNat: fraction.default(0),
});

const gossipSchema = z.strictObject({
  meshDegree: z.number().int().min(1).max(maxMeshDegreeCount).default(gossipsubDefaults.meshDegree),
  meshDegreeLow: z.number().int().min(1).max(maxMeshDegreeCount).default(gossipsubDefaults.meshDegreeLow),
  meshDegreeHigh: z.number().int().min(1).max(maxMeshDegreeCount).default(gossipsubDefaults.meshDegreeHigh),
  lazyDegree: z.number().int().min(0).max(maxMeshDegreeCount).default(gossipsubDefaults.lazyDegree),
  heartbeat: duration(60_000).default(gossipsubDefaults.heartbeatMs),
  historyGossip: z.number().int().min(0).max(16).default(gossipsubDefaults.historyGossip),
  seenTtl: duration(maxDrainMs).default(gossipsubDefaults.seenTtlMs),
});

/** Bounds of the quorum settings, those of a node's config file (node/files/config.ts). */
export const maxQuorumWeight = 16;
export const maxValidRunsForFullWeight = 10_000;

const quorumSchema = z.strictObject({
  /** Weight agreeing results must hold unless a runner's result is among them; 0 = a count of any identities decides. */
  weight: z.number().min(0).max(maxQuorumWeight).default(defaultMasterConfig.quorumWeight),
  /** Consecutive agreeing results after which a worker's result weighs 1. */
  validRunsForFullWeight: z
    .number()
    .int()
    .min(1)
    .max(maxValidRunsForFullWeight)
    .default(defaultMasterConfig.validRunsForFullWeight),
  /** Replicas of one shard go to workers on distinct network prefixes. */
  distinctPrefixes: z.boolean().default(defaultMasterConfig.distinctPrefixes),
  /** Probability that a shard's first run goes to a runner, whose result then has the last word. */
  spotCheckFraction: fraction.default(defaultMasterConfig.spotCheckFraction),
  /** Whether volunteers (not runners) may run a shard alone after a long record (adaptive replication). */
  trustVolunteersAlone: z.boolean().default(defaultMasterConfig.trustVolunteersAlone),
});

const masterSchema = z.strictObject({
  bidWindow: duration(3_600_000).default(250),
  lease: duration(3_600_000).default(60_000),
  targetBidsPerRun: z.number().min(0.1).max(100).default(3),
  reannounceInterval: duration(3_600_000).default(30_000),
  trustAloneAfterValid: z.number().int().min(1).max(1_000_000).default(10),
  /** What the masters believe of results (jobs/master.ts, MasterConfig): the node defaults unless set. */
  quorum: quorumSchema.default(quorumSchema.parse({})),
});

const churnSchema = z.strictObject({
  /** Per worker per hour: leaves for good (with its store). */
  leavePerHour: fraction.default(0),
  /** New workers per hour, as a fraction of the initial count. */
  joinPerHour: fraction.default(0),
  /** Per worker per hour: crashes (mid-job if it runs one) and restarts after `restartAfter`. */
  crashPerHour: fraction.default(0),
  /** Of the crashes, the fraction that lose their store (the worker comes back with a fresh state). */
  crashLosesStore: fraction.default(0.5),
  restartAfter: duration(maxDrainMs).default(300_000),
});

const exodusSchema = z.strictObject({
  at: duration(maxScenarioDurationMs),
  back: duration(maxScenarioDurationMs),
  fraction,
});

const partitionSchema = z.strictObject({
  at: duration(maxScenarioDurationMs),
  heal: duration(maxScenarioDurationMs),
  /** Fraction of the nodes on the far side (masters stay on the near side unless `mastersSplit`). */
  fraction,
  mastersSplit: z.boolean().default(false),
});

const masterCrashSchema = z.strictObject({
  at: duration(maxScenarioDurationMs),
  back: duration(maxScenarioDurationMs),
  /** Index of the project whose master node crashes (it keeps its store). */
  project: z.number().int().min(0).max(maxProjectsCount),
});

/**
 * Colluding identities (sim/README.md, Colluders): workers that run the real node, in groups that each report one
 * shared wrong digest, patient (honest until they have a record), and throwaway identities of the same groups that
 * join mid-run with fresh keys, bid on every announcement and report the group's digest without running anything.
 */
const colludersSchema = z.strictObject({
  /** Fraction of the initial workers that collude (rounded to a whole number of workers). */
  fraction: fraction.default(0),
  groups: z.number().int().min(1).max(maxActorsCount).default(1),
  /** Network prefixes each group's identities sit on (their addresses: one machine, a few rented networks). */
  prefixesPerGroup: z.number().int().min(1).max(256).default(1),
  /** Runs a colluder does honestly in a project before it lies there: it earns weight first. */
  patience: z.number().int().min(0).max(1_000_000).default(0),
  /**
   * When a colluder past its patience lies: `always` (every run), or `together` (only on a shard another identity of
   * its group also holds: they tell each other, and those without a partner stay honest and keep their weight).
   */
  tactic: z.enum(["always", "together"]).default("always"),
  /** How long after its award (or its partner's) a lying run reports: a lie needs no run, and an early one beats honest replicas. */
  lieAfter: duration(maxJobDurationMs).default(5_000),
  /** Throwaway identities (fresh keys, spread over the groups and their prefixes) that join during the run. */
  throwaways: count(maxActorsCount).default(0),
  /** They join at times drawn uniformly from [throwawaysFrom, throwawaysUntil). */
  throwawaysFrom: duration(maxScenarioDurationMs).default(0),
  throwawaysUntil: duration(maxScenarioDurationMs).default(0),
});

const actorsSchema = z.strictObject({
  /** Fraction of workers that return a wrong result (each its own wrong digest). */
  liars: fraction.default(0),
  /** Nodes that publish forged announcements (tampered signatures or untrusted announcers). */
  forgers: count(maxActorsCount).default(0),
  forgeriesPerHour: z.number().min(0).max(1_000_000).default(60),
  /** Nodes that record the signed messages they hear and send them again later: on the topic, and directly to the master. */
  replayers: count(maxActorsCount).default(0),
  replaysPerHour: z.number().min(0).max(1_000_000).default(60),
  /** Nodes that bid on every announcement they hear and never run anything. */
  spammers: count(maxActorsCount).default(0),
  /** Sybil groups: identities of one actor that return the same wrong digest (colluding liars), each group on one prefix. */
  sybilGroups: count(maxActorsCount).default(0),
  sybilGroupSize: count(maxActorsCount).default(0),
  colluders: colludersSchema.default(colludersSchema.parse({})),
});

export const scenarioSchema = z
  .strictObject({
    name: z
      .string()
      .min(1)
      .max(64)
      .regex(/^[a-z0-9][a-z0-9-]*$/, "expected lowercase letters, digits and '-'"),
    description: z.string().max(2000).default(""),
    seed: z
      .number()
      .int()
      .min(0)
      .max(2 ** 31 - 1)
      .default(1),
    /** Jobs arrive during [0, duration); faults happen in it too. */
    duration: duration(maxScenarioDurationMs),
    /** After `duration`: every fault has healed, and jobs get this long to end. */
    drain: duration(maxDrainMs).default(6 * 3_600_000),
    /** "real" signs and verifies every message with ed25519; "fast" skips both (documented in sim/README.md). */
    signatures: z.enum(["real", "fast"]).default("real"),
    projects: z.number().int().min(1).max(maxProjectsCount),
    /** Width of one point of the time series in the report. */
    sampleInterval: duration(maxDrainMs).default(60_000),
    workers: workersSchema,
    jobs: jobsSchema,
    network: networkSchema.default(networkSchema.parse({})),
    gossip: gossipSchema.default(gossipSchema.parse({})),
    master: masterSchema.default(masterSchema.parse({})),
    churn: churnSchema.default(churnSchema.parse({})),
    exodus: z.array(exodusSchema).max(64).default([]),
    partitions: z.array(partitionSchema).max(64).default([]),
    masterCrashes: z.array(masterCrashSchema).max(64).default([]),
    actors: actorsSchema.default(actorsSchema.parse({})),
  })
  .superRefine((s, context) => {
    const problem = (path: (string | number)[], message: string) => context.addIssue({ code: "custom", path, message });
    if (s.jobs.quorum > s.jobs.replicas)
      problem(["jobs", "quorum"], `expected at most jobs.replicas (${s.jobs.replicas}), got ${s.jobs.quorum}`);
    if (s.jobs.maxAttempts < s.jobs.replicas)
      problem(
        ["jobs", "maxAttempts"],
        `expected at least jobs.replicas (${s.jobs.replicas}), got ${s.jobs.maxAttempts}`,
      );
    if (s.drain < s.jobs.deadline)
      problem(
        ["drain"],
        `expected at least jobs.deadline (${s.jobs.deadline} ms), so that every job must end inside the run, got ${s.drain} ms`,
      );
    if (s.workers.slowest > s.workers.fastest)
      problem(
        ["workers", "slowest"],
        `expected at most workers.fastest (${s.workers.fastest}), got ${s.workers.slowest}`,
      );
    if (!(s.gossip.meshDegreeLow <= s.gossip.meshDegree && s.gossip.meshDegree <= s.gossip.meshDegreeHigh))
      problem(["gossip", "meshDegree"], "expected meshDegreeLow <= meshDegree <= meshDegreeHigh");
    if (s.gossip.heartbeat < minHeartbeatMs)
      problem(["gossip", "heartbeat"], `expected at least ${minHeartbeatMs} ms, got ${s.gossip.heartbeat} ms`);
    if (s.sampleInterval <= 0 || (s.duration + s.drain) / Math.max(1, s.sampleInterval) > maxSampleCount)
      problem(
        ["sampleInterval"],
        `expected at most ${maxSampleCount} points over duration + drain: at least ${Math.ceil((s.duration + s.drain) / maxSampleCount)} ms`,
      );
    if (s.workers.offerLifetime <= 0) problem(["workers", "offerLifetime"], "expected a positive duration");
    if (s.workers.projectsPerWorker > s.projects)
      problem(["workers", "projectsPerWorker"], `expected at most projects (${s.projects})`);
    s.exodus.forEach((e, i) => {
      if (e.back <= e.at) problem(["exodus", i, "back"], `expected a time after exodus[${i}].at`);
      if (e.back > s.duration)
        problem(["exodus", i, "back"], "expected a time inside duration: faults heal before the drain");
    });
    s.partitions.forEach((p, i) => {
      if (p.heal <= p.at) problem(["partitions", i, "heal"], `expected a time after partitions[${i}].at`);
      if (p.heal > s.duration)
        problem(["partitions", i, "heal"], "expected a time inside duration: faults heal before the drain");
    });
    s.masterCrashes.forEach((c, i) => {
      if (c.back <= c.at) problem(["masterCrashes", i, "back"], `expected a time after masterCrashes[${i}].at`);
      if (c.back > s.duration) problem(["masterCrashes", i, "back"], "expected a time inside duration");
      if (c.project >= s.projects) problem(["masterCrashes", i, "project"], `expected an index below ${s.projects}`);
    });
    const c = s.actors.colluders;
    if (c.throwaways > 0 && c.throwawaysUntil > s.duration)
      problem(["actors", "colluders", "throwawaysUntil"], "expected a time inside duration");
    if (c.throwaways > 0 && c.throwawaysUntil < c.throwawaysFrom)
      problem(
        ["actors", "colluders", "throwawaysUntil"],
        "expected a time at or after actors.colluders.throwawaysFrom",
      );
    if (s.actors.sybilGroups > 0 !== s.actors.sybilGroupSize > 0)
      problem(["actors", "sybilGroupSize"], "expected sybilGroups and sybilGroupSize both zero or both positive");
  });

export type Scenario = z.output<typeof scenarioSchema>;

/** Parses and validates a scenario; throws ScenarioError naming the line and field of the first problem. */
export function parseScenario(text: string, fileName: string): Scenario {
  if (text.length > maxScenarioFileBytes)
    throw new ScenarioError(
      fileName,
      1,
      "(file)",
      `expected at most ${maxScenarioFileBytes} bytes, got ${text.length}`,
    );
  try {
    return validateYaml(readYaml(text, fileName), scenarioSchema);
  } catch (error) {
    throw asScenarioError(fileName, error);
  }
}

/** node/files' error about a file as the ScenarioError it is for a scenario; any other error as it is. */
function asScenarioError(fileName: string, error: unknown): unknown {
  if (error instanceof YamlSyntaxError)
    return new ScenarioError(fileName, error.line, "(file)", `expected well-formed YAML: ${error.detail}`);
  if (error instanceof FileFieldError && error.problems.length > 0) {
    const [, ...more] = problemLines(fileName, error.problems);
    const first = error.problems[0] as (typeof error.problems)[number];
    return new ScenarioError(fileName, first.line, first.field, first.expected, more);
  }
  return error;
}

/** The example scenarios shipped in sim/scenarios/ (the scale run aside). */
export const exampleScenarioNames = [
  "calm",
  "night-exodus",
  "liars-10pct",
  "partition-heals",
  "bid-storm-10k",
  "mixed-400",
] as const;

/**
 * The same scenario without the masters' Sybil rules: quorum weight 0, no runners in the keysets, no distinct
 * prefixes, no spot checks, so a count of agreeing identities decides (the cost of the defence is measured against it).
 */
export function withoutSybilRules(scenario: Scenario): Scenario {
  return {
    ...scenario,
    workers: { ...scenario.workers, runnersPerProject: 0 },
    master: {
      ...scenario.master,
      quorum: { ...scenario.master.quorum, weight: 0, distinctPrefixes: false, spotCheckFraction: 0 },
    },
  };
}

/**
 * The same mesh shape at another size and for another duration: `workers` workers, projects and jobs in proportion
 * (so each project has as many workers and each worker as much work as before), job arrivals spread over `duration`
 * and every fault's time scaled with it; churn rates, the drain and the job deadline kept.
 */
export function scaleScenario(
  scenario: Scenario,
  sizes: { readonly workers: number; readonly duration: number },
): Scenario {
  const factor = sizes.workers / Math.max(1, scenario.workers.count);
  const time = sizes.duration / scenario.duration;
  const at = (ms: number) => Math.round(ms * time);
  const c = scenario.actors.colluders;
  return {
    ...scenario,
    duration: sizes.duration,
    sampleInterval: Math.max(scenario.sampleInterval, Math.ceil((sizes.duration + scenario.drain) / maxSampleCount)),
    projects: Math.max(scenario.workers.projectsPerWorker, Math.round(scenario.projects * factor)),
    workers: { ...scenario.workers, count: sizes.workers },
    jobs: { ...scenario.jobs, count: Math.round(scenario.jobs.count * factor * time) },
    exodus: scenario.exodus.map((e) => ({ ...e, at: at(e.at), back: at(e.back) })),
    partitions: scenario.partitions.map((p) => ({ ...p, at: at(p.at), heal: at(p.heal) })),
    masterCrashes: scenario.masterCrashes.map((m) => ({ ...m, at: at(m.at), back: at(m.back) })),
    actors: {
      ...scenario.actors,
      colluders: { ...c, throwawaysFrom: at(c.throwawaysFrom), throwawaysUntil: at(c.throwawaysUntil) },
    },
  };
}

/** A scenario at a smaller size: at most `workers` workers and `jobs` jobs, its faults, actors and timings kept. */
export function shrinkScenario(
  scenario: Scenario,
  sizes: { readonly workers: number; readonly jobs: number; readonly signatures?: "real" | "fast" },
): Scenario {
  return {
    ...scenario,
    signatures: sizes.signatures ?? scenario.signatures,
    workers: { ...scenario.workers, count: Math.min(scenario.workers.count, sizes.workers) },
    jobs: { ...scenario.jobs, count: Math.min(scenario.jobs.count, sizes.jobs) },
    actors: {
      ...scenario.actors,
      sybilGroupSize: Math.min(scenario.actors.sybilGroupSize, Math.max(1, Math.floor(sizes.workers / 8))),
    },
  };
}
