/**
 * The node's store: level (LevelDB), one sublevel per concern (DESIGN.md,
 * Store). It keeps what the shell core persists (jobs/driver.ts StoreWrite):
 * each step's writes go in as one atomic batch before the step's messages
 * leave, so what a master acknowledged survives a crash and a restarted node
 * carries on from here.
 *
 * - worker: the worker machine's state, whole (it is small and bounded).
 * - jobs, reputation: the master's job records and worker reputations, one
 *   entry each, so a master of 100,000 jobs writes per step what changed.
 * - ledger: the replay window of each signer, one small entry per message.
 * - keysets, logs, meta (the reserved signing sequence, the ledger's floor).
 * - reporter: the reporter's outbox and answers, whole (bounded); reports and
 *   reportDesks: each report desk's recorded reports, one entry each, and its
 *   replay ledger and rate windows (jobs/reports.ts).
 */
import { Level } from "level";
import {
  createReplayLedger,
  defaultReplayLedgerLimits,
  type ReplayLedger,
  type ReplayLedgerLimits,
  type SignerWindow,
} from "../../crypto/index.ts";
import type {
  JobRecord,
  LogChunkRecord,
  MasterState,
  ReportDeskMeta,
  ReporterState,
  ReportRecord,
  Reputation,
  StoredNode,
  StoreWrite,
  WorkerState,
} from "../../jobs/index.ts";

/** Log bytes kept per attempt and stream on a master; chunks past it are dropped. */
export const maxStoredLogBytesPerStream = 16 * 1024 * 1024;

export type StoredLogChunk = LogChunkRecord;

export interface NodeStore {
  readonly db: Level<string, string>;
  /** Everything a restarted node needs: machine records, ledger, keysets, sequence. */
  load(ledgerLimits?: ReplayLedgerLimits): Promise<StoredNode>;
  /** Writes one step's batch atomically. */
  persist(batch: readonly StoreWrite[]): Promise<void>;
  logChunks(jobId: string): Promise<StoredLogChunk[]>;
  close(): Promise<void>;
}

const pad = (n: number, width: number) => n.toString().padStart(width, "0");

interface StoredWindow {
  highestSeq: number;
  bitmap: number[];
  latestExpiresAtMs: number;
  touchedSeq: number;
}

/**
 * LevelDB's memory for one store: its block cache (blocks read from table files) and its write buffer (the memtable,
 * written to a table file when it is full). LevelDB's defaults (8 MiB and 4 MiB) suit a master's stream of writes.
 */
export interface StoreMemory {
  readonly cacheBytes: number;
  readonly writeBufferBytes: number;
}

/**
 * A worker-only node's: it reads little of its store after it starts and writes a little per job (its machine, its
 * history, the replay ledger), so its memtable goes to a table file every 256 KiB written instead of growing towards
 * 4 MiB of a lent machine's memory (after 1,000 trivial jobs its malloc heap grew 2 MiB instead of 6).
 */
export const workerStoreMemory: StoreMemory = { cacheBytes: 256 * 1024, writeBufferBytes: 256 * 1024 };

