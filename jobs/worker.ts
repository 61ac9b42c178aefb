/**
 * The worker: the volunteer's side of a job. A state machine with no I/O
 * (DESIGN.md, Rule 1): `stepWorker(state, input, nowMs, rng)` returns the next
 * state and the effects to carry out.
 *
 * House rules of this file:
 * - Inputs arrive verified: the shell opened the envelope, checked the
 *   announcer against the project's keyset and the replay ledger. This machine
 *   still refuses any project the volunteer did not pin (it has no share).
 * - Work is pulled: free slots are offered, the master awards. A worker with
 *   free slots sends each master of its projects a signed standing offer
 *   ("k free slots, my dimensions and claims, until T"), renewed before it
 *   lapses and superseded when more slots come free; slots taken are not told
 *   (see offerToSend).
 *   The master counts each award it makes against the offer, awards from
 *   offers on hand at once, with no announcement; what offers cannot cover it
 *   announces, and a reluctant worker bids. A bid holds a slot until it is
 *   answered or pendingBidMs passes. An award that finds no free slot (two
 *   masters used one offered slot) is refused at once, so its master gives
 *   the run to the next offer, not after a lease.
 * - Availability: eager offers its slots; reluctant bids only on a re-announcement
 *   (round >= 1: nobody eager took the job); paused never bids but finishes
 *   what runs; offline has left (what runs is killed). Rules (time windows in
 *   the volunteer's local time, a load-average ceiling) turn eager or
 *   reluctant into paused while they do not hold; the shell feeds the facts.
 * - Fair share (BOINC's resource share): when several projects want a slot,
 *   the project with the least decayed usage per unit of share wins. A slot
 *   that comes free is offered to that project first and to the next ones
 *   offerStaggerMs apart, so a project below its share that has work takes
 *   the slot before the others hear of it; among announcements, the same
 *   order picks what to bid on. Only eager workers offer slots; reluctant
 *   ones bid on re-announcements, paused ones take nothing new.
 * - A run is accepted (its master told it started, by a first lease renewal)
 *   acceptanceDelayMs after it starts; a run that ends sooner is answered by
 *   its result alone, so a short run costs four signed messages (offer,
 *   award, result, acknowledgement), not six. A refusal says whether its run
 *   had started: durationMs 0 for an award refused at once, at least 1 for a
 *   run that started (the master counts the one against the awards that
 *   never ran, the other against the job's attempts).
 * - A finished run's result stays in the outbox, and is sent again with a
 *   backoff, until its master acknowledges it (resultAck) or it expires: a
 *   master that is restarting still gets it, and the outbox is persisted with
 *   the state, so a worker that restarts delivers it too.
 * - A restart is an input: runs of the last process are gone (each is
 *   reported refused, so its master need not wait for the lease), undelivered
 *   results are sent again, adverts and wake-ups are asked for anew.
 * - Offers (and nothing else a worker says) go to the project's masters
 *   directly, never to every worker: the masters are the announcers of the
 *   project's keyset, which the shell core hands over ("masters").
 * - Local locks (the volunteer's semaphores, `locks: { vm: 1 }`): a job whose
 *   `locks` names a lock this worker declares takes one of its count here from
 *   its award (or its bid) until its run ends; the worker never bids for, nor
 *   takes, a job that would exceed one (an award that would is refused at
 *   once, as one that finds its slot taken), and its offers say how many runs
 *   naming each lock it takes now, so a master awards such jobs elsewhere. A
 *   job that names no lock of this worker costs the check nothing.
 * - The state is plain data, updated in place; every table has a bound.
 */
import { type Dimensions, isEligible, maxSpecsPerAdvert, type WorkerAdvert } from "../capabilities/index.ts";
import type { OutboundMessage, Rng, StepOutput, Unsequenced } from "./effects.ts";
import { keyOf, StepContext } from "./effects.ts";
import {
  type Award,
  type Cancel,
  type JobAnnouncement,
  type JobSpec,
  type LeaseRenew,
  lockNameSchema,
  maxAwardsSeen,
  maxBidLifetimeMs,
  maxCachedInputBytes,
  maxLeaseRenewLifetimeMs,
  maxLockCount,
  maxLogChunkLifetimeMs,
  maxOfferLifetimeMs,
  maxResultLifetimeMs,
  maxRunningJobs,
  maxWorkerLocks,
  type OfferLock,
  type Outcome,
  type Reject,
  type Result,
  type ResultAck,
  type Verdict,
} from "./messages.ts";

export type Availability = "eager" | "reluctant" | "paused" | "offline";

/** A span of local time, in minutes after midnight; end before start wraps past midnight. Days 0 (Sunday) to 6; empty means every day. */
export interface AvailabilityWindow {
  readonly days: readonly number[];
  readonly startMinute: number;
  readonly endMinute: number;
}

export interface AvailabilityRules {
  /** Bid only inside one of these; empty means at any time. */
  readonly windows: readonly AvailabilityWindow[];
  /** Bid only while the 1-minute load average is at or below this; null means no ceiling. */
  readonly maxLoadAverage: number | null;
}

