/**
 * The content-addressed blob store and trees on disk.
 *
 * A blob store is a folder of files named by their CID:
 *   <root>/blobs/<two characters of the cid>/<cid>   one blob (a chunk or a manifest)
 *   <root>/tmp/                                      blobs being written
 * The two characters are the next-to-last of the cid (as IPFS's flatfs), so
 * no folder grows past a few hundred files per thousand blobs. A blob is
 * written to tmp and renamed into place, so a reader never sees half a blob
 * and several processes (a node and the CLI) can share one store: the folder
 * is the truth about which blobs are present. A blob is verified against its
 * CID whenever it is read; one that does not match (a torn write after a
 * crash, a disk error, a tampered file) is deleted and reads as absent. No
 * fsync: a crash costs at most a blob that is fetched again.
 *
 * With a quota, the store evicts the least recently used blobs that are not
 * pinned. The use time is the file's mtime, set on put and get, so the order
 * survives restarts and is shared by the processes using the store; each
 * process also keeps it in memory with the sizes, so usedBytes() is cheap.
 * So that a put in one process counts what other processes put, every put
 * appends "<cid> <size>" to <root>/added.log and reads what others appended
 * since it last looked (a few bytes, not a rescan of the folder); an
 * eviction rescans the folder itself before it chooses. Pins live in memory
 * and protect blobs only from this process's evictions.
 *
 * Trees: packTree and packOutputs cut a folder's files into chunks of
 * treeChunkBytes, put every chunk and the manifest (crypto/tree.ts), and
 * return the manifest's CID; unpackTree writes a tree into a folder, every
 * chunk verified, and never outside that folder, and, given a limit, refuses
 * a tree that would unpack past it before writing a byte (a manifest may name
 * one chunk many times: its unpacked size, not its fetched size, is what
 * lands on disk).
 */
import { randomBytes } from "node:crypto";
import {
  appendFile,
  type FileHandle,
  lstat,
  mkdir,
  open,
  readdir,
  readFile,
  realpath,
  rename,
  rm,
  stat,
  truncate,
  utimes,
  writeFile,
} from "node:fs/promises";
import { dirname, isAbsolute, join, posix, relative, resolve } from "node:path";
import ignore, { type Ignore } from "ignore";
import {
  type BlobBytes,
  BlobMismatchError,
  blobLength,
  CimeshError,
  chunkCountOf,
  chunkSizeOf,
  cidOfBlob,
  cidOfManifest,
  decodeManifest,
  encodeManifest,
  isBlobBytes,
  joinedBlob,
  manifestBytes,
  manifestChunks,
  maxTreeBytes,
  maxTreeEntries,
  OversizeError,
  parseTreeCid,
  type TreeFile,
  type TreeManifest,
  treeChunkBytes,
  treePathProblem,
  UnsupportedCidError,
  verifyBlob,
} from "../../crypto/index.ts";
import { maxOutputDepth, maxOutputFilesPerRun, OutputRefusedError, resolveInside } from "../sandbox/index.ts";

/** Folder of the blobs inside a store's root. */
export const blobsDirName = "blobs";
/** Folder of blobs being written inside a store's root. */
export const blobTempDirName = "tmp";
/** A temporary file older than this when a store opens was left by a crash and is removed. */
export const staleBlobTempFileAgeMs = 60 * 60 * 1000;
/**
 * An eviction frees this share of the quota beyond what is needed, so that a
 * full store evicts (and rescans its folder) once per so many bytes put
 * rather than on every put.
 */
export const evictionHeadroomPercent = 5;
/** File, in a store's root, to which every put appends the blob it added: how stores sharing a folder count each other's puts. */
export const blobJournalFileName = "added.log";
/** A journal larger than this is emptied, by a store that has read it all or has just opened (and rescanned the folder). */
export const maxBlobJournalBytes = 4 * 1024 * 1024;
/** Missing CIDs a MissingBlobError carries (its count says how many there are in all). */
export const maxListedMissingBlobs = 100;
/** Mode of an unpacked executable file. */
export const executableFileMode = 0o755;
/** Mode of an unpacked other file. */
export const plainFileMode = 0o644;
/**
 * What unpacking one file or folder costs on disk beyond its bytes: the block
 * a filesystem spends on each (ext4 and most others: 4 KiB), so a tree of many
 * empty files or folders counts too.
 */
export const unpackedEntryBytes = 4096;

/** Putting a blob would need more room than the quota leaves once every unpinned blob is evicted. */
export class BlobQuotaError extends CimeshError {
  constructor(quotaBytes: number, pinnedBytes: number, sizeBytes: number, cid: string) {
    super(
      "ERR_BLOB_QUOTA",
      `blob store: expected room for blob ${cid} (${sizeBytes} bytes) within the quota of ${quotaBytes} bytes, ` +
        `but pinned blobs hold ${pinnedBytes} bytes and are never evicted; release pins or raise the quota`,
    );
  }
}

/** A tree whose manifest or chunks are not all in the store. */
export class MissingBlobError extends CimeshError {
  /** The first missing CIDs (at most maxListedMissingBlobs). */
  readonly missing: readonly string[];
  readonly missingCount: number;
  constructor(root: string, missing: readonly string[]) {
    super(
      "ERR_MISSING_BLOB",
      `tree ${root}: expected every blob in the store, ${missing.length} missing (first ${missing[0] ?? "?"})`,
    );
    this.missing = missing.slice(0, maxListedMissingBlobs);
    this.missingCount = missing.length;
  }
}

/** A symlink in a folder being packed that leads out of it, nowhere, or round in a loop. */
export class TreeLinkError extends CimeshError {
  readonly path: string;
  constructor(path: string, expected: string) {
    super("ERR_TREE_LINK", `${JSON.stringify(path)}: expected ${expected}`);
    this.path = path;
  }
}

/** A folder that cannot be packed: a special file, a name that is not UTF-8, a limit passed. */
export class TreePackError extends CimeshError {
  readonly path: string;
  constructor(path: string, expected: string) {
    super("ERR_TREE_PACK", `${JSON.stringify(path)}: expected ${expected}`);
    this.path = path;
  }
}

