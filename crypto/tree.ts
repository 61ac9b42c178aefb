/**
 * Content-addressed trees: blobs named by CIDv1 and the tree
 * manifest that names a whole folder with one CID.
 *
 * A blob is either a chunk of a file (raw codec, 0x55) or a manifest
 * (dag-cbor codec, 0x71); both are hashed with sha2-256 and written as base32
 * CIDv1 text ("bafk..." and "bafy..."). A file larger than treeChunkBytes is
 * cut into chunks of exactly treeChunkBytes, the last one shorter; an empty
 * file has no chunk at all.
 *
 * The manifest is the canonical CBOR (crypto/encoding.ts) of
 *   { version: 1, chunkBytes, files: [{ path, sizeBytes, executable, chunks }], dirs: [path] }
 * with files and dirs each sorted by the UTF-8 bytes of their path, and dirs
 * listing every folder of the tree (empty ones too, and every parent of every
 * entry). One tree therefore has exactly one manifest and one root CID, which
 * is what lets two workers agree on outputs and a worker reuse inputs it holds.
 *
 * Pure (DESIGN.md Rule 1): hashing only, no I/O, no clock, no randomness.
 * Every refusal is a CimeshError naming the field and what was expected.
 */
import { createHash } from "node:crypto";
import { CID } from "multiformats/cid";
import { create as createDigest } from "multiformats/hashes/digest";
import { bytesEqual, decodeCanonical, encodeCanonical } from "./encoding.ts";
import { compareBytes } from "./envelope.ts";
import { BlobMismatchError, CimeshError, MalformedCidError, TreeManifestError, UnsupportedCidError } from "./errors.ts";

/** Size of every chunk of a file but its last; files up to this size are one chunk. */
export const treeChunkBytes = 1024 * 1024;
/** Largest encoded manifest accepted. */
export const maxManifestBytes = 16 * 1024 * 1024;
/** Largest blob of any kind: a chunk or a manifest. A fetch protocol may refuse anything larger. */
export const maxBlobBytes = Math.max(treeChunkBytes, maxManifestBytes);
/** Files and folders of one tree, counted together. */
export const maxTreeEntries = 100_000;
/** Characters (UTF-16 code units) of one relative path. */
export const maxTreePathChars = 4096;
/** UTF-8 bytes of one path segment (a file or folder name): NAME_MAX of common file systems. */
export const maxTreeNameBytes = 255;
/** Folder levels of one path: "a/b/c" is 3 levels deep. */
export const maxTreeDepthLevels = 256;
/** Bytes of all files of one tree together. */
export const maxTreeBytes = 16 * 1024 * 1024 * 1024;
/** Chunks of one file: a file may be as large as the whole tree. */
export const maxChunksPerFile = Math.ceil(maxTreeBytes / treeChunkBytes);
/** Characters of a CID text accepted for parsing (a sha2-256 CIDv1 in base32 is 59). */
export const maxCidChars = 128;
/** The manifest format this code writes and reads. */
export const treeManifestVersion = 1;

/** Multicodec of a chunk blob. */
export const rawCodecCode = 0x55;
/** Multicodec of a manifest blob. */
export const dagCborCodecCode = 0x71;
/** Multihash code of sha2-256. */
export const sha256MultihashCode = 0x12;
/** Bytes of a sha2-256 digest. */
export const sha256DigestBytes = 32;

export interface TreeFile {
  /** Relative POSIX path, '/'-separated, normalised (no '.', '..', empty segment, leading '/'). */
  path: string;
  sizeBytes: number;
  /** Any x bit set on the packed file; unpacked as mode 0o755, else 0o644. */
  executable: boolean;
  /** Raw-codec CIDs of the file's chunks in order: ceil(sizeBytes / chunkBytes) of them, none for an empty file. */
  chunks: string[];
}

export interface TreeManifest {
  version: 1;
  chunkBytes: number;
  files: TreeFile[];
  /** Every folder of the tree, empty ones included, each parent listed too. */
  dirs: string[];
}

export type TreeCidKind = "blob" | "manifest";

