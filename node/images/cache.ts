/**
 * Unpacked images shared between runs: one read-only copy per image CID on a
 * worker, made from the blob store the first time a run needs it and reused by
 * every run after, so the second job on an image starts without unpacking it
 * again.
 *
 * Layout, under the node's neutral work root (never the data folder: the
 * sandbox's mountinfo shows this path):
 *   <folder>/<cid>/               an image, complete (made under a temporary name, then renamed)
 *   <folder>/.unpacking-<random>/ one being written; removed when the cache opens
 * A folder named by the CID is only ever the whole tree of that CID, so two
 * processes (a node and `cimesh run` on its data folder) share it; the one
 * that renames second drops its own copy. The sandbox binds it read-only.
 * Copies beyond maxUnpackedImages are removed least recently used first, never
 * one a run holds.
 */
import { randomBytes } from "node:crypto";
import { chmod, mkdir, readdir, rename, rm, stat } from "node:fs/promises";
import { dirname, join } from "node:path";
import { parseTreeCid } from "../../crypto/index.ts";
import { ensureWorkRoot } from "../sandbox/index.ts";
import { type BlobStore, type UnpackLimit, unpackTree } from "../store/index.ts";

/** Unpacked images a worker keeps when no run holds them. */
export const maxUnpackedImages = 8;
/** Mode of the cache folder and of each image's folders: bubblewrap, run as the job's uid by a root node, passes through. */
export const imageFolderMode = 0o755;
/** Prefix of an image being unpacked. */
const unpackingPrefix = ".unpacking-";

export interface ImageReady {
  /** Host folder of the image's root filesystem. */
  readonly root: string;
  /** Whether this call unpacked it (false: an earlier run's copy). */
  readonly unpacked: boolean;
  /** Releases the run's hold: the copy may then be removed to stay within maxUnpackedImages. */
  readonly release: () => void;
}

export interface ImageCounters {
  /** Images unpacked by this process. */
  readonly unpacks: number;
  /** Runs that found their image unpacked already. */
  readonly reuses: number;
}

export interface ImageCache {
  readonly folder: string;
  /** The image's folder, unpacked once from the store (every blob there first: MissingBlobError otherwise), held until released. */
  ready(cid: string, limit?: UnpackLimit): Promise<ImageReady>;
  counters(): ImageCounters;
}

export async function openImageCache(
  folder: string,
  blobs: BlobStore,
  options: { readonly maxImages?: number } = {},
): Promise<ImageCache> {
  const maxImages = options.maxImages ?? maxUnpackedImages;
  // The work root above it: private, but searchable by bubblewrap's uid when a root node starts it as the job's.
  await ensureWorkRoot(dirname(folder));
  await mkdir(folder, { recursive: true, mode: imageFolderMode });
  await chmod(folder, imageFolderMode);
  const lastUsedMs = new Map<string, number>();
  for (const name of await readdir(folder)) {
    if (name.startsWith(unpackingPrefix)) {
      await rm(join(folder, name), { recursive: true, force: true });
      continue;
    }
    lastUsedMs.set(name, (await stat(join(folder, name))).mtimeMs);
  }
  const holds = new Map<string, number>();
  const inFlight = new Map<string, { readonly done: Promise<boolean>; claimed: boolean }>();
  let unpacks = 0;
  let reuses = 0;

  const present = async (cid: string) => {
    try {
      return (await stat(join(folder, cid))).isDirectory();
    } catch {
      return false;
    }
  };

  const unpack = async (cid: string, limit: UnpackLimit | undefined): Promise<boolean> => {
    if (await present(cid)) return false;
    const temp = join(folder, `${unpackingPrefix}${randomBytes(8).toString("hex")}`);
    try {
      await unpackTree(cid, blobs, temp, limit === undefined ? {} : { limit });
      await chmod(temp, imageFolderMode);
      try {
        await rename(temp, join(folder, cid));
      } catch (error) {
        // Another process renamed its copy first: the same tree, so it stands.
        if (!(await present(cid))) throw error;
        return false;
      }
      return true;
    } finally {
      await rm(temp, { recursive: true, force: true });
    }
  };

  const trim = async () => {
    const idle = [...lastUsedMs.entries()]
      .filter(([cid]) => (holds.get(cid) ?? 0) === 0 && !inFlight.has(cid))
      .sort(([, a], [, b]) => a - b);
    while (lastUsedMs.size > maxImages && idle.length > 0) {
      const [cid] = idle.shift() as [string, number];
      lastUsedMs.delete(cid);
      await rm(join(folder, cid), { recursive: true, force: true });
    }
  };

  return {
    folder,
    async ready(cid, limit) {
      const canonical = parseTreeCid(cid, "image").cid;
      let entry = inFlight.get(canonical);
      if (entry === undefined) {
        entry = { done: unpack(canonical, limit).finally(() => inFlight.delete(canonical)), claimed: false };
        inFlight.set(canonical, entry);
      }
      // Runs waiting on one unpacking share it: only the first counts as the unpack.
      const made = await entry.done;
      const first = made && !entry.claimed;
      if (made) entry.claimed = true;
      if (first) unpacks += 1;
      else reuses += 1;
      holds.set(canonical, (holds.get(canonical) ?? 0) + 1);
      lastUsedMs.set(canonical, Date.now());
      let released = false;
      return {
        root: join(folder, canonical),
        unpacked: first,
        release: () => {
          if (released) return;
          released = true;
          holds.set(canonical, (holds.get(canonical) ?? 1) - 1);
          void trim().catch(() => undefined);
        },
      };
    },
    counters: () => ({ unpacks, reuses }),
  };
}
