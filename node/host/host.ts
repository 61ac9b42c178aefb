/**
 * The libp2p host of a node: TCP (or in-process memory) transport, noise,
 * yamux, identify, ping, gossipsub for the project topics, the Kademlia DHT
 * for records and providers, and the direct protocol for what goes to one
 * peer. It knows nothing of the protocol: it moves signed bytes and asks the
 * runtime's validators what to make of them.
 *
 * Choices, measured or required:
 * - Our payloads are signed envelopes already, so gossipsub runs StrictNoSign
 *   and a message id that is the sha-256 of the envelope: a second signature
 *   per message would double the verify cost, and a seqno-based id would let
 *   a replayed envelope through as a new message.
 * - Topic validators answer Reject for forgeries, which counts against the
 *   sender in gossipsub's peer score (invalid message deliveries, P4).
 * - Nothing a peer sends is free: each peer has a token bucket for the gossip
 *   it hands our validators and for the streams it opens on each request
 *   protocol (node/host/limits.ts); what is over it, and what the runtime
 *   reports as refused, costs it penalty points (node/host/penalties.ts),
 *   which are its application-specific score (P5); past a bound it is hung up
 *   on and refused by the connection gater for a while. Over-limit gossip is
 *   answered Ignore, not Reject: Reject would also count against every honest
 *   peer that relayed the same message.
 * - IP colocation (P6) counts the peers connected from an IP, not those that
 *   left (node/host/scoring.ts). Every peer on 127.0.0.1 shares one IP, so
 *   tests set its weight to 0; production keeps gossipsub's default.
 * - Our DHT is private to cimesh (its own protocol id), so peers' private
 *   addresses are kept: volunteer meshes are often on one LAN.
 */
import { createHash } from "node:crypto";
import { noise } from "@chainsafe/libp2p-noise";
import { yamux } from "@chainsafe/libp2p-yamux";
import { type GossipSub, gossipsub, StrictNoSign } from "@libp2p/gossipsub";
import type { PeerScore } from "@libp2p/gossipsub/score";
import { identify } from "@libp2p/identify";
import type { Connection, Libp2p, PeerId, Stream } from "@libp2p/interface";
import { type KadDHT, kadDHT, passthroughMapper, type SingleKadDHT } from "@libp2p/kad-dht";
import { mdns } from "@libp2p/mdns";
import { memory } from "@libp2p/memory";
import { peerIdFromString } from "@libp2p/peer-id";
import { ping } from "@libp2p/ping";
import { tcp } from "@libp2p/tcp";
import { multiaddr } from "@multiformats/multiaddr";
import * as lp from "it-length-prefixed";
import { createLibp2p, type Libp2pOptions } from "libp2p";
import { CID } from "multiformats/cid";
import * as raw from "multiformats/codecs/raw";
import { create as createDigest } from "multiformats/hashes/digest";
import { blobLength, CimeshError, type Identity, joinedBlob, maxEnvelopeBytes } from "../../crypto/index.ts";
import { peerIdOf, toLibp2pPrivateKey } from "../files/index.ts";
import { type LogWrite, type RateLimit, RateLimiter } from "./limits.ts";
import {
  connectionFor,
  type NatOptions,
  natServices,
  ownAddresses,
  type Reachability,
  ReachabilityWatch,
  relaySearchAddress,
  relayTransport,
} from "./nat.ts";
import { noiseCrypto } from "./noise-crypto.ts";
import {
  defaultPenaltyLimits,
  type Offence,
  PeerPenalties,
  type PenaltyLimits,
  type PenaltyView,
} from "./penalties.ts";
import { gossipScoreParams, topicScoreParams } from "./scoring.ts";

export const directProtocol = "/cimesh/direct/1.1.0";
export const dhtProtocol = "/cimesh/kad/1.0.0";
/** One direct frame holds one envelope; a little room for the length prefix. */
export const maxFrameBytes = maxEnvelopeBytes + 16;
/** A gossip message is one envelope. */
export const maxGossipMessageBytes = maxEnvelopeBytes;
/** The whole life of a direct stream, open to close, either side. */
export const streamTimeoutMs = 10_000;
/** How long a send may spend finding and dialling its peer. */
export const dialTimeoutMs = 10_000;
/** How often a node with no connection to a bootstrap peer dials it again, at most (after the first tries). */
export const bootstrapRetryMs = 5_000;
/** The first wait before a bootstrap peer not reached is dialled again; doubled each round, up to bootstrapRetryMs. */
export const bootstrapFirstRetryMs = 200;
/** How long a direct message that comes before the node is wired waits for it (host.onDirect), at most. */
export const directWiringWaitMs = 5_000;
/** How many direct streams one peer may have open to us at once. */
export const maxInboundDirectStreams = 64;
/** The direct protocol's frame limits and time limit per stream; its answer is an empty acknowledgement. */
const directLimits: RequestProtocolOptions = {
  maxRequestBytes: maxFrameBytes,
  maxResponseBytes: 16,
  maxInboundStreams: maxInboundDirectStreams,
  timeoutMs: streamTimeoutMs,
};
const directAck = new Uint8Array(0);
/** How long a DHT query may run. */
export const dhtQueryTimeoutMs = 15_000;
/** How long a record put on a node with connections but no DHT peer yet waits for one (a fresh connection's identify). */
export const dhtPeerWaitMs = 2_000;
/** How many providers a lookup collects before it stops. */
export const maxProvidersPerLookup = 64;
/**
 * Each yamux stream's initial receive window. Above yamux's 256 KiB, so a whole blob (1 MiB, plus framing) arrives
 * without a window-update round trip in the middle.
 */