const codecNames: ReadonlyMap<number, string> = new Map([
  [0x55, "raw"],
  [0x70, "dag-pb"],
  [0x71, "dag-cbor"],
  [0x72, "libp2p-key"],
  [0x78, "git-raw"],
  [0x0129, "dag-json"],
  [0x0200, "json"],
]);
const hashNames: ReadonlyMap<number, string> = new Map([
  [0x00, "identity"],
  [0x11, "sha1"],
  [0x12, "sha2-256"],
  [0x13, "sha2-512"],
  [0x1e, "blake3"],
  [0xb220, "blake2b-256"],
]);

const hex = (code: number) => `0x${code.toString(16).padStart(2, "0")}`;
const codecName = (code: number) => `${codecNames.get(code) ?? "unknown codec"} (${hex(code)})`;
const hashName = (code: number) => `${hashNames.get(code) ?? "unknown hash"} (${hex(code)})`;

function quote(text: string, maxChars = 80): string {
  const shown = text.length > maxChars ? `${text.slice(0, maxChars)}…` : text;
  return JSON.stringify(shown);
}

/**
 * A blob's bytes: one array, or the pieces they arrived in, in order (a blob read off the network is hashed and
 * written piece by piece, never joined into one copy).
 */
export type BlobBytes = Uint8Array | readonly Uint8Array[];

/** Whether `bytes` is a BlobBytes: a Uint8Array, or an array of them. */
export function isBlobBytes(bytes: unknown): bytes is BlobBytes {
  return bytes instanceof Uint8Array || (Array.isArray(bytes) && bytes.every((piece) => piece instanceof Uint8Array));
}

/** The length of a BlobBytes, in bytes. */
export function blobLength(bytes: BlobBytes): number {
  if (bytes instanceof Uint8Array) return bytes.length;
  let length = 0;
  for (const piece of bytes) length += piece.length;
  return length;
}

/** A BlobBytes as one array: the array itself, a lone piece, or the pieces copied into one. */
export function joinedBlob(bytes: BlobBytes): Uint8Array {
  if (bytes instanceof Uint8Array) return bytes;
  if (bytes.length === 1) return bytes[0] as Uint8Array;
  const joined = new Uint8Array(blobLength(bytes));
  let offset = 0;
  for (const piece of bytes) {
    joined.set(piece, offset);
    offset += piece.length;
  }
  return joined;
}

function sha256Of(bytes: BlobBytes): Uint8Array {
  const hash = createHash("sha256");
  if (bytes instanceof Uint8Array) hash.update(bytes);
  else for (const piece of bytes) hash.update(piece);
  return new Uint8Array(hash.digest());
}

function cidOf(code: number, bytes: BlobBytes): string {
  if (!isBlobBytes(bytes)) throw new MalformedCidError("blob", "something that is not bytes");
  return CID.createV1(code, createDigest(sha256MultihashCode, sha256Of(bytes))).toString();
}

/** The CID of a chunk (or any raw blob): CIDv1, raw codec, sha2-256, base32. */
export function cidOfBlob(bytes: Uint8Array): string {
  return cidOf(rawCodecCode, bytes);
}

/** The CID of an encoded manifest: CIDv1, dag-cbor codec, sha2-256, base32. */
export function cidOfManifest(bytes: Uint8Array): string {
  return cidOf(dagCborCodecCode, bytes);
}

interface ParsedCid {
  readonly cid: string;
  readonly kind: TreeCidKind;
  readonly digest: Uint8Array;
}

