/**
 * The node's config file, `<dataDir>/config.yaml`: where it listens, whom it
 * asks first, how its worker behaves, which projects it trusts (and with what
 * share), and which projects it announces jobs for. Validated with errors that
 * name the line and the field, as job files are (yamlfile.ts).
 *
 * In memory the config is a NodeConfig: availability windows in minutes after
 * midnight and days as numbers (what jobs/worker.ts wants); in the file they
 * are "HH:MM" and day names. `saveConfig` writes the file back atomically and
 * keeps the comments of every part it did not change.
 */

import { mkdir, open, readFile, rename, unlink } from "node:fs/promises";
import { join } from "node:path";
import { isDeepStrictEqual } from "node:util";
import { Document, isMap, isScalar, parseDocument, visit } from "yaml";
import * as z from "zod";
import {
  availabilitySchema,
  labelSchema,
  maxLabels,
  maxSlots,
  toolNameSchema,
  versionTextSchema,
} from "../../capabilities/index.ts";
import { CimeshError, maxRootKeys, projectIdOf, projectIdSchema } from "../../crypto/index.ts";
import {
  type Availability,
  type AvailabilityRules,
  defaultMasterConfig,
  defaultReportDeskConfig,
  defaultWorkerConfig,
  lockNameSchema,
  maxListedReporters,
  maxLockCount,
  maxOfferLifetimeMs,
  maxWorkerLocks,
} from "../../jobs/index.ts";
import { type AddressRole, addressProblem } from "./addresses.ts";
import { FileFieldError, parseSizeBytes, readYaml, validateYaml } from "./yamlfile.ts";

export const configFileName = "config.yaml";
export const configFileMode = 0o644;
export const maxConfigFileBytes = 256 * 1024;
export const maxListenAddresses = 32;
export const maxBootstrapAddresses = 64;
export const maxAddressChars = 1024;
export const maxTrustedProjects = 64;
export const maxMasterProjects = 64;
export const maxAvailabilityWindows = 32;
export const maxShare = 1_000_000;
export const maxApiPort = 65_535;
export const maxLoadAverageCeiling = 10_000;
export const maxToolOverrides = 128;
/** A root key in the config: an ed25519 public key as 64 lowercase hex characters. */
export const rootKeyHexChars = 64;

export const defaultListenAddresses = ["/ip4/0.0.0.0/tcp/0"];
export const defaultApiPort = 0;
export const defaultCacheQuotaBytes = 10 * 1024 ** 3;
/** Most reservations a relay may be told to hold. */
export const maxRelayReservations = 10_000;
/** A relay's limits when the config names none (reachability.relayLimits). */
export const defaultRelayLimits = {
  maxReservations: 64,
  dataBytes: 8 * 1024 * 1024,
  durationMs: 2 * 60_000,
  reservationTtlMs: 60 * 60_000,
};

/** A project this node trusts: its first roots and threshold (which its id is made from) and its share of this worker. */
export interface TrustEntry {
  project: string;
  /** Root public keys, hex. */
  roots: string[];
  threshold: number;
  share: number;
}

/** What the volunteer says about this machine where detection is wrong or too generous; null = detect. */
export interface DimensionOverrides {
  cores: number | null;
  memoryBytes: number | null;
  diskBytes: number | null;
  tools: { name: string; version: string }[];
}

export interface WorkerSettings {
  slots: number;
  /** Bytes the worker's blob cache (job inputs and outputs) may hold; least recently used blobs go first. */
  cacheQuota: number;
  allowNetwork: boolean;
  /** The availability the worker starts in. */
  availability: Availability;
  rules: { windows: { days: number[]; startMinute: number; endMinute: number }[]; maxLoadAverage: number | null };
  dimensions: DimensionOverrides;
  labels: string[];
  /** Local semaphores: a job naming one of these locks takes one of its count here while it runs. */
  locks: Record<string, number>;
}

