/**
 * Claim latency beside a central queue: BullMQ on Redis and a cimesh mesh of
 * real `cimesh start` processes, measured in the same run on this machine,
 * with trivial jobs, in two settings each:
 *
 * - one: 1 worker, one job at a time (submit, wait for the job to end, next);
 * - five: 5 workers of 1 slot each, 5 jobs in flight (5 lanes, each submits a
 *   job, waits for it to end, and submits the next).
 *
 * Claim latency is submit → the job starting on a worker:
 * - BullMQ: `queue.add` called → the worker's processor function called (this
 *   process's performance.now(); 5 Worker instances of concurrency 1 in five).
 *   The bench starts `redis-server` itself on a free loopback port (no
 *   persistence, temp folder) and stops it at the end; without redis-server
 *   installed, this half is skipped with a note on how to install it.
 * - cimesh: the control API's submit called → a worker's `execution-started`
 *   event (the worker's Date.now(), the same machine's clock), jobs
 *   `steps: ["true"]` in the bubblewrap sandbox. One master and one worker
 *   measure `one`; then four more workers join the same mesh and the five
 *   measure `five`. A job ends at the master's `job-ended` event.
 *
 * Per system and setting: claim p50/p99, jobs per second over the measured
 * run, jobs per worker. Every wait is bounded; every process started here is
 * stopped and every temp folder removed, on failure too.
 *
 * `npm run bench -- claim`.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { parseJobFile } from "../node/index.ts";
import {
  EventBoard,
  initNode,
  initProject,
  killOnExit,
  loopbackHost,
  type MeshNode,
  median,
  meshReadyTimeoutMs,
  percentile,
  printStderrTails,
  type Started,
  startNode,
  stopTimeoutMs,
  submitAndWait,
  trustProject,
  until,
} from "./nodes.ts";

/** Workers of the `five` setting; each has 1 slot, so this is also the jobs in flight. */
const workerCount = 5;
/** Jobs whose figures count, per system and setting. */
const measuredJobs = 100;
/** BullMQ jobs run first per setting, not counted: connections and scripts warm. */
const bullmqWarmupJobs = 20;
/** cimesh jobs run first with one worker, not counted: streams, topic mesh, sandbox and the master's view warm. */
const cimeshWarmupJobsOne = 5;
/** Rounds of `workerCount` cimesh jobs run first with five workers, not counted. */
const cimeshWarmupRoundsFive = 2;

/** Bound on redis-server's start, up to its "Ready to accept connections" line. */
const redisStartTimeoutMs = 10_000;
/** Bound on one BullMQ job, add to completed. */
const bullmqJobTimeoutMs = 10_000;
/** Bound on closing BullMQ's queue and workers. */
const bullmqCloseTimeoutMs = 10_000;
/** Bound on one cimesh job, submit to job-ended. */
const cimeshJobTimeoutMs = 120_000;
/** Bound on the master's pool reaching every worker after the warm-up. */
const knownWorkersTimeoutMs = 30_000;
/** Bound on one measured run of one setting. */
const runTimeoutMs = 10 * 60_000;
/** Lines of a process's output kept for the error message of a failed run. */
const stderrTailLines = 300;
const msPerSecond = 1000;
/** Linux's USER_HZ: the unit of the CPU times in /proc/<pid>/stat. */
const clockTicksPerSecond = 100;
/** The claim bound the protocol aims for with idle workers: claims at most this long are counted apart. */
const fastClaimMs = 20;

/** How to get redis-server on Debian and Ubuntu, printed when it is absent. */
const redisInstallHint = "apt-get install redis-server";

export interface Distribution {
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly minMs: number;
  readonly maxMs: number;
}

