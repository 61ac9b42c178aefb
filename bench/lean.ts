/**
 * `npm run bench -- lean`: the four figures of a light and fast node, in one run,
 * each the median of its repeats:
 *
 * - scale10kCpuSeconds, scale10kPeakRssMiB: the simulator's 10,000-worker,
 *   100-project, 100,000-job day (fast signatures) in a child process
 *   (bench/sim.ts's child): its CPU seconds (user + system) and maximum RSS;
 * - transferRatioToTcp: a 200 MB tree fetched over libp2p from another
 *   process ÷ the same bytes copied over plain TCP into files
 *   (bench/transfer.ts's throughput part, its rounds interleaved);
 * - workerIdleRssMiB, workerRssAfter1000JobsMiB: a real `cimesh start`
 *   worker's resident memory (VmRSS) after `idleSettleMs` idle, before any
 *   job and after `jobCount` trivial jobs through one master, one at a time;
 * - signedJobsPerSecond: whole jobs through one master node and one worker
 *   node in one process, every message signed and verified
 *   (bench/scheduling.ts), per second of this process's CPU time.
 *
 * CPU seconds rather than wall time wherever one process does the work: the
 * machine is shared. The load average before and after each part is kept.
 * With CIMESH_LEAN_SNAPSHOTS=<folder>, the worker writes a V8 heap snapshot
 * into that folder at each of its two readings (for the memory breakdown).
 */
import { spawnSync } from "node:child_process";
import { cpSync, existsSync, readFileSync, rmSync } from "node:fs";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseJobFile } from "../node/index.ts";
import { bundleCli } from "../scripts/bundle-cli.ts";
import {
  EventBoard,
  initNode,
  initProject,
  killOnExit,
  median,
  meshReadyTimeoutMs,
  printStderrTails,
  type Started,
  sleep,
  startNode,
  submitAndWait,
  trustProject,
  until,
} from "./nodes.ts";
import { jobsThroughput } from "./scheduling.ts";
import { inChild } from "./sim.ts";
import { benchThroughput } from "./transfer.ts";

/** Runs of the 10,000-worker day (about a minute of CPU each). */
const scale10kRuns = 3;
/** Measured rounds of the transfer throughput (200 MB each way, three ways). */
const transferRounds = 3;
/** Trivial jobs the worker runs before its second reading. */
const jobCount = 1_000;
/** Jobs submitted at once (the worker has one slot: the next waits for it). */
const jobsInFlight = 2;
/** Idle time before a resident-memory reading. */
const idleSettleMs = 5_000;
/** Bound on one job, submit to job-ended. */
const jobTimeoutMs = 120_000;
/** Runs of the signed-jobs figure, and jobs per run. */
const signedRuns = 5;
/**
 * Runs made and set aside before the measured ones: a master runs for days, and on this machine the first thousands
 * of jobs of a process run at half the speed of the later ones (V8 still compiling and tiering the envelope, schema
 * and state-machine code: runs 1 to 10 of one process went 534, 693, 765, 941, 976, 948, 1,083, 1,175, 1,441, 1,279).
 * Their median is reported beside the figure.
 */
const signedWarmUpRuns = 6;
const signedJobsPerRun = 400;
/** Lines of a node's stderr kept for the error message of a failed run. */
const stderrTailLines = 200;
/** Wait for a heap snapshot to be written after the signal. */
const snapshotSettleMs = 20_000;
/** Bound on building the CLI's JavaScript. */
const buildTimeoutMs = 5 * 60_000;

const bytesPerKiB = 1024;
const bytesPerMiB = 1024 * 1024;
const loadNow = () => loadavg().map((value) => Number(value.toFixed(2)));
const toMiB = (bytes: number) => Number((bytes / bytesPerMiB).toFixed(1));

/** The memory lines of /proc/<pid>/status (VmRSS, RssAnon, RssFile, RssShmem, VmHWM), in MiB. */
function memoryOf(pid: number): Record<string, number> {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const lines: Record<string, number> = {};
  for (const key of ["VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"]) {
    const match = new RegExp(`^${key}:\\s+(\\d+)\\s+kB$`, "m").exec(status);
    if (match === null) throw new Error(`/proc/${pid}/status: expected a ${key} line`);
    lines[key] = toMiB(Number(match[1]) * bytesPerKiB);
  }
  return lines;
}

export interface WorkerMemory {
  readonly idle: Record<string, number>;
  readonly afterJobs: Record<string, number>;
  readonly masterAfterJobs: Record<string, number>;
  readonly jobs: number;
  readonly jobsPerSecond: number;
  readonly loadAverageBefore: readonly number[];
  readonly loadAverageAfter: readonly number[];
}

