/**
 * The worker's own history: every run this node carried out as a worker
 * (project, job, shard, attempt, outcome, exit code, duration, start and
 * end, the result digest and the CIDs of its log and outputs), and the first
 * bytes of each run's log, kept in the node's level store so that a volunteer
 * can see what the node did, across restarts.
 *
 * A record of the node shell, not of the protocol: the worker machine
 * decides what runs (its start and kill effects); this file writes down what
 * the executor did with them. Bounded: the newest maxRunHistoryEntries runs
 * are kept, the oldest ended one (and its log) dropped first; each run keeps
 * at most maxRunHistoryLogBytesPerStream of stdout and of stderr (the master
 * keeps the whole log). A run under way is written when it starts, so a run
 * whose process died with it is found at the next start and marked
 * `interrupted`.
 *
 * Sublevels of the node's store: `runs` (one JSON entry per run, keyed by a
 * sequence that orders them) and `run-logs` (`<seq>/<stream>/<offset>`).
 */
import type { Level } from "level";
import type { ExecutionReport, ExecutionRequest, Outcome } from "../../jobs/index.ts";
import { resultDigest } from "../../jobs/index.ts";
import type { Executor } from "../sandbox/index.ts";
import type { NodeLog, RunCarrier } from "./ports.ts";

/** Runs a worker's history keeps; past it, the oldest ended run and its log are dropped. */
export const maxRunHistoryEntries = 200;
/** Bytes of stdout, and of stderr, each run keeps in the history (the rest is the master's to keep). */
export const maxRunHistoryLogBytesPerStream = 256 * 1024;
/** Digits of a run's sequence in its keys, so that keys sort as the runs began. */
export const historySeqDigits = 12;
/** The outcome of a run found under way at a start: its process ended with the node's. */
export const interruptedOutcome = "interrupted";

export type HistoryOutcome = Outcome | typeof interruptedOutcome;

export interface RunHistoryEntry {
  /** Orders the runs as they began; names the run's log in the store. */
  readonly seq: number;
  readonly runId: string;
  readonly project: string;
  readonly jobId: string;
  readonly name: string;
  readonly shard: number;
  readonly shards: number;
  readonly attempt: number;
  /** The master that awarded the run, hex public key. */
  readonly master: string;
  readonly startedAtMs: number;
  /** Null while it runs. */
  readonly endedAtMs: number | null;
  /** Null while it runs. */
  readonly outcome: HistoryOutcome | null;
  readonly exitCode: number | null;
  /** The run's duration as the executor measured it (what the master is told); null while it runs. */
  readonly durationMs: number | null;
  /** The image the run's steps ran in (the job's `image`); absent for a job without one. */
  readonly image?: string;
  /** What replicas compare (jobs/digest.ts): of outcome, exit code and outputs digest (and the job's image). */
  readonly resultDigest: string | null;
  readonly outputsDigest: string | null;
  readonly logDigest: string | null;
  readonly summary: string;
  /** Log bytes this history holds of the run, per stream (at most maxRunHistoryLogBytesPerStream each). */
  readonly logBytes: { readonly stdout: number; readonly stderr: number };
}

/** One stretch of a run's log as kept here. */
export interface HistoryLogChunk {
  readonly seq: number;
  readonly attempt: number;
  readonly shard: number;
  readonly stream: "stdout" | "stderr";
  readonly offset: number;
  readonly data: Uint8Array;
}

export interface RunHistoryOptions {
  /** Default maxRunHistoryEntries. */
  readonly maxEntries?: number;
  /** Default maxRunHistoryLogBytesPerStream. */
  readonly maxLogBytesPerStream?: number;
  /** Told when a write to the store fails (the history goes on in memory). */
  readonly onWriteError?: (error: unknown) => void;
}

