/**
 * The node's control API (NodeApi) over its driver: what the CLI and the
 * control server ask of a running node. Reads come from the machines' state;
 * every change goes in as a machine input through the driver's queue.
 */
import { randomBytes } from "node:crypto";
import { readdir } from "node:fs/promises";
import { isAbsolute } from "node:path";
import type { Dimensions } from "../../capabilities/index.ts";
import { schemaErrorFrom } from "../../crypto/index.ts";
import {
  type Availability,
  checkedRules,
  effectiveAvailability,
  explainJob,
  type JobRecord,
  type JobSpec,
  type MasterInput,
  type NodeDriver,
  offerStatus,
  offersHeld,
  type ReportDelivery,
  type ReporterInput,
  type ReportFacts,
  type ReportRecord,
  reportDelivery,
  reporterHasRoom,
  reportSchema,
  type WorkerInput,
} from "../../jobs/index.ts";
import type {
  BusySlot,
  FetchStatus,
  JobDetail,
  JobSummary,
  LogLine,
  NodeApi,
  NodeStatus,
  ReportDetail,
  ReportDraft,
  ReportSummary,
  RulesBody,
  RunSummary,
} from "../control/index.ts";
import { type Host, peerIdOfPublicKeyHex } from "../host/index.ts";
import type { BlobStore, NodeStore, UnpackLimit } from "../store/index.ts";
import { unpackTree } from "../store/index.ts";
import { NodeRequestError } from "./errors.ts";
import type { RunHistory, RunHistoryEntry } from "./history.ts";
import type { FetchFrom } from "./inputs.ts";
import type { NodeMetrics } from "./metrics.ts";
import { type RunUsage, RunUsageMeter } from "./procstat.ts";
import { waitingReason } from "./waiting.ts";

/** Fetches the node remembers for the CLI to ask about; the oldest is forgotten first. */
export const maxFetchRecords = 64;
/** What a download (`cimesh fetch`, `cimesh result --download`) may unpack to when the CLI names no limit. */
export const defaultDownloadMaxBytes = 4 * 1024 * 1024 * 1024;
/** The name of that limit in errors: the CLI option that raises it. */
export const defaultDownloadLimitName = "the download limit (--max-bytes, default 4 GiB)";

export interface ApiParts {
  readonly driver: NodeDriver<Uint8Array>;
  readonly host: Host;
  readonly store: NodeStore;
  readonly blobs: BlobStore;
  readonly fetchFrom: FetchFrom;
  /** The public key of this node, hex. */
  readonly self: string;
  readonly shares: Readonly<Record<string, number>>;
  /** Why this worker takes no job (no sandbox), or empty. */
  readonly sandboxProblem: string;
  /** The worker's own runs; null on a node without a worker. */
  readonly history: RunHistory | null;
  readonly metrics: NodeMetrics;
  /** The host pid of a running job's first process (the executor's); absent on a node without a worker. */
  readonly pidOf?: (runId: string) => number | null;
  /** Projects removed from config.yaml since the node started (served until the next start). */
  readonly trustRemoved?: ReadonlySet<string>;
  /** What the node's reports say of this machine: the worker's dimensions, or those detected on a node without one. */
  readonly dimensions?: Dimensions;
}

/** A node's key as the CLI shows it: its PeerId (the key itself when it is not one). */
function peerIdOrKey(hex: string): string {
  try {
    return peerIdOfPublicKeyHex(hex).toString();
  } catch {
    return hex;
  }
}

function runSummary(entry: RunHistoryEntry): RunSummary {
  return {
    project: entry.project,
    jobId: entry.jobId,
    name: entry.name,
    shard: entry.shard,
    shards: entry.shards,
    attempt: entry.attempt,
    master: peerIdOrKey(entry.master),
    state: entry.endedAtMs === null ? "running" : "ended",
    outcome: entry.outcome,
    exitCode: entry.exitCode,
    startedAtMs: entry.startedAtMs,
    endedAtMs: entry.endedAtMs,
    durationMs: entry.durationMs,
    resultDigest: entry.resultDigest,
    outputsDigest: entry.outputsDigest,
    logDigest: entry.logDigest,
    summary: entry.summary,
  };
}