export const yamuxStreamWindowBytes = 2 * 1024 * 1024;
/** Connections a node keeps at most. */
export const maxConnections = 300;
/** The DHT record namespace of cimesh: keys are /cimesh/<kind>/<id>. */
export const dhtNamespace = "cimesh";
/**
 * Gossip messages one peer may hand our validators (each is opened and judged): a burst, then a rate. Above what one
 * relay delivers first on a busy topic (a project's announcements, verdicts and cancels when thousands of jobs start or
 * end at once); what is over it is dropped unread.
 */
export const gossipRateLimit: RateLimit = { burst: 1000, perSecond: 250 };
/**
 * Streams one peer may open to us per request protocol (direct, blob): a burst, then a rate. A stream over it waits
 * its turn, up to requestTurnWaitMs; with at most maxInboundStreams open at once, an honest burst never waits longer.
 */
export const requestRateLimit: RateLimit = { burst: 500, perSecond: 100 };
/** Longest wait of a stream for its turn under requestRateLimit; beyond, it is refused and costs the sender. */
export const requestTurnWaitMs = 2_000;
/** Peers status lists at most (most penalized first, latest bans). */
export const maxPeersInStatus = 20;

/** What the runtime's validator decided about a gossip message. */
export type GossipVerdict = "accept" | "reject" | "ignore";
export type GossipHandler = (bytes: Uint8Array, fromPeerId: string) => GossipVerdict | Promise<GossipVerdict>;
/** `remoteAddress`: the multiaddr of the connection the message came on, as text (its network prefix matters). */
export type DirectHandler = (bytes: Uint8Array, fromPeerId: string, remoteAddress: string) => void | Promise<void>;
/** Answers one request frame with one response frame (the blob protocol, say). */
export type RequestHandler = (request: Uint8Array, fromPeerId: string, remoteAddress: string) => Promise<Uint8Array>;

export interface RequestProtocolOptions {
  readonly maxRequestBytes: number;
  readonly maxResponseBytes: number;
  /** Streams of this protocol one peer may have open to us at once. */
  readonly maxInboundStreams: number;
  /** The whole life of one request stream. */
  readonly timeoutMs: number;
  /**
   * Answers may be large (blobs): on a relayed connection such a request waits for a hole punch or must fit in the
   * relay's limits left (node/host/nat.ts). Without it, the protocol's frames are small and may use a relayed one.
   */
  readonly bulk?: boolean;
  /**
   * The largest answer this one request expects (a chunk's size, say), when below maxResponseBytes: what a bulk request
   * on a relayed connection reserves of the relay's limits, and the most it takes there (a longer answer is refused at
   * its length prefix).
   */
  readonly expectedResponseBytes?: number;
}

/** Checks a DHT record before this node stores or believes it: throws to refuse. */
export type RecordValidator = (key: string, value: Uint8Array) => void | Promise<void>;
/** Among several records for one key, the index of the one to believe. */
export type RecordSelector = (key: string, values: readonly Uint8Array[]) => number;

export interface HostOptions {
  readonly identity: Identity;
  /** Multiaddrs to listen on; `/memory/<name>` selects the in-process transport. Default /ip4/127.0.0.1/tcp/0. */
  readonly listen: readonly string[];
  /** Multiaddrs (with /p2p/ id) of peers to join through; dialled again while unconnected. */
  readonly bootstrap: readonly string[];
  /** gossipsub's IP-colocation score weight; 0 in tests (every peer is 127.0.0.1), gossipsub's default otherwise. */
  readonly ipColocationWeight?: number;
  /** Multicast DNS discovery of peers on the LAN. Default false. */
  readonly mdns?: boolean;
  /** libp2p's connection monitor pings every connection; off in big in-process meshes, where it is most idle CPU. Default true. */
  readonly connectionMonitor?: boolean;
  /** Validation of DHT records under /cimesh/<kind>/: per kind. A kind with no validator is refused. */
  readonly recordValidators?: Readonly<Record<string, RecordValidator>>;
  readonly recordSelectors?: Readonly<Record<string, RecordSelector>>;
  /** Told of every inbound direct stream refused (oversize frame, time limit, broken framing). */
  readonly onRefusedStream?: (fromPeerId: string, why: string) => void;
  /**
   * Where the host writes what peers make it do: `peer-rate-limited`, `peer-banned`, `peer-refused`,
   * `dht-record-refused`. A peer causes these at will: give a log that aggregates (EventLog). Absent: they are dropped.
   */
  readonly log?: LogWrite;
  /** The per-peer limits; tests make them small. Default: defaultHostLimits. */
  readonly limits?: Partial<HostLimits>;
  /** libp2p's own metrics (connections, streams, bytes, the DHT), e.g. @libp2p/prometheus-metrics. Default: none. */
  readonly metrics?: Libp2pOptions["metrics"];
  /**
   * Reaching and being reached behind NAT (node/host/nat.ts): AutoNAT, DCUtR, a relay slot, relaying for others, UPnP.
   * Absent: none of it (a node on loopback or in memory).
   */
  readonly nat?: NatOptions;
}

export interface HostLimits {
  readonly gossip: RateLimit;
  readonly requests: RateLimit;
  readonly requestTurnWaitMs: number;
  readonly penalties: PenaltyLimits;
}

