/**
 * The simulator's observer: it watches the run from outside the machines and
 * checks the invariants against what the network carried and what a master
 * tells its users, never against the machines' working state. It is the one
 * place of sim/ that reads message types: it counts offers, bids and awards,
 * sees verdicts and cancels leave a master, sees results reach one, and sees
 * every admission verdict (a forged or replayed message that reached a
 * machine is a violation). A job's end is what its master reports: the
 * "job-ended" log line and the job record it persisted (status and decided
 * digests), as a node's control API shows it to the submitter; a job awarded
 * from offers alone ends with no message on the network (only announced jobs
 * get a gossiped verdict). One check looks inside: what a master holds of a
 * worker's offer before and after each offer reaches it (nothing on the
 * network shows that a master kept the newest).
 *
 * For the tests of the checker itself it can also break the system under test
 * on purpose (Sabotage), between a master and what it reports.
 *
 * What it counts is in sim/figures.ts; the invariants it checks, the truth
 * they are checked against and the violations found, in sim/invariants.ts.
 */
import type { Admission, StampedMessage } from "../jobs/index.ts";
import { Figures } from "./figures.ts";
import { Invariants, type JobTruth, type ReachedResult, resultReached } from "./invariants.ts";

/**
 * Deliberate defects in the system under test, for the tests of the invariant checker only: each one breaks the
 * first job end a master reports that has a verdict, between the machine and its user.
 */
export type Sabotage = "drop-verdict" | "duplicate-verdict" | "unreported-digest";

/** A job's end as its master reports it: its status and, for a verdict, the digest decided for each shard. */
export interface ReportedEnd {
  readonly jobId: string;
  readonly status: "passed" | "failed" | "cancelled";
  readonly acceptedDigests: readonly (string | null)[];
}

/** What a sabotage makes of a reported verdict: nothing, two of it, or one accepting a digest no worker reported. */
function sabotaged(sabotage: Sabotage, end: ReportedEnd): ReportedEnd[] {
  if (sabotage === "drop-verdict") return [];
  if (sabotage === "duplicate-verdict") return [end, end];
  return [{ ...end, acceptedDigests: end.acceptedDigests.map(() => "bnobodyreportedthis") }];
}

/** What the observer knows of a wire: who sent it, and whether an actor forged or replayed it. */
export interface ObservedWire {
  readonly from: number;
  /** The message's type (jobs/routing.ts MessageDomainName). */
  readonly domain: string;
  readonly forged?: boolean;
  /** The wire a replayer sent again: set on the copy. */
  readonly original?: ObservedWire;
  /** The receivers (by their store: what a node remembers) whose machine took this wire; kept while replayers act. */
  takenBy?: Set<object>;
}

/** A job that ended, as the observer saw it (RunOptions.onJobEnded). */
export interface EndedJob {
  readonly jobId: string;
  readonly status: "passed" | "failed" | "cancelled";
  /** From its submission to its verdict or cancel. */
  readonly timeToVerdictMs: number;
  /** Runs its master awarded. */
  readonly awards: number;
  readonly shards: number;
  /** The verdict accepted a digest no honest run reports. */
  readonly wrongAccepted: boolean;
}

export class Observer {
  /** Every submitted job, by id. */
  readonly jobs = new Map<string, JobTruth>();
  readonly figures: Figures;
  readonly invariants = new Invariants();
  private sabotage: Sabotage | undefined;
  private nowMs = 0;
  /** Whether replayers act: only then does a wire remember who took it. */
  private readonly tracksReplays: boolean;
  /** Told of every job as it ends. */
  onJobEnded: ((job: EndedJob) => void) | undefined;
  /** Each project's runners (node indices), as its keyset names them: one result of a runner decides a shard. */
  private readonly runners: ReadonlySet<number>[] = [];
  /** The free slots each master holds of each worker's offer, as the messages tell, by "worker index>master index". */
  private readonly lastOffers = new Map<string, number>();
  /** When each worker's last offer to each master was issued and until when it stood: what tells a renewal. */
  private readonly lastOfferTimes = new Map<string, [issuedAtMs: number, expiresAtMs: number]>();

  constructor(projects: number, sabotage: Sabotage | undefined, tracksReplays = false) {
    this.tracksReplays = tracksReplays;
    this.figures = new Figures(projects);
    this.sabotage = sabotage;
  }

  /** The virtual time of what is observed next. */
  at(nowMs: number): void {
    this.nowMs = nowMs;
  }

