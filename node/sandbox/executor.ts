/**
 * The executor: runs one job's steps in the sandbox of sandbox.ts, streams
 * its log as chunks, and reports how it ended.
 *
 * A run: a fresh run folder under workRoot (the work folder the job sees as
 * /work, its private /tmp, generated /etc files), every step through
 * `/bin/sh -c` in order until one fails, the log streamed to `onLog` by byte
 * offset per stream, the declared outputs hashed once the job has ended on its
 * own, and the run folder removed whatever happened. Where no sandbox can be
 * made, every run is refused with a SandboxUnavailableError, unless the
 * volunteer opted out with allowUnsandboxed: then the steps run bare (same
 * driver and limits, no namespaces) and every such run is reported through
 * onWarning.
 */
import { createHash, type Hash } from "node:crypto";
import { lchown, readdir } from "node:fs/promises";
import { join, resolve } from "node:path";
import { CimeshError } from "../../crypto/index.ts";
import {
  type ExecutionReport,
  type ExecutionRequest,
  maxDurationMs,
  maxLogChunkBytes as maxJobLogChunkBytes,
  maxLogOffsetBytes,
  maxSummaryChars,
  type Outcome,
} from "../../jobs/index.ts";
import { type BlobStore, packOutputs } from "../store/index.ts";
import { diskMeter, runDiskLimitBytes, watchDisk } from "./disk.ts";
import { OutputRefusedError, outputsDigest, rawSha256Cid } from "./outputs.ts";
import {
  defaultBwrapPath,
  ImageSandboxError,
  installHint,
  killGroup,
  locateExecutable,
  makeRunFolders,
  probeSandbox,
  type RunFolders,
  removeRunFolders,
  runsAsRoot,
  type SandboxProbe,
  type SpawnPlan,
  sandboxEnv,
  sandboxGid,
  sandboxPlan,
  sandboxUid,
  sandboxWorkPath,
  startPlan,
  unsandboxedPlan,
  writeSeccompFilter,
} from "./sandbox.ts";

/** Log bytes kept per stream and run: past it, output is drained and dropped (the summary says how much). Matches what a master stores. */
export const defaultMaxLogBytesPerStream = 16 * 1024 * 1024;
/**
 * After the job's first process exits, how long its pipes may stay open before
 * they are closed on it. In the sandbox they close at once (the pid namespace
 * dies with its init); bare, a process that left the process group could hold them.
 */
export const stdioDrainMs = 2_000;
/** Bytes of step status the driver may send on fd 3: two short lines per step. */
export const maxStatusBytes = 16 * 1024;

/** A sandbox cannot be made here, and the volunteer has not opted out of it. */
export class SandboxUnavailableError extends CimeshError {
  constructor(reason: string) {
    super(
      "ERR_SANDBOX_UNAVAILABLE",
      `expected a bubblewrap sandbox to run jobs in, but ${reason}. This worker refuses every job until then: ${installHint}; ` +
        "or, knowing that jobs then run with your user's access to this machine, start it with --allow-unsandboxed",
    );
  }
}

/** The executor was given an option it cannot work with. */
export class ExecutorOptionError extends CimeshError {
  constructor(option: string, expected: string, got: unknown) {
    super("ERR_EXECUTOR_OPTION", `executor option ${option}: expected ${expected}, got ${String(got)}`);
  }
}

/** A run id that is already running: each run needs its own id, so that kill names one run. */
export class DuplicateRunError extends CimeshError {
  constructor(runId: string) {
    super(
      "ERR_DUPLICATE_RUN",
      `run ${JSON.stringify(runId)}: expected a run id not already running; wait for it or kill it first`,
    );
  }
}

