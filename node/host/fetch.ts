/**
 * The blob protocol: inputs and outputs travel through the mesh by content,
 * as Chromium's Isolate did. One stream asks one peer for one blob by CID and
 * gets one frame back: a status byte, then the blob. A fetch of a tree asks
 * for its manifest, then for every chunk the store lacks, a bounded number
 * at a time, spread over the providers it was given (the hints first, then
 * those the DHT names as they are found, a bounded number of each).
 *
 * Every blob is verified against its CID before it is stored or used (the
 * blob store's put, with crypto/'s verifyBlob): a peer that sends bytes that do not hash to what was
 * asked is dropped for this fetch, banned for a while, and hung up on; the
 * fetch goes on with the others. So is a peer that stalls: anyone may claim
 * to provide a tree, and one that takes requests and answers none would
 * otherwise hold each blob for the protocol's whole time limit. A provider
 * is asked minRequestsPerProvider blobs at once until it has answered; then
 * as many as it answers in half of blobStallMs at the rate it has shown in this
 * fetch (at most maxRequestsPerProvider), so a fast provider is kept busy
 * while the next answers are on their way, and a slow one is never asked more
 * than it can answer within the stall time. It stalls when, with requests
 * outstanding, it completes no answer for blobStallMs, or holds one request
 * for blobStallMs times the requests it was allowed when it was asked
 * (answering others to look alive). The host's request gives a whole answer
 * or none, so progress is counted in answers: an honest provider needs about
 * minRequestsPerProvider × treeChunkBytes per blobStallMs of upload. A peer
 * that merely lacks a blob or fails to answer is asked no more for that blob,
 * and nothing else happens to it; the blob is asked next of the providers
 * that have sent a good blob in this fetch, so stallers cost one stall, not
 * one each.
 *
 * A tree is checked against the caller's unpack limit as soon as its manifest
 * is in: one that would unpack past it is refused before any chunk is asked for.
 */
import { open } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import {
  BlobMismatchError,
  blobLength,
  CimeshError,
  decodeManifest,
  joinedBlob,
  maxBlobBytes,
  maxCidChars,
  OversizeError,
  parseTreeCid,
  type TreeManifest,
  treeChunkBytes,
} from "../../crypto/index.ts";
import { type BlobStore, checkUnpackLimit, treeBlobs, type UnpackLimit } from "../store/index.ts";
import type { Host, RequestProtocolOptions } from "./host.ts";

export const blobProtocol = "/cimesh/blob/1.0.0";
/** Blobs asked for at once by one tree fetch. */
export const maxConcurrentBlobFetches = 32;
/** Providers one fetch uses at most, the hints first. */
export const maxProvidersPerFetch = 16;
/** Of those, providers named by the DHT (anyone can claim to provide a tree there): a random few of those found. */
export const maxDhtProvidersPerFetch = 8;
/** Blobs one fetch asks at once of a provider that has answered none yet: few, so an honest one completes one within blobStallMs. */
export const minRequestsPerProvider = 2;
/** Blobs one fetch asks at once of a provider that answers fast: enough to keep a local link busy. */
export const maxRequestsPerProvider = 8;
/** A provider with requests outstanding that completes no answer for this long stalls: dropped and banned. */
export const blobStallMs = 5_000;
/** How long a peer that sent a wrong blob, or stalled, is asked for nothing. */
export const misbehaviourBanMs = 10 * 60_000;
/** Peers remembered as banned at once; the oldest ban goes first. */
export const maxBannedPeers = 4096;
/** One blob request, from dial to the last byte of the answer. */
export const blobRequestTimeoutMs = 60_000;

const statusFound = 0;
const statusMissing = 1;

/**
 * A manifest's size as a request over a relayed connection reserves of the relay's limits; a larger one is refused
 * at its length prefix there (and asked elsewhere), so the relay never has to cut it.
 */
export const relayedManifestBytes = 1024 * 1024;

export const blobProtocolOptions: RequestProtocolOptions = {
  maxRequestBytes: maxCidChars,
  maxResponseBytes: maxBlobBytes + 1,
  maxInboundStreams: 64,
  timeoutMs: blobRequestTimeoutMs,
  bulk: true,
};

