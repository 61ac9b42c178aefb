/**
 * The shell core: the one driver that runs a node's machines (one worker, one
 * master per project it announces for), written once for the real node and
 * the simulator. It owns what both shells would otherwise each write: the
 * serial queue, admission of every inbound message (jobs/admission.ts), the
 * step, persistence before effects, wake-ups, the one signing sequence of
 * the node's key, restarts, and carrying effects out. It does no I/O and
 * reads no clock or randomness of its own: everything outside goes through
 * DriverPorts, which node/ implements with libp2p, level and bubblewrap, and
 * sim/ with its network model, an in-memory store and the virtual clock.
 *
 * House rules:
 * - One queue per node: inputs are stepped one at a time, in arrival order.
 *   When every port answers at once (the simulator), a step runs to its end
 *   inside the call that caused it; when persistence is a promise (level),
 *   the queue waits for it.
 * - Persist before effects: a step's writes (what changed of the machines,
 *   log chunks, ledger windows, keysets, sequence reservations) go to the
 *   store as one batch before any message of the step leaves, so a crash
 *   never leaves peers knowing more than the store.
 * - Sequence numbers: the node's key signs for all its machines, so one
 *   sequence stamps every message, reserved in blocks in the store and never
 *   below the clock's floor (sequenceFloorAt), so a node that lost its store
 *   is not refused as a replayer by its peers' ledgers.
 * - A restart is an input to each machine ("restart"); what survives it is
 *   what the machines persisted, nothing a shell chose.
 */
import { announcersOf, type ProjectTrust, type ReplayLedger, type SignerWindow } from "../crypto/index.ts";
import { type Admission, admit, type Channel, type Delivery, type Opened } from "./admission.ts";
import type { Effect, ExecutionRequest, LogChunkRecord, OutboundMessage, Rng } from "./effects.ts";
import {
  createMaster,
  type JobRecord,
  type MasterConfig,
  type MasterInput,
  type MasterState,
  type Reputation,
  restoreMaster,
  stepMaster,
} from "./master.ts";
import {
  createReportDesk,
  createReporter,
  type ReportDeskConfig,
  type ReportDeskInput,
  type ReportDeskMeta,
  type ReportDeskState,
  type ReporterInput,
  type ReporterState,
  type ReportRecord,
  reportDeskMeta,
  restoreReportDesk,
  stepReportDesk,
  stepReporter,
} from "./reports.ts";
import { topicRoute } from "./routing.ts";
import { type ExecutionReport, logChunkOf, stepWorker, type WorkerInput, type WorkerState } from "./worker.ts";

/** Sequence numbers reserved per store write. */
export const seqBlockSize = 10_000;
/** Sequence numbers the clock allows per millisecond: a node that lost its store starts at nowMs times this. */
export const seqPerMs = 1_000;

/** The lowest sequence number a node may sign with at nowMs, whatever its store says (see the house rules). */
export function sequenceFloorAt(nowMs: number): number {
  return Math.max(0, Math.floor(nowMs)) * seqPerMs;
}

/** A message stamped with its sequence number, ready to seal. */
export type StampedMessage = { readonly domain: OutboundMessage["domain"]; readonly body: Record<string, unknown> };

/** One write of a step's batch. */
export type StoreWrite =
  | { readonly space: "worker"; readonly state: WorkerState }
  | { readonly space: "job"; readonly project: string; readonly jobId: string; readonly record: JobRecord | null }
  | {
      readonly space: "reputation";
      readonly project: string;
      readonly worker: string;
      readonly record: Reputation | null;
    }
  | { readonly space: "log"; readonly jobId: string; readonly chunk: LogChunkRecord }
  | {
      readonly space: "ledger";
      readonly signer: Uint8Array;
      /** The signer's key as the ledger keeps it (latin1 text of its bytes). */
      readonly key: string;
      readonly window: SignerWindow;
      readonly floorExpiresAtMs: number;
    }
  | { readonly space: "keyset"; readonly project: string; readonly bytes: Uint8Array }
  | { readonly space: "seq"; readonly reservedUpTo: number }
  | { readonly space: "reporter"; readonly state: ReporterState }
  | {
      readonly space: "report";
      readonly project: string;
      readonly reportId: string;
      readonly record: ReportRecord | null;
    }
  | { readonly space: "report-desk"; readonly project: string; readonly meta: ReportDeskMeta };

