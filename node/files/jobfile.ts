/**
 * The job file (job.yaml) and the capability spec file (spec.yaml): what a
 * project writes, turned into the JobSpec and CapabilitySpec bodies of jobs/
 * and capabilities/, with friendly defaults and units people use ("30m",
 * "2GiB", "in 24h"). Errors name the file, line and field:
 * `job.yaml:7: steps[1].run: expected text, got nothing (the field is missing)`.
 *
 * Three passes: the YAML (a syntax error names its line), the file's own shape
 * (unknown fields, units), then the protocol's schema (jobSpecSchema,
 * capabilitySpecSchema), whose field paths are mapped back to the file's.
 */
import { randomUUID } from "node:crypto";
import * as z from "zod";
import { type CapabilitySpec, capabilitySpecSchema, maxSpecLifetimeMs } from "../../capabilities/index.ts";
import { idSchema, maxNameChars, projectIdSchema } from "../../crypto/index.ts";
import { type JobSpec, jobSpecSchema } from "../../jobs/index.ts";
import {
  type FieldPath,
  FileFieldError,
  fieldProblem,
  parseDurationMs,
  parseSizeBytes,
  problemsOf,
  readYaml,
  validateYaml,
  type YamlFile,
} from "./yamlfile.ts";

/** A job file larger than this is refused before it is parsed. */
export const maxJobFileBytes = 256 * 1024;
/** A capability spec file larger than this is refused before it is parsed. */
export const maxSpecFileBytes = 256 * 1024;
export const defaultJobTimeoutMs = 30 * 60 * 1000;
/** A job without a deadline gets this long from submission. */
export const defaultJobDeadlineInMs = 24 * 60 * 60 * 1000;
export const defaultJobCpus = 1;
export const defaultJobMemoryBytes = 1024 * 1024 * 1024;
export const defaultJobDiskBytes = 1024 * 1024 * 1024;
export const defaultJobProcesses = 256;
export const defaultJobReplicas = 1;
export const defaultJobQuorum = 1;
export const defaultJobShards = 1;
export const defaultJobPriority = 0;
export const defaultJobMaxAttempts = 3;
/** A published capability spec stays valid this long unless the file says `expiresIn`. */
export const defaultSpecLifetimeMs = 365 * 24 * 60 * 60 * 1000;
export const defaultSelfCheckTimeoutMs = 5 * 60 * 1000;

/** A file over its size limit. */
export class FileTooLargeError extends FileFieldError {
  constructor(fileName: string, sizeBytes: number, limitBytes: number) {
    super(fileName, [
      {
        line: 1,
        field: "(file)",
        expected: `expected at most ${limitBytes} bytes, got ${sizeBytes}: is this the right file?`,
      },
    ]);
  }
}

function checkSize(text: string, fileName: string, limitBytes: number): void {
  const sizeBytes = Buffer.byteLength(text, "utf8");
  if (sizeBytes > limitBytes) throw new FileTooLargeError(fileName, sizeBytes, limitBytes);
}

const durationText = z
  .string()
  .refine((text) => parseDurationMs(text) !== null, "expected a duration such as 90s, 30m or 1h30m");

/** A size in bytes: a whole number, or text with a unit such as 512MiB or 2GB. */
const sizeValue = z.custom<number | string>(
  (value) =>
    (typeof value === "number" && Number.isSafeInteger(value) && value >= 0) ||
    (typeof value === "string" && parseSizeBytes(value) !== null),
  "expected a size such as 512MiB or 2GiB, or a whole number of bytes",
);

function sizeOf(value: number | string | undefined): number | undefined {
  if (value === undefined) return undefined;
  return typeof value === "number" ? value : (parseSizeBytes(value) ?? undefined);
}

const mappingOf = <T extends z.ZodRawShape>(shape: T) =>
  z.strictObject(shape, {
    error: (issue) => (issue.code === "invalid_type" ? "expected a mapping of fields" : undefined),
  });