export interface SettingResult {
  readonly workers: number;
  readonly jobsInFlight: number;
  readonly jobs: number;
  readonly claimLatency: Distribution;
  /** Measured claims of at most fastClaimMs. */
  readonly fastClaims: number;
  readonly jobsPerSecond: number;
  /** Every worker of the setting, with 0 for one that ran nothing. */
  readonly jobsPerWorker: Readonly<Record<string, number>>;
  /** The machine's 1-minute load average when the measured run ended: other work on it slows every figure. */
  readonly loadAverage1m: number;
  /** cimesh only. */
  readonly breakdown?: ClaimBreakdown;
}

export interface SystemResult {
  readonly one: SettingResult;
  readonly five: SettingResult;
}

export interface ClaimBench {
  /** cimesh claim p50, 1 idle worker, one job at a time. */
  readonly cimeshP50Ms: number;
  /** BullMQ claim p50, 1 idle worker, one job at a time; null when redis-server is absent. */
  readonly bullmqP50Ms: number | null;
  /** cimeshP50Ms / bullmqP50Ms. */
  readonly ratioP50: number | null;
  /** cimesh, five workers, five in flight: most jobs on one worker over fewest; null when some worker ran none. */
  readonly spreadMaxOverMin: number | null;
  /** cimesh jobs per second, one worker, one job at a time. */
  readonly jobsPerSecond1: number;
  /** cimesh jobs per second, five workers, five in flight. */
  readonly jobsPerSecond5: number;
  /** Workers of cimesh's `five` setting that ran no measured job. */
  readonly workersWithoutJobs: number;
  readonly measuredJobsPerSetting: number;
  readonly cimesh: SystemResult;
  readonly bullmq: SystemResult | { readonly skipped: string };
  /** cimesh p50 / BullMQ p50 with five workers. */
  readonly ratioP50Five: number | null;
}

/** One measured job: how long its claim took and which worker ran it. */
interface Claim {
  readonly claimMs: number;
  readonly worker: string;
  /** cimesh: the job, when this process submitted it and when a worker logged execution-started (Date.now()). */
  readonly jobId?: string;
  readonly submittedAtMs?: number;
  readonly startedAtMs?: number;
}

/** Where a cimesh claim's time goes, by the master's own record of each measured job. */
export interface ClaimBreakdown {
  /** This process's submit → the master's submittedAtMs (control API and admission). */
  readonly submitToAdmittedMs: Distribution;
  /** The master's submittedAtMs → a worker's execution-started (award, transport, worker). */
  readonly admittedToStartedMs: Distribution;
  /** Jobs that took more than one attempt (a refused or lapsed award). */
  readonly jobsWithMoreThanOneAttempt: number;
  /** CPU time per measured job over the run: the master's, and all workers' with their sandboxes. */
  readonly masterCpuMsPerJob: number;
  readonly workersCpuMsPerJob: number;
}

/** CPU time a process and its reaped children used so far (/proc/<pid>/stat utime+stime+cutime+cstime), in ms. */
function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after the command name (in parentheses, which may hold spaces): state is field 3, utime field 14.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ticks = [11, 12, 13, 14].reduce((sum, index) => sum + Number(fields[index]), 0);
  if (!Number.isFinite(ticks)) throw new Error(`/proc/${pid}/stat: expected numeric CPU times`);
  return (ticks * 1000) / clockTicksPerSecond;
}

/** CPU ms of the master and of all workers so far. */
function meshCpuMs(mesh: { readonly master: MeshNode; readonly workers: readonly MeshNode[] }): {
  master: number;
  workers: number;
} {
  return {
    master: cpuMs(mesh.master.child.pid as number),
    workers: mesh.workers.reduce((sum, worker) => sum + cpuMs(worker.child.pid as number), 0),
  };
}

function distribution(values: readonly number[]): Distribution {
  return {
    p50Ms: median(values),
    p99Ms: percentile(values, 0.99),
    minMs: Math.min(...values),
    maxMs: Math.max(...values),
  };
}