/** What a node's store held when it started: the machines' persisted records, its ledger, keysets and sequence. */
export interface StoredNode {
  readonly worker: WorkerState | null;
  readonly masters: ReadonlyMap<
    string,
    { readonly jobs: readonly JobRecord[]; readonly reputation: Readonly<Record<string, Reputation>> }
  >;
  readonly ledger: ReplayLedger;
  readonly keysets: ReadonlyMap<string, Uint8Array>;
  readonly seqReservedUpTo: number;
  /** The reporter's outbox and answers (jobs/reports.ts); absent or null: none yet. */
  readonly reporter?: ReporterState | null;
  /** Each report desk's records and meta, by project; absent: none yet. */
  readonly desks?: ReadonlyMap<
    string,
    { readonly records: readonly ReportRecord[]; readonly meta: ReportDeskMeta | null }
  >;
}

export type LogFields = Readonly<Record<string, string | number | boolean | null>>;

/** What the driver needs of the world. W is the shell's sealed message (bytes in a node). */
export interface DriverPorts<W> {
  nowMs(): number;
  readonly rng: Rng;
  /** Signs a stamped message with the node's key. */
  seal(message: StampedMessage): W;
  /** Opens what arrived (crypto/): the verified message, a keyset, or why it is unreadable. */
  open(wire: W, nowMs: number): Opened;
  publish(topic: string, wire: W, message: StampedMessage): void;
  send(to: string, wire: W, message: StampedMessage): void;
  /** Asks for driver.wake() at atMs (not before), replacing the wake-up asked before. */
  wakeAt(atMs: number): void;
  /** Starts a run; its output comes back through driver.runOutput, its end through driver.runFinished. */
  startRun(run: ExecutionRequest, master: string): void;
  killRun(runId: string, reason: string): void;
  /** Writes one batch atomically; the step's effects wait for it. */
  persist(batch: readonly StoreWrite[]): void | Promise<void>;
  log(event: string, fields: LogFields): void;
  /** Bytes of a tree this node already holds, which a bid reports. Absent: none. */
  inputsHeld?(root: string): number | Promise<number>;
  /** Finds capability specs and runs their self-checks, then hands the claims back through driver.toWorker. Absent: specs are never checked. */
  checkSpecs?(project: string, uuids: readonly string[]): void;
  /** Told of every admission, for logs and metrics. */
  admitted?(channel: Channel, admission: Admission, wire: W): void;
}

export interface DriverOptions<W> {
  /** The node's key, hex. */
  readonly self: string;
  readonly ports: DriverPorts<W>;
  /** Pinned projects' trust (anchors); keysets from the store are accepted into it. */
  readonly trust: ReadonlyMap<string, ProjectTrust>;
  /** One config per project this node is master of. */
  readonly masters: readonly (Partial<MasterConfig> & { project: string })[];
  /** A fresh worker built from today's config, or null: the stored worker keeps its state under this config. */
  readonly worker: WorkerState | null;
  readonly stored: StoredNode;
  /** The report policy and limits of each project this node is master of; a master project not named has the defaults. */
  readonly reportDesks?: readonly (Partial<ReportDeskConfig> & { project: string })[];
}

/** The wake-up key of the reporter: no project id (hex) can be it, and the worker's is "". */
const reporterRole = "reporter:";

type Task = () => void | Promise<void>;
type Done = (error?: unknown) => void;

function isPromise<T>(value: T | Promise<T>): value is Promise<T> {
  return typeof (value as { then?: unknown } | null)?.then === "function";
}