export class FetchError extends CimeshError {
  constructor(message: string) {
    super("ERR_FETCH", message);
  }
}

/** Peers that sent a wrong blob or stalled, and until when they are left alone. */
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
    return (await readFoundResponse(store.pathOf(cid))) ?? Uint8Array.of(statusMissing);
  });
}

/**
 * The found answer for the blob file at `path` (statusFound, then its bytes), or null when there is no such file. The
 * file is read straight into the answer behind its status byte: one buffer, neither zeroed nor copied, per blob served.
 */
async function readFoundResponse(path: string): Promise<Uint8Array | null> {
  const file = await open(path, "r").catch((error: NodeJS.ErrnoException) =>
    error.code === "ENOENT" ? null : Promise.reject(error),
  );
  if (file === null) return null;
  try {
    const { size } = await file.stat();
    // Not zeroed first: every byte is either read into or cut off below.
    const response = Buffer.allocUnsafe(size + 1);
    response[0] = statusFound;
    let filled = 1;
    while (filled < response.length) {
      const { bytesRead } = await file.read(response, filled, response.length - filled, filled - 1);
      if (bytesRead === 0) break;
      filled += bytesRead;
    }
    return filled === response.length ? response : response.subarray(0, filled);
  } finally {
    await file.close();
  }
}

/** Why a peer was dropped from a fetch: it sent a blob that is not what was asked, or it stalled. */
export type DropKind = "wrong-blob" | "stalled";

export interface FetchOptions {
  readonly bans: PeerBans;
  /** Told when a peer is dropped (and banned) for a wrong blob or a stall. */
  readonly onDropped?: (peerId: string, why: string, kind: DropKind) => void;
  readonly onProgress?: (doneBytes: number, totalBytes: number) => void;
  readonly concurrency?: number;
  /** Pins the tree's blobs for the caller (so a small cache evicts none of them mid-fetch); returns the release. */
  readonly pin?: (cids: readonly string[]) => () => void;
  /** Providers found later (the DHT's): asked after those given, at most maxDhtProvidersPerFetch of them, at random. */
  readonly moreProviders?: Promise<readonly string[]>;
  /** A tree that would unpack past this is refused as soon as its manifest is in (TreeTooLargeError). */
  readonly limit?: UnpackLimit;
  /** Ends the fetch (FetchError naming the reason) when aborted: the caller's deadline. */
  readonly signal?: AbortSignal;
  /** blobStallMs, for tests. */
  readonly stallMs?: number;
}

export interface FetchReport {
  readonly root: string;
  readonly manifest: TreeManifest;
  /** Blobs and bytes that came over the network in this fetch (the store had the rest). */
  readonly fetchedBlobs: number;
  readonly fetchedBytes: number;
  readonly totalBytes: number;
  /** Peers dropped (and banned) in this fetch: for a wrong blob or a stall. */
  readonly droppedPeers: readonly string[];
  /** Providers this fetch asked for something. */
  readonly askedPeers: number;
  /** Bytes each provider sent that were kept (by PeerId): where the tree came from. */
  readonly bytesByPeer: Readonly<Record<string, number>>;
}

/** One provider during one fetch: its requests outstanding, and since when it owes an answer. */
interface ProviderState {
  inFlight: number;
  /** When it was first asked, and how many answers it has completed since: its rate in this fetch. */
  readonly firstAskedMs: number;
  answers: number;
  /** When it last completed an answer, or got work while it had none. */
  sinceMs: number;
}

type Asked =
  /** The answer as the pieces it arrived in: a status byte, then the blob. */
  | { readonly kind: "answer"; readonly response: readonly Uint8Array[] }
  | { readonly kind: "failed"; readonly why: string }
  | { readonly kind: "stalled"; readonly why: string }
  | { readonly kind: "aborted" };

/** Fisher-Yates, so which DHT providers a fetch uses is not the order an attacker's records come in. */
function shuffled<T>(items: readonly T[]): T[] {
  const copy = [...items];
  for (let index = copy.length - 1; index > 0; index--) {
    const other = Math.floor(Math.random() * (index + 1));
    [copy[index], copy[other]] = [copy[other] as T, copy[index] as T];
  }
  return copy;
}

