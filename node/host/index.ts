/**
 * node/host: the node on the network. A libp2p host (transports, gossipsub,
 * the Kademlia DHT and its records, the direct protocol; AutoNAT, relays and
 * hole punching for nodes behind NAT) and the blob
 * protocol that serves and fetches content-addressed trees over it.
 */
export {
  blobProtocol,
  blobProtocolOptions,
  blobStallMs,
  type DropKind,
  FetchError,
  type FetchOptions,
  type FetchReport,
  fetchTree,
  maxDhtProvidersPerFetch,
  maxProvidersPerFetch,
  maxRequestsPerProvider,
  minRequestsPerProvider,
  misbehaviourBanMs,
  PeerBans,
  serveBlobs,
} from "./fetch.ts";
export {
  createHost,
  defaultHostLimits,
  dhtQueryTimeoutMs,
  directProtocol,
  type GossipVerdict,
  gossipMessageId,
  gossipRateLimit,
  type Host,
  type HostLimits,
  type HostOptions,
  maxFrameBytes,
  NoDhtPeersError,
  type PeerPenaltyStatus,
  peerIdOfPublicKeyHex,
  publicKeyHexOf,
  requestRateLimit,
  requestTurnWaitMs,
} from "./host.ts";
export { EventLog, type EventLogLimits, type LogWrite, type RateLimit, RateLimiter } from "./limits.ts";
export {
  connectionFor,
  holePunchWaitMs,
  isRelayed,
  minRelayTimeLeftMs,
  type NatOptions,
  type Reachability,
  RelayLimitError,
  type RelayLimits,
  relayMarginBytes,
  relaySearchAddress,
} from "./nat.ts";
export {
  banMs,
  banPoints,
  maxPenalizedPeers,
  maxPenaltyPoints,
  type Offence,
  offenceCosts,
  PeerPenalties,
  type PenaltyLimits,
  penaltyHalfLifeMs,
} from "./penalties.ts";
export { ipPrefixOf, ipv4PrefixBits, ipv6PrefixBits, networkPrefixOf } from "./prefix.ts";
export {
  gossipScoreParams,
  ipColocationThreshold,
  ipColocationWeight,
  retainScoreMs,
  topicScoreParams,
} from "./scoring.ts";