export class NodeDriver<W> {
  readonly self: string;
  private readonly ports: DriverPorts<W>;
  private readonly trustByProject: Map<string, ProjectTrust>;
  private ledger: ReplayLedger;
  private readonly masters = new Map<string, MasterState>();
  private worker: WorkerState | null;
  private readonly desks = new Map<string, ReportDeskState>();
  private reporter: ReporterState;
  private readonly wakeUps = new Map<string, number>();
  private askedWakeAtMs: number | null = null;
  private seqNext: number;
  private seqReservedUpTo: number;
  private pendingWrites: StoreWrite[] = [];
  private readonly queue: { task: Task; done?: Done }[] = [];
  private draining = false;
  private idleWaiters: (() => void)[] = [];
  private stopped = false;
  /** Set by start(): machine inputs (the masters of a project) wait for the restart input that wakes them. */
  private started = false;

  constructor(options: DriverOptions<W>) {
    this.self = options.self;
    this.ports = options.ports;
    const { stored } = options;
    this.ledger = stored.ledger;
    this.trustByProject = new Map(options.trust);
    for (const [project, bytes] of stored.keysets) this.receiveKeysetRecord(project, bytes, false);
    for (const config of options.masters) {
      const saved = stored.masters.get(config.project);
      this.masters.set(
        config.project,
        saved === undefined ? createMaster(config) : restoreMaster(config, saved.jobs, saved.reputation),
      );
    }
    for (const project of this.masters.keys()) {
      const config = options.reportDesks?.find((desk) => desk.project === project) ?? { project };
      const saved = stored.desks?.get(project);
      this.desks.set(
        project,
        saved === undefined ? createReportDesk(config) : restoreReportDesk(config, saved.records, saved.meta),
      );
    }
    // The stored outbox carries on under today's defaults.
    const reporter = createReporter(options.self);
    this.reporter = stored.reporter == null ? reporter : { ...stored.reporter, config: reporter.config };
    const fresh = options.worker;
    // The stored worker carries on (availability, usage, outbox) under today's config.
    this.worker = fresh === null ? null : stored.worker === null ? fresh : { ...stored.worker, config: fresh.config };
    this.seqNext = Math.max(stored.seqReservedUpTo, sequenceFloorAt(this.ports.nowMs()));
    this.seqReservedUpTo = this.seqNext;
  }

  // ---- what the shell asks ----

  /** Wakes every machine as after a restart (the first start is one): they ask for their wake-ups again. */
  start(): void {
    this.started = true;
    for (const project of this.masters.keys()) this.toMaster(project, { kind: "restart" });
    if (this.worker !== null) this.toWorker({ kind: "restart" });
    this.toReporter({ kind: "restart" });
    for (const project of this.trustByProject.keys()) this.tellMasters(project);
  }

  /** Tells the worker who the project's masters are now (its keyset's announcers): where its offers go. */
  private tellMasters(project: string): void {
    const trust = this.trustByProject.get(project);
    if (trust === undefined) return;
    const masters = announcersOf(trust, this.ports.nowMs());
    if (this.worker !== null) this.toWorker({ kind: "masters", project, masters });
    this.toReporter({ kind: "masters", project, masters });
  }

  /** An inbound message: admitted at once (the verdict is the gossip validator's answer), stepped in turn. */
  receive(channel: Channel, wire: W): Admission {
    const nowMs = this.ports.nowMs();
    const admission = admit(channel, this.ports.open(wire, nowMs), this.admissionContext(), nowMs);
    this.ledger = admission.ledger;
    const entry = admission.ledgerEntry;
    if (entry !== null)
      this.pendingWrites.push({ space: "ledger", ...entry, floorExpiresAtMs: this.ledger.floorExpiresAtMs });
    if (admission.keyset !== null) {
      this.trustByProject.set(admission.keyset.project, admission.keyset.trust);
      this.pendingWrites.push({ space: "keyset", project: admission.keyset.project, bytes: admission.keyset.bytes });
      if (this.started) this.tellMasters(admission.keyset.project);
    }
    this.ports.admitted?.(channel, admission, wire);
    for (const delivery of admission.deliveries) this.deliver(delivery);
    if (admission.deliveries.length === 0 && this.pendingWrites.length > 0) this.enqueue(() => this.commit([]));
    return admission;
  }