  submit(truth: JobTruth, jobId: string): void {
    this.jobs.set(jobId, truth);
    this.figures.submitted++;
    this.figures.wantedRuns += truth.shards * truth.replicas;
    this.figures.openJobs++;
  }

  /** The project's runners, by node index (from its keyset). */
  setRunners(project: number, runners: Iterable<number>): void {
    this.runners[project] = new Set(runners);
  }

  /** A message leaves a node (sealed or not): counted by type. */
  carried(message: StampedMessage): void {
    const byDomain = this.figures.byDomain;
    byDomain[message.domain] = (byDomain[message.domain] ?? 0) + 1;
  }

  /**
   * Every admission verdict of every node: counted by reason. A forged message taken is a violation; so is a replay
   * taken by a node that took the original (`memory` is what the node remembers across restarts: its store). A
   * replay reaching a node that never took the original (one that joined later) is only a late delivery.
   */
  admitted(node: number, memory: object, admission: Admission, wire: ObservedWire): void {
    this.figures.admitted(admission.reason);
    if (wire.original !== undefined && admission.verdict !== "accept") this.figures.count("replaysRefused");
    if (admission.deliveries.length === 0) return;
    if (wire.forged === true) {
      this.figures.count("forgeriesAccepted");
      this.invariants.violate(
        "no-forgery-accepted",
        "-",
        `a forged message from node ${wire.from} reached node ${node}'s machine`,
      );
    }
    // An offer is state, not an event: a master takes a worker's offers without a ledger, keeps the newest and
    // drops the others (checked by offerHeld), so one reaching the machine again is no replay accepted.
    if (wire.domain === "offer") return;
    if (wire.original !== undefined) {
      if (wire.original.takenBy?.has(memory) === true) {
        this.figures.count("replaysAccepted");
        this.invariants.violate(
          "no-replay-accepted",
          "-",
          `a message node ${node} had taken reached its machine again, replayed by node ${wire.from}`,
        );
      }
    } else if (this.tracksReplays) {
      wire.takenBy ??= new Set();
      wire.takenBy.add(memory);
    }
    for (const delivery of admission.deliveries)
      if (delivery.machine === "master" && delivery.input.kind === "result")
        this.observeResult(wire.from, delivery.input.result);
  }

  /** Whether what a wire does to the offers a master holds is checked (offerHeld): for an offer, it is. */
  watchesOfferHeld(wire: ObservedWire): boolean {
    return wire.domain === "offer";
  }

  /**
   * An offer of `worker` reached master node `master` directly: the sequence number of the offer its machine held of
   * that worker before and after (undefined: none). Going back to an older offer is a violation.
   */
  offerHeld(master: number, worker: string, before: number | undefined, after: number | undefined): void {
    this.figures.offersDelivered++;
    if (before === undefined || (after !== undefined && after >= before)) return;
    this.figures.count("offersTakenBack");
    this.invariants.violate(
      "offer-newest",
      "-",
      `master node ${master} held offer ${before} of worker ${worker.slice(0, 12)}… and then ${after ?? "none"}`,
    );
  }

  /** A direct message leaves node `from` for node `to` (-1: unknown). */
  sent(message: StampedMessage, from = -1, to = -1): void {
    this.carried(message);
    if (message.domain === "bid") {
      this.figures.bids++;
      this.figures.interval.bids++;
    }
    if (message.domain === "offer")
      this.observeOffer(
        from,
        to,
        Number(message.body.freeSlots),
        Number(message.body.issuedAtMs),
        Number(message.body.expiresAtMs),
      );
    if (message.domain === "award") {
      this.observeAward(String(message.body.jobId));
      // The award uses a slot of what the worker offered this master, and both sides count it so without a message.
      const held = this.lastOffers.get(`${to}>${from}`);
      if (held !== undefined && held > 0) this.lastOffers.set(`${to}>${from}`, held - 1);
    }
  }

  /** A run of the job started on a worker: the first one is the job's claim. */
  started(jobId: string): void {
    const truth = this.jobs.get(jobId);
    if (truth === undefined || truth.firstStartAtMs !== null) return;
    truth.firstStartAtMs = this.nowMs;
    this.figures.claimed(this.nowMs - truth.submittedAtMs);
  }

  /** A message a master publishes: a job gets at most one verdict or whole-job cancel on its topic. */
  published(master: number, message: StampedMessage): void {
    this.carried(message);
    const { domain, body } = message;
    if (domain !== "verdict" && !(domain === "cancel" && body.attempt === null)) return;
    const jobId = String(body.jobId);
    const truth = this.jobs.get(jobId);
    if (truth === undefined) {
      this.invariants.violate(
        "no-job-lost",
        jobId,
        `master node ${master} published the end of a job nobody submitted`,
      );
      return;
    }
    truth.endsPublished++;
    if (truth.endsPublished > 1)
      this.invariants.violate("accepted-once", jobId, `verdict or cancel number ${truth.endsPublished} on the topic`);
  }

