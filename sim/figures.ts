/**
 * What the observer counts: messages by type, offers by what they changed,
 * admissions by reason, the security events, jobs by outcome and the runs
 * they wanted, the claim, award and verdict latencies (overall and per
 * project), and the figures of the current sample interval.
 */
import type { JobTruth } from "./invariants.ts";
import { exactQuantile, Histogram } from "./stats.ts";

export interface SeriesInterval {
  messages: number;
  offers: number;
  bids: number;
  verdicts: number;
  claims: number[];
  verdictTimes: number[];
}

/**
 * Offers sent, by what each told its master against what the master held of the worker's offer: the last offer,
 * less one slot for each award the master sent the worker since.
 */
export interface OfferKinds {
  /** The first offer of the worker to that master. */
  first: number;
  /** More free slots than held (a slot came free). */
  more: number;
  /** Fewer (a slot was taken, by another master's award; 0 withdraws the offer). */
  fewer: number;
  /** As many, a renewal before the last one lapses. */
  renewal: number;
  /** As many, for another reason: an announcement heard with a slot free, new availability or claims. */
  same: number;
}

export class Figures {
  /** Submit to the first run of the job that starts on a worker. */
  readonly claim = new Histogram();
  /** Submit to the job's first award leaving its master. */
  readonly award = new Histogram();
  readonly verdictLatency = new Histogram();
  readonly perProjectVerdict: Histogram[];
  readonly jobCounts = { passed: 0, failed: 0, cancelled: 0, wrongResultsAccepted: 0 };
  readonly admissions: Record<string, number> = {};
  readonly byDomain: Record<string, number> = {};
  readonly security: Record<string, number> = {
    forgeriesSent: 0,
    refusedSignature: 0,
    refusedUntrusted: 0,
    forgeriesAccepted: 0,
    replaysSent: 0,
    replaysRefused: 0,
    replaysAccepted: 0,
    spamBids: 0,
    wrongResultsSent: 0,
  };
  readonly offerKinds: OfferKinds = { first: 0, more: 0, fewer: 0, renewal: 0, same: 0 };
  openJobs = 0;
  submitted = 0;
  /** Runs the submitted jobs want: shards × replicas of each. */
  wantedRuns = 0;
  bids = 0;
  offers = 0;
  /** Offers that reached a master's machine. */
  offersDelivered = 0;
  /** Times a job that wanted runs began to wait for a project lock its holders filled. */
  lockWaits = 0;
  interval: SeriesInterval = { messages: 0, offers: 0, bids: 0, verdicts: 0, claims: [], verdictTimes: [] };

  constructor(projects: number) {
    this.perProjectVerdict = Array.from({ length: projects }, () => new Histogram());
  }

  /** One more of a security event. */
  count(counter: string): void {
    this.security[counter] = (this.security[counter] ?? 0) + 1;
  }

  /** An admission verdict, by reason; a refused signature or signer is a security event too. */
  admitted(reason: string): void {
    this.admissions[reason] = (this.admissions[reason] ?? 0) + 1;
    if (reason === "forged") this.count("refusedSignature");
    if (reason === "untrusted-signer") this.count("refusedUntrusted");
  }

  /** A job's first award, `latencyMs` after its submission. */
  awarded(latencyMs: number): void {
    this.award.add(latencyMs);
  }

  /** A job's first run started on a worker, `latencyMs` after its submission. */
  claimed(latencyMs: number): void {
    this.claim.add(latencyMs);
    this.interval.claims.push(latencyMs);
  }

  /** A job of `project` ended (verdict or cancel), `latencyMs` after its submission. */
  ended(project: number, latencyMs: number): void {
    this.openJobs--;
    this.interval.verdicts++;
    this.verdictLatency.add(latencyMs);
    this.perProjectVerdict[project]?.add(latencyMs);
    this.interval.verdictTimes.push(latencyMs);
  }

  perProject(jobs: Iterable<JobTruth>): {
    project: number;
    submitted: number;
    passed: number;
    failed: number;
    p50TimeToVerdictMs: number | null;
  }[] {
    const perProject = this.perProjectVerdict.map((histogram, project) => ({
      project,
      submitted: 0,
      passed: 0,
      failed: 0,
      p50TimeToVerdictMs: histogram.quantile(0.5),
    }));
    for (const truth of jobs) {
      const entry = perProject[truth.project];
      if (entry === undefined) continue;
      entry.submitted++;
      if (truth.status === "passed") entry.passed++;
      if (truth.status === "failed") entry.failed++;
    }
    return perProject;
  }

  /** The figures of one sample interval, then a fresh interval. */
  takeInterval(): {
    messages: number;
    offers: number;
    bids: number;
    verdicts: number;
    claimP50Ms: number | null;
    verdictP50Ms: number | null;
  } {
    const median = (values: number[]) =>
      exactQuantile(
        [...values].sort((a, b) => a - b),
        0.5,
      );
    const i = this.interval;
    this.interval = { messages: 0, offers: 0, bids: 0, verdicts: 0, claims: [], verdictTimes: [] };
    return {
      messages: i.messages,
      offers: i.offers,
      bids: i.bids,
      verdicts: i.verdicts,
      claimP50Ms: median(i.claims),
      verdictP50Ms: median(i.verdictTimes),
    };
  }
}
