/**
 * Issue 4's figures: a loopback mesh of real `cimesh start` processes (one
 * master, five workers, each with its own temp data folder, TCP on
 * 127.0.0.1) started here, and trivial jobs (`steps: ["true"]`, in the
 * bubblewrap sandbox) through it:
 *
 * - claim latency: submit → a worker's `execution-started` event (the worker's
 *   clock, the same machine's);
 * - end to end: submit → the master's `job-ended` event with status passed;
 * - median and p99 of each over `measuredJobs` jobs, at most `jobsInFlight`
 *   at once (one per worker slot), so the figure is the protocol's, not a
 *   queue's; and jobs per second over the whole run;
 * - a worker's resident memory (VmRSS) after `idleSettleMs` idle, before any
 *   job and again after the run.
 *
 * Protocol timings are the config's defaults except advertRepublishMs and
 * keysetRepublishMs, shortened so the mesh forms fast (they do not sit on a
 * job's path). Every wait is bounded; every process started here is stopped
 * and every temp folder removed, on failure too.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseDocument } from "yaml";
import { type ControlClient, connectControl, parseJobFile } from "../node/index.ts";

const cliPath = fileURLToPath(new URL("../node/cli.ts", import.meta.url));

const workerCount = 5;
/** Jobs whose figures count (issue 4: at least 200). */
const measuredJobs = 200;
/** Rounds of `jobsInFlight` jobs run first, not counted: streams, topic mesh and sandbox warm. */
const warmupRounds = 2;
/** One per worker slot (each worker has the default 1 slot). */
const jobsInFlight = workerCount;
/** Timings that differ from the config's defaults: the mesh forms in seconds, not in a minute. */
const benchTiming = { advertRepublishMs: 1_000, keysetRepublishMs: 1_000 };
/** Idle time before a resident-memory reading. */
const idleSettleMs = 5_000;

/** Bound on one CLI command (init, project init, trust add). */
const cliTimeoutMs = 60_000;
/** Bound on a node's start, up to its "listening on" line. */
const nodeStartTimeoutMs = 30_000;
/** Bound on the mesh forming: workers hold the keyset, the master sees every worker. */
const meshReadyTimeoutMs = 60_000;
/** Bound on one job, submit to job-ended. */
const jobTimeoutMs = 120_000;
/** Bound on the whole measured run. */
const runTimeoutMs = 15 * 60_000;
/** Bound on a node's clean stop after SIGTERM, then SIGKILL. */
const stopTimeoutMs = 15_000;
/** Poll interval of the bounded waits that poll. */
const pollIntervalMs = 200;
/** Output a CLI command may print before it is cut off. */
const cliOutputLimitBytes = 16 * 1024 * 1024;
/** Lines of a node's stderr kept for the error message of a failed run. */
const stderrTailLines = 300;
/** Characters of a node's stdout kept, to find its "listening on" line. */
const stdoutTailChars = 4_000;
const bytesPerKiB = 1024;
const bytesPerMiB = 1024 * 1024;

const meshEnv = { ...process.env, CIMESH_TEST_MESH: "1" };

interface NodeEvent {
  readonly t: number;
  readonly event: string;
  readonly jobId?: string;
  readonly [field: string]: unknown;
}

/** A process started here, listening or not yet. */
interface Started {
  readonly name: string;
  readonly child: ChildProcess;
  stderrTail(): string;
  stop(): Promise<void>;
}

interface MeshNode extends Started {
  readonly dataDir: string;
  readonly address: string;
  readonly control: ControlClient;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function until<T>(
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

/**
 * Every event line of every node, by `<event>:<jobId>`, first one wins; and
 * whoever waits for one. Timestamps are the nodes' own (`t`, Date.now()).
 */
class EventBoard {
  private readonly seen = new Map<string, NodeEvent>();
  private readonly waiting = new Map<string, (event: NodeEvent) => void>();
  /** A worker whose sandbox cannot run takes no job: fail fast rather than wait for a timeout. */
  problem: string | null = null;

  record(node: string, event: NodeEvent): void {
    if (event.event === "sandbox-unavailable") this.problem = `${node}: ${JSON.stringify(event)}`;
    if (typeof event.jobId !== "string") return;
    const key = `${event.event}:${event.jobId}`;
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
        this.waiting.delete(key);
        reject(new Error(`expected ${event} of ${jobId} within ${limitMs} ms`));
      }, limitMs);
      this.waiting.set(key, (found) => {
        clearTimeout(timer);
        this.waiting.delete(key);
        resolve(found);
      });
    });
  }

  get(event: string, jobId: string): NodeEvent | undefined {
    return this.seen.get(`${event}:${jobId}`);
  }
}

