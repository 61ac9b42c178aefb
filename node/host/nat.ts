/**
 * Reaching nodes behind home routers, with libp2p's own answers: AutoNAT v2 (peers dial our addresses back, on a
 * fresh connection, to say which are reachable; AutoNAT v1's dial-back reuses the connection the question came on,
 * which libp2p 3 then closes, and confirmed nothing in the NAT test), circuit relay v2 (a reachable node relays for others, within limits of data and time per
 * relayed connection; a node behind NAT reserves a slot on one and advertises the relay's address), DCUtR (a relayed
 * connection is upgraded to a direct one by a hole punch where both NATs allow) and UPnP (opt-in: the router is asked
 * for a port mapping).
 *
 * A relayed connection is limited: the relay cuts it past its data or time limit. What is small (the direct
 * protocol's envelopes) may use one; what is bulk (blobs) first waits a moment for a hole punch to give a direct
 * connection, then goes over the relay only when the answer fits in what is left of the connection's limits (counted
 * here, with a margin for framing and libp2p's own traffic), and otherwise fails at once so the fetch asks another
 * provider: a transfer never starts that the relay would cut.
 */
import type { Connection, Libp2p } from "@libp2p/interface";
import type { AddressManager } from "@libp2p/interface-internal";
import { peerIdFromString } from "@libp2p/peer-id";
import { isPrivate } from "@libp2p/utils";
import type { Multiaddr } from "@multiformats/multiaddr";
import { CimeshError } from "../../crypto/index.ts";

/** What a relay allows each node that reserves a slot on it. */
export interface RelayLimits {
  /** Reservations held at once. */
  readonly maxReservations: number;
  /** Bytes (both ways) one relayed connection may carry before the relay cuts it. */
  readonly dataBytes: number;
  /** How long one relayed connection may stay open before the relay cuts it. */
  readonly durationMs: number;
  /** How long a reservation lasts before its holder must renew it. */
  readonly reservationTtlMs: number;
}

export interface NatOptions {
  /** Serve as a relay with these limits; null: no relay. */
  readonly relay: RelayLimits | null;
  /** Reserve a slot on a relay met (the bootstrap peers first) and advertise its address. */
  readonly reserveRelay: boolean;
  /** Ask the router for a port mapping by UPnP. */
  readonly upnp: boolean;
}

/** The listen address that makes libp2p look for a relay and reserve a slot on it. */
export const relaySearchAddress = "/p2p-circuit";
/** How long a bulk request on a relayed connection waits, once per connection, for a hole punch to give a direct one. */
export const holePunchWaitMs = 3_000;
/** How often that wait looks for the direct connection. */
export const holePunchPollMs = 100;
/** Bytes of a relayed connection's data limit kept back for framing, encryption and libp2p's own traffic on it. */
export const relayMarginBytes = 64 * 1024;
/** Framing and encryption per byte of payload on a relayed connection, counted against its limit (noise and yamux). */
export const relayOverheadFraction = 0.01;
/** Time a bulk request needs left on a relayed connection's duration limit to start on it. */
export const minRelayTimeLeftMs = 15_000;
/** Peers remembered as reached directly after a hole punch (the latest). */
export const maxHolePunchedPeers = 64;

/** How this node is reached, as `cimesh status` says it. */
export interface Reachability {
  /**
   * `public`: AutoNAT confirmed a direct address (a peer dialled it back). `relayed`: no direct address confirmed, and
   * the node holds a relay reservation (behind NAT). `unknown`: neither yet.
   */
  readonly kind: "public" | "relayed" | "unknown";
  /** Direct addresses AutoNAT (or UPnP) confirmed. */
  readonly confirmed: readonly string[];
  /** PeerIds of the relays this node holds a reservation on. */
  readonly relays: readonly string[];
  /** The relay addresses it advertises. */
  readonly relayAddresses: readonly string[];
  /** Peers reached by a direct connection that a hole punch made (a relayed one was open to them when it came). */
  readonly holePunched: readonly string[];
  /** Peers connected now only through a relay. */
  readonly relayedPeers: number;
  /** As a relay: its limits and the reservations it holds for others now; null when it relays for no one. */
  readonly relayService: { readonly limits: RelayLimits; readonly reservations: number } | null;
  readonly upnp: boolean;
}

/** A bulk request that would not fit in what is left of a relayed connection, with no direct connection to use. */
export class RelayLimitError extends CimeshError {
  constructor(message: string) {
    super("ERR_RELAY_LIMIT", message);
  }
}

