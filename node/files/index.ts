/**
 * node/files: the files of a node that people write or keep. The node key
 * (identity.ts), the config file (config.ts), job files and capability spec
 * files (jobfile.ts), a project's keys, keysets and published specs
 * (projects.ts), and the YAML reading they share (yamlfile.ts), which sim/'s
 * scenario files use too.
 */
export {
  configPath,
  configTemplate,
  defaultConfig,
  hexToBytes,
  loadConfig,
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
