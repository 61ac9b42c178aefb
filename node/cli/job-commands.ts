/**
 * The commands about jobs: submit, jobs, logs, result, fetch, explain and
 * cancel talk to the node running in the data folder; run runs a job file
 * here, in the sandbox a worker uses, with no node running.
 * submit and run load the store room (and run the sandbox room) when they
 * use it, not when the CLI starts: see index.ts.
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import cliProgress from "cli-progress";
import { CimeshError } from "../../crypto/index.ts";
import { type ExecutionReport, resultDigest } from "../../jobs/index.ts";
import type {
  FetchStatus,
  JobDetail,
  JobSummary,
  LogLine,
  NodeApi,
  ReportDetail,
  ReportSummary,
  RunSummary,
} from "../control/index.ts";
import { formatDuration, maxJobFileBytes, parseJobFile, parseSizeBytes } from "../files/index.ts";
import type { LogChunk, StepEvent } from "../sandbox/index.ts";
import {
  CliOptionError,
  client,
  dataDirNamed,
  dataDirOf,
  integer,
  out,
  program,
  readInputFile,
  time,
} from "./common.ts";

/** How often `submit --wait` and `logs --follow` ask the node. */
export const pollIntervalMs = 500;
/** Packs and fetches show a progress bar once they have run this long. */
export const progressAfterMs = 1_000;
/** `submit --wait` and `logs --follow` stop this long after the job's deadline, whatever the node says. */
export const waitPastDeadlineMs = 60_000;

/** A fetch that could not be done, or a download of a job that has nothing to download. */
export class TransferError extends CimeshError {
  constructor(message: string) {
    super("ERR_TRANSFER", message);
  }
}

/** A job that is not on the node asked. */
export class NoSuchJobError extends CimeshError {
  constructor(jobId: string) {
    super("ERR_NO_SUCH_JOB", `job ${jobId}: no such job on this node; \`cimesh jobs\` lists them`);
  }
}

function shortKey(hex: string): string {
  return hex.length > 12 ? `${hex.slice(0, 12)}…` : hex;
}