/** A tree that cannot be written into its destination. */
export class TreeUnpackError extends CimeshError {
  readonly path: string;
  constructor(path: string, expected: string) {
    super("ERR_TREE_UNPACK", `${JSON.stringify(path)}: expected ${expected}`);
    this.path = path;
  }
}

/** A tree that would unpack to more bytes than its destination may take: refused before a byte is written. */
export class TreeTooLargeError extends CimeshError {
  readonly limitName: string;
  readonly maxBytes: number;
  readonly unpackedBytes: number;
  constructor(root: string, limitName: string, maxBytes: number, unpackedBytes: number, detail: string) {
    super(
      "ERR_TREE_TOO_LARGE",
      `tree ${root}: expected it to unpack within ${limitName} (${maxBytes} bytes), but ${detail}`,
    );
    this.limitName = limitName;
    this.maxBytes = maxBytes;
    this.unpackedBytes = unpackedBytes;
  }
}

/** A blob store option it cannot work with. */
export class BlobStoreOptionError extends CimeshError {
  constructor(option: string, expected: string, got: unknown) {
    super("ERR_BLOB_STORE_OPTION", `blob store option ${option}: expected ${expected}, got ${String(got)}`);
  }
}

export interface BlobStoreOptions {
  /** Bytes the store may hold; null (default) for no limit. */
  readonly quotaBytes?: number | null;
}

export interface BlobStore {
  /** The store's folder (absolute). */
  readonly root: string;
  /** Whether a file for the blob is present (not read, not verified: get verifies). */
  has(cid: string): Promise<boolean>;
  /** The blob's bytes, verified against the cid; null when absent, or corrupt (the file is then deleted). Counts as a use. */
  get(cid: string): Promise<Uint8Array | null>;
  /**
   * Stores bytes and returns their CID: a raw-codec CID (a chunk, at most
   * treeChunkBytes), or, with expectedCid, that CID of either kind once the
   * bytes are verified against it (BlobMismatchError) and, for a manifest,
   * decoded (TreeManifestError). Written atomically; counts as a use; evicts
   * when over the quota (BlobQuotaError when pinned blobs leave no room).
   * The bytes may be the pieces they arrived in: hashed and written piece by
   * piece, never joined.
   */
  put(bytes: BlobBytes, expectedCid?: string): Promise<string>;
  /** Stores an encoded manifest (checked by decodeManifest) under its dag-cbor CID; as put otherwise. */
  putManifest(bytes: Uint8Array, expectedCid?: string): Promise<string>;
  /** Size of the blob's file, or null when absent. */
  sizeOf(cid: string): Promise<number | null>;
  /** Protects blobs (held now or fetched later) from eviction until the returned function is called. Pins count. */
  pin(cids: Iterable<string>): () => void;
  /** Bytes of the blobs this process knows to be in the store. */
  usedBytes(): number;
  readonly quotaBytes: number | null;
  /**
   * Rescans the folder, then, when over the quota, removes the least recently
   * used unpinned blobs until under it (with evictionHeadroomPercent to
   * spare). Returns the bytes freed. Called by put.
   */
  evict(): Promise<number>;
  /** Where the blob's file is (present or not): for a reader that streams it. Not verified. */
  pathOf(cid: string): string;
}

interface Held {
  sizeBytes: number;
  usedMs: number;
}

function errnoOf(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | null)?.code;
}

const isMissing = (error: unknown) => errnoOf(error) === "ENOENT" || errnoOf(error) === "ENOTDIR";

function shardOf(cid: string): string {
  return cid.slice(-3, -1);
}

function asBytes(buffer: Buffer): Uint8Array {
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}

/** Where a blob's file is, for a canonical CID. */
function blobFileOf(root: string, canonical: string): string {
  return join(root, blobsDirName, shardOf(canonical), canonical);
}

/** Sets a blob file's use time (its mtime); a file gone meanwhile is no error. */
async function touch(path: string, usedMs: number): Promise<void> {
  try {
    await utimes(path, usedMs / 1000, usedMs / 1000);
  } catch (error) {
    if (!isMissing(error)) throw error;
  }
}

/**
 * What this process knows of a store's blobs: the size and use time of each,
 * the pins, and the bytes they add up to, pinned ones apart.
 */
class BlobIndex {
  readonly held = new Map<string, Held>();
  readonly pins = new Map<string, number>();
  used = 0;
  pinnedHeld = 0;

  note(cid: string, sizeBytes: number, usedMs: number): void {
    this.forget(cid);
    this.held.set(cid, { sizeBytes, usedMs });
    this.used += sizeBytes;
    if (this.pins.has(cid)) this.pinnedHeld += sizeBytes;
  }

  forget(cid: string): void {
    const old = this.held.get(cid);
    if (old === undefined) return;
    this.held.delete(cid);
    this.used -= old.sizeBytes;
    if (this.pins.has(cid)) this.pinnedHeld -= old.sizeBytes;
  }

  /** Pins canonical CIDs; the returned function releases them (once). */
  pin(pinned: readonly string[]): () => void {
    for (const cid of pinned) {
      const count = this.pins.get(cid) ?? 0;
      this.pins.set(cid, count + 1);
      if (count === 0) this.pinnedHeld += this.held.get(cid)?.sizeBytes ?? 0;
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      for (const cid of pinned) {
        const count = this.pins.get(cid) ?? 0;
        if (count <= 1) {
          this.pins.delete(cid);
          this.pinnedHeld -= this.held.get(cid)?.sizeBytes ?? 0;
        } else {
          this.pins.set(cid, count - 1);
        }
      }
    };
  }

  /** Throws BlobQuotaError when, with every unpinned blob evicted, this blob would still not fit. */
  checkRoom(quotaBytes: number | null, cid: string, sizeBytes: number): void {
    if (quotaBytes === null) return;
    const counted = this.pins.has(cid) && this.held.has(cid);
    const needed = this.pinnedHeld + (counted ? 0 : sizeBytes);
    if (needed > quotaBytes) throw new BlobQuotaError(quotaBytes, this.pinnedHeld, sizeBytes, cid);
  }