function summary(project: string, job: JobRecord): JobSummary {
  return {
    project,
    jobId: job.jobId,
    name: job.spec.name,
    status: job.status,
    reason: job.reason,
    submittedAtMs: job.submittedAtMs,
    endedAtMs: job.endedAtMs,
    runsAwarded: job.attempts.length,
    runsLive: job.attempts.filter((attempt) => attempt.state === "running").length,
  };
}

/** `waiting`: why the job is open (waiting.ts), empty once it ended. */
function detail(project: string, job: JobRecord, waiting: string): JobDetail {
  return {
    ...summary(project, job),
    spec: job.spec,
    waiting,
    attempts: job.attempts.map((attempt) => ({
      attempt: attempt.attempt,
      shard: attempt.shard,
      worker: attempt.worker,
      workerPeerId: peerIdOrKey(attempt.worker),
      state: attempt.state,
      outcome: attempt.outcome,
      exitCode: attempt.exitCode,
      outputsDigest: attempt.outputsDigest,
      resultDigest: attempt.digest,
      logDigest: attempt.logDigest,
      summary: attempt.summary,
    })),
    acceptedDigests: job.shards.map((shard) => shard.decidedDigest),
  };
}

function reportSummary(project: string, record: ReportRecord): ReportSummary {
  const { report } = record;
  return {
    kind: "report",
    project,
    reportId: record.reportId,
    jobName: report.jobName,
    reporter: record.reporter,
    reporterPeerId: peerIdOrKey(record.reporter),
    outcome: report.outcome,
    exitCode: report.exitCode,
    source: report.source === null ? "" : `${report.source.url}@${report.source.revision}`,
    startedAtMs: report.startedAtMs,
    endedAtMs: report.endedAtMs,
    receivedAtMs: record.receivedAtMs,
  };
}

/** A run's usage as its busy slot shows it; nothing when it was not read. */
function usageField(usage: RunUsage | undefined): Pick<BusySlot, "usage"> {
  if (usage === undefined) return {};
  const { processes, cpuMs, cpuPercent, memoryBytes } = usage;
  return { usage: { processes, cpuMs, cpuPercent, memoryBytes } };
}

/** A master's input, resolved once stepped (and its writes stored), rejected with what the machine threw. */
function masterStepped(driver: NodeDriver<Uint8Array>, project: string, input: MasterInput): Promise<void> {
  return new Promise((resolve, reject) =>
    driver.toMaster(project, input, (error) => (error === undefined ? resolve() : reject(error))),
  );
}

function reporterStepped(driver: NodeDriver<Uint8Array>, input: ReporterInput): Promise<void> {
  return new Promise((resolve, reject) =>
    driver.toReporter(input, (error) => (error === undefined ? resolve() : reject(error))),
  );
}

function workerStepped(driver: NodeDriver<Uint8Array>, input: WorkerInput): Promise<void> {
  return new Promise((resolve, reject) =>
    driver.toWorker(input, (error) => (error === undefined ? resolve() : reject(error))),
  );
}

/** The job a master of this node holds under `jobId`, with its project, or null. */
function findJob(driver: NodeDriver<Uint8Array>, jobId: string): [string, JobRecord] | null {
  for (const project of driver.masterProjects()) {
    const job = driver.masterState(project)?.jobs[jobId];
    if (job !== undefined) return [project, job];
  }
  return null;
}

function foundJob(driver: NodeDriver<Uint8Array>, jobId: string): [string, JobRecord] {
  const hit = findJob(driver, jobId);
  if (hit === null) throw new NodeRequestError(404, `job ${jobId}: no such job on this node`);
  return hit;
}

/** Log chunks as the API shows them: text. */
function logLines(
  chunks: readonly { attempt: number; stream: LogLine["stream"]; offset: number; data: Uint8Array }[],
): LogLine[] {
  return chunks.map((chunk) => ({
    attempt: chunk.attempt,
    stream: chunk.stream,
    offset: chunk.offset,
    text: Buffer.from(chunk.data).toString("utf8"),
  }));
}

