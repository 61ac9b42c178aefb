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

type JsonLevel<V> = ReturnType<typeof jsonLevel<V>>;

function jsonLevel<V>(db: Level<string, string>, name: string) {
  return db.sublevel<string, V>(name, { valueEncoding: "json" });
}

/** The store's spaces (LevelDB sublevels), one per kind of record. */
interface StoreSpaces {
  readonly meta: JsonLevel<number>;
  readonly worker: JsonLevel<WorkerState>;
  readonly jobs: JsonLevel<JobRecord>;
  readonly reputation: JsonLevel<Reputation>;
  readonly ledger: JsonLevel<StoredWindow>;
  /** Whole machine states, as an older cimesh wrote them. */
  readonly legacyMachines: JsonLevel<MasterState | WorkerState>;
  readonly keysets: ReturnType<typeof bytesLevel>;
  readonly logs: ReturnType<typeof bytesLevel>;
  readonly reporter: JsonLevel<ReporterState>;
  readonly reports: JsonLevel<ReportRecord>;
  readonly reportDesks: JsonLevel<ReportDeskMeta>;
}

function bytesLevel(db: Level<string, string>, name: string) {
  return db.sublevel<string, Uint8Array>(name, { valueEncoding: "view" });
}

function spacesOf(db: Level<string, string>): StoreSpaces {
  return {
    meta: jsonLevel<number>(db, "meta"),
    worker: jsonLevel<WorkerState>(db, "worker"),
    jobs: jsonLevel<JobRecord>(db, "jobs"),
    reputation: jsonLevel<Reputation>(db, "reputation"),
    ledger: jsonLevel<StoredWindow>(db, "ledger"),
    legacyMachines: jsonLevel<MasterState | WorkerState>(db, "machines"),
    keysets: bytesLevel(db, "keysets"),
    logs: bytesLevel(db, "logs"),
    reporter: jsonLevel<ReporterState>(db, "reporter"),
    reports: jsonLevel<ReportRecord>(db, "reports"),
    reportDesks: jsonLevel<ReportDeskMeta>(db, "reportDesks"),
  };
}

/** Orders ledger entries by when they were last written, so a restart keeps the most recent signers. */
interface LedgerClock {
  touched: number;
}

