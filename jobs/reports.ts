/**
 * Push-only builds (Tinderbox style): a node builds a project's job on its
 * own schedule, in its own sandbox (`cimesh report`, from cron or a
 * `while true` loop), and reports what came of it to the project's masters.
 * Two small machines, no I/O, no clock (DESIGN.md, Rule 1):
 *
 * - The reporter (every node): keeps each report in an outbox, signed anew
 *   and sent to every master of the project at each try, with a backoff,
 *   until one answers (reportAck) or reportDeliveryMs passes. The outbox is
 *   persisted, so a master that is down, or a reporter that restarts, still
 *   gets it through later. Handing the same report id over twice changes
 *   nothing (cron may call again after a timeout).
 * - The report desk (one per project a node is master of): judges each
 *   report with judgeReport, the acceptance decision, and records those it
 *   accepts as builds of their own kind (ReportRecord), apart from the jobs
 *   the master scheduled. Every answer but a replay's goes back to the
 *   reporter as a signed reportAck with its reason.
 *
 * The rules of judgeReport, in the order they are checked:
 * 1. The report names this desk's project (admission routes by project, so
 *    this only guards the machine).
 * 2. The project's policy allows the signer: any volunteer (a node that pins
 *    the project: only it knows the project's masters and signs for it), or
 *    listed keys only.
 * 3. Its times are not in the future beyond the clock skew allowed.
 * 4. Its sequence number is new from its signer, in the desk's own replay
 *    ledger (crypto/ledger.ts): the same signed bytes sent twice are a replay.
 *    The ledger is the desk's, not the node's, so reporters, whom the
 *    "volunteers" policy does not bound in number, can never raise the floor
 *    of the ledger that guards what announcers sign.
 * 5. A report id recorded before from the same reporter is a duplicate (the
 *    reporter sent it again, its acknowledgement was lost): answered as
 *    accepted, recorded once. The same id from another reporter is refused.
 * 6. The rate limits: at most maxReportsPerReporter accepted from one reporter
 *    and maxReportsPerProject from all within rateWindowMs.
 */
import {
  createReplayLedger,
  maxClockSkewMs,
  type ReplayLedger,
  type ReplayLedgerLimits,
  type ReplayLedgerSnapshot,
  recordSeq,
  restoreReplayLedger,
  snapshotReplayLedger,
} from "../crypto/index.ts";
import { keyOf, type Rng, StepContext, type StepOutput, type Unsequenced } from "./effects.ts";
import { maxReportAckLifetimeMs, maxReportLifetimeMs, type Report, type ReportAck } from "./messages.ts";

const minuteMs = 60 * 1000;
const hourMs = 60 * minuteMs;
const dayMs = 24 * hourMs;

// ---------------------------------------------------------------------------
// The desk: the master's side
// ---------------------------------------------------------------------------

/** Who may report builds of a project: any volunteer that pins it, or only the listed keys (hex). */
export type ReportPolicy =
  | { readonly from: "volunteers" }
  | { readonly from: "listed"; readonly keys: readonly string[] };

/** Keys a "listed" policy may name. */
export const maxListedReporters = 1024;
/** Reports a desk keeps; the oldest is forgotten first. */
export const maxReportsKeptLimit = 100_000;

export interface ReportDeskConfig {
  readonly project: string;
  readonly policy: ReportPolicy;
  /** Reports accepted from one reporter within rateWindowMs; more are refused as rate-limited. */
  readonly maxReportsPerReporter: number;
  /** Reports accepted from all reporters within rateWindowMs; more are refused as project-rate-limited. */
  readonly maxReportsPerProject: number;
  readonly rateWindowMs: number;
  /** Recorded reports kept; the oldest is forgotten first. */
  readonly maxReportsKept: number;
}

export const defaultReportDeskConfig: Omit<ReportDeskConfig, "project"> = {
  policy: { from: "volunteers" },
  maxReportsPerReporter: 12,
  maxReportsPerProject: 1000,
  rateWindowMs: hourMs,
  maxReportsKept: 10_000,
};