  /**
   * Master node `master` reports a job ended (its "job-ended" log line and the record it persisted). Passed through
   * the sabotage (tests of the checker only) first.
   */
  reportedEnd(master: number, end: ReportedEnd): void {
    let ends = [end];
    if (this.sabotage !== undefined && end.status !== "cancelled") {
      ends = sabotaged(this.sabotage, end);
      this.sabotage = undefined;
    }
    for (const copy of ends) this.observeEnd(master, copy);
  }

  /**
   * A machine's log line: the master's "trusted-alone" tells the quorum check to expect one result; its "lock-wait"
   * is a job beginning to wait for a full project lock.
   */
  logged(event: string, fields: Readonly<Record<string, unknown>>): void {
    if (event === "lock-wait") this.figures.lockWaits++;
    if (event !== "trusted-alone") return;
    const truth = this.jobs.get(String(fields.jobId));
    if (truth === undefined) return;
    if (truth.trustedAlone === null) truth.trustedAlone = new Set();
    truth.trustedAlone.add(Number(fields.shard));
  }

  /** An offer of `freeSlots` from worker node `from` to master node `to`: counted by what it changed. */
  private observeOffer(from: number, to: number, freeSlots: number, issuedAtMs: number, expiresAtMs: number): void {
    const figures = this.figures;
    figures.offers++;
    figures.interval.offers++;
    const key = `${from}>${to}`;
    const last = this.lastOffers.get(key);
    const times = this.lastOfferTimes.get(key);
    this.lastOffers.set(key, freeSlots);
    this.lastOfferTimes.set(key, [issuedAtMs, expiresAtMs]);
    const kinds = figures.offerKinds;
    if (last === undefined) kinds.first++;
    else if (freeSlots > last) kinds.more++;
    else if (freeSlots < last) kinds.fewer++;
    // A worker renews an offer with a quarter of its life left (jitter aside): one sent with less than a third left
    // of the last is a renewal, what a worker costs by being there, not what a job asked for.
    else if (times !== undefined && times[1] - issuedAtMs <= (times[1] - times[0]) / 3) kinds.renewal++;
    else kinds.same++;
  }

  private observeAward(jobId: string): void {
    const truth = this.jobs.get(jobId);
    if (truth === undefined) return;
    truth.awards++;
    if (truth.firstAwardAtMs !== null) return;
    truth.firstAwardAtMs = this.nowMs;
    this.figures.awarded(this.nowMs - truth.submittedAtMs);
  }

  private observeResult(from: number, result: ReachedResult): void {
    const truth = this.jobs.get(result.jobId);
    if (truth !== undefined) resultReached(truth, from, result);
  }

  /** A job ends, once: a verdict's accepted digests are checked against the results that reached the master. */
  private observeEnd(master: number, end: ReportedEnd): void {
    const jobId = end.jobId;
    const truth = this.jobs.get(jobId);
    if (truth === undefined) {
      this.invariants.violate("no-job-lost", jobId, `master node ${master} ended a job nobody submitted`);
      return;
    }
    truth.terminalMessages++;
    if (truth.terminalMessages > 1) {
      this.invariants.violate("accepted-once", jobId, `job end number ${truth.terminalMessages} for the job`);
      return;
    }
    truth.endedAtMs = this.nowMs;
    this.figures.ended(truth.project, this.nowMs - truth.submittedAtMs);
    const counts = this.figures.jobCounts;
    let wrongAccepted = false;
    truth.status = end.status;
    if (end.status === "cancelled") counts.cancelled++;
    else {
      if (end.status === "passed") counts.passed++;
      else counts.failed++;
      wrongAccepted = this.invariants.checkQuorum(
        jobId,
        truth,
        end.acceptedDigests,
        this.runners[truth.project] ?? new Set(),
      );
      if (wrongAccepted) counts.wrongResultsAccepted++;
    }
    this.onJobEnded?.({
      jobId,
      status: truth.status as EndedJob["status"],
      timeToVerdictMs: this.nowMs - truth.submittedAtMs,
      awards: truth.awards,
      shards: truth.shards,
      wrongAccepted,
    });
    truth.results = null;
    truth.trustedAlone = null;
  }
}