/** Whether a multiaddr goes through a relay. */
export function isRelayed(address: Multiaddr | string): boolean {
  return address.toString().includes("/p2p-circuit");
}

/**
 * The transport that dials and listens on relay addresses. Its package, like each NAT service's, is imported only by
 * a node that uses it: a node on loopback (most workers on one machine) loads none of their code.
 */
export async function relayTransport() {
  const { circuitRelayTransport } = await import("@libp2p/circuit-relay-v2");
  return circuitRelayTransport({ reservationCompletionTimeout: 10_000 });
}

/** libp2p services of the options: AutoNAT and DCUtR always, the relay and UPnP when asked. */
export async function natServices(options: NatOptions): Promise<Record<string, (components: never) => unknown>> {
  const [{ autoNATv2 }, { circuitRelayServer }, { dcutr }] = await Promise.all([
    import("@libp2p/autonat-v2"),
    import("@libp2p/circuit-relay-v2"),
    import("@libp2p/dcutr"),
  ]);
  const services: Record<string, (components: never) => unknown> = {
    autonat: autoNATv2() as (components: never) => unknown,
    dcutr: dcutr() as (components: never) => unknown,
  };
  if (options.relay !== null)
    services.relay = circuitRelayServer({
      reservations: {
        maxReservations: options.relay.maxReservations,
        reservationTtl: options.relay.reservationTtlMs,
        applyDefaultLimit: true,
        defaultDataLimit: BigInt(options.relay.dataBytes),
        defaultDurationLimit: options.relay.durationMs,
      },
    }) as (components: never) => unknown;
  if (options.upnp) {
    const { uPnPNAT } = await import("@libp2p/upnp-nat");
    services.upnp = uPnPNAT() as (components: never) => unknown;
  }
  return services;
}

/**
 * This node's addresses: those libp2p advertises (verified, or private and so taken as is) and, after them, the ones
 * it listens on that wait for AutoNAT's verdict (a public address is advertised only once a peer dialled it back, but
 * the node listens on it from the start, and says so).
 */
export function ownAddresses(libp2p: Libp2p): string[] {
  const advertised = libp2p.getMultiaddrs().map(String);
  const suffix = `/p2p/${libp2p.peerId.toString()}`;
  const waiting = addressManagerOf(libp2p)
    .getAddressesWithMetadata()
    .filter((address) => address.type === "transport" && !address.verified)
    .map((address) => `${address.multiaddr.toString()}${suffix}`)
    .filter((address) => !advertised.includes(address));
  return [...advertised, ...waiting];
}

function addressManagerOf(libp2p: Libp2p): AddressManager {
  return (libp2p as unknown as { components: { addressManager: AddressManager } }).components.addressManager;
}

/** Watches how this node is reached: AutoNAT's confirmed addresses, relay reservations, hole punches. */
export class ReachabilityWatch {
  private readonly holePunched: string[] = [];
  private readonly libp2p: Libp2p;
  private readonly options: NatOptions;

  constructor(libp2p: Libp2p, options: NatOptions) {
    this.libp2p = libp2p;
    this.options = options;
    libp2p.addEventListener("connection:open", (event) => {
      const connection = event.detail;
      if (connection.limits !== undefined || isRelayed(connection.remoteAddr)) return;
      const peer = connection.remotePeer.toString();
      const relayedBefore = libp2p
        .getConnections(connection.remotePeer)
        .some((other) => other !== connection && other.limits !== undefined);
      if (!relayedBefore || this.holePunched.includes(peer)) return;
      this.holePunched.push(peer);
      if (this.holePunched.length > maxHolePunchedPeers) this.holePunched.shift();
    });
  }

  status(): Reachability {
    const confirmed = addressManagerOf(this.libp2p)
      .getAddressesWithMetadata()
      // libp2p counts private and loopback addresses as verified without asking anyone: only public ones say "public".
      .filter((address) => address.verified && !isRelayed(address.multiaddr) && isPrivate(address.multiaddr) !== true)
      .map((address) => address.multiaddr.toString());
    const relayAddresses = this.libp2p
      .getMultiaddrs()
      .map(String)
      .filter((address) => isRelayed(address));
    const relays = [
      ...new Set(relayAddresses.map((address) => /\/p2p\/([^/]+)\/p2p-circuit/.exec(address)?.[1] ?? "")),
    ].filter((peer) => peer !== "");
    const relayedPeers = this.libp2p
      .getPeers()
      .filter((peer) => this.libp2p.getConnections(peer).every((connection) => connection.limits !== undefined)).length;
    const server = (this.libp2p.services as Record<string, unknown>).relay as
      | { reservations: { size: number } }
      | undefined;
    const limits = this.options.relay;
    return {
      kind: confirmed.length > 0 ? "public" : relays.length > 0 ? "relayed" : "unknown",
      confirmed,
      relays,
      relayAddresses,
      holePunched: [...this.holePunched],
      relayedPeers,
      relayService: limits === null ? null : { limits, reservations: server?.reservations.size ?? 0 },
      upnp: this.options.upnp,
    };
  }
}