/** The node's status: its roles, the worker's slots and what runs in them (with their usage), trust, peers. */
function statusApi(parts: ApiParts): () => Promise<NodeStatus> {
  const { driver, host, blobs, self } = parts;
  const meter = new RunUsageMeter();
  const usageOfRuns = async (runIds: readonly string[]): Promise<Map<string, RunUsage>> => {
    const pidOf = parts.pidOf;
    if (pidOf === undefined) return new Map();
    const runs = runIds.flatMap((runId) => {
      const pid = pidOf(runId);
      return pid === null ? [] : [{ runId, pid }];
    });
    const read = await meter.read(runs, Date.now()).catch(() => []);
    return new Map(read.map((usage) => [usage.runId, usage]));
  };
  return async () => {
    const worker = driver.workerState();
    const usage = await usageOfRuns(Object.keys(worker?.running ?? {}));
    return {
      peerId: host.peerId,
      publicKey: self,
      addresses: host.multiaddrs(),
      roles: { master: driver.masterProjects(), worker: worker !== null },
      // What the worker acts on: its volunteer's choice, unless a rule or a missing sandbox pauses it.
      availability: worker === null ? null : effectiveAvailability(worker),
      availabilityChosen: worker === null ? null : worker.availability,
      availabilityRules: worker === null ? null : structuredClone(worker.config.rules),
      running: worker === null ? 0 : Object.keys(worker.running).length,
      slots: worker?.config.slots ?? 0,
      busySlots: Object.values(worker?.running ?? {})
        .map((run) => ({
          project: run.project,
          jobId: run.jobId,
          name: parts.history?.running(run.runId)?.name ?? "",
          shard: run.shard,
          attempt: run.attempt,
          sinceMs: run.startedAtMs,
          ...usageField(usage.get(run.runId)),
        }))
        .sort((a, b) => a.sinceMs - b.sinceMs),
      offering:
        worker === null ? null : { freeSlots: offerStatus(worker).freeSlots, masters: structuredClone(worker.masters) },
      offersHeld: Object.fromEntries(
        driver.masterProjects().map((project) => {
          const state = driver.masterState(project);
          return [project, state === undefined ? { workers: 0, freeSlots: 0 } : offersHeld(state, Date.now())];
        }),
      ),
      peers: host.peerCount(),
      peerScores: host.scores(),
      peerPenalties: host.penalties(),
      trusted: [...driver.trust().entries()].map(([project, entry]) => ({
        project,
        share: parts.shares[project] ?? 0,
        keysetVersion: entry.keyset === null ? null : `${entry.keyset.rootVersion}.${entry.keyset.version}`,
      })),
      trustRemoved: [...(parts.trustRemoved ?? [])],
      cache: { usedBytes: blobs.usedBytes(), quotaBytes: blobs.quotaBytes },
      reachability: host.reachability(),
    };
  };
}

/** A master's jobs: submit, list, show, logs, explain, cancel. */
function jobsApi(parts: ApiParts): Pick<NodeApi, "submit" | "jobs" | "job" | "logs" | "explain" | "cancel"> {
  const { driver, host, store, blobs } = parts;
  return {
    async submit(project: string, jobId: string, spec: JobSpec) {
      if (driver.masterState(project) === undefined)
        throw new NodeRequestError(
          400,
          `project: expected one this node is master for (${driver.masterProjects().join(", ") || "none: start with --master"}), got ${project}`,
        );
      const id = jobId === "" ? `job-${randomBytes(6).toString("hex")}` : jobId;
      if (findJob(driver, id) !== null)
        throw new NodeRequestError(409, `jobId: expected a new id, ${id} was already submitted`);
      if (spec.inputsDigest !== null) {
        if (!(await blobs.has(spec.inputsDigest)))
          throw new NodeRequestError(
            400,
            `inputsDigest: expected the tree ${spec.inputsDigest} in this node's blob store (cimesh submit packs a job's inputs folder there)`,
          );
        void host.provide(spec.inputsDigest).catch(() => undefined);
      }
      await masterStepped(driver, project, { kind: "submit", jobId: id, job: spec });
      const job = driver.masterState(project)?.jobs[id];
      if (job === undefined) throw new NodeRequestError(500, `job ${id} was not stored`);
      return summary(project, job);
    },
    async jobs() {
      return driver
        .masterProjects()
        .flatMap((project) =>
          Object.values(driver.masterState(project)?.jobs ?? {}).map((job) => summary(project, job)),
        );
    },
    async job(jobId: string) {
      const hit = findJob(driver, jobId);
      if (hit === null) return null;
      const [project, job] = hit;
      const state = driver.masterState(project);
      const waiting = state === undefined ? "" : waitingReason(state, job, Date.now(), host.peerCount());
      return detail(project, job, waiting);
    },
    async logs(jobId: string): Promise<LogLine[]> {
      return logLines(await store.logChunks(jobId));
    },
    async explain(jobId: string) {
      const [project, job] = foundJob(driver, jobId);
      const text = explainJob(driver.masterState(project) as never, jobId, Date.now());
      const specs = job.spec.requiredSpecs;
      if (job.status !== "open" || specs.length === 0) return text;
      const lines = await Promise.all(
        specs.map(async (uuid) => {
          const providers = await host.findProviders(uuid).catch(() => []);
          return `spec ${uuid}: ${providers.length} worker(s) provide it in the DHT`;
        }),
      );
      return [text, ...lines].join("\n");
    },
    async cancel(jobId: string, reason: string) {
      const [project] = foundJob(driver, jobId);
      await masterStepped(driver, project, { kind: "cancel", jobId, reason });
      return summary(project, driver.masterState(project)?.jobs[jobId] as JobRecord);
    },
  };
}