export interface ExecutorOptions {
  /**
   * Folder under which every run gets its own folder (created if missing,
   * mode 0700, or 0711 when the node runs as root); required. Each run's
   * folder is removed when the run ends. Only that run's folder is visible to
   * its job, but its host path is (in /proc/self/mountinfo): use a neutral
   * one (neutralWorkRoot), never a folder under the node's data folder.
   */
  readonly workRoot: string;
  /**
   * Where no sandbox can be made, run jobs bare instead of refusing them.
   * Default false. An explicit opt-out: every bare run is reported through onWarning.
   */
  readonly allowUnsandboxed?: boolean;
  /** The volunteer's permission: a job gets the network only if it asks and this allows. Default false. */
  readonly allowNetwork?: boolean;
  /** Largest chunk handed to onLog. Default, and at most, jobs' maxLogChunkBytes (64 KiB). */
  readonly maxLogChunkBytes?: number;
  /** Log bytes kept per stream and run. Default defaultMaxLogBytesPerStream (16 MiB). */
  readonly maxLogBytesPerStream?: number;
  /** bubblewrap: a path, or a name looked up on the node's PATH. Default "bwrap". */
  readonly bwrapPath?: string;
  /** Told about every run without a sandbox, and about an onLog that throws. Default: printed on stderr. */
  readonly onWarning?: (message: string) => void;
  /**
   * Where a run's declared outputs are packed as a content-addressed tree
   * (node/store's packOutputs): the outputs digest is then the tree's root
   * CID, and its blobs stay in this store to be served. Without it, the
   * outputs are only hashed (outputs.ts's interim digest).
   */
  readonly blobStore?: BlobStore;
}

export interface LogChunk {
  readonly stream: "stdout" | "stderr";
  /** Byte offset of `data` within its stream: a consumer that stores by offset stores each byte once. */
  readonly offset: number;
  readonly data: Uint8Array;
}

/** What a run's preparation made ready beside its work folder. */
export interface PreparedRun {
  /** The host folder of the job's image, unpacked and read-only (node/images): the steps' root filesystem. */
  readonly imageRoot?: string | null;
}

export interface RunHooks {
  onLog(chunk: LogChunk): void;
  /**
   * Fills the run's work folder before the first step (the job's inputs, unpacked) and makes its image ready. What
   * it writes into the work folder is handed to the job's uid; if it throws, the run ends refused with its message.
   * A job that names an image is refused unless this returns the image's folder.
   */
  // biome-ignore lint/suspicious/noConfusingVoidType: a hook that only fills the work folder returns nothing.
  prepare?(workFolder: string): Promise<PreparedRun | undefined | void>;
  /**
   * Told as each step starts and exits (from the step driver's status channel, never the job's log): what a
   * reported build times per step. A job could write to the channel through /proc and mislabel only its own steps.
   */
  onStep?(event: StepEvent): void;
}

/** A step starting, or exiting with its code. */
export type StepEvent =
  | { readonly kind: "start"; readonly index: number }
  | { readonly kind: "exit"; readonly index: number; readonly exitCode: number };

export interface Executor {
  /** Whether a sandbox can be made here, and why not: probed once, on first use, then remembered. */
  probe(): Promise<SandboxProbe>;
  /**
   * Runs one job to its end. Resolves with the report for every way a job can
   * end, including `refused` for a job this executor cannot start; rejects
   * with SandboxUnavailableError when no sandbox can be made (and bare runs
   * are not allowed), or DuplicateRunError.
   */
  run(request: ExecutionRequest, hooks: RunHooks): Promise<ExecutionReport>;
  /** Ends a run at once (outcome `killed`, with the reason in its summary); false when no such run is going. */
  kill(runId: string, reason: string): boolean;
  /** The host pid of the run's first process (bubblewrap's, in a sandbox) while it runs; null before it starts or once over. */
  pidOf?(runId: string): number | null;
}

/** Gives what `prepare` wrote to the job's uid, so a build can write beside its sources. */
async function handOver(folder: string): Promise<void> {
  for (const entry of await readdir(folder, { recursive: true, withFileTypes: true })) {
    await lchown(join(entry.parentPath, entry.name), sandboxUid, sandboxGid);
  }
}