function clock(): string {
  return new Date().toTimeString().slice(0, 8);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function summaryLine(job: JobSummary): string {
  const runs = `${job.runsAwarded} run(s), ${job.runsLive} live`;
  return `${job.jobId}  ${job.status.padEnd(9)}  ${job.name}  (${runs}; submitted ${time(job.submittedAtMs)})${job.reason === "" ? "" : `  ${job.reason}`}`;
}

function attemptKey(attempt: JobDetail["attempts"][number]): string {
  const outcome = attempt.outcome === null ? "" : `, ${attempt.outcome}`;
  const exit = attempt.exitCode === null ? "" : `, exit ${attempt.exitCode}`;
  return `${attempt.state}${outcome}${exit}`;
}

function attemptLine(attempt: JobDetail["attempts"][number]): string {
  return `attempt ${attempt.attempt} (shard ${attempt.shard}) on worker ${attempt.workerPeerId}: ${attemptKey(attempt)}${
    attempt.summary === "" ? "" : ` (${attempt.summary.split("\n")[0]})`
  }`;
}

async function jobOrThrow(api: NodeApi, jobId: string): Promise<JobDetail> {
  const job = await api.job(jobId);
  if (job === null) throw new NoSuchJobError(jobId);
  return job;
}

/**
 * Prints log chunks not printed yet, in offset order per attempt and stream,
 * with a header when the source changes. While a job runs (`final` false) a
 * stream is printed only up to its first gap, so a chunk that arrives late
 * still prints in its place.
 */
function logPrinter() {
  const printed = new Map<string, number>();
  let lastSource = "";
  let atLineStart = true;
  const write = (text: string) => {
    if (text === "") return;
    process.stdout.write(text);
    atLineStart = text.endsWith("\n");
  };
  return (lines: readonly LogLine[], final: boolean) => {
    const sorted = [...lines].sort(
      (a, b) => a.attempt - b.attempt || a.stream.localeCompare(b.stream) || a.offset - b.offset,
    );
    const gapped = new Set<string>();
    for (const line of sorted) {
      const source = `${line.attempt}/${line.stream}`;
      const next = printed.get(source) ?? 0;
      const bytes = Buffer.from(line.text, "utf8");
      const end = line.offset + bytes.length;
      if (end <= next || gapped.has(source)) continue;
      if (line.offset > next && !final) {
        gapped.add(source);
        continue;
      }
      if (source !== lastSource) {
        if (!atLineStart) write("\n");
        write(`==> attempt ${line.attempt}, ${line.stream} <==\n`);
        lastSource = source;
      }
      write(line.offset >= next ? line.text : bytes.subarray(next - line.offset).toString("utf8"));
      printed.set(source, end);
    }
    if (final && !atLineStart) write("\n");
  };
}

/**
 * The image a job's required capability specs name (those this node published: `<data-dir>/specs`), or null: a
 * spec with an image is that image's signed name and version, so a job requiring it runs in it. Two specs naming
 * different images, or a job naming another image than its spec, cannot run: refused here.
 */
async function imageOfSpecs(
  required: readonly string[],
  jobImage: string | undefined,
  path: string,
): Promise<{ image: string; name: string } | null> {
  if (required.length === 0) return null;
  const { loadPublishedSpecs } = await import("../files/index.ts");
  const { openEnvelope } = await import("../../crypto/index.ts");
  const { capabilitySpecDomain } = await import("../../capabilities/index.ts");
  let found: { image: string; name: string } | null = null;
  for (const bytes of await loadPublishedSpecs(dataDirOf())) {
    let body: { uuid: string; name: string; version: number; image?: string };
    try {
      body = openEnvelope(capabilitySpecDomain, bytes, Date.now()).body;
    } catch {
      continue; // expired or unreadable: the node does not publish it either
    }
    if (!required.includes(body.uuid) || body.image === undefined) continue;
    const name = `${body.uuid} (${body.name}, version ${body.version})`;
    const others: (string | undefined)[] = [found?.image, jobImage];
    for (const other of others) {
      if (other !== undefined && other !== body.image) {
        throw new CliOptionError(
          `${path}: image`,
          `the image of capability spec ${name}, ${body.image}, which its jobs run in`,
          other,
        );
      }
    }
    found = { image: body.image, name };
  }
  return found;
}

/** Adds `submit <job.yaml>`: sends a job file to the running master, and with --wait follows it to its end. */
export function addSubmitCommand(): void {
  program
    .command("submit")
    .description("submit a job file to the running master node")
    .argument("<job.yaml>", "the job file (see the README: Config file and job file)")
    .option("--wait", "print state changes as they happen, then the logs; exit 0 only if the job passed")
    .option("--json", "print the job summary as JSON")
    .action(async (path: string, options: { wait?: boolean; json?: boolean }) => {
      const text = await readInputFile(path, maxJobFileBytes, "a job file");
      const parsed = parseJobFile(text, path, Date.now()); // a bad file fails here, before any node is asked
      const api = client();
      let spec = parsed.spec;
      if (parsed.inputsFolder !== null) {
        // The master serves the inputs from its blob store, which this command shares (blobs are files named by CID).
        const folder = resolve(dirname(path), parsed.inputsFolder);
        const { openBlobStore, packTree } = await import("../store/index.ts");
        const store = await openBlobStore(join(dataDirOf(), "blobs"));
        const progress = progressBar(`packing ${parsed.inputsFolder}`);
        const packed = await packTree(folder, store, { onProgress: progress.update }).finally(progress.stop);
        out(`packed ${packed.files} file(s), ${packed.bytes} bytes of ${folder}: ${packed.root}`);
        spec = { ...spec, inputsDigest: packed.root };
      }
      const specImage = await imageOfSpecs(spec.requiredSpecs, spec.image, path);
      if (specImage !== null && spec.image === undefined) {
        out(`image ${specImage.image}: from capability spec ${specImage.name}`);
        spec = { ...spec, image: specImage.image };
      }
      if (spec.image !== undefined) {
        // Workers fetch the image from the master: a job naming one it does not hold would be refused by every worker.
        const { openBlobStore, treeBlobs } = await import("../store/index.ts");
        const store = await openBlobStore(join(dataDirOf(), "blobs"));
        const held = await treeBlobs(spec.image, store).catch(() => null);
        if (held === null || held.missing.length > 0) {
          throw new TransferError(
            `${path}: image: expected an image this node's blob store holds, got ${spec.image}, which it ` +
              `${held === null ? "lacks" : `holds only in part (${held.missing.length} blobs missing)`}; ` +
              "`cimesh image import <oci-layout|docker-save.tar>` with this --data-dir stores one",
          );
        }
      }
      const summary = await api.submit(parsed.project, parsed.jobId ?? "", spec);
      if (options.json === true) out(JSON.stringify(summary));
      else out(`submitted ${summary.jobId} (project ${summary.project}): ${summary.status}`);
      if (options.wait !== true) return;
      const passed = await waitForJob(api, summary.jobId, parsed.spec.deadlineMs + waitPastDeadlineMs);
      process.exitCode = passed ? 0 : 1;
    });
}

/** Shows a progress bar on stderr once a long task has run for a second; `update` and `stop` are safe to call early. */
function progressBar(label: string): { update: (done: number, total: number) => void; stop: () => void } {
  const startedMs = Date.now();
  let bar: cliProgress.SingleBar | null = null;
  return {
    update(done, total) {
      if (bar === null) {
        if (Date.now() - startedMs < progressAfterMs || !process.stderr.isTTY) return;
        bar = new cliProgress.SingleBar(
          { format: `${label} [{bar}] {percentage}% {value}/{total} bytes`, stream: process.stderr },
          cliProgress.Presets.shades_classic,
        );
        bar.start(total, done);
      }
      bar.setTotal(total);
      bar.update(done);
    },
    stop() {
      bar?.stop();
    },
  };
}

/** What a download may unpack to, and the name of what says so: the node refuses a larger tree before writing a byte. */
interface DownloadLimit {
  readonly maxBytes: number;
  readonly name: string;
}

/** The --max-bytes option of a download, or null when not given. */
function maxBytesOption(text: string | undefined): DownloadLimit | null {
  if (text === undefined) return null;
  const maxBytes = parseSizeBytes(text);
  if (maxBytes === null) throw new CliOptionError("--max-bytes", 'a size such as "512MiB", "2GiB" or "1048576"', text);
  return { maxBytes, name: `--max-bytes (${text})` };
}

async function fetchInto(
  api: NodeApi,
  cid: string,
  folder: string,
  providers: readonly string[],
  limit: DownloadLimit | null,
  say = true,
): Promise<void> {
  let status: FetchStatus | null = await api.startFetch(cid, folder, providers, limit ?? undefined);
  const progress = progressBar(`fetching ${cid.slice(0, 12)}…`);
  try {
    while (status !== null && status.state === "fetching") {
      await sleep(pollIntervalMs);
      status = await api.fetchStatus(status.id);
      if (status !== null) progress.update(status.doneBytes, status.totalBytes);
    }
  } finally {
    progress.stop();
  }
  if (status === null)
    throw new TransferError(`fetch of ${cid}: the node forgot it (did it restart?); run the command again`);
  if (status.state === "failed") throw new TransferError(`fetch of ${cid} failed: ${status.error}`);
  if (say)
    out(
      `fetched ${cid} into ${folder}: ${status.files} file(s), ${status.totalBytes} bytes (${status.fetchedBytes} over the network)`,
    );
}

async function waitForJob(api: NodeApi, jobId: string, giveUpAtMs: number): Promise<boolean> {
  let shown = "";
  const attempts = new Map<number, string>();
  let job = await jobOrThrow(api, jobId);
  for (;;) {
    // An open job says why it is still open (the master's view: offers, bids, runs); an ended one, how it ended.
    const why = job.status === "open" && job.waiting !== "" ? job.waiting : job.reason;
    const line = `${job.jobId}: ${job.status}${why === "" ? "" : ` (${why})`}`;
    if (line !== shown) {
      out(`[${clock()}] ${line}`);
      shown = line;
    }
    for (const attempt of job.attempts) {
      const key = attemptKey(attempt);
      if (attempts.get(attempt.attempt) !== key) {
        out(`[${clock()}] ${attemptLine(attempt)}`);
        attempts.set(attempt.attempt, key);
      }
    }
    if (job.status !== "open") break;
    if (Date.now() > giveUpAtMs) {
      out(`[${clock()}] gave up waiting: the job's deadline has passed and it is still open`);
      return false;
    }
    await sleep(pollIntervalMs);
    job = await jobOrThrow(api, jobId);
  }
  out("");
  logPrinter()(await api.logs(jobId), true);
  out("");
  out(`${job.jobId}: ${job.status}${job.reason === "" ? "" : ` (${job.reason})`}`);
  return job.status === "passed";
}

/** What a run of this node's worker came to: its outcome and exit code and how long it took, or since when it runs. */
function runState(run: RunSummary): string {
  if (run.state === "running") return `running since ${time(run.startedAtMs)}`;
  const exit = run.exitCode === null ? "" : `, exit ${run.exitCode}`;
  const took = run.durationMs === null ? "" : ` after ${formatDuration(run.durationMs)}`;
  return `${run.outcome ?? "ended"}${exit}${took}`;
}

/** One run of this node's worker, as `jobs` lists it: job, shard, attempt, outcome, exit code, duration, when, project. */
function runLine(run: RunSummary): string {
  const when = run.endedAtMs === null ? "" : `; ended ${time(run.endedAtMs)}`;
  return `${run.jobId}  shard ${run.shard} of ${run.shards}, attempt ${run.attempt}  ${runState(run)}${when}  ${run.name}  (project ${shortKey(run.project)})`;
}

/** One reported build, as `jobs` lists it: marked as a report, never a scheduled job. */
function reportLine(report: ReportSummary): string {
  const exit = report.exitCode === null ? "" : `, exit ${report.exitCode}`;
  const source = report.source === "" ? "" : `  ${report.source}`;
  return `${report.reportId}  [report]  ${report.outcome}${exit}  ${report.jobName}${source}  (by ${shortKey(report.reporterPeerId)}; received ${time(report.receivedAtMs)})`;
}

/** `result <report>`: what a reported build says, step by step. */
function printReport(detail: ReportDetail): void {
  const { report } = detail;
  out(
    `report     ${detail.reportId} "${detail.jobName}" (project ${detail.project}): a build reported by a volunteer, not a scheduled job`,
  );
  out(`reporter   ${detail.reporterPeerId}`);
  out(
    `outcome    ${report.outcome}${report.exitCode === null ? "" : `, exit ${report.exitCode}`} after ${formatDuration(report.durationMs)}`,
  );
  out(`source     ${detail.source === "" ? "-" : detail.source}`);
  out(`job file   ${report.jobDigest} (shard ${report.shard} of ${report.shards})`);
  out(`built      ${time(report.startedAtMs)} to ${time(report.endedAtMs)}; received ${time(detail.receivedAtMs)}`);
  out(
    `machine    ${report.dimensions.os}/${report.dimensions.arch}, ${report.dimensions.cores} cores; specs passed: ${report.specs.map((claim) => claim.uuid).join(", ") || "none"}`,
  );
  for (const [index, step] of report.steps.entries())
    out(
      `  step ${index + 1} ${JSON.stringify(step.name)}: ${step.outcome}${step.exitCode === null ? "" : `, exit ${step.exitCode}`}, ${formatDuration(step.durationMs)}`,
    );
  out(`outputs    ${report.outputsDigest ?? "-"}`);
  out(`log        ${report.logDigest ?? "-"}`);
  if (report.summary !== "") out(`summary    ${report.summary.split("\n")[0]}`);
}

/** A reported build's log: its tree fetched through the mesh from the reporter (by CID), printed stream by stream. */
async function printReportLogs(api: NodeApi, detail: ReportDetail): Promise<void> {
  const cid = detail.report.logDigest;
  if (cid === null) throw new TransferError(`report ${detail.reportId}: it names no log`);
  const folder = await mkdtemp(join(tmpdir(), "cimesh-report-log-"));
  try {
    const destination = join(folder, "log");
    await fetchInto(api, cid, destination, [detail.reporterPeerId], null, false);
    for (const stream of ["stdout", "stderr"] as const) {
      const text = await readFile(join(destination, `${stream}.log`), "utf8").catch(() => "");
      if (text === "") continue;
      out(`==> report ${detail.reportId}, ${stream} <==`);
      process.stdout.write(text.endsWith("\n") ? text : `${text}\n`);
    }
  } finally {
    await rm(folder, { recursive: true, force: true });
  }
}

/**
 * Adds `jobs`: the running master's jobs and the runs its worker did. A node that is both shows both, each under its
 * heading; a master alone shows its jobs as they always were.
 */
export function addJobsCommand(): void {
  program
    .command("jobs")
    .description("list the jobs of the running master node, and the runs this node did as a worker")
    .option("--json", 'print JSON: {"master": the jobs or null, "worker": the runs or null}')
    .action(async (options: { json?: boolean }) => {
      const api = client();
      const [status, jobs, runs, reports] = await Promise.all([
        api.status(),
        api.jobs(),
        api.runs(),
        api.reports?.() ?? Promise.resolve([]),
      ]);
      // A view for each role the node has now, and for what it kept of a role it had before.
      const masterView = status.roles.master.length > 0 || jobs.length > 0;
      const workerView = status.roles.worker || runs.length > 0;
      if (options.json === true) {
        out(
          JSON.stringify(
            {
              master: masterView ? jobs : null,
              reports: masterView ? reports : null,
              worker: workerView ? runs : null,
            },
            null,
            2,
          ),
        );
        return;
      }
      if (masterView || !workerView) {
        if (workerView) out(`jobs of the projects this node is master of (${status.roles.master.length}):`);
        if (jobs.length === 0) out("no jobs: submit one with `cimesh submit job.yaml`");
        for (const job of [...jobs].sort((a, b) => a.submittedAtMs - b.submittedAtMs)) out(summaryLine(job));
        if (reports.length > 0) {
          out("");
          out("builds volunteers made on their own and reported (push-only, oldest first):");
          for (const report of reports) out(reportLine(report));
        }
      }
      if (!workerView) return;
      if (masterView) out("");
      out("runs this node did as a worker (oldest first):");
      if (runs.length === 0) out("no runs yet: this worker has run no job");
      for (const run of runs) out(runLine(run));
    });
}

/** Adds `logs <job>`: a job's logs, and with --follow the rest as it comes. */
export function addLogsCommand(): void {
  program
    .command("logs")
    .description("print a job's logs, per attempt and stream")
    .argument("<job>", "the job id")
    .option("--follow", "keep printing new log text until the job ends")
    .action(async (jobId: string, options: { follow?: boolean }) => {
      const api = client();
      const job = await api.job(jobId);
      if (job === null) {
        const reported = (await api.report?.(jobId)) ?? null;
        if (reported !== null) await printReportLogs(api, reported);
        else await printRunLogs(api, jobId, options.follow === true);
        return;
      }
      const print = logPrinter();
      const follow = options.follow === true && job.status === "open";
      print(await api.logs(jobId), !follow);
      if (!follow) return;
      const giveUpAtMs = job.spec.deadlineMs + waitPastDeadlineMs;
      let current = job;
      while (current.status === "open" && Date.now() <= giveUpAtMs) {
        await sleep(pollIntervalMs);
        current = await jobOrThrow(api, jobId);
        print(await api.logs(jobId), current.status !== "open");
      }
      if (current.status === "open") print(await api.logs(jobId), true);
      out(`==> ${jobId}: ${current.status}${current.reason === "" ? "" : ` (${current.reason})`} <==`);
    });
}

/**
 * `logs <job>` on a node that is not the job's master: the log its worker kept of its own runs of the job (the first
 * bytes of each stream), and with `follow` the rest as it comes while one of them runs.
 */
async function printRunLogs(api: NodeApi, jobId: string, follow: boolean): Promise<void> {
  let runs = await api.runs(jobId);
  if (runs.length === 0) throw new NoSuchJobError(jobId);
  const running = () => runs.some((run) => run.state === "running");
  const print = logPrinter();
  const following = follow && running();
  print(await api.runLogs(jobId), !following);
  if (!following) return;
  // A run ends by its job's timeout at the latest, which the executor enforces.
  while (running()) {
    await sleep(pollIntervalMs);
    runs = await api.runs(jobId);
    print(await api.runLogs(jobId), !running());
  }
  out(
    `==> ${jobId}: ${runs.map((run) => `shard ${run.shard}, attempt ${run.attempt}: ${runState(run)}`).join("; ")} <==`,
  );
}

/** `result <job>` on a node that is not the job's master: what its worker's own runs of the job came to. */
function printRunResults(jobId: string, runs: readonly RunSummary[]): void {
  const first = runs[0] as RunSummary;
  out(`job        ${jobId} "${first.name}" (project ${first.project}): the runs of this node's worker`);
  for (const run of runs) {
    out(
      `run        shard ${run.shard} of ${run.shards}, attempt ${run.attempt}, for master ${run.master}: ${runState(run)}`,
    );
    out(`  started  ${time(run.startedAtMs)}; ended ${time(run.endedAtMs)}`);
    if (run.resultDigest !== null) out(`  result   ${run.resultDigest}`);
    if (run.outputsDigest !== null) out(`  outputs  ${run.outputsDigest}`);
    if (run.logDigest !== null) out(`  log      ${run.logDigest}`);
    if (run.summary !== "") out(`  summary  ${run.summary.split("\n")[0]}`);
  }
}

/** A shard's accepted result with outputs: the CID to fetch and the workers that hold it; or why there is none. */
function acceptedOutputs(job: JobDetail, shard: number): { cid: string; holders: string[] } | string {
  const accepted = job.acceptedDigests[shard] ?? null;
  if (accepted === null) return "no agreed result yet";
  const agreeing = job.attempts.filter((attempt) => attempt.shard === shard && attempt.resultDigest === accepted);
  const cid = agreeing.find((attempt) => attempt.outputsDigest !== null)?.outputsDigest ?? null;
  if (cid === null) return "its accepted result has no outputs (the job declares none, or the run made none)";
  return { cid, holders: agreeing.map((attempt) => attempt.worker) };
}

/**
 * `result --download`: the accepted outputs of every shard, each into `<folder>/shard-N` when the job has several
 * (into the folder itself with one shard, or `--shard N`), saying what it wrote and which shard had nothing; a shard
 * without outputs fails the command once the others are written.
 */
async function downloadOutputs(
  api: NodeApi,
  job: JobDetail,
  folder: string,
  onlyShard: number | null,
  maxBytes: string | undefined,
): Promise<void> {
  const shards = job.acceptedDigests.length;
  if (onlyShard !== null && onlyShard >= shards)
    throw new CliOptionError("--shard", `a shard of job ${job.jobId}, from 0 to ${shards - 1}`, onlyShard);
  // A run's outputs lived in its work folder, which the run's disk bounds: a larger tree is a lie.
  const { minRunDiskBytes, runDiskLimitBytes } = await import("../sandbox/index.ts");
  const declared = job.spec.resources.diskBytes;
  const limit = maxBytesOption(maxBytes) ?? {
    maxBytes: runDiskLimitBytes(declared),
    name: `the job's resources.diskBytes (${declared} declared, at least ${minRunDiskBytes} for any run; --max-bytes overrides)`,
  };
  const wanted = onlyShard === null ? [...Array(shards).keys()] : [onlyShard];
  const perShardFolders = onlyShard === null && shards > 1;
  const written: string[] = [];
  const missing: string[] = [];
  for (const shard of wanted) {
    const outputs = acceptedOutputs(job, shard);
    if (typeof outputs === "string") {
      missing.push(`shard ${shard}: ${outputs}`);
      out(`shard ${shard}: nothing written, ${outputs}`);
      continue;
    }
    const destination = perShardFolders ? join(folder, `shard-${shard}`) : folder;
    await fetchInto(api, outputs.cid, destination, outputs.holders, limit);
    written.push(perShardFolders ? `shard-${shard}/` : `shard ${shard}`);
  }
  if (written.length > 0)
    out(
      `wrote the accepted outputs of ${written.length} of ${wanted.length} shard(s) of ${job.jobId} into ${folder}${perShardFolders ? `: ${written.join(", ")}` : ""}`,
    );
  if (missing.length > 0)
    throw new TransferError(
      `job ${job.jobId}: expected an accepted result with outputs for ${onlyShard === null ? "every shard" : `shard ${onlyShard}`}, but ${missing.join("; ")}`,
    );
}

/** Adds `result <job>`: a job's outcome, and with --download its accepted outputs. */
export function addResultCommand(): void {
  program
    .command("result")
    .description("show a job's outcome: status, the accepted result digest per shard, every attempt")
    .argument("<job>", "the job id")
    .option("--json", "print JSON")
    .option(
      "--download <folder>",
      "fetch the accepted outputs into this folder (absent or empty): of a sharded job, each shard's into <folder>/shard-N",
    )
    .option(
      "--shard <n>",
      "with --download: only this shard's outputs, into the folder itself",
      integer("--shard", 0, 255),
    )
    .option(
      "--max-bytes <size>",
      "with --download: refuse outputs that unpack past this (default: the disk the job's runs had, resources.diskBytes)",
    )
    .action(
      async (jobId: string, options: { json?: boolean; download?: string; shard?: number; maxBytes?: string }) => {
        const api = client();
        const job = await api.job(jobId);
        const reported = job === null ? ((await api.report?.(jobId)) ?? null) : null;
        if (reported !== null) {
          if (options.download !== undefined) {
            const cid = reported.report.outputsDigest;
            if (cid === null) throw new TransferError(`report ${jobId}: its build made no outputs`);
            await fetchInto(
              api,
              cid,
              resolve(options.download),
              [reported.reporterPeerId],
              maxBytesOption(options.maxBytes),
            );
          } else if (options.json === true) out(JSON.stringify(reported, null, 2));
          else printReport(reported);
          return;
        }
        if (job === null) {
          // Not this node's job as master: what its worker ran of it, if anything.
          const runs = await api.runs(jobId);
          if (runs.length === 0) throw new NoSuchJobError(jobId);
          if (options.download !== undefined)
            throw new TransferError(
              `--download: this node is not the master of job ${jobId}, which holds its accepted outputs; this worker's own outputs are in its blob store: ${runs.flatMap((run) => (run.outputsDigest === null ? [] : [`cimesh fetch ${run.outputsDigest} <folder>`])).join(", ") || "none"}`,
            );
          if (options.json === true) out(JSON.stringify(runs, null, 2));
          else printRunResults(jobId, runs);
          return;
        }
        if (options.download !== undefined) {
          await downloadOutputs(api, job, resolve(options.download), options.shard ?? null, options.maxBytes);
          return;
        }
        if (options.shard !== undefined) throw new CliOptionError("--shard", "--download with it", options.shard);
        if (options.json === true) {
          out(JSON.stringify(job, null, 2));
          return;
        }
        out(`job        ${job.jobId} "${job.name}" (project ${job.project})`);
        out(`status     ${job.status}${job.reason === "" ? "" : ` (${job.reason})`}`);
        out(`submitted  ${time(job.submittedAtMs)}; ended ${time(job.endedAtMs)}`);
        job.acceptedDigests.forEach((digest, shard) => {
          out(`shard ${shard}    ${digest ?? "no agreed result"}`);
        });
        for (const attempt of job.attempts) {
          out(`  ${attemptLine(attempt)}`);
          if (attempt.outputsDigest !== null) out(`    outputs ${attempt.outputsDigest}`);
          if (attempt.logDigest !== null) out(`    log     ${attempt.logDigest}`);
        }
      },
    );
}

/** Adds `fetch <cid> <folder>`: a tree from the mesh, through the running node. */
export function addFetchCommand(): void {
  program
    .command("fetch")
    .description(
      "fetch a tree (a job's inputs or outputs) by its CID from the mesh into a folder, verifying every blob",
    )
    .argument("<cid>", "the tree's root CID")
    .argument("<folder>", "where to put it: absent, or an empty folder")
    .option("--from <peer...>", "peers to ask first (PeerId or public key); the DHT's providers are asked too")
    .option("--max-bytes <size>", "refuse a tree that unpacks past this (default: the node's download limit, 4 GiB)")
    .action(async (cid: string, folder: string, options: { from?: string[]; maxBytes?: string }) => {
      await fetchInto(client(), cid, resolve(folder), options.from ?? [], maxBytesOption(options.maxBytes));
    });
}

/** Adds `explain <job>`: why a job waits, in the master's words. */
export function addExplainCommand(): void {
  program
    .command("explain")
    .description("say why a job waits (or how it ended)")
    .argument("<job>", "the job id")
    .action(async (jobId: string) => {
      out(await client().explain(jobId));
    });
}

/** Adds `cancel <job>`: stops a job's runs; it takes no new bids. */
export function addCancelCommand(): void {
  program
    .command("cancel")
    .description("cancel a job: its runs are stopped and it takes no new bids")
    .argument("<job>", "the job id")
    .option("--reason <text>", "why, shown to the workers and in the job")
    .action(async (jobId: string, options: { reason?: string }) => {
      const summary = await client().cancel(jobId, options.reason ?? "cancelled by the operator");
      out(summaryLine(summary));
    });
}

/** Adds `run <job.yaml>`: runs a job file here, as a worker would, without the mesh. */
export function addRunCommand(): void {
  program
    .command("run")
    .description("run a job here, in the same sandbox a worker uses, to reproduce what the mesh did")
    .argument("<job.yaml>", "the job file")
    .option("--shard <n>", "which shard to run (CIMESH_SHARD_INDEX)", integer("--shard", 0, 255), 0)
    .option("--allow-network", "let the job have the network if it asks for it")
    .option("--allow-unsandboxed", "run bare where bubblewrap is missing (the job gets your user's access)")
    .action(async (path: string, options: { shard: number; allowNetwork?: boolean; allowUnsandboxed?: boolean }) => {
      const text = await readInputFile(path, maxJobFileBytes, "a job file");
      const asWritten = parseJobFile(text, path, Date.now());
      // The image a required spec names, as submit puts it in the job: the run here is then the mesh's run.
      const specImage = await imageOfSpecs(asWritten.spec.requiredSpecs, asWritten.spec.image, path);
      const parsed =
        specImage === null || asWritten.spec.image !== undefined
          ? asWritten
          : { ...asWritten, spec: { ...asWritten.spec, image: specImage.image } };
      if (options.shard >= parsed.spec.shards)
        throw new CliOptionError("--shard", `below the job's shards (${parsed.spec.shards})`, options.shard);
      const onLog = (chunk: LogChunk) => {
        (chunk.stream === "stdout" ? process.stdout : process.stderr).write(chunk.data);
      };
      const report = await runJobFileHere(path, parsed, { ...options, nodeStore: false }, { onLog });
      // The digest replicas compare, as `cimesh result` shows a shard's: a run here agrees with the mesh's if equal.
      const digest = resultDigest(report, parsed.spec);
      process.stderr.write(
        `cimesh run: ${report.outcome}${report.exitCode === null ? "" : `, exit ${report.exitCode}`} after ${formatDuration(report.durationMs)}\n` +
          `  shard ${options.shard}    ${digest}  (the result digest; \`cimesh result <job>\` shows the accepted one per shard)\n` +
          `  outputs ${report.outputsDigest ?? "-"}\n  log     ${report.logDigest ?? "-"}\n` +
          (report.summary === "" ? "" : `  ${report.summary}\n`),
      );
      process.exitCode = report.outcome === "succeeded" ? 0 : 1;
    });
}

/** How `cimesh run` and `cimesh report` run a job file here. */
export interface LocalRunOptions {
  readonly shard: number;
  readonly allowNetwork?: boolean;
  readonly allowUnsandboxed?: boolean;
  /** Use the node's blob store (its data folder's) even when no --data-dir names it: what is packed must be served. */
  readonly nodeStore: boolean;
}

/**
 * Runs a parsed job file here, in the sandbox a worker uses, with the environment a worker sets, and resolves with
 * the executor's report. Outputs are packed into the node's blob store where one is named (or `nodeStore` asks for
 * it), else into a temporary one removed with the run's folder.
 */
export async function runJobFileHere(
  path: string,
  parsed: ReturnType<typeof parseJobFile>,
  options: LocalRunOptions,
  hooks: { readonly onLog: (chunk: LogChunk) => void; readonly onStep?: (event: StepEvent) => void },
): Promise<ExecutionReport> {
  const { createExecutor, minRunDiskBytes, neutralWorkRoot, runDiskLimitBytes } = await import("../sandbox/index.ts");
  const { MissingBlobError, openBlobStore, packTree, unpackTree } = await import("../store/index.ts");
  const workRoot = await mkdtemp(join(tmpdir(), "cimesh-run-"));
  // A node's blob store where one is named (it holds the trees the mesh sent a worker, and keeps what this run
  // packs); otherwise one in the temporary folder, removed with it: nothing is written where nobody said.
  const named = dataDirNamed() || options.nodeStore;
  const blobsDir = named ? join(dataDirOf(), "blobs") : join(workRoot, "blobs");
  const store = await openBlobStore(blobsDir);
  let inputsRoot = parsed.spec.inputsDigest;
  if (parsed.inputsFolder !== null)
    inputsRoot = (await packTree(resolve(dirname(path), parsed.inputsFolder), store)).root;
  const image = parsed.spec.image;
  // With a node's data folder, the image is unpacked where that node's runs find it (and reused if it is there).
  const images =
    image === undefined
      ? null
      : await (await import("../images/index.ts")).openImageCache(
          named ? join(neutralWorkRoot(dataDirOf()), "images") : join(workRoot, "images"),
          store,
        );
  const missingTree = (what: string, root: string, error: unknown): never => {
    if (!(error instanceof MissingBlobError)) throw error;
    throw new TransferError(
      `${what} ${root}: ${String(error)}; \`cimesh fetch ${root} <folder>\` brings a tree from the mesh${named ? "" : ", and --data-dir names the node whose blob store holds it"}`,
    );
  };
  const executor = createExecutor({
    workRoot,
    allowUnsandboxed: options.allowUnsandboxed === true,
    allowNetwork: options.allowNetwork === true,
    blobStore: store,
  });
  const runId = `local-${randomBytes(6).toString("hex")}`;
  const jobId = parsed.jobId ?? "local";
  const onSignal = () => executor.kill(runId, "interrupted");
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  try {
    const report = await executor.run(
      {
        runId,
        project: parsed.project,
        jobId,
        attempt: 0,
        shard: options.shard,
        job: parsed.spec,
        // What a worker sets (jobs/worker.ts), so the job cannot tell the difference.
        env: {
          CIMESH_PROJECT: parsed.project,
          CIMESH_JOB_ID: jobId,
          CIMESH_ATTEMPT: "0",
          CIMESH_SHARD_INDEX: String(options.shard),
          CIMESH_TOTAL_SHARDS: String(parsed.spec.shards),
        },
      },
      {
        prepare:
          inputsRoot === null && images === null
            ? undefined
            : async (folder) => {
                let imageRoot: string | null = null;
                if (images !== null && image !== undefined) {
                  // The same tree a worker runs in, from the blob store, unpacked once and bound read-only.
                  const ready = await images.ready(image).catch((error: unknown) => missingTree("image", image, error));
                  imageRoot = ready.root;
                }
                if (inputsRoot === null) return { imageRoot };
                // Held to the run's disk as a worker holds them, so the job runs here as it would there.
                const declared = parsed.spec.resources.diskBytes;
                const limit = {
                  maxBytes: runDiskLimitBytes(declared),
                  name: `the job's resources.diskBytes (${declared} declared, at least ${minRunDiskBytes} for any run)`,
                };
                await unpackTree(inputsRoot, store, folder, { limit }).catch((error: unknown) =>
                  missingTree("inputs", inputsRoot as string, error),
                );
                return { imageRoot };
              },
        onLog: hooks.onLog,
        onStep: hooks.onStep,
      },
    );
    return report;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    await rm(workRoot, { recursive: true, force: true });
  }
}