/** A worker's side: availability and rules (answered with the status), the runs it did and their logs. */
function workerApi(
  parts: ApiParts,
  status: () => Promise<NodeStatus>,
): Pick<NodeApi, "setAvailability" | "setRules" | "runs" | "runLogs"> {
  const { driver } = parts;
  return {
    async setAvailability(availability: Availability) {
      if (driver.workerState() === null)
        throw new NodeRequestError(400, "availability: this node is not a worker (start it with --worker)");
      if (parts.sandboxProblem !== "" && availability !== "paused" && availability !== "offline")
        throw new NodeRequestError(409, parts.sandboxProblem);
      await workerStepped(driver, { kind: "set-availability", availability });
      return status();
    },
    async setRules(rules: RulesBody) {
      if (driver.workerState() === null)
        throw new NodeRequestError(400, "rules: this node is not a worker (start it with --worker)");
      try {
        checkedRules(rules);
      } catch (error) {
        throw new NodeRequestError(400, (error as Error).message);
      }
      await workerStepped(driver, { kind: "rules", rules });
      return status();
    },
    async runs(jobId?: string) {
      const history = parts.history;
      if (history === null) return [];
      return (jobId === undefined ? history.list() : history.ofJob(jobId)).map(runSummary);
    },
    async runLogs(jobId: string): Promise<LogLine[]> {
      return logLines((await parts.history?.logs(jobId)) ?? []);
    },
  };
}

export function nodeApi(parts: ApiParts): NodeApi {
  const status = statusApi(parts);
  return {
    status,
    ...jobsApi(parts),
    ...workerApi(parts, status),
    ...fetchApi(parts),
    metrics: () => parts.metrics.text(),
    ...reportsApi(parts),
  };
}