export interface WorkerConfig {
  /** Runs at once. Default 1. */
  readonly slots: number;
  /** Pinned projects and their share weights: a project absent here is never served. */
  readonly shares: Readonly<Record<string, number>>;
  readonly dimensions: Dimensions;
  readonly specs: WorkerAdvert["specs"];
  /** Whether the volunteer lets jobs that ask for the network have it. Default false. */
  readonly allowNetwork: boolean;
  /**
   * Why this worker can run nothing now (say, no sandbox can be made here), or empty. While it is set the worker
   * acts paused, whatever the volunteer chose, and the choice is kept for when the cause is gone. Default empty.
   */
  readonly cannotRun: string;
  readonly rules: AvailabilityRules;
  /** How long an unanswered bid holds its slot. Default 5 s. */
  readonly pendingBidMs: number;
  /** How often a running job's lease is renewed; sooner under a shorter lease (renewDueAtMs). Default 20 s (a third of the master's default lease). */
  readonly renewIntervalMs: number;
  /**
   * How long after a run starts the worker tells its master it took the award (its first lease renewal), unless the
   * run ended sooner: then its result is the answer. Well under the master's awardAnswerMs (15 s by default), after
   * which an award unanswered is lost. Default 1 s.
   */
  readonly acceptanceDelayMs: number;
  /** Half-life of the usage that fair share compares. Default 1 day. */
  readonly usageHalfLifeMs: number;
  /** Announcements held while waiting for a slot. Default 1,024. */
  readonly maxCandidates: number;
  /** Announcement rounds remembered, so a duplicate is not drawn for twice. Default 4,096. */
  readonly maxSeenRounds: number;
  /** Bids last this long. Default 60 s. */
  readonly bidLifetimeMs: number;
  /** How long a standing offer lasts; it is renewed when a quarter of it is left. Default 1 hour (maxOfferLifetimeMs). */
  readonly offerLifetimeMs: number;
  /** A free slot is offered to the project most below its share first, to each next one this much later. Default 250 ms. */
  readonly offerStaggerMs: number;
  /** The first offers after a (re)start come within this much of it, at a random phase, so a mesh that starts at once does not offer in one burst. Default 1 s. */
  readonly offerJitterMs: number;
  /** Masters of one project that get offers (a keyset may name more announcers). Default 8. */
  readonly maxMastersPerProject: number;
  /** Wait before an unacknowledged result is sent again; doubled for each try after, up to maxResultRetryWaitMs. Default 1 s. */
  readonly resultRetryBaseMs: number;
  /** Longest wait between two tries of a result. Default 10 s. */
  readonly maxResultRetryWaitMs: number;
  /** How long a result is tried before it is given up (its master may be down this long). Default 1 hour. */
  readonly resultDeliveryMs: number;
  /** Results kept waiting for an acknowledgement; the oldest is given up first. Default 1,024. */
  readonly maxOutboxResults: number;
  /** Local semaphores by name: runs of jobs naming a lock that run here at once, at most its count. Default none. */
  readonly locks: Readonly<Record<string, number>>;
}

/** How long a log chunk a worker sends is valid. */
export const logChunkLifetimeMs = 60 * 60_000;

export const defaultWorkerConfig: Omit<WorkerConfig, "shares" | "dimensions" | "specs"> = {
  slots: 1,
  allowNetwork: false,
  cannotRun: "",
  rules: { windows: [], maxLoadAverage: null },
  pendingBidMs: 5_000,
  renewIntervalMs: 20_000,
  acceptanceDelayMs: 1_000,
  usageHalfLifeMs: 24 * 60 * 60 * 1000,
  maxCandidates: 1024,
  maxSeenRounds: 4096,
  bidLifetimeMs: 60_000,
  offerLifetimeMs: 60 * 60_000,
  offerStaggerMs: 250,
  offerJitterMs: 1_000,
  maxMastersPerProject: 8,
  resultRetryBaseMs: 1_000,
  maxResultRetryWaitMs: 10_000,
  resultDeliveryMs: 60 * 60_000,
  maxOutboxResults: 1024,
  locks: {},
};

export interface Candidate {
  readonly project: string;
  readonly jobId: string;
  readonly master: string;
  readonly round: number;
  readonly job: JobSpec;
  readonly expiresAtMs: number;
  readonly receivedAtMs: number;
  /** Bytes of the job's inputs held when the announcement came. */
  readonly cachedInputBytes?: number;
}

export interface PendingBid {
  readonly project: string;
  readonly jobId: string;
  readonly master: string;
  readonly round: number;
  readonly job: JobSpec;
  readonly sentAtMs: number;
}

export interface RunRecord {
  readonly runId: string;
  readonly project: string;
  readonly jobId: string;
  readonly master: string;
  readonly attempt: number;
  readonly shard: number;
  readonly startedAtMs: number;
  leaseExpiresAtMs: number;
  /** How long a lease the master granted with the award: renewals come at a third of it, whatever renewIntervalMs says. */
  readonly leaseGrantedMs: number;
  lastRenewAtMs: number;
  /** Present while the master has not been told the run started (see acceptanceDelayMs); absent once it has. */
  acceptancePending?: true;
  /** The worker's local locks the run holds (the job's locks this worker declares); absent when none. */
  readonly locks?: readonly string[];
}

/** A result waiting for its master's acknowledgement. */
export interface OutboxEntry {
  readonly master: string;
  readonly result: Unsequenced<Result>;
  readonly firstSentAtMs: number;
  nextTryAtMs: number;
  tries: number;
}

/** What the worker last offered one master of one project: the master holds the same, less one slot per award it made. */
export interface SentOffer {
  freeSlots: number;
  readonly availability: Availability;
  expiresAtMs: number;
  /** The worker's claims version it carried: new claims are offered again. */
  readonly claimsVersion: number;
  /** Awards had from this master since this process's offers began (the offer's `awardsSeen`). */
  awardsSeen: number;
}

export interface Usage {
  /** Slot time used, decayed to `atMs`. */
  decayedMs: number;
  atMs: number;
}

export interface WorkerFacts {
  /** Minutes after local midnight, 0..1439. */
  readonly localMinuteOfDay: number;
  /** 0 (Sunday) to 6, local. */
  readonly localDayOfWeek: number;
  readonly loadAverage: number;
}

export interface WorkerState {
  /** Replaced whole, never edited in place: only the spec claims change after creation. */
  config: WorkerConfig;
  /** The worker's own key, hex: awards name it. */
  readonly self: string;
  availability: Availability;
  facts: WorkerFacts | null;
  candidates: Record<string, Candidate>;
  candidateOrder: string[];
  seenRounds: Record<string, true>;
  seenOrder: string[];
  pending: Record<string, PendingBid>;
  running: Record<string, RunRecord>;
  usage: Record<string, Usage>;
  /** Results not yet acknowledged, by run id, oldest first. */
  outbox: Record<string, OutboxEntry>;
  /** Each pinned project's masters (hex keys), as the shell core read them from the project's keyset. */
  masters: Record<string, string[]>;
  /** What each master holds of this worker's offer, by offerKey(project, master). */
  offers: Record<string, SentOffer>;
  /** When offers may go out; null until the first (re)start. It names this process's offers too (their `epoch`). */
  offersFromMs: number | null;
  /** When the slots on offer last grew: the stagger between projects counts from here. */
  freeSinceMs: number;
  /** Slots offered to eager projects after the last step, to see them grow. */
  lastOffering: number;
  /** Bumped when the capability claims change, so every master hears the new ones. */
  claimsVersion: number;
  timerAtMs: number | null;
}