function settingResult(workers: readonly string[], claims: readonly Claim[], runMs: number): SettingResult {
  const jobsPerWorker: Record<string, number> = {};
  for (const worker of workers) jobsPerWorker[worker] = 0;
  for (const claim of claims) jobsPerWorker[claim.worker] = (jobsPerWorker[claim.worker] ?? 0) + 1;
  return {
    workers: workers.length,
    jobsInFlight: workers.length,
    jobs: claims.length,
    claimLatency: distribution(claims.map((claim) => claim.claimMs)),
    fastClaims: claims.filter((claim) => claim.claimMs <= fastClaimMs).length,
    jobsPerSecond: (claims.length * msPerSecond) / runMs,
    jobsPerWorker,
    loadAverage1m: loadavg()[0] as number,
  };
}

/**
 * Runs `lanes` lanes until `count` jobs are done, each lane running one job
 * at a time; returns every job's claim and how long the run took.
 */
async function runLanes(
  lanes: number,
  count: number,
  prefix: string,
  runJob: (jobId: string) => Promise<Claim>,
): Promise<{ claims: Claim[]; runMs: number }> {
  const claims: Claim[] = [];
  let next = 0;
  const deadlineMs = Date.now() + runTimeoutMs;
  const startMs = performance.now();
  const lane = async () => {
    while (next < count) {
      if (Date.now() > deadlineMs) throw new Error(`expected ${count} ${prefix} jobs within ${runTimeoutMs} ms`);
      claims.push(await runJob(`${prefix}-${next++}`));
    }
  };
  await Promise.all(Array.from({ length: lanes }, lane));
  return { claims, runMs: performance.now() - startMs };
}

/** Rejects after limitMs unless `promise` settled first. */
function bounded<T>(what: string, promise: Promise<T>, limitMs: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`expected ${what} within ${limitMs} ms`)), limitMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const formatMs = (value: number) => `${value < 10 ? value.toFixed(2) : value.toFixed(0)} ms`;

// ---------------------------------------------------------------- BullMQ on Redis

/** A free TCP port on loopbackHost, as the kernel hands one out. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, loopbackHost, () => {
      const address = server.address();
      server.close(() =>
        typeof address === "object" && address !== null
          ? resolve(address.port)
          : reject(new Error("expected a TCP address from the probe server")),
      );
    });
  });
}

/** A redis-server listening on loopbackHost:port; null when redis-server is not installed. */
async function startRedis(dir: string, started: Started[]): Promise<{ port: number } | null> {
  const port = await freePort();
  const args = ["--port", String(port), "--bind", loopbackHost, "--save", "", "--appendonly", "no", "--dir", dir];
  const child: ChildProcess = spawn("redis-server", args, { stdio: ["ignore", "pipe", "pipe"] });
  const spawned = new Promise<boolean>((resolve, reject) => {
    child.once("spawn", () => resolve(true));
    child.once("error", (error: NodeJS.ErrnoException) =>
      error.code === "ENOENT" ? resolve(false) : reject(new Error(`redis-server failed to start: ${error.message}`)),
    );
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const tail: string[] = [];
  let ready = false;
  const onText = (text: string) => {
    for (const line of text.split("\n")) {
      if (line.length === 0) continue;
      tail.push(line);
      if (tail.length > stderrTailLines) tail.shift();
      if (line.includes("Ready to accept connections")) ready = true;
    }
  };
  child.stdout?.setEncoding("utf8").on("data", onText);
  child.stderr?.setEncoding("utf8").on("data", onText);
  const stop = async () => {
    if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), stopTimeoutMs);
    await exited;
    clearTimeout(timer);
  };
  started.push({ name: "redis-server", child, stderrTail: () => tail.join("\n"), stop });
  if (!(await spawned)) return null;
  await Promise.race([
    until("redis-server to accept connections", () => ready, redisStartTimeoutMs),
    exited.then(() => {
      throw new Error(`redis-server exited before it was ready: ${tail.join("\n")}`);
    }),
  ]);
  return { port };
}

