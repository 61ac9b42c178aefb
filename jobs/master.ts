/**
 * The master: one per project on a master node. A state machine with no I/O
 * (DESIGN.md, Rule 1): `stepMaster(state, input, nowMs, rng)` returns the next
 * state and the effects to carry out.
 *
 * House rules of this file:
 * - Inputs arrive verified: the shell opened the envelope (crypto/), checked
 *   the signer against trust and the replay ledger. Signers are hex keys.
 * - Every message may come late, twice or out of order; handling is
 *   idempotent by (job, attempt, worker). A message about a job or attempt in
 *   another state than it expects is dropped with a log effect, never an error.
 * - The state is plain data (JSON-safe), updated in place for speed: the
 *   caller hands it over and uses the returned one.
 * - Every table has a bound, every wait a time: see MasterConfig.
 * - A step says what it changed (MasterChanges): the shell core persists the
 *   job records and reputations named there, never the whole state, and a
 *   restarted master is rebuilt from them (restoreMaster). Known workers
 *   (from adverts) are soft state: they come back with the next adverts.
 * - A restart is an input: running leases are extended (restartGraceMs),
 *   since no worker could renew with a master that was down.
 * - An award uses one slot of the worker's offer at once; a worker that
 *   refuses an award (its slot was taken) offers nothing until it says so
 *   again, and the run goes to the next offer in the same step.
 *
 * A job's life: submit → awarded at once, every shard and replica in the
 * same step, to distinct workers whose standing offers are on hand (signed
 * "k free slots until T", sent directly by eager workers; chosen as bids are,
 * below) → what offers cannot cover is announced (round 0) with a bid
 * probability chosen so that the expected number of bids is a small constant
 * whatever the pool size, when some known worker would answer (a reluctant
 * one, or none is known) → bids collect for bidWindowMs, or until enough are
 * in → the chosen bids get awards with leases, the others rejects → too few
 * bids: re-announce with a higher probability → an offer that arrives while
 * a job wants runs is awarded at once → results grouped per shard by their
 * digest → quorum reached on every shard: verdict (gossiped only for a job
 * that was announced: nobody else holds it). Lost leases, refusals and disagreement make new attempts, up to
 * the job's bound (runs started count toward maxAttempts, awards refused or unanswered toward
 * maxUnstartedAwardsPerShard); the deadline and cancel end a job at any time.
 *
 * Believe no one for free (the Sybil rules). Anyone can make keys, so:
 * - Nothing a bidder states ranks it. Awards use what this master verified:
 *   whether trust names the worker a runner of the project (the project's own
 *   machines, from its keyset), and its record of agreeing results here.
 *   Equals are chosen at random.
 * - A result counts toward a quorum only with weight: a runner's result
 *   anchors a quorum; any other worker's result weighs
 *   consecutiveValid / validRunsForFullWeight (at most 1), so a fresh
 *   identity weighs nothing, and one disagreement sets it back to nothing. A
 *   runner's result decides its shard (it is the project's own machine);
 *   otherwise a digest decides when `quorum` results that each carry weight
 *   agree on it, weigh at least quorumWeight together, and outweigh every
 *   other digest reported for the shard by quorumWeight, once no replica of
 *   the shard is in flight. No digest decides against a runner's, and when
 *   results disagree and the project has a runner that could run the job,
 *   only a runner's result settles the shard (the next run goes to a
 *   runner). So throwaway identities cannot complete a quorum, and colluders
 *   who earned weight cannot outvote an honest replica, however early they
 *   report.
 * - Replicas of one shard go to workers on distinct network prefixes (as the
 *   connection that carried the bid shows), so identities behind one address
 *   cannot fill a shard.
 * - A shard's first run goes to a worker whose result would anchor the
 *   quorum (a runner or a fully weighed worker) when one bids; with
 *   probability spotCheckFraction to a runner, which then has the last word.
 *   The other runs go to the heaviest workers first (equals at random).
 * - Only runners may run a shard alone (BOINC's adaptive replication), unless
 *   the project opts in for volunteers.
 *
 * Locks (mesh-wide semaphores): a job's `locks` name the project locks each of
 * its runs holds. An award holds them from when it is made until its run ends
 * (a result, a refusal), it is lost unanswered, or its lease lapses; a run
 * whose lease lapsed, or that the master cancelled, holds them until its
 * result comes or lockReleaseGraceMs past its lease, since its worker stops it
 * only when the cancel or the lapse reaches it, and a kill takes a moment. A run may take a lock only while fewer
 * runs hold it than the least count any of them (and the job itself) names, so
 * no holder ever runs beside more holders than its own count allows. A job
 * that wants runs while a lock is full waits for that lock: it is not announced
 * and takes no offer, and it is planned again (highest priority, then oldest,
 * first) when a holder lets go. The holds are kept in the attempt records
 * (`locksHeld`), so a restarted master rebuilds them from its store.
 */
import { explainPoolText, isEligible, maxSlots } from "../capabilities/index.ts";
import { maxReasonChars } from "../crypto/index.ts";
import { resultDigest } from "./digest.ts";
import type { Rng, StepOutput } from "./effects.ts";
import { keyOf, StepContext } from "./effects.ts";
import {
  type Bid,
  type JobLock,
  type JobSpec,
  type LeaseRenew,
  type LogChunk,
  maxAnnouncementLifetimeMs,
  maxAnnouncementRounds,
  maxAwardLifetimeMs,
  maxCancelLifetimeMs,
  maxEligiblePool,
  maxResultAckLifetimeMs,
  maxVerdictLifetimeMs,
  maxWantedRuns,
  type Offer,
  type Outcome,
  type Result,
} from "./messages.ts";
import { peekTimer, popTimer, pushTimer, type TimerEntry } from "./timers.ts";

export interface MasterConfig {
  readonly project: string;
  /** How long bids collect after an announcement before awards go out. Default 250 ms. */
  readonly bidWindowMs: number;
  /** Lease an award carries; a worker renews it well before it lapses. Default 60 s. */
  readonly leaseMs: number;
  /**
   * A worker answers an award within seconds (a first lease renewal soon after it starts the run, the run's result if
   * it ends sooner, or a refusal): an award unanswered this
   * long is lost, and the run goes elsewhere, rather than wait out a lease for a worker that vanished with its offer
   * standing. Default 15 s.
   */
  readonly awardAnswerMs: number;
  /**
   * After a restart, running leases last at least this long: the workers could not renew with a master that was
   * down, and one that finished meanwhile delivers its result from its outbox, whose retries wait up to 10 s.
   * Default 30 s.
   */
  readonly restartGraceMs: number;
  /** Lifetime of an announcement: a worker holds it as a candidate this long. Default 10 min. */
  readonly announcementTtlMs: number;
  /** Expected bids per wanted run that the bid probability aims at. Default 3. */
  readonly targetBidsPerRun: number;
  /** Factor on the bid probability when a round drew too few bids. Default 4. */
  readonly reannounceGrowth: number;
  /** Once the bid probability is 1, how long until the next re-announcement. Default 30 s. */
  readonly reannounceIntervalMs: number;
  /** BOINC adaptive replication: consecutive agreeing results before a worker may be trusted alone. Default 10. */
  readonly trustAloneAfterValid: number;
  /** Jobs kept, open or ended; the oldest ended ones go first. Default 100,000. */
  readonly maxJobs: number;
  /** Bids held in one job's bid window. Default 64. */
  readonly maxBidsPerWindow: number;
  /** Workers known from adverts, for the eligible-pool estimate. Default 100,000. */
  readonly maxKnownWorkers: number;
  /** Workers with a reputation record. Default 100,000. */
  readonly maxReputations: number;
  /**
   * Weight a group of agreeing results must hold to decide a shard unless it holds a runner's result. A worker weighs
   * consecutiveValid / validRunsForFullWeight, at most 1. 0 turns weight off: a count of agreeing results decides, as
   * any identity's word counts. Default 1.
   */
  readonly quorumWeight: number;
  /** Consecutive agreeing results after which a worker weighs 1. Default 5. */
  readonly validRunsForFullWeight: number;
  /** Whether replicas of one shard must come from distinct network prefixes. Default true. */
  readonly distinctPrefixes: boolean;
  /** Probability that a shard's first run goes to a runner when one bids, whose result then has the last word. Default 0.1. */
  readonly spotCheckFraction: number;
  /** Whether workers that are not runners may be trusted alone (adaptive replication). Default false. */
  readonly trustVolunteersAlone: boolean;
  /** Known workers with no agreeing result here yet, from adverts anyone can sign; the oldest go first. Default 10,000. */
  readonly maxUnprovenWorkers: number;
  /**
   * Awards of one shard that no worker started (refused at once, or unanswered within awardAnswerMs): bounded apart
   * from the runs (maxAttempts), so that standing offers of workers cut off by a partition, or slots taken since they
   * were offered, cost a job time, not its runs. Each is one worker (a worker runs a shard at most once) on a prefix
   * of its own among the volunteers (distinctPrefixes). Default 32: a master cut off with 30% of the mesh picks a dead
   * offer with probability 0.7 at first, 32 in a row about once in 90,000 shards.
   */
  readonly maxUnstartedAwardsPerShard: number;
  /**
   * A run whose lease lapsed, or that this master cancelled, holds its job's locks this much past its lease: its worker
   * kills the run when the lease lapses, and the kill takes a moment. Default 5 s.
   */
  readonly lockReleaseGraceMs: number;
}

export const defaultMasterConfig: Omit<MasterConfig, "project"> = {
  bidWindowMs: 250,
  leaseMs: 60_000,
  awardAnswerMs: 15_000,
  restartGraceMs: 30_000,
  announcementTtlMs: 10 * 60_000,
  targetBidsPerRun: 3,
  reannounceGrowth: 4,
  reannounceIntervalMs: 30_000,
  trustAloneAfterValid: 10,
  maxJobs: 100_000,
  maxBidsPerWindow: 64,
  maxKnownWorkers: 100_000,
  maxReputations: 100_000,
  quorumWeight: 1,
  validRunsForFullWeight: 5,
  distinctPrefixes: true,
  spotCheckFraction: 0.1,
  trustVolunteersAlone: false,
  maxUnprovenWorkers: 10_000,
  maxUnstartedAwardsPerShard: 32,
  lockReleaseGraceMs: 5_000,
};

/** What the master keeps of a worker's standing offer: what to award from, and the eligible pool to count. */
export interface KnownWorker {
  readonly dimensions: Offer["dimensions"];
  readonly specs: Offer["specs"];
  readonly availability: Offer["availability"];
  /** Slots offered and not yet used by an award of this master. */
  freeSlots: number;
  readonly expiresAtMs: number;
  /** The offer's sequence number: an offer not newer than the one held is dropped (a replay, or late). */
  readonly seq: number;
  /** Trust names this worker a runner of the project. */
  readonly runner: boolean;
  /** The network prefix of the connection the offer came on; empty when unknown. */
  readonly prefix: string;
  /** The volunteer lets jobs that ask for the network have it. */
  readonly network: boolean;
  /** The worker process the offer came from (the offer's epoch). */
  readonly epoch: number;
  /** Awards this master made to that process: with the offer's awardsSeen, the slots of awards still in flight. */
  awardsMade: number;
  /**
   * The worker's local locks and the runs naming each it takes, as its offer said less the awards this master made
   * of jobs naming them since; absent when it declares none. A hint, so that such jobs go elsewhere: the worker
   * refuses at once an award that would exceed one.
   */
  locks?: Record<string, number>;
  /**
   * For a worker that declares locks: the locks of it named by each of the last awards made to its process, newest
   * last, at most its slots. An offer that crosses awards in flight counts their locks taken, as it counts their slots.
   */
  awardLocks?: string[][];
  /**
   * Awards to it left unanswered in a row since it was last heard from, and until when nothing more is awarded from
   * its offer (awardAnswerMs doubled for each, at most maxOfferSuspensionMs): a worker cut off by a partition never saw
   * the award, so it keeps its offer standing and would not offer again for the rest of its lifetime.
   */
  unanswered?: number;
  suspendedUntilMs?: number;
}

