/**
 * Content-addressed trees for runs and people: fetching a tree from hinted
 * peers and the DHT's providers (every blob verified, stallers and liars
 * dropped), unpacking a run's inputs into its folder within the job's
 * declared disk and a deadline, pinning them against eviction, and releasing
 * the pins when the run ends.
 */

import { CimeshError } from "../../crypto/index.ts";
import type { ExecutionReport, ExecutionRequest } from "../../jobs/index.ts";
import {
  type FetchOptions,
  fetchTree,
  type Host,
  misbehaviourBanMs,
  type PeerBans,
  peerIdOfPublicKeyHex,
} from "../host/index.ts";
import type { ImageCache } from "../images/index.ts";
import { minRunDiskBytes, runDiskLimitBytes } from "../sandbox/index.ts";
import { type BlobStore, treeBlobs, type UnpackLimit, unpackTree } from "../store/index.ts";
import type { NodeLog, RunCarrier } from "./ports.ts";

/** What a fetch of a tree is given beyond its root and hints. */
export type FetchFromOptions = Pick<FetchOptions, "onProgress" | "pin" | "limit" | "signal" | "onDropped">;

export type FetchFrom = (
  root: string,
  hints: readonly string[],
  options?: FetchFromOptions,
) => ReturnType<typeof fetchTree>;

/**
 * Input preparation (finding providers, the fetch, the unpacking) of a run ends within this, plus the inputs' bytes
 * at minInputsBytesPerSecond; past it the run is refused.
 */
export const inputsBaseDeadlineMs = 2 * 60_000;
/** The slowest input preparation a run waits for, past inputsBaseDeadlineMs. */
export const minInputsBytesPerSecond = 256 * 1024;

/** The deadline of a run's input preparation. */
export interface InputsDeadline {
  readonly baseMs: number;
  readonly minBytesPerSecond: number;
}

export const defaultInputsDeadline: InputsDeadline = {
  baseMs: inputsBaseDeadlineMs,
  minBytesPerSecond: minInputsBytesPerSecond,
};

/** Milliseconds a run's inputs of totalBytes may take to be ready (null: not known yet, the manifest is not in). */
export function inputsDeadlineMs(deadline: InputsDeadline, totalBytes: number | null): number {
  return deadline.baseMs + Math.ceil(((totalBytes ?? 0) * 1000) / deadline.minBytesPerSecond);
}

/** A run's inputs were not ready by their deadline: the run is refused with this. */
export class InputsDeadlineError extends CimeshError {
  constructor(message: string) {
    super("ERR_INPUTS_DEADLINE", message);
  }
}

/** A job names an image this node cannot make ready. */
export class ImageUnavailableError extends CimeshError {
  constructor(message: string) {
    super("ERR_IMAGE_UNAVAILABLE", message);
  }
}

/** Fetches a tree from the peers given (PeerIds or public keys), then the DHT's providers of it, verifying every blob. */
export function treeFetcher(host: Host, blobs: BlobStore, bans: PeerBans, log: NodeLog): FetchFrom {
  return async (root, hints, options = {}) => {
    // A tree held whole needs no provider: a cached job must not wait on a DHT query.
    const held = (await blobs.has(root)) ? await treeBlobs(root, blobs).catch(() => null) : null;
    const hinted = hints
      .map((hint) => (/^[0-9a-f]{64}$/.test(hint) ? peerIdOfPublicKeyHex(hint).toString() : hint))
      .filter((peerId) => peerId !== host.peerId);
    // The hints are asked while the DHT is searched: its providers join the fetch when found.
    const fromDht =
      held !== null && held.missing.length === 0
        ? undefined
        : host
            .findProviders(root)
            .then((found) => found.filter((peerId) => peerId !== host.peerId))
            .catch(() => [] as string[]);
    return fetchTree(host, blobs, root, hinted, {
      ...options,
      bans,
      moreProviders: fromDht,
      onDropped: (peerId, why, kind) => {
        log("blob-peer-dropped", { root, peerId, kind, why, bannedForMs: misbehaviourBanMs });
        options.onDropped?.(peerId, why, kind);
      },
    });
  };
}

/** Bytes of a tree this node already holds: what a bid reports of a job's inputs. */
export async function heldBytes(blobs: BlobStore, root: string): Promise<number> {
  if (!(await blobs.has(root).catch(() => false))) return 0;
  return (await treeBlobs(root, blobs).catch(() => ({ heldBytes: 0 }))).heldBytes;
}