/** The job file's own shape: field names, units, and what has no place in a JobSpec (project, id). */
const jobFileSchema = mappingOf({
  project: projectIdSchema,
  id: idSchema.optional(),
  name: z.unknown().optional(),
  steps: z.array(z.unknown()).optional(),
  env: z.unknown().optional(),
  timeout: durationText.optional(),
  timeoutMs: z.unknown().optional(),
  resources: mappingOf({
    cpus: z.unknown().optional(),
    memory: sizeValue.optional(),
    memoryBytes: z.unknown().optional(),
    disk: sizeValue.optional(),
    diskBytes: z.unknown().optional(),
    processes: z.unknown().optional(),
  }).optional(),
  network: z.unknown().optional(),
  outputs: z.unknown().optional(),
  inputsDigest: z.unknown().optional(),
  inputs: z.string().min(1).max(4096, "expected a folder path of at most 4096 characters").optional(),
  requiredSpecs: z.unknown().optional(),
  os: z.unknown().optional(),
  replicas: z.unknown().optional(),
  quorum: z.unknown().optional(),
  shards: z.unknown().optional(),
  priority: z.unknown().optional(),
  maxAttempts: z.unknown().optional(),
  deadline: z.string().optional(),
  deadlineMs: z.unknown().optional(),
  locks: z.unknown().optional(),
  image: z.unknown().optional(),
});

/** Two spellings of one field (a unit or milliseconds): at most one may be given. */
function eitherOf(file: YamlFile, parent: FieldPath, a: string, b: string): void {
  if (file.has([...parent, a]) && file.has([...parent, b])) {
    throw fieldProblem(file, [...parent, b], `expected either ${a} or ${b}, not both: keep one`);
  }
}

/** A step's name when the file gives none: the first line of its command. */
function stepName(run: string, index: number): string {
  const first = run.split("\n").find((line) => line.trim() !== "") ?? "";
  const name = first.trim().slice(0, maxNameChars);
  return name === "" ? `step ${index + 1}` : name;
}

function stepOf(step: unknown, index: number): unknown {
  // A plain command; YAML reads `- true` or `- 42` as a boolean or a number, but a command was meant.
  if (typeof step === "string" || typeof step === "number" || typeof step === "boolean")
    return { name: stepName(String(step), index), run: String(step) };
  if (step !== null && typeof step === "object" && !Array.isArray(step)) {
    const fields = step as Record<string, unknown>;
    if (fields.name === undefined && typeof fields.run === "string")
      return { name: stepName(fields.run, index), ...fields };
  }
  return step;
}

function envOf(env: unknown): unknown {
  if (env === undefined || env === null) return {};
  if (typeof env !== "object" || Array.isArray(env)) return env;
  const out: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(env)) {
    out[name] = typeof value === "number" || typeof value === "boolean" ? String(value) : value;
  }
  return out;
}

/** "in 24h" (from now), or a date and time such as 2030-01-31T12:00:00Z. */
function deadlineOf(file: YamlFile, text: string, nowMs: number): number {
  const relative = /^in\s+(.+)$/.exec(text.trim());
  if (relative !== null) {
    const ms = parseDurationMs(relative[1] as string);
    if (ms !== null) return nowMs + ms;
  } else if (/^\d{4}-\d{2}-\d{2}/.test(text.trim())) {
    const ms = Date.parse(text);
    if (!Number.isNaN(ms)) return ms;
  }
  throw fieldProblem(
    file,
    ["deadline"],
    `expected "in <duration>" such as "in 24h", or a date and time such as 2030-01-31T12:00:00Z, got ${JSON.stringify(text)}`,
  );
}

/** Where a field of the JobSpec comes from in the job file. */
function jobFilePath(file: YamlFile, path: FieldPath): FieldPath {
  const [head, second, ...rest] = path;
  if (head === "timeoutMs" && !file.has(["timeoutMs"])) return ["timeout"];
  if (head === "deadlineMs" && !file.has(["deadlineMs"])) return ["deadline"];
  if (head === "resources" && second === "memoryBytes" && !file.has(["resources", "memoryBytes"]))
    return ["resources", "memory", ...rest];
  if (head === "resources" && second === "diskBytes" && !file.has(["resources", "diskBytes"]))
    return ["resources", "disk", ...rest];
  return path;
}

