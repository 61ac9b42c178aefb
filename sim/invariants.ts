/**
 * The invariants the observer checks (sim/README.md, Invariants), the truth
 * they are checked against (what the run knows of each job from outside the
 * machines, and what an honest run of it reports), and the violations found:
 * every one counted, the first ones kept.
 */
import { resultDigest } from "../jobs/index.ts";

export interface Violation {
  readonly invariant:
    | "no-job-lost"
    | "accepted-once"
    | "quorum"
    | "ends-after-heal"
    | "no-forgery-accepted"
    | "no-replay-accepted"
    | "offer-newest";
  readonly jobId: string;
  readonly detail: string;
}

export const invariantNames = [
  "no-job-lost: every submitted job ends with exactly one verdict or cancel (as its master reports it)",
  "accepted-once: no job gets a second verdict, reported or on its topic",
  "quorum: every accepted digest was reported by at least quorum distinct workers (1 where the master trusted a worker alone, or where one of them is a runner of the project)",
  "ends-after-heal: every job has ended when the run stops, after every fault healed and the drain",
  "no-forgery-accepted: no tampered or untrusted message reaches a state machine",
  "no-replay-accepted: no node's machine takes a signed message twice, however often it is sent again (offers aside: state, not events)",
  "offer-newest: a master never goes back from a worker's offer to an older one (one overtaken on the way)",
] as const;

/** Violations kept in the metrics: the first ones say enough. */
export const maxListedViolationsCount = 50;

/** What the run knows about a job from outside the machines: the truth and what the network carried. */
export interface JobTruth {
  readonly index: number;
  readonly project: number;
  readonly submittedAtMs: number;
  readonly durationMs: number;
  readonly failing: boolean;
  readonly quorum: number;
  readonly shards: number;
  readonly replicas: number;
  firstAwardAtMs: number | null;
  /** When the job's first run started on a worker (its claim). */
  firstStartAtMs: number | null;
  /** Runs awarded (awards that left the master). */
  awards: number;
  endedAtMs: number | null;
  status: "open" | "passed" | "failed" | "cancelled";
  /** Job ends its master reported (one is right). */
  terminalMessages: number;
  /** Verdicts and whole-job cancels its master published (at most one: only an announced job gets one). */
  endsPublished: number;
  /** Per shard: digest → workers whose result with that digest reached the master. */
  results: Map<string, Set<number>>[] | null;
  trustedAlone: Set<number> | null;
}

/** A worker's result as the master's machine took it. */
export interface ReachedResult {
  readonly jobId: string;
  readonly shard: number;
  readonly outcome: string;
  readonly exitCode: number | null;
  readonly outputsDigest: string | null;
}

/** A worker's result reached the job's master: its digest counts towards the shard's quorum, until the job ends. */
export function resultReached(truth: JobTruth, from: number, result: ReachedResult): void {
  if (truth.results === null || result.outcome === "refused") return;
  const digest = resultDigest(result as never);
  const shard = truth.results[result.shard];
  if (shard === undefined) return;
  let workers = shard.get(digest);
  if (workers === undefined) {
    workers = new Set();
    shard.set(digest, workers);
  }
  workers.add(from);
}

function letters(n: number): string {
  let out = "";
  let v = n;
  do {
    out = String.fromCharCode(97 + (v % 26)) + out;
    v = Math.floor(v / 26);
  } while (v > 0);
  return out;
}

/** The outputs digest an honest run of a shard of a job reports. */
export function honestDigest(job: number, shard: number): string {
  return `bhonest${letters(job)}z${letters(shard)}`;
}

/** A liar's own wrong outputs digest, and a sybil group's shared one. */
export function liarDigest(node: number): string {
  return `bliarout${letters(node)}`;
}

export function sybilDigest(group: number): string {
  return `bsybilout${letters(group)}`;
}

/** A colluding group's shared wrong digest (its patient workers and its throwaway identities report it). */
export function colluderDigest(group: number): string {
  return `bcolludeout${letters(group)}`;
}

/** The violations of one run. */
export class Invariants {
  private readonly violations: Violation[] = [];
  private violationCount = 0;

  violate(invariant: Violation["invariant"], jobId: string, detail: string): void {
    this.violationCount++;
    if (this.violations.length < maxListedViolationsCount) this.violations.push({ invariant, jobId, detail });
  }

  /** The violations kept, and a last line saying how many more there were. */
  listed(): readonly Violation[] {
    if (this.violationCount <= this.violations.length) return this.violations;
    return [
      ...this.violations,
      {
        invariant: "no-job-lost",
        jobId: "-",
        detail: `(${this.violationCount - this.violations.length} more violations)`,
      },
    ];
  }

  /**
   * A verdict's accepted digests against the results that reached the master: each needs its quorum of agreeing
   * workers, or one where the master trusted a worker alone or one of them is a runner of the project (`runners`,
   * node indices: the project's own machines, named in its keyset). Returns whether it accepted a digest no honest
   * run reports.
   */
  checkQuorum(
    jobId: string,
    truth: JobTruth,
    acceptedDigests: readonly (string | null)[],
    runners: ReadonlySet<number>,
  ): boolean {
    let wrong = false;
    acceptedDigests.forEach((digest, shard) => {
      if (digest === null) return;
      const workers = truth.results?.[shard]?.get(digest);
      const agreeing = workers?.size ?? 0;
      const byRunner = workers !== undefined && [...workers].some((worker) => runners.has(worker));
      const needed = truth.trustedAlone?.has(shard) === true || byRunner ? 1 : truth.quorum;
      if (agreeing < needed)
        this.violate(
          "quorum",
          jobId,
          `shard ${shard} accepted ${digest.slice(0, 16)}… with ${agreeing} agreeing result(s) delivered, quorum ${needed}`,
        );
      const honest = resultDigest({
        outcome: truth.failing ? "failed" : "succeeded",
        exitCode: truth.failing ? 1 : 0,
        outputsDigest: honestDigest(truth.index, shard),
      });
      if (digest !== honest) wrong = true;
    });
    return wrong;
  }

  /** At the end: every job that never ended breaks two invariants. Returns how many were lost. */
  checkEnded(jobs: ReadonlyMap<string, JobTruth>, nowMs: number, durationMs: number): number {
    let lost = 0;
    for (const [jobId, truth] of jobs) {
      if (truth.terminalMessages > 0) continue;
      lost++;
      this.violate(
        "ends-after-heal",
        jobId,
        `submitted at ${truth.submittedAtMs} ms, still ${truth.status} at ${nowMs} ms (every fault healed by ${durationMs} ms)`,
      );
    }
    if (lost > 0) this.violate("no-job-lost", "-", `${lost} job(s) never ended`);
    return lost;
  }
}
