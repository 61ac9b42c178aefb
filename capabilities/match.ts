/**
 * Capability matching: which requirements of a capability spec a worker's
 * dimensions miss, which requirements of a job a worker misses, and why no
 * known worker is eligible for a job (DESIGN.md, Messages: CapabilitySpec,
 * WorkerAdvert, JobAnnouncement). Pure functions over data; no I/O.
 */

import semver from "semver";
import type { Dimensions, Requirements } from "./messages.ts";

/**
 * What a job asks of a worker. Declared here rather than imported from jobs/ so
 * that capabilities/ stays below jobs/ in the layers; a JobSpec fits it.
 */
export interface JobRequirements {
  readonly requiredSpecs: readonly string[];
  readonly os: string | null;
  readonly resources: {
    readonly cpus: number;
    readonly memoryBytes: number;
    readonly diskBytes: number;
  };
}

/** A worker's claim about one capability spec, as its advert carries it. */
export interface WorkerSpecClaim {
  readonly uuid: string;
  readonly version: number;
  readonly passed: boolean;
}

/** What matching needs from a worker; a WorkerAdvert fits it. */
export interface WorkerCapabilities {
  readonly dimensions: Dimensions;
  readonly specs: readonly WorkerSpecClaim[];
}

/**
 * One requirement a worker does not meet. Plain data, so it can be logged,
 * stored, sent to a dashboard or compared in tests as it is.
 */
export interface Unmet {
  /** "os", "arch", "cores", "memory", "disk", "tool <name>", "label <label>" or "spec <uuid>". */
  readonly requirement: string;
  readonly expected: string;
  readonly actual: string;
}

/** How many workers fail one requirement of a job, and what they have instead. */
export interface PoolBlocker {
  readonly requirement: string;
  readonly workers: number;
  readonly expected: string;
  /** Each distinct actual value among the failing workers, most common first. */
  readonly actuals: readonly { readonly actual: string; readonly workers: number }[];
}

export interface PoolExplanation {
  readonly eligible: number;
  readonly total: number;
  /** Most blocking requirement first; a worker that fails several requirements counts under each. */
  readonly byRequirement: readonly PoolBlocker[];
}

export interface PoolTextOptions {
  /** Spec names by uuid, from the specs the caller holds, so the summary says what a uuid is. */
  readonly specNames?: ReadonlyMap<string, string>;
}

/** A summary is read by a person; past this many requirements it names how many it left out. */
export const maxPoolSummaryRequirements = 5;
/** Distinct actual values named per requirement in a summary before it says "...". */
export const maxPoolSummaryActuals = 3;
/** A uuid with a known name is shortened to this many characters in a summary. */
export const specUuidPrefixChars = 8;

/** The requirement names an Unmet carries; tools, labels and specs add their own name after these. */
const req = {
  os: "os",
  arch: "arch",
  cores: "cores",
  memory: "memory",
  disk: "disk",
  tool: "tool ",
  label: "label ",
  spec: "spec ",
} as const;

const specExpected = "advertised as passed";
const specNotAdvertised = "not advertised";
const toolNotInstalled = "not installed";

const binaryUnits: readonly { readonly name: string; readonly bytes: number }[] = [
  { name: "PiB", bytes: 2 ** 50 },
  { name: "TiB", bytes: 2 ** 40 },
  { name: "GiB", bytes: 2 ** 30 },
  { name: "MiB", bytes: 2 ** 20 },
  { name: "KiB", bytes: 2 ** 10 },
];

/**
 * Every requirement of a capability spec that a worker's detected dimensions do
 * not meet, in the order the spec states them; [] when all are met.
 */
