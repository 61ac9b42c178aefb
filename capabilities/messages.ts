/**
 * Message bodies owned by capabilities/: CapabilitySpec and WorkerAdvert
 * (DESIGN.md, Messages). Every string, array and number has a named limit.
 */

import * as z from "zod";
import { defineDomain, maxNameChars, projectIdSchema, signedHeaderShape, timestampMsSchema } from "../crypto/index.ts";

export const maxSpecBytes = 64 * 1024;
export const maxAdvertBytes = 16 * 1024;
export const maxSpecLifetimeMs = 400 * 24 * 60 * 60 * 1000;
/** Four advert intervals of the slowest mesh simulated (3 h): a longer life would only let a stale advert linger. */
export const maxAdvertLifetimeMs = 12 * 60 * 60 * 1000;
export const maxPlatformsPerSpec = 8;
export const maxToolsPerSpec = 32;
export const maxLabels = 32;
export const maxLabelChars = 64;
export const maxToolNameChars = 64;
export const maxSemverRangeChars = 128;
export const maxVersionChars = 64;
export const maxSelfCheckSteps = 16;
export const maxStepCommandChars = 16 * 1024;
export const maxSelfCheckTimeoutMs = 60 * 60 * 1000;
export const maxCores = 4096;
export const maxMemoryBytes = 2 ** 50;
export const maxDiskBytes = 2 ** 53 - 1;
export const maxSlots = 256;
export const maxSpecsPerAdvert = 64;
export const maxToolsPerWorker = 128;
export const maxProjectsPerAdvert = 64;
export const maxSpecVersion = Number.MAX_SAFE_INTEGER;
/** Characters of an image's CID (a sha2-256 CIDv1 in base32 is 59). */
export const maxImageCidChars = 128;

/** RFC 9562 UUID, lowercase text form. */
export const specUuidSchema = z
  .string()
  .regex(
    /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/,
    "expected a lowercase UUID such as 0f8fad5b-d9cb-469f-a165-70867728950e",
  );

/** Operating system and architecture names as Node's process.platform and process.arch spell them. */
export const platformNameSchema = z
  .string()
  .regex(/^[a-z0-9_]{1,16}$/, "expected a platform name such as linux, darwin, win32, x64 or arm64");
export const labelSchema = z
  .string()
  .regex(
    /^[a-z0-9][a-z0-9._:-]{0,63}$/,
    "expected a label: lowercase letters, digits, '.', '_', ':' or '-', at most 64",
  );
export const toolNameSchema = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$/, "expected a tool name such as gcc, node or cargo");
export const semverRangeSchema = z.string().min(1).max(maxSemverRangeChars);
export const versionTextSchema = z.string().min(1).max(maxVersionChars);

export const stepSchema = z.strictObject({
  name: z.string().min(1).max(maxNameChars),
  run: z.string().min(1).max(maxStepCommandChars),
});

export const requirementsSchema = z.strictObject({
  /** Any of these; empty means any. */
  os: z.array(platformNameSchema).max(maxPlatformsPerSpec),
  arch: z.array(platformNameSchema).max(maxPlatformsPerSpec),
  minCores: z.number().int().min(0).max(maxCores),
  minMemoryBytes: z.number().int().min(0).max(maxMemoryBytes),
  minDiskBytes: z.number().int().min(0).max(maxDiskBytes),
  tools: z.array(z.strictObject({ name: toolNameSchema, range: semverRangeSchema })).max(maxToolsPerSpec),
  /** All of these. */
  labels: z.array(labelSchema).max(maxLabels),
});

export const capabilitySpecSchema = z.strictObject({
  ...signedHeaderShape,
  uuid: specUuidSchema,
  name: z.string().min(1).max(maxNameChars),
  version: z.number().int().min(1).max(maxSpecVersion),
  requirements: requirementsSchema,
  selfCheck: z.strictObject({
    steps: z.array(stepSchema).max(maxSelfCheckSteps),
    timeoutMs: z.number().int().min(1).max(maxSelfCheckTimeoutMs),
  }),
  /**
   * The image (a tree's CID, `cimesh image import`) the spec's jobs and its self-check run in, instead of the
   * worker's own system: the spec is then the image's signed name and version. Absent: host tools, as before.
   */
  image: z
    .string()
    .max(maxImageCidChars)
    .regex(/^b[a-z2-7]+$/, "expected a content id: 'b' then lowercase base32 (CIDv1)")
    .optional(),
});

export const availabilitySchema = z.enum(["eager", "reluctant", "paused", "offline"]);

export const dimensionsSchema = z.strictObject({
  os: platformNameSchema,
  arch: platformNameSchema,
  cores: z.number().int().min(1).max(maxCores),
  memoryBytes: z.number().int().min(0).max(maxMemoryBytes),
  diskBytes: z.number().int().min(0).max(maxDiskBytes),
  tools: z.array(z.strictObject({ name: toolNameSchema, version: versionTextSchema })).max(maxToolsPerWorker),
  labels: z.array(labelSchema).max(maxLabels),
});

export const workerAdvertSchema = z
  .strictObject({
    ...signedHeaderShape,
    projects: z.array(projectIdSchema).max(maxProjectsPerAdvert),
    specs: z
      .array(
        z.strictObject({
          uuid: specUuidSchema,
          version: z.number().int().min(1).max(maxSpecVersion),
          passed: z.boolean(),
          checkedAtMs: timestampMsSchema,
        }),
      )
      .max(maxSpecsPerAdvert),
    dimensions: dimensionsSchema,
    availability: availabilitySchema,
    freeSlots: z.number().int().min(0).max(maxSlots),
    totalSlots: z.number().int().min(0).max(maxSlots),
  })
  .refine((advert) => advert.freeSlots <= advert.totalSlots, {
    path: ["freeSlots"],
    message: "expected at most totalSlots",
  });

export type Step = z.infer<typeof stepSchema>;
export type Requirements = z.infer<typeof requirementsSchema>;
export type CapabilitySpec = z.infer<typeof capabilitySpecSchema>;
export type Availability = z.infer<typeof availabilitySchema>;
export type Dimensions = z.infer<typeof dimensionsSchema>;
export type WorkerAdvert = z.infer<typeof workerAdvertSchema>;

export const capabilitySpecDomain = defineDomain("cimesh/capability-spec/v1", capabilitySpecSchema, {
  maxBytes: maxSpecBytes,
  maxLifetimeMs: maxSpecLifetimeMs,
});

export const workerAdvertDomain = defineDomain("cimesh/worker-advert/v1", workerAdvertSchema, {
  maxBytes: maxAdvertBytes,
  maxLifetimeMs: maxAdvertLifetimeMs,
});