interface RunHandle {
  killReason: string | null;
  /** Bytes of disk measured when the run was stopped for using more than its limit. */
  diskOverBytes: number | null;
  stop: (() => void) | null;
  /** The run's first process, once started. */
  pid: number | null;
}

interface Settings {
  readonly workRoot: string;
  readonly allowUnsandboxed: boolean;
  readonly allowNetwork: boolean;
  readonly maxLogChunkBytes: number;
  readonly maxLogBytesPerStream: number;
  readonly bwrapPath: string;
  readonly warn: (message: string) => void;
  readonly blobStore: BlobStore | null;
}

function settingsOf(options: ExecutorOptions): Settings {
  if (typeof options.workRoot !== "string" || options.workRoot === "") {
    throw new ExecutorOptionError("workRoot", "a folder path", options.workRoot);
  }
  const chunk = options.maxLogChunkBytes ?? maxJobLogChunkBytes;
  if (!Number.isInteger(chunk) || chunk < 1 || chunk > maxJobLogChunkBytes) {
    throw new ExecutorOptionError("maxLogChunkBytes", `an integer in 1..${maxJobLogChunkBytes}`, chunk);
  }
  const perStream = options.maxLogBytesPerStream ?? defaultMaxLogBytesPerStream;
  if (!Number.isInteger(perStream) || perStream < 0 || perStream > maxLogOffsetBytes) {
    throw new ExecutorOptionError("maxLogBytesPerStream", `an integer in 0..${maxLogOffsetBytes}`, perStream);
  }
  const onWarning = options.onWarning;
  return {
    workRoot: resolve(options.workRoot),
    allowUnsandboxed: options.allowUnsandboxed ?? false,
    allowNetwork: options.allowNetwork ?? false,
    maxLogChunkBytes: chunk,
    maxLogBytesPerStream: perStream,
    bwrapPath: options.bwrapPath ?? defaultBwrapPath,
    warn: onWarning ?? ((message) => process.stderr.write(`cimesh executor WARNING: ${message}\n`)),
    blobStore: options.blobStore ?? null,
  };
}

/**
 * The two log streams of a run: chunked for onLog, and hashed. The log digest
 * covers stdout then stderr, each as the consumer reassembles it by offset:
 * how the two interleaved in time is not reproducible, so it is not part of it.
 */
class RunLog {
  readonly kept = { stdout: 0, stderr: 0 };
  readonly dropped = { stdout: 0, stderr: 0 };
  private readonly stdoutHash: Hash = createHash("sha256");
  private readonly stderrParts: Uint8Array[] = [];
  private readonly settings: Settings;
  private readonly onLog: RunHooks["onLog"];
  private warned = false;
  constructor(settings: Settings, onLog: RunHooks["onLog"]) {
    this.settings = settings;
    this.onLog = onLog;
  }

  write(stream: "stdout" | "stderr", data: Uint8Array): void {
    const room = this.settings.maxLogBytesPerStream - this.kept[stream];
    const kept = data.length > room ? data.subarray(0, Math.max(0, room)) : data;
    this.dropped[stream] += data.length - kept.length;
    if (kept.length === 0) return;
    for (let at = 0; at < kept.length; at += this.settings.maxLogChunkBytes) {
      // A copy: the consumer may keep it, and a Buffer's memory may be pooled.
      const piece = new Uint8Array(kept.subarray(at, at + this.settings.maxLogChunkBytes));
      try {
        this.onLog({ stream, offset: this.kept[stream] + at, data: piece });
      } catch (error) {
        if (!this.warned) this.settings.warn(`onLog threw (${String(error)}); the run goes on`);
        this.warned = true;
      }
    }
    if (stream === "stdout") this.stdoutHash.update(kept);
    else this.stderrParts.push(new Uint8Array(kept));
    this.kept[stream] += kept.length;
  }