export function checkSpec(requirements: Requirements, dims: Dimensions): Unmet[] {
  const unmet: Unmet[] = [];
  if (requirements.os.length > 0 && !requirements.os.includes(dims.os)) {
    unmet.push({ requirement: req.os, expected: oneOf(requirements.os), actual: dims.os });
  }
  if (requirements.arch.length > 0 && !requirements.arch.includes(dims.arch)) {
    unmet.push({ requirement: req.arch, expected: oneOf(requirements.arch), actual: dims.arch });
  }
  if (dims.cores < requirements.minCores) {
    unmet.push({ requirement: req.cores, expected: `at least ${requirements.minCores}`, actual: `${dims.cores}` });
  }
  if (dims.memoryBytes < requirements.minMemoryBytes) {
    unmet.push(tooFewBytes(req.memory, requirements.minMemoryBytes, dims.memoryBytes));
  }
  if (dims.diskBytes < requirements.minDiskBytes) {
    unmet.push(tooFewBytes(req.disk, requirements.minDiskBytes, dims.diskBytes));
  }
  requirements.tools.forEach((tool, index) => {
    // A spec that states the same tool and range twice is still one requirement.
    if (requirements.tools.findIndex((t) => t.name === tool.name && t.range === tool.range) < index) return;
    const requirement = `${req.tool}${tool.name}`;
    // A malformed range can never be met by any worker: say so, rather than blame the worker's version.
    if (semver.validRange(tool.range) === null) {
      unmet.push({ requirement, expected: "a valid semver range", actual: JSON.stringify(tool.range) });
      return;
    }
    const installed = dims.tools.filter((t) => t.name === tool.name);
    if (installed.length === 0) {
      unmet.push({ requirement, expected: `version ${tool.range}`, actual: toolNotInstalled });
    } else if (!installed.some((t) => versionSatisfies(t.version, tool.range))) {
      unmet.push({
        requirement,
        expected: `version ${tool.range}`,
        actual: installed.map((t) => describeVersion(t.version)).join(", "),
      });
    }
  });
  requirements.labels.forEach((label, index) => {
    if (requirements.labels.indexOf(label) < index) return;
    if (!dims.labels.includes(label)) {
      unmet.push({ requirement: `${req.label}${label}`, expected: "present", actual: "absent" });
    }
  });
  return unmet;
}

/**
 * Every requirement of a job that a worker does not meet; [] when it is
 * eligible. A worker's spec claims are taken as advertised: whether its
 * self-check really passed is the worker's word, signed in its advert.
 */
export function matchJob(job: JobRequirements, worker: WorkerCapabilities): Unmet[] {
  const unmet: Unmet[] = [];
  job.requiredSpecs.forEach((uuid, index) => {
    if (job.requiredSpecs.indexOf(uuid) < index) return;
    if (hasPassed(worker.specs, uuid)) return;
    const failed = worker.specs.filter((claim) => claim.uuid === uuid).map((claim) => claim.version);
    unmet.push({
      requirement: `${req.spec}${uuid}`,
      expected: specExpected,
      actual:
        failed.length === 0
          ? specNotAdvertised
          : `self-check failed (version ${[...new Set(failed)].sort((a, b) => a - b).join(", ")})`,
    });
  });
  const dims = worker.dimensions;
  const { resources } = job;
  if (job.os !== null && job.os !== dims.os) {
    unmet.push({ requirement: req.os, expected: job.os, actual: dims.os });
  }
  if (resources.cpus > dims.cores) {
    unmet.push({ requirement: req.cores, expected: `at least ${resources.cpus}`, actual: `${dims.cores}` });
  }
  if (resources.memoryBytes > dims.memoryBytes) {
    unmet.push(tooFewBytes(req.memory, resources.memoryBytes, dims.memoryBytes));
  }
  if (resources.diskBytes > dims.diskBytes) {
    unmet.push(tooFewBytes(req.disk, resources.diskBytes, dims.diskBytes));
  }
  return unmet;
}

/**
 * matchJob(job, worker).length === 0, without building the list: the state
 * machines ask this for every announcement and every advert.
 */
export function isEligible(job: JobRequirements, worker: WorkerCapabilities): boolean {
  const dims = worker.dimensions;
  const { resources } = job;
  if (job.os !== null && job.os !== dims.os) return false;
  if (resources.cpus > dims.cores) return false;
  if (resources.memoryBytes > dims.memoryBytes) return false;
  if (resources.diskBytes > dims.diskBytes) return false;
  const required = job.requiredSpecs;
  for (let i = 0; i < required.length; i++) {
    const uuid = required[i];
    if (uuid !== undefined && !hasPassed(worker.specs, uuid)) return false;
  }
  return true;
}

