/**
 * A project's keys on the master's disk (DESIGN.md, Trust), and the
 * capability specs this node publishes.
 *
 * `<dataDir>/projects/<projectId>/`:
 * - `root-N.key`: the project's current root keys (mode 0600, the node key's format);
 * - `keyset.cbor`: the newest keyset the roots signed, naming the announcers
 *   (this node's own key first: a master signs announcements with its node key);
 * - `anchor.json`: the project's first roots and threshold, which its id is made
 *   from and which volunteers pin (`cimesh trust add`);
 * - `rotations/root-version-N.cbor`: the first keyset of each later root
 *   version, so a node that pinned the first roots can follow every rotation;
 * - `retired/root-version-N/`: root keys a rotation replaced (keep them offline, or delete them).
 *
 * Every new keyset is accepted (crypto/'s acceptKeyset) against the stored one
 * before it is written, so a keyset a volunteer would refuse is never stored.
 *
 * `<dataDir>/specs/<uuid>.cbor`: capability specs signed by the node key, for
 * the runtime to publish.
 */
import { mkdir, readdir, readFile, rename, rmdir } from "node:fs/promises";
import { join } from "node:path";
import { peerIdFromString } from "@libp2p/peer-id";
import { type CapabilitySpec, capabilitySpecDomain } from "../../capabilities/index.ts";
import {
  acceptKeyset,
  anchorFromGenesis,
  CimeshError,
  type Identity,
  type KeysetBody,
  keysetDomain,
  maxAnnouncerKeys,
  maxKeysetLifetimeMs,
  maxNameChars,
  maxRootKeys,
  maxRunnerKeys,
  openEnvelope,
  openMultiEnvelope,
  projectIdSchema,
  sealEnvelope,
  sealKeyset,
  trustFromAnchor,
} from "../../crypto/index.ts";
import { hexOf } from "../../jobs/index.ts";
import { hexToBytes, loadConfig, saveConfig, writeFileAtomic } from "./config.ts";
import { generateIdentity, loadIdentity, peerIdOf, saveIdentity } from "./identity.ts";

export const projectsDirName = "projects";
export const specsDirName = "specs";
export const keysetFileName = "keyset.cbor";
export const anchorFileName = "anchor.json";
export const rotationsDirName = "rotations";
export const retiredDirName = "retired";
/** Where a rotation puts the new root keys until the new keyset is written. */
export const rotatingDirName = "rotating";
export const projectFileMode = 0o600;
export const projectDirMode = 0o700;
/** A keyset lasts this long unless told otherwise: the master renews it before then (`cimesh project renew`). */
export const defaultKeysetLifetimeMs = 90 * 24 * 60 * 60 * 1000;
/** Keyset and spec files larger than this are not ours. */
export const maxStoredKeysetFileBytes = 64 * 1024;
/** Published specs a node keeps. */
export const maxPublishedSpecs = 256;

/** A project this data folder holds no keys for. */
export class UnknownProjectError extends CimeshError {
  constructor(dataDir: string, project: string, known: readonly string[]) {
    super(
      "ERR_UNKNOWN_PROJECT",
      `project ${project}: expected one whose keys are in ${join(dataDir, projectsDirName)} (${
        known.length === 0 ? "none: create one with `cimesh project init`" : `found ${known.join(", ")}`
      })`,
    );
  }
}

/** A command that needs a project without being told which, where there is not exactly one. */
export class ProjectChoiceError extends CimeshError {
  constructor(dataDir: string, known: readonly string[]) {
    super(
      "ERR_PROJECT_CHOICE",
      known.length === 0
        ? `expected a project in ${join(dataDir, projectsDirName)}, found none: create one with \`cimesh project init\``
        : `expected --project <id>: ${dataDir} holds ${known.length} projects (${known.join(", ")})`,
    );
  }
}

/** The root keys on disk do not match the stored keyset, or are fewer than its threshold. */
export class RootKeysError extends CimeshError {
  constructor(folder: string, expected: string) {
    super("ERR_ROOT_KEYS", `${folder}: expected ${expected}`);
  }
}

/** A change to the announcers that makes no sense: adding one already there, removing one that is not. */
export class AnnouncerChangeError extends CimeshError {
  constructor(expected: string) {
    super("ERR_ANNOUNCER_CHANGE", expected);
  }
}