export interface ExecutionReport {
  readonly runId: string;
  readonly outcome: Outcome;
  readonly exitCode: number | null;
  readonly outputsDigest: string | null;
  readonly logDigest: string | null;
  readonly summary: string;
  readonly durationMs: number;
}

export type WorkerInput =
  | {
      readonly kind: "announcement";
      readonly signer: string;
      readonly announcement: JobAnnouncement;
      /** Bytes of the job's inputs this node already holds (a fact of its store): the bid reports it. Default 0. */
      readonly cachedInputBytes?: number;
    }
  | { readonly kind: "award"; readonly signer: string; readonly award: Award }
  | { readonly kind: "reject"; readonly signer: string; readonly reject: Reject }
  | { readonly kind: "lease-renew"; readonly signer: string; readonly renew: LeaseRenew }
  | { readonly kind: "cancel"; readonly signer: string; readonly cancel: Cancel }
  | { readonly kind: "verdict"; readonly signer: string; readonly verdict: Verdict }
  | { readonly kind: "result-ack"; readonly signer: string; readonly ack: ResultAck }
  | { readonly kind: "execution-finished"; readonly report: ExecutionReport }
  | { readonly kind: "set-availability"; readonly availability: Availability }
  /** The volunteer's new time windows and load ceiling, replacing the config's: in force from this step. */
  | { readonly kind: "rules"; readonly rules: AvailabilityRules }
  | { readonly kind: "facts"; readonly facts: WorkerFacts }
  /** The outcome of the capability spec self-checks the node ran: the claims adverts and bids rest on. */
  | { readonly kind: "specs"; readonly specs: WorkerAdvert["specs"] }
  /** The masters of a pinned project now (the announcers of its keyset, hex): where offers go. */
  | { readonly kind: "masters"; readonly project: string; readonly masters: readonly string[] }
  /** The node (re)started from its stored state: what the last process ran is gone, wake-ups must be asked anew. */
  | { readonly kind: "restart" }
  | { readonly kind: "tick" };

export function createWorker(
  self: string,
  config: Partial<WorkerConfig> & Pick<WorkerConfig, "shares" | "dimensions" | "specs">,
  availability: Availability = "eager",
): WorkerState {
  const full = { ...defaultWorkerConfig, ...config };
  if (!Number.isInteger(full.slots) || full.slots < 1 || full.slots > maxRunningJobs) {
    throw new RangeError(`slots: expected 1..${maxRunningJobs}, got ${full.slots}`);
  }
  if (!(full.offerLifetimeMs >= 1 && full.offerLifetimeMs <= maxOfferLifetimeMs))
    throw new RangeError(`offerLifetimeMs: expected 1..${maxOfferLifetimeMs}, got ${full.offerLifetimeMs}`);
  const lockNames = Object.keys(full.locks);
  if (lockNames.length > maxWorkerLocks)
    throw new RangeError(`locks: expected at most ${maxWorkerLocks} locks, got ${lockNames.length}`);
  for (const name of lockNames) {
    if (!lockNameSchema.safeParse(name).success)
      throw new RangeError(`locks.${name}: expected a lock name (lowercase letters, digits, '.', '_', '-')`);
    const count = full.locks[name] as number;
    if (!Number.isInteger(count) || count < 1 || count > maxLockCount)
      throw new RangeError(`locks.${name}: expected a count of 1..${maxLockCount}, got ${count}`);
  }
  for (const [project, share] of Object.entries(full.shares)) {
    if (!(share > 0) || !Number.isFinite(share))
      throw new RangeError(`shares.${project}: expected a positive weight, got ${share}`);
  }
  return {
    config: full,
    self,
    availability,
    facts: null,
    candidates: {},
    candidateOrder: [],
    seenRounds: {},
    seenOrder: [],
    pending: {},
    running: {},
    usage: {},
    outbox: {},
    masters: {},
    offers: {},
    offersFromMs: null,
    freeSinceMs: 0,
    lastOffering: 0,
    claimsVersion: 0,
    timerAtMs: null,
  };
}

function jobKey(project: string, jobId: string): string {
  return `${project}/${jobId}`;
}

/** Windows a worker's rules may hold. */
export const maxRuleWindows = 32;
/** Minutes in a day: a window's start and end are below it. */
export const minutesPerDay = 24 * 60;

/** The rules, copied, once every window and the ceiling are within range (a RangeError names the field otherwise). */
export function checkedRules(rules: AvailabilityRules): AvailabilityRules {
  if (rules.windows.length > maxRuleWindows)
    throw new RangeError(`rules.windows: expected at most ${maxRuleWindows}, got ${rules.windows.length}`);
  const windows = rules.windows.map((window, index) => {
    for (const day of window.days)
      if (!Number.isInteger(day) || day < 0 || day > 6)
        throw new RangeError(`rules.windows[${index}].days: expected days 0 (Sunday) to 6, got ${day}`);
    for (const field of ["startMinute", "endMinute"] as const) {
      const minute = window[field];
      if (!Number.isInteger(minute) || minute < 0 || minute >= minutesPerDay)
        throw new RangeError(`rules.windows[${index}].${field}: expected 0..${minutesPerDay - 1}, got ${minute}`);
    }
    return {
      days: [...new Set(window.days)].sort((a, b) => a - b),
      startMinute: window.startMinute,
      endMinute: window.endMinute,
    };
  });
  const ceiling = rules.maxLoadAverage;
  if (ceiling !== null && !(ceiling > 0 && Number.isFinite(ceiling)))
    throw new RangeError(`rules.maxLoadAverage: expected a positive number or null, got ${ceiling}`);
  return { windows, maxLoadAverage: ceiling };
}