/**
 * The desk's replay ledger: reports come one by one per reporter (a small window does), and the reporters remembered
 * at once are bounded; forgetting one raises the floor of this ledger only, under reports' one-hour lifetime.
 */
export const reportLedgerLimits: ReplayLedgerLimits = { windowSeqs: 64, maxSigners: 4096 };

/** What a report says, without its signed header: what the desk records and the reporter keeps in its outbox. */
export type ReportFacts = Omit<Report, "seq" | "issuedAtMs" | "expiresAtMs">;

/** A build a reporter made on its own and the desk accepted: a build of its own kind, never a scheduled job. */
export interface ReportRecord {
  readonly reportId: string;
  /** The reporter's key, hex (the signer of the report). */
  readonly reporter: string;
  /** The network prefix of the connection it came on; empty when unknown. */
  readonly prefix: string;
  readonly receivedAtMs: number;
  readonly report: ReportFacts;
}

export interface ReportDeskState {
  readonly config: ReportDeskConfig;
  ledger: ReplayLedger;
  /** Recorded reports by id. */
  records: Record<string, ReportRecord>;
  /** Report ids, oldest first. */
  order: string[];
  /** When each reporter's reports were accepted within the rate window, oldest first. */
  recent: Record<string, number[]>;
}

/** What the desk persists beside its records: the ledger and the rate windows, as plain data. */
export interface ReportDeskMeta {
  readonly ledger: ReplayLedgerSnapshot;
  readonly recent: Readonly<Record<string, readonly number[]>>;
}

export const reportRefusalReasons = [
  "wrong-project",
  "reporter-not-allowed",
  "from-the-future",
  "replay",
  "id-taken",
  "rate-limited",
  "project-rate-limited",
] as const;
export type ReportRefusalReason = (typeof reportRefusalReasons)[number];

/** The acceptance decision: accepted (recorded now), duplicate (recorded before), or refused with its reason. */
export type ReportJudgement =
  | { readonly verdict: "accepted"; readonly reason: "accepted"; readonly detail: string }
  | { readonly verdict: "duplicate"; readonly reason: "duplicate"; readonly detail: string }
  | { readonly verdict: "refused"; readonly reason: ReportRefusalReason; readonly detail: string };

export type ReportDeskInput = {
  readonly kind: "report";
  /** The signer, hex: admission checked it is the peer that sent the report. */
  readonly signer: string;
  readonly prefix: string;
  readonly report: Report;
};

export interface ReportDeskChanges {
  /** Report ids recorded by the step. */
  readonly recorded: readonly string[];
  /** Report ids forgotten by the step (the oldest, past maxReportsKept). */
  readonly forgotten: readonly string[];
  /** Whether the ledger or the rate windows changed. */
  readonly meta: boolean;
}

export interface ReportDeskStepOutput extends StepOutput<ReportDeskState> {
  readonly judgement: ReportJudgement;
  readonly changes: ReportDeskChanges;
}

/** A desk's config checked field by field: the error names the field and what was expected. */
export function checkedReportDeskConfig(config: Partial<ReportDeskConfig> & { project: string }): ReportDeskConfig {
  const full: ReportDeskConfig = { ...defaultReportDeskConfig, ...config };
  const positive = (name: keyof ReportDeskConfig, max: number) => {
    const value = full[name] as number;
    if (!Number.isInteger(value) || value < 1 || value > max)
      throw new RangeError(`reports.${name}: expected an integer from 1 to ${max}, got ${String(value)}`);
  };
  positive("maxReportsPerReporter", maxReportsKeptLimit);
  positive("maxReportsPerProject", maxReportsKeptLimit);
  positive("rateWindowMs", 30 * dayMs);
  positive("maxReportsKept", maxReportsKeptLimit);
  if (full.policy.from === "listed") {
    if (full.policy.keys.length > maxListedReporters)
      throw new RangeError(`reports.from: expected at most ${maxListedReporters} keys, got ${full.policy.keys.length}`);
    for (const [index, key] of full.policy.keys.entries())
      if (!/^[0-9a-f]{64}$/.test(key))
        throw new RangeError(`reports.from[${index}]: expected a public key as 64 hex digits, got ${key}`);
  }
  return full;
}

