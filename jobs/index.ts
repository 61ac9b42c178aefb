/**
 * jobs/: message bodies, the master and worker state machines, policies.
 * House rules (DESIGN.md, Rule 1): no I/O, no clock, no randomness of its own.
 */

export { resultDigest } from "./digest.ts";
export type { Effect, ExecutionRequest, OutboundMessage, Rng, StepOutput } from "./effects.ts";
export { hexOf, keyOf } from "./effects.ts";
export {
  type AttemptRecord,
  type AttemptState,
  createMaster,
  defaultMasterConfig,
  explainJob,
  type JobRecord,
  type JobStatus,
  jobView,
  type KnownWorker,
  type MasterConfig,
  type MasterInput,
  MasterInputError,
  type MasterState,
  type Reputation,
  type ShardRecord,
  stepMaster,
} from "./master.ts";
export * from "./messages.ts";
export {
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
  advertOf,
  type Candidate,
  canServe,
  createWorker,
  defaultWorkerConfig,
  type ExecutionReport,
  effectiveAvailability,
  type RunRecord,
  stepWorker,
  type WorkerConfig,
  type WorkerFacts,
  type WorkerInput,
  type WorkerState,
} from "./worker.ts";