/** Bytes counted against each relayed connection's data limit by this node's bulk requests. */
const spentOn = new WeakMap<Connection, number>();
/** Relayed connections on which a bulk request already waited for a hole punch. */
const waitedOn = new WeakSet<Connection>();

/** What a request carries, for choosing its connection: `bulk` ones keep to a relayed connection's limits. */
export interface RequestSize {
  readonly bulk: boolean;
  /** Request and largest answer, bytes. */
  readonly maxBytes: number;
}

/** The direct (unlimited) open connection to a peer, if any. */
function directConnection(libp2p: Libp2p, peerId: string): Connection | undefined {
  return libp2p
    .getConnections(peerIdFromString(peerId))
    .find((connection) => connection.status === "open" && connection.limits === undefined);
}

/**
 * The connection a request to a peer goes on: a direct one when there is one; else an open relayed one (no dial: the
 * peer's direct addresses are unreachable behind its NAT); else a fresh dial. A bulk request on a relayed connection
 * first waits up to holePunchWaitMs (once per connection) for a direct one, then must fit in the limits left.
 * Returns the connection and, for a bulk request on a relayed one, how to settle its count once the answer is in.
 */
export async function connectionFor(
  libp2p: Libp2p,
  peerId: string,
  size: RequestSize,
  signal: AbortSignal,
): Promise<{ connection: Connection; settle: (usedBytes: number) => void }> {
  const none = { settle: () => undefined };
  const direct = directConnection(libp2p, peerId);
  if (direct !== undefined) return { connection: direct, ...none };
  let connection = libp2p
    .getConnections(peerIdFromString(peerId))
    .find((candidate) => candidate.status === "open" && candidate.limits !== undefined);
  connection ??= await libp2p.dial(peerIdFromString(peerId), { signal });
  if (connection.limits === undefined || !size.bulk) return { connection, ...none };
  if (!waitedOn.has(connection)) {
    waitedOn.add(connection);
    const deadline = Date.now() + holePunchWaitMs;
    while (Date.now() < deadline && !signal.aborted) {
      const upgraded = directConnection(libp2p, peerId);
      if (upgraded !== undefined) return { connection: upgraded, ...none };
      await new Promise((resolve) => setTimeout(resolve, holePunchPollMs));
    }
  }
  const upgraded = directConnection(libp2p, peerId);
  if (upgraded !== undefined) return { connection: upgraded, ...none };
  const limitBytes = connection.limits.bytes === undefined ? Number.POSITIVE_INFINITY : Number(connection.limits.bytes);
  const spent = spentOn.get(connection) ?? 0;
  const needBytes = Math.ceil(size.maxBytes * (1 + relayOverheadFraction));
  const leftBytes = limitBytes - relayMarginBytes - spent;
  const leftMs =
    connection.limits.seconds === undefined
      ? Number.POSITIVE_INFINITY
      : connection.limits.seconds * 1000 - (Date.now() - connection.timeline.open);
  if (needBytes > leftBytes || leftMs < minRelayTimeLeftMs)
    throw new RelayLimitError(
      `peer ${peerId}: expected a direct connection or room on the relayed one, but no hole punch came within ` +
        `${holePunchWaitMs} ms and the relay's limits leave ${Math.max(0, leftBytes)} bytes and ` +
        `${Math.max(0, Math.round(leftMs))} ms, while an answer may take ${needBytes} bytes and needs ${minRelayTimeLeftMs} ms`,
    );
  spentOn.set(connection, spent + needBytes);
  const relayed = connection;
  return {
    connection,
    settle: (usedBytes) => {
      const now = spentOn.get(relayed) ?? 0;
      spentOn.set(relayed, now - needBytes + Math.ceil(usedBytes * (1 + relayOverheadFraction)));
    },
  };
}