export function createReportDesk(config: Partial<ReportDeskConfig> & { project: string }): ReportDeskState {
  return {
    config: checkedReportDeskConfig(config),
    ledger: createReplayLedger(reportLedgerLimits),
    records: {},
    order: [],
    recent: {},
  };
}

/** A desk as it was persisted: its records (any order) and its meta (null when it never wrote any). */
export function restoreReportDesk(
  config: Partial<ReportDeskConfig> & { project: string },
  records: readonly ReportRecord[],
  meta: ReportDeskMeta | null,
): ReportDeskState {
  const desk = createReportDesk(config);
  const sorted = [...records].sort((a, b) => a.receivedAtMs - b.receivedAtMs || (a.reportId < b.reportId ? -1 : 1));
  for (const record of sorted.slice(-desk.config.maxReportsKept)) {
    desk.records[record.reportId] = record;
    desk.order.push(record.reportId);
  }
  if (meta !== null) {
    desk.ledger = restoreReplayLedger(meta.ledger);
    for (const [reporter, times] of Object.entries(meta.recent)) desk.recent[reporter] = [...times];
  }
  return desk;
}

export function reportDeskMeta(desk: ReportDeskState): ReportDeskMeta {
  return { ledger: snapshotReplayLedger(desk.ledger), recent: structuredClone(desk.recent) };
}

function refused(reason: ReportRefusalReason, detail: string): ReportJudgement {
  return { verdict: "refused", reason, detail };
}

/** Whether the policy lets this signer (hex) report. */
export function policyAllows(policy: ReportPolicy, signer: string): boolean {
  return policy.from === "volunteers" || policy.keys.includes(signer);
}

/** Drops the rate window's entries older than rateWindowMs; true when any was dropped. */
function pruneRecent(desk: ReportDeskState, nowMs: number): boolean {
  let changed = false;
  const since = nowMs - desk.config.rateWindowMs;
  for (const [reporter, times] of Object.entries(desk.recent)) {
    const kept = times.filter((atMs) => atMs > since);
    if (kept.length === times.length) continue;
    changed = true;
    if (kept.length === 0) delete desk.recent[reporter];
    else desk.recent[reporter] = kept;
  }
  return changed;
}

/**
 * The acceptance decision (the rules at the top of this file). It records the report's sequence number in the desk's
 * ledger once rules 1 to 3 pass (the number was seen, whatever comes next) and changes nothing else: stepReportDesk
 * records what it accepts.
 */
export function judgeReport(desk: ReportDeskState, signer: string, report: Report, nowMs: number): ReportJudgement {
  const { config } = desk;
  if (report.project !== config.project)
    return refused("wrong-project", `project: expected ${config.project}, got ${report.project}`);
  if (!policyAllows(config.policy, signer))
    return refused(
      "reporter-not-allowed",
      `reporter ${signer.slice(0, 16)}…: the project takes reports only from its ${config.policy.from === "listed" ? config.policy.keys.length : 0} listed key(s)`,
    );
  if (report.endedAtMs > nowMs + maxClockSkewMs || report.issuedAtMs > nowMs + maxClockSkewMs)
    return refused("from-the-future", `endedAtMs ${report.endedAtMs}: expected at most now (${nowMs}) and the skew`);
  const replay = recordSeq(desk.ledger, keyOf(signer), report.seq, report.expiresAtMs, nowMs);
  desk.ledger = replay.ledger;
  if (replay.verdict !== "fresh")
    return refused("replay", `seq ${report.seq} of ${signer.slice(0, 16)}…: ${replay.verdict}`);
  const existing = desk.records[report.reportId];
  if (existing !== undefined)
    return existing.reporter === signer
      ? { verdict: "duplicate", reason: "duplicate", detail: `${report.reportId} was recorded before` }
      : refused("id-taken", `reportId ${report.reportId}: expected a new id, another reporter's report has it`);
  pruneRecent(desk, nowMs);
  const mine = desk.recent[signer]?.length ?? 0;
  if (mine >= config.maxReportsPerReporter)
    return refused(
      "rate-limited",
      `reporter ${signer.slice(0, 16)}…: ${mine} reports within ${config.rateWindowMs} ms, at most ${config.maxReportsPerReporter}`,
    );
  let all = 0;
  for (const times of Object.values(desk.recent)) all += times.length;
  if (all >= config.maxReportsPerProject)
    return refused(
      "project-rate-limited",
      `${all} reports within ${config.rateWindowMs} ms from all reporters, at most ${config.maxReportsPerProject}`,
    );
  return { verdict: "accepted", reason: "accepted", detail: "" };
}