export const defaultHostLimits: HostLimits = {
  gossip: gossipRateLimit,
  requests: requestRateLimit,
  requestTurnWaitMs,
  penalties: defaultPenaltyLimits,
};

/** What the host holds against peers, for status. */
export interface PeerPenaltyStatus {
  /** The most penalized peers, most first, with their points (their P5 score is minus the points) and offences. */
  readonly penalized: readonly PenaltyView[];
  /** Peers refused until untilMs. */
  readonly banned: readonly { readonly peer: string; readonly untilMs: number }[];
  /** Bans since the host started. */
  readonly bansTotal: number;
  /** Messages and streams dropped unread since the host started: gossip messages, request streams. */
  readonly rateLimited: { readonly gossip: number; readonly requests: number };
}

export interface Host {
  readonly peerId: string;
  multiaddrs(): string[];
  peerCount(): number;
  /** Joins a topic; every message from a peer on it goes through the handler, whose verdict gossipsub acts on (our own do not: the driver hands them to its machines). */
  subscribe(topic: string, handler: GossipHandler): void;
  publish(topic: string, bytes: Uint8Array): Promise<void>;
  /**
   * Sends one envelope to the peer whose ed25519 public key (hex) is given, dialling it if needed. Unacknowledged,
   * the connections to the peer are dropped (the next try dials afresh) unless `keepConnection`: a courtesy message
   * that failed is no reason to drop a peer.
   */
  send(toPublicKeyHex: string, bytes: Uint8Array, options?: { readonly keepConnection?: boolean }): Promise<void>;
  /**
   * Until a handler is set, a direct message waits for it (up to directWiringWaitMs, then it is refused
   * unacknowledged and its sender tries again): the host is up, and dialling its bootstrap peers, before the node
   * that takes its messages is wired.
   */
  onDirect(handler: DirectHandler): void;
  /**
   * Told once per connection, after identify, of a peer that speaks the direct protocol (by PeerId): a node hands it
   * what it should know at once (a master, its projects' keysets). The handler must not block.
   */
  onPeerMet(handler: (peerId: string) => void): void;
  /** Serves a request/response protocol: one frame in, one frame out, per stream. */
  handleRequests(protocol: string, options: RequestProtocolOptions, handler: RequestHandler): Promise<void>;
  /** One request to a peer (by PeerId) on a request/response protocol; dials it if needed. */
  request(peerId: string, protocol: string, bytes: Uint8Array, options: RequestProtocolOptions): Promise<Uint8Array>;
  /**
   * As request, the answer as the pieces it arrived in (decrypted noise messages, about 64 KiB each), not joined
   * into one copy: for a large answer its taker hashes and writes piece by piece (a blob).
   */
  requestPieces(
    peerId: string,
    protocol: string,
    bytes: Uint8Array,
    options: RequestProtocolOptions,
  ): Promise<Uint8Array[]>;
  /** Closes every connection to a peer (one that misbehaved). */
  hangUp(peerId: string): Promise<void>;
  /** How this node is reached (public, through a relay, hole punches); null when the host has no NAT services. */
  reachability(): Reachability | null;
  /** Charges a peer for an offence (the runtime, for what admission refused); past the bound, bans and hangs up on it. */
  penalize(peerId: string, offence: Offence): void;
  /** Whether a peer is refused now. */
  isBanned(peerId: string): boolean;
  /** The penalties and bans in force, for status. */
  penalties(): PeerPenaltyStatus;
  /** gossipsub's score of a peer, as this node sees it. */
  scoreOf(peerId: string): number;
  /** Scores of every peer gossipsub knows. */
  scores(): Record<string, number>;
  /**
   * Puts a record in the DHT. With no peer of the cimesh DHT in the routing table it fails with NoDhtPeersError, at
   * once or, while peers are connected, after dhtPeerWaitMs (kad would wait for one up to its query timeout, then
   * fail): try again when one joins.
   */
  putRecord(kind: string, id: string, value: Uint8Array): Promise<void>;
  /** Peers of the cimesh DHT in the routing table: 0 on a lone node, or one whose peers speak no cimesh DHT. */
  dhtPeerCount(): number;
  /** Told each time a peer joins the DHT routing table (a record put that had no peer can be tried again). */
  onDhtPeer(handler: () => void): void;
  getRecord(kind: string, id: string): Promise<Uint8Array | null>;
  /** Announces in the DHT that this node provides `name` (a capability spec uuid, say). */
  provide(name: string): Promise<void>;
  findProviders(name: string): Promise<string[]>;
  stop(): Promise<void>;
}

export class HostError extends CimeshError {
  constructor(message: string) {
    super("ERR_HOST", message);
  }
}

/** A DHT record put on a node with no DHT peer yet: expected on a lone node, not a fault. */
export class NoDhtPeersError extends CimeshError {
  constructor(key: string) {
    super(
      "ERR_NO_DHT_PEERS",
      `DHT put of ${key}: expected a peer of the cimesh DHT to store it on, none connected yet`,
    );
  }
}

/** The ed25519 public key (hex) inside a peer id: cimesh's node key is its libp2p identity. */
export function publicKeyHexOf(peerId: string): string {
  const key = peerIdFromString(peerId).publicKey;
  if (key === undefined || key.type !== "Ed25519")
    throw new HostError(`peer id: expected an Ed25519 peer id, got ${peerId}`);
  return Buffer.from(key.raw).toString("hex");
}