/** Fetches every blob of the tree `root` the store lacks, from `providers` (PeerIds) and then options.moreProviders, verifying each. */
export async function fetchTree(
  host: Pick<Host, "requestPieces" | "hangUp">,
  store: BlobStore,
  root: string,
  providers: readonly string[],
  options: FetchOptions,
): Promise<FetchReport> {
  const parsed = parseTreeCid(root, "root");
  if (parsed.kind !== "manifest")
    throw new FetchError(`root: expected the CID of a tree manifest (dag-cbor), got a raw blob CID ${root}`);
  const fetch = new TreeFetch(host, store, root, providers, options);
  try {
    return await fetch.run();
  } finally {
    fetch.close();
  }
}

/** One fetch of one tree: its providers, their states, what it has dropped and what it has kept. */
class TreeFetch {
  private readonly stallMs: number;
  private readonly live: string[];
  private readonly states = new Map<string, ProviderState>();
  private readonly dropped: string[] = [];
  /** Providers that sent a good blob in this fetch. */
  private readonly proven = new Set<string>();
  private readonly bytesByPeer = new Map<string, number>();
  private fetchedBlobs = 0;
  private fetchedBytes = 0;
  private failed = false;
  /** Lanes waiting for a provider's slot, or for more providers, are woken by any change. */
  private waiting: (() => void)[] = [];
  /** One promise per fetch (not a listener per request) that every request races against. */
  private readonly abortedAsked: Promise<Asked>;
  private resolveAborted: (asked: Asked) => void = () => undefined;
  private readonly onAbort = () => {
    this.resolveAborted({ kind: "aborted" });
    this.changed();
  };
  private laterPending: boolean;
  /** Settles once options.moreProviders has been added to the live providers (or failed). */
  private readonly later: Promise<void>;

  private readonly host: Pick<Host, "requestPieces" | "hangUp">;
  private readonly store: BlobStore;
  private readonly root: string;
  private readonly options: FetchOptions;

  constructor(
    host: Pick<Host, "requestPieces" | "hangUp">,
    store: BlobStore,
    root: string,
    providers: readonly string[],
    options: FetchOptions,
  ) {
    this.host = host;
    this.store = store;
    this.root = root;
    this.options = options;
    this.stallMs = options.stallMs ?? blobStallMs;
    this.live = [...new Set(providers)].slice(0, maxProvidersPerFetch);
    this.abortedAsked = new Promise<Asked>((resolve) => {
      this.resolveAborted = resolve;
    });
    const { signal } = options;
    if (signal?.aborted === true) this.onAbort();
    signal?.addEventListener("abort", this.onAbort);
    this.laterPending = options.moreProviders !== undefined;
    this.later = (options.moreProviders ?? Promise.resolve([]))
      .catch(() => [] as readonly string[])
      .then((found) => {
        const fresh = found.filter((peerId) => !this.live.includes(peerId));
        const room = Math.max(0, maxProvidersPerFetch - this.live.length);
        this.live.push(...shuffled(fresh).slice(0, Math.min(room, maxDhtProvidersPerFetch)));
        this.laterPending = false;
        this.changed();
      });
  }

  close(): void {
    this.options.signal?.removeEventListener("abort", this.onAbort);
  }

  private changed(): void {
    const woken = this.waiting;
    this.waiting = [];
    for (const wake of woken) wake();
  }

  private nextChange(): Promise<void> {
    return new Promise<void>((resolve) => this.waiting.push(resolve));
  }

  private stopped(): FetchError | null {
    const { signal } = this.options;
    if (signal?.aborted === true) return new FetchError(`tree ${this.root}: fetch stopped: ${String(signal.reason)}`);
    return null;
  }

  private drop(peerId: string, why: string, kind: DropKind): void {
    if (this.dropped.includes(peerId)) return;
    this.dropped.push(peerId);
    this.options.bans.ban(peerId, Date.now());
    this.options.onDropped?.(peerId, why, kind);
    void this.host.hangUp(peerId);
    this.changed();
  }

  private usable(peerId: string): boolean {
    return !this.dropped.includes(peerId) && !this.options.bans.isBanned(peerId, Date.now());
  }

  private stateOf(peerId: string): ProviderState {
    let state = this.states.get(peerId);
    if (state === undefined) {
      state = { inFlight: 0, sinceMs: Date.now(), firstAskedMs: Date.now(), answers: 0 };
      this.states.set(peerId, state);
    }
    return state;
  }