  /** The blobs an eviction may remove, least recently used first (ties by CID): neither pinned nor protected. */
  evictionCandidates(protectedCids: ReadonlySet<string>): [string, Held][] {
    return [...this.held.entries()]
      .filter(([cid]) => !this.pins.has(cid) && !protectedCids.has(cid))
      .sort(([cidA, a], [cidB, b]) => a.usedMs - b.usedMs || (cidA < cidB ? -1 : cidA > cidB ? 1 : 0));
  }
}

/**
 * The journal of a store's folder (blobJournalFileName): every put appends
 * "<cid> <size>", and each store reads what the others appended since it last
 * looked.
 */
class BlobJournal {
  readonly path: string;
  private offset = 0;

  constructor(root: string) {
    this.path = join(root, blobJournalFileName);
  }

  async append(cid: string, sizeBytes: number): Promise<void> {
    await appendFile(this.path, `${cid} ${sizeBytes}\n`);
  }

  /** At open, after a rescan: what the journal says so far is known; a long journal is emptied. */
  async start(): Promise<void> {
    try {
      const { size } = await stat(this.path);
      if (size > maxBlobJournalBytes) {
        await truncate(this.path, 0);
        this.offset = 0;
      } else {
        this.offset = size;
      }
    } catch (error) {
      if (!isMissing(error)) throw error;
    }
  }

  /**
   * Notes in `index` the blobs other stores on this folder added since the
   * last look, used at `tick()` (an eviction then checks the folder itself).
   */
  async read(index: BlobIndex, tick: () => number): Promise<void> {
    let handle: FileHandle;
    try {
      handle = await open(this.path, "r+");
    } catch (error) {
      if (isMissing(error)) return;
      throw error;
    }
    try {
      const { size } = await handle.stat();
      // Emptied by a store that opened: read it again from the start (noting a blob twice changes nothing).
      if (size < this.offset) this.offset = 0;
      if (size === this.offset) return;
      const buffer = Buffer.alloc(size - this.offset);
      const read = await readFully(handle, buffer, this.offset);
      // Only whole lines: another store may be halfway through appending one.
      const end = buffer.subarray(0, read).lastIndexOf(0x0a);
      if (end < 0) return;
      const nowMs = tick();
      for (const line of buffer.subarray(0, end).toString("utf8").split("\n")) {
        const [cid, sizeText] = line.split(" ");
        const sizeBytes = Number(sizeText);
        if (cid === undefined || index.held.has(cid) || !Number.isSafeInteger(sizeBytes) || sizeBytes < 0) continue;
        try {
          if (parseTreeCid(cid).cid !== cid) continue;
        } catch {
          continue;
        }
        index.note(cid, sizeBytes, nowMs);
      }
      this.offset += end + 1;
      // Kept short: a line another store appends between this read and the truncation is only counted at its next rescan.
      if (this.offset > maxBlobJournalBytes) {
        await handle.truncate(0);
        this.offset = 0;
      }
    } finally {
      await handle.close();
    }
  }
}

/** Brings `index` in line with the folder: blobs other processes added or removed. */
async function rescanBlobs(root: string, index: BlobIndex): Promise<void> {
  const present = new Set<string>();
  const blobsDir = join(root, blobsDirName);
  for (const shard of await readdir(blobsDir)) {
    let names: string[];
    try {
      names = await readdir(join(blobsDir, shard));
    } catch (error) {
      if (isMissing(error)) continue;
      throw error;
    }
    for (const name of names) {
      let canonical: string;
      try {
        canonical = parseTreeCid(name).cid;
      } catch {
        continue;
      }
      if (canonical !== name || shardOf(name) !== shard) continue;
      present.add(name);
      if (index.held.has(name)) continue;
      try {
        const info = await stat(join(blobsDir, shard, name));
        if (info.isFile()) index.note(name, info.size, info.mtimeMs);
      } catch (error) {
        if (!isMissing(error)) throw error;
        present.delete(name);
      }
    }
  }
  for (const cid of [...index.held.keys()]) if (!present.has(cid)) index.forget(cid);
}

/** Removes the temporary files of a store older than staleBlobTempFileAgeMs: a crash left them. */
async function removeStaleTemps(root: string, nowMs: number): Promise<void> {
  const tempDir = join(root, blobTempDirName);
  for (const name of await readdir(tempDir)) {
    try {
      const info = await stat(join(tempDir, name));
      if (nowMs - info.mtimeMs > staleBlobTempFileAgeMs) await rm(join(tempDir, name), { force: true });
    } catch (error) {
      if (!isMissing(error)) throw error;
    }
  }
}

/** A blob file's bytes, or null when there is no such file. */
async function readBlobFile(path: string): Promise<Uint8Array | null> {
  try {
    return asBytes(await readFile(path));
  } catch (error) {
    if (!isMissing(error) && errnoOf(error) !== "EISDIR") throw error;
    return null;
  }
}

/**
 * Removes blobs, least recently used first and none pinned or in
 * protectedCids, until the index holds at most targetBytes; returns the bytes
 * freed.
 */
async function evictDownTo(
  root: string,
  index: BlobIndex,
  targetBytes: number,
  protectedCids: ReadonlySet<string>,
): Promise<number> {
  let freed = 0;
  for (const [cid, held] of index.evictionCandidates(protectedCids)) {
    if (index.used <= targetBytes) break;
    await rm(blobFileOf(root, cid), { force: true });
    index.forget(cid);
    freed += held.sizeBytes;
  }
  return freed;
}

/** The CID `put` stores bytes under, once they are checked against expectedCid (see BlobStore.put). */
function checkedBlobCid(bytes: BlobBytes, expectedCid: string | undefined): string {
  if (!isBlobBytes(bytes)) throw new BlobStoreOptionError("put(bytes)", "bytes", typeof bytes);
  const length = blobLength(bytes);
  if (expectedCid === undefined) {
    if (length > treeChunkBytes) throw new OversizeError("blob", length, treeChunkBytes);
    return cidOfBlob(joinedBlob(bytes));
  }
  const { cid, kind } = parseTreeCid(expectedCid, "expectedCid");
  // A manifest is decoded whole: small, and joined only here.
  if (kind === "manifest") return checkedManifestCid(joinedBlob(bytes), cid);
  if (length > treeChunkBytes) throw new OversizeError(`blob ${cid}`, length, treeChunkBytes);
  verifyBlob(cid, bytes);
  return cid;
}