/** Refusals decided before the ledger saw the report's number (or that found it seen): nothing of the desk changed. */
const unledgered: ReadonlySet<string> = new Set(["wrong-project", "reporter-not-allowed", "from-the-future", "replay"]);

/** Only the facts of a report: what is recorded and shown, without the header of the try that carried it. */
export function factsOf(report: Report | Unsequenced<Report>): ReportFacts {
  const { issuedAtMs: _issued, expiresAtMs: _expires, ...rest } = report as Report;
  const { seq: _seq, ...facts } = rest as Report;
  return facts;
}

/** The desk's transition: judges the report, records it when accepted, and answers the reporter. */
export function stepReportDesk(
  desk: ReportDeskState,
  input: ReportDeskInput,
  nowMs: number,
  rng: Rng,
): ReportDeskStepOutput {
  const step = new StepContext(desk, nowMs, rng);
  const { signer, report } = input;
  const judgement = judgeReport(desk, signer, report, nowMs);
  const recorded: string[] = [];
  const forgotten: string[] = [];
  // The ledger took the report's number once the rules before it passed: it is written with the rate windows.
  const meta = !unledgered.has(judgement.reason);
  if (judgement.verdict === "accepted") {
    desk.records[report.reportId] = {
      reportId: report.reportId,
      reporter: signer,
      prefix: input.prefix,
      receivedAtMs: nowMs,
      report: factsOf(report),
    };
    desk.order.push(report.reportId);
    recorded.push(report.reportId);
    const times = desk.recent[signer] ?? [];
    times.push(nowMs);
    desk.recent[signer] = times;
    while (desk.order.length > desk.config.maxReportsKept) {
      const oldest = desk.order.shift() as string;
      delete desk.records[oldest];
      forgotten.push(oldest);
    }
  }
  step.log(judgement.verdict === "refused" ? "report-refused" : `report-${judgement.verdict}`, {
    project: report.project.slice(0, 12),
    reportId: report.reportId,
    reporter: signer,
    reason: judgement.reason,
    ...(judgement.detail === "" ? {} : { detail: judgement.detail }),
  });
  // A replay is the same signed bytes again: whoever sent them had this answer already.
  if (judgement.reason !== "replay")
    step.send(signer, {
      domain: "reportAck",
      body: {
        ...step.header(maxReportAckLifetimeMs),
        project: desk.config.project,
        reportId: report.reportId,
        reporter: keyOf(signer),
        verdict: judgement.verdict,
        reason: judgement.verdict === "refused" ? `${judgement.reason}: ${judgement.detail}` : judgement.reason,
      },
    });
  return { state: desk, effects: step.effects, judgement, changes: { recorded, forgotten, meta } };
}

// ---------------------------------------------------------------------------
// The reporter: every node's side
// ---------------------------------------------------------------------------

export interface ReporterConfig {
  /** Reports waiting for an answer at once; a new one past it is refused by queueReport's caller, not dropped. */
  readonly maxOutboxReports: number;
  /** Answers remembered (for `cimesh report` to read); the oldest is forgotten first. */
  readonly maxOutcomesKept: number;
  /** First wait before a report is sent again; doubled per try up to maxRetryWaitMs. */
  readonly retryBaseMs: number;
  readonly maxRetryWaitMs: number;
  /** How long a report is tried before it is given up (a master down for a week). */
  readonly deliveryMs: number;
  /** Lifetime of each signed try: a try is signed anew, so the report may wait in the outbox far longer. */
  readonly tryLifetimeMs: number;
}