  /** Requests the provider may hold at once: what it answers in half the stall time at its rate so far, within bounds. */
  private windowOf(state: ProviderState): number {
    if (state.answers === 0) return minRequestsPerProvider;
    const answersPerHalfStall = (state.answers * this.stallMs) / (2 * Math.max(1, Date.now() - state.firstAskedMs));
    return Math.min(maxRequestsPerProvider, Math.max(minRequestsPerProvider, Math.floor(answersPerHalfStall)));
  }

  /** Resolves when the provider stalls (see the file's comment), unless `until` is aborted first. */
  private async stallOf(state: ProviderState, sentMs: number, window: number, until: AbortSignal): Promise<Asked> {
    const { stallMs } = this;
    const holdMs = stallMs * window;
    for (;;) {
      const nowMs = Date.now();
      const silentMs = nowMs - state.sinceMs;
      const heldMs = nowMs - sentMs;
      if (silentMs >= stallMs) return { kind: "stalled", why: `stalled: completed no answer for ${silentMs} ms` };
      if (heldMs >= holdMs)
        return { kind: "stalled", why: `stalled: held one request for ${heldMs} ms while answering others` };
      const waitMs = Math.min(state.sinceMs + stallMs, sentMs + holdMs) - nowMs;
      try {
        await sleep(Math.max(1, waitMs), undefined, { signal: until });
      } catch {
        return { kind: "aborted" };
      }
    }
  }

  /** One request to one provider, ended early by a stall or by the caller's signal. */
  private async ask(peerId: string, cid: string, kind: "blob" | "manifest"): Promise<Asked> {
    const state = this.stateOf(peerId);
    const sentMs = Date.now();
    const window = this.windowOf(state);
    if (state.inFlight === 0) state.sinceMs = sentMs;
    state.inFlight += 1;
    const settled = new AbortController();
    const answered = this.host
      .requestPieces(peerId, blobProtocol, new TextEncoder().encode(cid), {
        ...blobProtocolOptions,
        // A chunk is at most treeChunkBytes: what a relayed connection must have room for.
        expectedResponseBytes: kind === "manifest" ? relayedManifestBytes + 1 : treeChunkBytes + 1,
      })
      .then(
        (response): Asked => {
          state.sinceMs = Date.now();
          state.answers += 1;
          return { kind: "answer", response };
        },
        (error: unknown): Asked => ({ kind: "failed", why: String(error) }),
      );
    try {
      return await Promise.race([answered, this.stallOf(state, sentMs, window, settled.signal), this.abortedAsked]);
    } finally {
      settled.abort();
      state.inFlight -= 1;
      this.changed();
    }
  }

  /**
   * The provider to ask next for a blob, skipping those tried: "full" when every
   * candidate's window is full, "finding" when none is left but more providers are
   * still being found, null when none is left at all.
   */
  private nextProvider(start: number, tried: ReadonlySet<string>): string | "full" | "finding" | null {
    const { live } = this;
    const rotated = live.map((_, offset) => live[(start + offset) % live.length] as string);
    // A blob asked again (its first provider failed it) goes to those that have sent a good blob first.
    const order =
      tried.size === 0
        ? rotated
        : [
            ...rotated.filter((peerId) => this.proven.has(peerId)),
            ...rotated.filter((peerId) => !this.proven.has(peerId)),
          ];
    const candidates = order.filter((peerId) => !tried.has(peerId) && this.usable(peerId));
    if (candidates.length === 0) return this.laterPending ? "finding" : null;
    const peerId = candidates.find((candidate) => {
      const state = this.states.get(candidate);
      return state === undefined || state.inFlight < this.windowOf(state);
    });
    return peerId ?? "full";
  }