/** The longest a worker's offer is set aside after awards it left unanswered. */
export const maxOfferSuspensionMs = 30 * 60_000;

/** Offers of one tier looked at to award one job's runs: all of them up to this many, else this many drawn at random. */
export const maxOfferCandidates = 256;

/** Who made an offer, as this master verified it: a runner of the project, a worker with a record here, or anyone. */
export type OfferTier = "runner" | "proven" | "unproven";

/** Distinct job requirement sets whose eligible-pool count is cached. */
export const maxPoolCacheEntries = 1024;

export type JobStatus = "open" | "passed" | "failed" | "cancelled";
export type AttemptState = "running" | "reported" | "lost" | "refused" | "cancelled";

export interface AttemptRecord {
  readonly attempt: number;
  readonly shard: number;
  readonly worker: string;
  /** Trust named the worker a runner of the project when it bid. */
  readonly runner: boolean;
  /** The network prefix its bid came from; empty when unknown. */
  readonly prefix: string;
  readonly awardedAtMs: number;
  leaseExpiresAtMs: number;
  /**
   * The worker answered the award by starting it (a renewal, or a result other than a refusal); absent in a record
   * kept before answers were asked for.
   */
  answered?: boolean;
  /**
   * The run holds its job's project locks (see the file comment): from the award until its run ends, is refused, is
   * lost, or its lease lapses. Absent for a job without locks.
   */
  locksHeld?: boolean;
  state: AttemptState;
  digest: string | null;
  outcome: Outcome | null;
  exitCode: number | null;
  outputsDigest: string | null;
  logDigest: string | null;
  summary: string;
}

export interface ShardRecord {
  /** The digest a quorum agreed on; null while undecided or when the shard failed. */
  decidedDigest: string | null;
  decidedOutcome: Outcome | null;
  /** Why the shard cannot be decided; empty while it still can. */
  failure: string;
  /**
   * Awards made for this shard, every state included. Those a worker started count toward the job's maxAttempts;
   * those refused or unanswered toward maxUnstartedAwardsPerShard (see unstartedAwards).
   */
  runsAwarded: number;
  /** A worker with a long record of agreeing results runs this shard alone (adaptive replication). */
  trustedAlone: string | null;
  /** The shard's first run was offered to a runner first (a spot check). */
  spotCheck: boolean;
}

/** A bid held until its window closes: only what this master verified of the bidder, nothing the bidder states. */
export interface PendingBid {
  readonly worker: string;
  readonly round: number;
  readonly receivedAtMs: number;
  readonly runner: boolean;
  readonly prefix: string;
  /** A standing offer on hand, not a bid: it may take several runs of one job, one per slot it offers. */
  readonly offered?: boolean;
}

export interface JobRecord {
  readonly jobId: string;
  readonly spec: JobSpec;
  readonly submittedAtMs: number;
  status: JobStatus;
  reason: string;
  endedAtMs: number | null;
  round: number;
  bidProbability: number;
  eligibleEstimate: number;
  lastAnnouncedAtMs: number;
  /** When the current bid window closes; null when none is open. */
  windowEndsAtMs: number | null;
  /** When to announce again if runs are still wanted; null when no runs are wanted. */
  reannounceAtMs: number | null;
  bids: PendingBid[];
  attempts: AttemptRecord[];
  shards: ShardRecord[];
  /** Bids received over the job's life, for the bid-storm figures. */
  bidsReceived: number;
  announcements: number;
}

export interface Reputation {
  /** BOINC's consecutive valid results: reset to 0 by one disagreeing result. */
  consecutiveValid: number;
  validTotal: number;
  invalidTotal: number;
}

export interface MasterState {
  readonly config: MasterConfig;
  jobs: Record<string, JobRecord>;
  /** Ids of jobs in submission order, for eviction of the oldest ended ones. */
  jobOrder: string[];
  /** Known workers with a record of agreeing results here, or runners. */
  workers: Record<string, KnownWorker>;
  /** Known workers without one: anyone can sign adverts, so this table has its own, smaller bound. */
  unproven: Record<string, KnownWorker>;
  /** How many entries `unproven` holds. */
  unprovenCount: number;
  /** Keys of `unproven` in the order they came (with keys since gone, skipped): the oldest is evicted first. */
  unprovenOrder: string[];
  /** Where the live part of `unprovenOrder` starts. */
  unprovenHead: number;
  reputation: Record<string, Reputation>;
  /** How many entries `reputation` holds. */
  reputationCount: number;
  timers: TimerEntry[];
  /** The wake-up last asked of the shell, so a step only asks again when it changed. */
  timerAtMs: number | null;
  /** Bumped when the known workers change, to invalidate cached pool estimates. */
  workersVersion: number;
  /** How many entries `workers` holds, so an offer checks the bound without listing every known worker. */
  knownWorkerCount: number;
  poolCache: Record<
    string,
    [version: number, eligible: number, reluctant: number, eager: number, validUntilMs: number]
  >;
  /**
   * Known workers whose offer has eager slots left to award, by tier (runners, workers with a record here, the
   * rest), each in no order (removed by swapping in the last): a flood of fresh keys fills only the last tier.
   */
  offering: Record<OfferTier, string[]>;
  /** Where each offering worker sits in `offering`. */
  offeringAt: Record<string, [tier: OfferTier, index: number]>;
  /**
   * Open jobs that want runs no award covers yet, each with the least weight its next run must carry (as of its last
   * plan; a job is planned again at least every reannounceIntervalMs): an offer from a worker that weighs as much is
   * given to them at once.
   */
  hungry: Record<string, number>;
  /** Bumped when a worker with a record here offers, goes, or its record changes: what weighs who is known. */
  provenVersion: number;
  /**
   * Whether a worker of some weight that has not run a shard is known (workerOfWeightKnown), by job, shard and weight:
   * valid while provenVersion and the job's awards are unchanged, until the worker it found lapses. Asked for every
   * hungry job at every offer, it cost a busy master a scan of every worker with a record each time.
   */
  weightKnownCache: Record<string, [provenVersion: number, awards: number, validUntilMs: number, known: boolean]>;
  /**
   * The runs holding each project lock, with the count each one's job names: derived from the attempt records whose
   * locksHeld is set (restoreMaster rebuilds it).
   */
  lockHolders: Record<string, LockHold[]>;
  /** Open jobs that want runs while a lock they name is full, by the lock they wait for: planned when it frees. */
  lockWaits: Record<string, string>;
}

/** A run holding a project lock: its job, its attempt, and the count its job names for the lock. */
export type LockHold = [jobId: string, attempt: number, count: number];

export type MasterInput =
  | { readonly kind: "submit"; readonly jobId: string; readonly job: JobSpec }
  | {
      readonly kind: "bid";
      readonly signer: string;
      readonly bid: Bid;
      /** Trust names the signer a runner of the project (admission says). Default false. */
      readonly runner?: boolean;
      /** The network prefix of the connection the bid came on; empty or absent when unknown. */
      readonly prefix?: string;
    }
  | { readonly kind: "lease-renew"; readonly signer: string; readonly renew: LeaseRenew }
  | { readonly kind: "result"; readonly signer: string; readonly result: Result }
  | {
      readonly kind: "offer";
      readonly signer: string;
      readonly offer: Offer;
      /** Trust names the signer a runner of the project (admission says). Default false. */
      readonly runner?: boolean;
      /** The network prefix of the connection the offer came on; empty or absent when unknown. */
      readonly prefix?: string;
    }
  | { readonly kind: "log-chunk"; readonly signer: string; readonly chunk: LogChunk }
  | { readonly kind: "cancel"; readonly jobId: string; readonly reason: string }
  /** The node (re)started from its stored records: leases restart, wake-ups must be asked anew. */
  | { readonly kind: "restart" }
  | { readonly kind: "tick" };

/** What one step changed: the job records and reputations to persist, and the jobs and reputations evicted. */
export interface MasterChanges {
  readonly jobs: ReadonlySet<string>;
  readonly removedJobs: ReadonlySet<string>;
  readonly removedReputations: ReadonlySet<string>;
  readonly reputations: ReadonlySet<string>;
}

export interface MasterStepOutput extends StepOutput<MasterState> {
  readonly changes: MasterChanges;
}

export function createMaster(config: Partial<MasterConfig> & { project: string }): MasterState {
  return {
    config: { ...defaultMasterConfig, ...config },
    jobs: {},
    jobOrder: [],
    workers: {},
    unproven: {},
    unprovenCount: 0,
    unprovenOrder: [],
    unprovenHead: 0,
    reputation: {},
    reputationCount: 0,
    timers: [],
    timerAtMs: null,
    workersVersion: 0,
    knownWorkerCount: 0,
    poolCache: {},
    provenVersion: 0,
    weightKnownCache: {},
    offering: { runner: [], proven: [], unproven: [] },
    offeringAt: {},
    hungry: {},
    lockHolders: {},
    lockWaits: {},
  };
}

/** Thrown for inputs a caller must not make (a job id submitted twice): those are bugs or user errors, not network noise. */
export class MasterInputError extends Error {
  readonly code = "ERR_MASTER_INPUT";
}

class Step extends StepContext<MasterState> {
  readonly changedJobs = new Set<string>();
  readonly removedJobs = new Set<string>();
  readonly changedReputations = new Set<string>();
  readonly removedReputations = new Set<string>();
  /** Locks a run let go of in this step: the jobs waiting for them are planned again before the step ends. */
  readonly releasedLocks = new Set<string>();
}

/**
 * The first lock of the job that one more run may not take now, or undefined: a lock is full while as many runs hold
 * it as the least count named by them and by this job.
 */
export function blockingLock(state: MasterState, spec: JobSpec): string | undefined {
  if (spec.locks === undefined || spec.locks.length === 0) return undefined;
  for (const lock of spec.locks) {
    const holders = state.lockHolders[lock.name];
    if (holders === undefined) continue;
    let limit = lock.count;
    for (const hold of holders) limit = Math.min(limit, hold[2]);
    if (holders.length >= limit) return lock.name;
  }
  return undefined;
}

function takeLocks(state: MasterState, job: JobRecord, attempt: AttemptRecord): void {
  const locks = job.spec.locks;
  if (locks === undefined || locks.length === 0) return;
  attempt.locksHeld = true;
  for (const lock of locks) addHold(state, lock, [job.jobId, attempt.attempt, lock.count]);
}

function addHold(state: MasterState, lock: JobLock, hold: LockHold): void {
  const holders = state.lockHolders[lock.name];
  if (holders === undefined) state.lockHolders[lock.name] = [hold];
  else holders.push(hold);
}

/** The run lets go of its job's locks (its run ended, was refused or lost, or its lease lapsed). */
function releaseLocks(step: Step, job: JobRecord, attempt: AttemptRecord): void {
  if (attempt.locksHeld !== true) return;
  const { state } = step;
  attempt.locksHeld = false;
  step.changedJobs.add(job.jobId);
  for (const lock of job.spec.locks ?? []) {
    const holders = state.lockHolders[lock.name];
    if (holders === undefined) continue;
    const index = holders.findIndex((hold) => hold[0] === job.jobId && hold[1] === attempt.attempt);
    if (index >= 0) holders.splice(index, 1);
    if (holders.length === 0) delete state.lockHolders[lock.name];
    step.releasedLocks.add(lock.name);
  }
}

/** When a run that is no longer running (lost, cancelled) lets go of its locks: its worker has stopped it by then. */
function holdEndsAtMs(state: MasterState, attempt: AttemptRecord): number {
  return attempt.leaseExpiresAtMs + state.config.lockReleaseGraceMs;
}

/** Runs lost or cancelled whose lease and grace have passed since: they let go of their locks. */
function releaseLapsedHolds(step: Step, job: JobRecord): void {
  if (job.spec.locks === undefined) return;
  for (const attempt of job.attempts)
    if (attempt.locksHeld === true && attempt.state !== "running" && holdEndsAtMs(step.state, attempt) <= step.nowMs)
      releaseLocks(step, job, attempt);
}