  digest(): string {
    for (const part of this.stderrParts) this.stdoutHash.update(part);
    return rawSha256Cid(new Uint8Array(this.stdoutHash.digest()));
  }

  notes(): string[] {
    const notes: string[] = [];
    for (const stream of ["stdout", "stderr"] as const) {
      if (this.dropped[stream] > 0) {
        notes.push(`${stream} cut at ${this.kept[stream]} bytes (${this.dropped[stream]} more dropped)`);
      }
    }
    return notes;
  }
}

interface Ended {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly timedOut: boolean;
  readonly spawnError: Error | null;
  readonly startedSteps: number;
  readonly stepExits: ReadonlyMap<number, number>;
}

/**
 * Spawns a plan, streams its output, enforces the timeout and answers kill;
 * resolves once it is over. `started` is told the pid of the first process.
 */
function supervise(
  plan: SpawnPlan,
  timeoutMs: number,
  handle: RunHandle,
  log: RunLog,
  started: (pid: number) => void,
  onStep?: (event: StepEvent) => void,
): Promise<Ended> {
  return new Promise((settle) => {
    let timedOut = false;
    let spawnError: Error | null = null;
    let status = "";
    const child = startPlan(plan);
    if (child.pid !== undefined) started(child.pid);
    const stop = () => {
      if (child.pid !== undefined) killGroup(child.pid);
    };
    handle.stop = stop;
    const timer = setTimeout(() => {
      timedOut = true;
      stop();
    }, timeoutMs);
    child.stdout?.on("data", (data: Buffer) => log.write("stdout", data));
    child.stderr?.on("data", (data: Buffer) => log.write("stderr", data));
    let told = 0;
    child.stdio[3]?.on("data", (data: Buffer) => {
      if (status.length < maxStatusBytes) status += data.toString("latin1");
      if (onStep === undefined) return;
      const end = status.lastIndexOf("\n") + 1;
      for (const line of status.slice(told, end).split("\n")) {
        const start = /^start (\d+)$/.exec(line);
        if (start !== null) onStep({ kind: "start", index: Number(start[1]) });
        const exit = /^exit (\d+) (\d+)$/.exec(line);
        if (exit !== null) onStep({ kind: "exit", index: Number(exit[1]), exitCode: Number(exit[2]) });
      }
      told = Math.max(told, end);
    });
    let drain: NodeJS.Timeout | undefined;
    child.on("exit", () => {
      // The job has ended: a timeout or kill from now on would only hit a reaped pid.
      clearTimeout(timer);
      handle.stop = null;
      if (plan.sweepGroupOnExit) stop();
      drain = setTimeout(() => {
        for (const stream of [child.stdout, child.stderr, child.stdio[3]]) stream?.destroy();
      }, stdioDrainMs);
    });
    let done = false;
    const finish = (code: number | null, signal: NodeJS.Signals | null) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      clearTimeout(drain);
      handle.stop = null;
      const { startedSteps, stepExits } = parseStatus(status);
      settle({ code, signal, timedOut, spawnError, startedSteps, stepExits });
    };
    child.on("error", (error) => {
      spawnError = error;
      // A process that never started emits no close.
      if (child.pid === undefined) finish(null, null);
    });
    child.on("close", finish);
    if (handle.killReason !== null) stop();
  });
}

function parseStatus(status: string): { startedSteps: number; stepExits: Map<number, number> } {
  let startedSteps = 0;
  const stepExits = new Map<number, number>();
  for (const line of status.split("\n")) {
    const start = /^start (\d+)$/.exec(line);
    if (start !== null) startedSteps = Math.max(startedSteps, Number(start[1]) + 1);
    const exit = /^exit (\d+) (\d+)$/.exec(line);
    if (exit !== null) stepExits.set(Number(exit[1]), Number(exit[2]));
  }
  return { startedSteps, stepExits };
}

