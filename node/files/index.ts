/**
 * node/files: the files of a node that people write or keep. The node key
 * (identity.ts), the config file (config.ts), job files and capability spec
 * files (jobfile.ts), a project's keys, keysets and published specs
 * (projects.ts), the YAML reading they share (yamlfile.ts), which sim/'s
 * scenario files use too, the libp2p addresses people type (addresses.ts),
 * and the lock that names the process running a data folder's node
 * (lockfile.ts).
 */
export { type AddressRole, addressProblem, bootstrapExample, listenExample } from "./addresses.ts";
export {
  configPath,
  configTemplate,
  defaultConfig,
  hexToBytes,
  loadConfig,
  maxAvailabilityWindows,
  maxLoadAverageCeiling,
  type NodeConfig,
  parseConfig,
  saveConfig,
  type TrustEntry,
  trustEntrySchema,
  writeFileAtomic,
} from "./config.ts";
export {
  decodeIdentityFile,
  generateIdentity,
  KeyFileError,
  loadIdentity,
  peerIdOf,
  saveIdentity,
  toLibp2pPrivateKey,
} from "./identity.ts";
export { defaultJobDeadlineInMs, maxJobFileBytes, maxSpecFileBytes, parseJobFile, parseSpecFile } from "./jobfile.ts";
export {
  acquireNodeLock,
  heldText,
  lockFileName,
  lockHolder,
  NodeHeldError,
  type NodeLock,
  type NodeLockHandle,
  processRuns,
} from "./lockfile.ts";
export {
  addRunner,
  chooseProject,
  delegateAnnouncer,
  initProject,
  listProjects,
  loadProjectKeyset,
  loadPublishedSpecs,
  type ProjectKeysetChange,
  parseAnnouncerKey,
  publishSpec,
  removeRunner,
  renewKeyset,
  revokeAnnouncer,
  rotateRoots,
  trustAddLine,
} from "./projects.ts";
export {
  describeValue,
  FileFieldError,
  formatDuration,
  parseDurationMs,
  parseSizeBytes,
  problemLines,
  readYaml,
  validateYaml,
  YamlSyntaxError,
} from "./yamlfile.ts";