function parseCid(text: unknown, what: string): ParsedCid {
  if (typeof text !== "string") throw new MalformedCidError(what, `a ${text === null ? "null" : typeof text}`);
  if (text.length === 0 || text.length > maxCidChars) {
    throw new MalformedCidError(what, `${text.length} characters (at most ${maxCidChars})`);
  }
  let cid: CID;
  try {
    cid = CID.parse(text);
  } catch (error) {
    throw new MalformedCidError(what, `${quote(text)} (${error instanceof Error ? error.message : String(error)})`);
  }
  if (cid.version !== 1) throw new UnsupportedCidError(what, "a CIDv1", `CIDv${cid.version} ${quote(text)}`);
  if (cid.multihash.code !== sha256MultihashCode) {
    throw new UnsupportedCidError(
      what,
      `hash ${hashName(sha256MultihashCode)}`,
      `${hashName(cid.multihash.code)} in ${quote(text)}`,
    );
  }
  if (cid.multihash.digest.length !== sha256DigestBytes) {
    throw new UnsupportedCidError(
      what,
      `a ${sha256DigestBytes}-byte sha2-256 digest`,
      `${cid.multihash.digest.length} bytes in ${quote(text)}`,
    );
  }
  let kind: TreeCidKind;
  if (cid.code === rawCodecCode) kind = "blob";
  else if (cid.code === dagCborCodecCode) kind = "manifest";
  else {
    throw new UnsupportedCidError(
      what,
      `codec ${codecName(rawCodecCode)} or ${codecName(dagCborCodecCode)}`,
      `${codecName(cid.code)} in ${quote(text)}`,
    );
  }
  return { cid: cid.toString(), kind, digest: cid.multihash.digest };
}

/**
 * Checks that `text` names a blob this store takes: a CIDv1 with sha2-256 and
 * codec raw (a chunk) or dag-cbor (a manifest). Returns its canonical base32
 * text (a base58btc CIDv1 is accepted and rewritten) and its kind. Throws
 * MalformedCidError for text that is no CID, UnsupportedCidError for any other
 * version, hash or codec.
 */
export function parseTreeCid(text: string, what = "cid"): { cid: string; kind: TreeCidKind } {
  const { cid, kind } = parseCid(text, what);
  return { cid, kind };
}

/** Throws BlobMismatchError unless `bytes` hash to `cid` (of either kind); parse errors as parseTreeCid. */
export function verifyBlob(cid: string, bytes: BlobBytes): void {
  const parsed = parseCid(cid, "cid");
  if (!isBlobBytes(bytes)) throw new BlobMismatchError(parsed.cid, "something that is not bytes");
  const digest = sha256Of(bytes);
  if (!bytesEqual(digest, parsed.digest)) {
    throw new BlobMismatchError(
      parsed.cid,
      parsed.kind === "blob" ? cidOf(rawCodecCode, bytes) : cidOf(dagCborCodecCode, bytes),
    );
  }
}

/** Chunks a file of sizeBytes has when cut into chunkBytes pieces (none for an empty file). */
export function chunkCountOf(sizeBytes: number, chunkBytes = treeChunkBytes): number {
  return Math.ceil(sizeBytes / chunkBytes);
}

/** Size of chunk `index` of a file of sizeBytes: chunkBytes but for the last one. */
export function chunkSizeOf(sizeBytes: number, index: number, chunkBytes = treeChunkBytes): number {
  return Math.max(0, Math.min(chunkBytes, sizeBytes - index * chunkBytes));
}

/** The distinct chunk CIDs a manifest needs, in the order they first appear. */
export function manifestChunks(manifest: TreeManifest): string[] {
  const seen = new Set<string>();
  for (const file of manifest.files) for (const chunk of file.chunks) seen.add(chunk);
  return [...seen];
}

/** Bytes of all files of a manifest (a chunk shared by two files counts twice). */
export function manifestBytes(manifest: TreeManifest): number {
  let total = 0;
  for (const file of manifest.files) total += file.sizeBytes;
  return total;
}

const utf8 = new TextEncoder();

/** UTF-8 bytes of a path: the order entries are sorted in. */
export function pathKey(path: string): Uint8Array {
  return utf8.encode(path);
}

/** Compares two paths by their UTF-8 bytes, as manifests are sorted. */
export function comparePaths(a: string, b: string): number {
  return compareBytes(pathKey(a), pathKey(b));
}