/** Availability after the volunteer's rules: outside a window, or above the load ceiling, eager and reluctant act paused. */
export function effectiveAvailability(state: WorkerState): Availability {
  const { availability, facts } = state;
  if (availability === "paused" || availability === "offline") return availability;
  if (state.config.cannotRun !== "") return "paused";
  const { windows, maxLoadAverage } = state.config.rules;
  if (facts === null) return windows.length === 0 && maxLoadAverage === null ? availability : "paused";
  if (maxLoadAverage !== null && facts.loadAverage > maxLoadAverage) return "paused";
  if (windows.length === 0) return availability;
  const minute = facts.localMinuteOfDay;
  const inside = windows.some((window) => {
    if (window.days.length > 0 && !window.days.includes(facts.localDayOfWeek)) return false;
    return window.startMinute <= window.endMinute
      ? minute >= window.startMinute && minute < window.endMinute
      : minute >= window.startMinute || minute < window.endMinute;
  });
  return inside ? availability : "paused";
}

class Step extends StepContext<WorkerState> {}

function decayedUsage(state: WorkerState, project: string, nowMs: number): number {
  const usage = state.usage[project];
  if (usage === undefined) return 0;
  return usage.decayedMs * 2 ** (-(nowMs - usage.atMs) / state.config.usageHalfLifeMs);
}

/** Decayed usage plus the slot time of runs still going: with several slots, the runs in flight count too. */
function projectLoad(state: WorkerState, project: string, nowMs: number): number {
  let load = decayedUsage(state, project, nowMs);
  for (const run of Object.values(state.running)) if (run.project === project) load += nowMs - run.startedAtMs;
  return load;
}

function addUsage(state: WorkerState, project: string, slotMs: number, nowMs: number): void {
  if (!(project in state.config.shares)) return;
  state.usage[project] = { decayedMs: decayedUsage(state, project, nowMs) + slotMs, atMs: nowMs };
}

function freeSlots(state: WorkerState): number {
  return state.config.slots - Object.keys(state.running).length - Object.keys(state.pending).length;
}

/** The job's locks that this worker declares: what a run of it takes here. Empty (and cheap) for most jobs. */
function localLocksOf(state: WorkerState, job: JobSpec): string[] {
  if (job.locks === undefined || job.locks.length === 0) return [];
  const declared = state.config.locks;
  const names: string[] = [];
  for (const lock of job.locks) if (Object.hasOwn(declared, lock.name)) names.push(lock.name);
  return names;
}

/** Runs and pending bids that hold a local lock now. */
function lockHolders(state: WorkerState, name: string): number {
  let holders = 0;
  for (const run of Object.values(state.running)) if (run.locks?.includes(name) === true) holders++;
  for (const pending of Object.values(state.pending))
    if (pending.job.locks?.some((lock) => lock.name === name) === true) holders++;
  return holders;
}

/** The first of these local locks with no count left, or undefined when one more run may take each. */
function fullLock(state: WorkerState, names: readonly string[]): string | undefined {
  return names.find((name) => lockHolders(state, name) >= (state.config.locks[name] as number));
}

/** Each declared local lock with the runs naming it this worker takes now: what its offers say. */
function offerLocks(state: WorkerState): OfferLock[] | undefined {
  const names = Object.keys(state.config.locks);
  if (names.length === 0) return undefined;
  return names.map((name) => ({
    name,
    free: Math.max(0, (state.config.locks[name] as number) - lockHolders(state, name)),
  }));
}

function dropCandidate(state: WorkerState, key: string): void {
  if (!(key in state.candidates)) return;
  delete state.candidates[key];
  const index = state.candidateOrder.indexOf(key);
  if (index >= 0) state.candidateOrder.splice(index, 1);
}

function addCandidate(state: WorkerState, key: string, candidate: Candidate): void {
  dropCandidate(state, key);
  while (state.candidateOrder.length >= state.config.maxCandidates) {
    const oldest = state.candidateOrder.shift();
    if (oldest !== undefined) delete state.candidates[oldest];
  }
  state.candidates[key] = candidate;
  state.candidateOrder.push(key);
}

function remember(state: WorkerState, roundKey: string): boolean {
  if (state.seenRounds[roundKey] === true) return false;
  while (state.seenOrder.length >= state.config.maxSeenRounds) {
    const oldest = state.seenOrder.shift();
    if (oldest !== undefined) delete state.seenRounds[oldest];
  }
  state.seenRounds[roundKey] = true;
  state.seenOrder.push(roundKey);
  return true;
}

/** Whether this worker could run the job at all: pinned project, capabilities, network permission. */
export function canServe(state: WorkerState, project: string, job: JobSpec): boolean {
  if (!(project in state.config.shares)) return false;
  if (job.network && !state.config.allowNetwork) return false;
  return isEligible(job, { dimensions: state.config.dimensions, specs: state.config.specs });
}

/**
 * Bids on the best candidates while slots are free: least decayed usage per share first, then priority, then age.
 * Only a reluctant worker holds candidates (an eager one offers its slots instead); it bids on a re-announcement,
 * which says nobody eager took the job.
 */