/** The job wants runs while `lock` is full: it waits for it, unannounced and out of the offers' way. */
function waitForLock(step: Step, job: JobRecord, lock: string): void {
  const { state } = step;
  delete state.hungry[job.jobId];
  job.reannounceAtMs = null;
  if (state.lockWaits[job.jobId] === lock) return;
  state.lockWaits[job.jobId] = lock;
  step.log("lock-wait", { jobId: job.jobId, lock });
}

/** Plans again the jobs waiting for a lock a run let go of in this step, highest priority first, then the oldest. */
function wakeLockWaiters(step: Step): void {
  const { state } = step;
  // Planning takes locks but lets none go, so one pass would do; the bound only guards against a mistake.
  for (let pass = 0; pass < maxLockWakePasses && step.releasedLocks.size > 0; pass++) {
    const released = new Set(step.releasedLocks);
    step.releasedLocks.clear();
    const waiting: JobRecord[] = [];
    for (const jobId in state.lockWaits) {
      const job = state.jobs[jobId];
      if (job === undefined || job.status !== "open") delete state.lockWaits[jobId];
      else if (released.has(state.lockWaits[jobId] as string)) waiting.push(job);
    }
    waiting.sort(
      (a, b) =>
        b.spec.priority - a.spec.priority ||
        a.submittedAtMs - b.submittedAtMs ||
        (a.jobId < b.jobId ? -1 : a.jobId > b.jobId ? 1 : 0),
    );
    // Each stays listed while planned: one that must wait on for the same lock does not begin a new wait.
    for (const job of waiting) {
      step.changedJobs.add(job.jobId);
      planNext(step, job);
    }
  }
}

/** Passes of wakeLockWaiters in one step. */
const maxLockWakePasses = 4;

function runBound(spec: JobSpec): number {
  return Math.max(spec.maxAttempts, spec.replicas);
}

/**
 * Awards of a shard its worker never started: refused at once (before the lease renewal a worker sends as it starts a
 * run), or lost without an answer. A run refused after it started (its inputs past the job's disk, its sandbox
 * failed) was the job's run, and counts toward maxAttempts.
 */
function unstartedAwards(job: JobRecord, shard: number): number {
  let unstarted = 0;
  for (const attempt of job.attempts)
    if (
      attempt.shard === shard &&
      attempt.answered === false &&
      (attempt.state === "refused" || attempt.state === "lost")
    )
      unstarted++;
  return unstarted;
}

/**
 * Awards a shard may still get: runs within the job's run bound, and unstarted awards within theirs. An award not
 * answered yet may end either way, so it counts against both until it does.
 */
function awardsLeft(state: MasterState, job: JobRecord, shard: number): number {
  const record = job.shards[shard] as ShardRecord;
  const unstarted = unstartedAwards(job, shard);
  let unanswered = 0;
  for (const attempt of job.attempts)
    if (attempt.shard === shard && attempt.state === "running" && attempt.answered === false) unanswered++;
  return Math.max(
    0,
    Math.min(
      runBound(job.spec) - (record.runsAwarded - unstarted),
      state.config.maxUnstartedAwardsPerShard - unstarted - unanswered,
    ),
  );
}

/** What one worker's result weighs toward a quorum (see the file comment): runners anchor, others earn. */
function weightOf(state: MasterState, worker: string, runner: boolean): number {
  if (runner) return Number.POSITIVE_INFINITY;
  return Math.min(1, reputationOf(state, worker).consecutiveValid / state.config.validRunsForFullWeight);
}

/** Whether a worker's result alone would carry a quorum's weight: the run worth giving first. */
function anchors(state: MasterState, worker: string, runner: boolean): boolean {
  return weightOf(state, worker, runner) >= state.config.quorumWeight;
}

interface DigestGroup {
  readonly attempts: AttemptRecord[];
  /** The sum of its results' weights (Infinity with a runner's). */
  weight: number;
  /** Its results that carry weight of their own: a runner's, or a worker's with an agreeing record here. */
  weighed: number;
  /** A runner reported this digest. */
  runner: boolean;
}

/** The shard's reported results grouped by digest, with their weight, and the digests runners reported. */
function digestGroups(state: MasterState, job: JobRecord, shard: number) {
  const groups = new Map<string, DigestGroup>();
  const runnerDigests = new Set<string>();
  for (const attempt of job.attempts) {
    if (attempt.shard !== shard || attempt.state !== "reported" || attempt.digest === null) continue;
    let group = groups.get(attempt.digest);
    if (group === undefined) {
      group = { attempts: [], weight: 0, weighed: 0, runner: false };
      groups.set(attempt.digest, group);
    }
    group.attempts.push(attempt);
    const weight = weightOf(state, attempt.worker, attempt.runner);
    group.weight += weight;
    if (weight > 0) group.weighed++;
    if (attempt.runner) {
      group.runner = true;
      runnerDigests.add(attempt.digest);
    }
  }
  return { groups, runnerDigests };
}

/**
 * Whether a group of agreeing results decides its shard (the file comment's rules). No runner may have reported
 * another digest. With weight off, `quorum` results decide. Otherwise a runner's result decides (it is the project's
 * own machine), or `quorum` results that each carry weight, weighing quorumWeight together and more than any rival
 * digest by quorumWeight: unweighed identities cannot complete a quorum, and colluders cannot outvote an anchor.
 */
function decides(
  state: MasterState,
  digest: string,
  group: DigestGroup,
  groups: ReadonlyMap<string, DigestGroup>,
  quorum: number,
  runnerDigests: ReadonlySet<string>,
  live: number,
  runnerWanted: boolean,
): boolean {
  // Runners that disagree leave the shard undecided: the project's own machines do not agree on the answer.
  if (runnerDigests.size > 1 || (runnerDigests.size === 1 && !runnerDigests.has(digest))) return false;
  const { quorumWeight } = state.config;
  if (quorumWeight === 0) return group.attempts.length >= quorum;
  // Every replica in flight is heard first: colluders who report at once must not decide before the honest ones, and
  // volunteers replicating next to a runner earn their weight by agreeing with it.
  if (live > 0) return false;
  if (group.runner) return true;
  if (runnerWanted) return false;
  if (group.weighed < quorum || group.weight < quorumWeight) return false;
  for (const [other, rival] of groups) if (other !== digest && group.weight - rival.weight < quorumWeight) return false;
  return true;
}

/** Whether a runner of the project could run this job now, by its advert: who settles a dispute. */
function runnerKnown(state: MasterState, spec: JobSpec, nowMs: number): boolean {
  for (const worker of Object.values(state.workers))
    if (
      worker.runner &&
      worker.expiresAtMs >= nowMs &&
      worker.availability !== "paused" &&
      worker.availability !== "offline" &&
      isEligible(spec, worker)
    )
      return true;
  return false;
}

/**
 * Whether a worker that weighs at least minWeight (runners weigh without bound) and has not run this shard could run
 * the job now, by its offer: only then is it worth waiting for one rather than spending the run bound.
 */
function workerOfWeightKnown(
  state: MasterState,
  job: JobRecord,
  shard: number,
  nowMs: number,
  minWeight: number,
): boolean {
  const memoKey = `${job.jobId}/${shard}/${minWeight}`;
  const cached = state.weightKnownCache[memoKey];
  if (
    cached !== undefined &&
    cached[0] === state.provenVersion &&
    cached[1] === job.attempts.length &&
    nowMs <= cached[2]
  )
    return cached[3];
  let found: KnownWorker | undefined;
  for (const key in state.workers) {
    const worker = state.workers[key] as KnownWorker;
    if (
      worker.expiresAtMs >= nowMs &&
      worker.availability !== "paused" &&
      worker.availability !== "offline" &&
      weightOf(state, key, worker.runner) >= minWeight &&
      !workerUsedOnShard(job, key, shard, worker.runner) &&
      isEligible(job.spec, worker)
    ) {
      found = worker;
      break;
    }
  }
  // Entries of older versions are dead weight: drop them all when the table is full.
  if (cached === undefined && Object.keys(state.weightKnownCache).length >= maxPoolCacheEntries)
    state.weightKnownCache = {};
  state.weightKnownCache[memoKey] = [
    state.provenVersion,
    job.attempts.length,
    found?.expiresAtMs ?? Number.MAX_SAFE_INTEGER,
    found !== undefined,
  ];
  return found !== undefined;
}

/**
 * Whether the shard waits for a runner's result: results disagree (any of them, weighed or not), no runner reported,
 * weight is on and the project has a runner that could run it. Disputes are settled by the project's own machines;
 * without one, the weight margin of `decides` settles them.
 */
function awaitsRunner(
  state: MasterState,
  job: JobRecord,
  groups: ReadonlyMap<string, DigestGroup>,
  runnerDigests: ReadonlySet<string>,
  nowMs: number,
): boolean {
  if (state.config.quorumWeight === 0 || groups.size < 2 || runnerDigests.size > 0) return false;
  return runnerKnown(state, job.spec, nowMs);
}

/** Runs a shard still needs beyond those in flight (see the file comment for the rule). */
function runsNeeded(state: MasterState, job: JobRecord, shard: number, nowMs: number): number {
  const record = job.shards[shard] as ShardRecord;
  if (job.status !== "open" || record.decidedDigest !== null || record.failure !== "") return 0;
  let live = 0;
  let reported = 0;
  for (const attempt of job.attempts) {
    if (attempt.shard !== shard) continue;
    if (attempt.state === "running") live++;
    else if (attempt.state === "reported" && attempt.digest !== null) reported++;
  }
  if (record.trustedAlone !== null) return live + reported === 0 ? 1 : 0;
  const { groups, runnerDigests } = digestGroups(state, job, shard);
  if (awaitsRunner(state, job, groups, runnerDigests, nowMs)) {
    const runnerLive = job.attempts.some(
      (attempt) => attempt.shard === shard && attempt.state === "running" && attempt.runner,
    );
    return runnerLive ? 0 : Math.min(1, awardsLeft(state, job, shard));
  }
  // With weight on, only results that carry weight count toward a quorum.
  let best = 0;
  for (const group of groups.values())
    best = Math.max(best, state.config.quorumWeight === 0 ? group.attempts.length : group.weighed);
  let wanted = Math.max(job.spec.replicas - reported - live, job.spec.quorum - best - live, 0);
  // Enough results agree but they weigh too little (or a runner disagrees): one more run, once none is in flight.
  if (wanted === 0 && live === 0) wanted = 1;
  return Math.min(wanted, awardsLeft(state, job, shard));
}

function totalRunsNeeded(state: MasterState, job: JobRecord, nowMs: number): number {
  let total = 0;
  for (let shard = 0; shard < job.shards.length; shard++) total += runsNeeded(state, job, shard, nowMs);
  return total;
}

function requirementKey(spec: JobSpec): string {
  return JSON.stringify([
    spec.requiredSpecs,
    spec.os,
    spec.resources.cpus,
    spec.resources.memoryBytes,
    spec.resources.diskBytes,
    spec.network,
  ]);
}

/** The known workers that could run a job now, counted: the pool the bid probability is scaled to, and who would answer. */
interface Pool {
  /** Eligible and available with a free slot, or reluctant (those offer none): who could answer an announcement. */
  readonly eligible: number;
  /** Eligible and reluctant: they answer only an announcement (a re-announcement), never offer. */
  readonly reluctant: number;
  /** Eligible and eager, busy or not: they offer when a slot frees, with no announcement needed. */
  readonly eager: number;
}

/** Whether a known worker's offer is live, says it takes jobs, and it could run the job (its network included). */
function availableFor(spec: JobSpec, worker: KnownWorker, nowMs: number): boolean {
  if (worker.expiresAtMs < nowMs || worker.availability === "paused" || worker.availability === "offline") return false;
  return (!spec.network || worker.network) && isEligible(spec, worker);
}