/** Protocol timings. The defaults suit a real mesh; tests and small LAN meshes may shorten them. */
export interface TimingSettings {
  /** Lease an award carries (master). */
  leaseMs: number;
  /** How long bids collect before awards go out (master). */
  bidWindowMs: number;
  /** Once the bid probability is 1, how long until the next re-announcement (master). */
  reannounceIntervalMs: number;
  /** How often a running job's lease is renewed (worker); well under leaseMs. */
  renewIntervalMs: number;
  /** How long a worker's standing offer to a master lasts (renewed when a quarter is left); at most an hour. */
  offerLifetimeMs: number;
  /** How often a master re-puts its keysets in the DHT, and a node lacking one looks for it. */
  keysetRepublishMs: number;
}

export const minTimingMs = 100;
export const maxTimingMs = 24 * 60 * 60 * 1000;

export interface NodeConfig {
  /** libp2p multiaddrs to listen on (`--listen` replaces them). */
  listen: string[];
  /** libp2p multiaddrs of peers to meet first (`--bootstrap` adds to them). */
  bootstrap: string[];
  /** Find peers on the local network by mDNS. */
  mdns: boolean;
  /** Port of the control API on 127.0.0.1; 0 = any free port (written to `<dataDir>/api.port`). */
  apiPort: number;
  worker: WorkerSettings;
  trust: TrustEntry[];
  /** Projects this node announces jobs for (it holds an announcer key in their keyset). */
  masters: string[];
  timing: TimingSettings;
  quorum: QuorumSettings;
  reachability: ReachabilitySettings;
  reports: ReportSettings;
}

/** Who may report builds made on their own (`cimesh report`) to the projects in `masters`, and how many (jobs/reports.ts). */
export interface ReportSettings {
  /** "volunteers": any node that pins the project; or only these reporters' public keys (hex). */
  from: "volunteers" | string[];
  /** Reports accepted from one reporter per hour. */
  perReporterPerHour: number;
  /** Reports accepted from all reporters per hour, per project. */
  perProjectPerHour: number;
}

/** A rate limit of reports per hour: more than this is no limit worth the name. */
export const maxReportsPerHour = 100_000;

/** On or off, or `auto`: decided at start from the node's roles and addresses (node/runtime). */
export type AutoSwitch = boolean | "auto";

/** How the node reaches and is reached from behind a home router (node/host/nat.ts). */
export interface ReachabilitySettings {
  /** Relay for nodes behind NAT; auto: when this node is a project's master and listens beyond loopback. */
  relay: AutoSwitch;
  /** What this node allows each reservation when it relays: per relayed connection, bytes and time. */
  relayLimits: {
    maxReservations: number;
    dataBytes: number;
    durationMs: number;
    reservationTtlMs: number;
  };
  /** Reserve a slot on a relay and advertise its address; auto: when this node relays for no one and listens beyond loopback. */
  reserveRelay: AutoSwitch;
  /** Ask the home router for a port mapping by UPnP. */
  upnp: boolean;
}

/** What a master believes of results (jobs/master.ts, the Sybil rules): for the projects this node is master of. */
export interface QuorumSettings {
  /** Weight agreeing results must hold unless a runner's result is among them; 0 = a count of any identities decides. */
  weight: number;
  /** Consecutive agreeing results after which a worker's result weighs 1. */
  validRunsForFullWeight: number;
  /** Replicas of one shard go to workers on distinct network prefixes (IPv4 /24, IPv6 /48). */
  distinctPrefixes: boolean;
  /** Probability that a shard's first run goes to one of the project's runners, whose result then has the last word. */
  spotCheckFraction: number;
}

/** Anything wrong with the config other than one field (the file cannot be read or written). */
export class ConfigFileError extends CimeshError {
  constructor(path: string, expected: string) {
    super("ERR_CONFIG_FILE", `${path}: expected ${expected}`);
  }
}

const dayNames = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"] as const;

const fullDayNames = ["sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"];

function dayNumber(value: unknown): number | null {
  if (typeof value === "number") return Number.isInteger(value) && value >= 0 && value <= 6 ? value : null;
  if (typeof value !== "string") return null;
  const name = value.trim().toLowerCase();
  const index = Math.max(dayNames.indexOf(name as (typeof dayNames)[number]), fullDayNames.indexOf(name));
  return index >= 0 ? index : null;
}

const daySchema = z
  .custom<number | string>(
    (value) => dayNumber(value) !== null,
    "expected a day: sun, mon, tue, wed, thu, fri or sat (or 0 to 6, 0 = Sunday)",
  )
  .transform((value) => dayNumber(value) as number);

