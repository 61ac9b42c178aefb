/**
 * The process harness of the suites that run real `cimesh start` processes
 * (bench/mesh.ts, bench/transfer.ts): loopback data folders, nodes started
 * and stopped, their JSON event lines on stderr, a project's trust, a job
 * submitted and awaited, and the statistics their figures need.
 *
 * Every wait is bounded. Every process started here is registered in the
 * caller's `started` list before anything is awaited, so the caller can stop
 * it (and dump its stderr tail) on failure too.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseDocument } from "yaml";
import { type ControlClient, connectControl } from "../node/index.ts";

/** The CLI the nodes run: `node node/cli/index.ts ...`. */
export const cliPath = fileURLToPath(new URL("../node/cli/index.ts", import.meta.url));

/** The address every node and server here listens on. */
export const loopbackHost = "127.0.0.1";

/** Timings that differ from the config's defaults: the mesh forms in seconds, not in a minute. */
export const benchTiming = { keysetRepublishMs: 1_000 };

/**
 * What masters believe here: every node is on 127.0.0.1 (one network prefix) and the workers are volunteers the
 * project does not name as runners, so a count of agreeing results decides. The benchmarks measure claims and
 * transfers, not the quorum rules (those cost is measured by `npm run bench -- sybil` in the simulator).
 */
export const benchQuorum = { weight: 0, distinctPrefixes: false };

/** Bound on one CLI command (init, project init, trust add). */
export const cliTimeoutMs = 60_000;
/** Bound on a node's start, up to its "listening on" line. */
export const nodeStartTimeoutMs = 30_000;
/** Bound on the mesh forming: every worker holds the project keyset, the master sees every worker. */
export const meshReadyTimeoutMs = 60_000;
/** Bound on a process's clean stop after SIGTERM, then SIGKILL. */
export const stopTimeoutMs = 15_000;
/** Poll interval of the bounded waits that poll. */
export const pollIntervalMs = 200;
/** Output a CLI command may print before it is cut off. */
export const cliOutputLimitBytes = 16 * 1024 * 1024;
/** Characters of a process's stdout kept, to find its address line. */
export const stdoutTailChars = 4_000;

/** The environment of every process started here. */
export const meshEnv = { ...process.env, CIMESH_TEST_MESH: "1" };

/** One JSON event line of a node's stderr; `t` is the node's own Date.now(). */
export interface NodeEvent {
  readonly t: number;
  readonly event: string;
  readonly jobId?: string;
  readonly runId?: string;
  readonly [field: string]: unknown;
}

/** A child process started here, listening or not yet: stopped with SIGTERM, then SIGKILL after stopTimeoutMs. */
export interface Started {
  readonly name: string;
  readonly child: ChildProcess;
  stderrTail(): string;
  stop(): Promise<void>;
}

/** A `cimesh start` process that listens, with its control client. */
export interface MeshNode extends Started {
  readonly dataDir: string;
  readonly address: string;
  readonly control: ControlClient;
}

/** A job's spec as the control API takes it. */
export type JobSpec = Parameters<ControlClient["submit"]>[2];

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `check` every pollIntervalMs until it returns a value (not null, undefined or false); rejects after limitMs. */
export async function until<T>(
  what: string,
  check: () => Promise<T | null | undefined | false> | T | null | undefined | false,
  limitMs: number,
): Promise<T> {
  const deadline = Date.now() + limitMs;
  let lastError: unknown = null;
  while (Date.now() < deadline) {
    try {
      const value = await check();
      if (value !== null && value !== undefined && value !== false) return value;
    } catch (error) {
      lastError = error;
    }
    await sleep(pollIntervalMs);
  }
  throw new Error(`expected ${what} within ${limitMs} ms${lastError === null ? "" : ` (last error: ${lastError})`}`);
}

/** Nearest rank: the smallest value with at least the fraction `p` of the values at or below it. */
export function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil(p * sorted.length));
  return sorted[rank - 1] as number;
}

/** The median; of an even count, the mean of the middle two. */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

/**
 * Every event line of the nodes by `<event>:<jobId>` (the jobId of a runId
 * for run events), first one wins; and whoever waits for one.
 */
export class EventBoard {
  private readonly seen = new Map<string, NodeEvent>();
  private readonly waiting = new Map<string, (event: NodeEvent) => void>();
  private readonly timers = new Set<NodeJS.Timeout>();
  /** A worker whose sandbox cannot run takes no job: set so that a wait fails fast rather than times out. */
  problem: string | null = null;