  toMaster(project: string, input: MasterInput, done?: Done): void {
    this.enqueue(() => this.stepMasterNow(project, input), done);
  }

  toWorker(input: WorkerInput, done?: Done): void {
    this.enqueue(() => this.stepWorkerNow(input), done);
  }

  toReporter(input: ReporterInput, done?: Done): void {
    this.enqueue(() => this.stepReporterNow(input), done);
  }

  toDesk(project: string, input: ReportDeskInput, done?: Done): void {
    this.enqueue(() => this.stepDeskNow(project, input), done);
  }

  /** Output of a running job: sent to the run's master as log chunks, built by jobs/worker.ts. */
  runOutput(runId: string, chunk: { stream: "stdout" | "stderr"; offset: number; data: Uint8Array }): void {
    this.enqueue(() => {
      if (this.worker === null) return;
      const built = logChunkOf(this.worker, runId, chunk, this.ports.nowMs());
      if (built === null) return;
      return this.commit([{ type: "send", to: built.to, message: built.message }]);
    });
  }

  runFinished(report: ExecutionReport, done?: Done): void {
    this.toWorker({ kind: "execution-finished", report }, done);
  }

  /** A wake-up came: ticks every machine whose time has come, then asks for the next wake-up if it changed. */
  wake(): void {
    const nowMs = this.ports.nowMs();
    // The wake-up asked for has come; one asked for earlier and since replaced changes nothing.
    if (this.askedWakeAtMs !== null && nowMs >= this.askedWakeAtMs) this.askedWakeAtMs = null;
    for (const [role, atMs] of [...this.wakeUps]) {
      if (atMs > nowMs) continue;
      this.wakeUps.delete(role);
      if (role === "") this.toWorker({ kind: "tick" });
      else if (role === reporterRole) this.toReporter({ kind: "tick" });
      else this.toMaster(role, { kind: "tick" });
    }
    this.askWakeUp();
  }

  /** A keyset found in the DHT under a project: admitted as one on the project's topic would be. */
  receiveKeysetRecord(project: string, bytes: Uint8Array, persist = true): Admission {
    const nowMs = this.ports.nowMs();
    const admission = admit({ kind: "record", project }, { kind: "keyset", bytes }, this.admissionContext(), nowMs);
    if (admission.keyset !== null) {
      this.trustByProject.set(project, admission.keyset.trust);
      if (this.started) this.tellMasters(project);
      if (persist) {
        this.pendingWrites.push({ space: "keyset", project, bytes });
        this.enqueue(() => this.commit([]));
      }
    }
    return admission;
  }

