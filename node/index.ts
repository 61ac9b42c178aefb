/**
 * node/: the real shell around the protocol core: identity on disk, and (to
 * come) the libp2p host, store, executor, control API and CLI.
 */
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