export function peerIdOfPublicKeyHex(publicKeyHex: string): PeerId {
  if (!/^[0-9a-f]{64}$/.test(publicKeyHex))
    throw new HostError(`public key: expected 64 hex characters, got ${publicKeyHex.slice(0, 80)}`);
  return peerIdOf(new Uint8Array(Buffer.from(publicKeyHex, "hex")));
}

/** The DHT key of something named by a string (a spec uuid): a raw CID of its sha-256, as provider records need. */
export function providerCidOf(name: string): CID {
  const hash = createHash("sha256").update(`cimesh:${name}`).digest();
  return CID.createV1(raw.code, createDigest(0x12, new Uint8Array(hash)));
}

function recordKey(kind: string, id: string): Uint8Array {
  if (!/^[a-z][a-z0-9-]{0,31}$/.test(kind)) throw new HostError(`record kind: expected [a-z][a-z0-9-]*, got ${kind}`);
  return new TextEncoder().encode(`/${dhtNamespace}/${kind}/${id}`);
}

function kindOf(key: Uint8Array): [string, string] {
  const text = new TextDecoder().decode(key);
  const [, namespace, kind, ...rest] = text.split("/");
  if (namespace !== dhtNamespace || kind === undefined || rest.length === 0)
    throw new HostError(`record key: expected /${dhtNamespace}/<kind>/<id>, got ${text.slice(0, 200)}`);
  return [kind, rest.join("/")];
}

/** The first length-prefixed frame of a stream, at most maxBytes long. */
async function firstFrame(stream: Stream, maxBytes: number): Promise<Uint8Array> {
  return joinedBlob(await firstFramePieces(stream, maxBytes));
}

/** The first length-prefixed frame of a stream, at most maxBytes long, as the pieces it arrived in (not copied). */
async function firstFramePieces(stream: Stream, maxBytes: number): Promise<Uint8Array[]> {
  for await (const frame of lp.decode(stream, { maxDataLength: maxBytes })) return [...frame];
  throw new HostError("stream: expected a frame, the stream ended first");
}

/** gossipsub as the host uses it: the class has the peer score its public service type omits. */
type ScoredGossipSub = GossipSub & { score: PeerScore; getScore(peerId: string): number };

/**
 * What the host holds against peers: their rate limits, penalty points and bans. Every inbound path asks it first
 * (the connection gater, the gossip validators, the request protocols), and gossipsub reads its points as P5.
 */
class PeerGuard {
  readonly penalties: PeerPenalties;
  private readonly gossip: RateLimiter;
  private readonly requests: RateLimiter;
  private readonly requestTurnWaitMs: number;
  private readonly rateLimited = { gossip: 0, requests: 0 };
  private readonly log: LogWrite;
  private hangUp: (peerId: string) => void = () => undefined;

  constructor(limits: HostLimits, log: LogWrite) {
    this.penalties = new PeerPenalties(limits.penalties);
    this.gossip = new RateLimiter(limits.gossip);
    this.requests = new RateLimiter(limits.requests);
    this.requestTurnWaitMs = limits.requestTurnWaitMs;
    this.log = log;
  }

  /** Once libp2p runs: which peer is this node (never charged), and how to hang up on a peer. */
  attach(self: string, hangUp: (peerId: string) => void): void {
    this.penalties.exemptPeer(self);
    this.hangUp = hangUp;
  }

  banned(peerId: string): boolean {
    return this.penalties.isBanned(peerId, Date.now());
  }

  charge(peerId: string, offence: Offence): void {
    const nowMs = Date.now();
    const charged = this.penalties.charge(peerId, offence, nowMs);
    if (!charged.banned) return;
    this.log("peer-banned", {
      peer: peerId,
      reason: offence,
      points: Math.round(charged.points),
      untilMs: this.penalties.bannedUntil(peerId, nowMs),
    });
    this.hangUp(peerId);
  }

  /** A gossip message from a peer: false when it must be dropped unread (banned, or over its rate). */
  admitGossip(peerId: string, topic: string): boolean {
    if (this.banned(peerId)) {
      this.hangUp(peerId);
      return false;
    }
    if (this.gossip.take(peerId, Date.now())) return true;
    this.rateLimited.gossip++;
    this.log("peer-rate-limited", { from: peerId, reason: "gossip", topic: topic.slice(0, 12) });
    // Dropped, not charged: an honest peer relays a flood of valid messages it cannot tell from honest traffic, and
    // charging it would ban the flood's relays, not its source. What is read and refused is charged (runtime).
    return false;
  }

  /** A stream of a request protocol from a peer (one bucket per protocol): how long it waits for its turn, or null to refuse it. */
  admitStream(peerId: string, protocol: string): number | null {
    if (this.banned(peerId)) {
      this.hangUp(peerId);
      return null;
    }
    const waitMs = this.requests.reserve(`${protocol} ${peerId}`, Date.now(), this.requestTurnWaitMs);
    if (waitMs !== null) return waitMs;
    this.rateLimited.requests++;
    this.log("peer-rate-limited", { from: peerId, reason: "requests", protocol });
    this.charge(peerId, "flooding");
    return null;
  }

  /** The connection gater: a banned peer is neither dialled nor let in. */
  gater() {
    const refuse = (peerId: PeerId, direction: string): boolean => {
      if (!this.banned(peerId.toString())) return false;
      this.log("peer-refused", { peer: peerId.toString(), reason: "banned", direction });
      return true;
    };
    return {
      denyDialPeer: (peerId: PeerId) => refuse(peerId, "outbound"),
      denyInboundEncryptedConnection: (peerId: PeerId) => refuse(peerId, "inbound"),
    };
  }