/** Options of project commands that are out of range. */
export class ProjectOptionError extends CimeshError {
  constructor(option: string, expected: string, got: unknown) {
    super("ERR_PROJECT_OPTION", `${option}: expected ${expected}, got ${String(got)}`);
  }
}

/** A spec that is not newer than the one already published under its uuid. */
export class SpecVersionError extends CimeshError {
  constructor(uuid: string, stored: number, given: number) {
    super(
      "ERR_SPEC_VERSION",
      `spec ${uuid}: expected a version above the published ${stored}, got ${given}: raise \`version\` in the file`,
    );
  }
}

export function projectDir(dataDir: string, project: string): string {
  return join(dataDir, projectsDirName, projectIdSchema.parse(project));
}

/** The `cimesh trust add` line volunteers run to serve the project. */
export function trustAddLine(project: string, roots: readonly string[], threshold: number): string {
  return `cimesh trust add ${project} --roots ${roots.join(",")} --threshold ${threshold}`;
}

async function readOptional(path: string): Promise<Uint8Array | null> {
  try {
    return new Uint8Array(await readFile(path));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw error;
  }
}

/** The newest keyset of a project this node holds the keys of, as stored (the signed envelope); null if none. */
export async function loadProjectKeyset(dataDir: string, project: string): Promise<Uint8Array | null> {
  if (!projectIdSchema.safeParse(project).success) return null;
  return readOptional(join(projectDir(dataDir, project), keysetFileName));
}

/**
 * Every keyset a node that pinned the project's first roots needs, oldest
 * first: the first keyset of each later root version, then the newest one.
 */
export async function loadProjectKeysetChain(dataDir: string, project: string): Promise<Uint8Array[]> {
  const latest = await loadProjectKeyset(dataDir, project);
  if (latest === null) return [];
  const folder = join(projectDir(dataDir, project), rotationsDirName);
  const names = await readdir(folder).catch(() => [] as string[]);
  const versions = names
    .map((name) => /^root-version-(\d+)\.cbor$/.exec(name)?.[1])
    .filter((version): version is string => version !== undefined)
    .map(Number)
    .sort((a, b) => a - b);
  const chain: Uint8Array[] = [];
  for (const version of versions) {
    const bytes = await readOptional(join(folder, `root-version-${version}.cbor`));
    if (bytes !== null) chain.push(bytes);
  }
  if (!chain.some((bytes) => Buffer.compare(bytes, latest) === 0)) chain.push(latest);
  return chain;
}

/** The projects whose keys this data folder holds. */
export async function listProjects(dataDir: string): Promise<string[]> {
  const names = await readdir(join(dataDir, projectsDirName)).catch(() => [] as string[]);
  const projects: string[] = [];
  for (const name of names.sort()) {
    if (projectIdSchema.safeParse(name).success && (await loadProjectKeyset(dataDir, name)) !== null)
      projects.push(name);
  }
  return projects;
}

/** The project a command is about: the one given, or the only one there is. */
export async function chooseProject(dataDir: string, given: string | undefined): Promise<string> {
  const known = await listProjects(dataDir);
  if (given !== undefined) {
    if (!known.includes(given)) throw new UnknownProjectError(dataDir, given, known);
    return given;
  }
  if (known.length !== 1) throw new ProjectChoiceError(dataDir, known);
  return known[0] as string;
}

/** An announcer key as given on the command line: 64 hex characters, or an Ed25519 PeerId (12D3KooW...). */
export function parseAnnouncerKey(text: string): Uint8Array {
  if (/^[0-9a-fA-F]{64}$/.test(text)) return hexToBytes(text.toLowerCase());
  try {
    const peerId = peerIdFromString(text);
    if (peerId.type === "Ed25519" && peerId.publicKey !== undefined) return new Uint8Array(peerId.publicKey.raw);
  } catch {
    // fall through to the error below
  }
  throw new ProjectOptionError(
    "announcer key",
    "an ed25519 public key as 64 hex characters, or a node's PeerId (12D3KooW..., what `cimesh id` prints)",
    text,
  );
}

function checkLifetime(lifetimeMs: number): void {
  if (!Number.isSafeInteger(lifetimeMs) || lifetimeMs < 60_000 || lifetimeMs > maxKeysetLifetimeMs) {
    throw new ProjectOptionError(
      "--expires-in",
      `a keyset lifetime from 1m to ${maxKeysetLifetimeMs / 86_400_000}d`,
      `${lifetimeMs} ms`,
    );
  }
}