/**
 * The CLI as an installed package runs it: JavaScript built from the sources and the CLI bundled (as `npm run build`
 * does, into bench/out/lean-dist so dist/ is left alone), not TypeScript stripped as it loads (which keeps Node.js's
 * stripper, about 20 MiB, in every process). Returns the bundled CLI's entry.
 */
async function buildCli(): Promise<string> {
  const outDir = fileURLToPath(new URL("./out/lean-dist/", import.meta.url));
  const repo = fileURLToPath(new URL("../", import.meta.url));
  rmSync(outDir, { recursive: true, force: true });
  const tsc = join(repo, "node_modules", "typescript", "bin", "tsc");
  // Emitted even with a type error elsewhere in the tree (`npx tsc --noEmit` is the check, not this bench).
  const args = [
    tsc,
    "-p",
    "tsconfig.build.json",
    "--outDir",
    outDir,
    "--declaration",
    "false",
    "--noEmitOnError",
    "false",
  ];
  const built = spawnSync(process.execPath, args, { cwd: repo, encoding: "utf8", timeout: buildTimeoutMs });
  const entry = join(outDir, "node", "cli", "index.js");
  if (!existsSync(entry))
    throw new Error(`building the CLI into ${outDir}: exit ${built.status}: ${built.stdout.slice(-2000)}`);
  cpSync(join(repo, "node", "dashboard"), join(outDir, "node", "dashboard"), { recursive: true });
  return await bundleCli(outDir);
}

/** One master and one worker (real processes, loopback); the worker's memory idle, then after jobCount jobs. */
async function workerMemory(entry: string): Promise<WorkerMemory> {
  const root = await mkdtemp(join(tmpdir(), "cimesh-bench-lean-"));
  const started: Started[] = [];
  const forget = killOnExit(started);
  const board = new EventBoard();
  const loadAverageBefore = loadNow();
  const snapshots = process.env.CIMESH_LEAN_SNAPSHOTS;
  const snapshotFolder = snapshots === undefined ? null : resolve(snapshots);
  if (snapshotFolder !== null) await mkdir(snapshotFolder, { recursive: true });
  const workerFlags =
    snapshotFolder === null ? [] : ["--heapsnapshot-signal=SIGUSR2", `--diagnostic-dir=${snapshotFolder}`];
  try {
    const masterDir = await initNode(root, "master");
    const trust = await initProject(masterDir);
    const { project } = trust;
    const master = await startNode("master", masterDir, ["--master"], board, started, stderrTailLines, [], entry);
    const workerDir = await initNode(root, "worker");
    await trustProject(workerDir, trust);
    const worker = await startNode(
      "worker",
      workerDir,
      ["--worker", "--bootstrap", master.address],
      board,
      started,
      stderrTailLines,
      workerFlags,
      entry,
    );
    await until(
      "the worker to hold the project keyset and the master to see it",
      async () => {
        if (board.problem !== null) throw new Error(`the worker has no sandbox: ${board.problem}`);
        const status = await worker.control.status();
        const keyset = status.trusted.some((entry) => entry.project === project && entry.keysetVersion !== null);
        return keyset && (await master.control.status()).peers >= 1;
      },
      meshReadyTimeoutMs,
    );
    const pid = worker.child.pid as number;
    const reading = async () => {
      await sleep(idleSettleMs);
      const memory = memoryOf(pid);
      if (snapshotFolder !== null) {
        process.kill(pid, "SIGUSR2");
        await sleep(snapshotSettleMs);
      }
      return memory;
    };
    const idle = await reading();
    console.log(`worker idle, before any job: ${JSON.stringify(idle)} MiB`);

    const jobText = JSON.stringify({ project, name: "lean-true", steps: ["true"] });
    let next = 0;
    const startMs = Date.now();
    const lane = async () => {
      while (next < jobCount) {
        const jobId = `lean-${next++}`;
        const { spec } = parseJobFile(jobText, "lean-job.json.yaml", Date.now());
        await submitAndWait(master, board, project, jobId, spec, [], jobTimeoutMs);
      }
    };
    await Promise.all(Array.from({ length: jobsInFlight }, lane));
    const jobsPerSecond = (jobCount * 1000) / (Date.now() - startMs);
    const afterJobs = await reading();
    const masterAfterJobs = memoryOf(master.child.pid as number);
    console.log(
      `worker idle after ${jobCount} jobs (${jobsPerSecond.toFixed(1)} jobs/s): ${JSON.stringify(afterJobs)} MiB; master ${JSON.stringify(masterAfterJobs)} MiB`,
    );
    return {
      idle,
      afterJobs,
      masterAfterJobs,
      jobs: jobCount,
      jobsPerSecond,
      loadAverageBefore,
      loadAverageAfter: loadNow(),
    };
  } catch (error) {
    printStderrTails(started);
    throw error;
  } finally {
    board.close();
    await Promise.all(started.map((entry) => entry.stop()));
    forget();
    await rm(root, { recursive: true, force: true });
  }
}