/** One setting on BullMQ: `workers` Worker instances of concurrency 1, as many jobs in flight. */
async function bullmqSetting(port: number, workers: number, setting: string): Promise<SettingResult> {
  const { Queue, Worker } = await import("bullmq");
  const connection = { host: loopbackHost, port, maxRetriesPerRequest: null };
  const queueName = `bench-claim-${setting}`;
  const queue = new Queue(queueName, { connection });
  const claimedAt = new Map<string, { atMs: number; worker: string }>();
  const completed = new Map<string, () => void>();
  const names = Array.from({ length: workers }, (_, index) => `worker${index}`);
  const instances = names.map((name) => {
    const worker = new Worker(
      queueName,
      async (job) => {
        claimedAt.set(job.id as string, { atMs: performance.now(), worker: name });
      },
      { connection, concurrency: 1 },
    );
    worker.on("completed", (job) => completed.get(job.id as string)?.());
    return worker;
  });
  try {
    await bounded(
      "the BullMQ workers to connect",
      Promise.all(instances.map((worker) => worker.waitUntilReady())),
      redisStartTimeoutMs,
    );
    const runJob = async (jobId: string): Promise<Claim> => {
      const done = new Promise<void>((resolve) => completed.set(jobId, resolve));
      const addedAtMs = performance.now();
      await queue.add("true", {}, { jobId, removeOnComplete: true, removeOnFail: true });
      await bounded(`BullMQ job ${jobId} to complete`, done, bullmqJobTimeoutMs);
      completed.delete(jobId);
      const claim = claimedAt.get(jobId);
      if (claim === undefined) throw new Error(`BullMQ job ${jobId} completed without its processor being called`);
      return { claimMs: claim.atMs - addedAtMs, worker: claim.worker };
    };
    await runLanes(workers, bullmqWarmupJobs, `${setting}-warmup`, runJob);
    const { claims, runMs } = await runLanes(workers, measuredJobs, setting, runJob);
    return settingResult(names, claims, runMs);
  } finally {
    await bounded(
      "BullMQ's queue and workers to close",
      Promise.all([queue.close(), ...instances.map((worker) => worker.close())]),
      bullmqCloseTimeoutMs,
    ).catch((error: unknown) => console.error(String(error)));
  }
}