  status(): PeerPenaltyStatus {
    const { penalized, banned } = this.penalties.view(Date.now(), maxPeersInStatus);
    return { penalized, banned, bansTotal: this.penalties.bansTotal, rateLimited: { ...this.rateLimited } };
  }
}

export async function createHost(options: HostOptions): Promise<Host> {
  const listen = options.listen.length > 0 ? [...options.listen] : ["/ip4/127.0.0.1/tcp/0"];
  const validators = options.recordValidators ?? {};
  const guard = new PeerGuard({ ...defaultHostLimits, ...options.limits }, options.log ?? (() => undefined));
  const libp2p = await startLibp2p(options, listen, validators, guard);
  guard.attach(libp2p.peerId.toString(), (peerId) => {
    void libp2p.hangUp(peerIdFromString(peerId)).catch(() => undefined);
  });
  // The service's public type omits the score, which the class has: scores are what the rogue-node tests read.
  const pubsub = libp2p.services.pubsub as ScoredGossipSub;
  const dht = libp2p.services.dht as KadDHT;
  const direct = new DirectDoor();
  await serveDirect(libp2p, () => direct.handler(), options, guard);
  const setPeerMet = watchPeersMet(libp2p);
  const reach = options.nat === undefined ? null : new ReachabilityWatch(libp2p, options.nat);
  const stopBootstrap = await keepBootstrapped(libp2p, options.bootstrap);

  return {
    peerId: libp2p.peerId.toString(),
    multiaddrs: () => ownAddresses(libp2p),
    peerCount: () => libp2p.getPeers().length,
    ...gossipMethods(libp2p, pubsub, guard),
    send: (toPublicKeyHex, bytes, sendOptions) =>
      sendDirect(libp2p, toPublicKeyHex, bytes, sendOptions?.keepConnection === true),
    onDirect: (handler) => direct.open(handler),
    onPeerMet: (handler) => setPeerMet(handler),
    handleRequests: (protocol, limits, handler) => serveRequests(libp2p, protocol, limits, handler, options, guard),
    request: async (peerId, protocol, bytes, limits) =>
      joinedBlob(await requestOnce(libp2p, peerId, protocol, bytes, limits)),
    requestPieces: (peerId, protocol, bytes, limits) => requestOnce(libp2p, peerId, protocol, bytes, limits),
    async hangUp(peerId) {
      await libp2p.hangUp(peerIdFromString(peerId)).catch(() => undefined);
    },
    reachability: () => reach?.status() ?? null,
    penalize: (peerId, offence) => guard.charge(peerId, offence),
    isBanned: (peerId) => guard.banned(peerId),
    penalties: () => guard.status(),
    ...recordMethods(dht, validators, options.recordSelectors ?? {}, () => libp2p.getPeers().length),
    async stop() {
      stopBootstrap();
      await libp2p.stop();
    },
  };
}

/** The libp2p node: its transports, encryption, muxer and limits, and the DHT and gossipsub as services. */
async function startLibp2p(
  options: HostOptions,
  listen: string[],
  validators: Readonly<Record<string, RecordValidator>>,
  guard: PeerGuard,
) {
  const usesMemory = listen.some((address) => address.startsWith("/memory/"));
  const { nat } = options;
  const transports = usesMemory ? [memory()] : [tcp()];
  return createLibp2p({
    privateKey: toLibp2pPrivateKey(options.identity),
    addresses: { listen: nat?.reserveRelay === true ? [...listen, relaySearchAddress] : listen },
    transports: nat === undefined ? transports : [...transports, await relayTransport()],
    connectionEncrypters: [noise({ crypto: noiseCrypto })],
    streamMuxers: [yamux({ streamOptions: { initialStreamWindowSize: yamuxStreamWindowBytes } })],
    connectionManager: { maxConnections, dialTimeout: dialTimeoutMs },
    connectionGater: guard.gater(),
    connectionMonitor: { enabled: options.connectionMonitor ?? true },
    metrics: options.metrics,
    peerDiscovery: options.mdns === true ? [mdns()] : [],
    services: {
      identify: identify(),
      ping: ping(),
      dht: dhtService(validators, options.recordSelectors ?? {}, options.log),
      pubsub: gossipService(options, guard),
      ...(nat === undefined ? {} : await natServices(nat)),
    },
  });
}

/**
 * The Kademlia DHT under cimesh's own protocol id; records under /cimesh/<kind>/ go to the validator and selector of
 * their kind. A refused record is logged (`dht-record-refused`, with the error's code as reason).
 */
function dhtService(
  validators: Readonly<Record<string, RecordValidator>>,
  selectors: Readonly<Record<string, RecordSelector>>,
  log: LogWrite | undefined,
) {
  return kadDHT({
    protocol: dhtProtocol,
    clientMode: false,
    peerInfoMapper: passthroughMapper,
    validators: {
      [dhtNamespace]: async (key, record) => {
        const [kind, id] = kindOf(key);
        const validate = validators[kind];
        if (validate === undefined) throw new HostError(`record kind ${kind}: this node accepts no such record`);
        try {
          await validate(id, record);
        } catch (error) {
          log?.("dht-record-refused", {
            kind,
            id: id.slice(0, 64),
            reason: (error as { code?: string }).code ?? "invalid",
            why: String(error).slice(0, 300),
          });
          throw error;
        }
      },
    },
    selectors: {
      [dhtNamespace]: (key, records) => {
        const [kind, id] = kindOf(key);
        const select = selectors[kind];
        return select === undefined ? 0 : select(id, records);
      },
    },
  });
}