/** Fetches a tree within the deadline its size allows (InputsDeadlineError past it); the caller pins. */
async function fetchWithinDeadline(
  fetchFrom: FetchFrom,
  deadline: InputsDeadline,
  what: string,
  root: string,
  master: string,
  options: Pick<FetchFromOptions, "pin" | "limit">,
): Promise<{ report: Awaited<ReturnType<FetchFrom>>; allowedMs: number; startedMs: number; signal: AbortSignal }> {
  const startedMs = Date.now();
  const stop = new AbortController();
  let totalBytes: number | null = null;
  let doneBytes = 0;
  const dropped: string[] = [];
  let allowedMs = inputsDeadlineMs(deadline, null);
  const expire = () => {
    const size =
      totalBytes === null
        ? "before its manifest was in"
        : `${doneBytes} of ${totalBytes} bytes fetched (${deadline.minBytesPerSecond} bytes/s allowed for them)`;
    stop.abort(
      new InputsDeadlineError(
        `${what} ${root}: expected it ready within ${allowedMs} ms (${deadline.baseMs} ms and its bytes ` +
          `at ${deadline.minBytesPerSecond} bytes/s), but after ${Date.now() - startedMs} ms: ${size}; ` +
          `${dropped.length} provider(s) dropped for stalling or lying`,
      ),
    );
  };
  let timer = setTimeout(expire, allowedMs);
  const onProgress = (done: number, total: number) => {
    doneBytes = done;
    if (totalBytes !== null) return;
    // The manifest is in: the deadline grows with the bytes to move.
    totalBytes = total;
    allowedMs = inputsDeadlineMs(deadline, total);
    clearTimeout(timer);
    timer = setTimeout(expire, Math.max(0, startedMs + allowedMs - Date.now()));
  };
  try {
    const report = await fetchFrom(root, [master], {
      ...options,
      onProgress,
      signal: stop.signal,
      onDropped: (peerId) => dropped.push(peerId),
    });
    return { report, allowedMs, startedMs, signal: stop.signal };
  } catch (error) {
    throw stop.signal.aborted ? stop.signal.reason : error;
  } finally {
    clearTimeout(timer);
  }
}

/** What makes an image ready on this node: the store it is fetched into, the fetch, the cache of unpacked copies. */
export interface ImageSources {
  readonly blobs: BlobStore;
  readonly fetchFrom: FetchFrom;
  readonly images: ImageCache;
  readonly deadline: InputsDeadline;
}

/**
 * Fetches an image (every blob verified; pinned through `pin`) from `hint` and the DHT within its deadline and the
 * store's quota (an image past the quota, unpacked, is refused once its manifest is in), then has the cache unpack
 * it, or find it unpacked. The caller releases `ready` when its run ends.
 */
export async function readyImage(
  sources: ImageSources,
  image: string,
  hint: string,
  pin: (cids: readonly string[]) => () => void,
) {
  pin([image]);
  // An image lives in the cache beside everything else: it must fit the quota, unpacked, or it is refused.
  const quota = sources.blobs.quotaBytes;
  const limit: UnpackLimit | undefined =
    quota === null ? undefined : { maxBytes: quota, name: `this worker's cache quota (worker.cacheQuota)` };
  const fetched = await fetchWithinDeadline(sources.fetchFrom, sources.deadline, "image", image, hint, {
    pin,
    ...(limit === undefined ? {} : { limit }),
  });
  const ready = await sources.images.ready(image, limit);
  return { ...fetched, ready };
}

/** For the spec checker: an image made ready from `hint` (a spec's signer), with a release that also drops its pins. */
export function imagePreparer(sources: ImageSources) {
  return async (image: string, hint: string): Promise<{ root: string; release: () => void }> => {
    const releases: (() => void)[] = [];
    const pin = (cids: readonly string[]) => {
      const undo = sources.blobs.pin(cids);
      releases.push(undo);
      return undo;
    };
    let root: string;
    try {
      const { ready } = await readyImage(sources, image, hint, pin);
      releases.push(ready.release);
      root = ready.root;
    } catch (error) {
      for (const undo of releases) undo();
      throw error;
    }
    return {
      root,
      release: () => {
        for (const undo of releases) undo();
      },
    };
  };
}

/**
 * Runs on this worker: their inputs are fetched from the run's master (and the DHT) and unpacked before the first
 * step, within the run's disk (the job's resources.diskBytes, at least minRunDiskBytes) and the inputs' deadline, pinned until the run ends, and
 * their outputs provided in the DHT after it. Inputs past the disk or the deadline refuse the run (the executor
 * reports the error as the run's summary). A job's image is fetched the same way (verified, within the cache's
 * quota, pinned while the run runs) and unpacked once into the image cache, whose copy every later run shares.
 */