  /** Resolves once everything queued so far has been stepped and carried out. */
  idle(): Promise<void> {
    if (!this.draining && this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * Takes nothing new and drops what is queued but not begun, so a flooded node stops in the time of one step: inbound
   * messages are sent again by the protocol (retries, re-announcements, leases), a run's report is lost like the run
   * of a node killed (the restart input refuses it and its master awards it again), and a caller waiting on a dropped
   * input is told the node is stopping. Resolves once the task under way has persisted and carried out its effects.
   */
  stop(): Promise<void> {
    this.stopped = true;
    for (const dropped of this.queue.splice(0)) dropped.done?.(new Error("the node is stopping"));
    return this.idle();
  }

  // ---- what the shell may read ----

  masterState(project: string): MasterState | undefined {
    return this.masters.get(project);
  }

  masterProjects(): string[] {
    return [...this.masters.keys()];
  }

  workerState(): WorkerState | null {
    return this.worker;
  }

  reporterState(): ReporterState {
    return this.reporter;
  }

  reportDesk(project: string): ReportDeskState | undefined {
    return this.desks.get(project);
  }

  trust(): ReadonlyMap<string, ProjectTrust> {
    return this.trustByProject;
  }

  // ---- the queue ----

  private enqueue(task: Task, done?: Done): void {
    if (this.stopped) {
      done?.(new Error("the node is stopping"));
      return;
    }
    this.queue.push({ task, done });
    if (!this.draining) void this.drain();
  }

  /** Runs queued tasks in order; synchronously while they are synchronous, then after each promise they return. */
  private drain(): void | Promise<void> {
    this.draining = true;
    for (;;) {
      const next = this.queue.shift();
      if (next === undefined) break;
      let outcome: void | Promise<void>;
      try {
        outcome = next.task();
      } catch (error) {
        this.failed(next.done, error);
        continue;
      }
      if (isPromise(outcome))
        return outcome.then(
          () => {
            next.done?.();
            return this.drain();
          },
          (error: unknown) => {
            this.failed(next.done, error);
            return this.drain();
          },
        );
      next.done?.();
    }
    this.draining = false;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const resolve of waiters) resolve();
  }

  private failed(done: Done | undefined, error: unknown): void {
    if (done !== undefined) done(error);
    else this.ports.log("step-failed", { error: String(error) });
  }

  // ---- steps ----

  private admissionContext() {
    return {
      trust: this.trustByProject,
      ledger: this.ledger,
      isMasterOf: (project: string) => this.masters.has(project),
      hasWorker: this.worker !== null,
    };
  }

  private deliver(delivery: Delivery): void {
    switch (delivery.machine) {
      case "master":
        this.toMaster(delivery.project, delivery.input);
        break;
      case "worker":
        this.toWorker(delivery.input);
        break;
      case "desk":
        this.toDesk(delivery.project, delivery.input);
        break;
      case "reporter":
        this.toReporter(delivery.input);
        break;
    }
  }

  private stepMasterNow(project: string, input: MasterInput): void | Promise<void> {
    const state = this.masters.get(project);
    if (state === undefined) return;
    const out = stepMaster(state, input, this.ports.nowMs(), this.ports.rng);
    this.masters.set(project, out.state);
    const writes: StoreWrite[] = [];
    for (const jobId of out.changes.jobs)
      writes.push({ space: "job", project, jobId, record: out.state.jobs[jobId] ?? null });
    for (const jobId of out.changes.removedJobs) writes.push({ space: "job", project, jobId, record: null });
    for (const worker of out.changes.reputations) {
      const record = out.state.reputation[worker];
      if (record !== undefined) writes.push({ space: "reputation", project, worker, record });
    }
    for (const worker of out.changes.removedReputations)
      writes.push({ space: "reputation", project, worker, record: null });
    return this.commit(out.effects, writes, project);
  }

  private stepReporterNow(input: ReporterInput): void | Promise<void> {
    const out = stepReporter(this.reporter, input, this.ports.nowMs(), this.ports.rng);
    this.reporter = out.state;
    return this.commit(out.effects, [{ space: "reporter", state: out.state }], reporterRole);
  }

  private stepDeskNow(project: string, input: ReportDeskInput): void | Promise<void> {
    const desk = this.desks.get(project);
    if (desk === undefined) return;
    const out = stepReportDesk(desk, input, this.ports.nowMs(), this.ports.rng);
    const writes: StoreWrite[] = [];
    for (const reportId of out.changes.recorded)
      writes.push({ space: "report", project, reportId, record: out.state.records[reportId] ?? null });
    for (const reportId of out.changes.forgotten) writes.push({ space: "report", project, reportId, record: null });
    if (out.changes.meta) writes.push({ space: "report-desk", project, meta: reportDeskMeta(out.state) });
    return this.commit(out.effects, writes, project);
  }

  private stepWorkerNow(input: WorkerInput): void | Promise<void> {
    if (this.worker === null) return;
    const root = input.kind === "announcement" ? input.announcement.job.inputsDigest : null;
    const held = root === null || this.ports.inputsHeld === undefined ? 0 : this.ports.inputsHeld(root);
    if (isPromise(held)) return held.then((bytes) => this.stepWorkerWith(input, bytes));
    return this.stepWorkerWith(input, held);
  }

  private stepWorkerWith(input: WorkerInput, cachedInputBytes: number): void | Promise<void> {
    const state = this.worker;
    if (state === null) return;
    const fed = input.kind === "announcement" && cachedInputBytes > 0 ? { ...input, cachedInputBytes } : input;
    const out = stepWorker(state, fed, this.ports.nowMs(), this.ports.rng);
    this.worker = out.state;
    return this.commit(out.effects, [{ space: "worker", state: out.state }], "");
  }

  /**
   * Persists a step's writes (with whatever admission left pending, its log chunks and any sequence reservation its
   * messages need), then carries its effects out. `role` names the machine whose wake-ups the effects set.
   */
  private commit(effects: readonly Effect[], writes: StoreWrite[] = [], role?: string): void | Promise<void> {
    const batch = this.pendingWrites.length > 0 ? [...this.pendingWrites, ...writes] : writes;
    this.pendingWrites = [];
    let messages = 0;
    for (const effect of effects) {
      if (effect.type === "publish" || effect.type === "send") messages++;
      else if (effect.type === "store-log") batch.push({ space: "log", jobId: effect.jobId, chunk: effect.chunk });
    }
    if (this.seqNext + messages > this.seqReservedUpTo) {
      this.seqReservedUpTo = this.seqNext + Math.max(messages, seqBlockSize);
      batch.push({ space: "seq", reservedUpTo: this.seqReservedUpTo });
    }
    const persisted = batch.length === 0 ? undefined : this.ports.persist(batch);
    if (isPromise(persisted)) return persisted.then(() => this.carryOut(effects, role));
    this.carryOut(effects, role);
  }

  private stamp(message: OutboundMessage): StampedMessage {
    return { domain: message.domain, body: { ...message.body, seq: this.seqNext++ } };
  }

  private carryOut(effects: readonly Effect[], role: string | undefined): void {
    for (const effect of effects) {
      switch (effect.type) {
        case "publish": {
          const stamped = this.stamp(effect.message);
          const wire = this.ports.seal(stamped);
          this.ports.publish(effect.topic, wire, stamped);
          // gossipsub does not hand a node its own messages: a machine here that takes them hears them through the door.
          if (topicRoute(effect.message.domain) !== null && this.worker !== null)
            this.receive({ kind: "topic", topic: effect.topic }, wire);
          break;
        }
        case "send": {
          const stamped = this.stamp(effect.message);
          const wire = this.ports.seal(stamped);
          // A node's master and worker talk through the same door as everyone else.
          // (Its signer cannot tell which of them a lease renewal is for: the sending machine says.)
          if (effect.to === this.self)
            this.receive(
              { kind: "direct", peer: this.self, to: role === undefined || role === "" ? "master" : "worker" },
              wire,
            );
          else this.ports.send(effect.to, wire, stamped);
          break;
        }
        case "set-timer":
          if (role !== undefined) {
            this.wakeUps.set(role, effect.atMs);
            this.askWakeUp();
          }
          break;
        case "start-execution": {
          const master = this.worker?.running[effect.run.runId]?.master;
          if (master !== undefined) this.ports.startRun(effect.run, master);
          break;
        }
        case "kill-execution":
          this.ports.killRun(effect.runId, effect.reason);
          break;
        case "check-specs":
          this.ports.checkSpecs?.(effect.project, effect.uuids);
          break;
        case "store-log":
          break;
        case "log":
          this.ports.log(effect.event, effect.fields);
          break;
      }
    }
  }

  private askWakeUp(): void {
    if (this.stopped) return;
    let earliest = Number.POSITIVE_INFINITY;
    for (const atMs of this.wakeUps.values()) earliest = Math.min(earliest, atMs);
    if (!Number.isFinite(earliest) || earliest === this.askedWakeAtMs) return;
    this.askedWakeAtMs = earliest;
    this.ports.wakeAt(earliest);
  }
}
