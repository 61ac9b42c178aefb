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

/**
 * Runs on this worker: their inputs are fetched from the run's master (and the DHT) and unpacked before the first
 * step, within the run's disk (the job's resources.diskBytes, at least minRunDiskBytes) and the inputs' deadline, pinned until the run ends, and
 * their outputs provided in the DHT after it. Inputs past the disk or the deadline refuse the run (the executor
 * reports the error as the run's summary).
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
}): RunCarrier {
  const { host, blobs, fetchFrom, log } = options;
  const deadline = options.inputsDeadline ?? defaultInputsDeadline;
  const pins = new Map<string, () => void>();
  const release = (runId: string) => {
    pins.get(runId)?.();
    pins.delete(runId);
  };
  return {
    executor: options.executor,
    async prepare(run: ExecutionRequest, master: string, folder: string) {
      const root = run.job.inputsDigest;
      if (root === null) return;
      const releases: (() => void)[] = [blobs.pin([root])];
      pins.set(run.runId, () => {
        for (const undo of releases) undo();
      });
      const pin = (cids: readonly string[]) => {
        const undo = blobs.pin(cids);
        releases.push(undo);
        return undo;
      };
      // The inputs share the run's disk: what the job declares, with the floor every run gets (the sandbox's measure).
      const limit: UnpackLimit = {
        maxBytes: runDiskLimitBytes(run.job.resources.diskBytes),
        name: `the job's resources.diskBytes (${run.job.resources.diskBytes} declared, at least ${minRunDiskBytes} for any run)`,
      };
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
            `inputs ${root}: expected them ready within ${allowedMs} ms (${deadline.baseMs} ms and the inputs' bytes ` +
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
          onProgress,
          pin,
          limit,
          signal: stop.signal,
          onDropped: (peerId) => dropped.push(peerId),
        });
        const unpacked = await unpackTree(root, blobs, folder, { limit, signal: stop.signal });
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
        });
      } catch (error) {
        const refusal = stop.signal.aborted ? stop.signal.reason : error;
        log("inputs-refused", { runId: run.runId, root, tookMs: Date.now() - startedMs, error: String(refusal) });
        throw refusal;
      } finally {
        clearTimeout(timer);
      }
      void host.provide(root).catch(() => undefined);
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
