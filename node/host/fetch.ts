/**
 * The blob protocol: inputs and outputs travel through the mesh by content,
 * as Chromium's Isolate did. One stream asks one peer for one blob by CID and
 * gets one frame back: a status byte, then the blob. A fetch of a tree asks
 * for its manifest, then for every chunk the store lacks, a bounded number
 * at a time, spread over the providers it was given.
 *
 * Every blob is verified against its CID before it is stored or used (the
 * blob store's put, with crypto/'s verifyBlob): a peer that sends bytes that do not hash to what was
 * asked is dropped for this fetch, banned for a while, and hung up on; the
 * fetch goes on with the others. A peer that merely lacks a blob or times out
 * is asked no more for that blob, and nothing else happens to it.
 */
import { readFile } from "node:fs/promises";
import {
  BlobMismatchError,
  CimeshError,
  decodeManifest,
  maxBlobBytes,
  maxCidChars,
  OversizeError,
  parseTreeCid,
  type TreeManifest,
} from "../../crypto/index.ts";
import { type BlobStore, treeBlobs } from "../store/index.ts";
import type { Host, RequestProtocolOptions } from "./host.ts";

export const blobProtocol = "/cimesh/blob/1.0.0";
/** Blobs asked for at once by one tree fetch. */
export const maxConcurrentBlobFetches = 32;
/** Providers one fetch uses at most. */
export const maxProvidersPerFetch = 16;
/** How long a peer that sent a wrong blob is asked for nothing. */
export const misbehaviourBanMs = 10 * 60_000;
/** Peers remembered as banned at once; the oldest ban goes first. */
export const maxBannedPeers = 4096;
/** One blob request, from dial to the last byte of the answer. */
export const blobRequestTimeoutMs = 60_000;

const statusFound = 0;
const statusMissing = 1;

export const blobProtocolOptions: RequestProtocolOptions = {
  maxRequestBytes: maxCidChars,
  maxResponseBytes: maxBlobBytes + 1,
  maxInboundStreams: 64,
  timeoutMs: blobRequestTimeoutMs,
};

export class FetchError extends CimeshError {
  constructor(message: string) {
    super("ERR_FETCH", message);
  }
}

/** Peers that sent a wrong blob, and until when they are left alone. */
export class PeerBans {
  private readonly until = new Map<string, number>();
  ban(peerId: string, nowMs: number): void {
    this.until.delete(peerId);
    this.until.set(peerId, nowMs + misbehaviourBanMs);
    while (this.until.size > maxBannedPeers) this.until.delete(this.until.keys().next().value as string);
  }
  isBanned(peerId: string, nowMs: number): boolean {
    const until = this.until.get(peerId);
    if (until === undefined) return false;
    if (until > nowMs) return true;
    this.until.delete(peerId);
    return false;
  }
}

/** Serves this node's blobs to any peer that asks by CID. */
export async function serveBlobs(host: Host, store: BlobStore): Promise<void> {
  await host.handleRequests(blobProtocol, blobProtocolOptions, async (request) => {
    const { cid } = parseTreeCid(new TextDecoder().decode(request));
    // Served as stored, unhashed: the asker verifies every blob against its CID, and drops a server that sends a wrong one.
    const bytes = await readFile(store.pathOf(cid)).catch((error: NodeJS.ErrnoException) =>
      error.code === "ENOENT" ? null : Promise.reject(error),
    );
    if (bytes === null) return Uint8Array.of(statusMissing);
    const response = new Uint8Array(bytes.length + 1);
    response[0] = statusFound;
    response.set(bytes, 1);
    return response;
  });
}

export interface FetchOptions {
  readonly bans: PeerBans;
  /** Told when a peer is dropped for a wrong blob. */
  readonly onDropped?: (peerId: string, why: string) => void;
  readonly onProgress?: (doneBytes: number, totalBytes: number) => void;
  readonly concurrency?: number;
  /** Pins the tree's blobs for the caller (so a small cache evicts none of them mid-fetch); returns the release. */
  readonly pin?: (cids: readonly string[]) => () => void;
}

