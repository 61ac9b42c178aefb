/**
 * node/: the real shell around the protocol core: identity on disk, and (to
 * come) the libp2p host, store, executor, control API and CLI.
 */

export {
  createExecutor,
  DuplicateRunError,
  dagCborCode,
  defaultBwrapPath,
  defaultMaxLogBytesPerStream,
  type Executor,
  ExecutorOptionError,
  type ExecutorOptions,
  type LogChunk,
  maxOutputDepth,
  maxOutputFilesPerRun,
  maxSandboxShmBytes,
  type OutputEntry,
  OutputRefusedError,
  outputsDigest,
  outputsManifest,
  type ProbeOptions,
  probeSandbox,
  type RunHooks,
  type SandboxProbe,
  SandboxUnavailableError,
  sandboxGid,
  sandboxProbeTimeoutMs,
  sandboxUid,
  sandboxWorkPath,
  stdioDrainMs,
} from "./executor.ts";
export {
  decodeIdentityFile,
  encodeIdentityFile,
  generateIdentity,
  KeyFileError,
  keyFileMode,
  loadIdentity,
  maxKeyFileBytes,
  peerIdOf,
  saveIdentity,
  toLibp2pPrivateKey,
} from "./identity.ts";