export interface RunHistory {
  readonly maxEntries: number;
  readonly maxLogBytesPerStream: number;
  /** A run began: it is written at once, as under way. */
  started(run: ExecutionRequest, master: string, atMs: number): RunHistoryEntry;
  /** Output of a run under way; kept up to the per-stream limit. */
  output(
    runId: string,
    chunk: { readonly stream: "stdout" | "stderr"; readonly offset: number; readonly data: Uint8Array },
  ): void;
  /** A run ended, as reported; null for a run not under way here. */
  ended(runId: string, report: Omit<ExecutionReport, "runId">, atMs: number): RunHistoryEntry | null;
  /** The run under way with this id, if any. */
  running(runId: string): RunHistoryEntry | undefined;
  /** Every run kept, oldest first. */
  list(): RunHistoryEntry[];
  /** The runs of one job, oldest first. */
  ofJob(jobId: string): RunHistoryEntry[];
  /** The log kept of a job's runs, in store order (per run, stream, offset). */
  logs(jobId: string): Promise<HistoryLogChunk[]>;
  /** Resolves once every write asked so far is in the store. */
  flushed(): Promise<void>;
  /** Resolves once no run is under way (each has ended and is written down). */
  noneRunning(): Promise<void>;
  /** Writes nothing more (the store is about to close). */
  close(): Promise<void>;
}

/** One operation of a level batch on a sublevel of the node's store (level types each sublevel's values apart). */
interface BatchOperation {
  readonly type: "put" | "del";
  readonly key: string;
  readonly value?: unknown;
  readonly sublevel: unknown;
}

const pad = (n: number) => n.toString().padStart(historySeqDigits, "0");

type Pending =
  | { readonly kind: "put-entry"; readonly entry: RunHistoryEntry }
  | { readonly kind: "del-entry"; readonly seq: number }
  | {
      readonly kind: "put-log";
      readonly seq: number;
      readonly stream: "stdout" | "stderr";
      readonly offset: number;
      readonly data: Uint8Array;
    }
  | { readonly kind: "clear-log"; readonly seq: number };

/** Digits of a log chunk's offset in its key (a stream's offsets stay below 2^53). */
const offsetDigits = 16;

function logKey(chunk: { readonly seq: number; readonly stream: string; readonly offset: number }): string {
  return `${pad(chunk.seq)}/${chunk.stream}/${chunk.offset.toString().padStart(offsetDigits, "0")}`;
}

/**
 * Joins queued log pieces of one run and stream that follow each other (each starting where the last ended) into
 * one, so a job that writes a byte at a time costs a key per write of the queue, not per byte.
 */
function coalesced(items: readonly Pending[]): Pending[] {
  const out: Pending[] = [];
  const lastPiece = new Map<string, number>();
  for (const item of items) {
    if (item.kind === "clear-log") {
      lastPiece.delete(`${item.seq}/stdout`);
      lastPiece.delete(`${item.seq}/stderr`);
    }
    if (item.kind !== "put-log") {
      out.push(item);
      continue;
    }
    const source = `${item.seq}/${item.stream}`;
    const at = lastPiece.get(source);
    const last = at === undefined ? undefined : out[at];
    if (at !== undefined && last?.kind === "put-log" && last.offset + last.data.length === item.offset) {
      const data = new Uint8Array(last.data.length + item.data.length);
      data.set(last.data);
      data.set(item.data, last.data.length);
      out[at] = { ...last, data };
    } else {
      lastPiece.set(source, out.length);
      out.push(item);
    }
  }
  return out;
}

function checkLimit(name: string, value: number, min: number): number {
  if (!Number.isSafeInteger(value) || value < min)
    throw new RangeError(`${name}: expected a whole number of at least ${min}, got ${value}`);
  return value;
}

type EntriesLevel = ReturnType<typeof entriesLevelOf>;
type LogsLevel = ReturnType<typeof logsLevelOf>;

function entriesLevelOf(db: Level<string, string>) {
  return db.sublevel<string, RunHistoryEntry>("runs", { valueEncoding: "json" });
}