export const defaultReporterConfig: ReporterConfig = {
  maxOutboxReports: 64,
  maxOutcomesKept: 256,
  retryBaseMs: 2_000,
  maxRetryWaitMs: 5 * minuteMs,
  deliveryMs: 7 * dayMs,
  tryLifetimeMs: Math.min(10 * minuteMs, maxReportLifetimeMs),
};

/** A report waiting for a master's answer. */
export interface ReporterOutboxEntry {
  readonly facts: ReportFacts;
  readonly queuedAtMs: number;
  nextTryAtMs: number;
  /** Tries sent so far (0: no master of the project was known yet). */
  tries: number;
}

/** How a report's delivery ended: a master's answer, or given up. */
export interface ReportOutcome {
  readonly reportId: string;
  readonly project: string;
  readonly verdict: "accepted" | "duplicate" | "refused" | "undelivered";
  readonly reason: string;
  /** The master that answered, hex; empty when none did. */
  readonly master: string;
  readonly atMs: number;
  readonly tries: number;
}

export interface ReporterState {
  readonly config: ReporterConfig;
  /** This node's key, hex: acknowledgements name it. */
  readonly self: string;
  /** Each pinned project's masters (hex), as the shell core reads them from the project's keyset. */
  masters: Record<string, string[]>;
  outbox: Record<string, ReporterOutboxEntry>;
  outcomes: Record<string, ReportOutcome>;
  /** Outcome ids, oldest first. */
  outcomeOrder: string[];
  timerAtMs: number | null;
}

export type ReporterInput =
  /** A build to report (`cimesh report`): kept and sent until a master answers. The same id again changes nothing. */
  | { readonly kind: "queue"; readonly facts: ReportFacts }
  | { readonly kind: "ack"; readonly signer: string; readonly ack: ReportAck }
  | { readonly kind: "masters"; readonly project: string; readonly masters: readonly string[] }
  | { readonly kind: "restart" }
  | { readonly kind: "tick" };

export function createReporter(self: string, config: Partial<ReporterConfig> = {}): ReporterState {
  return {
    config: { ...defaultReporterConfig, ...config },
    self,
    masters: {},
    outbox: {},
    outcomes: {},
    outcomeOrder: [],
    timerAtMs: null,
  };
}

/** Where a report stands on the reporter: waiting (with its tries), answered, or unknown here. */
export type ReportDelivery =
  | { readonly state: "waiting"; readonly tries: number; readonly queuedAtMs: number; readonly nextTryAtMs: number }
  | ({ readonly state: "done" } & ReportOutcome)
  | { readonly state: "unknown" };

export function reportDelivery(state: ReporterState, reportId: string): ReportDelivery {
  const entry = state.outbox[reportId];
  if (entry !== undefined)
    return { state: "waiting", tries: entry.tries, queuedAtMs: entry.queuedAtMs, nextTryAtMs: entry.nextTryAtMs };
  const outcome = state.outcomes[reportId];
  return outcome === undefined ? { state: "unknown" } : { state: "done", ...outcome };
}

/** Whether the outbox has room for one more report (the caller refuses the build's report otherwise). */
export function reporterHasRoom(state: ReporterState): boolean {
  return Object.keys(state.outbox).length < state.config.maxOutboxReports;
}

type ReporterStep = StepContext<ReporterState>;

function sendTry(step: ReporterStep, entry: ReporterOutboxEntry): void {
  const { state, nowMs } = step;
  const masters = state.masters[entry.facts.project] ?? [];
  if (masters.length === 0) return;
  entry.tries++;
  const waitMs = Math.min(state.config.retryBaseMs * 2 ** (entry.tries - 1), state.config.maxRetryWaitMs);
  entry.nextTryAtMs = nowMs + waitMs;
  const body: Unsequenced<Report> = { ...step.header(state.config.tryLifetimeMs), ...entry.facts };
  for (const master of masters) step.send(master, { domain: "report", body });
}

