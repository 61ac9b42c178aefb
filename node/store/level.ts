/**
 * The node's store: level (LevelDB), one sublevel per concern (DESIGN.md,
 * Store). What a master acknowledged is written before the acknowledgement;
 * a restarted node carries on from here.
 *
 * Machine states are stored whole, as the JSON they already are. The replay
 * ledger is stored per signer, so a message costs one small write. The
 * node-wide signing sequence is reserved in blocks: a restart skips the rest
 * of a block rather than risk reusing a number its peers have seen.
 */
import { Level } from "level";
import {
  createReplayLedger,
  defaultReplayLedgerLimits,
  type ReplayLedger,
  type ReplayLedgerLimits,
  type SignerWindow,
} from "../../crypto/index.ts";
import type { MasterState, WorkerState } from "../../jobs/index.ts";

/** Sequence numbers reserved per store write. */
export const seqBlockSize = 10_000;
/** Log bytes kept per attempt and stream on a master; chunks past it are dropped (and counted). */
export const maxStoredLogBytesPerStream = 16 * 1024 * 1024;

export interface StoredLogChunk {
  readonly attempt: number;
  readonly stream: "stdout" | "stderr";
  readonly offset: number;
  readonly data: Uint8Array;
}

export interface Store {
  readonly db: Level<string, string>;
  /** The next sequence number to sign with; reserves a new block in the store when one runs out. */
  nextSeq(): Promise<number>;
  loadMaster(project: string): Promise<MasterState | undefined>;
  saveMaster(state: MasterState): Promise<void>;
  loadWorker(): Promise<WorkerState | undefined>;
  saveWorker(state: WorkerState): Promise<void>;
  loadLedger(limits?: ReplayLedgerLimits): Promise<ReplayLedger>;
  saveLedgerEntry(signer: Uint8Array, window: SignerWindow, floorExpiresAtMs: number): Promise<void>;
  saveKeyset(project: string, bytes: Uint8Array): Promise<void>;
  loadKeyset(project: string): Promise<Uint8Array | undefined>;
  /** Appends a log chunk by offset: the same chunk twice is stored once. */
  putLogChunk(jobId: string, chunk: StoredLogChunk): Promise<void>;
  logChunks(jobId: string): Promise<StoredLogChunk[]>;
  close(): Promise<void>;
}

const pad = (n: number, width: number) => n.toString().padStart(width, "0");

export async function openStore(path: string): Promise<Store> {
  const db = new Level<string, string>(path, { valueEncoding: "utf8" });
  await db.open();
  const json = (name: string) => db.sublevel<string, unknown>(name, { valueEncoding: "json" });
  const meta = json("meta");
  const machines = json("machines");
  const ledger = json("ledger");
  const keysets = db.sublevel<string, Uint8Array>("keysets", { valueEncoding: "view" });
  const logs = db.sublevel<string, Uint8Array>("logs", { valueEncoding: "view" });

  /** Orders ledger entries by when they were last written, so a restart keeps the most recent signers. */
  let touched = 0;
  let seqNext = 0;
  let seqLimit = 0;
  let reserving: Promise<void> | null = null;
  const reserve = async () => {
    const start = ((await meta.get("seqReserved")) as number | undefined) ?? 0;
    await meta.put("seqReserved", start + seqBlockSize);
    seqNext = start;
    seqLimit = start + seqBlockSize;
  };

  return {
    db,
    async nextSeq() {
      while (seqNext >= seqLimit) {
        reserving ??= reserve().finally(() => {
          reserving = null;
        });
        await reserving;
      }
      return seqNext++;
    },
    async loadMaster(project) {
      return (await machines.get(`master/${project}`)) as MasterState | undefined;
    },
    async saveMaster(state) {
      await machines.put(`master/${state.config.project}`, state);
    },
    async loadWorker() {
      return (await machines.get("worker")) as WorkerState | undefined;
    },
    async saveWorker(state) {
      await machines.put("worker", state);
    },
    async loadLedger(limits = defaultReplayLedgerLimits) {
      const restored = createReplayLedger(limits);
      const floor = (await meta.get("ledgerFloorExpiresAtMs")) as number | undefined;
      if (floor !== undefined) restored.floorExpiresAtMs = floor;
      const entries: [string, SignerWindow, number][] = [];
      for await (const [key, value] of ledger.iterator()) {
        const entry = value as { highestSeq: number; bitmap: number[]; latestExpiresAtMs: number; touchedSeq: number };
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
    },
    async saveLedgerEntry(signer, window, floorExpiresAtMs) {
      touched++;
      const batch = ledger.batch();
      batch.put(Buffer.from(signer).toString("hex"), {
        highestSeq: window.highestSeq,
        bitmap: [...window.bitmap],
        latestExpiresAtMs: window.latestExpiresAtMs,
        touchedSeq: touched,
      });
      await batch.write();
      if (Number.isFinite(floorExpiresAtMs)) await meta.put("ledgerFloorExpiresAtMs", floorExpiresAtMs);
    },
    async saveKeyset(project, bytes) {
      await keysets.put(project, bytes);
    },
    async loadKeyset(project) {
      const bytes = await keysets.get(project);
      return bytes === undefined ? undefined : new Uint8Array(bytes);
    },
    async putLogChunk(jobId, chunk) {
      if (chunk.offset + chunk.data.length > maxStoredLogBytesPerStream) return;
      await logs.put(`${jobId}/${pad(chunk.attempt, 6)}/${chunk.stream}/${pad(chunk.offset, 13)}`, chunk.data);
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