function bidWhileFree(step: Step): void {
  const { state, nowMs } = step;
  const availability = effectiveAvailability(state);
  if (availability !== "reluctant") return;
  while (freeSlots(state) > 0) {
    let best: Candidate | undefined;
    let bestKey = "";
    let bestScore = Number.POSITIVE_INFINITY;
    for (const key of state.candidateOrder) {
      const candidate = state.candidates[key] as Candidate;
      if (candidate.expiresAtMs < nowMs) continue;
      if (availability === "reluctant" && candidate.round < 1) continue;
      if (key in state.pending) continue;
      if (
        Object.values(state.running).some((run) => run.project === candidate.project && run.jobId === candidate.jobId)
      )
        continue;
      // A bid holds the job's local locks as it holds a slot: none is bid for that would exceed one.
      if (fullLock(state, localLocksOf(state, candidate.job)) !== undefined) continue;
      const score = projectLoad(state, candidate.project, nowMs) / (state.config.shares[candidate.project] as number);
      if (
        best === undefined ||
        score < bestScore ||
        (score === bestScore &&
          (candidate.job.priority > best.job.priority ||
            (candidate.job.priority === best.job.priority && candidate.receivedAtMs < best.receivedAtMs)))
      ) {
        best = candidate;
        bestKey = key;
        bestScore = score;
      }
    }
    if (best === undefined) return;
    dropCandidate(state, bestKey);
    state.pending[bestKey] = {
      project: best.project,
      jobId: best.jobId,
      master: best.master,
      round: best.round,
      job: best.job,
      sentAtMs: nowMs,
    };
    step.log("bid", { to: best.master.slice(0, 8), jobId: best.jobId, round: best.round });
    step.send(best.master, {
      domain: "bid",
      body: {
        ...step.header(Math.min(state.config.bidLifetimeMs, maxBidLifetimeMs)),
        project: best.project,
        jobId: best.jobId,
        round: best.round,
        availability,
        runningJobs: Object.keys(state.running).length,
        // The slot this bid holds is already counted out (it is in `pending`).
        freeSlots: Math.max(0, freeSlots(state)),
        cachedInputBytes: Math.min(best.cachedInputBytes ?? 0, maxCachedInputBytes),
      },
    });
  }
}

function onAnnouncement(step: Step, master: string, announcement: JobAnnouncement, cachedInputBytes: number): void {
  const { state, nowMs, rng } = step;
  const { project, jobId, round } = announcement;
  if (project in state.config.shares) {
    const claimed = new Set(state.config.specs.map((claim) => claim.uuid));
    const unknown = announcement.job.requiredSpecs.filter((uuid) => !claimed.has(uuid));
    // A spec the worker has no claim on yet: the shell finds it and runs its self-check, and a later round may find it eligible.
    if (unknown.length > 0) step.effects.push({ type: "check-specs", project, uuids: unknown });
  }
  if (!canServe(state, project, announcement.job)) return;
  if (!remember(state, `${jobKey(project, jobId)}#${round}`)) return;
  const key = jobKey(project, jobId);
  // Each eligible worker answers with the announced probability, so the expected number of answers stays flat as the mesh grows.
  if (rng() >= announcement.bidProbability) return;
  if (effectiveAvailability(state) === "eager") {
    // An eager worker offers its free slots rather than bid: a master that announces while this worker has a slot
    // free has lost its offer (a restart, a lost message), so it hears it again; a busy one offers when a slot frees.
    const held = state.offers[offerKey(project, master)];
    if (held !== undefined && freeSlots(state) > 0) held.expiresAtMs = Math.min(held.expiresAtMs, nowMs);
    return;
  }
  addCandidate(state, key, {
    project,
    jobId,
    master,
    round,
    job: announcement.job,
    expiresAtMs: announcement.expiresAtMs,
    receivedAtMs: nowMs,
    cachedInputBytes,
  });
}

function runIdOf(project: string, jobId: string, attempt: number): string {
  return `${project}/${jobId}/${attempt}`;
}

/** Sends a result and keeps it in the outbox until its master acknowledges it. */
function report(step: Step, runId: string, master: string, result: Unsequenced<Result>): void {
  const { state, nowMs } = step;
  const outbox = state.outbox;
  if (!(runId in outbox)) {
    const held = Object.keys(outbox);
    for (let i = 0; i <= held.length - state.config.maxOutboxResults; i++) {
      step.log("result-given-up", { runId: held[i] as string, reason: "outbox full" });
      delete outbox[held[i] as string];
    }
  }
  outbox[runId] = {
    master,
    result,
    firstSentAtMs: nowMs,
    nextTryAtMs: nowMs + state.config.resultRetryBaseMs,
    tries: 1,
  };
  step.send(master, { domain: "result", body: result });
}

/** A refusal's result: durationMs 0 for an award refused at once, at least 1 for a run that had started (see the house rules). */
function refusal(
  step: Step,
  run: Pick<RunRecord, "project" | "jobId" | "attempt" | "shard">,
  reason: string,
  startedAtMs: number | null,
) {
  return {
    ...step.header(maxResultLifetimeMs),
    project: run.project,
    jobId: run.jobId,
    attempt: run.attempt,
    shard: run.shard,
    exitCode: null,
    outcome: "refused" as const,
    outputsDigest: null,
    logDigest: null,
    summary: reason,
    durationMs: startedAtMs === null ? 0 : Math.max(1, step.nowMs - startedAtMs),
  };
}

function refuse(step: Step, award: Award, master: string, reason: string): void {
  report(step, runIdOf(award.project, award.jobId, award.attempt), master, refusal(step, award, reason, null));
}

function offerKey(project: string, master: string): string {
  return `${project}/${master}`;
}