/**
 * Why `path` is not a valid tree path, or null when it is: relative, POSIX,
 * normalised (no leading '/', no '.', '..' or empty segment), no NUL, well-formed
 * Unicode, within the length, name and depth limits. A backslash is an ordinary
 * character of a POSIX file name and cannot escape anything here, so it is allowed.
 */
export function treePathProblem(path: unknown): string | null {
  if (typeof path !== "string") return `a path (text), got ${path === null ? "null" : typeof path}`;
  if (path.length === 0) return "a non-empty relative path, got an empty one";
  if (path.length > maxTreePathChars) return `a path of at most ${maxTreePathChars} characters, got ${path.length}`;
  if (!path.isWellFormed()) return `a path in well-formed Unicode, got ${quote(path)} with a lone surrogate`;
  if (path.includes("\0")) return `a path without NUL characters, got ${quote(path.replaceAll("\0", "\\0"))}`;
  if (path.charCodeAt(0) === 0xfeff)
    return `a path not starting with U+FEFF (CBOR readers drop it), got ${quote(path)}`;
  if (path.startsWith("/")) return `a relative path, got the absolute path ${path.slice(0, 200)}`;
  const segments = path.split("/");
  if (segments.length > maxTreeDepthLevels) {
    return `a path at most ${maxTreeDepthLevels} levels deep, got ${segments.length}`;
  }
  for (const segment of segments) {
    if (segment === "..") return `a relative path without '..', got ${path.slice(0, 200)}`;
    if (segment === ".") return `a normalised path without '.' segments, got ${path.slice(0, 200)}`;
    if (segment === "") return `a normalised path without empty segments ('//' or a trailing '/'), got ${quote(path)}`;
    const nameBytes = utf8.encode(segment).length;
    if (nameBytes > maxTreeNameBytes) {
      return `names of at most ${maxTreeNameBytes} UTF-8 bytes, got one of ${nameBytes} in ${quote(path)}`;
    }
  }
  return null;
}

function parentOf(path: string): string | null {
  const slash = path.lastIndexOf("/");
  return slash < 0 ? null : path.slice(0, slash);
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value) || value instanceof Uint8Array) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return `an array of ${value.length}`;
  if (value instanceof Uint8Array) return `${value.length} bytes`;
  if (typeof value === "string") return quote(value);
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  return typeof value;
}

function fail(field: string, expected: string, got: unknown): never {
  throw new TreeManifestError(field, `expected ${expected}, got ${describe(got)}`);
}

function checkKeys(field: string, value: Record<string, unknown>, keys: readonly string[]): void {
  for (const key of Object.keys(value)) {
    if (!keys.includes(key)) {
      throw new TreeManifestError(field, `expected only the keys ${keys.join(", ")}, got also ${quote(key)}`);
    }
  }
  for (const key of keys) {
    if (!(key in value)) throw new TreeManifestError(field, `expected a key ${quote(key)}, got none`);
  }
}

const manifestKeys = ["version", "chunkBytes", "files", "dirs"] as const;
const fileKeys = ["path", "sizeBytes", "executable", "chunks"] as const;

function checkPath(field: string, path: unknown): string {
  const problem = treePathProblem(path);
  if (problem !== null) throw new TreeManifestError(field, `expected ${problem}`);
  return path as string;
}