const envNamePattern = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** What the sandbox's command line cannot carry: a NUL byte, or a variable name `env` would misread. */
function unrunnable(request: ExecutionRequest): string | null {
  for (const [index, step] of request.job.steps.entries()) {
    if (step.run.includes("\0")) return `step ${index + 1}: expected a command without NUL characters`;
  }
  for (const [name, value] of [...Object.entries(request.job.env), ...Object.entries(request.env)]) {
    if (!envNamePattern.test(name)) return `env ${JSON.stringify(name)}: expected a variable name`;
    if (value.includes("\0")) return `env ${name}: expected a value without NUL characters`;
  }
  return null;
}

/** What a run reports, its duration counted from `startedMs`: fields not given are null, the summary cut to size. */
type Reporter = (outcome: Outcome, fields: Partial<ExecutionReport> & { summary: string }) => ExecutionReport;

function reporterOf(request: ExecutionRequest, startedMs: number): Reporter {
  return (outcome, fields) => ({
    runId: request.runId,
    outcome,
    exitCode: null,
    outputsDigest: null,
    logDigest: null,
    ...fields,
    summary: fields.summary.slice(0, maxSummaryChars),
    durationMs: Math.min(Math.round(performance.now() - startedMs), maxDurationMs),
  });
}

/** The job's limits as the sandbox enforces them. */
function limitsOf(request: ExecutionRequest): RunLimits {
  const { resources } = request.job;
  return {
    processes: resources.processes,
    memoryBytes: resources.memoryBytes,
    fileBytes: runDiskLimitBytes(resources.diskBytes),
  };
}

interface RunLimits {
  readonly processes: number;
  readonly memoryBytes: number;
  readonly fileBytes: number;
}

/**
 * Makes the run's inputs (and image) ready in its folders and plans how its steps are started: in bubblewrap, or
 * bare when the sandbox is unavailable and allowUnsandboxed is set. A string says why the run is refused.
 */
async function planRun(
  settings: Settings,
  request: ExecutionRequest,
  hooks: RunHooks,
  sandbox: SandboxProbe,
  folders: RunFolders,
): Promise<SpawnPlan | string> {
  const { job } = request;
  let imageRoot: string | null = null;
  if (hooks.prepare !== undefined) {
    try {
      imageRoot = (await hooks.prepare(folders.work))?.imageRoot ?? null;
      if (runsAsRoot()) await handOver(folders.work);
    } catch (error) {
      return `refused: the job's inputs or image could not be made ready: ${String(error)}`;
    }
  }
  if (job.image !== undefined && imageRoot === null)
    return `refused: the job's image ${job.image} was not made ready on this node`;
  const limits = limitsOf(request);
  const steps = job.steps.map((step) => step.run);
  if (!sandbox.ok) {
    settings.warn(
      `run ${request.runId} (job ${request.jobId} of project ${request.project}) runs WITHOUT a sandbox ` +
        `because allowUnsandboxed is set and ${sandbox.reason}: its steps can read whatever this node's user ` +
        "(uid 65534 when the node runs as root) can read on this machine, and use its network",
    );
    const env = sandboxEnv({ home: folders.work, tmp: folders.tmp }, job.env, request.env);
    return unsandboxedPlan({ folders, limits, env, steps });
  }
  const bwrap = await locateExecutable(settings.bwrapPath);
  if (bwrap === null) throw new SandboxUnavailableError(`bubblewrap (${settings.bwrapPath}) is gone`);
  if (sandbox.seccomp === null || sandbox.seccomp === undefined)
    throw new SandboxUnavailableError("the probe compiled no seccomp filter");
  const seccompFile = await writeSeccompFilter(folders, sandbox.seccomp);
  const env = sandboxEnv({ home: sandboxWorkPath, tmp: "/tmp" }, job.env, request.env);
  const network = job.network && settings.allowNetwork;
  try {
    return await sandboxPlan({ bwrap, folders, seccompFile, network, limits, env, steps, imageRoot });
  } catch (error) {
    if (!(error instanceof ImageSandboxError)) throw error;
    return `refused: ${error.message}`;
  }
}