/** Both settings on BullMQ with a redis-server of its own; a skip note when redis-server is absent. */
async function benchBullmq(): Promise<SystemResult | { skipped: string }> {
  const dir = await mkdtemp(join(tmpdir(), "cimesh-bench-claim-redis-"));
  const started: Started[] = [];
  const forget = killOnExit(started);
  try {
    const redis = await startRedis(dir, started);
    if (redis === null) {
      const skipped = `redis-server is not installed (install it with \`${redisInstallHint}\`): BullMQ half skipped`;
      console.log(skipped);
      return { skipped };
    }
    console.log(`BullMQ on redis-server at ${loopbackHost}:${redis.port} (no persistence)`);
    const one = await bullmqSetting(redis.port, 1, "one");
    const five = await bullmqSetting(redis.port, workerCount, "five");
    return { one, five };
  } catch (error) {
    printStderrTails(started);
    throw error;
  } finally {
    await Promise.all(started.map((entry) => entry.stop()));
    forget();
    await rm(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- cimesh

/** The EventBoard that also notes which node logged each job's first `execution-started`. */
class ClaimBoard extends EventBoard {
  readonly startedOn = new Map<string, string>();

  override record(node: string, line: string): void {
    super.record(node, line);
    if (!line.includes('"execution-started"')) return;
    try {
      const event = JSON.parse(line) as { event?: unknown; runId?: unknown; jobId?: unknown };
      if (event.event !== "execution-started") return;
      // A runId is <project>/<jobId>/<attempt> (jobs/worker.ts).
      const jobId = event.jobId ?? (typeof event.runId === "string" ? event.runId.split("/").at(-2) : undefined);
      if (typeof jobId === "string" && !this.startedOn.has(jobId)) this.startedOn.set(jobId, node);
    } catch {
      // Not a JSON event line: EventBoard ignores it too.
    }
  }
}

interface Mesh {
  readonly master: MeshNode;
  readonly workers: MeshNode[];
  readonly project: string;
}

/** Starts `cimesh start --worker` nodes `from`..`to - 1`, each trusting the project, bootstrapped from the master. */
async function addWorkers(
  root: string,
  mesh: Mesh,
  trust: Parameters<typeof trustProject>[1],
  from: number,
  to: number,
  board: EventBoard,
  nodes: Started[],
): Promise<void> {
  for (let index = from; index < to; index++) {
    const dir = await initNode(root, `worker${index}`);
    await trustProject(dir, trust);
    const flags = ["--worker", "--bootstrap", mesh.master.address];
    mesh.workers.push(await startNode(`worker${index}`, dir, flags, board, nodes, stderrTailLines));
  }
  const formingStartMs = Date.now();
  await until(
    `${to} workers to hold the project keyset and the master to see them`,
    async () => {
      if (board.problem !== null) throw new Error(`a worker has no sandbox: ${board.problem}`);
      const statuses = await Promise.all(mesh.workers.map((worker) => worker.control.status()));
      const keysets = statuses.every((status) =>
        status.trusted.some((entry) => entry.project === mesh.project && entry.keysetVersion !== null),
      );
      return keysets && (await mesh.master.control.status()).peers >= to;
    },
    meshReadyTimeoutMs,
  );
  console.log(`${to} worker(s) joined in ${Date.now() - formingStartMs} ms`);
}

/** Submits one trivial job and times it: submit → execution-started, and waits for the master's job-ended. */
function cimeshJobRunner(mesh: Mesh, board: ClaimBoard): (jobId: string) => Promise<Claim> {
  const { master, project } = mesh;
  const jobText = JSON.stringify({ project, name: "bench-true", steps: ["true"] });
  return async (jobId) => {
    const { spec } = parseJobFile(jobText, "bench-job.json.yaml", Date.now());
    const job = await submitAndWait(master, board, project, jobId, spec, ["execution-started"], cimeshJobTimeoutMs);
    const [start] = job.events;
    if (start === undefined) throw new Error(`expected the execution-started event of ${jobId}`);
    return {
      claimMs: start.t - job.submittedAtMs,
      worker: board.startedOn.get(jobId) ?? "?",
      jobId,
      submittedAtMs: job.submittedAtMs,
      startedAtMs: start.t,
    };
  };
}

/**
 * The breakdown of measured cimesh claims, from the master's job records (read after the run, off the timed path),
 * and the CPU the mesh spent per job (`cpuBefore`, `cpuAfter`: meshCpuMs around the run).
 */
async function breakdown(
  master: MeshNode,
  claims: readonly Claim[],
  cpuBefore: ReturnType<typeof meshCpuMs>,
  cpuAfter: ReturnType<typeof meshCpuMs>,
): Promise<ClaimBreakdown> {
  const toAdmitted: number[] = [];
  const toStarted: number[] = [];
  let retried = 0;
  for (const claim of claims) {
    if (claim.jobId === undefined || claim.submittedAtMs === undefined || claim.startedAtMs === undefined) continue;
    const detail = await master.control.job(claim.jobId);
    if (detail === null) throw new Error(`expected the master to hold job ${claim.jobId}`);
    toAdmitted.push(detail.submittedAtMs - claim.submittedAtMs);
    toStarted.push(claim.startedAtMs - detail.submittedAtMs);
    if (detail.attempts.length > 1) retried++;
  }
  return {
    submitToAdmittedMs: distribution(toAdmitted),
    admittedToStartedMs: distribution(toStarted),
    jobsWithMoreThanOneAttempt: retried,
    masterCpuMsPerJob: (cpuAfter.master - cpuBefore.master) / claims.length,
    workersCpuMsPerJob: (cpuAfter.workers - cpuBefore.workers) / claims.length,
  };
}

/** How many workers the master's explanation of a job says it knows, or null if it does not say. */
async function knownWorkers(master: MeshNode, jobId: string): Promise<number | null> {
  const text = await master.control.explain(jobId);
  const pool = / of (\d+) known worker/.exec(text);
  return pool === null ? null : Number(pool[1]);
}

/** Both settings on one loopback mesh: master and worker0 measure `one`, then four workers join for `five`. */
async function benchCimesh(): Promise<SystemResult> {
  const root = await mkdtemp(join(tmpdir(), "cimesh-bench-claim-"));
  const board = new ClaimBoard();
  const nodes: Started[] = [];
  const forget = killOnExit(nodes);
  try {
    console.log(`cimesh: 1 master and 1 worker on ${loopbackHost}`);
    const masterDir = await initNode(root, "master");
    const trust = await initProject(masterDir);
    const master = await startNode("master", masterDir, ["--master"], board, nodes, stderrTailLines);
    const mesh: Mesh = { master, workers: [], project: trust.project };
    await addWorkers(root, mesh, trust, 0, 1, board, nodes);
    const runJob = cimeshJobRunner(mesh, board);

    const warmOneStartMs = Date.now();
    await runLanes(1, cimeshWarmupJobsOne, "one-warmup", runJob);
    console.log(`warm-up: ${cimeshWarmupJobsOne} jobs in ${Date.now() - warmOneStartMs} ms`);
    const oneCpuBefore = meshCpuMs(mesh);
    const oneRun = await runLanes(1, measuredJobs, "one", runJob);
    const oneCpuAfter = meshCpuMs(mesh);
    const one = {
      ...settingResult(["worker0"], oneRun.claims, oneRun.runMs),
      breakdown: await breakdown(master, oneRun.claims, oneCpuBefore, oneCpuAfter),
    };

    console.log(`cimesh: ${workerCount - 1} more workers join`);
    await addWorkers(root, mesh, trust, 1, workerCount, board, nodes);
    const warmupJobs = cimeshWarmupRoundsFive * workerCount;
    const warmFiveStartMs = Date.now();
    const warm = await runLanes(workerCount, warmupJobs, "five-warmup", runJob);
    const lastWarmup = `five-warmup-${warmupJobs - 1}`;
    // The master's pool is what the five-worker figures depend on: wait until it holds every worker, if it says.
    const known = await until(
      `the master to know ${workerCount} workers`,
      async () => {
        const count = await knownWorkers(master, lastWarmup);
        return count === null || count >= workerCount ? { count } : null;
      },
      knownWorkersTimeoutMs,
    );
    console.log(
      `warm-up: ${warmupJobs} jobs in ${Date.now() - warmFiveStartMs} ms, on ${new Set(warm.claims.map((claim) => claim.worker)).size} of ${workerCount} workers; master knows ${known.count ?? "(not stated)"} workers`,
    );
    const fiveCpuBefore = meshCpuMs(mesh);
    const fiveRun = await runLanes(workerCount, measuredJobs, "five", runJob);
    const fiveCpuAfter = meshCpuMs(mesh);
    const names = mesh.workers.map((worker) => worker.name);
    const five = {
      ...settingResult(names, fiveRun.claims, fiveRun.runMs),
      breakdown: await breakdown(master, fiveRun.claims, fiveCpuBefore, fiveCpuAfter),
    };
    return { one, five };
  } catch (error) {
    printStderrTails(nodes);
    throw error;
  } finally {
    board.close();
    await Promise.all(nodes.map((node) => node.stop()));
    forget();
    await rm(root, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- the suite

function spread(jobsPerWorker: Readonly<Record<string, number>>): number | null {
  const counts = Object.values(jobsPerWorker);
  const fewest = Math.min(...counts);
  return fewest === 0 ? null : Math.max(...counts) / fewest;
}

function printTable(cimesh: SystemResult, bullmq: SystemResult | { skipped: string }): void {
  const header = `${"setting".padEnd(26)}${"system".padEnd(8)}${"claim p50".padStart(12)}${"claim p99".padStart(12)}${`≤${fastClaimMs} ms`.padStart(9)}${"jobs/s".padStart(10)}${"load".padStart(6)}   jobs per worker`;
  console.log(header);
  const row = (label: string, system: string, result: SettingResult) =>
    console.log(
      `${label.padEnd(26)}${system.padEnd(8)}${formatMs(result.claimLatency.p50Ms).padStart(12)}${formatMs(result.claimLatency.p99Ms).padStart(12)}${String(result.fastClaims).padStart(9)}${result.jobsPerSecond.toFixed(1).padStart(10)}${result.loadAverage1m.toFixed(1).padStart(6)}   ${Object.values(result.jobsPerWorker).join(" / ")}`,
    );
  for (const [key, label] of [
    ["one", "1 worker, 1 in flight"],
    ["five", `${workerCount} workers, ${workerCount} in flight`],
  ] as const) {
    if ("one" in bullmq) row(label, "bullmq", bullmq[key]);
    else console.log(`${label.padEnd(26)}${"bullmq".padEnd(8)}  skipped: redis-server is not installed`);
    row(label, "cimesh", cimesh[key]);
    const parts = cimesh[key].breakdown;
    if (parts !== undefined)
      console.log(
        `${"".padEnd(26)}cimesh p50: submit → master admitted ${formatMs(parts.submitToAdmittedMs.p50Ms)}, admitted → started ${formatMs(parts.admittedToStartedMs.p50Ms)}; ${parts.jobsWithMoreThanOneAttempt} job(s) took more than one attempt; CPU per job: master ${formatMs(parts.masterCpuMsPerJob)}, workers ${formatMs(parts.workersCpuMsPerJob)}`,
      );
    if ("one" in bullmq)
      console.log(
        `${"".padEnd(26)}cimesh p50 / bullmq p50: ${(cimesh[key].claimLatency.p50Ms / bullmq[key].claimLatency.p50Ms).toFixed(1)}x`,
      );
  }
}

export async function benchClaim(): Promise<ClaimBench> {
  console.log(
    `claim latency (submit → job started on a worker), trivial jobs, ${measuredJobs} measured jobs per system and setting`,
  );
  const bullmq = await benchBullmq();
  const cimesh = await benchCimesh();
  printTable(cimesh, bullmq);
  const bullmqP50Ms = "one" in bullmq ? bullmq.one.claimLatency.p50Ms : null;
  const cimeshP50Ms = cimesh.one.claimLatency.p50Ms;
  const spreadMaxOverMin = spread(cimesh.five.jobsPerWorker);
  const workersWithoutJobs = Object.values(cimesh.five.jobsPerWorker).filter((count) => count === 0).length;
  console.log(
    `cimesh, ${workerCount} workers: most jobs on one worker / fewest ${spreadMaxOverMin === null ? `∞ (${workersWithoutJobs} worker(s) ran none)` : spreadMaxOverMin.toFixed(2)}; jobs/s ${cimesh.five.jobsPerSecond.toFixed(1)} vs ${cimesh.one.jobsPerSecond.toFixed(1)} with 1 worker (${(cimesh.five.jobsPerSecond / cimesh.one.jobsPerSecond).toFixed(2)}x)`,
  );
  return {
    cimeshP50Ms,
    bullmqP50Ms,
    ratioP50: bullmqP50Ms === null ? null : cimeshP50Ms / bullmqP50Ms,
    spreadMaxOverMin,
    jobsPerSecond1: cimesh.one.jobsPerSecond,
    jobsPerSecond5: cimesh.five.jobsPerSecond,
    workersWithoutJobs,
    measuredJobsPerSetting: measuredJobs,
    cimesh,
    bullmq,
    ratioP50Five: "one" in bullmq ? cimesh.five.claimLatency.p50Ms / bullmq.five.claimLatency.p50Ms : null,
  };
}
