/**
 * What the observer counts: messages by type, admissions by reason, the
 * security events, jobs by outcome, the claim and verdict latencies (overall
 * and per project), and the figures of the current sample interval.
 */
import type { JobTruth } from "./invariants.ts";
import { exactQuantile, Histogram } from "./stats.ts";

export interface SeriesInterval {
  messages: number;
  bids: number;
  verdicts: number;
  claims: number[];
  verdictTimes: number[];
}

export class Figures {
  readonly claim = new Histogram();
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
    replaysAccepted: 0,
    spamBids: 0,
    wrongResultsSent: 0,
  };
  openJobs = 0;
  submitted = 0;
  bids = 0;
  interval: SeriesInterval = { messages: 0, bids: 0, verdicts: 0, claims: [], verdictTimes: [] };

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
    this.interval = { messages: 0, bids: 0, verdicts: 0, claims: [], verdictTimes: [] };
    return {
      messages: i.messages,
      bids: i.bids,
      verdicts: i.verdicts,
      claimP50Ms: median(i.claims),
      verdictP50Ms: median(i.verdictTimes),
    };
  }
}