function logsLevelOf(db: Level<string, string>) {
  return db.sublevel<string, Uint8Array>("run-logs", { valueEncoding: "view" });
}

/** The history's writes, queued and carried out in order: puts and deletes in batches, a run's log cleared between them. */
class HistoryWrites {
  private readonly db: Level<string, string>;
  private readonly entriesLevel: EntriesLevel;
  private readonly logsLevel: LogsLevel;
  private readonly onWriteError: ((error: unknown) => void) | undefined;
  private readonly queue: Pending[] = [];
  private closed = false;
  /** The writing under way, or null when the queue is empty. */
  writing: Promise<void> | null = null;

  constructor(
    db: Level<string, string>,
    entriesLevel: EntriesLevel,
    logsLevel: LogsLevel,
    onWriteError?: (error: unknown) => void,
  ) {
    this.db = db;
    this.entriesLevel = entriesLevel;
    this.logsLevel = logsLevel;
    this.onWriteError = onWriteError;
  }

  enqueue(...items: Pending[]): void {
    if (this.closed) return;
    this.queue.push(...items);
    this.writing ??= this.writeAll().finally(() => {
      this.writing = null;
    });
  }

  /** Every write queued so far is done. */
  async flushed(): Promise<void> {
    while (this.writing !== null) await this.writing;
  }

  /** Flushed, then nothing more is written. */
  async close(): Promise<void> {
    await this.flushed();
    this.closed = true;
  }

  private async writeAll(): Promise<void> {
    while (this.queue.length > 0) {
      const taken = coalesced(this.queue.splice(0));
      try {
        let ops: BatchOperation[] = [];
        for (const item of taken) {
          if (item.kind === "clear-log") {
            if (ops.length > 0) await this.db.batch(ops as never);
            ops = [];
            await this.logsLevel.clear({ gte: `${pad(item.seq)}/`, lt: `${pad(item.seq)}/\xff` });
          } else if (item.kind === "put-entry")
            ops.push({ type: "put", key: pad(item.entry.seq), value: item.entry, sublevel: this.entriesLevel });
          else if (item.kind === "del-entry")
            ops.push({ type: "del", key: pad(item.seq), sublevel: this.entriesLevel });
          else ops.push({ type: "put", key: logKey(item), value: item.data, sublevel: this.logsLevel });
        }
        if (ops.length > 0) await this.db.batch(ops as never);
      } catch (error) {
        this.onWriteError?.(error);
      }
    }
  }
}

/** Logs whose run is gone (a process stopped between dropping a run and clearing its log): one look per run. */
async function dropOrphanLogs(logsLevel: LogsLevel, entries: ReadonlyMap<number, RunHistoryEntry>): Promise<void> {
  for (let from = ""; ; ) {
    const [key] = await logsLevel.keys({ gt: from, limit: 1 }).all();
    if (key === undefined) break;
    const seq = Number(key.slice(0, historySeqDigits));
    if (!entries.has(seq)) await logsLevel.clear({ gte: `${pad(seq)}/`, lt: `${pad(seq)}/\xff` });
    from = `${pad(seq)}/\xff`;
  }
}

/** A kept run's log, chunk by chunk, as stored. */
async function chunksOf(logsLevel: LogsLevel, entry: RunHistoryEntry): Promise<HistoryLogChunk[]> {
  const chunks: HistoryLogChunk[] = [];
  for await (const [key, data] of logsLevel.iterator({ gte: `${pad(entry.seq)}/`, lt: `${pad(entry.seq)}/\xff` })) {
    const [, stream, offset] = key.split("/");
    chunks.push({
      seq: entry.seq,
      attempt: entry.attempt,
      shard: entry.shard,
      stream: stream as "stdout" | "stderr",
      offset: Number(offset),
      data: new Uint8Array(data),
    });
  }
  return chunks;
}