const timeOfDaySchema = z
  .string()
  .regex(/^([01]\d|2[0-3]):[0-5]\d$/, 'expected a time of day as "HH:MM" in quotes, such as "18:30"')
  .transform((text) => Number(text.slice(0, 2)) * 60 + Number(text.slice(3, 5)));

/** A multiaddr of the config, checked as `--listen` or `--bootstrap` would be (node/files/addresses.ts). */
const addressSchema = (role: AddressRole) =>
  z
    .string()
    .max(maxAddressChars)
    .superRefine((text, ctx) => {
      const problem = addressProblem(role, text);
      if (problem !== null) ctx.addIssue({ code: "custom", message: problem });
    });

const rootKeyHexSchema = z
  .string()
  .regex(/^[0-9a-fA-F]{64}$/, `expected a root public key as ${rootKeyHexChars} hex characters`)
  .transform((hex) => hex.toLowerCase());

const sizeSchema = z
  .custom<number | string>(
    (value) =>
      (typeof value === "number" && Number.isSafeInteger(value) && value >= 0) ||
      (typeof value === "string" && parseSizeBytes(value) !== null),
    "expected a size such as 8GiB, or a whole number of bytes",
  )
  .transform((value) => (typeof value === "number" ? value : (parseSizeBytes(value) as number)));

export function hexToBytes(hex: string): Uint8Array {
  return new Uint8Array(Buffer.from(hex, "hex"));
}

export const trustEntrySchema = z
  .strictObject({
    project: projectIdSchema,
    roots: z.array(rootKeyHexSchema).min(1).max(maxRootKeys),
    threshold: z.number().int().min(1).max(maxRootKeys).default(1),
    share: z.number().gt(0, "expected a share above 0").max(maxShare).default(1),
  })
  .superRefine((entry, ctx) => {
    if (entry.threshold > entry.roots.length) {
      ctx.addIssue({
        code: "custom",
        path: ["threshold"],
        message: `expected at most the ${entry.roots.length} roots listed`,
      });
      return;
    }
    if (new Set(entry.roots).size !== entry.roots.length) {
      ctx.addIssue({ code: "custom", path: ["roots"], message: "expected distinct root keys" });
      return;
    }
    const made = projectIdOf(entry.roots.map(hexToBytes), entry.threshold);
    if (made !== entry.project) {
      ctx.addIssue({
        code: "custom",
        path: ["roots"],
        message: `expected the roots and threshold project ${entry.project} was made from; these make ${made}: copy the \`cimesh trust add\` line the project published`,
      });
    }
  });

const windowSchema = z.strictObject({
  days: z.array(daySchema).max(7).default([]),
  start: timeOfDaySchema,
  end: timeOfDaySchema,
});

const workerSchema = z.strictObject({
  slots: z.number().int().min(1).max(maxSlots).default(1),
  cacheQuota: sizeSchema.default(defaultCacheQuotaBytes),
  allowNetwork: z.boolean().default(false),
  availability: availabilitySchema.default("eager"),
  rules: z
    .strictObject({
      windows: z
        .array(windowSchema)
        .max(maxAvailabilityWindows)
        .default([])
        .transform((windows) =>
          windows.map((window) => ({ days: window.days, startMinute: window.start, endMinute: window.end })),
        ),
      maxLoadAverage: z.number().gt(0).max(maxLoadAverageCeiling).nullable().default(null),
    })
    .prefault({}),
  dimensions: z
    .strictObject({
      cores: z.number().int().min(1).max(4096).nullable().default(null),
      memory: sizeSchema.nullable().default(null),
      disk: sizeSchema.nullable().default(null),
      tools: z
        .array(z.strictObject({ name: toolNameSchema, version: versionTextSchema }))
        .max(maxToolOverrides)
        .default([]),
    })
    .prefault({})
    .transform((dimensions) => ({
      cores: dimensions.cores,
      memoryBytes: dimensions.memory,
      diskBytes: dimensions.disk,
      tools: dimensions.tools,
    })),
  labels: z.array(labelSchema).max(maxLabels).default([]),
  locks: z
    .record(lockNameSchema, z.number().int().min(1).max(maxLockCount))
    .refine((locks) => Object.keys(locks).length <= maxWorkerLocks, `expected at most ${maxWorkerLocks} locks`)
    .default({}),
});