/** Writes a new file (it must not exist) holding `bytes`: one write of all its pieces at once (writev). */
async function writeNewFile(path: string, bytes: BlobBytes): Promise<void> {
  if (bytes instanceof Uint8Array) {
    await writeFile(path, bytes, { flag: "wx", mode: 0o644 });
    return;
  }
  const file = await open(path, "wx", 0o644);
  try {
    let pieces = bytes.filter((piece) => piece.length > 0);
    let position = 0;
    while (pieces.length > 0) {
      const { bytesWritten } = await file.writev(pieces.slice(0, maxWritevPieces), position);
      if (bytesWritten === 0) throw new Error(`${path}: the file system took no bytes`);
      position += bytesWritten;
      pieces = piecesAfter(pieces, bytesWritten);
    }
  } finally {
    await file.close();
  }
}

/** Pieces a single writev takes at most (Linux's IOV_MAX). */
const maxWritevPieces = 1024;

/** What is left of `pieces` once their first `count` bytes are gone. */
function piecesAfter(pieces: readonly Uint8Array[], count: number): Uint8Array[] {
  let left = count;
  let index = 0;
  while (index < pieces.length && left >= (pieces[index] as Uint8Array).length) {
    left -= (pieces[index] as Uint8Array).length;
    index += 1;
  }
  const rest = pieces.slice(index);
  if (left > 0 && rest.length > 0) rest[0] = (rest[0] as Uint8Array).subarray(left);
  return rest;
}

/** The CID `putManifest` stores an encoded manifest under, once it is decoded and checked against expectedCid. */
function checkedManifestCid(bytes: Uint8Array, expectedCid: string | undefined): string {
  if (!(bytes instanceof Uint8Array)) throw new BlobStoreOptionError("putManifest(bytes)", "bytes", typeof bytes);
  const cid = cidOfManifest(bytes);
  if (expectedCid !== undefined) {
    const expected = parseTreeCid(expectedCid, "expectedCid");
    if (expected.kind !== "manifest") {
      throw new UnsupportedCidError("expectedCid", "a manifest CID (codec dag-cbor, 0x71)", expected.cid);
    }
    if (expected.cid !== cid) throw new BlobMismatchError(expected.cid, cid);
  }
  decodeManifest(bytes);
  return cid;
}

class DiskBlobStore implements BlobStore {
  readonly root: string;
  readonly quotaBytes: number | null;
  private readonly index = new BlobIndex();
  private readonly journal: BlobJournal;
  private clock = 0;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(root: string, quotaBytes: number | null) {
    this.root = root;
    this.quotaBytes = quotaBytes;
    this.journal = new BlobJournal(root);
  }

  pathOf(cid: string): string {
    const { cid: canonical } = parseTreeCid(cid);
    return blobFileOf(this.root, canonical);
  }

  /** A use time later than every one before: wall-clock milliseconds, so it compares with other processes' mtimes. */
  private tick(): number {
    this.clock = Math.max(Date.now(), this.clock + 1);
    return this.clock;
  }

  /** Runs fn after every earlier locked section of this store: puts and evictions do not interleave. */
  private locked<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  async has(cid: string): Promise<boolean> {
    return (await this.sizeOf(cid)) !== null;
  }

  async sizeOf(cid: string): Promise<number | null> {
    const { cid: canonical } = parseTreeCid(cid);
    try {
      const info = await stat(blobFileOf(this.root, canonical));
      if (!info.isFile()) return null;
      if (this.index.held.get(canonical)?.sizeBytes !== info.size) this.index.note(canonical, info.size, info.mtimeMs);
      return info.size;
    } catch (error) {
      if (!isMissing(error)) throw error;
      this.index.forget(canonical);
      return null;
    }
  }

  async get(cid: string): Promise<Uint8Array | null> {
    const { cid: canonical } = parseTreeCid(cid);
    const path = blobFileOf(this.root, canonical);
    const bytes = await readBlobFile(path);
    if (bytes === null) {
      this.index.forget(canonical);
      return null;
    }
    try {
      verifyBlob(canonical, bytes);
    } catch (error) {
      if (!(error instanceof BlobMismatchError)) throw error;
      await rm(path, { force: true });
      this.index.forget(canonical);
      return null;
    }
    const usedMs = this.tick();
    this.index.note(canonical, bytes.length, usedMs);
    await touch(path, usedMs);
    return bytes;
  }

  async put(bytes: BlobBytes, expectedCid?: string): Promise<string> {
    return this.store(bytes, checkedBlobCid(bytes, expectedCid));
  }

  async putManifest(bytes: Uint8Array, expectedCid?: string): Promise<string> {
    return this.store(bytes, checkedManifestCid(bytes, expectedCid));
  }

  private async store(bytes: BlobBytes, cid: string): Promise<string> {
    const path = blobFileOf(this.root, cid);
    const length = blobLength(bytes);
    this.index.checkRoom(this.quotaBytes, cid, length);
    let temp: string | null = null;
    try {
      const present = await this.sizeOf(cid);
      if (present !== length) {
        temp = join(this.root, blobTempDirName, `${cid}.${process.pid}.${randomBytes(6).toString("hex")}`);
        await writeNewFile(temp, bytes);
      }
      await this.locked(async () => {
        this.index.checkRoom(this.quotaBytes, cid, length);
        if (temp !== null) {
          await mkdir(dirname(path), { recursive: true });
          await rename(temp, path);
          temp = null;
        }
        const usedMs = this.tick();
        this.index.note(cid, length, usedMs);
        await touch(path, usedMs);
        await this.journal.append(cid, length);
        await this.journal.read(this.index, () => this.tick());
        if (this.quotaBytes !== null && this.index.used > this.quotaBytes) await this.evictLocked(new Set([cid]));
      });
    } finally {
      if (temp !== null) await rm(temp, { force: true });
    }
    return cid;
  }

