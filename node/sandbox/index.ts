/**
 * node/sandbox: running a job on this machine. The bubblewrap sandbox
 * (sandbox.ts), the executor that runs a job's steps in it (executor.ts),
 * and the rules and digest of a run's declared outputs (outputs.ts).
 */
export {
  createExecutor,
  DuplicateRunError,
  type Executor,
  ExecutorOptionError,
  type ExecutorOptions,
  type LogChunk,
  SandboxUnavailableError,
} from "./executor.ts";
export { maxOutputDepth, maxOutputFilesPerRun, OutputRefusedError, resolveInside } from "./outputs.ts";
export { probeSandbox } from "./sandbox.ts";