export function runCarrier(options: {
  readonly executor: RunCarrier["executor"];
  readonly host: Host;
  readonly blobs: BlobStore;
  readonly fetchFrom: FetchFrom;
  readonly log: NodeLog;
  /** Fault injection for tests: every report carries this outputs digest instead of its own. */
  readonly corruptOutputsDigest: string | null;
  /** Default defaultInputsDeadline. */
  readonly inputsDeadline?: InputsDeadline;
  /** Where images are unpacked, shared between runs; null: jobs with an image are refused. */
  readonly images?: ImageCache | null;
}): RunCarrier {
  const { host, blobs, fetchFrom, log } = options;
  const images = options.images ?? null;
  const deadline = options.inputsDeadline ?? defaultInputsDeadline;
  const pins = new Map<string, () => void>();
  const release = (runId: string) => {
    pins.get(runId)?.();
    pins.delete(runId);
  };
  return {
    executor: options.executor,
    async prepare(run: ExecutionRequest, master: string, folder: string) {
      const releases: (() => void)[] = [];
      pins.set(run.runId, () => {
        for (const undo of releases) undo();
      });
      const pin = (cids: readonly string[]) => {
        const undo = blobs.pin(cids);
        releases.push(undo);
        return undo;
      };
      let imageRoot: string | null = null;
      const image = run.job.image;
      if (image !== undefined) {
        if (images === null) throw new ImageUnavailableError(`image ${image}: this node keeps no image cache`);
        const startedMs = Date.now();
        try {
          const { report, allowedMs, ready } = await readyImage(
            { blobs, fetchFrom, images, deadline },
            image,
            master,
            pin,
          );
          releases.push(ready.release);
          imageRoot = ready.root;
          const counters = images.counters();
          log("image-ready", {
            runId: run.runId,
            image,
            fetchedBlobs: report.fetchedBlobs,
            fetchedBytes: report.fetchedBytes,
            totalBytes: report.totalBytes,
            unpacked: ready.unpacked,
            imageUnpacks: counters.unpacks,
            imageReuses: counters.reuses,
            tookMs: Date.now() - startedMs,
            deadlineMs: allowedMs,
          });
        } catch (error) {
          log("image-refused", { runId: run.runId, image, tookMs: Date.now() - startedMs, error: String(error) });
          throw error;
        }
        void host.provide(image).catch(() => undefined);
      }
      const root = run.job.inputsDigest;
      if (root === null) return { imageRoot };
      pin([root]);
      // The inputs share the run's disk: what the job declares, with the floor every run gets (the sandbox's measure).
      const limit: UnpackLimit = {
        maxBytes: runDiskLimitBytes(run.job.resources.diskBytes),
        name: `the job's resources.diskBytes (${run.job.resources.diskBytes} declared, at least ${minRunDiskBytes} for any run)`,
      };
      const startedMs = Date.now();
      try {
        const { report, allowedMs, signal } = await fetchWithinDeadline(fetchFrom, deadline, "inputs", root, master, {
          pin,
          limit,
        });
        const unpacked = await unpackTree(root, blobs, folder, { limit, signal });
        log("inputs-ready", {
          runId: run.runId,
          root,
          fetchedBlobs: report.fetchedBlobs,
          fetchedBytes: report.fetchedBytes,
          totalBytes: report.totalBytes,
          files: unpacked.files,
          tookMs: Date.now() - startedMs,
          deadlineMs: allowedMs,
          askedPeers: report.askedPeers,
          droppedPeers: report.droppedPeers,
          bytesByPeer: report.bytesByPeer,
        });
      } catch (error) {
        log("inputs-refused", { runId: run.runId, root, tookMs: Date.now() - startedMs, error: String(error) });
        throw error;
      }
      void host.provide(root).catch(() => undefined);
      return { imageRoot };
    },
    async finished(run: ExecutionRequest, report: ExecutionReport | null) {
      release(run.runId);
      if (report === null) return null;
      if (report.outputsDigest !== null && (await blobs.has(report.outputsDigest)))
        void host.provide(report.outputsDigest).catch(() => undefined);
      return options.corruptOutputsDigest === null
        ? report
        : { ...report, outputsDigest: options.corruptOutputsDigest };
    },
  };
}