  pin(cids: Iterable<string>): () => void {
    return this.index.pin([...cids].map((cid) => parseTreeCid(cid).cid));
  }

  usedBytes(): number {
    return this.index.used;
  }

  evict(): Promise<number> {
    return this.locked(async () => {
      await this.rescan();
      return this.evictLocked(new Set(), true);
    });
  }

  private async evictLocked(protectedCids: ReadonlySet<string>, rescanned = false): Promise<number> {
    const quota = this.quotaBytes;
    if (quota === null || this.index.used <= quota) return 0;
    // Another process may have added or removed blobs: count what is there before choosing.
    if (!rescanned) await this.rescan();
    if (this.index.used <= quota) return 0;
    const target = quota - Math.floor((quota * evictionHeadroomPercent) / 100);
    return evictDownTo(this.root, this.index, target, protectedCids);
  }

  /** At open: temporary files a crash left go, and what the journal says so far is known. */
  async open(nowMs: number): Promise<void> {
    await removeStaleTemps(this.root, nowMs);
    await this.journal.start();
  }

  /** Brings the in-memory index in line with the folder: blobs other processes added or removed. */
  rescan(): Promise<void> {
    return rescanBlobs(this.root, this.index);
  }
}

/**
 * Opens (creating it if need be) the blob store in `root`: indexes the blobs
 * present, removes temporary files a crash left, and evicts when the folder
 * holds more than the quota.
 */
export async function openBlobStore(root: string, options: BlobStoreOptions = {}): Promise<BlobStore> {
  if (typeof root !== "string" || root === "") throw new BlobStoreOptionError("root", "a folder path", root);
  const quota = options.quotaBytes ?? null;
  if (quota !== null && (!Number.isSafeInteger(quota) || quota < 0)) {
    throw new BlobStoreOptionError("quotaBytes", "null or a non-negative integer", quota);
  }
  const folder = resolve(root);
  await mkdir(join(folder, blobsDirName), { recursive: true });
  await mkdir(join(folder, blobTempDirName), { recursive: true });
  const store = new DiskBlobStore(folder, quota);
  await store.open(Date.now());
  await store.rescan();
  if (quota !== null && store.usedBytes() > quota) await store.evict();
  return store;
}

// ---------------------------------------------------------------------------------------------------------------
// Trees

interface CollectedFile {
  readonly rel: string;
  /** Host path of the bytes: the file itself, or the target of a symlink to it. */
  readonly real: string;
  readonly sizeBytes: number;
  readonly executable: boolean;
}

interface Collected {
  readonly files: Map<string, CollectedFile>;
  readonly dirs: Set<string>;
  totalBytes: number;
}

type Refuse = (rel: string, expected: string) => Error;

function addFile(collected: Collected, file: CollectedFile, refuse: Refuse): void {
  if (collected.files.size + collected.dirs.size + 1 > maxTreeEntries) {
    throw refuse(file.rel, `at most ${maxTreeEntries} files and folders in one tree`);
  }
  if (collected.totalBytes + file.sizeBytes > maxTreeBytes) {
    throw refuse(file.rel, `at most ${maxTreeBytes} bytes of files in one tree`);
  }
  collected.totalBytes += file.sizeBytes;
  collected.files.set(file.rel, file);
}