const timingMsSchema = (defaultMs: number) =>
  z
    .number()
    .int()
    .min(minTimingMs, `expected at least ${minTimingMs} ms`)
    .max(maxTimingMs, `expected at most ${maxTimingMs} ms (a day)`)
    .default(defaultMs);

const timingSchema = z
  .strictObject({
    leaseMs: timingMsSchema(defaultMasterConfig.leaseMs),
    bidWindowMs: timingMsSchema(defaultMasterConfig.bidWindowMs),
    reannounceIntervalMs: timingMsSchema(defaultMasterConfig.reannounceIntervalMs),
    renewIntervalMs: timingMsSchema(defaultWorkerConfig.renewIntervalMs),
    offerLifetimeMs: timingMsSchema(defaultWorkerConfig.offerLifetimeMs),
    keysetRepublishMs: timingMsSchema(10_000),
  })
  .refine((timing) => timing.offerLifetimeMs <= maxOfferLifetimeMs, {
    path: ["offerLifetimeMs"],
    message: `expected at most ${maxOfferLifetimeMs} ms (an hour), so a vanished worker's offer does not linger`,
  })
  .refine((timing) => timing.renewIntervalMs < timing.leaseMs, {
    path: ["renewIntervalMs"],
    message: "expected less than leaseMs, so a lease is renewed before it lapses",
  });

/** Weight above which no worker could ever decide: a full weight is 1 per worker. */
export const maxQuorumWeight = 16;
export const maxValidRunsForFullWeight = 10_000;

const quorumSchema = z.strictObject({
  weight: z.number().min(0).max(maxQuorumWeight).default(defaultMasterConfig.quorumWeight),
  validRunsForFullWeight: z
    .number()
    .int()
    .min(1)
    .max(maxValidRunsForFullWeight)
    .default(defaultMasterConfig.validRunsForFullWeight),
  distinctPrefixes: z.boolean().default(defaultMasterConfig.distinctPrefixes),
  spotCheckFraction: z.number().min(0).max(1).default(defaultMasterConfig.spotCheckFraction),
});

const autoSwitchSchema = z.union([z.boolean(), z.literal("auto")], {
  error: "expected true, false or auto",
});

const reachabilitySchema = z.strictObject({
  relay: autoSwitchSchema.default("auto"),
  relayLimits: z
    .strictObject({
      maxReservations: z.number().int().min(1).max(maxRelayReservations).default(defaultRelayLimits.maxReservations),
      data: sizeSchema.default(defaultRelayLimits.dataBytes),
      durationMs: z.number().int().min(minTimingMs).max(maxTimingMs).default(defaultRelayLimits.durationMs),
      reservationTtlMs: z.number().int().min(minTimingMs).max(maxTimingMs).default(defaultRelayLimits.reservationTtlMs),
    })
    .prefault({})
    .transform(({ data, ...rest }) => ({ ...rest, dataBytes: data })),
  reserveRelay: autoSwitchSchema.default("auto"),
  upnp: z.boolean().default(false),
});

const reportsSchema = z.strictObject({
  from: z
    .union([
      z.literal("volunteers"),
      z
        .array(z.string().regex(/^[0-9a-f]{64}$/, "expected a reporter's public key: 64 lowercase hex digits"))
        .max(maxListedReporters),
    ])
    .default("volunteers"),
  perReporterPerHour: z
    .number()
    .int()
    .min(1)
    .max(maxReportsPerHour)
    .default(defaultReportDeskConfig.maxReportsPerReporter),
  perProjectPerHour: z
    .number()
    .int()
    .min(1)
    .max(maxReportsPerHour)
    .default(defaultReportDeskConfig.maxReportsPerProject),
});

