/**
 * node/sandbox: running a job on this machine. The bubblewrap sandbox
 * (sandbox.ts) and its seccomp filter (seccomp.ts), the executor that runs a
 * job's steps in it (executor.ts), the disk a run may use (disk.ts), and the
 * rules and digest of a run's declared outputs (outputs.ts).
 */
export { minRunDiskBytes, runDiskLimitBytes } from "./disk.ts";
export {
  createExecutor,
  DuplicateRunError,
  type Executor,
  ExecutorOptionError,
  type ExecutorOptions,
  type LogChunk,
  type PreparedRun,
  SandboxUnavailableError,
  type StepEvent,
} from "./executor.ts";
export { maxOutputDepth, maxOutputFilesPerRun, OutputRefusedError, resolveInside } from "./outputs.ts";
export { ensureWorkRoot, locateExecutable, neutralWorkRoot, probeSandbox, type SandboxProbe } from "./sandbox.ts";
export {
  type CompiledFilter,
  compileSeccompFilter,
  SeccompUnavailableError,
  seccompInstallHint,
  seccompRules,
} from "./seccomp.ts";