/** gossipsub's message id: the sha-256 of the data (StrictNoSign; our envelopes are signed already). */
export function gossipMessageId(message: { readonly data: Uint8Array }): Uint8Array {
  return new Uint8Array(createHash("sha256").update(message.data).digest());
}

/** gossipsub with StrictNoSign, the envelope's sha-256 as message id, and the peer score of node/host/scoring.ts. */
function gossipService(options: HostOptions, guard: PeerGuard) {
  return gossipsub({
    globalSignaturePolicy: StrictNoSign,
    msgIdFn: gossipMessageId,
    fastMsgIdFn: (message) =>
      createHash("sha256")
        .update(message.data ?? new Uint8Array())
        .digest("base64"),
    maxInboundDataLength: maxGossipMessageBytes + 4096,
    allowPublishToZeroTopicPeers: true,
    emitSelf: false,
    scoreParams: gossipScoreParams({
      ipColocationWeight: options.ipColocationWeight,
      appSpecificScore: (peerId) => guard.penalties.score(peerId, Date.now()),
    }),
  });
}

/**
 * Where direct messages go: the node's handler once it is set. Until then a message waits for it, up to
 * directWiringWaitMs (a peer met while the node starts, a master handing over its keyset, is not turned away).
 */
class DirectDoor {
  private current: DirectHandler | null = null;
  private readonly waiting = new Set<() => void>();

  open(handler: DirectHandler): void {
    this.current = handler;
    for (const wake of this.waiting) wake();
    this.waiting.clear();
  }

  async handler(): Promise<DirectHandler> {
    if (this.current !== null) return this.current;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let wake: () => void = () => undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        wake = resolve;
        this.waiting.add(wake);
        timer = setTimeout(
          () => reject(new HostError(`direct message: this node took none within ${directWiringWaitMs} ms of it`)),
          directWiringWaitMs,
        );
      });
    } finally {
      clearTimeout(timer);
      this.waiting.delete(wake);
    }
    const handler = this.now();
    if (handler === null) throw new HostError("direct message: expected the node's handler once woken");
    return handler;
  }

  private now(): DirectHandler | null {
    return this.current;
  }
}

/**
 * The direct protocol: one frame per stream, handed to the node, then acknowledged with an empty frame. The sender
 * counts a message delivered only when the acknowledgement comes back: a stream opened on a connection whose other
 * end has died (a peer killed and restarted on the same address) accepts writes and closes without error, so a
 * message written without an answer may be lost without a word.
 */
async function serveDirect(
  libp2p: Libp2p,
  handlerOf: () => Promise<DirectHandler>,
  options: HostOptions,
  guard: PeerGuard,
): Promise<void> {
  await serveRequests(
    libp2p,
    directProtocol,
    directLimits,
    async (bytes, from, remoteAddress) => {
      await (await handlerOf())(bytes, from, remoteAddress);
      return directAck;
    },
    options,
    guard,
  );
}

/**
 * Tells `met` (set later) once per connection of a peer that, as identify reports it, serves the direct protocol.
 * identify runs on every new connection, inbound or outbound, and again on an identify push: the connections told of
 * are remembered (weakly: a closed connection is forgotten with it) so that a push tells nothing twice. Peers met
 * before `met` is set (the host dials its bootstrap peers before the node is wired) are told when it is, if still
 * connected.
 */
function watchPeersMet(libp2p: Libp2p): (met: (peerId: string) => void) => void {
  const told = new WeakSet<Connection>();
  let early: Connection[] = [];
  let handler: ((peerId: string) => void) | null = null;
  libp2p.addEventListener("peer:identify", (event) => {
    const { peerId, protocols, connection } = event.detail;
    if (told.has(connection) || !protocols.includes(directProtocol)) return;
    told.add(connection);
    if (handler !== null) handler(peerId.toString());
    else if (early.length < maxConnections) early.push(connection);
  });
  return (met) => {
    handler = met;
    for (const connection of early) if (connection.status === "open") met(connection.remotePeer.toString());
    early = [];
  };
}

/**
 * Dials the bootstrap peers, then those not connected again: bootstrapFirstRetryMs later, twice that after each
 * round that left one unconnected, up to bootstrapRetryMs (nodes of a mesh started together find each other in a
 * fraction of a second, a peer that is down is not dialled more than every bootstrapRetryMs). Returns a stop function.
 */
