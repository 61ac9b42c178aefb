/**
 * A run's figures: the series sampled while it runs, the node counts kept as
 * nodes come and go, and the Metrics collected at its end from the world's
 * counters and what the observer saw.
 */
import type { OfferKinds } from "./figures.ts";
import { invariantNames, type Violation } from "./invariants.ts";
import type { Observer } from "./observer.ts";
import type { Scenario } from "./scenario.ts";
import { exactQuantile, jainIndex, type Percentiles, round } from "./stats.ts";
import type { SimWorld } from "./world.ts";

export interface SeriesPoint {
  readonly tMs: number;
  readonly openJobs: number;
  readonly liveWorkers: number;
  readonly messages: number;
  readonly offers: number;
  readonly bids: number;
  readonly verdicts: number;
  readonly claimP50Ms: number | null;
  readonly verdictP50Ms: number | null;
}

export interface Metrics {
  readonly scenario: string;
  readonly seed: number;
  readonly signatures: "real" | "fast";
  readonly settings: Scenario;
  readonly run: { readonly simulatedMs: number; readonly events: number; readonly endedWhenAllJobsEnded: boolean };
  readonly nodes: Record<string, number>;
  readonly jobs: {
    readonly submitted: number;
    readonly passed: number;
    readonly failed: number;
    readonly cancelled: number;
    readonly lost: number;
    readonly wrongResultsAccepted: number;
  };
  /** From a job's submission to the start of its first run on a worker. */
  readonly claimLatencyMs: Percentiles;
  /** From a job's submission to its first award leaving the master. */
  readonly awardLatencyMs: Percentiles;
  readonly timeToVerdictMs: Percentiles;
  /** Runs the submitted jobs wanted: the sum of shards × replicas over them (not the awards it took). */
  readonly wantedRuns: number;
  readonly offersPerJob: number;
  readonly bidsPerJob: number;
  /** Offers and bids sent, each over the wanted runs, and together. */
  readonly offersPerWantedRun: number;
  readonly bidsPerWantedRun: number;
  readonly offersAndBidsPerWantedRun: number;
  /**
   * The claim traffic jobs cause, over the wanted runs: bids, and offers that change what a master holds (a slot came
   * free or was taken) or answer an announcement. A worker's first offer to a master and its renewals are what the
   * worker costs by being there (the gossiped adverts these offers replaced), counted per worker hour instead.
   */
  readonly claimMessagesPerWantedRun: number;
  /** Runs awarded over the wanted runs: re-awards after lost leases, refusals, disputes and spot checks add to 1. */
  readonly awardsPerWantedRun: number;
  /** Offers sent, those that reached a master's machine, and each by what it changed (figures.ts, OfferKinds). */
  readonly offers: OfferKinds & { readonly sent: number; readonly delivered: number };
  /** Every transmission (gossip hops, gossip control, direct messages) over the submitted jobs. */
  readonly messagesPerJob: number;
  /** Every transmission over the hours workers spent online, all workers together (`workerHours`). */
  readonly messagesPerWorkerHour: number;
  readonly workerHours: number;
  /** The same while jobs arrive (up to `duration`): the steady cost per worker, without the drain's tail. */
  readonly messagesPerWorkerHourArriving: number;
  readonly messages: Record<string, number>;
  readonly messagesByDomain: Record<string, number>;
  /** Admission verdicts of every node, by reason (jobs/admission.ts). */
  readonly admissions: Record<string, number>;
  readonly gossip: { readonly publishes: number; readonly deliveryFraction: number; readonly latencyMs: Percentiles };
  readonly load: {
    readonly workersEverOnline: number;
    readonly runsPerWorker: { mean: number; p50: number | null; p90: number | null; max: number };
    readonly idleWorkers: number;
    /** Slot time runs took over the slot time of workers online: how busy the mesh was on average. */
    readonly busySlotFraction: number;
  };
  readonly fairness: {
    readonly jainCompletion: number | null;
    readonly jainTimeToVerdict: number | null;
    readonly perProject: readonly {
      project: number;
      submitted: number;
      passed: number;
      failed: number;
      p50TimeToVerdictMs: number | null;
    }[];
  };
  readonly security: Record<string, number>;
  /** Times a job that wanted runs began to wait for a project lock (the scenario's jobs.locks) its holders filled. */
  readonly lockWaits: number;
  readonly invariants: { readonly checked: readonly string[]; readonly violations: readonly Violation[] };
  readonly series: readonly SeriesPoint[];
}

/** The nodes of a run, by kind and by what befell them (Metrics.nodes, in this order). */
export type NodeCounts = {
  masters: number;
  workersInitial: number;
  joined: number;
  left: number;
  crashed: number;
  crashedLosingStore: number;
  exodusDepartures: number;
  masterCrashes: number;
  spammers: number;
  forgers: number;
  replayers: number;
  liars: number;
  sybils: number;
  colluders: number;
  throwaways: number;
  runners: number;
};

export function newNodeCounts(): NodeCounts {
  return {
    masters: 0,
    workersInitial: 0,
    joined: 0,
    left: 0,
    crashed: 0,
    crashedLosingStore: 0,
    exodusDepartures: 0,
    masterCrashes: 0,
    spammers: 0,
    forgers: 0,
    replayers: 0,
    liars: 0,
    sybils: 0,
    colluders: 0,
    throwaways: 0,
    runners: 0,
  };
}

