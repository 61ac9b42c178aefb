/**
 * The simulator's observer: it watches the run from outside the machines and
 * checks the invariants against what the network carried, never against the
 * machines' own books. It is the one place of sim/ that reads message types:
 * it counts bids and awards, sees verdicts and cancels leave a master, sees
 * results reach one, and sees every admission verdict (a forged or replayed
 * message that reached a machine is a violation).
 *
 * For the tests of the checker itself it can also break the system under test
 * on purpose (Sabotage), between a master and the network.
 */
import type { Admission, StampedMessage } from "../jobs/index.ts";
import { resultDigest } from "../jobs/index.ts";
import { exactQuantile, Histogram, type Percentiles } from "./stats.ts";

export interface Violation {
  readonly invariant:
    | "no-job-lost"
    | "accepted-once"
    | "quorum"
    | "ends-after-heal"
    | "no-forgery-accepted"
    | "no-replay-accepted";
  readonly jobId: string;
  readonly detail: string;
}

export const invariantNames = [
  "no-job-lost: every submitted job ends with exactly one verdict or cancel",
  "accepted-once: no job gets a second verdict",
  "quorum: every accepted digest was reported by at least quorum distinct workers (1 where the master trusted a worker alone)",
  "ends-after-heal: every job has ended when the run stops, after every fault healed and the drain",
  "no-forgery-accepted: no tampered or untrusted message reaches a state machine",
  "no-replay-accepted: no node's machine takes a signed message twice, however often it is sent again",
] as const;

/** Violations kept in the metrics: the first ones say enough. */
export const maxListedViolationsCount = 50;

/**
 * Deliberate defects in the system under test, for the tests of the invariant checker only: each one breaks the
 * first verdict a master publishes, between the machine and the network.
 */
export type Sabotage = "drop-verdict" | "duplicate-verdict" | "unreported-digest";

/** What the observer knows of a wire: who sent it, and whether an actor forged or replayed it. */
export interface ObservedWire {
  readonly from: number;
  readonly forged?: boolean;
  /** The wire a replayer sent again: set on the copy. */
  readonly original?: ObservedWire;
  /** The receivers (by their store: what a node remembers) whose machine took this wire; kept while replayers act. */
  takenBy?: Set<object>;
}

/** What the run knows about a job from outside the machines: the truth and what the network carried. */
export interface JobTruth {
  readonly index: number;
  readonly project: number;
  readonly submittedAtMs: number;
  readonly durationMs: number;
  readonly failing: boolean;
  readonly quorum: number;
  readonly shards: number;
  firstAwardAtMs: number | null;
  endedAtMs: number | null;
  status: "open" | "passed" | "failed" | "cancelled";
  terminalMessages: number;
  /** Per shard: digest → workers whose result with that digest reached the master. */
  results: Map<string, Set<number>>[] | null;
  trustedAlone: Set<number> | null;
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

export interface SeriesInterval {
  messages: number;
  bids: number;
  verdicts: number;
  claims: number[];
  verdictTimes: number[];
}

export class Observer {
  readonly jobs = new Map<string, JobTruth>();
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
  private readonly violations: Violation[] = [];
  private violationCount = 0;
  private sabotage: Sabotage | undefined;
  private nowMs = 0;

  /** Whether replayers act: only then does a wire remember who took it. */
  private readonly tracksReplays: boolean;

  constructor(projects: number, sabotage: Sabotage | undefined, tracksReplays = false) {
    this.tracksReplays = tracksReplays;
    this.perProjectVerdict = Array.from({ length: projects }, () => new Histogram());
    this.sabotage = sabotage;
  }

  /** The virtual time of what is observed next. */
  at(nowMs: number): void {
    this.nowMs = nowMs;
  }

  violate(invariant: Violation["invariant"], jobId: string, detail: string): void {
    this.violationCount++;
    if (this.violations.length < maxListedViolationsCount) this.violations.push({ invariant, jobId, detail });
  }

