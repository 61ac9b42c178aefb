/**
 * jobs/: message bodies, the master and worker state machines, policies.
 * House rules (DESIGN.md, Rule 1): no I/O, no clock, no randomness of its own.
 */

export {
  type Admission,
  type AdmissionContext,
  type AdmissionReason,
  type AdmissionVerdict,
  admissionReasons,
  admit,
  type Channel,
  type Delivery,
  isStale,
  type Opened,
  type SignedBody,
} from "./admission.ts";
export { resultDigest } from "./digest.ts";
export {
  type DriverOptions,
  type DriverPorts,
  type LogFields,
  NodeDriver,
  type StampedMessage,
  type StoredNode,
  type StoreWrite,
  seqBlockSize,
  seqPerMs,
  sequenceFloorAt,
} from "./driver.ts";
export type {
  Effect,
  ExecutionRequest,
  LogChunkRecord,
  OutboundMessage,
  Rng,
  StepOutput,
  Unsequenced,
} from "./effects.ts";
export { hexOf, keyOf } from "./effects.ts";
export {
  type AttemptRecord,
  type AttemptState,
  blockingLock,
  createMaster,
  defaultMasterConfig,
  explainJob,
  type JobRecord,
  type JobStatus,
  jobView,
  type KnownWorker,
  type LockHold,
  lockWaitText,
  type MasterChanges,
  type MasterConfig,
  type MasterInput,
  MasterInputError,
  type MasterState,
  type MasterStepOutput,
  maxOfferSuspensionMs,
  offersHeld,
  type Reputation,
  restoreMaster,
  type ShardRecord,
  stepMaster,
} from "./master.ts";
export * from "./messages.ts";
export {
  announcementOf,
  directSide,
  type MessageDomainName,
  masterInputOf,
  messageDomainName,
  type TopicRoute,
  topicRoute,
  workerInputOf,
} from "./routing.ts";
export {
  type Availability,
  type AvailabilityRules,
  type AvailabilityWindow,
  type Candidate,
  canServe,
  changesNothing,
  checkedRules,
  createWorker,
  defaultWorkerConfig,
  type ExecutionReport,
  effectiveAvailability,
  logChunkLifetimeMs,
  logChunkOf,
  maxRuleWindows,
  minutesPerDay,
  type OutboxEntry,
  offerStatus,
  type RunRecord,
  type SentOffer,
  stepWorker,
  type WorkerConfig,
  type WorkerFacts,
  type WorkerInput,
  type WorkerState,
} from "./worker.ts";