function checkRootCount(roots: number, threshold: number): void {
  if (!Number.isInteger(roots) || roots < 1 || roots > maxRootKeys)
    throw new ProjectOptionError("--roots", `a whole number from 1 to ${maxRootKeys}`, roots);
  if (!Number.isInteger(threshold) || threshold < 1 || threshold > roots)
    throw new ProjectOptionError("--threshold", `a whole number from 1 to --roots (${roots})`, threshold);
}

function announcerLabel(key: Uint8Array): string {
  return `node ${peerIdOf(key).toString()}`.slice(0, maxNameChars);
}

/** Every announcer lasts as long as the keyset that names it: a new keyset renews them all. */
function withExpiry(announcers: KeysetBody["announcers"], expiresAtMs: number): KeysetBody["announcers"] {
  return announcers.map((announcer) => ({ ...announcer, expiresAtMs }));
}

export interface ProjectInitOptions {
  /** Root keys to make. Default 1. */
  readonly roots?: number;
  /** Root signatures a keyset needs. Default 1. */
  readonly threshold?: number;
  /** How long the first keyset lasts. Default defaultKeysetLifetimeMs. */
  readonly lifetimeMs?: number;
  readonly nowMs: number;
}

export interface ProjectKeysetChange {
  readonly project: string;
  readonly keyset: KeysetBody;
  /** The project's first roots (hex) and threshold: what volunteers pin. */
  readonly genesisRoots: readonly string[];
  readonly genesisThreshold: number;
  readonly trustLine: string;
}

interface AnchorFile {
  project: string;
  roots: string[];
  threshold: number;
}

async function readAnchor(folder: string): Promise<AnchorFile> {
  const bytes = await readOptional(join(folder, anchorFileName));
  if (bytes === null) throw new RootKeysError(folder, `${anchorFileName}, written by \`cimesh project init\``);
  return JSON.parse(Buffer.from(bytes).toString("utf8")) as AnchorFile;
}

/**
 * Makes a project: root keys, its first keyset (announcer: `announcer`, this
 * node's key), and its entries in the node's config (trust, with share 1, and masters).
 */
export async function initProject(
  dataDir: string,
  announcer: Identity,
  options: ProjectInitOptions,
): Promise<ProjectKeysetChange> {
  const rootCount = options.roots ?? 1;
  const threshold = options.threshold ?? 1;
  const lifetimeMs = options.lifetimeMs ?? defaultKeysetLifetimeMs;
  checkRootCount(rootCount, threshold);
  checkLifetime(lifetimeMs);
  const config = await loadConfig(dataDir); // a broken config fails before any key is made
  const roots = Array.from({ length: rootCount }, () => generateIdentity());
  const anchor = anchorFromGenesis(
    roots.map((root) => root.publicKey),
    threshold,
  );
  const expiresAtMs = options.nowMs + lifetimeMs;
  const body: KeysetBody = {
    project: anchor.project,
    rootVersion: 1,
    version: 1,
    issuedAtMs: options.nowMs,
    expiresAtMs,
    roots: [...anchor.roots],
    threshold,
    announcers: [{ key: announcer.publicKey, label: announcerLabel(announcer.publicKey), expiresAtMs }],
  };
  const bytes = sealKeyset(body, roots);
  acceptKeyset(trustFromAnchor(anchor), bytes, options.nowMs);

  const folder = join(dataDir, projectsDirName, anchor.project);
  await mkdir(folder, { recursive: true, mode: projectDirMode });
  for (const [index, root] of roots.entries()) await saveIdentity(join(folder, `root-${index + 1}.key`), root);
  const genesisRoots = anchor.roots.map(hexOf);
  const anchorFile: AnchorFile = { project: anchor.project, roots: genesisRoots, threshold };
  await writeFileAtomic(join(folder, anchorFileName), `${JSON.stringify(anchorFile, null, 2)}\n`, projectFileMode);
  await writeFileAtomic(join(folder, keysetFileName), bytes, projectFileMode);

  await saveConfig(dataDir, {
    ...config,
    trust: [
      ...config.trust.filter((entry) => entry.project !== anchor.project),
      { project: anchor.project, roots: genesisRoots, threshold, share: 1 },
    ],
    masters: [...config.masters.filter((project) => project !== anchor.project), anchor.project],
  });
  return {
    project: anchor.project,
    keyset: body,
    genesisRoots,
    genesisThreshold: threshold,
    trustLine: trustAddLine(anchor.project, genesisRoots, threshold),
  };
}