function eligiblePool(state: MasterState, spec: JobSpec, nowMs: number): Pool {
  const key = requirementKey(spec);
  const cached = state.poolCache[key];
  // A count holds until the workers change or the first offer it counted lapses.
  if (cached !== undefined && cached[0] === state.workersVersion && nowMs <= cached[4])
    return { eligible: cached[1], reluctant: cached[2], eager: cached[3] };
  let eligible = 0;
  let reluctant = 0;
  let eager = 0;
  let validUntilMs = Number.MAX_SAFE_INTEGER;
  for (const worker of eachKnownWorker(state)) {
    if (!availableFor(spec, worker, nowMs)) continue;
    validUntilMs = Math.min(validUntilMs, worker.expiresAtMs);
    if (worker.availability === "reluctant") reluctant++;
    else eager++;
    if (worker.freeSlots > 0 || worker.availability === "reluctant") eligible++;
  }
  // Cached as capped: a cache hit must not hand the announcement an estimate its schema refuses.
  const capped = Math.min(eligible, maxEligiblePool);
  // Entries of older worker versions are dead weight: drop them all when the table is full.
  if (cached === undefined && Object.keys(state.poolCache).length >= maxPoolCacheEntries) state.poolCache = {};
  state.poolCache[key] = [state.workersVersion, capped, reluctant, eager, validUntilMs];
  return { eligible: capped, reluctant, eager };
}

function schedule(state: MasterState, atMs: number, jobId: string): void {
  pushTimer(state.timers, atMs, jobId);
}

function announce(step: Step, job: JobRecord): void {
  const { state, nowMs } = step;
  const wanted = Math.max(1, Math.min(totalRunsNeeded(state, job, nowMs), maxWantedRuns));
  job.eligibleEstimate = eligiblePool(state, job.spec, nowMs).eligible;
  const base =
    job.eligibleEstimate === 0 ? 1 : Math.min(1, (state.config.targetBidsPerRun * wanted) / job.eligibleEstimate);
  // A re-announcement never lowers the probability: it exists because the last one drew too few bids.
  job.bidProbability =
    job.announcements === 0 ? base : Math.min(1, Math.max(base, job.bidProbability * state.config.reannounceGrowth));
  job.round = Math.min(job.announcements, maxAnnouncementRounds);
  job.announcements++;
  job.lastAnnouncedAtMs = nowMs;
  job.windowEndsAtMs = nowMs + state.config.bidWindowMs;
  job.reannounceAtMs = null;
  schedule(state, job.windowEndsAtMs, job.jobId);
  step.publish(state.config.project, {
    domain: "jobAnnouncement",
    body: {
      ...step.header(Math.min(state.config.announcementTtlMs, maxAnnouncementLifetimeMs)),
      project: state.config.project,
      jobId: job.jobId,
      job: job.spec,
      round: job.round,
      bidProbability: job.bidProbability,
      wantedRuns: wanted,
      eligiblePoolEstimate: job.eligibleEstimate,
    },
  });
}

function reputationOf(state: MasterState, worker: string): Reputation {
  return state.reputation[worker] ?? { consecutiveValid: 0, validTotal: 0, invalidTotal: 0 };
}

function setReputation(step: Step, worker: string, reputation: Reputation): void {
  const { state } = step;
  state.provenVersion++;
  step.changedReputations.add(worker);
  if (!(worker in state.reputation)) {
    // As with adverts: count, and list the records only when one must go.
    if (state.reputationCount >= state.config.maxReputations) {
      const oldest = Object.keys(state.reputation)[0] as string;
      delete state.reputation[oldest];
      step.changedReputations.delete(oldest);
      step.removedReputations.add(oldest);
    } else state.reputationCount++;
  }
  state.reputation[worker] = reputation;
  // A worker's first agreeing result moves its standing offer among the proven, where weight is looked for.
  const unproven = state.unproven[worker];
  if (reputation.validTotal > 0 && unproven !== undefined) {
    holdProven(state, worker, unproven);
    if (state.offeringAt[worker]?.[0] === "unproven") startOffering(state, worker, "proven");
  }
}

/** The bids in a random order (Fisher–Yates with the step's rng): equals are chosen at random. */
function shuffled(bids: readonly PendingBid[], rng: Rng): PendingBid[] {
  const order = [...bids];
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    [order[i], order[j]] = [order[j] as PendingBid, order[i] as PendingBid];
  }
  return order;
}

/**
 * Whether a worker may not run this shard (again): a worker runs a shard at most once, so no identity votes twice.
 * A runner, the project's own machine, may run it again while no run of it there is live or reported (it refused an
 * award into a slot another master took, its award went unanswered across a partition, its lease lapsed): it is who
 * settles a shard whose results weigh too little.
 */
function workerUsedOnShard(job: JobRecord, worker: string, shard: number, runner = false): boolean {
  return job.attempts.some(
    (attempt) =>
      attempt.worker === worker &&
      attempt.shard === shard &&
      (!runner || attempt.state === "running" || attempt.state === "reported"),
  );
}

function workerHasLiveAttempt(job: JobRecord, worker: string): boolean {
  return job.attempts.some((attempt) => attempt.worker === worker && attempt.state === "running");
}

function award(step: Step, job: JobRecord, bid: PendingBid, shard: number): void {
  const { state, nowMs } = step;
  let shardAttempt = 0;
  for (const earlier of job.attempts) if (earlier.shard === shard) shardAttempt++;
  const attempt: AttemptRecord = {
    attempt: job.attempts.length,
    shard,
    worker: bid.worker,
    runner: bid.runner,
    prefix: bid.prefix,
    awardedAtMs: nowMs,
    leaseExpiresAtMs: nowMs + state.config.leaseMs,
    answered: false,
    state: "running",
    digest: null,
    outcome: null,
    exitCode: null,
    outputsDigest: null,
    logDigest: null,
    summary: "",
  };
  job.attempts.push(attempt);
  takeLocks(state, job, attempt);
  (job.shards[shard] as ShardRecord).runsAwarded++;
  schedule(state, attempt.leaseExpiresAtMs, job.jobId);
  schedule(state, nowMs + state.config.awardAnswerMs, job.jobId);
  // Every award uses a slot of what the worker offered, whether it came from the offer or from a bid.
  const known = state.workers[bid.worker] ?? state.unproven[bid.worker];
  if (known !== undefined) {
    known.awardsMade++;
    known.freeSlots = Math.max(0, known.freeSlots - 1);
    if (known.locks !== undefined) {
      const named: string[] = [];
      for (const lock of job.spec.locks ?? [])
        if (lock.name in known.locks) {
          known.locks[lock.name] = Math.max(0, (known.locks[lock.name] as number) - 1);
          named.push(lock.name);
        }
      const recent = known.awardLocks ?? [];
      recent.push(named);
      if (recent.length > maxSlots) recent.shift();
      known.awardLocks = recent;
    }
    if (known.freeSlots === 0) stopOffering(state, bid.worker);
  }
  step.send(bid.worker, {
    domain: "award",
    body: {
      ...step.header(maxAwardLifetimeMs),
      project: state.config.project,
      jobId: job.jobId,
      worker: keyOf(bid.worker),
      attempt: attempt.attempt,
      shard,
      shardAttempt,
      leaseExpiresAtMs: attempt.leaseExpiresAtMs,
      job: job.spec,
    },
  });
}

/**
 * An award to the worker went unanswered: its slot is given back (the award most likely never reached it, and a
 * worker that did take it would refuse the next award into it), and nothing is awarded from its offer until the
 * suspension ends or it is heard from.
 */
function suspendOffer(state: MasterState, worker: string, nowMs: number): void {
  const known = state.workers[worker] ?? state.unproven[worker];
  if (known === undefined) return;
  known.unanswered = (known.unanswered ?? 0) + 1;
  known.suspendedUntilMs = nowMs + Math.min(state.config.awardAnswerMs * 2 ** known.unanswered, maxOfferSuspensionMs);
  known.freeSlots++;
  known.awardsMade = Math.max(0, known.awardsMade - 1);
  if (known.availability === "eager")
    startOffering(state, worker, known.runner ? "runner" : worker in state.workers ? "proven" : "unproven");
}

/** The worker answered an award: it is there, and its offer is not set aside. */
function heardFrom(state: MasterState, worker: string): void {
  const known = state.workers[worker] ?? state.unproven[worker];
  if (known === undefined || known.unanswered === undefined) return;
  delete known.unanswered;
  delete known.suspendedUntilMs;
}

/** Nothing more is awarded from what the worker offered, until it offers again. */
function dropOffer(state: MasterState, worker: string): void {
  const known = state.workers[worker] ?? state.unproven[worker];
  if (known !== undefined) known.freeSlots = 0;
  stopOffering(state, worker);
}

/** The worker's offer has no eager slot left to award (used, refused, lapsed, withdrawn or evicted). */
function stopOffering(state: MasterState, worker: string): void {
  const at = state.offeringAt[worker];
  if (at === undefined) return;
  const [tier, index] = at;
  const list = state.offering[tier];
  const last = list.pop() as string;
  if (last !== worker) {
    list[index] = last;
    state.offeringAt[last] = [tier, index];
  }
  delete state.offeringAt[worker];
}

function startOffering(state: MasterState, worker: string, tier: OfferTier): void {
  const at = state.offeringAt[worker];
  if (at !== undefined && at[0] === tier) return;
  stopOffering(state, worker);
  state.offeringAt[worker] = [tier, state.offering[tier].length];
  state.offering[tier].push(worker);
}

function offeringCount(state: MasterState): number {
  return state.offering.runner.length + state.offering.proven.length + state.offering.unproven.length;
}

/**
 * The offers on hand that could run this job now, as bids (what this master verified of each: runner, prefix): of
 * each tier, every one while they are few, else maxOfferCandidates drawn at random; every runner's always. Unproven
 * workers all weigh nothing, so of them only enough for the runs wanted are drawn (twice as many, and a few more for
 * those a prefix rule passes over). Lapsed offers met on the way are dropped.
 */
function offerCandidates(step: Step, job: JobRecord, wanted: number): PendingBid[] {
  const { state, nowMs, rng } = step;
  const candidates: PendingBid[] = [];
  for (const tier of ["runner", "proven", "unproven"] as const) {
    const list = state.offering[tier];
    const enough = tier === "unproven" ? Math.min(maxOfferCandidates, 2 * wanted + 8) : maxOfferCandidates;
    const before = candidates.length;
    if (tier === "runner" || list.length <= enough) {
      for (const worker of [...list]) {
        const candidate = offerCandidate(state, job, worker, nowMs);
        if (candidate !== undefined) candidates.push(candidate);
      }
      continue;
    }
    const drawn = new Set<string>();
    for (let tries = 0; tries < enough * 2 && candidates.length - before < enough; tries++) {
      const worker = list[Math.floor(rng() * list.length)];
      if (worker === undefined || drawn.has(worker)) continue;
      drawn.add(worker);
      const candidate = offerCandidate(state, job, worker, nowMs);
      if (candidate !== undefined) candidates.push(candidate);
    }
  }
  return shuffled(candidates, rng);
}

/** A worker's standing offer as a bid for this job, if it could run it now; a lapsed or spent offer is dropped. */
function offerCandidate(state: MasterState, job: JobRecord, worker: string, nowMs: number): PendingBid | undefined {
  const known = state.workers[worker] ?? state.unproven[worker];
  if (known === undefined || known.expiresAtMs < nowMs || known.freeSlots <= 0 || known.availability !== "eager") {
    stopOffering(state, worker);
    return undefined;
  }
  if ((known.suspendedUntilMs ?? 0) > nowMs) return undefined;
  if ((job.spec.network && !known.network) || !isEligible(job.spec, known)) return undefined;
  // A worker whose local lock the job names, with none of it left, would refuse the award.
  if (job.spec.locks !== undefined && known.locks !== undefined) {
    const locks = known.locks;
    if (job.spec.locks.some((lock) => locks[lock.name] === 0)) return undefined;
  }
  return { worker, round: job.round, receivedAtMs: nowMs, runner: known.runner, prefix: known.prefix, offered: true };
}

/** Awards what offers on hand can cover of the runs a job wants, in this step (no announcement, no window). */
function awardFromOffers(step: Step, job: JobRecord): void {
  if (offeringCount(step.state) === 0) return;
  const candidates = offerCandidates(step, job, totalRunsNeeded(step.state, job, step.nowMs));
  if (candidates.length > 0) awardRuns(step, job, candidates, new Set());
}