function onAward(step: Step, master: string, award: Award): void {
  const { state, nowMs } = step;
  const key = jobKey(award.project, award.jobId);
  const pending = state.pending[key];
  if (Buffer.compare(award.worker, keyOf(state.self)) !== 0) {
    step.log("award-ignored", { reason: "not for this worker", jobId: award.jobId });
    return;
  }
  const runId = runIdOf(award.project, award.jobId, award.attempt);
  if (runId in state.running) return; // a duplicate award
  const held = pending?.master === master ? pending : undefined;
  if (held !== undefined) delete state.pending[key];
  dropCandidate(state, key);
  // The master counts one slot of its offer used by any award it makes, answered or not: so does the worker.
  const offered = state.offers[offerKey(award.project, master)];
  if (offered !== undefined) {
    offered.freeSlots = Math.max(0, offered.freeSlots - 1);
    offered.awardsSeen = Math.min(offered.awardsSeen + 1, maxAwardsSeen);
  }
  const spec = award.job;
  const refuseNow = (reason: string) => {
    // A master drops the offer of a worker that refused: the worker offers again what it has free.
    if (offered !== undefined) offered.freeSlots = 0;
    refuse(step, award, master, reason);
  };
  if (!canServe(state, award.project, spec)) {
    refuseNow("the worker cannot run this job (its project, requirements or network)");
    return;
  }
  const availability = effectiveAvailability(state);
  // Paused or offline since the offer or bid went out: an award is something new, and those states take nothing new.
  if (availability !== "eager" && availability !== "reluctant") {
    refuseNow(`the worker is ${availability} since it offered or bid`);
    return;
  }
  if (held === undefined && freeSlots(state) <= 0) {
    refuseNow("no free slot: another award took the slot offered");
    return;
  }
  const locks = localLocksOf(state, spec);
  const full = fullLock(state, locks);
  if (full !== undefined) {
    refuseNow(
      `local lock ${full}: its ${state.config.locks[full]} taken on this worker by runs of other jobs naming it`,
    );
    return;
  }
  const run: RunRecord = {
    runId,
    project: award.project,
    jobId: award.jobId,
    master,
    attempt: award.attempt,
    shard: award.shard,
    startedAtMs: nowMs,
    leaseExpiresAtMs: award.leaseExpiresAtMs,
    leaseGrantedMs: Math.max(0, award.leaseExpiresAtMs - nowMs),
    lastRenewAtMs: nowMs,
    // The master hears that the award was taken acceptanceDelayMs from now (renewDueAtMs), or by the run's result.
    acceptancePending: true,
    ...(locks.length > 0 ? { locks } : {}),
  };
  state.running[runId] = run;
  step.effects.push({
    type: "start-execution",
    run: {
      runId,
      project: award.project,
      jobId: award.jobId,
      attempt: award.attempt,
      shard: award.shard,
      job: spec,
      env: {
        CIMESH_PROJECT: award.project,
        CIMESH_JOB_ID: award.jobId,
        CIMESH_ATTEMPT: String(award.shardAttempt),
        CIMESH_SHARD_INDEX: String(award.shard),
        CIMESH_TOTAL_SHARDS: String(spec.shards),
      },
    },
  });
}

function onReject(step: Step, master: string, reject: Reject): void {
  const key = jobKey(reject.project, reject.jobId);
  const pending = step.state.pending[key];
  if (pending !== undefined && pending.master === master) delete step.state.pending[key];
}

function onLeaseRenew(step: Step, master: string, renew: LeaseRenew): void {
  const run = step.state.running[runIdOf(renew.project, renew.jobId, renew.attempt)];
  if (run !== undefined && run.master === master)
    run.leaseExpiresAtMs = Math.max(run.leaseExpiresAtMs, renew.leaseExpiresAtMs);
}

function kill(step: Step, run: RunRecord, reason: string): void {
  delete step.state.running[run.runId];
  addUsage(step.state, run.project, step.nowMs - run.startedAtMs, step.nowMs);
  step.effects.push({ type: "kill-execution", runId: run.runId, reason });
}

function forgetJob(state: WorkerState, project: string, jobId: string): void {
  const key = jobKey(project, jobId);
  dropCandidate(state, key);
}

function onCancel(step: Step, master: string, cancel: Cancel): void {
  const { state } = step;
  if (cancel.attempt === null) forgetJob(state, cancel.project, cancel.jobId);
  for (const run of Object.values(state.running)) {
    if (run.project !== cancel.project || run.jobId !== cancel.jobId || run.master !== master) continue;
    // A cancel naming another attempt (a late answer about a lost one) must not stop this run.
    if (cancel.attempt !== null && cancel.attempt !== run.attempt) continue;
    kill(step, run, `cancelled: ${cancel.reason}`);
  }
}

function onFinished(step: Step, finished: ExecutionReport): void {
  const { state, nowMs } = step;
  const run = state.running[finished.runId];
  if (run === undefined) {
    step.log("finish-ignored", { reason: "not running (killed or unknown)", runId: finished.runId });
    return;
  }
  delete state.running[finished.runId];
  addUsage(state, run.project, nowMs - run.startedAtMs, nowMs);
  report(step, run.runId, run.master, {
    ...step.header(maxResultLifetimeMs),
    project: run.project,
    jobId: run.jobId,
    attempt: run.attempt,
    shard: run.shard,
    exitCode: finished.exitCode,
    outcome: finished.outcome,
    outputsDigest: finished.outputsDigest,
    logDigest: finished.logDigest,
    summary: finished.summary,
    // A refusal of a run that started says so (durationMs at least 1), whether or not its acceptance went out.
    durationMs: finished.outcome === "refused" ? Math.max(1, finished.durationMs) : finished.durationMs,
  });
}

function onResultAck(step: Step, master: string, ack: ResultAck): void {
  const { state } = step;
  if (Buffer.compare(ack.worker, keyOf(state.self)) !== 0) return;
  const runId = runIdOf(ack.project, ack.jobId, ack.attempt);
  if (state.outbox[runId]?.master === master) delete state.outbox[runId];
}

/** Sends again every result whose wait is over; gives up those past their delivery time or their own expiry. */
function retryResults(step: Step): void {
  const { state, nowMs } = step;
  const config = state.config;
  for (const [runId, entry] of Object.entries(state.outbox)) {
    if (entry.nextTryAtMs > nowMs) continue;
    if (nowMs >= entry.firstSentAtMs + config.resultDeliveryMs || nowMs >= entry.result.expiresAtMs) {
      delete state.outbox[runId];
      step.log("result-given-up", { runId, reason: `no acknowledgement after ${entry.tries} tries` });
      continue;
    }
    entry.tries++;
    entry.nextTryAtMs =
      nowMs + Math.min(config.resultRetryBaseMs * 2 ** (entry.tries - 1), config.maxResultRetryWaitMs);
    step.send(entry.master, { domain: "result", body: entry.result });
  }
}

/** The last process is gone: its runs are reported refused (their masters re-award them at once), results go out again. */
function onRestart(step: Step): void {
  const { state, nowMs, rng } = step;
  for (const run of Object.values(state.running)) {
    delete state.running[run.runId];
    addUsage(state, run.project, nowMs - run.startedAtMs, nowMs);
    report(step, run.runId, run.master, refusal(step, run, "the worker restarted while the job ran", run.startedAtMs));
  }
  state.pending = {};
  for (const entry of Object.values(state.outbox)) entry.nextTryAtMs = nowMs;
  retryResults(step);
  // Every master hears this worker's offer anew: what they held described the last process.
  state.offers = {};
  state.offersFromMs = nowMs + Math.floor(rng() * state.config.offerJitterMs);
  state.freeSinceMs = state.offersFromMs;
  state.lastOffering = 0;
}