interface StoredProject {
  readonly folder: string;
  readonly bytes: Uint8Array;
  readonly body: KeysetBody;
  readonly roots: Identity[];
  readonly anchor: AnchorFile;
}

async function loadStoredProject(dataDir: string, project: string): Promise<StoredProject> {
  const folder = projectDir(dataDir, project);
  const bytes = await loadProjectKeyset(dataDir, project);
  if (bytes === null) throw new UnknownProjectError(dataDir, project, await listProjects(dataDir));
  const { body } = openMultiEnvelope(keysetDomain, bytes);
  const names = (await readdir(folder)).filter((name) => /^root-\d+\.key$/.test(name)).sort();
  const roots: Identity[] = [];
  for (const name of names) roots.push(await loadIdentity(join(folder, name)));
  const current = roots.filter((root) => body.roots.some((key) => Buffer.compare(key, root.publicKey) === 0));
  if (current.length < body.threshold) {
    throw new RootKeysError(
      folder,
      `at least ${body.threshold} root-N.key files of the keyset's roots (root version ${body.rootVersion}), found ${current.length}` +
        (names.length > current.length || (await readdir(folder)).includes(rotatingDirName)
          ? `: a rotation was interrupted; the new keys are in ${join(folder, rotatingDirName)}, the old ones in ${join(folder, retiredDirName)}`
          : ""),
    );
  }
  return { folder, bytes, body, roots: current, anchor: await readAnchor(folder) };
}

/** Signs `body`, checks that a node trusting the stored keyset accepts it, and only then stores it. */
async function replaceKeyset(
  stored: StoredProject,
  body: KeysetBody,
  signers: readonly Identity[],
  nowMs: number,
): Promise<Uint8Array> {
  const bytes = sealKeyset(body, signers);
  const authority = trustFromAnchor({
    project: stored.body.project,
    roots: stored.body.roots,
    threshold: stored.body.threshold,
  });
  // The stored keyset may have expired since: accept it as of when it was issued, then the new one as of now.
  const trusted = acceptKeyset(authority, stored.bytes, stored.body.issuedAtMs);
  acceptKeyset(trusted, bytes, nowMs);
  return bytes;
}

function changeOf(stored: StoredProject, keyset: KeysetBody): ProjectKeysetChange {
  return {
    project: keyset.project,
    keyset,
    genesisRoots: stored.anchor.roots,
    genesisThreshold: stored.anchor.threshold,
    trustLine: trustAddLine(keyset.project, stored.anchor.roots, stored.anchor.threshold),
  };
}

function nextBody(stored: StoredProject, nowMs: number, lifetimeMs: number): KeysetBody {
  checkLifetime(lifetimeMs);
  const expiresAtMs = nowMs + lifetimeMs;
  return {
    ...stored.body,
    version: stored.body.version + 1,
    issuedAtMs: nowMs,
    expiresAtMs,
    announcers: withExpiry(stored.body.announcers, expiresAtMs),
    ...(stored.body.runners === undefined ? {} : { runners: withExpiry(stored.body.runners, expiresAtMs) }),
  };
}

export interface KeysetUpdateOptions {
  readonly nowMs: number;
  /** How long the new keyset lasts. Default defaultKeysetLifetimeMs. */
  readonly lifetimeMs?: number;
}

/** A new keyset (version + 1) that adds `key` as an announcer. */
export async function delegateAnnouncer(
  dataDir: string,
  project: string,
  key: Uint8Array,
  options: KeysetUpdateOptions & { readonly label?: string },
): Promise<ProjectKeysetChange> {
  const stored = await loadStoredProject(dataDir, project);
  if (stored.body.announcers.some((announcer) => Buffer.compare(announcer.key, key) === 0)) {
    throw new AnnouncerChangeError(
      `announcer ${hexOf(key)}: expected a key not yet in keyset version ${stored.body.version}, it is already there`,
    );
  }
  if (stored.body.announcers.length >= maxAnnouncerKeys)
    throw new AnnouncerChangeError(`expected at most ${maxAnnouncerKeys} announcers: revoke one first`);
  const body = nextBody(stored, options.nowMs, options.lifetimeMs ?? defaultKeysetLifetimeMs);
  const label = (options.label ?? announcerLabel(key)).slice(0, maxNameChars);
  body.announcers.push({ key, label, expiresAtMs: body.expiresAtMs });
  const bytes = await replaceKeyset(stored, body, stored.roots, options.nowMs);
  await writeFileAtomic(join(stored.folder, keysetFileName), bytes, projectFileMode);
  return changeOf(stored, body);
}