async function keepBootstrapped(libp2p: Libp2p, addresses: readonly string[]): Promise<() => void> {
  const bootstrap = addresses.map((address) => multiaddr(address));
  if (bootstrap.length === 0) return () => undefined;
  /** Dials every bootstrap peer not connected; true when all are connected afterwards. */
  const dialBootstrap = async (): Promise<boolean> => {
    let all = true;
    for (const address of bootstrap) {
      const id = address.getComponents().find((component) => component.name === "p2p")?.value;
      if (id !== undefined && libp2p.getConnections(peerIdFromString(id)).length > 0) continue;
      const connected = await libp2p.dial(address, { signal: AbortSignal.timeout(dialTimeoutMs) }).then(
        () => true,
        () => false,
      );
      all &&= connected;
    }
    return all;
  };
  let waitMs = bootstrapFirstRetryMs;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let stopped = false;
  const schedule = (connected: boolean) => {
    if (stopped) return;
    // All connected: look again at the slow pace, and start the backoff afresh once one is lost.
    const delayMs = connected ? bootstrapRetryMs : waitMs;
    waitMs = connected ? bootstrapFirstRetryMs : Math.min(waitMs * 2, bootstrapRetryMs);
    timer = setTimeout(() => void dialBootstrap().then(schedule), delayMs);
  };
  schedule(await dialBootstrap());
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

/** The gossip side of a host: topics and their validators, publishing, peer scores. */
function gossipMethods(
  libp2p: Libp2p,
  pubsub: ScoredGossipSub,
  guard: PeerGuard,
): Pick<Host, "subscribe" | "publish" | "scoreOf" | "scores"> {
  const topicHandlers = new Map<string, GossipHandler>();
  return {
    subscribe(topic, handler) {
      if (topicHandlers.has(topic)) throw new HostError(`topic ${topic}: already subscribed`);
      topicHandlers.set(topic, handler);
      // Without topic score parameters gossipsub ignores invalid deliveries on the topic: set them so forgers pay.
      pubsub.score.params.topics[topic] = topicScoreParams();
      pubsub.topicValidators.set(topic, async (peer, message) => {
        const from = peer.toString();
        // A banned peer's message, or one over its rate, is dropped unread: the sender pays in penalty points.
        if (!guard.admitGossip(from, topic)) return "ignore" as never;
        const verdict = await handler(message.data, from);
        return verdict as never;
      });
      pubsub.subscribe(topic);
    },
    async publish(topic, bytes) {
      if (bytes.length > maxGossipMessageBytes)
        throw new HostError(`gossip message: expected at most ${maxGossipMessageBytes} bytes, got ${bytes.length}`);
      // gossipsub does not hand our own messages to our validator: a node that is master and worker hears itself here.
      const own = topicHandlers.get(topic);
      if (own !== undefined) void Promise.resolve(own(bytes, libp2p.peerId.toString())).catch(() => undefined);
      await pubsub.publish(topic, bytes);
    },
    scoreOf: (peerId) => pubsub.getScore(peerId),
    scores() {
      const out: Record<string, number> = {};
      for (const peer of pubsub.getPeers()) out[peer.toString()] = pubsub.getScore(peer.toString());
      return out;
    },
  };
}

/** Sends one frame to a peer (by public key) on the direct protocol, dialling it if needed. */
async function sendDirect(
  libp2p: Libp2p,
  toPublicKeyHex: string,
  bytes: Uint8Array,
  keepConnection: boolean,
): Promise<void> {
  if (bytes.length > maxFrameBytes)
    throw new HostError(`direct frame: expected at most ${maxFrameBytes} bytes, got ${bytes.length}`);
  const peer = peerIdOfPublicKeyHex(toPublicKeyHex);
  try {
    await requestOnce(libp2p, peer.toString(), directProtocol, bytes, directLimits);
  } catch (error) {
    // No acknowledgement: drop the connections to the peer, so that the next try dials it afresh.
    if (!keepConnection) await libp2p.hangUp(peer).catch(() => undefined);
    throw error;
  }
}

/**
 * Serves a request/response protocol: one frame in, one frame out, per stream. Each stream takes its turn under the
 * peer's rate limit for the protocol (waiting up to requestTurnWaitMs); a stream refused, or broken before its
 * request was read, costs the sender.
 */
async function serveRequests(
  libp2p: Libp2p,
  protocol: string,
  limits: RequestProtocolOptions,
  handler: RequestHandler,
  options: HostOptions,
  guard: PeerGuard,
): Promise<void> {
  await libp2p.handle(
    protocol,
    async (stream: Stream, connection: Connection) => {
      const from = connection.remotePeer.toString();
      const turnMs = guard.admitStream(from, protocol);
      if (turnMs === null) {
        stream.abort(new HostError(`${protocol}: refused, over the rate limit of ${from}`));
        return;
      }
      const signal = AbortSignal.timeout(limits.timeoutMs);
      const onAbort = () =>
        stream.abort(new HostError(`${protocol}: expected the request to end within ${limits.timeoutMs} ms`));
      signal.addEventListener("abort", onAbort);
      let request: Uint8Array | null = null;
      try {
        if (turnMs > 0) await new Promise((resolve) => setTimeout(resolve, turnMs));
        request = await firstFrame(stream, limits.maxRequestBytes);
        const response = await handler(request, from, connection.remoteAddr.toString());
        if (response.length > limits.maxResponseBytes)
          throw new HostError(`${protocol}: a response of ${response.length} bytes is over ${limits.maxResponseBytes}`);
        if (!stream.send(lp.encode.single(response))) await stream.onDrain({ signal });
        await stream.close({ signal });
      } catch (error) {
        options.onRefusedStream?.(from, `${protocol}: ${String(error)}`);
        // Oversize, malformed or too slow before the request was whole: the sender's doing.
        if (request === null) guard.charge(from, "broken-stream");
        stream.abort(error instanceof Error ? error : new Error(String(error)));
      } finally {
        signal.removeEventListener("abort", onAbort);
      }
    },
    // A relayed connection may carry every request: a bulk one's asker keeps to the relay's limits (node/host/nat.ts).
    { maxInboundStreams: limits.maxInboundStreams, runOnLimitedConnection: true },
  );
}

/** One request to a peer (by PeerId) on a request/response protocol, dialling it if needed; its answer's pieces. */
async function requestOnce(
  libp2p: Libp2p,
  peerId: string,
  protocol: string,
  bytes: Uint8Array,
  limits: RequestProtocolOptions,
): Promise<Uint8Array[]> {
  if (bytes.length > limits.maxRequestBytes)
    throw new HostError(`${protocol} request: expected at most ${limits.maxRequestBytes} bytes, got ${bytes.length}`);
  const signal = AbortSignal.timeout(limits.timeoutMs);
  const expected = Math.min(limits.expectedResponseBytes ?? limits.maxResponseBytes, limits.maxResponseBytes);
  const maxBytes = bytes.length + expected;
  const { connection, settle } = await connectionFor(libp2p, peerId, { bulk: limits.bulk === true, maxBytes }, signal);
  const maxAnswerBytes = connection.limits === undefined ? limits.maxResponseBytes : expected;
  const stream = await connection.newStream(protocol, { signal, runOnLimitedConnection: true });
  const onAbort = () => stream.abort(new HostError(`${protocol}: expected an answer within ${limits.timeoutMs} ms`));
  signal.addEventListener("abort", onAbort);
  try {
    // Listen before closing our side: close() ends our writing only, the answer still comes.
    const answer = firstFramePieces(stream, maxAnswerBytes);
    answer.catch(() => undefined);
    if (!stream.send(lp.encode.single(bytes))) await stream.onDrain({ signal });
    await stream.close({ signal });
    const response = await answer;
    settle(bytes.length + blobLength(response));
    return response;
  } catch (error) {
    stream.abort(error instanceof Error ? error : new Error(String(error)));
    throw error;
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
}

/** The DHT side of a host: records under /cimesh/<kind>/<id>, and provider records. */
function recordMethods(
  dht: KadDHT,
  validators: Readonly<Record<string, RecordValidator>>,
  selectors: Readonly<Record<string, RecordSelector>>,
  connectedPeers: () => number,
): Pick<Host, "putRecord" | "getRecord" | "provide" | "findProviders" | "dhtPeerCount" | "onDhtPeer"> {
  const { routingTable } = dht as SingleKadDHT;
  // kad's routing table is an event target ("peer:add"), which its public type leaves out.
  const events = routingTable as unknown as EventTarget;
  /** Whether the routing table has a peer, or gains one within limitMs. */
  const dhtPeerWithin = (limitMs: number): Promise<boolean> => {
    if (routingTable.size > 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const added = () => {
        clearTimeout(timer);
        resolve(true);
      };
      const timer = setTimeout(() => {
        events.removeEventListener("peer:add", added);
        resolve(routingTable.size > 0);
      }, limitMs);
      events.addEventListener("peer:add", added, { once: true });
    });
  };
  return {
    async putRecord(kind, id, value) {
      const validate = validators[kind];
      if (validate === undefined) throw new HostError(`record kind ${kind}: this node accepts no such record`);
      await validate(id, value); // publish nothing this node would itself refuse
      // A peer just connected joins the routing table once identify says it speaks our DHT: a moment, not a query.
      const waitMs = connectedPeers() > 0 ? dhtPeerWaitMs : 0;
      if (!(await dhtPeerWithin(waitMs))) throw new NoDhtPeersError(`/${dhtNamespace}/${kind}/${id.slice(0, 16)}`);
      const signal = AbortSignal.timeout(dhtQueryTimeoutMs);
      for await (const _event of dht.put(recordKey(kind, id), value, { signal })) {
        // draining the query is what runs it
      }
    },
    /**
     * The best record found, by the kind's selector, among the records peers answered with (each passed the kind's
     * validator on arrival). kad-dht hands out its own choice only after sending it to every peer that answered with
     * another, and fails the whole get when one of them does not take it: one peer holding an old record and
     * refusing corrections would delay or deny every lookup. So answers are kept as they come, and the get stops
     * once kad starts correcting.
     */
    async getRecord(kind, id) {
      const signal = AbortSignal.timeout(dhtQueryTimeoutMs);
      const found: Uint8Array[] = [];
      try {
        for await (const event of dht.get(recordKey(kind, id), { signal })) {
          if (event.name === "VALUE") {
            found.push(event.value);
            break;
          }
          if (event.name === "SEND_QUERY" && event.messageName === "PUT_VALUE") break;
          if (event.name === "PEER_RESPONSE" && event.record !== undefined) found.push(event.record.value);
        }
      } catch (error) {
        const name = (error as Error).name;
        if (name !== "NotFoundError" && name !== "QueryError" && !signal.aborted) throw error;
      }
      if (found.length === 0) return null;
      const select = selectors[kind];
      return found[select === undefined ? 0 : select(id, found)] ?? null;
    },
    dhtPeerCount: () => routingTable.size,
    onDhtPeer(handler) {
      events.addEventListener("peer:add", () => handler());
    },
    async provide(name) {
      const signal = AbortSignal.timeout(dhtQueryTimeoutMs);
      for await (const _event of dht.provide(providerCidOf(name), { signal })) {
        // draining the query is what runs it
      }
    },
    async findProviders(name) {
      const signal = AbortSignal.timeout(dhtQueryTimeoutMs);
      const found = new Set<string>();
      try {
        for await (const event of dht.findProviders(providerCidOf(name), { signal })) {
          if (event.name !== "PROVIDER") continue;
          for (const provider of event.providers) found.add(provider.id.toString());
          if (found.size >= maxProvidersPerLookup) break;
        }
      } catch (error) {
        if (!signal.aborted) throw error;
      }
      return [...found];
    },
  };
}
