/**
 * A simulated node's store: what the shell core persisted (jobs/driver.ts
 * StoreWrite), kept in memory. A crash between events loses nothing written
 * (each step persists before its effects, and a step never spans two events);
 * a crash that "loses the store" throws this object away. A restarted node is
 * rebuilt from load(), exactly as a real node is from level.
 *
 * Records are kept by reference: the machines update their state in place and
 * persist what they changed after every step, so the record held here is the
 * last one written.
 */
import { createReplayLedger, type SignerWindow } from "../crypto/index.ts";
import type {
  JobRecord,
  ReportDeskMeta,
  ReporterState,
  ReportRecord,
  Reputation,
  StoredNode,
  StoreWrite,
  WorkerState,
} from "../jobs/index.ts";

export class SimStore {
  private worker: WorkerState | null = null;
  private readonly jobs = new Map<string, Map<string, JobRecord>>();
  private readonly reputations = new Map<string, Record<string, Reputation>>();
  /** Signer (latin1 key) → window, least recently written first, as the ledger orders them. */
  private readonly ledgerWindows = new Map<string, SignerWindow>();
  private floorExpiresAtMs = Number.NEGATIVE_INFINITY;
  private readonly keysets = new Map<string, Uint8Array>();
  private seqReservedUpTo = 0;
  private reporter: ReporterState | null = null;
  /** Each report desk's records by id, and its meta, by project. */
  private readonly desks = new Map<string, { records: Map<string, ReportRecord>; meta: ReportDeskMeta | null }>();
  /** Log bytes the masters stored, for the figures. */
  logBytes = 0;

  persist(batch: readonly StoreWrite[]): void {
    for (const write of batch) {
      switch (write.space) {
        case "worker":
          this.worker = write.state;
          break;
        case "job": {
          let jobs = this.jobs.get(write.project);
          if (jobs === undefined) {
            jobs = new Map();
            this.jobs.set(write.project, jobs);
          }
          if (write.record === null) jobs.delete(write.jobId);
          else jobs.set(write.jobId, write.record);
          break;
        }
        case "reputation": {
          let records = this.reputations.get(write.project);
          if (records === undefined) {
            records = {};
            this.reputations.set(write.project, records);
          }
          if (write.record === null) delete records[write.worker];
          else records[write.worker] = write.record;
          break;
        }
        case "ledger": {
          this.ledgerWindows.delete(write.key);
          this.ledgerWindows.set(write.key, write.window);
          this.floorExpiresAtMs = write.floorExpiresAtMs;
          break;
        }
        case "keyset":
          this.keysets.set(write.project, write.bytes);
          break;
        case "log":
          this.logBytes += write.chunk.data.length;
          break;
        case "seq":
          this.seqReservedUpTo = write.reservedUpTo;
          break;
        case "reporter":
          this.reporter = write.state;
          break;
        case "report": {
          const desk = this.deskOf(write.project);
          if (write.record === null) desk.records.delete(write.reportId);
          else desk.records.set(write.reportId, write.record);
          break;
        }
        case "report-desk":
          this.deskOf(write.project).meta = write.meta;
          break;
      }
    }
  }

  private deskOf(project: string) {
    let desk = this.desks.get(project);
    if (desk === undefined) {
      desk = { records: new Map(), meta: null };
      this.desks.set(project, desk);
    }
    return desk;
  }

  /** The job record last persisted for a project's job, if any. */
  job(project: string, jobId: string): JobRecord | undefined {
    return this.jobs.get(project)?.get(jobId);
  }

  load(): StoredNode {
    const ledger = createReplayLedger();
    ledger.floorExpiresAtMs = this.floorExpiresAtMs;
    for (const [key, window] of [...this.ledgerWindows].slice(-ledger.limits.maxSigners))
      ledger.signers.set(key, window);
    const masters = new Map<string, { jobs: JobRecord[]; reputation: Record<string, Reputation> }>();
    for (const project of new Set([...this.jobs.keys(), ...this.reputations.keys()]))
      masters.set(project, {
        jobs: [...(this.jobs.get(project)?.values() ?? [])],
        reputation: this.reputations.get(project) ?? {},
      });
    return {
      worker: this.worker,
      masters,
      ledger,
      keysets: new Map(this.keysets),
      seqReservedUpTo: this.seqReservedUpTo,
      reporter: this.reporter,
      desks: new Map(
        [...this.desks].map(([project, desk]) => [project, { records: [...desk.records.values()], meta: desk.meta }]),
      ),
    };
  }
}