/** A new keyset (version + 1) without the announcer `key`: what it signs from then on is refused. */
export async function revokeAnnouncer(
  dataDir: string,
  project: string,
  key: Uint8Array,
  options: KeysetUpdateOptions,
): Promise<ProjectKeysetChange> {
  const stored = await loadStoredProject(dataDir, project);
  if (!stored.body.announcers.some((announcer) => Buffer.compare(announcer.key, key) === 0)) {
    throw new AnnouncerChangeError(
      `announcer ${hexOf(key)}: expected a key of keyset version ${stored.body.version} (${stored.body.announcers
        .map((announcer) => hexOf(announcer.key))
        .join(", ")}), it is not there`,
    );
  }
  const body = nextBody(stored, options.nowMs, options.lifetimeMs ?? defaultKeysetLifetimeMs);
  body.announcers = body.announcers.filter((announcer) => Buffer.compare(announcer.key, key) !== 0);
  const bytes = await replaceKeyset(stored, body, stored.roots, options.nowMs);
  await writeFileAtomic(join(stored.folder, keysetFileName), bytes, projectFileMode);
  return changeOf(stored, body);
}

/**
 * A new keyset (version + 1) that names `key` a runner: one of the project's own machines, whose results anchor a
 * quorum (jobs/master.ts). Announcers are runners already.
 */
export async function addRunner(
  dataDir: string,
  project: string,
  key: Uint8Array,
  options: KeysetUpdateOptions & { readonly label?: string },
): Promise<ProjectKeysetChange> {
  const stored = await loadStoredProject(dataDir, project);
  const runners = stored.body.runners ?? [];
  if (runners.some((runner) => Buffer.compare(runner.key, key) === 0))
    throw new AnnouncerChangeError(
      `runner ${hexOf(key)}: expected a key not yet a runner in keyset version ${stored.body.version}, it is already there`,
    );
  if (runners.length >= maxRunnerKeys)
    throw new AnnouncerChangeError(`expected at most ${maxRunnerKeys} runners: remove one first`);
  const body = nextBody(stored, options.nowMs, options.lifetimeMs ?? defaultKeysetLifetimeMs);
  const label = (options.label ?? announcerLabel(key)).slice(0, maxNameChars);
  body.runners = [...(body.runners ?? []), { key, label, expiresAtMs: body.expiresAtMs }];
  const bytes = await replaceKeyset(stored, body, stored.roots, options.nowMs);
  await writeFileAtomic(join(stored.folder, keysetFileName), bytes, projectFileMode);
  return changeOf(stored, body);
}

/** A new keyset (version + 1) that no longer names `key` a runner. */
export async function removeRunner(
  dataDir: string,
  project: string,
  key: Uint8Array,
  options: KeysetUpdateOptions,
): Promise<ProjectKeysetChange> {
  const stored = await loadStoredProject(dataDir, project);
  const runners = stored.body.runners ?? [];
  if (!runners.some((runner) => Buffer.compare(runner.key, key) === 0))
    throw new AnnouncerChangeError(
      `runner ${hexOf(key)}: expected a runner of keyset version ${stored.body.version}, it is not there`,
    );
  const body = nextBody(stored, options.nowMs, options.lifetimeMs ?? defaultKeysetLifetimeMs);
  const kept = (body.runners ?? []).filter((runner) => Buffer.compare(runner.key, key) !== 0);
  if (kept.length > 0) body.runners = kept;
  else delete body.runners;
  const bytes = await replaceKeyset(stored, body, stored.roots, options.nowMs);
  await writeFileAtomic(join(stored.folder, keysetFileName), bytes, projectFileMode);
  return changeOf(stored, body);
}

/** A new keyset (version + 1), same announcers, a new expiry: what a master does before its keyset runs out. */
export async function renewKeyset(
  dataDir: string,
  project: string,
  options: KeysetUpdateOptions,
): Promise<ProjectKeysetChange> {
  const stored = await loadStoredProject(dataDir, project);
  const body = nextBody(stored, options.nowMs, options.lifetimeMs ?? defaultKeysetLifetimeMs);
  const bytes = await replaceKeyset(stored, body, stored.roots, options.nowMs);
  await writeFileAtomic(join(stored.folder, keysetFileName), bytes, projectFileMode);
  return changeOf(stored, body);
}

