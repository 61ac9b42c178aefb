/**
 * The digest of a run's declared outputs: what replicas compare to agree on
 * what a job produced.
 *
 * Interim format, kept for an executor given no blob store (with one, the
 * digest is the root CID of the outputs packed as a tree, node/store's
 * packOutputs, which resolves links with resolveInside below):
 * every file of the declared outputs (a folder stands for the files under it)
 * gives one entry [path, size, executable, sha-256 hex], a declared output
 * that does not exist gives [path, null, null, null], entries sorted by the
 * UTF-8 bytes of their path; the digest is the CIDv1 (dag-cbor codec, sha-256)
 * of the canonical CBOR encoding of that array. Paths are relative to the work
 * folder. Symlinks are resolved here, one component at a time, as the job saw
 * them (an absolute target is a path in the sandbox, where the work folder is
 * /work), and followed only while they stay inside the work folder: one that
 * leads out of it is refused, since hashing it would read the host's files on
 * the job's behalf. A link that leads nowhere inside is a missing output.
 */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { lstat, readdir, readlink, realpath } from "node:fs/promises";
import { join, posix } from "node:path";
import { pipeline } from "node:stream/promises";
import { CID } from "multiformats/cid";
import * as raw from "multiformats/codecs/raw";
import { create as createDigest } from "multiformats/hashes/digest";
import { sha256 } from "multiformats/hashes/sha2";
import { CimeshError, encodeCanonical } from "../../crypto/index.ts";
import { sandboxWorkPath } from "./sandbox.ts";

/** The dag-cbor multicodec: the manifest is deterministic CBOR of arrays, strings, integers, booleans and nulls. */
export const dagCborCode = 0x71;
/** Files (entries) one run's outputs may hold. */
export const maxOutputFilesPerRun = 10_000;
/** Folder depth below a declared output; also ends symlink cycles inside the work folder. */
export const maxOutputDepth = 64;
/** Symlinks followed to resolve one path, as the kernel's ELOOP bound. */
export const maxSymlinkHops = 40;

export type OutputEntry = readonly [
  path: string,
  sizeBytes: number | null,
  executable: boolean | null,
  sha256: string | null,
];

/** A declared output that cannot be hashed safely: the run fails with this as its reason. */
export class OutputRefusedError extends CimeshError {
  readonly path: string;
  constructor(path: string, expected: string) {
    super("ERR_OUTPUT_REFUSED", `output ${JSON.stringify(path)}: expected ${expected}`);
    this.path = path;
  }
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

function isMissing(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return code === "ENOENT" || code === "ENOTDIR";
}

async function hashFile(path: string): Promise<string> {
  const hash = createHash("sha256");
  await pipeline(createReadStream(path), hash);
  return hash.digest("hex");
}

/** How resolveInside reads absolute link targets and reports a link that leads out. */
export interface ResolveOptions {
  /**
   * The absolute paths at which `root` appears to whoever made the links: an
   * absolute target under one of them is a path inside root. Default: the
   * sandbox's work folder (/work), as a job saw its folder.
   */
  readonly absoluteRoots?: readonly string[];
  /** What root is called in messages. Default: "the work folder". */
  readonly folderName?: string;
  /** The error for a link out of root (or too many links). Default: OutputRefusedError. */
  readonly refuse?: (rel: string, expected: string) => Error;
}

/**
 * The host path of `rel` with every symlink in it resolved inside `root`, or
 * null when it does not exist. Throws OutputRefusedError (or options.refuse's
 * error) for a link out of it.
 */
export async function resolveInside(root: string, rel: string, options: ResolveOptions = {}): Promise<string | null> {
  const refuse = options.refuse ?? ((path: string, expected: string) => new OutputRefusedError(path, expected));
  const absoluteRoots = options.absoluteRoots ?? [sandboxWorkPath];
  const folderName = options.folderName ?? "the work folder";
  const leadsOut = () => refuse(rel, `a path inside ${folderName}, got a symlink that leads out of it`);
  const partsOf = (path: string) => path.split("/").filter((part) => part !== "" && part !== ".");
  let pending = partsOf(rel);
  let resolved: string[] = [];
  let hops = 0;
  while (pending.length > 0) {
    const part = pending.shift() as string;
    if (part === "..") {
      if (resolved.length === 0) throw leadsOut();
      resolved.pop();
      continue;
    }
    const candidate = join(root, ...resolved, part);
    let info: Awaited<ReturnType<typeof lstat>>;
    try {
      info = await lstat(candidate);
    } catch (error) {
      if (isMissing(error)) return null;
      throw error;
    }
    if (info.isSymbolicLink()) {
      hops += 1;
      if (hops > maxSymlinkHops) throw refuse(rel, `at most ${maxSymlinkHops} symlinks to follow`);
      const target = await readlink(candidate);
      if (target.startsWith("/")) {
        const base = absoluteRoots.find((prefix) => target === prefix || target.startsWith(`${prefix}/`));
        if (base === undefined) throw leadsOut();
        resolved = [];
        pending = [...partsOf(target.slice(base.length)), ...pending];
      } else {
        pending = [...partsOf(target), ...pending];
      }
      continue;
    }
    if (pending.length > 0 && !info.isDirectory()) return null;
    resolved.push(part);
  }
  return join(root, ...resolved);
}

class Collector {
  readonly entries = new Map<string, OutputEntry>();
  readonly root: string;
  constructor(root: string) {
    this.root = root;
  }