  listedViolations(): readonly Violation[] {
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

  submit(truth: JobTruth, jobId: string): void {
    this.jobs.set(jobId, truth);
    this.submitted++;
    this.openJobs++;
  }

  /** A message leaves a node (sealed or not): counted by type. */
  carried(message: StampedMessage): void {
    this.byDomain[message.domain] = (this.byDomain[message.domain] ?? 0) + 1;
  }

  /**
   * Every admission verdict of every node: counted by reason. A forged message taken is a violation; so is a replay
   * taken by a node that took the original (`memory` is what the node remembers across restarts: its store). A
   * replay reaching a node that never took the original (one that joined later) is only a late delivery.
   */
  admitted(node: number, memory: object, admission: Admission, wire: ObservedWire): void {
    this.admissions[admission.reason] = (this.admissions[admission.reason] ?? 0) + 1;
    if (admission.reason === "forged") this.security.refusedSignature = (this.security.refusedSignature ?? 0) + 1;
    if (admission.reason === "untrusted-signer")
      this.security.refusedUntrusted = (this.security.refusedUntrusted ?? 0) + 1;
    if (admission.deliveries.length === 0) return;
    if (wire.forged === true) {
      this.security.forgeriesAccepted = (this.security.forgeriesAccepted ?? 0) + 1;
      this.violate(
        "no-forgery-accepted",
        "-",
        `a forged message from node ${wire.from} reached node ${node}'s machine`,
      );
    }
    if (wire.original !== undefined) {
      if (wire.original.takenBy?.has(memory) === true) {
        this.security.replaysAccepted = (this.security.replaysAccepted ?? 0) + 1;
        this.violate(
          "no-replay-accepted",
          "-",
          `a message node ${node} had taken reached its machine again, replayed by node ${wire.from}`,
        );
      }
    } else if (this.tracksReplays) (wire.takenBy ??= new Set()).add(memory);
    for (const delivery of admission.deliveries)
      if (delivery.machine === "master" && delivery.input.kind === "result")
        this.observeResult(wire.from, delivery.input.result);
  }

  /** A direct message leaves a node. */
  sent(message: StampedMessage): void {
    this.carried(message);
    if (message.domain === "bid") {
      this.bids++;
      this.interval.bids++;
    }
    if (message.domain === "award") this.observeAward(String(message.body.jobId));
  }

  /**
   * A message a master publishes: a verdict or a whole-job cancel ends a job. Returns what goes on the network:
   * the message itself, or what the sabotage (tests of the checker only) made of it.
   */
  published(master: number, message: StampedMessage): StampedMessage[] {
    this.carried(message);
    let out = [message];
    if (this.sabotage !== undefined && message.domain === "verdict") {
      const sabotage = this.sabotage;
      this.sabotage = undefined;
      if (sabotage === "drop-verdict") out = [];
      if (sabotage === "duplicate-verdict") out = [message, message];
      if (sabotage === "unreported-digest") {
        const digests = message.body.acceptedDigests as (string | null)[];
        out = [
          { domain: "verdict", body: { ...message.body, acceptedDigests: digests.map(() => "bnobodyreportedthis") } },
        ];
      }
    }
    for (const copy of out) this.observeMasterPublish(master, copy);
    return out;
  }

  /** A machine's log line: the master's "trusted-alone" tells the quorum check to expect one result. */
  logged(event: string, fields: Readonly<Record<string, unknown>>): void {
    if (event !== "trusted-alone") return;
    const truth = this.jobs.get(String(fields.jobId));
    if (truth === undefined) return;
    if (truth.trustedAlone === null) truth.trustedAlone = new Set();
    truth.trustedAlone.add(Number(fields.shard));
  }

  private observeAward(jobId: string): void {
    const truth = this.jobs.get(jobId);
    if (truth === undefined || truth.firstAwardAtMs !== null) return;
    truth.firstAwardAtMs = this.nowMs;
    const latency = this.nowMs - truth.submittedAtMs;
    this.claim.add(latency);
    this.interval.claims.push(latency);
  }

  private observeResult(
    from: number,
    result: { jobId: string; shard: number; outcome: string; exitCode: number | null; outputsDigest: string | null },
  ): void {
    const truth = this.jobs.get(result.jobId);
    if (truth === undefined || truth.results === null || result.outcome === "refused") return;
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

  private observeMasterPublish(master: number, message: StampedMessage): void {
    const { domain, body } = message;
    if (domain !== "verdict" && !(domain === "cancel" && body.attempt === null)) return;
    const jobId = String(body.jobId);
    const truth = this.jobs.get(jobId);
    if (truth === undefined) {
      this.violate("no-job-lost", jobId, `master node ${master} ended a job nobody submitted`);
      return;
    }
    truth.terminalMessages++;
    if (truth.terminalMessages > 1) {
      this.violate("accepted-once", jobId, `verdict or cancel number ${truth.terminalMessages} for the job`);
      return;
    }
    truth.endedAtMs = this.nowMs;
    this.openJobs--;
    this.interval.verdicts++;
    const latency = this.nowMs - truth.submittedAtMs;
    this.verdictLatency.add(latency);
    this.perProjectVerdict[truth.project]?.add(latency);
    this.interval.verdictTimes.push(latency);
    if (domain === "cancel") {
      truth.status = "cancelled";
      this.jobCounts.cancelled++;
    } else
      this.checkVerdict(jobId, truth, body as { outcome: "passed" | "failed"; acceptedDigests: (string | null)[] });
    truth.results = null;
    truth.trustedAlone = null;
  }

  private checkVerdict(
    jobId: string,
    truth: JobTruth,
    verdict: { outcome: "passed" | "failed"; acceptedDigests: (string | null)[] },
  ): void {
    truth.status = verdict.outcome;
    if (verdict.outcome === "passed") this.jobCounts.passed++;
    else this.jobCounts.failed++;
    let wrong = false;
    verdict.acceptedDigests.forEach((digest, shard) => {
      if (digest === null) return;
      const agreeing = truth.results?.[shard]?.get(digest)?.size ?? 0;
      const needed = truth.trustedAlone?.has(shard) === true ? 1 : truth.quorum;
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
    if (wrong) this.jobCounts.wrongResultsAccepted++;
  }

  /** At the end: every job that never ended breaks two invariants. Returns how many were lost. */
  checkEnded(nowMs: number, durationMs: number): number {
    let lost = 0;
    for (const [jobId, truth] of this.jobs) {
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

  perProject(): {
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
    for (const truth of this.jobs.values()) {
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

export type { Percentiles };