/** One line per unmet requirement, such as "cores: expected at least 4, got 2"; "" for none. */
export function explainUnmet(unmet: readonly Unmet[]): string {
  return unmet.map((u) => `${u.requirement}: expected ${u.expected}, got ${u.actual}`).join("\n");
}

/**
 * How many of the known workers can take a job, and how many fail each of its
 * requirements: the answer to "why did no worker pick up my job" as far as
 * capabilities go (availability and free slots are another matter).
 */
export function explainPool(job: JobRequirements, workers: readonly WorkerCapabilities[]): PoolExplanation {
  let eligible = 0;
  const blockers = new Map<string, { expected: string; workers: number; actuals: Map<string, number> }>();
  for (const worker of workers) {
    const unmet = matchJob(job, worker);
    if (unmet.length === 0) {
      eligible += 1;
      continue;
    }
    for (const u of unmet) {
      const blocker = blockers.get(u.requirement) ?? { expected: u.expected, workers: 0, actuals: new Map() };
      blocker.workers += 1;
      blocker.actuals.set(u.actual, (blocker.actuals.get(u.actual) ?? 0) + 1);
      blockers.set(u.requirement, blocker);
    }
  }
  const byRequirement: PoolBlocker[] = [...blockers].map(([requirement, blocker]) => ({
    requirement,
    workers: blocker.workers,
    expected: blocker.expected,
    actuals: [...blocker.actuals]
      .map(([actual, count]) => ({ actual, workers: count }))
      .sort((a, b) => b.workers - a.workers || compareText(a.actual, b.actual)),
  }));
  // Ties break by name so that the same adverts always give the same explanation.
  byRequirement.sort((a, b) => b.workers - a.workers || compareText(a.requirement, b.requirement));
  return { eligible, total: workers.length, byRequirement };
}

/**
 * explainPool as one short sentence for a person, such as "0 of 12 known
 * workers are eligible; 9 lack spec 0f8fad5b... (node-22-linux); 3 have 2
 * cores, job needs 4".
 */
export function explainPoolText(
  job: JobRequirements,
  workers: readonly WorkerCapabilities[],
  options: PoolTextOptions = {},
): string {
  const pool = explainPool(job, workers);
  if (pool.total === 0) return "no known workers: no worker has advertised, so none can take the job";
  const verb = pool.eligible === 1 || pool.total === 1 ? "is" : "are";
  const head = `${pool.eligible} of ${pool.total} known ${plural(pool.total, "worker", "workers")} ${verb} eligible`;
  const shown = pool.byRequirement.slice(0, maxPoolSummaryRequirements);
  const parts = shown.map((blocker) => describeBlocker(blocker, job, options));
  const hidden = pool.byRequirement.length - shown.length;
  if (hidden > 0) parts.push(`and ${hidden} more ${plural(hidden, "requirement", "requirements")} unmet`);
  return [head, ...parts].join("; ");
}