export interface ParsedJobFile {
  readonly project: string;
  /** The id the file asks for, or null: the node makes one. */
  readonly jobId: string | null;
  readonly spec: JobSpec;
  /** The folder `inputs:` names, as written (relative to the job file's folder); `cimesh submit` packs it. */
  readonly inputsFolder: string | null;
}

/**
 * Parses a job file into the project it is for, its id (if it names one) and
 * its JobSpec. `nowMs` is the time a relative deadline ("in 24h") counts from.
 */
export function parseJobFile(text: string, fileName: string, nowMs: number): ParsedJobFile {
  checkSize(text, fileName, maxJobFileBytes);
  const file = readYaml(text, fileName);
  const shape = validateYaml(file, jobFileSchema);
  eitherOf(file, [], "timeout", "timeoutMs");
  eitherOf(file, [], "deadline", "deadlineMs");
  eitherOf(file, [], "inputs", "inputsDigest");
  eitherOf(file, ["resources"], "memory", "memoryBytes");
  eitherOf(file, ["resources"], "disk", "diskBytes");
  const resources = shape.resources ?? {};
  const draft = {
    name: shape.name,
    steps: shape.steps?.map(stepOf),
    env: envOf(shape.env),
    timeoutMs: shape.timeout !== undefined ? parseDurationMs(shape.timeout) : (shape.timeoutMs ?? defaultJobTimeoutMs),
    resources: {
      cpus: resources.cpus ?? defaultJobCpus,
      memoryBytes: sizeOf(resources.memory) ?? resources.memoryBytes ?? defaultJobMemoryBytes,
      diskBytes: sizeOf(resources.disk) ?? resources.diskBytes ?? defaultJobDiskBytes,
      processes: resources.processes ?? defaultJobProcesses,
    },
    network: shape.network ?? false,
    outputs: shape.outputs ?? [],
    inputsDigest: shape.inputsDigest ?? null,
    requiredSpecs: shape.requiredSpecs ?? [],
    os: shape.os ?? null,
    replicas: shape.replicas ?? defaultJobReplicas,
    quorum: shape.quorum ?? defaultJobQuorum,
    shards: shape.shards ?? defaultJobShards,
    priority: shape.priority ?? defaultJobPriority,
    maxAttempts: shape.maxAttempts ?? defaultJobMaxAttempts,
    deadlineMs:
      shape.deadline !== undefined
        ? deadlineOf(file, shape.deadline, nowMs)
        : (shape.deadlineMs ?? nowMs + defaultJobDeadlineInMs),
    // Absent rather than empty when the file names none: a job without locks signs the same bytes as before locks.
    ...(shape.locks === undefined || shape.locks === null ? {} : { locks: shape.locks }),
    // Absent when the file names none: a job without an image signs the same bytes as before images.
    ...(shape.image === undefined || shape.image === null ? {} : { image: shape.image }),
  };
  const result = jobSpecSchema.safeParse(draft);
  if (!result.success) {
    throw new FileFieldError(
      fileName,
      problemsOf(file, result.error, draft, (path) => jobFilePath(file, path)),
    );
  }
  if (result.data.deadlineMs <= nowMs) {
    throw fieldProblem(
      file,
      file.has(["deadlineMs"]) ? ["deadlineMs"] : ["deadline"],
      `expected a deadline in the future, got ${new Date(result.data.deadlineMs).toISOString()}`,
    );
  }
  return { project: shape.project, jobId: shape.id ?? null, spec: result.data, inputsFolder: shape.inputs ?? null };
}

const specFileSchema = mappingOf({
  uuid: z.unknown().optional(),
  name: z.unknown().optional(),
  version: z.unknown().optional(),
  expiresIn: durationText.optional(),
  requirements: mappingOf({
    os: z.unknown().optional(),
    arch: z.unknown().optional(),
    minCores: z.unknown().optional(),
    minMemory: sizeValue.optional(),
    minMemoryBytes: z.unknown().optional(),
    minDisk: sizeValue.optional(),
    minDiskBytes: z.unknown().optional(),
    tools: z.unknown().optional(),
    labels: z.unknown().optional(),
  }).optional(),
  selfCheck: mappingOf({
    steps: z.array(z.unknown()).optional(),
    timeout: durationText.optional(),
    timeoutMs: z.unknown().optional(),
  }).optional(),
  image: z.unknown().optional(),
});