function reject(step: Step, jobId: string, worker: string, round: number, reason: string): void {
  step.send(worker, {
    domain: "reject",
    body: {
      ...step.header(maxAwardLifetimeMs),
      project: step.state.config.project,
      jobId,
      worker: keyOf(worker),
      round,
      reason,
    },
  });
}

/** Whether a worker's result already stands on the shard or is in flight there, from one that would anchor it. */
function shardAnchored(state: MasterState, job: JobRecord, shard: number): boolean {
  return job.attempts.some(
    (attempt) =>
      attempt.shard === shard &&
      (attempt.state === "running" || attempt.state === "reported") &&
      anchors(state, attempt.worker, attempt.runner),
  );
}

/** The next bid for a shard (see the file comment), or undefined when no bid may run it. */
function pickBid(
  state: MasterState,
  job: JobRecord,
  shard: number,
  bids: readonly PendingBid[],
  used: ReadonlySet<string>,
  runnerFirst: boolean,
  runnerOnly: boolean,
  minWeight: number,
): PendingBid | undefined {
  const prefixes = new Set<string>();
  if (state.config.distinctPrefixes)
    for (const attempt of job.attempts) if (attempt.shard === shard && attempt.prefix) prefixes.add(attempt.prefix);
  const open = bids.filter(
    (bid) =>
      (minWeight === 0 || weightOf(state, bid.worker, bid.runner) >= minWeight) &&
      !used.has(bid.worker) &&
      !workerUsedOnShard(job, bid.worker, shard, bid.runner) &&
      // A bid holds one slot; an offer may hold more, each for another shard.
      (bid.offered === true || !workerHasLiveAttempt(job, bid.worker)) &&
      // The project's own machines are not who the prefix rule guards against.
      (bid.runner || bid.prefix === "" || !prefixes.has(bid.prefix)),
  );
  // Spread a job across workers: those not yet running any of it come first.
  open.sort((a, b) => Number(workerHasLiveAttempt(job, a.worker)) - Number(workerHasLiveAttempt(job, b.worker)));
  // Workers that left an award unanswered (their offer set aside, then back) only when no other may run it: most are
  // gone, and each costs the job awardAnswerMs; one cut off by a partition that healed is found again this way.
  const doubtful = (bid: PendingBid) =>
    ((state.workers[bid.worker] ?? state.unproven[bid.worker])?.unanswered ?? 0) > 0;
  if (open.some(doubtful)) {
    const heard = open.filter((bid) => !doubtful(bid));
    return (
      pickAmong(state, job, shard, heard, runnerFirst, runnerOnly, minWeight) ??
      pickAmong(state, job, shard, open.filter(doubtful), runnerFirst, runnerOnly, minWeight)
    );
  }
  return pickAmong(state, job, shard, open, runnerFirst, runnerOnly, minWeight);
}

/** pickBid's order among the bids open to the shard (sorted: those not running any of the job first). */
function pickAmong(
  state: MasterState,
  job: JobRecord,
  shard: number,
  open: readonly PendingBid[],
  runnerFirst: boolean,
  runnerOnly: boolean,
  minWeight: number,
): PendingBid | undefined {
  if (runnerOnly) return open.find((bid) => bid.runner);
  if (runnerFirst) {
    const runner = open.find((bid) => bid.runner);
    if (runner !== undefined) return runner;
  }
  if (!shardAnchored(state, job, shard)) {
    const anchor = open.find((bid) => anchors(state, bid.worker, bid.runner));
    if (anchor !== undefined) return anchor;
  }
  // Then the heaviest (weight is what a quorum wants; equals in the random order they came in), those not running
  // any of the job before the others.
  let heaviest: PendingBid | undefined;
  let heaviestWeight = 0;
  for (const bid of open) {
    if (heaviest !== undefined && workerHasLiveAttempt(job, bid.worker)) break;
    const weight = weightOf(state, bid.worker, bid.runner);
    if (weight > heaviestWeight) {
      heaviest = bid;
      heaviestWeight = weight;
    }
  }
  return heaviest !== undefined || minWeight > 0 ? heaviest : open[0];
}

/**
 * Awards the runs each shard needs to candidates (bids, or offers on hand) by pickBid's rules, each worker at most
 * once per job; `used` gathers the workers awarded.
 */
function awardRuns(step: Step, job: JobRecord, candidates: readonly PendingBid[], used: Set<string>): void {
  // Each shard's first run before any shard's second: anchors (runners, weighed workers) go first to the shards
  // that have none, rather than two of them to one shard and none to the next.
  for (const firstRunsOnly of [true, false])
    for (let shard = 0; shard < job.shards.length; shard++)
      awardShardRuns(step, job, shard, candidates, used, firstRunsOnly);
}

/**
 * The least weight the shard's next run must carry (0: any worker). Results that agree but weigh too little want
 * weight, not another result that weighs nothing: spending the run bound on more unweighed volunteers would fail the
 * job. When a worker is known whose result would complete the leading group (a runner, or one weighing what it lacks
 * while enough of its results carry weight), only such a worker may run it; else, when a weighed one is known, only
 * weighed ones. Their offers are awarded as they come.
 */
function weightWanted(
  state: MasterState,
  job: JobRecord,
  shard: number,
  groups: ReadonlyMap<string, DigestGroup>,
  nowMs: number,
): number {
  if (state.config.quorumWeight === 0) return 0;
  let leading: DigestGroup | undefined;
  for (const group of groups.values())
    if (group.attempts.length >= job.spec.quorum && (leading === undefined || group.weight > leading.weight))
      leading = group;
  if (leading === undefined) return 0;
  const lacking = state.config.quorumWeight - leading.weight;
  const completing = leading.weighed + 1 >= job.spec.quorum ? Math.max(lacking, Number.MIN_VALUE) : Infinity;
  if (workerOfWeightKnown(state, job, shard, nowMs, completing)) return completing;
  return workerOfWeightKnown(state, job, shard, nowMs, Number.MIN_VALUE) ? Number.MIN_VALUE : 0;
}

/** The least weight any of the job's next runs must carry: the least over its shards that want runs. */
function leastWeightWanted(state: MasterState, job: JobRecord, nowMs: number): number {
  let least = Number.POSITIVE_INFINITY;
  for (let shard = 0; shard < job.shards.length && least > 0; shard++) {
    if (runsNeeded(state, job, shard, nowMs) === 0) continue;
    const { groups, runnerDigests } = digestGroups(state, job, shard);
    // A dispute waits for a runner.
    const wanted = awaitsRunner(state, job, groups, runnerDigests, nowMs)
      ? Number.POSITIVE_INFINITY
      : weightWanted(state, job, shard, groups, nowMs);
    least = Math.min(least, wanted);
  }
  // Kept JSON-safe: a runner, which weighs without bound, is still heavier.
  return Math.min(least, Number.MAX_VALUE);
}

function awardShardRuns(
  step: Step,
  job: JobRecord,
  shard: number,
  candidates: readonly PendingBid[],
  used: Set<string>,
  firstRunOnly: boolean,
): void {
  const { state, rng, nowMs } = step;
  let needed = runsNeeded(state, job, shard, nowMs);
  if (needed === 0) return;
  if (firstRunOnly) needed = 1;
  const record = job.shards[shard] as ShardRecord;
  if (firstRunOnly && record.runsAwarded === 0 && state.config.spotCheckFraction > 0)
    record.spotCheck = rng() < state.config.spotCheckFraction;
  const { groups, runnerDigests } = digestGroups(state, job, shard);
  // A dispute is the project's runners' to settle: only a runner may run the shard then.
  const runnerOnly = awaitsRunner(state, job, groups, runnerDigests, nowMs);
  const minWeight = weightWanted(state, job, shard, groups, nowMs);
  while (needed > 0) {
    if (blockingLock(state, job.spec) !== undefined) break;
    const bid = pickBid(
      state,
      job,
      shard,
      candidates,
      used,
      record.spotCheck && record.runsAwarded === 0,
      runnerOnly,
      minWeight,
    );
    if (bid === undefined) break;
    if (record.runsAwarded === 0 && job.spec.replicas > 1 && (bid.runner || state.config.trustVolunteersAlone)) {
      // BOINC adaptive replication: a worker with CV consecutive valid results runs alone with probability 1 - 1/CV.
      const cv = reputationOf(state, bid.worker).consecutiveValid;
      if (cv >= state.config.trustAloneAfterValid && rng() < 1 - 1 / cv) {
        record.trustedAlone = bid.worker;
        needed = 1;
        step.log("trusted-alone", { jobId: job.jobId, shard, worker: bid.worker, consecutiveValid: cv });
      }
    }
    award(step, job, bid, shard);
    // A bid is one slot; an offer is spent when the slots it offered are.
    const known = bid.offered === true ? (state.workers[bid.worker] ?? state.unproven[bid.worker]) : undefined;
    if (known === undefined || known.freeSlots <= 0) used.add(bid.worker);
    needed--;
    if (record.trustedAlone !== null) break;
  }
}

/**
 * Bids after which a window closes at once: the bids the announcement aimed at (targetBidsPerRun per wanted run), or
 * every eligible worker known, whichever is fewer, and never fewer than the runs wanted.
 */
function enoughBids(state: MasterState, job: JobRecord, nowMs: number): number {
  const wanted = totalRunsNeeded(state, job, nowMs);
  const aimed = Math.ceil(wanted * state.config.targetBidsPerRun);
  const eligible = job.eligibleEstimate > 0 ? job.eligibleEstimate : aimed;
  return Math.max(1, wanted, Math.min(aimed, eligible, state.config.maxBidsPerWindow));
}

/** Closes the bid window: awards bids to the runs each shard needs (awardRuns), rejects the rest, re-announces if short. */
function closeWindow(step: Step, job: JobRecord): void {
  const { rng } = step;
  // Leases that just lapsed may leave a shard undecidable: end the job (rejecting the bids) rather than award runs
  // that the evaluation after the awards would cancel in the same step.
  evaluate(step, job);
  if (job.status !== "open") return;
  job.windowEndsAtMs = null;
  const bids = shuffled(job.bids, rng);
  job.bids = [];
  const used = new Set<string>();
  awardRuns(step, job, bids, used);
  for (const bid of bids)
    if (!used.has(bid.worker))
      reject(
        step,
        job.jobId,
        bid.worker,
        bid.round,
        "not chosen: other bids were better or the runs were already awarded",
      );
  planNext(step, job);
}

/** After anything that changes what a job needs: end it, or make sure runs still wanted get announced. */
function planNext(step: Step, job: JobRecord): void {
  const { state, nowMs } = step;
  if (job.status !== "open") {
    delete state.hungry[job.jobId];
    delete state.lockWaits[job.jobId];
    return;
  }
  evaluate(step, job);
  if (job.status !== "open") {
    delete state.hungry[job.jobId];
    delete state.lockWaits[job.jobId];
    return;
  }
  let needed = totalRunsNeeded(state, job, nowMs);
  if (needed > 0 && blockingLock(state, job.spec) === undefined) {
    awardFromOffers(step, job);
    needed = totalRunsNeeded(state, job, nowMs);
  }
  if (needed === 0) {
    delete state.hungry[job.jobId];
    delete state.lockWaits[job.jobId];
    job.reannounceAtMs = null;
    return;
  }
  const lock = blockingLock(state, job.spec);
  if (lock !== undefined) {
    waitForLock(step, job, lock);
    return;
  }
  delete state.lockWaits[job.jobId];
  const minWeight = leastWeightWanted(state, job, nowMs);
  state.hungry[job.jobId] = minWeight;
  if (job.windowEndsAtMs !== null) return;
  if (job.reannounceAtMs !== null && job.reannounceAtMs > nowMs) return;
  if (!announcementAnswerable(state, job, minWeight, nowMs)) {
    // Every known worker that could run it, with the weight its next run must carry, is eager: each offers a slot as
    // one frees, and the offer is awarded at once. Look again later: offers lapse, and a worker may turn reluctant.
    job.reannounceAtMs = nowMs + state.config.reannounceIntervalMs;
    schedule(state, job.reannounceAtMs, job.jobId);
    return;
  }
  if (
    job.announcements === 0 ||
    job.bidProbability < 1 ||
    job.lastAnnouncedAtMs + state.config.reannounceIntervalMs <= nowMs
  ) {
    announce(step, job);
  } else {
    job.reannounceAtMs = job.lastAnnouncedAtMs + state.config.reannounceIntervalMs;
    schedule(state, job.reannounceAtMs, job.jobId);
  }
}