export async function openNodeStore(path: string, memory?: StoreMemory): Promise<NodeStore> {
  const sizes = memory === undefined ? {} : { cacheSize: memory.cacheBytes, writeBufferSize: memory.writeBufferBytes };
  const db = new Level<string, string>(path, { valueEncoding: "utf8", ...sizes });
  await db.open();
  const json = <V>(name: string) => db.sublevel<string, V>(name, { valueEncoding: "json" });
  const meta = json<number>("meta");
  const workerLevel = json<WorkerState>("worker");
  const jobs = json<JobRecord>("jobs");
  const reputation = json<Reputation>("reputation");
  const ledger = json<StoredWindow>("ledger");
  const legacyMachines = json<MasterState | WorkerState>("machines");
  const keysets = db.sublevel<string, Uint8Array>("keysets", { valueEncoding: "view" });
  const logs = db.sublevel<string, Uint8Array>("logs", { valueEncoding: "view" });
  const reporterLevel = json<ReporterState>("reporter");
  const reports = json<ReportRecord>("reports");
  const reportDesks = json<ReportDeskMeta>("reportDesks");
  /** Orders ledger entries by when they were last written, so a restart keeps the most recent signers. */
  let touched = 0;

  const loadLedger = async (limits: ReplayLedgerLimits): Promise<ReplayLedger> => {
    const restored = createReplayLedger(limits);
    const floor = await meta.get("ledgerFloorExpiresAtMs");
    if (floor !== undefined) restored.floorExpiresAtMs = floor;
    const entries: [string, SignerWindow, number][] = [];
    for await (const [key, entry] of ledger.iterator()) {
      const bitmap = new Uint32Array(limits.windowSeqs / 32);
      bitmap.set(entry.bitmap.slice(0, bitmap.length));
      entries.push([
        Buffer.from(key, "hex").toString("latin1"),
        { highestSeq: entry.highestSeq, bitmap, latestExpiresAtMs: entry.latestExpiresAtMs },
        entry.touchedSeq,
      ]);
    }
    // Least recently seen first, as the ledger keeps them; only the newest maxSigners survive.
    entries.sort((a, b) => a[2] - b[2]);
    touched = Math.max(touched, entries[entries.length - 1]?.[2] ?? 0);
    for (const [key, window] of entries.slice(-limits.maxSigners)) restored.signers.set(key, window);
    return restored;
  };

  const loadMasters = async () => {
    const masters = new Map<string, { jobs: JobRecord[]; reputation: Record<string, Reputation> }>();
    const of = (project: string) => {
      let entry = masters.get(project);
      if (entry === undefined) {
        entry = { jobs: [], reputation: {} };
        masters.set(project, entry);
      }
      return entry;
    };
    for await (const [key, record] of jobs.iterator()) of(key.slice(0, key.indexOf("/"))).jobs.push(record);
    for await (const [key, record] of reputation.iterator())
      of(key.slice(0, key.indexOf("/"))).reputation[key.slice(key.indexOf("/") + 1)] = record;
    // A store written whole-state (by an older cimesh) still restarts its masters.
    for await (const [key, state] of legacyMachines.iterator({ gt: "master/", lt: "master/\xff" })) {
      const project = key.slice("master/".length);
      if (masters.has(project)) continue;
      const old = state as MasterState;
      masters.set(project, { jobs: Object.values(old.jobs), reputation: old.reputation });
    }
    return masters;
  };

  const loadDesks = async () => {
    const desks = new Map<string, { records: ReportRecord[]; meta: ReportDeskMeta | null }>();
    const of = (project: string) => {
      let entry = desks.get(project);
      if (entry === undefined) {
        entry = { records: [], meta: null };
        desks.set(project, entry);
      }
      return entry;
    };
    for await (const [key, record] of reports.iterator()) of(key.slice(0, key.indexOf("/"))).records.push(record);
    for await (const [project, meta] of reportDesks.iterator()) of(project).meta = meta;
    return desks;
  };

  return {
    db,
    async load(ledgerLimits = defaultReplayLedgerLimits) {
      const stored = new Map<string, Uint8Array>();
      for await (const [project, bytes] of keysets.iterator()) stored.set(project, new Uint8Array(bytes));
      return {
        worker: (await workerLevel.get("state")) ?? null,
        masters: await loadMasters(),
        ledger: await loadLedger(ledgerLimits),
        keysets: stored,
        seqReservedUpTo: (await meta.get("seqReserved")) ?? 0,
        reporter: (await reporterLevel.get("state")) ?? null,
        desks: await loadDesks(),
      };
    },
    async persist(batch) {
      const ops = db.batch();
      for (const write of batch) {
        switch (write.space) {
          case "worker":
            ops.put("state", write.state, { sublevel: workerLevel });
            break;
          case "job":
            if (write.record === null) ops.del(`${write.project}/${write.jobId}`, { sublevel: jobs });
            else ops.put(`${write.project}/${write.jobId}`, write.record, { sublevel: jobs });
            break;
          case "reputation":
            if (write.record === null) ops.del(`${write.project}/${write.worker}`, { sublevel: reputation });
            else ops.put(`${write.project}/${write.worker}`, write.record, { sublevel: reputation });
            break;
          case "ledger":
            touched++;
            ops.put(
              Buffer.from(write.signer).toString("hex"),
              {
                highestSeq: write.window.highestSeq,
                bitmap: [...write.window.bitmap],
                latestExpiresAtMs: write.window.latestExpiresAtMs,
                touchedSeq: touched,
              },
              { sublevel: ledger },
            );
            if (Number.isFinite(write.floorExpiresAtMs))
              ops.put("ledgerFloorExpiresAtMs", write.floorExpiresAtMs, { sublevel: meta });
            break;
          case "keyset":
            ops.put(write.project, write.bytes, { sublevel: keysets });
            break;
          case "log": {
            const { chunk } = write;
            if (chunk.offset + chunk.data.length > maxStoredLogBytesPerStream) break;
            const key = `${write.jobId}/${pad(chunk.attempt, 6)}/${chunk.stream}/${pad(chunk.offset, 13)}`;
            ops.put(key, chunk.data, { sublevel: logs });
            break;
          }
          case "seq":
            ops.put("seqReserved", write.reservedUpTo, { sublevel: meta });
            break;
          case "reporter":
            ops.put("state", write.state, { sublevel: reporterLevel });
            break;
          case "report":
            if (write.record === null) ops.del(`${write.project}/${write.reportId}`, { sublevel: reports });
            else ops.put(`${write.project}/${write.reportId}`, write.record, { sublevel: reports });
            break;
          case "report-desk":
            ops.put(write.project, write.meta, { sublevel: reportDesks });
            break;
        }
      }
      await ops.write();
    },
    async logChunks(jobId) {
      const chunks: StoredLogChunk[] = [];
      for await (const [key, data] of logs.iterator({ gt: `${jobId}/`, lt: `${jobId}/\xff` })) {
        const [, attempt, stream, offset] = key.split("/");
        chunks.push({
          attempt: Number(attempt),
          stream: stream as "stdout" | "stderr",
          offset: Number(offset),
          data: new Uint8Array(data),
        });
      }
      return chunks;
    },
    async close() {
      await db.close();
    },
  };
}