/** The pinned projects with known masters, the one furthest below its share first (ties by id, for determinism). */
function projectsByShare(state: WorkerState, nowMs: number): string[] {
  const shares = state.config.shares;
  const ranked = Object.keys(state.masters)
    .filter((project) => project in shares && (state.masters[project]?.length ?? 0) > 0)
    .map((project) => ({ project, score: projectLoad(state, project, nowMs) / (shares[project] as number) }));
  ranked.sort((a, b) => a.score - b.score || (a.project < b.project ? -1 : a.project > b.project ? 1 : 0));
  return ranked.map((entry) => entry.project);
}

/** When an offer is renewed: once a quarter of its lifetime is left. */
function renewalAtMs(state: WorkerState, offer: SentOffer): number {
  return offer.expiresAtMs - Math.floor(state.config.offerLifetimeMs / 4);
}

/**
 * Brings every master's view of this worker's offer up to date (see the file comment): fewer slots at once, more
 * slots in fair-share order (the project most below its share at once, each next one offerStaggerMs later), the same
 * again when it nears its end or the claims or availability changed.
 */
function offerSlots(step: Step): void {
  const { state, nowMs } = step;
  if (state.offersFromMs === null || nowMs < state.offersFromMs) return;
  const availability = effectiveAvailability(state);
  const offering = availability === "eager" ? Math.max(0, freeSlots(state)) : 0;
  if (offering > state.lastOffering) state.freeSinceMs = nowMs;
  state.lastOffering = offering;
  const lifetimeMs = Math.min(state.config.offerLifetimeMs, maxOfferLifetimeMs);
  const projects = projectsByShare(state, nowMs);
  for (let rank = 0; rank < projects.length; rank++) {
    const project = projects[rank] as string;
    const due = nowMs >= state.freeSinceMs + rank * state.config.offerStaggerMs;
    for (const master of state.masters[project] as string[]) {
      const key = offerKey(project, master);
      const held = state.offers[key];
      const slots = offerToSend(state, held, offering, availability, due, nowMs);
      if (slots === null) continue;
      const awardsSeen = held?.awardsSeen ?? 0;
      state.offers[key] = {
        freeSlots: slots,
        availability,
        expiresAtMs: nowMs + lifetimeMs,
        claimsVersion: state.claimsVersion,
        awardsSeen,
      };
      const locks = offerLocks(state);
      step.send(master, {
        domain: "offer",
        body: {
          ...step.header(lifetimeMs),
          project,
          freeSlots: slots,
          totalSlots: state.config.slots,
          availability,
          network: state.config.allowNetwork,
          epoch: state.offersFromMs,
          awardsSeen,
          dimensions: state.config.dimensions,
          specs: state.config.specs,
          ...(locks !== undefined ? { locks } : {}),
        },
      });
    }
  }
}

/**
 * What to offer a master now, or null for nothing (see offerSlots): the first offer in the project's turn; the
 * offer again when it nears its end or what it says of the worker changed; more slots than the master holds (what
 * was offered less the awards it made since) in the project's turn. Slots taken are not told, not even the last
 * one: a master that awards a slot already taken is refused at once, drops the offer and gives the run to the next
 * one. That costs an award and a refusal only when a master picks a stale offer, where telling every master of every
 * award cost a message per project the worker serves for each run (measured in the mixed-400 example: 5.4 offers per
 * wanted run with withdrawals when full, 2.1 without, with the same claim latency and fewer messages per job).
 */
function offerToSend(
  state: WorkerState,
  held: SentOffer | undefined,
  offering: number,
  availability: Availability,
  due: boolean,
  nowMs: number,
): number | null {
  if (held === undefined) return due ? offering : null;
  if (
    held.availability !== availability ||
    held.claimsVersion !== state.claimsVersion ||
    renewalAtMs(state, held) <= nowMs
  )
    return due ? offering : Math.min(offering, held.freeSlots);
  if (due && offering > held.freeSlots) return offering;
  return null;
}

/** The next time offerSlots has something to do: a project's turn for a slot come free, or an offer's renewal. */
function nextOfferAtMs(state: WorkerState, nowMs: number): number {
  if (state.offersFromMs === null) return Number.POSITIVE_INFINITY;
  if (nowMs < state.offersFromMs) return state.offersFromMs;
  let next = Number.POSITIVE_INFINITY;
  for (const offer of Object.values(state.offers)) next = Math.min(next, renewalAtMs(state, offer));
  const offering = state.lastOffering;
  if (offering > 0) {
    const projects = projectsByShare(state, nowMs);
    for (let rank = 0; rank < projects.length; rank++) {
      const project = projects[rank] as string;
      const dueAtMs = state.freeSinceMs + rank * state.config.offerStaggerMs;
      if (dueAtMs <= nowMs) continue;
      const short = (state.masters[project] as string[]).some(
        (master) => (state.offers[offerKey(project, master)]?.freeSlots ?? 0) < offering,
      );
      if (short) next = Math.min(next, dueAtMs);
    }
  }
  return next;
}

/** The masters of a project changed (its keyset): offers go to the new ones, those no longer named are forgotten. */
function onMasters(state: WorkerState, project: string, masters: readonly string[]): void {
  if (!(project in state.config.shares)) return;
  const kept = [...new Set(masters)].slice(0, state.config.maxMastersPerProject);
  for (const master of state.masters[project] ?? [])
    if (!kept.includes(master)) delete state.offers[offerKey(project, master)];
  if (kept.length === 0) delete state.masters[project];
  else state.masters[project] = kept;
}

function onTick(step: Step): void {
  const { state, nowMs } = step;
  retryResults(step);
  for (const run of Object.values(state.running)) {
    if (run.leaseExpiresAtMs <= nowMs) {
      kill(step, run, "lease lost: the master did not renew it in time");
      continue;
    }
    if (renewDueAtMs(state, run) <= nowMs) renewLease(step, run);
  }
  for (const [key, pending] of Object.entries(state.pending)) {
    if (pending.sentAtMs + state.config.pendingBidMs <= nowMs) delete state.pending[key];
  }
}