/** The parts a run measures: all, or those named in CIMESH_LEAN_PARTS (comma-separated), to profile one. */
const leanParts = ["signed", "memory", "transfer", "scale10k"] as const;
function partsWanted(): Set<string> {
  const named = process.env.CIMESH_LEAN_PARTS;
  if (named === undefined || named === "") return new Set(leanParts);
  const parts = named.split(",");
  const unknown = parts.filter((part) => !(leanParts as readonly string[]).includes(part));
  if (unknown.length > 0) throw new Error(`CIMESH_LEAN_PARTS: expected some of ${leanParts.join(",")}, got ${unknown}`);
  return new Set(parts);
}

export async function benchLean(): Promise<unknown> {
  const load: Record<string, unknown> = { start: loadNow() };
  const wanted = partsWanted();
  const figures: Record<string, number> = {};
  const detail: Record<string, unknown> = {};

  if (wanted.has("signed")) {
    const warmUp = Array.from({ length: signedWarmUpRuns }, () => jobsThroughput(signedJobsPerRun, 1));
    const signed = Array.from({ length: signedRuns }, () => jobsThroughput(signedJobsPerRun, 1));
    const perCpuSecond = median(signed.map((run) => run.jobsPerCpuSecond));
    const warmUpPerCpuSecond = median(warmUp.map((run) => run.jobsPerCpuSecond));
    console.log(
      `signed jobs per CPU second, 1 master + 1 worker node: ${Math.round(perCpuSecond)} (wall: ${Math.round(median(signed.map((run) => run.jobsPerSecond)))}/s; median of ${signedRuns} × ${signedJobsPerRun} after ${signedWarmUpRuns} × ${signedJobsPerRun} set aside, whose median was ${Math.round(warmUpPerCpuSecond)}; ${signed[0]?.messagesPerJob.toFixed(1)} messages per job; goal ≥ 1,000)`,
    );
    figures.signedJobsPerSecond = Math.round(perCpuSecond);
    detail.signedJobs = signed;
    detail.signedWarmUpJobs = warmUp;
    load.afterSigned = loadNow();
  }

  if (wanted.has("memory")) {
    const memory = await workerMemory(await buildCli());
    figures.workerIdleRssMiB = memory.idle.VmRSS as number;
    figures.workerRssAfter1000JobsMiB = memory.afterJobs.VmRSS as number;
    detail.workerMemory = memory;
    load.afterMemory = loadNow();
  }

  if (wanted.has("transfer")) {
    const transfer = await benchThroughput(transferRounds);
    figures.transferRatioToTcp = Number(transfer.ratio.toFixed(3));
    detail.transfer = transfer;
    load.afterTransfer = loadNow();
  }

  if (wanted.has("scale10k")) {
    const scale = Array.from({ length: scale10kRuns }, () => inChild("scale-10k", "fast", 1));
    const finished = scale.flatMap((run) => ("cpuMs" in run ? [run] : []));
    if (finished.length === 0) throw new Error(`scale-10k: expected a finished run, got ${JSON.stringify(scale)}`);
    figures.scale10kCpuSeconds = median(finished.map((run) => run.cpuMs / 1000));
    figures.scale10kPeakRssMiB = toMiB(median(finished.map((run) => run.maxRssBytes)));
    console.log(
      `scale-10k: ${figures.scale10kCpuSeconds.toFixed(1)} s CPU, peak RSS ${figures.scale10kPeakRssMiB} MiB (goal < 60 s, < 2 GB); ${JSON.stringify(finished[0])}`,
    );
    detail.scale10k = scale;
    load.end = loadNow();
  }

  const order = [
    "scale10kCpuSeconds",
    "scale10kPeakRssMiB",
    "transferRatioToTcp",
    "workerIdleRssMiB",
    "workerRssAfter1000JobsMiB",
    "signedJobsPerSecond",
  ];
  const lean = Object.fromEntries(order.filter((key) => key in figures).map((key) => [key, figures[key]]));
  console.log(`lean: ${JSON.stringify(lean)}; load average ${JSON.stringify(load)}`);
  return {
    ...lean,
    repeats: { scale10k: scale10kRuns, transfer: transferRounds, signedJobs: signedRuns },
    detail,
    loadAverage: load,
  };
}