export const nodeConfigSchema = z
  .preprocess(
    (value) => (value === null || value === undefined ? {} : value),
    z.strictObject({
      listen: z.array(addressSchema("listen")).max(maxListenAddresses).default(defaultListenAddresses),
      bootstrap: z.array(addressSchema("bootstrap")).max(maxBootstrapAddresses).default([]),
      mdns: z.boolean().default(true),
      apiPort: z.number().int().min(0).max(maxApiPort).default(defaultApiPort),
      worker: workerSchema.prefault({}),
      trust: z.array(trustEntrySchema).max(maxTrustedProjects).default([]),
      masters: z.array(projectIdSchema).max(maxMasterProjects).default([]),
      timing: timingSchema.prefault({}),
      quorum: quorumSchema.prefault({}),
      reachability: reachabilitySchema.prefault({}),
      reports: reportsSchema.prefault({}),
    }),
  )
  .superRefine((config, ctx) => {
    const seen = new Set<string>();
    config.trust.forEach((entry, index) => {
      if (seen.has(entry.project))
        ctx.addIssue({ code: "custom", path: ["trust", index, "project"], message: "expected each project once" });
      seen.add(entry.project);
    });
    config.masters.forEach((project, index) => {
      if (!seen.has(project)) {
        ctx.addIssue({
          code: "custom",
          path: ["masters", index],
          message: "expected a project also listed under trust (a master checks its own keysets like everyone)",
        });
      }
    });
  }) satisfies z.ZodType<NodeConfig, unknown>;

/** The worker's availability rules as jobs/worker.ts takes them. */
export function availabilityRulesOf(config: NodeConfig): AvailabilityRules {
  return config.worker.rules;
}

/** The config a node runs with when its file says nothing. */
export function defaultConfig(): NodeConfig {
  return nodeConfigSchema.parse({});
}

/** Parses config text; `fileName` is what errors name (the file's path). */
export function parseConfig(text: string, fileName: string): NodeConfig {
  const sizeBytes = Buffer.byteLength(text, "utf8");
  if (sizeBytes > maxConfigFileBytes) {
    throw new FileFieldError(fileName, [
      { line: 1, field: "(file)", expected: `expected at most ${maxConfigFileBytes} bytes, got ${sizeBytes}` },
    ]);
  }
  return validateYaml(readYaml(text, fileName), nodeConfigSchema);
}

export function configPath(dataDir: string): string {
  return join(dataDir, configFileName);
}

