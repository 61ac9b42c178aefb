/**
 * node/store: what a node keeps on disk. The content-addressed blob store
 * and the trees packed into it (blobs.ts), and the node's LevelDB store of
 * what the shell core persists: machine records, replay ledger, keysets, logs (level.ts).
 */
export {
  BlobQuotaError,
  type BlobStore,
  checkUnpackLimit,
  MissingBlobError,
  openBlobStore,
  packOutputs,
  packTree,
  TreeLinkError,
  TreePackError,
  TreeTooLargeError,
  TreeUnpackError,
  treeBlobs,
  type UnpackLimit,
  unpackedBytesOf,
  unpackedEntryBytes,
  unpackTree,
} from "./blobs.ts";
export {
  maxStoredLogBytesPerStream,
  type NodeStore,
  openNodeStore,
  type StoredLogChunk,
  type StoreMemory,
  workerStoreMemory,
} from "./level.ts";