function specFilePath(file: YamlFile, path: FieldPath): FieldPath {
  const [head, second, ...rest] = path;
  if (head === "requirements" && second === "minMemoryBytes" && !file.has(path))
    return ["requirements", "minMemory", ...rest];
  if (head === "requirements" && second === "minDiskBytes" && !file.has(path))
    return ["requirements", "minDisk", ...rest];
  if (head === "selfCheck" && second === "timeoutMs" && !file.has(path)) return ["selfCheck", "timeout"];
  if (head === "expiresAtMs") return ["expiresIn"];
  return path;
}

/**
 * Parses a capability spec file into the CapabilitySpec body a node signs:
 * issued at `nowMs`, expiring `expiresIn` later (default a year), seq 0
 * (a spec is a record superseded by its version, not a sequenced message).
 */
export function parseSpecFile(text: string, fileName: string, nowMs: number): CapabilitySpec {
  checkSize(text, fileName, maxSpecFileBytes);
  const file = readYaml(text, fileName);
  const shape = validateYaml(file, specFileSchema);
  if (shape.uuid === undefined) {
    throw fieldProblem(
      file,
      ["uuid"],
      `expected the spec's UUID, which names it for good: add for instance \`uuid: ${randomUUID()}\``,
    );
  }
  eitherOf(file, ["requirements"], "minMemory", "minMemoryBytes");
  eitherOf(file, ["requirements"], "minDisk", "minDiskBytes");
  eitherOf(file, ["selfCheck"], "timeout", "timeoutMs");
  const requirements = shape.requirements ?? {};
  const selfCheck = shape.selfCheck ?? {};
  const lifetimeMs =
    shape.expiresIn !== undefined ? (parseDurationMs(shape.expiresIn) as number) : defaultSpecLifetimeMs;
  if (lifetimeMs > maxSpecLifetimeMs) {
    throw fieldProblem(
      file,
      ["expiresIn"],
      `expected at most ${maxSpecLifetimeMs / 86_400_000}d, got ${shape.expiresIn}`,
    );
  }
  const draft = {
    issuedAtMs: nowMs,
    expiresAtMs: nowMs + lifetimeMs,
    seq: 0,
    uuid: shape.uuid,
    name: shape.name,
    version: shape.version ?? 1,
    requirements: {
      os: requirements.os ?? [],
      arch: requirements.arch ?? [],
      minCores: requirements.minCores ?? 0,
      minMemoryBytes: sizeOf(requirements.minMemory) ?? requirements.minMemoryBytes ?? 0,
      minDiskBytes: sizeOf(requirements.minDisk) ?? requirements.minDiskBytes ?? 0,
      tools: requirements.tools ?? [],
      labels: requirements.labels ?? [],
    },
    selfCheck: {
      steps: (selfCheck.steps ?? []).map(stepOf),
      timeoutMs:
        selfCheck.timeout !== undefined
          ? parseDurationMs(selfCheck.timeout)
          : (selfCheck.timeoutMs ?? defaultSelfCheckTimeoutMs),
    },
    // Absent when the file names none: a spec of host tools signs the same bytes as before images.
    ...(shape.image === undefined || shape.image === null ? {} : { image: shape.image }),
  };
  if (
    shape.image !== undefined &&
    shape.image !== null &&
    Array.isArray(requirements.tools) &&
    requirements.tools.length > 0
  ) {
    throw fieldProblem(
      file,
      ["requirements", "tools"],
      "expected no tools when the spec names an image (its jobs run in the image, not on the worker's system): remove them",
    );
  }
  const result = capabilitySpecSchema.safeParse(draft);
  if (!result.success) {
    throw new FileFieldError(
      fileName,
      problemsOf(file, result.error, draft, (path) => specFilePath(file, path)),
    );
  }
  return result.data;
}