/** How the steps ran, with the disk the run used (measured at the end too) and its log. */
interface Ran {
  readonly ended: Ended;
  readonly usedBytes: number;
  readonly log: RunLog;
}

/** Runs the plan under the job's timeout, stopping it if it uses more disk than its limit. */
async function runPlan(
  settings: Settings,
  request: ExecutionRequest,
  hooks: RunHooks,
  handle: RunHandle,
  plan: SpawnPlan,
  folders: RunFolders,
  sandboxed: boolean,
): Promise<Ran> {
  const diskLimitBytes = runDiskLimitBytes(request.job.resources.diskBytes);
  const log = new RunLog(settings, hooks.onLog);
  const jobFolders = [folders.work, folders.tmp];
  // Open files without a name are looked for through the sandbox's own /proc; a bare run has none of its own.
  let childPid: number | null = null;
  const meter = diskMeter(jobFolders, diskLimitBytes, () => (sandboxed ? childPid : null));
  const watch = watchDisk(meter, diskLimitBytes, (usedBytes) => {
    handle.diskOverBytes = usedBytes;
    handle.stop?.();
  });
  let ended: Ended;
  try {
    ended = await supervise(
      plan,
      request.job.timeoutMs,
      handle,
      log,
      (pid) => {
        childPid = pid;
        handle.pid = pid;
      },
      hooks.onStep,
    );
  } finally {
    await watch.stop();
  }
  // What the job left behind counts too, once it has ended (a quick job may pass the limit between two checks).
  const usedBytes = handle.diskOverBytes ?? (await diskMeter(jobFolders, diskLimitBytes, () => null).measure());
  return { ended, usedBytes, log };
}

/** What a run that ended says: killed, over its disk, timed out, not started, or its steps' exit; outputs packed. */
async function concludeRun(
  settings: Settings,
  request: ExecutionRequest,
  handle: RunHandle,
  ran: Ran,
  folders: RunFolders,
  report: Reporter,
): Promise<ExecutionReport> {
  const { job } = request;
  const { ended, usedBytes, log } = ran;
  const diskLimitBytes = runDiskLimitBytes(job.resources.diskBytes);
  const notes = log.notes();
  if (job.network && !settings.allowNetwork) notes.push("ran without network: this worker does not allow it");
  const logDigest = log.digest();
  const failedStep = ended.startedSteps > 0 ? ended.startedSteps - 1 : 0;
  const stepName = (index: number) => `step ${index + 1} ${JSON.stringify(job.steps[index]?.name ?? "?")}`;
  const withNotes = (text: string) => [text, ...notes].join("; ");

  if (handle.killReason !== null)
    return report("killed", {
      logDigest,
      summary: withNotes(`killed in ${stepName(failedStep)}: ${handle.killReason}`),
    });
  if (usedBytes > diskLimitBytes) {
    const stopped = handle.diskOverBytes !== null ? "stopped in" : "ended";
    return report("failed", {
      logDigest,
      summary: withNotes(
        `${stopped} ${stepName(failedStep)} using more disk than allowed: at least ${usedBytes} bytes in /work ` +
          `and /tmp, over its limit of ${diskLimitBytes} bytes (resources.diskBytes ${job.resources.diskBytes}` +
          `${diskLimitBytes > job.resources.diskBytes ? ", raised to the minimum every run gets" : ""})`,
      ),
    });
  }
  if (ended.timedOut)
    return report("timed-out", {
      logDigest,
      summary: withNotes(`timed out after ${job.timeoutMs} ms in ${stepName(failedStep)}`),
    });
  if (ended.spawnError !== null)
    return report("refused", { summary: `refused: could not start the job (${ended.spawnError.message})` });
  if (ended.startedSteps === 0)
    return report("refused", {
      logDigest,
      summary: withNotes(
        `refused: the sandbox did not start (exit ${ended.code ?? ended.signal}); its stderr says why`,
      ),
    });

  let outcome: Outcome;
  let summary: string;
  if (ended.code === 0) {
    outcome = "succeeded";
    summary = `${job.steps.length} step${job.steps.length === 1 ? "" : "s"} passed`;
  } else if (ended.code !== null) {
    outcome = "failed";
    summary = `${stepName(failedStep)} failed with exit code ${ended.stepExits.get(failedStep) ?? ended.code}`;
  } else {
    outcome = "failed";
    summary = `ended by ${ended.signal} in ${stepName(failedStep)}`;
  }
  // Outputs only of a job that ended on its own: a killed one left them half-written.
  let digest: string | null = null;
  try {
    const store = settings.blobStore;
    if (store === null) digest = await outputsDigest(folders.work, job.outputs);
    else if (job.outputs.length > 0) digest = await packOutputs(folders.work, job.outputs, store);
  } catch (error) {
    // With a store, a tree past its limits (or a full store) fails the run as a refused output does.
    const refused =
      error instanceof OutputRefusedError || (settings.blobStore !== null && error instanceof CimeshError);
    if (!refused) throw error;
    outcome = "failed";
    summary = `${summary}; ${error.message}`;
  }
  return report(outcome, { exitCode: ended.code, outputsDigest: digest, logDigest, summary: withNotes(summary) });
}