function describeBlocker(blocker: PoolBlocker, job: JobRequirements, options: PoolTextOptions): string {
  const n = blocker.workers;
  const only = blocker.actuals.length === 1 ? blocker.actuals[0] : undefined;
  const { resources } = job;
  switch (blocker.requirement) {
    case req.os:
      return only !== undefined
        ? `${n} ${plural(n, "runs", "run")} ${only.actual}, job needs ${job.os}`
        : `${n} ${plural(n, "runs", "run")} another os (${listActuals(blocker, "runs", "run")}), job needs ${job.os}`;
    case req.cores:
      return only !== undefined
        ? `${n} ${plural(n, "has", "have")} ${only.actual} ${plural(Number(only.actual), "core", "cores")}, job needs ${resources.cpus}`
        : `${n} ${plural(n, "has", "have")} too few cores (${listActuals(blocker, "has", "have")}), job needs ${resources.cpus}`;
    case req.memory:
    case req.disk: {
      const needs = formatBytes(blocker.requirement === req.memory ? resources.memoryBytes : resources.diskBytes);
      return only !== undefined
        ? `${n} ${plural(n, "has", "have")} ${only.actual} ${blocker.requirement}, job needs ${needs}`
        : `${n} ${plural(n, "has", "have")} too little ${blocker.requirement} (${listActuals(blocker, "has", "have")}), job needs ${needs}`;
    }
  }
  if (blocker.requirement.startsWith(req.spec)) {
    const name = specLabel(blocker.requirement.slice(req.spec.length), options);
    const notAdvertised = blocker.actuals.find((a) => a.actual === specNotAdvertised)?.workers ?? 0;
    const failed = n - notAdvertised;
    if (failed === 0) return `${n} ${plural(n, "lacks", "lack")} ${name}`;
    if (notAdvertised === 0) return `${n} failed the self-check of ${name}`;
    return `${n} ${plural(n, "lacks", "lack")} a passing ${name} (${notAdvertised} without it, ${failed} failed its self-check)`;
  }
  return `${n} ${plural(n, "fails", "fail")} ${blocker.requirement} (expected ${blocker.expected})`;
}

function listActuals(blocker: PoolBlocker, singular: string, pluralVerb: string): string {
  const listed = blocker.actuals
    .slice(0, maxPoolSummaryActuals)
    .map((a) => `${a.workers} ${plural(a.workers, singular, pluralVerb)} ${a.actual}`);
  if (blocker.actuals.length > maxPoolSummaryActuals) listed.push("...");
  return listed.join(", ");
}

function specLabel(uuid: string, options: PoolTextOptions): string {
  const name = options.specNames?.get(uuid);
  // Without a name the full uuid is the only handle a person can look the spec up by.
  return name === undefined ? `${req.spec}${uuid}` : `${req.spec}${uuid.slice(0, specUuidPrefixChars)}... (${name})`;
}

function hasPassed(claims: readonly WorkerSpecClaim[], uuid: string): boolean {
  for (let i = 0; i < claims.length; i++) {
    const claim = claims[i];
    if (claim !== undefined && claim.uuid === uuid && claim.passed) return true;
  }
  return false;
}

/**
 * Detected versions are whatever a tool prints ("12.2.0-14" from Debian's gcc,
 * "v22.1.0" from node), so they are coerced to major.minor.patch first; the
 * distribution suffix is not a semver prerelease and must not fail a range.
 */
function versionSatisfies(version: string, range: string): boolean {
  const coerced = semver.coerce(version);
  return coerced !== null && semver.satisfies(coerced, range);
}

function describeVersion(version: string): string {
  const coerced = semver.coerce(version);
  if (coerced === null) return `${version} (not a version)`;
  return coerced.version === version ? version : `${version} (read as ${coerced.version})`;
}

function tooFewBytes(requirement: string, neededBytes: number, actualBytes: number): Unmet {
  return { requirement, expected: `at least ${formatBytes(neededBytes)}`, actual: formatBytes(actualBytes) };
}

/**
 * Exact multiples print as "8 GiB"; anything else keeps the byte count, so that
 * a requirement one byte above a worker's memory does not read "4 GiB, got 4 GiB".
 */
function formatBytes(bytes: number): string {
  for (const unit of binaryUnits) {
    if (bytes < unit.bytes) continue;
    if (bytes % unit.bytes === 0) return `${bytes / unit.bytes} ${unit.name}`;
    return `${(bytes / unit.bytes).toFixed(1)} ${unit.name} (${bytes} bytes)`;
  }
  return `${bytes} ${plural(bytes, "byte", "bytes")}`;
}

function oneOf(names: readonly string[]): string {
  return names.length === 1 ? `${names[0]}` : `one of ${names.join(", ")}`;
}

function plural(count: number, one: string, many: string): string {
  return count === 1 ? one : many;
}

/** Code-unit order, not locale order: the same input must render the same text on every node. */
function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