/** The entry of a run that starts now: nothing ended, no log yet. */
function startedEntry(seq: number, run: ExecutionRequest, master: string, atMs: number): RunHistoryEntry {
  return {
    seq,
    runId: run.runId,
    project: run.project,
    jobId: run.jobId,
    name: run.job.name,
    shard: run.shard,
    shards: run.job.shards,
    attempt: run.attempt,
    master,
    ...(run.job.image === undefined ? {} : { image: run.job.image }),
    startedAtMs: atMs,
    endedAtMs: null,
    outcome: null,
    exitCode: null,
    durationMs: null,
    resultDigest: null,
    outputsDigest: null,
    logDigest: null,
    summary: "",
    logBytes: { stdout: 0, stderr: 0 },
  };
}

/** The entry of a run that ended now with `report`. */
function endedEntry(entry: RunHistoryEntry, report: Omit<ExecutionReport, "runId">, atMs: number): RunHistoryEntry {
  return {
    ...entry,
    endedAtMs: atMs,
    outcome: report.outcome,
    exitCode: report.exitCode,
    durationMs: report.durationMs,
    resultDigest: resultDigest(report, entry),
    outputsDigest: report.outputsDigest,
    logDigest: report.logDigest,
    summary: report.summary,
  };
}

/**
 * Opens the history in `db` (the node's level store): loads the kept runs, marks those found under way as
 * interrupted, and drops what is past the bound (a smaller limit than the last process had, or a log left behind).
 */
export async function openRunHistory(db: Level<string, string>, options: RunHistoryOptions = {}): Promise<RunHistory> {
  const maxEntries = checkLimit("maxEntries", options.maxEntries ?? maxRunHistoryEntries, 1);
  const maxLogBytesPerStream = checkLimit(
    "maxLogBytesPerStream",
    options.maxLogBytesPerStream ?? maxRunHistoryLogBytesPerStream,
    0,
  );
  const entriesLevel = entriesLevelOf(db);
  const logsLevel = logsLevelOf(db);
  const writes = new HistoryWrites(db, entriesLevel, logsLevel, options.onWriteError);

  /** Kept runs by sequence; a Map keeps them in the order they began. */
  const entries = new Map<number, RunHistoryEntry>();
  const active = new Map<string, RunHistoryEntry>();
  const noneRunningWaiters: (() => void)[] = [];
  for await (const [, entry] of entriesLevel.iterator()) entries.set(entry.seq, entry);
  let nextSeq = Math.max(0, ...entries.keys()) + 1;

  /** Drops the oldest ended runs past maxEntries; a run under way is never dropped (slots bound them). */
  const prune = () => {
    let excess = entries.size - maxEntries;
    for (const entry of entries.values()) {
      if (excess <= 0) break;
      if (entry.endedAtMs === null) continue;
      entries.delete(entry.seq);
      writes.enqueue({ kind: "del-entry", seq: entry.seq }, { kind: "clear-log", seq: entry.seq });
      excess--;
    }
  };

  // Runs the last process left under way ended with it.
  for (const entry of [...entries.values()]) {
    if (entry.endedAtMs !== null) continue;
    const interrupted: RunHistoryEntry = {
      ...entry,
      outcome: interruptedOutcome,
      summary: "the node stopped while the run was under way",
    };
    entries.set(entry.seq, interrupted);
    writes.enqueue({ kind: "put-entry", entry: interrupted });
  }
  prune();
  await writes.flushed();
  await dropOrphanLogs(logsLevel, entries);

  return {
    maxEntries,
    maxLogBytesPerStream,
    started(run, master, atMs) {
      const entry = startedEntry(nextSeq++, run, master, atMs);
      entries.set(entry.seq, entry);
      active.set(run.runId, entry);
      writes.enqueue({ kind: "put-entry", entry });
      prune();
      return entry;
    },
    output(runId, chunk) {
      const entry = active.get(runId);
      if (entry === undefined || chunk.offset >= maxLogBytesPerStream) return;
      const data = chunk.data.subarray(0, maxLogBytesPerStream - chunk.offset);
      if (data.length === 0) return;
      const kept = Math.max(entry.logBytes[chunk.stream], chunk.offset + data.length);
      const updated = { ...entry, logBytes: { ...entry.logBytes, [chunk.stream]: kept } };
      active.set(runId, updated);
      entries.set(entry.seq, updated);
      writes.enqueue({
        kind: "put-log",
        seq: entry.seq,
        stream: chunk.stream,
        offset: chunk.offset,
        data: new Uint8Array(data),
      });
    },
    ended(runId, report, atMs) {
      const entry = active.get(runId);
      if (entry === undefined) return null;
      active.delete(runId);
      const done = endedEntry(entry, report, atMs);
      entries.set(entry.seq, done);
      writes.enqueue({ kind: "put-entry", entry: done });
      prune();
      if (active.size === 0) for (const wake of noneRunningWaiters.splice(0)) wake();
      return done;
    },
    running: (runId) => active.get(runId),
    list: () => [...entries.values()],
    ofJob: (jobId) => [...entries.values()].filter((entry) => entry.jobId === jobId),
    async logs(jobId) {
      await writes.writing;
      const runs = [...entries.values()].filter((entry) => entry.jobId === jobId);
      return (await Promise.all(runs.map((entry) => chunksOf(logsLevel, entry)))).flat();
    },
    flushed: () => writes.flushed(),
    noneRunning() {
      if (active.size === 0) return Promise.resolve();
      return new Promise((resolve) => noneRunningWaiters.push(resolve));
    },
    close: () => writes.close(),
  };
}