  /** One stderr line of `node`; a line that is no JSON event is ignored. */
  record(node: string, line: string): void {
    if (!line.startsWith("{")) return;
    let event: NodeEvent;
    try {
      event = JSON.parse(line) as NodeEvent;
    } catch {
      return;
    }
    if (event.event === "sandbox-unavailable") this.problem = `${node}: ${line}`;
    // A runId is <project>/<jobId>/<attempt> (jobs/worker.ts).
    const jobId = event.jobId ?? (typeof event.runId === "string" ? event.runId.split("/").at(-2) : undefined);
    if (typeof jobId !== "string") return;
    const key = `${event.event}:${jobId}`;
    if (this.seen.has(key)) return;
    this.seen.set(key, event);
    this.waiting.get(key)?.(event);
  }

  /** The event, once some node logs it; rejects after limitMs. */
  waitFor(event: string, jobId: string, limitMs: number): Promise<NodeEvent> {
    const key = `${event}:${jobId}`;
    const already = this.seen.get(key);
    if (already !== undefined) return Promise.resolve(already);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        this.waiting.delete(key);
        reject(new Error(`expected ${event} of ${jobId} within ${limitMs} ms`));
      }, limitMs);
      this.timers.add(timer);
      this.waiting.set(key, (found) => {
        clearTimeout(timer);
        this.timers.delete(timer);
        this.waiting.delete(key);
        resolve(found);
      });
    });
  }

  /** Drops every wait still pending (a failed run's), so that no timer keeps this process alive. */
  close(): void {
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    this.waiting.clear();
  }
}

/** Runs `cimesh <args> --data-dir <dataDir>`; its stdout, or an error with its output. */
function cliOk(dataDir: string, args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [cliPath, ...args, "--data-dir", dataDir],
      { env: meshEnv, timeout: cliTimeoutMs, maxBuffer: cliOutputLimitBytes },
      (error, stdout, stderr) => {
        if (error === null) resolve(stdout);
        else reject(new Error(`cimesh ${args.join(" ")} failed (${error.message}): ${stderr}${stdout}`));
      },
    );
  });
}

/** `cimesh init` the data folder `<root>/<name>` for loopback: listen on loopbackHost, no mDNS, benchTiming, benchQuorum. */
export async function initNode(root: string, name: string): Promise<string> {
  const dataDir = join(root, name);
  await cliOk(dataDir, ["init"]);
  const path = join(dataDir, "config.yaml");
  const document = parseDocument(await readFile(path, "utf8"));
  document.set("listen", [`/ip4/${loopbackHost}/tcp/0`]);
  document.set("mdns", false);
  for (const [key, value] of Object.entries(benchTiming)) document.setIn(["timing", key], value);
  for (const [key, value] of Object.entries(benchQuorum)) document.setIn(["quorum", key], value);
  await writeFile(path, document.toString());
  return dataDir;
}

/** What a node needs to trust a project, as `cimesh project init` prints it. */
export interface ProjectTrust {
  readonly project: string;
  readonly roots: string;
  readonly threshold: string;
}

/** `cimesh project init` in the master's data folder. */
export async function initProject(masterDir: string): Promise<ProjectTrust> {
  const printed = await cliOk(masterDir, ["project", "init"]);
  const trust = /trust add (\S+) --roots (\S+) --threshold (\d+)/.exec(printed);
  if (trust === null) throw new Error(`project init printed no trust command: ${printed}`);
  const [, project, roots, threshold] = trust as unknown as [string, string, string, string];
  return { project, roots, threshold };
}

/** `cimesh trust add` of the project in a (worker's) data folder. */
export async function trustProject(dataDir: string, trust: ProjectTrust): Promise<void> {
  await cliOk(dataDir, ["trust", "add", trust.project, "--roots", trust.roots, "--threshold", trust.threshold]);
}

/** How spawnTracked treats a child's standard streams. */
export interface SpawnOptions {
  /** Lines of the child's stderr kept for the error message of a failed run. */
  readonly stderrTailLines: number;
  /** "pipe" keeps the child's stdin open until this process ends (a child may stop when it ends). */
  readonly stdin: "ignore" | "pipe";
  /** Called with each line of the child's stderr. */
  readonly onLine?: (line: string) => void;
}

/** A child process spawned by spawnTracked. */
export interface Tracked {
  readonly entry: Started;
  /** The last stdoutTailChars characters of its stdout. */
  stdout(): string;
  readonly exited: Promise<void>;
}

/**
 * Spawns `args` with process.execPath (environment meshEnv); keeps its stdout
 * tail and the last `stderrTailLines` lines of its stderr. Registered in
 * `started` before anything is awaited.
 */