async function readIfPresent(path: string): Promise<string | null> {
  try {
    return await readFile(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw new ConfigFileError(path, `a readable file (${(error as Error).message})`);
  }
}

/** The node's config: `<dataDir>/config.yaml`, or the defaults when there is no such file. */
export async function loadConfig(dataDir: string): Promise<NodeConfig> {
  const path = configPath(dataDir);
  const text = await readIfPresent(path);
  return text === null ? defaultConfig() : parseConfig(text, path);
}

function minuteText(minute: number): string {
  return `${String(Math.floor(minute / 60)).padStart(2, "0")}:${String(minute % 60).padStart(2, "0")}`;
}

/** The config as its file spells it: day names, "HH:MM", sizes in bytes. */
export function configFileForm(config: NodeConfig): Record<string, unknown> {
  const { worker } = config;
  return {
    listen: config.listen,
    bootstrap: config.bootstrap,
    mdns: config.mdns,
    apiPort: config.apiPort,
    worker: {
      slots: worker.slots,
      cacheQuota: worker.cacheQuota,
      allowNetwork: worker.allowNetwork,
      availability: worker.availability,
      rules: {
        windows: worker.rules.windows.map((window) => ({
          days: window.days.map((day) => dayNames[day] ?? day),
          start: minuteText(window.startMinute),
          end: minuteText(window.endMinute),
        })),
        maxLoadAverage: worker.rules.maxLoadAverage,
      },
      dimensions: {
        cores: worker.dimensions.cores,
        memory: worker.dimensions.memoryBytes,
        disk: worker.dimensions.diskBytes,
        tools: worker.dimensions.tools,
      },
      labels: worker.labels,
      locks: { ...worker.locks },
    },
    trust: config.trust.map((entry) => ({ ...entry })),
    masters: config.masters,
    timing: { ...config.timing },
    quorum: { ...config.quorum },
    reports: {
      ...config.reports,
      from: config.reports.from === "volunteers" ? "volunteers" : [...config.reports.from],
    },
    reachability: {
      relay: config.reachability.relay,
      relayLimits: {
        maxReservations: config.reachability.relayLimits.maxReservations,
        data: config.reachability.relayLimits.dataBytes,
        durationMs: config.reachability.relayLimits.durationMs,
        reservationTtlMs: config.reachability.relayLimits.reservationTtlMs,
      },
      reserveRelay: config.reachability.reserveRelay,
      upnp: config.reachability.upnp,
    },
  };
}

/** The file `cimesh init` writes: every setting at its default, each explained. */
export const configTemplate = `# cimesh node config. Edit it, or use \`cimesh trust add|remove\`; restart the node to apply.
# Sizes: 8GiB, 512MiB or bytes. Times of day: "HH:MM" in quotes. Days: sun mon tue wed thu fri sat.

# libp2p addresses to listen on (--listen replaces them), e.g. /ip4/0.0.0.0/tcp/4001
listen: [/ip4/0.0.0.0/tcp/0]
# Peers to meet first (--bootstrap adds to them), e.g. /ip4/192.0.2.1/tcp/4001/p2p/12D3KooW...
bootstrap: []
# Find peers on the local network.
mdns: true
# Port of the control API on 127.0.0.1 (0 = any free port; the CLI finds it in api.port).
apiPort: 0

# What this node does as a worker (cimesh start --worker).
worker:
  # Jobs run at once.
  slots: 1
  # Let jobs that ask for the network have it.
  allowNetwork: false
  # eager | reluctant | paused | offline; change it live with \`cimesh availability\`.
  availability: eager
  rules:
    # Take work only inside these windows (none = any time), e.g.
    #   - { days: [mon, tue, wed, thu, fri], start: "18:00", end: "08:00" }
    windows: []
    # Take no work while the 1-minute load average is above this (null = no ceiling).
    maxLoadAverage: null
  # What to tell masters about this machine, where detection is wrong (null = detect).
  dimensions:
    cores: null
    memory: null
    disk: null
    tools: []
  # Labels capability specs may require, e.g. [gpu, fast-disk].
  labels: []
  # Local semaphores: a job whose \`locks\` names one takes one of its count here while it runs, e.g. { vm: 1 }.
  locks: {}
  # Space for job inputs and outputs kept between jobs; the least recently used go first.
  cacheQuota: 10GiB

# Projects this node trusts, each with its share of the worker: \`cimesh trust add\`.
trust: []

# Projects this node announces jobs for (cimesh project init adds them).
masters: []

# Protocol timings in milliseconds. The defaults suit a real mesh; shorten them only for tests or a small LAN.
timing:
  leaseMs: 60000 # lease an award carries (master)
  bidWindowMs: 250 # bids collect this long before awards go out (master)
  reannounceIntervalMs: 30000 # re-announcement of a job that still wants runs (master)
  renewIntervalMs: 20000 # lease renewal of a running job (worker); less than leaseMs
  offerLifetimeMs: 3600000 # a worker's standing offer of its free slots to each master (worker); renewed before it lapses
  keysetRepublishMs: 10000 # keysets into the DHT (master); looked for by nodes lacking one

# What a master believes of results (for the projects in \`masters\`). Anyone can make keys, so a result counts toward
# a quorum only with weight: the project's runners (its announcers, and the runners its keyset names) anchor a quorum;
# any other worker earns weight by results that agreed with decided quorums.
quorum:
  weight: 1 # agreeing results must weigh this much unless a runner's is among them; 0 = any identities' count decides
  validRunsForFullWeight: 5 # consecutive agreeing results after which a worker weighs 1
  distinctPrefixes: true # replicas of one shard go to distinct network prefixes (IPv4 /24, IPv6 /48)
  spotCheckFraction: 0.1 # share of shards whose first run goes to a runner, whose result has the last word

# Builds volunteers make on their own schedule and report (cimesh report), for the projects in \`masters\`.
reports:
  from: volunteers # volunteers (any node that pins the project), or a list of reporters' public keys (hex)
  perReporterPerHour: 12 # reports accepted from one reporter per hour; more are refused as rate-limited
  perProjectPerHour: 1000 # reports accepted from all reporters per hour

# Behind a home router (NAT): how this node reaches and is reached. See the README, "Behind a home router".
reachability:
  relay: auto # relay for nodes behind NAT (auto: when this node is a project's master and listens beyond loopback)
  relayLimits: # what a relay allows each reservation, per relayed connection; the relay cuts it past either
    maxReservations: 64
    data: 8MiB
    durationMs: 120000
    reservationTtlMs: 3600000
  reserveRelay: auto # reserve a slot on a relay, advertise its address (auto: when no relay and beyond loopback)
  upnp: false # ask the home router for a port mapping by UPnP
`;

/**
 * Puts `value` into `document` at `path`, touching only what differs, so the
 * comments on everything else stay.
 */
function mergeInto(document: Document, path: readonly (string | number)[], value: unknown): void {
  const current = path.length === 0 ? document.toJS() : document.getIn(path, false);
  const plain =
    current !== null && typeof current === "object" && "toJSON" in (current as object)
      ? (current as { toJSON(): unknown }).toJSON()
      : current;
  if (isDeepStrictEqual(plain, value)) return;
  const node = path.length === 0 ? document.contents : document.getIn(path, true);
  if (isMap(node) && value !== null && typeof value === "object" && !Array.isArray(value)) {
    const entries = value as Record<string, unknown>;
    for (const item of [...node.items]) {
      const key = (item.key as { value?: unknown } | null)?.value;
      if (typeof key === "string" && !(key in entries)) node.delete(key);
    }
    for (const [key, sub] of Object.entries(entries)) mergeInto(document, [...path, key], sub);
    return;
  }
  const created = document.createNode(value);
  visit(created, {
    Seq(_, seq) {
      if (seq.items.every((item) => isScalar(item))) seq.flow = true;
    },
    Scalar(_, scalar) {
      if (typeof scalar.value === "string" && /^\d\d:\d\d$/.test(scalar.value)) scalar.type = "QUOTE_DOUBLE";
    },
  });
  if (path.length === 0) document.contents = created as never;
  else document.setIn(path, created);
}

/** The text of the config file for `config`, keeping what `previous` (the file's current text) says the same way. */
export function renderConfig(config: NodeConfig, previous: string | null): string {
  const fileForm = configFileForm(config);
  let base = previous ?? configTemplate;
  let oldConfig: NodeConfig;
  try {
    oldConfig = parseConfig(base, configFileName);
  } catch {
    base = configTemplate;
    oldConfig = defaultConfig();
  }
  const document = parseDocument(base);
  if (!isMap(document.contents)) return plainConfig(config);
  for (const [key, value] of Object.entries(fileForm)) {
    const field = key as keyof NodeConfig;
    const present = document.has(key);
    // Same meaning, however the file spells it: leave the file's words alone.
    if (present && isDeepStrictEqual(oldConfig[field], config[field])) continue;
    if (!present && isDeepStrictEqual(defaultConfig()[field], config[field])) continue;
    mergeInto(document, [key], value);
  }
  const text = document.toString({ lineWidth: 0 });
  try {
    if (isDeepStrictEqual(parseConfig(text, configFileName), config)) return text;
  } catch {
    // fall through to a plain rendering
  }
  return plainConfig(config);
}

function plainConfig(config: NodeConfig): string {
  const document = new Document(configFileForm(config));
  return `# cimesh node config (rewritten by cimesh)\n${document.toString({ lineWidth: 0 })}`;
}

/** Writes `<dataDir>/config.yaml` through a temporary file and a rename, so a crash never leaves half a config. */
export async function saveConfig(dataDir: string, config: NodeConfig): Promise<void> {
  const path = configPath(dataDir);
  const checked = nodeConfigSchema.safeParse(configFileForm(config));
  if (!checked.success) {
    throw new ConfigFileError(path, `a valid config to write: ${checked.error.issues[0]?.message ?? "invalid"}`);
  }
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const text = renderConfig(config, await readIfPresent(path));
  await writeFileAtomic(path, text, configFileMode);
}

/** Writes `data` to `path` through a temporary file in the same folder, synced, then renamed over it. */
export async function writeFileAtomic(path: string, data: string | Uint8Array, mode: number): Promise<void> {
  const temporary = `${path}.${process.pid}.${Date.now()}.tmp`;
  const handle = await open(temporary, "wx", mode);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
  try {
    await rename(temporary, path);
  } catch (error) {
    await unlink(temporary).catch(() => undefined);
    throw error;
  }
}
