/**
 * node/: the real shell around the protocol core. Its rooms: host/ (the
 * libp2p host, DHT records and the blob protocol), store/ (the blob store and
 * the node's LevelDB store), sandbox/ (the sandbox and the executor), files/
 * (the node key, config, job, spec and project files), control/ (the control
 * API), runtime/ (a running node, made of the others) and cli/ (the `cimesh`
 * command).
 *
 * This face exports what the tests and benchmarks that drive a whole node
 * use; a test of one room imports that room's face.
 */
export type { ControlClient, JobDetail, JobSummary, NodeApi, NodeStatus } from "./control/index.ts";
export { connectControl, startControlServer } from "./control/index.ts";
export { generateIdentity, hexToBytes, loadConfig, parseJobFile, peerIdOf } from "./files/index.ts";
export {
  blobProtocol,
  blobProtocolOptions,
  createHost,
  directProtocol,
  fetchTree,
  type Host,
  maxFrameBytes,
  PeerBans,
  serveBlobs,
} from "./host/index.ts";
export { openBlobStore, packTree, unpackTree } from "./store/index.ts";