/** Push-only builds: the reporter's outbox (what `cimesh report` queues) and the reports this node's masters recorded. */
function reportsApi(parts: ApiParts): Required<Pick<NodeApi, "queueReport" | "reportDelivery" | "reports" | "report">> {
  const { driver, host, blobs } = parts;
  const records = (): [string, ReportRecord][] =>
    driver.masterProjects().flatMap((project) => {
      const desk = driver.reportDesk(project);
      return desk === undefined
        ? []
        : desk.order.flatMap((id) => {
            const record = desk.records[id];
            return record === undefined ? [] : [[project, record] as [string, ReportRecord]];
          });
    });
  return {
    async queueReport(draft: ReportDraft): Promise<ReportDelivery> {
      const worker = driver.workerState();
      const dimensions = worker?.config.dimensions ?? parts.dimensions;
      if (dimensions === undefined) throw new NodeRequestError(500, "dimensions: this node cannot tell its own");
      const specs = (worker?.config.specs ?? []).filter((claim) => claim.passed);
      const nowMs = Date.now();
      const checked = reportSchema.safeParse({
        ...draft,
        dimensions,
        specs,
        issuedAtMs: nowMs,
        expiresAtMs: nowMs,
        seq: 0,
      });
      if (!checked.success) throw new NodeRequestError(400, schemaErrorFrom("draft", checked.error).message);
      const { issuedAtMs: _issued, expiresAtMs: _expires, seq: _seq, ...facts } = checked.data;
      if (!driver.trust().has(facts.project))
        throw new NodeRequestError(
          400,
          `project: expected a project this node trusts (\`cimesh trust add\`), whose masters it knows; got ${facts.project}`,
        );
      const known = reportDelivery(driver.reporterState(), facts.reportId);
      if (known.state === "unknown" && !reporterHasRoom(driver.reporterState()))
        throw new NodeRequestError(
          503,
          `reports: the outbox holds ${driver.reporterState().config.maxOutboxReports} reports no master has answered yet; try again once they are delivered`,
        );
      for (const [field, cid] of [
        ["logDigest", facts.logDigest],
        ["outputsDigest", facts.outputsDigest],
      ] as const) {
        if (cid === null) continue;
        if (!(await blobs.has(cid)))
          throw new NodeRequestError(
            400,
            `${field}: expected the tree ${cid} in this node's blob store (cimesh report packs it there)`,
          );
        void host.provide(cid).catch(() => undefined);
      }
      await reporterStepped(driver, { kind: "queue", facts: facts as ReportFacts });
      return reportDelivery(driver.reporterState(), facts.reportId);
    },
    async reportDelivery(reportId: string) {
      return reportDelivery(driver.reporterState(), reportId);
    },
    async reports() {
      return records().map(([project, record]) => reportSummary(project, record));
    },
    async report(reportId: string): Promise<ReportDetail | null> {
      const hit = records().find(([, record]) => record.reportId === reportId);
      if (hit === undefined) return null;
      const [project, record] = hit;
      return { ...reportSummary(project, record), report: record.report };
    },
  };
}

/** `cimesh fetch`: a tree into a folder, in the background, with its progress kept for the CLI to poll. */
function fetchApi(parts: ApiParts): Pick<NodeApi, "startFetch" | "fetchStatus"> {
  const fetches = new Map<string, FetchStatus>();
  return {
    async startFetch(root: string, destination: string, providers: readonly string[], given?: UnpackLimit) {
      const limit = given ?? { maxBytes: defaultDownloadMaxBytes, name: defaultDownloadLimitName };
      if (!isAbsolute(destination))
        throw new NodeRequestError(400, `destination: expected an absolute path, got ${destination}`);
      const existing = await readdir(destination).catch((error: NodeJS.ErrnoException) =>
        error.code === "ENOENT" ? [] : Promise.reject(error),
      );
      if (existing.length > 0)
        throw new NodeRequestError(409, `destination: expected an absent or empty folder, ${destination} holds files`);
      const id = `fetch-${randomBytes(6).toString("hex")}`;
      const record: { -readonly [K in keyof FetchStatus]: FetchStatus[K] } = {
        id,
        root,
        destination,
        state: "fetching",
        doneBytes: 0,
        totalBytes: 0,
        fetchedBytes: 0,
        files: 0,
        error: "",
      };
      fetches.set(id, record);
      while (fetches.size > maxFetchRecords) fetches.delete(fetches.keys().next().value as string);
      void (async () => {
        const release = parts.blobs.pin([root]);
        try {
          // Checked when the manifest is in (no chunk fetched) and again before the destination is made.
          const report = await parts.fetchFrom(root, providers, {
            limit,
            onProgress: (done, total) => {
              record.doneBytes = done;
              record.totalBytes = total;
            },
          });
          record.fetchedBytes = report.fetchedBytes;
          const unpacked = await unpackTree(root, parts.blobs, destination, { limit });
          record.files = unpacked.files;
          record.doneBytes = record.totalBytes;
          record.state = "done";
        } catch (error) {
          record.error = String(error);
          record.state = "failed";
        } finally {
          release();
        }
      })();
      return { ...record };
    },
    async fetchStatus(id: string) {
      const record = fetches.get(id);
      return record === undefined ? null : { ...record };
    },
  };
}