export interface FetchReport {
  readonly root: string;
  readonly manifest: TreeManifest;
  /** Blobs and bytes that came over the network in this fetch (the store had the rest). */
  readonly fetchedBlobs: number;
  readonly fetchedBytes: number;
  readonly totalBytes: number;
  readonly droppedPeers: readonly string[];
}

/** Fetches every blob of the tree `root` the store lacks, from `providers` (PeerIds), verifying each. */
export async function fetchTree(
  host: Pick<Host, "request" | "hangUp">,
  store: BlobStore,
  root: string,
  providers: readonly string[],
  options: FetchOptions,
): Promise<FetchReport> {
  const parsed = parseTreeCid(root, "root");
  if (parsed.kind !== "manifest")
    throw new FetchError(`root: expected the CID of a tree manifest (dag-cbor), got a raw blob CID ${root}`);
  const live = [...new Set(providers)].slice(0, maxProvidersPerFetch);
  const dropped: string[] = [];
  let fetchedBlobs = 0;
  let fetchedBytes = 0;

  const drop = (peerId: string, why: string) => {
    if (dropped.includes(peerId)) return;
    dropped.push(peerId);
    options.bans.ban(peerId, Date.now());
    options.onDropped?.(peerId, why);
    void host.hangUp(peerId);
  };

  /** One blob from the first provider that has it, starting at `start` so concurrent fetches spread out. */
  const fetchOne = async (cid: string, kind: "blob" | "manifest", start: number): Promise<void> => {
    const problems: string[] = [];
    for (let offset = 0; offset < live.length; offset++) {
      const peerId = live[(start + offset) % live.length] as string;
      if (dropped.includes(peerId) || options.bans.isBanned(peerId, Date.now())) continue;
      let response: Uint8Array;
      try {
        response = await host.request(peerId, blobProtocol, new TextEncoder().encode(cid), blobProtocolOptions);
      } catch (error) {
        problems.push(`${peerId.slice(-8)}: ${String(error)}`);
        continue;
      }
      if (response[0] !== statusFound) {
        problems.push(`${peerId.slice(-8)}: does not have it`);
        continue;
      }
      const bytes = response.subarray(1);
      try {
        // The store verifies the bytes against the CID before it keeps them: one hash per blob, not two.
        if (kind === "manifest") await store.putManifest(bytes, cid);
        else await store.put(bytes, cid);
      } catch (error) {
        if (!(error instanceof BlobMismatchError || error instanceof OversizeError)) throw error;
        drop(peerId, String(error));
        continue;
      }
      fetchedBlobs += 1;
      fetchedBytes += bytes.length;
      return;
    }
    throw new FetchError(
      `blob ${cid}: expected one of ${live.length} provider(s) to send it, but ${problems.join("; ") || "every one was dropped or banned"}`,
    );
  };

  if (!(await store.has(root))) await fetchOne(root, "manifest", 0);
  const manifestBytes = await store.get(root);
  if (manifestBytes === null) throw new FetchError(`root ${root}: the manifest vanished from the store`);
  const manifest = decodeManifest(manifestBytes);
  const plan = await treeBlobs(root, store);
  options.pin?.([root, ...plan.chunks]);
  const missing = [...new Set(plan.missing)];
  let doneBytes = plan.heldBytes;
  options.onProgress?.(doneBytes, plan.totalBytes);
  let next = 0;
  const concurrency = Math.max(1, Math.min(options.concurrency ?? maxConcurrentBlobFetches, maxConcurrentBlobFetches));
  const lane = async (laneIndex: number) => {
    while (next < missing.length) {
      const index = next++;
      const cid = missing[index] as string;
      const before = fetchedBytes;
      await fetchOne(cid, "blob", index + laneIndex);
      doneBytes += fetchedBytes - before;
      options.onProgress?.(doneBytes, plan.totalBytes);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, missing.length) }, (_, index) => lane(index)));
  return { root, manifest, fetchedBlobs, fetchedBytes, totalBytes: plan.totalBytes, droppedPeers: dropped };
}