/** Checks a decoded value against every manifest rule and returns a fresh manifest of it. */
function checkManifest(value: unknown): TreeManifest {
  if (!isPlainObject(value)) fail("manifest", "a map", value);
  checkKeys("manifest", value, manifestKeys);
  if (value.version !== treeManifestVersion) fail("manifest.version", String(treeManifestVersion), value.version);
  if (value.chunkBytes !== treeChunkBytes) fail("manifest.chunkBytes", String(treeChunkBytes), value.chunkBytes);
  const chunkBytes = treeChunkBytes;
  const rawFiles = value.files;
  const rawDirs = value.dirs;
  if (!Array.isArray(rawFiles)) fail("files", "an array", rawFiles);
  if (!Array.isArray(rawDirs)) fail("dirs", "an array", rawDirs);
  if (rawFiles.length + rawDirs.length > maxTreeEntries) {
    throw new TreeManifestError(
      "manifest",
      `expected at most ${maxTreeEntries} files and folders, got ${rawFiles.length} files and ${rawDirs.length} folders`,
    );
  }

  const dirs: string[] = [];
  const dirSet = new Set<string>();
  let previous: Uint8Array | null = null;
  for (let i = 0; i < rawDirs.length; i++) {
    const field = `dirs[${i}]`;
    const path = checkPath(field, rawDirs[i]);
    const key = pathKey(path);
    if (previous !== null && compareBytes(previous, key) >= 0) {
      throw new TreeManifestError(field, `expected paths unique and sorted by UTF-8 bytes, got ${quote(path)} here`);
    }
    previous = key;
    dirs.push(path);
    dirSet.add(path);
  }
  for (let i = 0; i < dirs.length; i++) {
    const parent = parentOf(dirs[i] as string);
    if (parent !== null && !dirSet.has(parent)) {
      throw new TreeManifestError(`dirs[${i}]`, `expected its parent folder ${quote(parent)} listed in dirs, got none`);
    }
  }

  const files: TreeFile[] = [];
  let totalBytes = 0;
  previous = null;
  for (let i = 0; i < rawFiles.length; i++) {
    const field = `files[${i}]`;
    const entry = rawFiles[i];
    if (!isPlainObject(entry)) fail(field, "a map", entry);
    checkKeys(field, entry, fileKeys);
    const path = checkPath(`${field}.path`, entry.path);
    const key = pathKey(path);
    if (previous !== null && compareBytes(previous, key) >= 0) {
      throw new TreeManifestError(
        `${field}.path`,
        `expected paths unique and sorted by UTF-8 bytes, got ${quote(path)} here`,
      );
    }
    previous = key;
    if (dirSet.has(path)) {
      throw new TreeManifestError(`${field}.path`, `expected a path that is not also a folder, got ${quote(path)}`);
    }
    const parent = parentOf(path);
    if (parent !== null && !dirSet.has(parent)) {
      throw new TreeManifestError(
        `${field}.path`,
        `expected its parent folder ${quote(parent)} listed in dirs, got none (a file inside a file?)`,
      );
    }
    const sizeBytes = entry.sizeBytes;
    if (
      typeof sizeBytes !== "number" ||
      !Number.isSafeInteger(sizeBytes) ||
      sizeBytes < 0 ||
      sizeBytes > maxTreeBytes
    ) {
      fail(`${field}.sizeBytes`, `an integer in 0..${maxTreeBytes}`, sizeBytes);
    }
    totalBytes += sizeBytes;
    if (totalBytes > maxTreeBytes) {
      throw new TreeManifestError(
        `${field}.sizeBytes`,
        `expected all files together at most ${maxTreeBytes} bytes, got ${totalBytes} by this file`,
      );
    }
    if (typeof entry.executable !== "boolean") fail(`${field}.executable`, "true or false", entry.executable);
    const rawChunks = entry.chunks;
    if (!Array.isArray(rawChunks)) fail(`${field}.chunks`, "an array", rawChunks);
    const expectedChunks = chunkCountOf(sizeBytes, chunkBytes);
    if (rawChunks.length !== expectedChunks) {
      throw new TreeManifestError(
        `${field}.chunks`,
        `expected ${expectedChunks} chunks for ${sizeBytes} bytes in chunks of ${chunkBytes}, got ${rawChunks.length}`,
      );
    }
    const chunks: string[] = [];
    for (let c = 0; c < rawChunks.length; c++) {
      const chunkField = `${field}.chunks[${c}]`;
      const text = rawChunks[c];
      let parsed: ParsedCid;
      try {
        parsed = parseCid(text, chunkField);
      } catch (error) {
        if (error instanceof CimeshError) throw new TreeManifestError(chunkField, error.message);
        throw error;
      }
      if (parsed.kind !== "blob") {
        throw new TreeManifestError(
          chunkField,
          `expected a CID of codec ${codecName(rawCodecCode)}, got ${codecName(dagCborCodecCode)} in ${quote(text as string)}`,
        );
      }
      if (parsed.cid !== text) {
        throw new TreeManifestError(chunkField, `expected the base32 form ${parsed.cid}, got ${quote(text as string)}`);
      }
      chunks.push(parsed.cid);
    }
    files.push({ path, sizeBytes, executable: entry.executable, chunks });
  }
  return { version: 1, chunkBytes, files, dirs };
}