  /** Stores what a provider answered, verified; the problem to note when it is not the blob. */
  private async keep(
    peerId: string,
    cid: string,
    kind: "blob" | "manifest",
    response: readonly Uint8Array[],
  ): Promise<string | null> {
    const pieces = response.filter((piece) => piece.length > 0);
    if (pieces[0]?.[0] !== statusFound) return "does not have it";
    // The blob's pieces behind the status byte: hashed and written as they are, not joined (it is up to 1 MiB).
    const blob = [(pieces[0] as Uint8Array).subarray(1), ...pieces.slice(1)];
    const length = blobLength(blob);
    try {
      // The store verifies the bytes against the CID before it keeps them: one hash per blob, not two.
      if (kind === "manifest") await this.store.putManifest(joinedBlob(blob), cid);
      else await this.store.put(blob, cid);
    } catch (error) {
      if (!(error instanceof BlobMismatchError || error instanceof OversizeError)) throw error;
      this.drop(peerId, String(error), "wrong-blob");
      return "sent a wrong blob";
    }
    this.proven.add(peerId);
    this.fetchedBlobs += 1;
    this.fetchedBytes += length;
    this.bytesByPeer.set(peerId, (this.bytesByPeer.get(peerId) ?? 0) + length);
    return null;
  }

  /** One blob from the first provider that has it, starting at `start` so concurrent fetches spread out. */
  private async fetchOne(cid: string, kind: "blob" | "manifest", start: number): Promise<void> {
    const problems: string[] = [];
    const tried = new Set<string>();
    for (;;) {
      const stop = this.stopped();
      if (stop !== null) throw stop;
      const peerId = this.nextProvider(start, tried);
      if (peerId === null)
        throw new FetchError(
          `blob ${cid}: expected one of ${this.live.length} provider(s) to send it, but ${problems.join("; ") || "every one was dropped or banned"}`,
        );
      if (peerId === "finding") {
        await Promise.race([this.later, this.nextChange()]);
        continue;
      }
      if (peerId === "full") {
        await this.nextChange();
        continue;
      }
      tried.add(peerId);
      const asked = await this.ask(peerId, cid, kind);
      if (asked.kind === "aborted") continue;
      if (asked.kind === "failed") {
        problems.push(`${peerId.slice(-8)}: ${asked.why}`);
        continue;
      }
      if (asked.kind === "stalled") {
        problems.push(`${peerId.slice(-8)}: ${asked.why}`);
        this.drop(peerId, asked.why, "stalled");
        continue;
      }
      const problem = await this.keep(peerId, cid, kind, asked.response);
      if (problem === null) return;
      problems.push(`${peerId.slice(-8)}: ${problem}`);
    }
  }

  /** The manifest first (checked against the unpack limit), then every missing chunk over a bounded number of lanes. */
  async run(): Promise<FetchReport> {
    const { root, store, options } = this;
    if (!(await store.has(root))) await this.fetchOne(root, "manifest", 0);
    const manifestBytes = await store.get(root);
    if (manifestBytes === null) throw new FetchError(`root ${root}: the manifest vanished from the store`);
    const manifest = decodeManifest(manifestBytes);
    // Before a chunk is asked for: a tree bomb costs its manifest, not the bytes it names.
    checkUnpackLimit(root, manifest, options.limit);
    const plan = await treeBlobs(root, store);
    options.pin?.([root, ...plan.chunks]);
    const missing = [...new Set(plan.missing)];
    let doneBytes = plan.heldBytes;
    options.onProgress?.(doneBytes, plan.totalBytes);
    let next = 0;
    const concurrency = Math.max(
      1,
      Math.min(options.concurrency ?? maxConcurrentBlobFetches, maxConcurrentBlobFetches),
    );
    const lane = async (laneIndex: number) => {
      while (next < missing.length && !this.failed) {
        const index = next++;
        const cid = missing[index] as string;
        const before = this.fetchedBytes;
        await this.fetchOne(cid, "blob", index + laneIndex);
        doneBytes += this.fetchedBytes - before;
        options.onProgress?.(doneBytes, plan.totalBytes);
      }
    };
    await Promise.all(
      Array.from({ length: Math.min(concurrency, missing.length) }, (_, index) =>
        lane(index).catch((error: unknown) => {
          this.failed = true;
          throw error;
        }),
      ),
    );
    return {
      root,
      manifest,
      fetchedBlobs: this.fetchedBlobs,
      fetchedBytes: this.fetchedBytes,
      totalBytes: plan.totalBytes,
      droppedPeers: this.dropped,
      askedPeers: this.states.size,
      bytesByPeer: Object.fromEntries(this.bytesByPeer),
    };
  }
}