  async add(rel: string, depth: number): Promise<void> {
    if (this.entries.has(rel)) return;
    const real = await resolveInside(this.root, rel);
    if (real === null) {
      this.put(rel, [rel, null, null, null]);
      return;
    }
    const info = await lstat(real);
    if (info.isFile()) {
      this.put(rel, [rel, info.size, (info.mode & 0o111) !== 0, await hashFile(real)]);
    } else if (info.isDirectory()) {
      if (depth >= maxOutputDepth) {
        throw new OutputRefusedError(rel, `at most ${maxOutputDepth} folders deep (a symlink cycle?)`);
      }
      const names = await readdir(real, { encoding: "buffer" });
      for (const raw of names) {
        let name: string;
        try {
          name = utf8.decode(raw);
        } catch {
          throw new OutputRefusedError(rel, "file names in UTF-8");
        }
        await this.add(posix.join(rel, name), depth + 1);
      }
    } else {
      throw new OutputRefusedError(rel, "a regular file or a folder");
    }
  }

  private put(rel: string, entry: OutputEntry): void {
    if (this.entries.size >= maxOutputFilesPerRun) {
      throw new OutputRefusedError(rel, `at most ${maxOutputFilesPerRun} files in all outputs`);
    }
    this.entries.set(rel, entry);
  }
}

/** The manifest of the declared outputs, sorted; see the module comment for its form. */
export async function outputsManifest(workDir: string, outputs: readonly string[]): Promise<OutputEntry[]> {
  const collector = new Collector(await realpath(workDir));
  for (const output of outputs) {
    const rel = posix.normalize(output);
    if (rel === ".." || rel.startsWith("../") || posix.isAbsolute(rel)) {
      throw new OutputRefusedError(output, "a relative path inside the work folder");
    }
    await collector.add(rel === "." ? "." : rel, 0);
  }
  const sorted = [...collector.entries.values()].map((entry) => ({ entry, key: Buffer.from(entry[0], "utf8") }));
  sorted.sort((a, b) => Buffer.compare(a.key, b.key));
  return sorted.map(({ entry }) => entry);
}

/** The outputs digest of a run, or null when the job declares no output. */
export async function outputsDigest(workDir: string, outputs: readonly string[]): Promise<string | null> {
  if (outputs.length === 0) return null;
  const manifest = await outputsManifest(workDir, outputs);
  const bytes = encodeCanonical(manifest, "outputs manifest");
  return CID.createV1(dagCborCode, await sha256.digest(bytes)).toString();
}

/** A raw-codec sha-256 CIDv1 for a hash computed elsewhere (streamed), as sha256.digest would give for the bytes. */
export function rawSha256Cid(hash: Uint8Array): string {
  return CID.createV1(raw.code, createDigest(sha256.code, hash)).toString();
}