/**
 * Decodes and checks a manifest: size, canonical CBOR, keys, version, chunk
 * size, every path (relative, normalised, within the limits), paths unique
 * and sorted, every parent folder listed, no entry both file and folder (so
 * no file inside a file), chunk count matching sizeBytes, every chunk a raw
 * sha2-256 CIDv1 in base32, totals within the limits. Throws only
 * TreeManifestError, naming the field.
 */
export function decodeManifest(bytes: Uint8Array): TreeManifest {
  if (!(bytes instanceof Uint8Array)) fail("manifest", "bytes", bytes);
  if (bytes.length > maxManifestBytes) {
    throw new TreeManifestError("manifest", `expected at most ${maxManifestBytes} bytes, got ${bytes.length}`);
  }
  let value: unknown;
  try {
    value = decodeCanonical(bytes, "manifest", maxManifestBytes);
  } catch (error) {
    if (error instanceof TreeManifestError) throw error;
    if (error instanceof CimeshError) throw new TreeManifestError("manifest", error.message);
    throw new TreeManifestError("manifest", `expected canonical CBOR, ${String(error)}`);
  }
  return checkManifest(value);
}

/**
 * Encodes a manifest as canonical CBOR, files and dirs sorted by the UTF-8
 * bytes of their paths; other properties of the objects are left out. The
 * result is checked as decodeManifest checks it, so nothing is encoded that a
 * peer would refuse: throws TreeManifestError naming the field.
 */
export function encodeManifest(manifest: TreeManifest): Uint8Array {
  if (typeof manifest !== "object" || manifest === null) fail("manifest", "a manifest object", manifest);
  const files = Array.isArray(manifest.files) ? manifest.files : fail("files", "an array", manifest.files);
  const dirs = Array.isArray(manifest.dirs) ? manifest.dirs : fail("dirs", "an array", manifest.dirs);
  if (files.length + dirs.length > maxTreeEntries) {
    throw new TreeManifestError(
      "manifest",
      `expected at most ${maxTreeEntries} files and folders, got ${files.length} files and ${dirs.length} folders`,
    );
  }
  const sortedByPath = <T>(entries: readonly T[], pathOf: (entry: T) => unknown): T[] =>
    entries
      .map((entry) => {
        const path = pathOf(entry);
        return { entry, key: typeof path === "string" ? pathKey(path) : new Uint8Array(0) };
      })
      .sort((a, b) => compareBytes(a.key, b.key))
      .map(({ entry }) => entry);
  const picked = files.map((file: unknown) => {
    if (typeof file !== "object" || file === null) return file;
    const { path, sizeBytes, executable, chunks } = file as TreeFile;
    return { path, sizeBytes, executable, chunks: Array.isArray(chunks) ? [...chunks] : chunks };
  });
  const value = {
    version: manifest.version,
    chunkBytes: manifest.chunkBytes,
    files: sortedByPath(picked, (file) =>
      typeof file === "object" && file !== null ? (file as { path?: unknown }).path : undefined,
    ),
    dirs: sortedByPath(dirs, (dir) => dir),
  };
  // Check before encoding, so an invalid value gets the field-naming error rather than an encoder's.
  checkManifest(value);
  let bytes: Uint8Array;
  try {
    bytes = encodeCanonical(value, "manifest");
  } catch (error) {
    if (error instanceof CimeshError) throw new TreeManifestError("manifest", error.message);
    throw error;
  }
  if (bytes.length > maxManifestBytes) {
    throw new TreeManifestError("manifest", `expected at most ${maxManifestBytes} bytes, got ${bytes.length}`);
  }
  return bytes;
}