/** `cimesh init` a data folder for loopback: listen on 127.0.0.1, no mDNS, the bench timings. */
async function initNode(root: string, name: string): Promise<string> {
  const dataDir = join(root, name);
  await cliOk(dataDir, ["init"]);
  const path = join(dataDir, "config.yaml");
  const document = parseDocument(await readFile(path, "utf8"));
  document.set("listen", ["/ip4/127.0.0.1/tcp/0"]);
  document.set("mdns", false);
  for (const [key, value] of Object.entries(benchTiming)) document.setIn(["timing", key], value);
  await writeFile(path, document.toString());
  return dataDir;
}

function startNode(
  name: string,
  dataDir: string,
  flags: readonly string[],
  board: EventBoard,
  started: Started[],
): Promise<MeshNode> {
  const child = spawn(process.execPath, [cliPath, "start", ...flags, "--data-dir", dataDir], {
    env: meshEnv,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  let stdout = "";
  const tail: string[] = [];
  let partial = "";
  child.stdout?.setEncoding("utf8").on("data", (text: string) => {
    stdout = `${stdout}${text}`.slice(-stdoutTailChars);
  });
  child.stderr?.setEncoding("utf8").on("data", (text: string) => {
    partial += text;
    const lines = partial.split("\n");
    partial = lines.pop() ?? "";
    for (const line of lines) {
      tail.push(line);
      if (tail.length > stderrTailLines) tail.shift();
      if (!line.startsWith("{")) continue;
      try {
        board.record(name, JSON.parse(line) as NodeEvent);
      } catch {
        // not an event line
      }
    }
  });
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), stopTimeoutMs);
    await exited;
    clearTimeout(timer);
  };
  // Registered before the wait so that a node that never listens is still stopped.
  const entry: Started = { name, child, stderrTail: () => tail.join("\n"), stop };
  started.push(entry);
  return Promise.race([
    until("the node to listen", () => /listening on (\S+)/.exec(stdout)?.[1], nodeStartTimeoutMs),
    exited.then(() => {
      throw new Error(`node ${name} exited before it listened: ${tail.join("\n")}\n${stdout}`);
    }),
  ]).then((address) => ({ ...entry, dataDir, address, control: connectControl(dataDir) }));
}

/** Resident memory of a process from /proc/<pid>/status, in bytes. */
function residentBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const match = /^VmRSS:\s+(\d+)\s+kB$/m.exec(status);
  if (match === null) throw new Error(`/proc/${pid}/status: expected a VmRSS line`);
  return Number(match[1]) * bytesPerKiB;
}

function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  // Nearest rank: the smallest value with at least p of the values at or below it.
  const rank = Math.max(1, Math.ceil(p * sorted.length));
  return sorted[rank - 1] as number;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

interface Distribution {
  readonly medianMs: number;
  readonly p99Ms: number;
  readonly minMs: number;
  readonly maxMs: number;
}

function distribution(values: readonly number[]): Distribution {
  return {
    medianMs: median(values),
    p99Ms: percentile(values, 0.99),
    minMs: Math.min(...values),
    maxMs: Math.max(...values),
  };
}

interface JobTiming {
  readonly jobId: string;
  readonly claimMs: number;
  readonly endToEndMs: number;
  readonly attempts: number;
  readonly worker: string;
}

export interface MeshBench {
  readonly workers: number;
  readonly jobs: number;
  readonly jobsInFlight: number;
  readonly timing: typeof benchTiming & { readonly others: "config defaults" };
  readonly claimLatency: Distribution;
  readonly endToEnd: Distribution;
  readonly endToEndSource: "master job-ended event";
  readonly jobsPerSecond: number;
  readonly jobsPerWorker: Readonly<Record<string, number>>;
  readonly jobsWithMoreThanOneAttempt: number;
  readonly workerIdleRssBytesBefore: readonly number[];
  readonly workerIdleRssBytesAfter: readonly number[];
  readonly masterIdleRssBytesAfter: number;
}