async function loadLedger(spaces: StoreSpaces, limits: ReplayLedgerLimits, clock: LedgerClock): Promise<ReplayLedger> {
  const restored = createReplayLedger(limits);
  const floor = await spaces.meta.get("ledgerFloorExpiresAtMs");
  if (floor !== undefined) restored.floorExpiresAtMs = floor;
  const entries: [string, SignerWindow, number][] = [];
  for await (const [key, entry] of spaces.ledger.iterator()) {
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
  clock.touched = Math.max(clock.touched, entries[entries.length - 1]?.[2] ?? 0);
  for (const [key, window] of entries.slice(-limits.maxSigners)) restored.signers.set(key, window);
  return restored;
}

/** The entry of `key` in `map`, made by `make` when missing. */
function entryOf<V>(map: Map<string, V>, key: string, make: () => V): V {
  let entry = map.get(key);
  if (entry === undefined) {
    entry = make();
    map.set(key, entry);
  }
  return entry;
}

async function loadMasters(spaces: StoreSpaces) {
  const masters = new Map<string, { jobs: JobRecord[]; reputation: Record<string, Reputation> }>();
  const of = (project: string) => entryOf(masters, project, () => ({ jobs: [], reputation: {} }));
  for await (const [key, record] of spaces.jobs.iterator()) of(key.slice(0, key.indexOf("/"))).jobs.push(record);
  for await (const [key, record] of spaces.reputation.iterator())
    of(key.slice(0, key.indexOf("/"))).reputation[key.slice(key.indexOf("/") + 1)] = record;
  // A store written whole-state (by an older cimesh) still restarts its masters.
  for await (const [key, state] of spaces.legacyMachines.iterator({ gt: "master/", lt: "master/\xff" })) {
    const project = key.slice("master/".length);
    if (masters.has(project)) continue;
    const old = state as MasterState;
    masters.set(project, { jobs: Object.values(old.jobs), reputation: old.reputation });
  }
  return masters;
}

async function loadDesks(spaces: StoreSpaces) {
  const desks = new Map<string, { records: ReportRecord[]; meta: ReportDeskMeta | null }>();
  const of = (project: string) => entryOf(desks, project, () => ({ records: [], meta: null }));
  for await (const [key, record] of spaces.reports.iterator()) of(key.slice(0, key.indexOf("/"))).records.push(record);
  for await (const [project, meta] of spaces.reportDesks.iterator()) of(project).meta = meta;
  return desks;
}

type Batch = ReturnType<Level<string, string>["batch"]>;
type StoreWriteOf = Parameters<NodeStore["persist"]>[0][number];

/** One write of a step's batch, added to the LevelDB batch. */
function addWrite(ops: Batch, spaces: StoreSpaces, write: StoreWriteOf, clock: LedgerClock): void {
  switch (write.space) {
    case "worker":
      ops.put("state", write.state, { sublevel: spaces.worker });
      break;
    case "job":
      if (write.record === null) ops.del(`${write.project}/${write.jobId}`, { sublevel: spaces.jobs });
      else ops.put(`${write.project}/${write.jobId}`, write.record, { sublevel: spaces.jobs });
      break;
    case "reputation":
      if (write.record === null) ops.del(`${write.project}/${write.worker}`, { sublevel: spaces.reputation });
      else ops.put(`${write.project}/${write.worker}`, write.record, { sublevel: spaces.reputation });
      break;
    case "ledger":
      clock.touched++;
      ops.put(
        Buffer.from(write.signer).toString("hex"),
        {
          highestSeq: write.window.highestSeq,
          bitmap: [...write.window.bitmap],
          latestExpiresAtMs: write.window.latestExpiresAtMs,
          touchedSeq: clock.touched,
        },
        { sublevel: spaces.ledger },
      );
      if (Number.isFinite(write.floorExpiresAtMs))
        ops.put("ledgerFloorExpiresAtMs", write.floorExpiresAtMs, { sublevel: spaces.meta });
      break;
    case "keyset":
      ops.put(write.project, write.bytes, { sublevel: spaces.keysets });
      break;
    case "log": {
      const { chunk } = write;
      if (chunk.offset + chunk.data.length > maxStoredLogBytesPerStream) break;
      const key = `${write.jobId}/${pad(chunk.attempt, 6)}/${chunk.stream}/${pad(chunk.offset, 13)}`;
      ops.put(key, chunk.data, { sublevel: spaces.logs });
      break;
    }
    case "seq":
      ops.put("seqReserved", write.reservedUpTo, { sublevel: spaces.meta });
      break;
    case "reporter":
      ops.put("state", write.state, { sublevel: spaces.reporter });
      break;
    case "report":
      if (write.record === null) ops.del(`${write.project}/${write.reportId}`, { sublevel: spaces.reports });
      else ops.put(`${write.project}/${write.reportId}`, write.record, { sublevel: spaces.reports });
      break;
    case "report-desk":
      ops.put(write.project, write.meta, { sublevel: spaces.reportDesks });
      break;
  }
}

export async function openNodeStore(path: string, memory?: StoreMemory): Promise<NodeStore> {
  const sizes = memory === undefined ? {} : { cacheSize: memory.cacheBytes, writeBufferSize: memory.writeBufferBytes };
  const db = new Level<string, string>(path, { valueEncoding: "utf8", ...sizes });
  await db.open();
  const spaces = spacesOf(db);
  const { logs } = spaces;
  const clock: LedgerClock = { touched: 0 };

  return {
    db,
    async load(ledgerLimits = defaultReplayLedgerLimits) {
      const stored = new Map<string, Uint8Array>();
      for await (const [project, bytes] of spaces.keysets.iterator()) stored.set(project, new Uint8Array(bytes));
      return {
        worker: (await spaces.worker.get("state")) ?? null,
        masters: await loadMasters(spaces),
        ledger: await loadLedger(spaces, ledgerLimits, clock),
        keysets: stored,
        seqReservedUpTo: (await spaces.meta.get("seqReserved")) ?? 0,
        reporter: (await spaces.reporter.get("state")) ?? null,
        desks: await loadDesks(spaces),
      };
    },
    async persist(batch) {
      const ops = db.batch();
      for (const write of batch) addWrite(ops, spaces, write, clock);
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