/** A run as the node log's `run-ended` event names it. */
function endedFields(entry: RunHistoryEntry): Record<string, unknown> {
  return {
    project: entry.project.slice(0, 12),
    jobId: entry.jobId,
    shard: entry.shard,
    attempt: entry.attempt,
    outcome: entry.outcome,
    exitCode: entry.exitCode,
    durationMs: entry.durationMs,
    resultDigest: entry.resultDigest,
  };
}

/**
 * The runs a worker carries out (a RunCarrier), written down: each run's start, its log as it comes, and its end as
 * reported to its master (after the carrier's own `finished`), with a `run-ended` line in the node's log. A run whose
 * executor failed is written down as refused, with the error, as the node reports it.
 */
export function recordedRuns(
  carrier: RunCarrier,
  history: RunHistory,
  options: {
    /** The master of a run under way (hex), read from the worker machine. */
    readonly masterOf: (runId: string) => string;
    readonly log: NodeLog;
    readonly nowMs?: () => number;
    readonly onEnded?: (entry: RunHistoryEntry) => void;
  },
): RunCarrier {
  const nowMs = options.nowMs ?? Date.now;
  const failures = new Map<string, string>();
  const inner = carrier.executor;
  const executor: Executor = {
    probe: () => inner.probe(),
    kill: (runId, reason) => inner.kill(runId, reason),
    run(request, hooks) {
      history.started(request, options.masterOf(request.runId), nowMs());
      return inner
        .run(request, {
          ...hooks,
          onLog(chunk) {
            history.output(request.runId, chunk);
            hooks.onLog(chunk);
          },
        })
        .catch((error: unknown) => {
          failures.set(request.runId, String(error).slice(0, 1000));
          throw error;
        });
    },
  };
  return {
    executor,
    prepare: (run, master, folder) => carrier.prepare(run, master, folder),
    async finished(run, report) {
      const final = await carrier.finished(run, report);
      const failure = failures.get(run.runId) ?? "the run ended without a report";
      failures.delete(run.runId);
      const entry = history.ended(
        run.runId,
        final ?? {
          outcome: "refused",
          exitCode: null,
          outputsDigest: null,
          logDigest: null,
          summary: failure,
          durationMs: 0,
        },
        nowMs(),
      );
      if (entry !== null) {
        options.log("run-ended", endedFields(entry));
        options.onEnded?.(entry);
      }
      return final;
    },
  };
}