const mib = (bytes: number) => `${(bytes / bytesPerMiB).toFixed(1)} MiB`;
const ms = (value: number) => `${value.toFixed(0)} ms`;

export async function benchMesh(): Promise<MeshBench> {
  const root = await mkdtemp(join(tmpdir(), "cimesh-bench-mesh-"));
  const timings: JobTiming[] = [];
  const board = new EventBoard();
  const nodes: Started[] = [];
  // A bench killed midway (an exception past this function, Ctrl-C) must not leave nodes behind.
  const killAll = () => {
    for (const node of nodes) if (node.child.exitCode === null && node.child.signalCode === null) node.child.kill();
  };
  process.once("exit", killAll);
  try {
    console.log(`starting 1 master and ${workerCount} workers on 127.0.0.1 (${JSON.stringify(benchTiming)})`);
    const masterDir = await initNode(root, "master");
    const projectOut = await cliOk(masterDir, ["project", "init"]);
    const trust = /trust add (\S+) --roots (\S+) --threshold (\d+)/.exec(projectOut);
    if (trust === null) throw new Error(`project init printed no trust command: ${projectOut}`);
    const [, project, roots, threshold] = trust as unknown as [string, string, string, string];
    const master = await startNode("master", masterDir, ["--master"], board, nodes);
    const workers: MeshNode[] = [];
    for (let index = 0; index < workerCount; index++) {
      const dir = await initNode(root, `worker${index}`);
      await cliOk(dir, ["trust", "add", project, "--roots", roots, "--threshold", threshold]);
      workers.push(await startNode(`worker${index}`, dir, ["--worker", "--bootstrap", master.address], board, nodes));
    }
    const workerKeys = new Map<string, string>();
    for (const worker of workers) workerKeys.set((await worker.control.status()).publicKey, worker.name);

    const formingStartMs = Date.now();
    await until(
      "every worker to hold the project keyset and the master to see every worker",
      async () => {
        if (board.problem !== null) throw new Error(`a worker has no sandbox: ${board.problem}`);
        const statuses = await Promise.all(workers.map((worker) => worker.control.status()));
        const keysets = statuses.every((status) =>
          status.trusted.some((entry) => entry.project === project && entry.keysetVersion !== null),
        );
        return keysets && (await master.control.status()).peers >= workerCount;
      },
      meshReadyTimeoutMs,
    );
    console.log(`mesh formed in ${ms(Date.now() - formingStartMs)}`);

    await sleep(idleSettleMs);
    const rssBefore = workers.map((worker) => residentBytes(worker.child.pid as number));
    console.log(
      `${"worker idle RSS before any job".padEnd(44)} median ${mib(median(rssBefore))}   (${rssBefore.map(mib).join(", ")})`,
    );

    const jobText = JSON.stringify({ project, name: "bench-true", steps: ["true"] });
    const runJob = async (jobId: string): Promise<JobTiming> => {
      const { spec } = parseJobFile(jobText, "bench-job.json.yaml", Date.now());
      const started = board.waitFor("execution-started", jobId, jobTimeoutMs);
      const ended = board.waitFor("job-ended", jobId, jobTimeoutMs);
      // Either may reject while the other (or the submit) is awaited: both are awaited below, so mark them handled.
      started.catch(() => undefined);
      ended.catch(() => undefined);
      const submittedAtMs = Date.now();
      await master.control.submit(project, jobId, spec);
      const end = await ended.catch(async (error: unknown) => {
        const why = await master.control.explain(jobId).catch((failure: unknown) => String(failure));
        throw new Error(`${String(error)}; the master explains:\n${why}`);
      });
      if (end.status !== "passed") throw new Error(`job ${jobId} ended ${String(end.status)}: ${String(end.reason)}`);
      const start = await started;
      const detail = await master.control.job(jobId);
      return {
        jobId,
        claimMs: start.t - submittedAtMs,
        endToEndMs: end.t - submittedAtMs,
        attempts: detail?.attempts.length ?? 0,
        worker: workerKeys.get(detail?.attempts.at(-1)?.worker ?? "") ?? "?",
      };
    };

    // Warm-up, not counted; then the master must know every worker from its adverts.
    let warmups = 0;
    const warmedWorkers = new Set<string>();
    for (let round = 0; round < warmupRounds; round++) {
      const done = await Promise.all(Array.from({ length: jobsInFlight }, () => runJob(`warmup-${warmups++}`)));
      for (const timing of done) warmedWorkers.add(timing.worker);
    }
    const known = await until(
      `the master to know ${workerCount} workers`,
      async () => {
        const text = await master.control.explain(`warmup-${warmups - 1}`);
        const pool = / of (\d+) known worker/.exec(text);
        return pool !== null && Number(pool[1]) >= workerCount ? text : null;
      },
      meshReadyTimeoutMs,
    );
    console.log(
      `warm-up: ${warmups} jobs passed, on ${warmedWorkers.size} of ${workerCount} workers; master: ${known.split("\n").at(-1)}`,
    );

    // The measured run: `jobsInFlight` lanes, each submits a job, waits for it to end, and submits the next.
    let next = 0;
    const runDeadlineMs = Date.now() + runTimeoutMs;
    const runStartMs = Date.now();
    const lane = async () => {
      while (next < measuredJobs) {
        if (Date.now() > runDeadlineMs) throw new Error(`expected ${measuredJobs} jobs within ${runTimeoutMs} ms`);
        const jobId = `bench-${next++}`;
        timings.push(await runJob(jobId));
      }
    };
    await Promise.all(Array.from({ length: jobsInFlight }, lane));
    const runMs = Date.now() - runStartMs;

    await sleep(idleSettleMs);
    const rssAfter = workers.map((worker) => residentBytes(worker.child.pid as number));
    const masterRss = residentBytes(master.child.pid as number);

    const claimLatency = distribution(timings.map((timing) => timing.claimMs));
    const endToEnd = distribution(timings.map((timing) => timing.endToEndMs));
    const jobsPerWorker: Record<string, number> = {};
    for (const timing of timings) jobsPerWorker[timing.worker] = (jobsPerWorker[timing.worker] ?? 0) + 1;
    const retried = timings.filter((timing) => timing.attempts > 1).length;
    const jobsPerSecond = (timings.length * 1000) / runMs;

    const row = (name: string, d: Distribution) =>
      `${name.padEnd(44)} median ${ms(d.medianMs).padStart(8)}   p99 ${ms(d.p99Ms).padStart(8)}   (min ${ms(d.minMs)}, max ${ms(d.maxMs)})`;
    console.log(`${timings.length} jobs (steps: ["true"]), at most ${jobsInFlight} in flight, in ${ms(runMs)}`);
    console.log(row("claim latency (submit → execution-started)", claimLatency));
    console.log(row("end to end (submit → master job-ended)", endToEnd));
    console.log(`${"throughput".padEnd(44)} ${jobsPerSecond.toFixed(2)} jobs/s`);
    console.log(
      `${"jobs per worker".padEnd(44)} ${Object.entries(jobsPerWorker)
        .sort()
        .map(([name, count]) => `${name} ${count}`)
        .join(", ")}; ${retried} job(s) needed more than one attempt`,
    );
    console.log(
      `${"worker idle RSS after the run".padEnd(44)} median ${mib(median(rssAfter))}   (${rssAfter.map(mib).join(", ")})`,
    );
    console.log(`${"master idle RSS after the run".padEnd(44)} ${mib(masterRss)}`);

    return {
      workers: workerCount,
      jobs: timings.length,
      jobsInFlight,
      timing: { ...benchTiming, others: "config defaults" },
      claimLatency,
      endToEnd,
      endToEndSource: "master job-ended event",
      jobsPerSecond,
      jobsPerWorker,
      jobsWithMoreThanOneAttempt: retried,
      workerIdleRssBytesBefore: rssBefore,
      workerIdleRssBytesAfter: rssAfter,
      masterIdleRssBytesAfter: masterRss,
    };
  } catch (error) {
    if (timings.length > 0) {
      const claim = distribution(timings.map((timing) => timing.claimMs));
      const whole = distribution(timings.map((timing) => timing.endToEndMs));
      console.error(
        `failed after ${timings.length} measured jobs; so far: claim median ${ms(claim.medianMs)} (max ${ms(claim.maxMs)}), end to end median ${ms(whole.medianMs)} (max ${ms(whole.maxMs)})`,
      );
    }
    for (const node of nodes) console.error(`--- ${node.name} stderr (tail)\n${node.stderrTail()}`);
    throw error;
  } finally {
    await Promise.all(nodes.map((node) => node.stop()));
    process.off("exit", killAll);
    await rm(root, { recursive: true, force: true });
  }
}