/**
 * Whether an announcement could draw an answer the offers will not bring: a known reluctant worker that carries the
 * weight the job's next run needs could bid (eager ones offer, never bid), or no known worker with that weight could
 * run the job at all (an announcement reaches the workers this master has not heard of). Announcing to eager workers
 * that are all busy would flood the topic for nothing, and so would announcing, for a run that must carry weight, to
 * workers whose results weigh nothing here: every bid of theirs is rejected, and every eager one among them offers
 * again, at each re-announcement.
 */
function announcementAnswerable(state: MasterState, job: JobRecord, minWeight: number, nowMs: number): boolean {
  if (minWeight === 0) {
    const pool = eligiblePool(state, job.spec, nowMs);
    return pool.reluctant > 0 || pool.eager === 0;
  }
  let eager = 0;
  for (const table of [state.workers, state.unproven])
    for (const key in table) {
      const worker = table[key] as KnownWorker;
      if (!availableFor(job.spec, worker, nowMs) || weightOf(state, key, worker.runner) < minWeight) continue;
      if (worker.availability === "reluctant") return true;
      eager++;
    }
  return eager === 0;
}

/** Decides shards that reached quorum, fails shards that can no longer, and ends the job when every shard is settled. */
function evaluate(step: Step, job: JobRecord): void {
  const { state } = step;
  for (let shard = 0; shard < job.shards.length; shard++) {
    const record = job.shards[shard] as ShardRecord;
    if (record.decidedDigest !== null || record.failure !== "") continue;
    const { groups, runnerDigests } = digestGroups(state, job, shard);
    const live = job.attempts.filter((attempt) => attempt.shard === shard && attempt.state === "running").length;
    const runnerWanted = awaitsRunner(state, job, groups, runnerDigests, step.nowMs);
    let winner: AttemptRecord[] | undefined;
    if (record.trustedAlone !== null) {
      for (const group of groups.values())
        if (group.attempts.some((attempt) => attempt.worker === record.trustedAlone)) winner = group.attempts;
    } else {
      for (const [digest, group] of groups)
        if (decides(state, digest, group, groups, job.spec.quorum, runnerDigests, live, runnerWanted))
          winner = group.attempts;
    }
    if (winner !== undefined) {
      const first = winner[0] as AttemptRecord;
      record.decidedDigest = first.digest;
      record.decidedOutcome = first.outcome;
      if (record.trustedAlone === null) {
        for (const { attempts: group } of groups.values()) {
          const agreed = group === winner;
          for (const attempt of group) {
            const reputation = reputationOf(state, attempt.worker);
            setReputation(
              step,
              attempt.worker,
              agreed
                ? {
                    ...reputation,
                    consecutiveValid: reputation.consecutiveValid + 1,
                    validTotal: reputation.validTotal + 1,
                  }
                : { ...reputation, consecutiveValid: 0, invalidTotal: reputation.invalidTotal + 1 },
            );
            if (!agreed)
              step.log("result-disagreed", {
                jobId: job.jobId,
                shard,
                worker: attempt.worker,
                attempt: attempt.attempt,
              });
          }
        }
      }
      // Replicas still running for a decided shard are not needed any more.
      for (const attempt of job.attempts)
        if (attempt.shard === shard && attempt.state === "running")
          cancelAttempt(step, job, attempt, "shard already decided");
      continue;
    }
    if (live === 0 && runsNeeded(state, job, shard, step.nowMs) === 0) {
      const digests = [...groups.entries()]
        .map(([digest, group]) => `${digest.slice(0, 12)}…×${group.attempts.length} weighing ${group.weight}`)
        .join(", ");
      const unstarted = unstartedAwards(job, shard);
      const awards = `${record.runsAwarded - unstarted} runs started and ${unstarted} awards refused or unanswered (the bound: ${runBound(job.spec)} runs, ${state.config.maxUnstartedAwardsPerShard} awards not started)`;
      record.failure =
        groups.size === 0
          ? `no result after ${awards}: every run was lost or refused`
          : `no ${job.spec.quorum} agreeing results weighing ${state.config.quorumWeight} or holding a runner's after ${awards}; digests ${digests}`;
    }
  }
  const failed = job.shards.findIndex((record) => record.failure !== "");
  if (failed >= 0) {
    end(step, job, "failed", `shard ${failed}: ${(job.shards[failed] as ShardRecord).failure}`);
    return;
  }
  if (job.shards.every((record) => record.decidedDigest !== null)) {
    const bad = job.shards.findIndex((record) => record.decidedOutcome !== "succeeded");
    if (bad < 0) end(step, job, "passed", "every shard succeeded with quorum");
    else
      end(step, job, "failed", `shard ${bad}: the agreed result is ${(job.shards[bad] as ShardRecord).decidedOutcome}`);
  }
}

/** Cuts text to a reason's limit without splitting a surrogate pair: a lone half would not survive UTF-8. */
function clipReason(text: string): string {
  if (text.length <= maxReasonChars) return text;
  const cut = text.slice(0, maxReasonChars);
  return /[\uD800-\uDBFF]$/.test(cut) ? cut.slice(0, -1) : cut;
}

function cancelAttempt(step: Step, job: JobRecord, attempt: AttemptRecord, reason: string): void {
  attempt.state = "cancelled";
  if (attempt.locksHeld === true) schedule(step.state, holdEndsAtMs(step.state, attempt), job.jobId);
  step.send(attempt.worker, {
    domain: "cancel",
    body: {
      ...step.header(maxCancelLifetimeMs),
      project: step.state.config.project,
      jobId: job.jobId,
      attempt: attempt.attempt,
      reason: clipReason(reason),
    },
  });
}

function end(step: Step, job: JobRecord, status: Exclude<JobStatus, "open">, reason: string): void {
  const { state, nowMs } = step;
  job.status = status;
  job.reason = clipReason(reason);
  job.endedAtMs = nowMs;
  job.windowEndsAtMs = null;
  job.reannounceAtMs = null;
  for (const bid of job.bids) reject(step, job.jobId, bid.worker, bid.round, `job ${status}`);
  job.bids = [];
  for (const attempt of job.attempts)
    if (attempt.state === "running") cancelAttempt(step, job, attempt, `job ${status}: ${job.reason}`);
  delete state.hungry[job.jobId];
  delete state.lockWaits[job.jobId];
  // Only an announced job is held by workers other than those it was awarded to (told directly above).
  const heldElsewhere = job.announcements > 0;
  if (status === "cancelled" && heldElsewhere) {
    step.publish(state.config.project, {
      domain: "cancel",
      body: {
        ...step.header(maxCancelLifetimeMs),
        project: state.config.project,
        jobId: job.jobId,
        attempt: null,
        reason: job.reason,
      },
    });
  } else if (status !== "cancelled" && heldElsewhere) {
    const agreeing = new Set<string>();
    for (let shard = 0; shard < job.shards.length; shard++) {
      const digest = (job.shards[shard] as ShardRecord).decidedDigest;
      for (const attempt of job.attempts)
        if (attempt.shard === shard && digest !== null && attempt.digest === digest) agreeing.add(attempt.worker);
    }
    step.publish(state.config.project, {
      domain: "verdict",
      body: {
        ...step.header(maxVerdictLifetimeMs),
        project: state.config.project,
        jobId: job.jobId,
        outcome: status === "passed" ? "passed" : "failed",
        acceptedDigests: job.shards.map((record) => record.decidedDigest),
        agreeingWorkers: [...agreeing].slice(0, job.spec.replicas * 4).map(keyOf),
        reason: job.reason,
      },
    });
  }
  step.log("job-ended", { jobId: job.jobId, status, reason: job.reason });
}

function evictEndedJobs(step: Step): boolean {
  const { state } = step;
  while (state.jobOrder.length >= state.config.maxJobs) {
    // A job whose cancelled runs still hold locks is kept until they let go: its record is what holds them.
    const index = state.jobOrder.findIndex((id) => {
      const job = state.jobs[id];
      return job !== undefined && job.status !== "open" && !job.attempts.some((attempt) => attempt.locksHeld === true);
    });
    if (index < 0) return false;
    const [id] = state.jobOrder.splice(index, 1);
    delete state.jobs[id as string];
    step.removedJobs.add(id as string);
  }
  return true;
}

function onSubmit(step: Step, jobId: string, spec: JobSpec): void {
  const { state, nowMs } = step;
  if (jobId in state.jobs) throw new MasterInputError(`jobId: expected a new job id, got ${jobId}, already submitted`);
  if (!evictEndedJobs(step))
    throw new MasterInputError(`jobs: expected fewer than ${state.config.maxJobs} open jobs, the master is full`);
  const job: JobRecord = {
    jobId,
    spec,
    submittedAtMs: nowMs,
    status: "open",
    reason: "",
    endedAtMs: null,
    round: 0,
    bidProbability: 1,
    eligibleEstimate: 0,
    lastAnnouncedAtMs: nowMs,
    windowEndsAtMs: null,
    reannounceAtMs: null,
    bids: [],
    attempts: [],
    shards: Array.from({ length: spec.shards }, () => ({
      decidedDigest: null,
      decidedOutcome: null,
      failure: "",
      runsAwarded: 0,
      trustedAlone: null,
      spotCheck: false,
    })),
    bidsReceived: 0,
    announcements: 0,
  };
  state.jobs[jobId] = job;
  state.jobOrder.push(jobId);
  schedule(state, spec.deadlineMs, jobId);
  if (spec.deadlineMs <= nowMs) {
    end(step, job, "failed", `deadline ${spec.deadlineMs} had passed at submission`);
    return;
  }
  planNext(step, job);
}

function onBid(step: Step, worker: string, bid: Bid, runner: boolean, prefix: string): void {
  const { state, nowMs } = step;
  const job = state.jobs[bid.jobId];
  if (bid.project !== state.config.project) {
    step.log("bid-ignored", { reason: "other project", worker, jobId: bid.jobId });
    return;
  }
  if (job === undefined) {
    reject(step, bid.jobId, worker, bid.round, "unknown job");
    return;
  }
  job.bidsReceived++;
  if (job.status !== "open") {
    reject(step, job.jobId, worker, bid.round, `job ${job.status}`);
    return;
  }
  if (bid.availability === "paused" || bid.availability === "offline") {
    reject(step, job.jobId, worker, bid.round, `worker ${bid.availability}`);
    return;
  }
  if (job.bids.some((pending) => pending.worker === worker)) return; // a duplicate: the first one stands
  if (workerHasLiveAttempt(job, worker)) {
    reject(step, job.jobId, worker, bid.round, "already running an attempt of this job");
    return;
  }
  const known = state.workers[worker] ?? state.unproven[worker];
  if (known !== undefined && known.expiresAtMs >= nowMs && !isEligible(job.spec, known)) {
    // The worker's own advert says it cannot run this job: a bid from it is a bug or a lie, and either way not a run.
    reject(step, job.jobId, worker, bid.round, "not eligible: its advert does not meet the job's requirements");
    return;
  }
  if (totalRunsNeeded(state, job, nowMs) === 0) {
    reject(step, job.jobId, worker, bid.round, "no run wanted now");
    return;
  }
  const lock = blockingLock(state, job.spec);
  if (lock !== undefined) {
    reject(step, job.jobId, worker, bid.round, `waiting for lock ${lock}: as many runs hold it as its count`);
    return;
  }
  if (job.bids.length >= state.config.maxBidsPerWindow) {
    // Unweighed identities are free: a full window of them must not lock out a runner or a worker with a record.
    const unweighed =
      weightOf(state, worker, runner) > 0
        ? job.bids.findIndex((pending) => weightOf(state, pending.worker, pending.runner) === 0)
        : -1;
    if (unweighed < 0) {
      reject(step, job.jobId, worker, bid.round, "bid window full");
      return;
    }
    const [displaced] = job.bids.splice(unweighed, 1) as [PendingBid];
    reject(step, job.jobId, displaced.worker, displaced.round, "bid window full: displaced by a weighed bid");
  }
  job.bids.push({ worker, round: bid.round, receivedAtMs: nowMs, runner, prefix });
  if (job.bids.length >= enoughBids(state, job, nowMs)) {
    closeWindow(step, job);
    return;
  }
  if (job.windowEndsAtMs === null) {
    // A late bid (after its round's window) opens a short window of its own rather than wait for a re-announcement.
    job.windowEndsAtMs = nowMs + state.config.bidWindowMs;
    schedule(state, job.windowEndsAtMs, job.jobId);
  }
}