export function spawnTracked(
  name: string,
  args: readonly string[],
  started: Started[],
  options: SpawnOptions,
): Tracked {
  const child = spawn(process.execPath, [...args], { env: meshEnv, stdio: [options.stdin, "pipe", "pipe"] });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  let stdout = "";
  const tail: string[] = [];
  let partial = "";
  child.stdin?.on("error", () => undefined);
  child.stdout?.setEncoding("utf8").on("data", (text: string) => {
    stdout = `${stdout}${text}`.slice(-stdoutTailChars);
  });
  child.stderr?.setEncoding("utf8").on("data", (text: string) => {
    partial += text;
    const lines = partial.split("\n");
    partial = lines.pop() ?? "";
    for (const line of lines) {
      tail.push(line);
      if (tail.length > options.stderrTailLines) tail.shift();
      options.onLine?.(line);
    }
  });
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), stopTimeoutMs);
    await exited;
    clearTimeout(timer);
  };
  const entry: Started = { name, child, stderrTail: () => tail.join("\n"), stop };
  started.push(entry);
  return { entry, stdout: () => stdout, exited };
}

/**
 * Starts `cimesh start <flags>` on `dataDir` (Node.js given `nodeFlags`; the CLI's sources, or the JavaScript
 * built from them at `entry`), its event lines to `board`,
 * and waits (at most nodeStartTimeoutMs) for its "listening on" line. The
 * process is in `started` even if it never listens.
 */
export async function startNode(
  name: string,
  dataDir: string,
  flags: readonly string[],
  board: EventBoard,
  started: Started[],
  stderrTailLines: number,
  nodeFlags: readonly string[] = [],
  entry: string = cliPath,
): Promise<MeshNode> {
  const node = spawnTracked(name, [...nodeFlags, entry, "start", ...flags, "--data-dir", dataDir], started, {
    stderrTailLines,
    stdin: "ignore",
    onLine: (line) => board.record(name, line),
  });
  const address = await Promise.race([
    until("the node to listen", () => /listening on (\S+)/.exec(node.stdout())?.[1], nodeStartTimeoutMs),
    node.exited.then(() => {
      throw new Error(`node ${name} exited before it listened: ${node.entry.stderrTail()}\n${node.stdout()}`);
    }),
  ]);
  return { ...node.entry, dataDir, address, control: connectControl(dataDir) };
}

/**
 * Kills what is still running when this process exits some other way (an
 * exception past the suite, Ctrl-C). Returns the function that undoes it.
 */
export function killOnExit(started: readonly Started[]): () => void {
  const killAll = () => {
    for (const entry of started)
      if (entry.child.exitCode === null && entry.child.signalCode === null) entry.child.kill();
  };
  process.once("exit", killAll);
  return () => process.off("exit", killAll);
}

/** Prints the stderr tail of every process started, for a failed run. */
export function printStderrTails(started: readonly Started[]): void {
  for (const entry of started) console.error(`--- ${entry.name} stderr (tail)\n${entry.stderrTail()}`);
}

/** A job that passed. */
export interface PassedJob {
  /** This process's Date.now() just before the submit. */
  readonly submittedAtMs: number;
  /** The job-ended event (status passed). */
  readonly ended: NodeEvent;
  /** The first of each event asked for, in the order asked. */
  readonly events: readonly NodeEvent[];
}

/**
 * Submits `spec` as `jobId` through the master and waits for its job-ended
 * event, then for each of `events` of it (every wait registered before the
 * submit, each bounded by jobTimeoutMs). Rejects unless the job passed; on a
 * timeout, with the master's explanation of the job.
 */
export async function submitAndWait(
  master: MeshNode,
  board: EventBoard,
  project: string,
  jobId: string,
  spec: JobSpec,
  events: readonly string[],
  jobTimeoutMs: number,
): Promise<PassedJob> {
  const waits = events.map((event) => board.waitFor(event, jobId, jobTimeoutMs));
  const ended = board.waitFor("job-ended", jobId, jobTimeoutMs);
  // Any may reject while another (or the submit) is awaited: all are awaited below, so mark them handled.
  for (const pending of [...waits, ended]) pending.catch(() => undefined);
  const submittedAtMs = Date.now();
  await master.control.submit(project, jobId, spec);
  const end = await ended.catch(async (error: unknown) => {
    const why = await master.control.explain(jobId).catch((failure: unknown) => String(failure));
    throw new Error(`${String(error)}; the master explains:\n${why}`);
  });
  if (end.status !== "passed") throw new Error(`job ${jobId} ended ${String(end.status)}: ${String(end.reason)}`);
  const found: NodeEvent[] = [];
  for (const wait of waits) found.push(await wait);
  return { submittedAtMs, ended: end, events: found };
}
