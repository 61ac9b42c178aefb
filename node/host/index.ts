/**
 * node/host: the node on the network. A libp2p host (transports, gossipsub,
 * the Kademlia DHT and its records, the direct protocol) and the blob
 * protocol that serves and fetches content-addressed trees over it.
 */
export {
  blobProtocol,
  blobProtocolOptions,
  fetchTree,
  PeerBans,
  serveBlobs,
} from "./fetch.ts";
export {
  createHost,
  directProtocol,
  type GossipVerdict,
  gossipMessageId,
  type Host,
  maxFrameBytes,
  peerIdOfPublicKeyHex,
  publicKeyHexOf,
} from "./host.ts";
