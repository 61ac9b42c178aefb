/** The running node: startNode and what it answers with. */
export { NodeRequestError, NodeStartError } from "./errors.ts";
export {
  type HistoryLogChunk,
  interruptedOutcome,
  maxRunHistoryEntries,
  maxRunHistoryLogBytesPerStream,
  openRunHistory,
  type RunHistory,
  type RunHistoryEntry,
  recordedRuns,
} from "./history.ts";
export {
  defaultInputsDeadline,
  type InputsDeadline,
  InputsDeadlineError,
  inputsDeadlineMs,
  runCarrier,
} from "./inputs.ts";
export { createNodeMetrics, type MetricSources, type NodeMetrics } from "./metrics.ts";
export {
  corruptOutputsDigest,
  keepColocationEnv,
  natOptionsOf,
  offenceOf,
  type RunningNode,
  type StartOptions,
  senderFaultIgnores,
  startNode,
  stopDrainMs,
} from "./node.ts";
export { createNodePorts, type NodePorts, openInbound } from "./ports.ts";
export { keysetRecordRules } from "./records.ts";
export { keepAvailability, levelLockedCode, openStoreOf, resumeAvailability } from "./startup.ts";
export { waitingReason } from "./waiting.ts";