/** Asks the run's master to renew its lease; the first (acceptanceDelayMs after the run starts) is the award's answer. */
function renewLease(step: Step, run: RunRecord): void {
  run.lastRenewAtMs = step.nowMs;
  delete run.acceptancePending;
  step.send(run.master, {
    domain: "leaseRenew",
    body: {
      ...step.header(maxLeaseRenewLifetimeMs),
      project: run.project,
      jobId: run.jobId,
      worker: keyOf(step.state.self),
      attempt: run.attempt,
      progressPermille: 0,
      leaseExpiresAtMs: run.leaseExpiresAtMs,
    },
  });
}

/**
 * When a run's lease is next renewed: every renewIntervalMs, or every third of the lease the master granted if
 * that is shorter. A fixed interval alone lost every run under a master whose lease is shorter than the interval.
 */
function renewDueAtMs(state: WorkerState, run: RunRecord): number {
  const intervalMs = Math.min(state.config.renewIntervalMs, Math.floor(run.leaseGrantedMs / 3));
  if (run.acceptancePending === true) return run.startedAtMs + Math.min(state.config.acceptanceDelayMs, intervalMs);
  return run.lastRenewAtMs + Math.max(1, intervalMs);
}

function nextWake(state: WorkerState, nowMs: number): number | null {
  let next = Number.POSITIVE_INFINITY;
  for (const run of Object.values(state.running)) {
    next = Math.min(next, run.leaseExpiresAtMs, renewDueAtMs(state, run));
  }
  for (const pending of Object.values(state.pending))
    next = Math.min(next, pending.sentAtMs + state.config.pendingBidMs);
  for (const entry of Object.values(state.outbox)) next = Math.min(next, entry.nextTryAtMs);
  next = Math.min(next, nextOfferAtMs(state, nowMs));
  return Number.isFinite(next) ? next : null;
}

/** The worker's transition function. */
export function stepWorker(state: WorkerState, input: WorkerInput, nowMs: number, rng: Rng): StepOutput<WorkerState> {
  const step = new Step(state, nowMs, rng);
  // A wake-up at or before now has fired: forget it, so one asked for at that same instant is not taken as asked already.
  if (state.timerAtMs !== null && state.timerAtMs <= nowMs) state.timerAtMs = null;
  // Any tick consumes the wake-up asked for, even an early one: it is asked for again at the end of the step.
  if (input.kind === "tick" || input.kind === "restart") state.timerAtMs = null;
  switch (input.kind) {
    case "announcement":
      onAnnouncement(step, input.signer, input.announcement, input.cachedInputBytes ?? 0);
      break;
    case "award":
      onAward(step, input.signer, input.award);
      break;
    case "reject":
      onReject(step, input.signer, input.reject);
      break;
    case "lease-renew":
      onLeaseRenew(step, input.signer, input.renew);
      break;
    case "cancel":
      onCancel(step, input.signer, input.cancel);
      break;
    case "verdict":
      forgetJob(state, input.verdict.project, input.verdict.jobId);
      break;
    case "result-ack":
      onResultAck(step, input.signer, input.ack);
      break;
    case "restart":
      onRestart(step);
      break;
    case "execution-finished":
      onFinished(step, input.report);
      break;
    case "set-availability":
      state.availability = input.availability;
      if (input.availability === "offline")
        for (const run of Object.values(state.running)) kill(step, run, "the worker went offline");
      break;
    case "rules":
      state.config = { ...state.config, rules: checkedRules(input.rules) };
      break;
    case "facts":
      state.facts = input.facts;
      break;
    case "specs":
      if (input.specs.length > maxSpecsPerAdvert)
        throw new RangeError(`specs: expected at most ${maxSpecsPerAdvert} claims, got ${input.specs.length}`);
      state.config = { ...state.config, specs: [...input.specs] };
      state.claimsVersion++;
      break;
    case "masters":
      onMasters(state, input.project, input.masters);
      break;
    case "tick":
      onTick(step);
      break;
  }
  bidWhileFree(step);
  offerSlots(step);
  const next = nextWake(state, nowMs);
  if (next !== null && next !== state.timerAtMs) {
    state.timerAtMs = next;
    step.effects.push({ type: "set-timer", atMs: next });
  }
  return { state, effects: step.effects };
}

/**
 * Whether stepping this input would change nothing in the machine: a verdict about a job the worker holds no
 * announcement of (all a verdict does is drop the job's candidate). A shell may skip handing it over; the simulator
 * does, for the verdicts that reach every worker of a big mesh.
 */
export function changesNothing(state: WorkerState, input: WorkerInput): boolean {
  return input.kind === "verdict" && !(jobKey(input.verdict.project, input.verdict.jobId) in state.candidates);
}

/** What the worker offers now, as a status line would show it: its availability and the slots it would offer. */
export function offerStatus(state: WorkerState): { readonly availability: Availability; readonly freeSlots: number } {
  const availability = effectiveAvailability(state);
  return { availability, freeSlots: availability === "eager" ? Math.max(0, freeSlots(state)) : 0 };
}

/** A stretch of a running job's output, as the message that carries it to the run's master; null for a run not held. */
export function logChunkOf(
  state: WorkerState,
  runId: string,
  chunk: { readonly stream: "stdout" | "stderr"; readonly offset: number; readonly data: Uint8Array },
  nowMs: number,
): { readonly to: string; readonly message: OutboundMessage } | null {
  const run = state.running[runId];
  if (run === undefined) return null;
  return {
    to: run.master,
    message: {
      domain: "logChunk",
      body: {
        issuedAtMs: nowMs,
        expiresAtMs: nowMs + Math.min(logChunkLifetimeMs, maxLogChunkLifetimeMs),
        project: run.project,
        jobId: run.jobId,
        attempt: run.attempt,
        stream: chunk.stream,
        offset: chunk.offset,
        data: chunk.data,
      },
    },
  };
}