export function createExecutor(options: ExecutorOptions): Executor {
  const settings = settingsOf(options);
  let probed: Promise<SandboxProbe> | null = null;
  const runs = new Map<string, RunHandle>();

  const probe = (): Promise<SandboxProbe> => {
    probed ??= probeSandbox({ workRoot: settings.workRoot, bwrapPath: settings.bwrapPath });
    return probed;
  };

  async function execute(request: ExecutionRequest, hooks: RunHooks, handle: RunHandle): Promise<ExecutionReport> {
    const report = reporterOf(request, performance.now());
    const sandbox = await probe();
    if (!sandbox.ok && !settings.allowUnsandboxed) throw new SandboxUnavailableError(sandbox.reason);
    const problem = unrunnable(request);
    if (problem !== null) return report("refused", { summary: `refused: ${problem}` });
    if (handle.killReason !== null)
      return report("killed", { summary: `killed before it started: ${handle.killReason}` });
    const { image } = request.job;
    if (image !== undefined && !sandbox.ok)
      return report("refused", {
        summary: `refused: the job runs in image ${image}, which needs the sandbox, and ${sandbox.reason}`,
      });
    const folders = await makeRunFolders(settings.workRoot);
    try {
      const plan = await planRun(settings, request, hooks, sandbox, folders);
      if (typeof plan === "string") return report("refused", { summary: plan });
      const ran = await runPlan(settings, request, hooks, handle, plan, folders, sandbox.ok);
      return await concludeRun(settings, request, handle, ran, folders, report);
    } finally {
      await removeRunFolders(folders.root);
    }
  }

  return {
    probe,
    async run(request, hooks) {
      if (runs.has(request.runId)) throw new DuplicateRunError(request.runId);
      const handle: RunHandle = { killReason: null, diskOverBytes: null, stop: null, pid: null };
      runs.set(request.runId, handle);
      try {
        return await execute(request, hooks, handle);
      } finally {
        runs.delete(request.runId);
      }
    },
    pidOf(runId) {
      return runs.get(runId)?.pid ?? null;
    },
    kill(runId, reason) {
      const handle = runs.get(runId);
      if (handle === undefined) return false;
      handle.killReason ??= reason;
      handle.stop?.();
      return true;
    },
  };
}