function findAttempt(job: JobRecord | undefined, attempt: number, worker: string): AttemptRecord | undefined {
  const record = job?.attempts[attempt];
  return record !== undefined && record.worker === worker ? record : undefined;
}

function onLeaseRenew(step: Step, worker: string, renew: LeaseRenew): void {
  const { state, nowMs } = step;
  const job = state.jobs[renew.jobId];
  const attempt = findAttempt(job, renew.attempt, worker);
  if (job === undefined || attempt === undefined) {
    step.log("renew-ignored", { reason: "unknown attempt", worker, jobId: renew.jobId });
    return;
  }
  if (attempt.state !== "running") {
    // The worker thinks it still runs what we gave up on: tell it to stop.
    step.send(worker, {
      domain: "cancel",
      body: {
        ...step.header(maxCancelLifetimeMs),
        project: state.config.project,
        jobId: job.jobId,
        attempt: attempt.attempt,
        reason: `attempt ${attempt.attempt} is ${attempt.state}`,
      },
    });
    return;
  }
  // The first renewal answers the award: the worker holds the award's lease, a few seconds short of this one, and
  // renews within a third of it, so the answer needs no reply (one signed message less per run).
  const answersAward = attempt.answered === false;
  attempt.answered = true;
  heardFrom(state, worker);
  attempt.leaseExpiresAtMs = Math.max(attempt.leaseExpiresAtMs, nowMs + state.config.leaseMs);
  schedule(state, attempt.leaseExpiresAtMs, job.jobId);
  if (answersAward) return;
  step.send(worker, {
    domain: "leaseRenew",
    body: {
      ...step.header(maxAwardLifetimeMs),
      project: state.config.project,
      jobId: job.jobId,
      worker: keyOf(worker),
      attempt: attempt.attempt,
      progressPermille: renew.progressPermille,
      leaseExpiresAtMs: attempt.leaseExpiresAtMs,
    },
  });
}

/** Tells a worker its result for an attempt it was awarded arrived, whatever became of the attempt: it stops resending. */
function acknowledge(step: Step, worker: string, result: Result): void {
  step.send(worker, {
    domain: "resultAck",
    body: {
      ...step.header(maxResultAckLifetimeMs),
      project: step.state.config.project,
      jobId: result.jobId,
      worker: keyOf(worker),
      attempt: result.attempt,
    },
  });
}

function onResult(step: Step, worker: string, result: Result): void {
  const job = step.state.jobs[result.jobId];
  const attempt = findAttempt(job, result.attempt, worker);
  if (job === undefined || attempt === undefined || attempt.shard !== result.shard) {
    step.log("result-ignored", {
      reason: "unknown attempt",
      worker,
      jobId: result.jobId,
      attempt: result.attempt,
    });
    return;
  }
  acknowledge(step, worker, result);
  // The run ended (or never started): whatever became of the attempt, it holds no lock now.
  releaseLocks(step, job, attempt);
  if (attempt.state !== "running") {
    // Late (the lease lapsed, the shard was decided) or a duplicate: counted once or not at all, never twice.
    step.log("result-ignored", {
      reason: `attempt ${attempt.state}`,
      worker,
      jobId: job.jobId,
      attempt: attempt.attempt,
    });
    return;
  }
  // A refusal with durationMs 0 is an answer, but not a start: `answered` keeps whether the run had started
  // (unstartedAwards). Any other result says the run started, whether or not its first renewal came before it.
  if (result.outcome !== "refused" || result.durationMs > 0) attempt.answered = true;
  heardFrom(step.state, worker);
  attempt.outcome = result.outcome;
  attempt.exitCode = result.exitCode;
  attempt.outputsDigest = result.outputsDigest;
  attempt.logDigest = result.logDigest;
  attempt.summary = result.summary;
  if (result.outcome === "refused") {
    attempt.state = "refused";
    const record = job.shards[attempt.shard] as ShardRecord;
    if (record.trustedAlone === worker) record.trustedAlone = null;
    // A worker that refused has no slot for this master now (another award took it): nothing more goes to its offer.
    dropOffer(step.state, worker);
  } else {
    attempt.state = "reported";
    attempt.digest = resultDigest(result, job.spec);
  }
  planNext(step, job);
}

/** Only the worker an attempt was awarded to writes its log; the chunk is stored with the job, not stepped through it. */
function onLogChunk(step: Step, worker: string, chunk: LogChunk): void {
  const job = step.state.jobs[chunk.jobId];
  if (chunk.project !== step.state.config.project || findAttempt(job, chunk.attempt, worker) === undefined) {
    step.log("log-ignored", { reason: "not the attempt's worker", worker, jobId: chunk.jobId, attempt: chunk.attempt });
    return;
  }
  const { attempt, stream, offset, data } = chunk;
  step.effects.push({ type: "store-log", jobId: chunk.jobId, chunk: { attempt, stream, offset, data } });
}

/** Workers could not renew with a master that was down: every running lease starts again from now. */
function onRestart(step: Step): void {
  const { state, nowMs } = step;
  for (const job of Object.values(state.jobs)) {
    if (job.status !== "open") continue;
    for (const attempt of job.attempts) {
      if (attempt.state !== "running") continue;
      const graceMs = Math.max(state.config.leaseMs, state.config.restartGraceMs);
      attempt.leaseExpiresAtMs = Math.max(attempt.leaseExpiresAtMs, nowMs + graceMs);
      // Its answer may have come while this master was down: the grace, not the answer's wait, decides now.
      attempt.answered = true;
      schedule(state, attempt.leaseExpiresAtMs, job.jobId);
      step.changedJobs.add(job.jobId);
    }
  }
}

/** A worker with a record of agreeing results here, or a runner: its adverts go to the larger table. */
function isProven(state: MasterState, worker: string, runner: boolean): boolean {
  return runner || (state.reputation[worker]?.validTotal ?? 0) > 0;
}

/** Holds what is known of a worker with a record here (or a runner) in the table of proven workers. */
function holdProven(state: MasterState, worker: string, known: KnownWorker): void {
  if (worker in state.unproven) {
    delete state.unproven[worker];
    state.unprovenCount--;
    // Rare (a worker's first agreeing result), so its place in the order may cost a search.
    const place = state.unprovenOrder.indexOf(worker, state.unprovenHead);
    if (place >= 0) state.unprovenOrder.splice(place, 1);
  }
  if (!(worker in state.workers)) {
    // Listing the known workers on every new advert made a growing mesh cost the master O(n²): list them only to evict.
    if (state.knownWorkerCount >= state.config.maxKnownWorkers) {
      const oldest = Object.keys(state.workers)[0] as string;
      delete state.workers[oldest];
      stopOffering(state, oldest);
    } else state.knownWorkerCount++;
  }
  state.workers[worker] = known;
  state.provenVersion++;
}

/** A worker's standing offer: held as what the master knows of it, and awarded at once to jobs that want runs. */
function onOffer(step: Step, worker: string, offer: Offer, runner: boolean, prefix: string): void {
  const { state } = step;
  if (offer.project !== state.config.project) return;
  const held = state.workers[worker] ?? state.unproven[worker];
  if (held !== undefined && held.seq >= offer.seq) return; // a replay, or overtaken by a newer offer
  // Awards made to this process that it had not seen when it offered are on their way: their slots are not free.
  const awardsMade = held !== undefined && held.epoch === offer.epoch ? held.awardsMade : 0;
  const inFlight = Math.max(0, awardsMade - offer.awardsSeen);
  const known: KnownWorker = {
    dimensions: offer.dimensions,
    specs: offer.specs,
    availability: offer.availability,
    freeSlots: Math.max(0, offer.freeSlots - inFlight),
    expiresAtMs: offer.expiresAtMs,
    seq: offer.seq,
    runner,
    prefix,
    network: offer.network,
    epoch: offer.epoch,
    awardsMade,
    ...(offer.locks !== undefined ? offeredLocks(offer, held, inFlight) : {}),
  };
  if (isProven(state, worker, runner)) holdProven(state, worker, known);
  else {
    // Anyone can sign adverts with fresh keys: unproven workers have a table of their own, the first heard going first,
    // so a flood of them neither grows the state past a bound nor pushes out the workers with a record.
    if (worker in state.workers) {
      // A runner no longer named by the keyset: it is held in one table only.
      delete state.workers[worker];
      state.knownWorkerCount--;
      state.provenVersion++;
    }
    if (!(worker in state.unproven)) {
      if (state.unprovenCount >= state.config.maxUnprovenWorkers) evictOldestUnproven(state);
      state.unprovenCount++;
      state.unprovenOrder.push(worker);
    }
    state.unproven[worker] = known;
  }
  state.workersVersion++;
  if (known.availability === "eager" && known.freeSlots > 0)
    startOffering(state, worker, runner ? "runner" : worker in state.workers ? "proven" : "unproven");
  else {
    stopOffering(state, worker);
    return;
  }
  // Jobs that want runs take the offer at once: the highest priority first, then the oldest. Jobs whose next runs want
  // more weight than the worker carries are passed over (most offers come from workers that weigh nothing).
  const weight = weightOf(state, worker, runner);
  const hungry = Object.keys(state.hungry)
    .filter((jobId) => (state.hungry[jobId] as number) <= weight)
    .map((jobId) => state.jobs[jobId])
    .filter((job): job is JobRecord => job !== undefined && job.status === "open")
    .sort(
      (a, b) =>
        b.spec.priority - a.spec.priority ||
        a.submittedAtMs - b.submittedAtMs ||
        (a.jobId < b.jobId ? -1 : a.jobId > b.jobId ? 1 : 0),
    );
  // Only the new offer is tried: the offers already on hand were tried when each job last planned, and trying them all
  // again for every offer made a busy master's cost grow with hungry jobs times offers.
  for (const job of hungry) {
    if (!(worker in state.offeringAt)) break;
    const candidate = offerCandidate(state, job, worker, step.nowMs);
    if (candidate === undefined) continue;
    const awarded = job.attempts.length;
    awardRuns(step, job, [candidate], new Set());
    if (job.attempts.length === awarded) continue;
    step.changedJobs.add(job.jobId);
    if (totalRunsNeeded(state, job, step.nowMs) === 0) {
      delete state.hungry[job.jobId];
      job.reannounceAtMs = null;
    } else {
      const lock = blockingLock(state, job.spec);
      if (lock !== undefined) waitForLock(step, job, lock);
      else state.hungry[job.jobId] = leastWeightWanted(state, job, step.nowMs);
    }
  }
}

/** A worker's local locks as its offer says, less those named by the awards in flight to it (see KnownWorker). */
function offeredLocks(
  offer: Offer,
  held: KnownWorker | undefined,
  inFlight: number,
): Pick<KnownWorker, "locks" | "awardLocks"> {
  const locks: Record<string, number> = {};
  for (const lock of offer.locks ?? []) locks[lock.name] = lock.free;
  const recent = held !== undefined && held.epoch === offer.epoch ? (held.awardLocks ?? []) : [];
  for (const named of recent.slice(Math.max(0, recent.length - inFlight)))
    for (const name of named) if (name in locks) locks[name] = Math.max(0, (locks[name] as number) - 1);
  return { locks, awardLocks: recent };
}

