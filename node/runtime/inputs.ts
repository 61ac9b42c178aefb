/**
 * Content-addressed trees for runs and people: fetching a tree from hinted
 * peers and the DHT's providers (every blob verified), unpacking a run's
 * inputs into its folder while pinning them against eviction, and releasing
 * the pins when the run ends.
 */
import type { ExecutionReport, ExecutionRequest } from "../../jobs/index.ts";
import { fetchTree, type Host, type PeerBans, peerIdOfPublicKeyHex } from "../host/index.ts";
import { type BlobStore, treeBlobs, unpackTree } from "../store/index.ts";
import type { NodeLog, RunCarrier } from "./ports.ts";

export type FetchFrom = (
  root: string,
  hints: readonly string[],
  onProgress?: (done: number, total: number) => void,
  pin?: (cids: readonly string[]) => () => void,
) => ReturnType<typeof fetchTree>;

/** Fetches a tree from the peers given (PeerIds or public keys) and the DHT's providers of it, verifying every blob. */
export function treeFetcher(host: Host, blobs: BlobStore, bans: PeerBans, log: NodeLog): FetchFrom {
  return async (root, hints, onProgress, pin) => {
    // A tree held whole needs no provider: a cached job must not wait on a DHT query.
    const held = (await blobs.has(root)) ? await treeBlobs(root, blobs).catch(() => null) : null;
    const fromDht =
      held !== null && held.missing.length === 0 ? [] : await host.findProviders(root).catch(() => [] as string[]);
    const providers = [
      ...hints.map((hint) => (/^[0-9a-f]{64}$/.test(hint) ? peerIdOfPublicKeyHex(hint).toString() : hint)),
      ...fromDht,
    ].filter((peerId) => peerId !== host.peerId);
    return fetchTree(host, blobs, root, providers, {
      bans,
      onProgress,
      pin,
      onDropped: (peerId, why) => log("blob-peer-dropped", { peerId, why }),
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
 * step, pinned until the run ends, and their outputs provided in the DHT after it.
 */
export function runCarrier(options: {
  readonly executor: RunCarrier["executor"];
  readonly host: Host;
  readonly blobs: BlobStore;
  readonly fetchFrom: FetchFrom;
  readonly log: NodeLog;
  /** Fault injection for tests: every report carries this outputs digest instead of its own. */
  readonly corruptOutputsDigest: string | null;
}): RunCarrier {
  const { host, blobs, fetchFrom, log } = options;
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
      const report = await fetchFrom(root, [master], undefined, (cids) => {
        const undo = blobs.pin(cids);
        releases.push(undo);
        return undo;
      });
      const unpacked = await unpackTree(root, blobs, folder);
      log("inputs-ready", {
        runId: run.runId,
        root,
        fetchedBlobs: report.fetchedBlobs,
        fetchedBytes: report.fetchedBytes,
        totalBytes: report.totalBytes,
        files: unpacked.files,
      });
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