function remember(state: ReporterState, outcome: ReportOutcome): void {
  state.outcomes[outcome.reportId] = outcome;
  state.outcomeOrder.push(outcome.reportId);
  while (state.outcomeOrder.length > state.config.maxOutcomesKept) {
    const oldest = state.outcomeOrder.shift() as string;
    delete state.outcomes[oldest];
  }
}

function onQueue(step: ReporterStep, facts: ReportFacts): void {
  const { state, nowMs } = step;
  if (facts.reportId in state.outbox || facts.reportId in state.outcomes) return;
  if (!reporterHasRoom(state)) {
    step.log("report-not-queued", { reportId: facts.reportId, reason: "outbox full" });
    return;
  }
  const entry: ReporterOutboxEntry = { facts: structuredClone(facts), queuedAtMs: nowMs, nextTryAtMs: nowMs, tries: 0 };
  state.outbox[facts.reportId] = entry;
  sendTry(step, entry);
}

function onAck(step: ReporterStep, signer: string, ack: ReportAck): void {
  const { state, nowMs } = step;
  if (Buffer.compare(ack.reporter, keyOf(state.self)) !== 0) return;
  const entry = state.outbox[ack.reportId];
  if (entry === undefined || entry.facts.project !== ack.project) return;
  if (!(state.masters[ack.project] ?? []).includes(signer)) return;
  delete state.outbox[ack.reportId];
  remember(state, {
    reportId: ack.reportId,
    project: ack.project,
    verdict: ack.verdict,
    reason: ack.reason,
    master: signer,
    atMs: nowMs,
    tries: entry.tries,
  });
  step.log("report-answered", { reportId: ack.reportId, master: signer, verdict: ack.verdict, reason: ack.reason });
}

function retryDue(step: ReporterStep): void {
  const { state, nowMs } = step;
  for (const [reportId, entry] of Object.entries(state.outbox)) {
    if (nowMs >= entry.queuedAtMs + state.config.deliveryMs) {
      delete state.outbox[reportId];
      remember(state, {
        reportId,
        project: entry.facts.project,
        verdict: "undelivered",
        reason: `no master answered after ${entry.tries} tries in ${state.config.deliveryMs} ms`,
        master: "",
        atMs: nowMs,
        tries: entry.tries,
      });
      step.log("report-given-up", { reportId, tries: entry.tries });
      continue;
    }
    if (entry.nextTryAtMs <= nowMs) sendTry(step, entry);
  }
}

function nextReporterWake(state: ReporterState): number | null {
  let next = Number.POSITIVE_INFINITY;
  for (const entry of Object.values(state.outbox)) {
    const waiting = (state.masters[entry.facts.project] ?? []).length > 0;
    next = Math.min(next, entry.queuedAtMs + state.config.deliveryMs, waiting ? entry.nextTryAtMs : next);
  }
  return Number.isFinite(next) ? next : null;
}

/** The reporter's transition function. */
export function stepReporter(
  state: ReporterState,
  input: ReporterInput,
  nowMs: number,
  rng: Rng,
): StepOutput<ReporterState> {
  const step = new StepContext(state, nowMs, rng);
  if (state.timerAtMs !== null && state.timerAtMs <= nowMs) state.timerAtMs = null;
  switch (input.kind) {
    case "queue":
      onQueue(step, input.facts);
      break;
    case "ack":
      onAck(step, input.signer, input.ack);
      break;
    case "masters": {
      const before = state.masters[input.project] ?? [];
      state.masters[input.project] = [...input.masters];
      // A master heard of for the first time gets what waited for one at once.
      if (before.length === 0)
        for (const entry of Object.values(state.outbox))
          if (entry.facts.project === input.project && entry.tries === 0) sendTry(step, entry);
      break;
    }
    case "restart":
      state.timerAtMs = null;
      for (const entry of Object.values(state.outbox)) entry.nextTryAtMs = nowMs;
      retryDue(step);
      break;
    case "tick":
      state.timerAtMs = null;
      retryDue(step);
      break;
  }
  const next = nextReporterWake(state);
  if (next !== null && next !== state.timerAtMs) {
    state.timerAtMs = next;
    step.effects.push({ type: "set-timer", atMs: next });
  }
  return { state, effects: step.effects };
}