/**
 * New root keys: a keyset of the next root version (version 1 again), signed
 * by the threshold of the old roots and of the new ones. The old keys move to
 * `retired/root-version-N/`.
 */
export async function rotateRoots(
  dataDir: string,
  project: string,
  options: KeysetUpdateOptions & { readonly roots?: number; readonly threshold?: number },
): Promise<ProjectKeysetChange> {
  const stored = await loadStoredProject(dataDir, project);
  const rootCount = options.roots ?? stored.body.roots.length;
  const threshold = options.threshold ?? Math.min(stored.body.threshold, rootCount);
  checkRootCount(rootCount, threshold);
  const fresh = Array.from({ length: rootCount }, () => generateIdentity());
  const body: KeysetBody = {
    ...nextBody(stored, options.nowMs, options.lifetimeMs ?? defaultKeysetLifetimeMs),
    rootVersion: stored.body.rootVersion + 1,
    version: 1,
    roots: fresh.map((root) => root.publicKey).sort((a, b) => Buffer.compare(a, b)),
    threshold,
  };
  const bytes = await replaceKeyset(stored, body, [...stored.roots, ...fresh], options.nowMs);

  // New keys first (beside the old ones), then the keyset, then the swap: a crash leaves both sets of keys on disk.
  const staging = join(stored.folder, rotatingDirName);
  await mkdir(staging, { recursive: true, mode: projectDirMode });
  for (const [index, root] of fresh.entries())
    await saveIdentity(join(staging, `root-${index + 1}.key`), root, { replace: true });
  const rotations = join(stored.folder, rotationsDirName);
  await mkdir(rotations, { recursive: true, mode: projectDirMode });
  await writeFileAtomic(join(rotations, `root-version-${body.rootVersion}.cbor`), bytes, projectFileMode);
  await writeFileAtomic(join(stored.folder, keysetFileName), bytes, projectFileMode);
  const retired = join(stored.folder, retiredDirName, `root-version-${stored.body.rootVersion}`);
  await mkdir(retired, { recursive: true, mode: projectDirMode });
  for (const name of (await readdir(stored.folder)).filter((entry) => /^root-\d+\.key$/.test(entry)))
    await rename(join(stored.folder, name), join(retired, name));
  for (const [index] of fresh.entries())
    await rename(join(staging, `root-${index + 1}.key`), join(stored.folder, `root-${index + 1}.key`));
  await rmdir(staging);
  return changeOf(stored, body);
}

function specPath(dataDir: string, uuid: string): string {
  return join(dataDir, specsDirName, `${uuid}.cbor`);
}

/** Signs a capability spec with the node key and stores it under `<dataDir>/specs/<uuid>.cbor` for the runtime to publish. */
export async function publishSpec(
  dataDir: string,
  spec: CapabilitySpec,
  signer: Identity,
  nowMs: number,
): Promise<string> {
  const path = specPath(dataDir, spec.uuid);
  const previous = await readOptional(path);
  if (previous !== null) {
    try {
      const stored = openEnvelope(capabilitySpecDomain, previous, nowMs).body;
      if (stored.version >= spec.version) throw new SpecVersionError(spec.uuid, stored.version, spec.version);
    } catch (error) {
      if (error instanceof SpecVersionError) throw error;
      // an expired or unreadable old spec is simply replaced
    }
  }
  const bytes = sealEnvelope(capabilitySpecDomain, spec, signer);
  await mkdir(join(dataDir, specsDirName), { recursive: true, mode: projectDirMode });
  await writeFileAtomic(path, bytes, projectFileMode);
  return path;
}

/** The signed capability specs this node publishes (envelopes, as stored). */
export async function loadPublishedSpecs(dataDir: string): Promise<Uint8Array[]> {
  const folder = join(dataDir, specsDirName);
  const names = (await readdir(folder).catch(() => [] as string[]))
    .filter((name) => /^[0-9a-f-]{36}\.cbor$/.test(name))
    .sort()
    .slice(0, maxPublishedSpecs);
  const specs: Uint8Array[] = [];
  for (const name of names) {
    const bytes = await readOptional(join(folder, name));
    if (bytes !== null && bytes.length <= maxStoredKeysetFileBytes) specs.push(bytes);
  }
  return specs;
}
