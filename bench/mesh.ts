/**
 * The mesh figures: a loopback mesh of real `cimesh start` processes (one
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
 * Protocol timings are the config's defaults except keysetRepublishMs,
 * shortened so the mesh forms fast (they do not sit on a
 * job's path). Every wait is bounded; every process started here is stopped
 * and every temp folder removed, on failure too.
 */
import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseJobFile } from "../node/index.ts";
import {
  benchTiming,
  EventBoard,
  initNode,
  initProject,
  killOnExit,
  type MeshNode,
  median,
  meshReadyTimeoutMs,
  type NodeEvent,
  percentile,
  printStderrTails,
  type Started,
  sleep,
  startNode,
  submitAndWait,
  trustProject,
  until,
} from "./nodes.ts";

const workerCount = 5;
/** Jobs whose figures count: at least 200. */
const measuredJobs = 200;
/** Rounds of `jobsInFlight` jobs run first, not counted: streams, topic mesh and sandbox warm. */
const warmupRounds = 2;
/** One per worker slot (each worker has the default 1 slot). */
const jobsInFlight = workerCount;
/** Idle time before a resident-memory reading. */
const idleSettleMs = 5_000;

/** Bound on one job, submit to job-ended. */
const jobTimeoutMs = 120_000;
/** Bound on the whole measured run. */
const runTimeoutMs = 15 * 60_000;
/** Lines of a node's stderr kept for the error message of a failed run. */
const stderrTailLines = 300;
const bytesPerKiB = 1024;
const bytesPerMiB = 1024 * 1024;

/** Resident memory of a process from /proc/<pid>/status, in bytes. */
function residentBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const match = /^VmRSS:\s+(\d+)\s+kB$/m.exec(status);
  if (match === null) throw new Error(`/proc/${pid}/status: expected a VmRSS line`);
  return Number(match[1]) * bytesPerKiB;
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
  const forget = killOnExit(nodes);
  try {
    const mesh = await startMesh(root, board, nodes);
    const { master, workers } = mesh;

    await sleep(idleSettleMs);
    const rssBefore = workers.map((worker) => residentBytes(worker.child.pid as number));
    console.log(
      `${"worker idle RSS before any job".padEnd(44)} median ${mib(median(rssBefore))}   (${rssBefore.map(mib).join(", ")})`,
    );

    const runJob = jobRunner(mesh, board);
    await warmUp(mesh, runJob);
    const runMs = await measure(runJob, timings);

    await sleep(idleSettleMs);
    const rssAfter = workers.map((worker) => residentBytes(worker.child.pid as number));
    const masterRss = residentBytes(master.child.pid as number);
    return report(timings, runMs, rssBefore, rssAfter, masterRss);
  } catch (error) {
    if (timings.length > 0) {
      const claim = distribution(timings.map((timing) => timing.claimMs));
      const whole = distribution(timings.map((timing) => timing.endToEndMs));
      console.error(
        `failed after ${timings.length} measured jobs; so far: claim median ${ms(claim.medianMs)} (max ${ms(claim.maxMs)}), end to end median ${ms(whole.medianMs)} (max ${ms(whole.maxMs)})`,
      );
    }
    printStderrTails(nodes);
    throw error;
  } finally {
    await Promise.all(nodes.map((node) => node.stop()));
    forget();
    await rm(root, { recursive: true, force: true });
  }
}

interface Mesh {
  readonly master: MeshNode;
  readonly workers: readonly MeshNode[];
  readonly project: string;
  /** Worker names by public key (hex). */
  readonly workerKeys: ReadonlyMap<string, string>;
}

/** Starts the master and the workers (each trusting the project), and waits until the mesh has formed. */
async function startMesh(root: string, board: EventBoard, nodes: Started[]): Promise<Mesh> {
  console.log(`starting 1 master and ${workerCount} workers on 127.0.0.1 (${JSON.stringify(benchTiming)})`);
  const masterDir = await initNode(root, "master");
  const trust = await initProject(masterDir);
  const { project } = trust;
  const master = await startNode("master", masterDir, ["--master"], board, nodes, stderrTailLines);
  const workers: MeshNode[] = [];
  for (let index = 0; index < workerCount; index++) {
    const dir = await initNode(root, `worker${index}`);
    await trustProject(dir, trust);
    const flags = ["--worker", "--bootstrap", master.address];
    workers.push(await startNode(`worker${index}`, dir, flags, board, nodes, stderrTailLines));
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
  return { master, workers, project, workerKeys };
}

/** Submits one trivial job under the given id and times it, submit to execution-started and to job-ended. */
function jobRunner(mesh: Mesh, board: EventBoard): (jobId: string) => Promise<JobTiming> {
  const { master, project, workerKeys } = mesh;
  const jobText = JSON.stringify({ project, name: "bench-true", steps: ["true"] });
  return async (jobId) => {
    const { spec } = parseJobFile(jobText, "bench-job.json.yaml", Date.now());
    const job = await submitAndWait(master, board, project, jobId, spec, ["execution-started"], jobTimeoutMs);
    const [start] = job.events as [NodeEvent];
    const detail = await master.control.job(jobId);
    return {
      jobId,
      claimMs: start.t - job.submittedAtMs,
      endToEndMs: job.ended.t - job.submittedAtMs,
      attempts: detail?.attempts.length ?? 0,
      worker: workerKeys.get(detail?.attempts.at(-1)?.worker ?? "") ?? "?",
    };
  };
}

/** Rounds of jobs not counted; then waits until the master knows every worker from its adverts. */
async function warmUp(mesh: Mesh, runJob: (jobId: string) => Promise<JobTiming>): Promise<void> {
  let warmups = 0;
  const warmedWorkers = new Set<string>();
  for (let round = 0; round < warmupRounds; round++) {
    const done = await Promise.all(Array.from({ length: jobsInFlight }, () => runJob(`warmup-${warmups++}`)));
    for (const timing of done) warmedWorkers.add(timing.worker);
  }
  const known = await until(
    `the master to know ${workerCount} workers`,
    async () => {
      const text = await mesh.master.control.explain(`warmup-${warmups - 1}`);
      const pool = / of (\d+) known worker/.exec(text);
      return pool !== null && Number(pool[1]) >= workerCount ? text : null;
    },
    meshReadyTimeoutMs,
  );
  console.log(
    `warm-up: ${warmups} jobs passed, on ${warmedWorkers.size} of ${workerCount} workers; master: ${known.split("\n").at(-1)}`,
  );
}

/**
 * The measured run: `jobsInFlight` lanes, each submits a job, waits for it to
 * end, and submits the next. Adds each job's timing to `timings` as it ends;
 * returns how long the run took.
 */
async function measure(runJob: (jobId: string) => Promise<JobTiming>, timings: JobTiming[]): Promise<number> {
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
  return Date.now() - runStartMs;
}

/** The figures of the measured run, printed and returned. */
function report(
  timings: readonly JobTiming[],
  runMs: number,
  rssBefore: readonly number[],
  rssAfter: readonly number[],
  masterRss: number,
): MeshBench {
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
}