function addDir(collected: Collected, rel: string, refuse: Refuse): void {
  if (collected.dirs.has(rel)) return;
  if (collected.files.size + collected.dirs.size + 1 > maxTreeEntries) {
    throw refuse(rel, `at most ${maxTreeEntries} files and folders in one tree`);
  }
  collected.dirs.add(rel);
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

async function namesOf(folder: string, rel: string, refuse: Refuse): Promise<string[]> {
  const names: string[] = [];
  for (const raw of await readdir(folder, { encoding: "buffer" })) {
    try {
      names.push(utf8.decode(raw));
    } catch {
      throw refuse(rel === "" ? "." : rel, `file names in UTF-8, got ${JSON.stringify(raw.toString("latin1"))}`);
    }
  }
  return names.sort();
}

async function readFully(handle: FileHandle, buffer: Buffer, position: number): Promise<number> {
  let done = 0;
  while (done < buffer.length) {
    const { bytesRead } = await handle.read(buffer, done, buffer.length - done, position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done;
}

/** Puts every chunk of the collected files and their manifest; returns the manifest's CID. */
async function storeTree(
  collected: Collected,
  store: BlobStore,
  refuse: Refuse,
  onProgress?: (doneBytes: number, totalBytes: number) => void,
): Promise<string> {
  const releases: (() => void)[] = [];
  const totalBytes = collected.totalBytes;
  let doneBytes = 0;
  onProgress?.(0, totalBytes);
  try {
    const files: TreeFile[] = [];
    for (const file of collected.files.values()) {
      const chunks: string[] = [];
      const count = chunkCountOf(file.sizeBytes);
      if (count > 0) {
        const handle = await open(file.real, "r");
        try {
          for (let index = 0; index < count; index++) {
            const buffer = Buffer.allocUnsafe(chunkSizeOf(file.sizeBytes, index));
            const read = await readFully(handle, buffer, index * treeChunkBytes);
            if (read !== buffer.length) throw refuse(file.rel, "a file that does not change while it is packed");
            const bytes = asBytes(buffer);
            // Pinned before it is put, and until the manifest is stored: no other chunk of the tree (nor another
            // put of this process) may evict it meanwhile. Costs a second hash; put hashes too.
            releases.push(store.pin([cidOfBlob(bytes)]));
            chunks.push(await store.put(bytes));
            doneBytes += buffer.length;
            onProgress?.(doneBytes, totalBytes);
          }
          if ((await handle.stat()).size !== file.sizeBytes) {
            throw refuse(file.rel, "a file that does not change while it is packed");
          }
        } finally {
          await handle.close();
        }
      }
      files.push({ path: file.rel, sizeBytes: file.sizeBytes, executable: file.executable, chunks });
    }
    const manifest: TreeManifest = { version: 1, chunkBytes: treeChunkBytes, files, dirs: [...collected.dirs] };
    return await store.putManifest(encodeManifest(manifest));
  } finally {
    for (const release of releases) release();
  }
}

export interface PackOptions {
  /** Skip what the tree's .gitignore files exclude (the `ignore` package, git's rules). Default true. `.git` is skipped, but in a rootfs. */
  readonly respectGitignore?: boolean;
  /** Called as bytes are packed, first with 0. */
  readonly onProgress?: (doneBytes: number, totalBytes: number) => void;
  /**
   * The folder is a root filesystem (an image): an absolute symlink target is a path inside the folder, as it is
   * for the processes that will run in it, and `.git` is packed like any other folder. Default false: an absolute
   * target must name the folder itself.
   */
  readonly rootfs?: boolean;
  /**
   * Told of each symlink that leads nowhere inside the folder, which is then left out of the tree (an image's
   * /etc/mtab to /proc, say). Default: such a link is refused (TreeLinkError). A link leading out is always refused.
   */
  readonly onDanglingLink?: (path: string) => void;
}

export interface PackResult {
  /** The manifest's CID: names the whole tree. */
  readonly root: string;
  readonly files: number;
  /** Bytes of all files. */
  readonly bytes: number;
}

interface IgnoreLevel {
  /** The folder of the .gitignore, relative to the tree ("" at its top). */
  readonly base: string;
  readonly rules: Ignore;
}

/** Git's answer: the last rule that matches, from the top .gitignore to the deepest, decides. */
function isIgnored(levels: readonly IgnoreLevel[], rel: string, isDir: boolean): boolean {
  let ignored = false;
  for (const { base, rules } of levels) {
    const sub = base === "" ? rel : rel.slice(base.length + 1);
    const result = rules.test(isDir ? `${sub}/` : sub);
    if (result.ignored) ignored = true;
    else if (result.unignored) ignored = false;
  }
  return ignored;
}

/**
 * Packs a folder into the store: every file cut into chunks, every folder
 * (empty ones too) listed, the manifest stored; returns its CID.
 *
 * Skips `.git` always and, unless respectGitignore is false, what the
 * .gitignore files of the tree exclude (each applies to its own folder and
 * below, deeper files overriding, as git does; a symlink is matched as a
 * file, as git stores it). A manifest has no symlinks: a link whose target
 * stays inside the folder is packed as a copy of its target (a file's bytes,
 * or a folder's contents), one that leads out of the folder, nowhere, or
 * round in a loop is refused with TreeLinkError. Any x bit makes a file
 * executable. Sockets, fifos and devices are refused, as are names that are
 * not UTF-8 and trees past the limits of crypto/tree.ts (TreePackError).
 */
export async function packTree(folder: string, store: BlobStore, options: PackOptions = {}): Promise<PackResult> {
  const respectGitignore = options.respectGitignore ?? true;
  const given = resolve(folder);
  const rootReal = await realpath(given);
  const info = await stat(rootReal);
  if (!info.isDirectory()) throw new TreePackError(folder, "a folder to pack");
  const collected: Collected = { files: new Map(), dirs: new Set(), totalBytes: 0 };
  const refuse: Refuse = (rel, expected) => new TreePackError(rel, expected);
  const refuseLink: Refuse = (rel, expected) => new TreeLinkError(rel, expected);
  // "" as a root: every absolute target is read from the folder's top (resolveInside strips the root's text).
  const absoluteRoots = options.rootfs === true ? [""] : [...new Set([rootReal, given])];
  // Real paths of the folders being walked, from the top down: a link back to one of them is a loop.
  const walking = new Set<string>();

  const walk = async (relDir: string, realDir: string, levels: readonly IgnoreLevel[]): Promise<void> => {
    walking.add(realDir);
    let here = levels;
    if (respectGitignore) {
      const gitignore = join(realDir, ".gitignore");
      const found = await lstat(gitignore).catch((error: unknown) => {
        if (isMissing(error)) return null;
        throw error;
      });
      if (found?.isFile()) {
        const rules = ignore({ ignorecase: false }).add(await readFile(gitignore, "utf8"));
        here = [...levels, { base: relDir, rules }];
      }
    }
    for (const name of await namesOf(realDir, relDir, refuse)) {
      if (name === ".git" && options.rootfs !== true) continue;
      const rel = relDir === "" ? name : `${relDir}/${name}`;
      const problem = treePathProblem(rel);
      if (problem !== null) throw new TreePackError(rel, problem);
      let real = join(realDir, name);
      let entry = await lstat(real);
      if (entry.isSymbolicLink()) {
        if (respectGitignore && isIgnored(here, rel, false)) continue;
        // Packed as a copy of its target, which must be inside the folder (resolved as outputs are, one part at a time).
        const target = await resolveInside(rootReal, rel, {
          absoluteRoots,
          folderName: "the folder",
          refuse: refuseLink,
        });
        if (target === null) {
          if (options.onDanglingLink !== undefined) {
            options.onDanglingLink(rel);
            continue;
          }
          throw new TreeLinkError(rel, "a symlink to a file or folder inside the folder, got one that leads nowhere");
        }
        real = target;
        entry = await lstat(real);
      } else if (respectGitignore && isIgnored(here, rel, entry.isDirectory())) {
        continue;
      }
      if (entry.isDirectory()) {
        // Depth is bounded by treePathProblem above (maxTreeDepthLevels), a loop of links here.
        if (walking.has(real)) {
          throw new TreeLinkError(rel, "a symlink that does not lead back to a folder that contains it (a loop)");
        }
        addDir(collected, rel, refuse);
        await walk(rel, real, here);
      } else if (entry.isFile()) {
        addFile(collected, { rel, real, sizeBytes: entry.size, executable: (entry.mode & 0o111) !== 0 }, refuse);
      } else {
        throw new TreePackError(rel, `a regular file, folder or symlink, got a ${specialKind(entry)}`);
      }
    }
    walking.delete(realDir);
  };

  await walk("", rootReal, []);
  const root = await storeTree(collected, store, refuse, options.onProgress);
  return { root, files: collected.files.size, bytes: collected.totalBytes };
}

function specialKind(info: Awaited<ReturnType<typeof lstat>>): string {
  if (info.isSocket()) return "socket";
  if (info.isFIFO()) return "fifo";
  if (info.isCharacterDevice()) return "character device";
  if (info.isBlockDevice()) return "block device";
  return "special file";
}

/**
 * Packs a run's declared outputs as a tree; returns its root CID. Paths are
 * relative to the work folder, as the job declared them; a folder stands for
 * everything under it, and the folders leading to a declared output are
 * listed as folders of the tree. Symlinks are resolved as the sandbox's
 * outputs.ts does (as the job saw them: an absolute target is a path in the
 * sandbox, /work), followed while they stay in the work folder and packed as
 * copies; one leading out is refused with OutputRefusedError, as is a special
 * file. A declared output that does not exist (or a link leading nowhere
 * inside) is simply absent from the tree, so a run whose outputs are all
 * missing has the CID of the empty tree.
 */
export async function packOutputs(workDir: string, declared: readonly string[], store: BlobStore): Promise<string> {
  const root = await realpath(workDir);
  const collected: Collected = { files: new Map(), dirs: new Set(), totalBytes: 0 };
  const refuse: Refuse = (rel, expected) => new OutputRefusedError(rel, expected);

  const add = async (rel: string, depth: number): Promise<void> => {
    if (collected.files.has(rel) || collected.dirs.has(rel)) return;
    const real = rel === "" ? root : await resolveInside(root, rel);
    if (real === null) return;
    const info = await lstat(real);
    if (info.isFile()) {
      if (collected.files.size >= maxOutputFilesPerRun) {
        throw refuse(rel, `at most ${maxOutputFilesPerRun} files in all outputs`);
      }
      addParents(rel);
      addFile(collected, { rel, real, sizeBytes: info.size, executable: (info.mode & 0o111) !== 0 }, refuse);
    } else if (info.isDirectory()) {
      if (depth >= maxOutputDepth) {
        throw refuse(rel, `at most ${maxOutputDepth} folders deep (a symlink cycle?)`);
      }
      if (rel !== "") {
        addParents(rel);
        addDir(collected, rel, refuse);
      }
      for (const name of await namesOf(real, rel, refuse)) {
        const child = rel === "" ? name : `${rel}/${name}`;
        const problem = treePathProblem(child);
        if (problem !== null) throw refuse(child, problem);
        await add(child, depth + 1);
      }
    } else {
      throw refuse(rel, `a regular file or a folder, got a ${specialKind(info)}`);
    }
  };
  const addParents = (rel: string) => {
    const parts = rel.split("/");
    for (let i = 1; i < parts.length; i++) addDir(collected, parts.slice(0, i).join("/"), refuse);
  };

  for (const output of declared) {
    const normal = posix.normalize(output).replace(/\/+$/, "");
    if (normal === ".." || normal.startsWith("../") || posix.isAbsolute(output) || normal === "") {
      throw refuse(output, "a relative path inside the work folder");
    }
    const rel = normal === "." ? "" : normal;
    if (rel !== "") {
      const problem = treePathProblem(rel);
      if (problem !== null) throw refuse(output, problem);
    }
    await add(rel, 0);
  }
  return storeTree(collected, store, refuse);
}

export interface TreeBlobs {
  readonly manifest: TreeManifest;
  /** The distinct chunk CIDs of the tree, in manifest order. */
  readonly chunks: string[];
  /** Those of them not in the store. */
  readonly missing: string[];
  /** Bytes of the distinct chunks the store holds. */
  readonly heldBytes: number;
  /** Bytes of all distinct chunks: what fetching the whole tree into an empty store moves (the manifest aside). */
  readonly totalBytes: number;
}

async function loadManifest(root: string, store: BlobStore): Promise<{ cid: string; manifest: TreeManifest }> {
  const { cid, kind } = parseTreeCid(root, "root");
  if (kind !== "manifest") throw new UnsupportedCidError("root", "a tree manifest CID (codec dag-cbor, 0x71)", cid);
  const bytes = await store.get(cid);
  if (bytes === null) throw new MissingBlobError(cid, [cid]);
  return { cid, manifest: decodeManifest(bytes) };
}

/** Files checked at once for presence. */
export const presenceCheckBatchSize = 64;

/** store.has for each cid, a batch at a time. */
async function presence(store: BlobStore, cids: readonly string[]): Promise<boolean[]> {
  const present: boolean[] = [];
  for (let at = 0; at < cids.length; at += presenceCheckBatchSize) {
    present.push(...(await Promise.all(cids.slice(at, at + presenceCheckBatchSize).map((cid) => store.has(cid)))));
  }
  return present;
}

/** Sizes of the distinct chunks of a manifest. */
function chunkSizes(manifest: TreeManifest): Map<string, number> {
  const sizes = new Map<string, number>();
  for (const file of manifest.files) {
    file.chunks.forEach((cid, index) => {
      if (!sizes.has(cid)) sizes.set(cid, chunkSizeOf(file.sizeBytes, index, manifest.chunkBytes));
    });
  }
  return sizes;
}

/**
 * For a tree whose manifest is in the store (else MissingBlobError): the
 * chunks it needs, those missing, and the bytes held of it (what a bid reports).
 */
export async function treeBlobs(root: string, store: BlobStore): Promise<TreeBlobs> {
  const { manifest } = await loadManifest(root, store);
  const sizes = chunkSizes(manifest);
  const chunks = manifestChunks(manifest);
  const present = await presence(store, chunks);
  const missing: string[] = [];
  let heldBytes = 0;
  let totalBytes = 0;
  chunks.forEach((cid, index) => {
    const size = sizes.get(cid) ?? 0;
    totalBytes += size;
    if (present[index]) heldBytes += size;
    else missing.push(cid);
  });
  return { manifest, chunks, missing, heldBytes, totalBytes };
}

export interface UnpackResult {
  readonly files: number;
  readonly bytes: number;
}

/**
 * Bytes a tree takes once unpacked: every file's bytes (a chunk the manifest
 * names twice counts twice) and unpackedEntryBytes for each file and folder.
 */
export function unpackedBytesOf(manifest: TreeManifest): number {
  return manifestBytes(manifest) + (manifest.files.length + manifest.dirs.length) * unpackedEntryBytes;
}

/** The most a tree may unpack to, and the name of the field or option that says so (for the error). */
export interface UnpackLimit {
  readonly maxBytes: number;
  readonly name: string;
}

/** Throws TreeTooLargeError, before anything is fetched or written, when the tree would unpack past the limit. */
export function checkUnpackLimit(root: string, manifest: TreeManifest, limit: UnpackLimit | undefined): void {
  if (limit === undefined) return;
  const unpacked = unpackedBytesOf(manifest);
  if (unpacked <= limit.maxBytes) return;
  throw new TreeTooLargeError(
    root,
    limit.name,
    limit.maxBytes,
    unpacked,
    `its manifest unpacks to ${unpacked} bytes (${manifestBytes(manifest)} bytes in ${manifest.files.length} files, ` +
      `${manifest.dirs.length} folders, ${unpackedEntryBytes} bytes counted per entry); nothing was written`,
  );
}

export interface UnpackOptions {
  /** Refuses a tree that unpacks past it before writing a byte, and stops a write that would pass it. */
  readonly limit?: UnpackLimit;
  /** Stops the unpacking (between writes) when aborted: its reason is thrown. */
  readonly signal?: AbortSignal;
}

/** Checks (again: the manifest was checked) that `rel` lands inside `top`, and returns where. */
function inside(top: string, rel: string): string {
  const target = resolve(top, ...rel.split("/"));
  const back = relative(top, target);
  if (back === "" || back === ".." || back.startsWith("../") || isAbsolute(back)) {
    throw new TreeUnpackError(rel, "a path inside the destination");
  }
  return target;
}

/**
 * Writes the tree `root` into `destination` (created if missing): every
 * folder (empty ones too), every file with mode 0o755 if executable else
 * 0o644, every chunk verified against its CID and its size. Needs every blob
 * in the store first (MissingBlobError, naming how many are missing and the
 * first). Never writes outside destination: each path is checked again, an
 * existing symlink on the way is refused rather than followed, and files are
 * written to a new temporary name then renamed into place. Files already in
 * destination at a path of the tree are replaced. With a limit, a tree whose
 * manifest unpacks past it is refused (TreeTooLargeError) before the
 * destination is made, and the bytes written are counted as they go.
 */
export async function unpackTree(
  root: string,
  store: BlobStore,
  destination: string,
  options: UnpackOptions = {},
): Promise<UnpackResult> {
  const { cid, manifest } = await loadManifest(root, store);
  checkUnpackLimit(cid, manifest, options.limit);
  const { limit, signal } = options;
  const chunks = manifestChunks(manifest);
  const release = store.pin([cid, ...chunks]);
  try {
    const present = await presence(store, chunks);
    const missing = chunks.filter((_, index) => !present[index]);
    if (missing.length > 0) throw new MissingBlobError(cid, missing);

    await mkdir(destination, { recursive: true });
    const top = await realpath(destination);
    // Folders sort before what they contain (a prefix sorts first), so parents are made first.
    for (const dir of manifest.dirs) {
      const target = inside(top, dir);
      try {
        await mkdir(target);
      } catch (error) {
        if (errnoOf(error) !== "EEXIST") throw error;
        const existing = await lstat(target);
        if (!existing.isDirectory())
          throw new TreeUnpackError(dir, "a folder, or nothing, at this path of the destination");
      }
    }
    // Counted as written, entries included: the check above trusts the manifest's sizes, this one the bytes.
    let bytes = 0;
    let unpacked = manifest.dirs.length * unpackedEntryBytes;
    let counter = 0;
    for (const [index, file] of manifest.files.entries()) {
      signal?.throwIfAborted();
      unpacked += unpackedEntryBytes;
      const target = inside(top, file.path);
      // Beside its target (so the rename is atomic), under a short name (so a 255-byte name still has room).
      const temp = join(dirname(target), `.cimesh-unpack-${process.pid}-${counter++}`);
      const handle = await open(temp, "wx", file.executable ? executableFileMode : plainFileMode);
      try {
        try {
          for (const [c, chunk] of file.chunks.entries()) {
            const data = await store.get(chunk);
            if (data === null) throw new MissingBlobError(cid, [chunk]);
            const expected = chunkSizeOf(file.sizeBytes, c, manifest.chunkBytes);
            if (data.length !== expected) {
              throw new TreeUnpackError(
                file.path,
                `chunk ${c} (files[${index}].chunks[${c}], ${chunk}) of ${expected} bytes, got ${data.length}`,
              );
            }
            unpacked += data.length;
            if (limit !== undefined && unpacked > limit.maxBytes) {
              throw new TreeTooLargeError(
                cid,
                limit.name,
                limit.maxBytes,
                unpacked,
                `writing ${file.path} (files[${index}].chunks[${c}]) would bring it to ${unpacked} bytes; stopped there`,
              );
            }
            signal?.throwIfAborted();
            let written = 0;
            while (written < data.length) {
              const { bytesWritten } = await handle.write(data, written, data.length - written);
              written += bytesWritten;
            }
          }
          // open's mode passes through the umask; the tree's modes do not.
          await handle.chmod(file.executable ? executableFileMode : plainFileMode);
        } finally {
          await handle.close();
        }
        const existing = await lstat(target).catch((error: unknown) => {
          if (isMissing(error)) return null;
          throw error;
        });
        if (existing?.isDirectory())
          throw new TreeUnpackError(file.path, "a file, or nothing, at this path of the destination");
        await rename(temp, target);
      } catch (error) {
        await rm(temp, { force: true });
        throw error;
      }
      bytes += file.sizeBytes;
    }
    return { files: manifest.files.length, bytes };
  } finally {
    release();
  }
}