/** Samples the series into `series` at time 0, then every `everyMs` while the next sample is at most `endMs`. */
export function scheduleSamples(
  world: SimWorld,
  observer: Observer,
  everyMs: number,
  endMs: number,
  series: SeriesPoint[],
): void {
  const sample = () => {
    let liveWorkers = 0;
    for (const node of world.nodes) if (node.online && node.role === "worker") liveWorkers++;
    series.push({
      tMs: world.nowMs,
      openJobs: observer.figures.openJobs,
      liveWorkers,
      ...observer.figures.takeInterval(),
    });
    if (world.nowMs + everyMs <= endMs) world.at(world.nowMs + everyMs, sample);
  };
  world.at(0, sample);
}

/** What the mesh had carried, and how long workers had been online, when the last job arrived (at `duration`). */
export interface ArrivalWindow {
  readonly messages: number;
  readonly workerOnlineMs: number;
}

/** What a finished run hands over for its Metrics. */
export interface RunEnd {
  readonly scenario: Scenario;
  readonly seed: number;
  readonly world: SimWorld;
  readonly observer: Observer;
  readonly events: number;
  /** The run stopped because every job had ended, before its end time. */
  readonly endedEarly: boolean;
  /** Taken at `duration`; null when the run stopped before. */
  readonly arrivals: ArrivalWindow | null;
  readonly nodes: NodeCounts;
  readonly series: readonly SeriesPoint[];
}

/** The Metrics of a finished run; jobs still open are checked (and counted lost) first. */
export function collectMetrics(end: RunEnd): Metrics {
  const { scenario: s, world, observer } = end;
  const lost = observer.invariants.checkEnded(observer.jobs, world.nowMs, s.duration);
  const workers = world.nodes.filter((n) => n.role === "worker" && n.everOnline);
  const runs = workers.map((n) => n.runsStarted).sort((a, b) => a - b);
  const perProject = observer.figures.perProject(observer.jobs.values());
  const withJobs = perProject.filter((p) => p.submitted > 0);
  const totalMessages = world.carrier.totalMessages();
  const arrivals = end.arrivals ?? { messages: totalMessages, workerOnlineMs: world.workerOnlineMs() };
  const figures = observer.figures;
  const submitted = figures.submitted;
  const wanted = Math.max(1, figures.wantedRuns);
  const workerHours = world.workerOnlineMs() / 3_600_000;
  let awards = 0;
  for (const truth of observer.jobs.values()) awards += truth.awards;
  return {
    scenario: s.name,
    seed: end.seed,
    signatures: s.signatures,
    settings: s,
    run: { simulatedMs: Math.round(world.nowMs), events: end.events, endedWhenAllJobsEnded: end.endedEarly },
    nodes: end.nodes,
    jobs: {
      submitted,
      passed: observer.figures.jobCounts.passed,
      failed: observer.figures.jobCounts.failed,
      cancelled: observer.figures.jobCounts.cancelled,
      lost,
      wrongResultsAccepted: observer.figures.jobCounts.wrongResultsAccepted,
    },
    claimLatencyMs: figures.claim.summary(),
    awardLatencyMs: figures.award.summary(),
    timeToVerdictMs: figures.verdictLatency.summary(),
    wantedRuns: figures.wantedRuns,
    offersPerJob: round(figures.offers / Math.max(1, submitted)),
    bidsPerJob: round(figures.bids / Math.max(1, submitted)),
    offersPerWantedRun: round(figures.offers / wanted),
    bidsPerWantedRun: round(figures.bids / wanted),
    offersAndBidsPerWantedRun: round((figures.offers + figures.bids) / wanted),
    claimMessagesPerWantedRun: round(
      (figures.offers - figures.offerKinds.first - figures.offerKinds.renewal + figures.bids) / wanted,
    ),
    awardsPerWantedRun: round(awards / wanted),
    offers: { sent: figures.offers, delivered: figures.offersDelivered, ...figures.offerKinds },
    messagesPerJob: round(totalMessages / Math.max(1, submitted)),
    messagesPerWorkerHour: round(totalMessages / Math.max(1e-9, workerHours)),
    workerHours: round(workerHours),
    messagesPerWorkerHourArriving: round(arrivals.messages / Math.max(1e-9, arrivals.workerOnlineMs / 3_600_000)),
    messages: { ...world.carrier.counters, total: totalMessages },
    messagesByDomain: observer.figures.byDomain,
    admissions: observer.figures.admissions,
    gossip: {
      publishes: world.carrier.gossipPublishes,
      deliveryFraction: round(world.carrier.gossipDelivered / Math.max(1, world.carrier.gossipExpected)),
      latencyMs: world.carrier.gossipLatency.summary(),
    },
    load: {
      workersEverOnline: workers.length,
      runsPerWorker: {
        mean: round(runs.reduce((a, b) => a + b, 0) / Math.max(1, runs.length)),
        p50: exactQuantile(runs, 0.5),
        p90: exactQuantile(runs, 0.9),
        max: runs[runs.length - 1] ?? 0,
      },
      idleWorkers: runs.filter((r) => r === 0).length,
      busySlotFraction: round(world.busySlotMs / Math.max(1, s.workers.slots * world.workerOnlineMs())),
    },
    fairness: {
      jainCompletion: jainIndex(withJobs.map((p) => (p.passed + p.failed) / p.submitted)),
      jainTimeToVerdict: jainIndex(
        withJobs.flatMap((p) => (p.p50TimeToVerdictMs === null ? [] : [1 / Math.max(1, p.p50TimeToVerdictMs)])),
      ),
      perProject,
    },
    security: observer.figures.security,
    lockWaits: observer.figures.lockWaits,
    invariants: { checked: invariantNames, violations: observer.invariants.listed() },
    series: end.series,
  };
}