/** Drops the unproven worker heard of first, in constant time on average: listing the table per advert made a flood cost O(n) each. */
function evictOldestUnproven(state: MasterState): void {
  const order = state.unprovenOrder;
  while (state.unprovenHead < order.length) {
    const key = order[state.unprovenHead++] as string;
    if (key in state.unproven) {
      delete state.unproven[key];
      state.unprovenCount--;
      stopOffering(state, key);
      break;
    }
  }
  // What was passed is dropped once it is half the array: a copy now and then, constant time per advert on average.
  if (state.unprovenHead > order.length / 2) {
    state.unprovenOrder = order.slice(state.unprovenHead);
    state.unprovenHead = 0;
  }
}

/** Every known worker, with a record or not, without listing them first. */
function* eachKnownWorker(state: MasterState): Generator<KnownWorker> {
  for (const key in state.workers) yield state.workers[key] as KnownWorker;
  for (const key in state.unproven) yield state.unproven[key] as KnownWorker;
}

/** Every known worker, with a record or not. */
function knownWorkers(state: MasterState): KnownWorker[] {
  return [...Object.values(state.workers), ...Object.values(state.unproven)];
}

function onTimer(step: Step, job: JobRecord): void {
  const { state, nowMs } = step;
  if (job.status !== "open") return;
  if (job.spec.deadlineMs <= nowMs) {
    end(step, job, "failed", `deadline passed at ${job.spec.deadlineMs} before every shard reached quorum`);
    return;
  }
  for (const attempt of job.attempts) {
    if (attempt.state !== "running") continue;
    const unanswered = attempt.answered === false && attempt.awardedAtMs + state.config.awardAnswerMs <= nowMs;
    if (attempt.leaseExpiresAtMs > nowMs && !unanswered) continue;
    attempt.state = "lost";
    // An award never answered most likely never started: it lets go at once. A run whose lease lapsed holds on until
    // its worker has surely killed it.
    if (unanswered) releaseLocks(step, job, attempt);
    else if (attempt.locksHeld === true) schedule(state, holdEndsAtMs(state, attempt), job.jobId);
    const record = job.shards[attempt.shard] as ShardRecord;
    if (record.trustedAlone === attempt.worker) record.trustedAlone = null;
    // A worker whose run lapsed offers again when the slot frees (it kills the run when its lease ends); one that left
    // an award unanswered may be gone, or cut off and never have seen it: its offer is set aside for a while.
    if (unanswered && process.env.NOSUSPEND === undefined) suspendOffer(state, attempt.worker, nowMs);
    else dropOffer(state, attempt.worker);
    step.log(unanswered ? "award-unanswered" : "lease-lapsed", {
      jobId: job.jobId,
      attempt: attempt.attempt,
      worker: attempt.worker,
    });
  }
  if (job.windowEndsAtMs !== null && job.windowEndsAtMs <= nowMs) closeWindow(step, job);
  else planNext(step, job);
}

function onTick(step: Step): void {
  const { state, nowMs } = step;
  // A wake-up at or before now has fired: forget it, or a later timer at that same instant (a submit whose deadline
  // already passed) would not be asked for again and would hide every timer behind it from the shell.
  // Any tick consumes the wake-up asked for, even one that comes early (a shell's timer may fire a millisecond
  // before its time): the wake-up is asked for again below, so an early tick can never leave the machine asleep.
  state.timerAtMs = null;
  const due = new Set<string>();
  while ((peekTimer(state.timers) ?? Number.POSITIVE_INFINITY) <= nowMs) {
    const entry = popTimer(state.timers) as TimerEntry;
    due.add(entry[1]);
  }
  for (const jobId of due) {
    const job = state.jobs[jobId];
    if (job === undefined) continue;
    step.changedJobs.add(jobId);
    releaseLapsedHolds(step, job);
    onTimer(step, job);
  }
}

/** The job an input is about, if it names one. */
function jobOfInput(input: MasterInput): string | null {
  switch (input.kind) {
    case "submit":
    case "cancel":
      return input.jobId;
    case "bid":
      return input.bid.jobId;
    case "lease-renew":
      return input.renew.jobId;
    case "result":
      return input.result.jobId;
    default:
      return null;
  }
}

/** The master's transition function. Throws MasterInputError only for caller mistakes (a duplicate submit). */
export function stepMaster(state: MasterState, input: MasterInput, nowMs: number, rng: Rng): MasterStepOutput {
  const step = new Step(state, nowMs, rng);
  switch (input.kind) {
    case "submit":
      onSubmit(step, input.jobId, input.job);
      break;
    case "bid":
      onBid(step, input.signer, input.bid, input.runner ?? false, input.prefix ?? "");
      break;
    case "lease-renew":
      onLeaseRenew(step, input.signer, input.renew);
      break;
    case "result":
      onResult(step, input.signer, input.result);
      break;
    case "offer":
      onOffer(step, input.signer, input.offer, input.runner ?? false, input.prefix ?? "");
      break;
    case "log-chunk":
      onLogChunk(step, input.signer, input.chunk);
      break;
    case "restart":
      state.timerAtMs = null;
      onRestart(step);
      onTick(step);
      break;
    case "cancel": {
      const job = state.jobs[input.jobId];
      if (job === undefined) throw new MasterInputError(`jobId: expected a submitted job, got ${input.jobId}`);
      if (job.status === "open") end(step, job, "cancelled", input.reason || "cancelled by the project");
      break;
    }
    case "tick":
      onTick(step);
      break;
  }
  wakeLockWaiters(step);
  const named = jobOfInput(input);
  if (named !== null && named in state.jobs) step.changedJobs.add(named);
  const next = peekTimer(state.timers);
  if (next !== null && next !== state.timerAtMs) {
    state.timerAtMs = next;
    step.effects.push({ type: "set-timer", atMs: next });
  }
  return {
    state,
    effects: step.effects,
    changes: {
      jobs: step.changedJobs,
      removedJobs: step.removedJobs,
      reputations: step.changedReputations,
      removedReputations: step.removedReputations,
    },
  };
}

/**
 * A master rebuilt from what was persisted of it: its job records and reputations. Everything else is derived
 * (submission order, wake-ups, counts) or soft (known workers come back with their next adverts).
 */
export function restoreMaster(
  config: Partial<MasterConfig> & { project: string },
  jobs: readonly JobRecord[],
  reputation: Readonly<Record<string, Reputation>>,
): MasterState {
  const state = createMaster(config);
  const ordered = [...jobs].sort(
    (a, b) => a.submittedAtMs - b.submittedAtMs || (a.jobId < b.jobId ? -1 : a.jobId > b.jobId ? 1 : 0),
  );
  for (const job of ordered) {
    state.jobs[job.jobId] = job;
    state.jobOrder.push(job.jobId);
    // The runs that held locks hold them still: a running one until its lease (extended by the restart) or its
    // result, a lost or cancelled one until its lease and grace pass or its result comes.
    for (const attempt of job.attempts) {
      if (attempt.locksHeld !== true) continue;
      for (const lock of job.spec.locks ?? []) addHold(state, lock, [job.jobId, attempt.attempt, lock.count]);
      if (attempt.state !== "running") schedule(state, holdEndsAtMs(state, attempt), job.jobId);
    }
    if (job.status !== "open") continue;
    // A job naming locks may have been waiting for one: it is planned at the restart, and waits again if it must.
    if (job.spec.locks !== undefined && job.spec.locks.length > 0) schedule(state, 0, job.jobId);
    schedule(state, job.spec.deadlineMs, job.jobId);
    if (job.windowEndsAtMs !== null) schedule(state, job.windowEndsAtMs, job.jobId);
    if (job.reannounceAtMs !== null) schedule(state, job.reannounceAtMs, job.jobId);
    for (const attempt of job.attempts)
      if (attempt.state === "running") schedule(state, attempt.leaseExpiresAtMs, job.jobId);
    // Whether it still wants runs is known at its first wake-up; until then an offer may be given to it.
    state.hungry[job.jobId] = 0;
  }
  state.reputation = { ...reputation };
  state.reputationCount = Object.keys(state.reputation).length;
  return state;
}

/** The unexpired standing offers of eager workers this master holds with slots left: how many workers, how many slots. */
export function offersHeld(state: MasterState, nowMs: number): { workers: number; freeSlots: number } {
  let workers = 0;
  let freeSlots = 0;
  for (const table of [state.workers, state.unproven])
    for (const known of Object.values(table)) {
      if (known.availability !== "eager" || known.expiresAtMs < nowMs || known.freeSlots <= 0) continue;
      workers++;
      freeSlots += known.freeSlots;
    }
  return { workers, freeSlots };
}

/**
 * Why a job waits for a lock, in words ("" when it does not): the lock, its holders and the count that bounds them.
 * What `cimesh explain` and the job's waiting line say.
 */
export function lockWaitText(state: MasterState, jobId: string): string {
  const job = state.jobs[jobId];
  const lock = state.lockWaits[jobId];
  if (job === undefined || job.status !== "open" || lock === undefined) return "";
  const holders = state.lockHolders[lock] ?? [];
  let limit = job.spec.locks?.find((named) => named.name === lock)?.count ?? 0;
  for (const hold of holders) limit = Math.min(limit, hold[2]);
  const jobs = [...new Set(holders.map((hold) => hold[0]))];
  const shown = jobs.slice(0, maxHoldersShown).join(", ");
  const more = jobs.length > maxHoldersShown ? ` and ${jobs.length - maxHoldersShown} more` : "";
  return `waiting for lock ${lock}: ${holders.length} of ${limit} held (by runs of ${shown}${more})`;
}

/** Jobs named as holders of a lock in a waiting line; the rest are counted. */
export const maxHoldersShown = 5;

/** What the master knows about a job, for `cimesh status` and `explain`. */
export function jobView(state: MasterState, jobId: string): JobRecord | undefined {
  return state.jobs[jobId];
}

/**
 * Why a job is where it is, in words: "no worker picked up my job" must be
 * answerable, never a silent wait. Counts the known workers (from adverts)
 * that fail each requirement, most blocking first.
 */
export function explainJob(state: MasterState, jobId: string, nowMs: number): string {
  const job = state.jobs[jobId];
  if (job === undefined) return `no job ${jobId} on this master`;
  const lines = [`job ${jobId}: ${job.status}${job.reason === "" ? "" : ` (${job.reason})`}`];
  const live = job.attempts.filter((attempt) => attempt.state === "running").length;
  lines.push(
    `announced ${job.announcements} time(s), last bid probability ${job.bidProbability.toFixed(4)}, ${job.bidsReceived} bid(s) received, ${job.attempts.length} run(s) awarded, ${live} running`,
  );
  job.shards.forEach((record, shard) => {
    const standing =
      record.decidedDigest !== null
        ? `decided (${record.decidedOutcome})`
        : record.failure !== ""
          ? `failed: ${record.failure}`
          : "undecided";
    const unstarted = unstartedAwards(job, shard);
    lines.push(
      `shard ${shard}: ${standing}, ${record.runsAwarded - unstarted} of at most ${runBound(job.spec)} runs started, ${unstarted} of at most ${state.config.maxUnstartedAwardsPerShard} awards refused or unanswered`,
    );
  });
  for (const lock of job.spec.locks ?? [])
    lines.push(
      `lock ${lock.name} (count ${lock.count}): ${state.lockHolders[lock.name]?.length ?? 0} run(s) hold it, ${job.attempts.filter((attempt) => attempt.locksHeld === true).length} of them this job's`,
    );
  const waiting = lockWaitText(state, jobId);
  if (waiting !== "") lines.push(waiting);
  const workers = knownWorkers(state).filter((worker) => worker.expiresAtMs >= nowMs);
  lines.push(explainPoolText(job.spec, workers));
  const unavailable = workers.filter(
    (worker) => worker.availability === "paused" || worker.availability === "offline",
  ).length;
  const full = workers.filter((worker) => worker.freeSlots === 0).length;
  if (unavailable > 0 || full > 0)
    lines.push(`of the known workers, ${unavailable} are paused or offline and ${full} have no free slot`);
  return lines.join("\n");
}
