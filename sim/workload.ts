/**
 * The workload: jobs arrive at uniformly drawn times over the scenario's
 * duration, each for a drawn project with a log-normal duration and a chance
 * to fail, submitted to the project's master (held until a master that is
 * down is back); and the simulated sandbox that runs them, which decides what
 * each worker reports: the truth, or the wrong digest its behaviour calls for.
 */
import type { ExecutionRequest, JobSpec } from "../jobs/index.ts";
import { colluderDigest, honestDigest, type JobTruth, liarDigest, sybilDigest } from "./invariants.ts";
import type { Observer } from "./observer.ts";
import { dayMs, type Population, simProjectId } from "./population.ts";
import { logNormal, pick, type Rng } from "./rng.ts";
import type { Scenario } from "./scenario.ts";
import type { SimNode, SimRun, SimWorld } from "./world.ts";

export function simJobId(project: number, index: number): string {
  return `p${project}-j${index}`;
}

/** The spec of a simulated job: the scenario's replication, quorum, shards and attempts; a timeout from its duration. */
export function simJobSpec(jobs: Scenario["jobs"], deadlineMs: number, durationMs: number): JobSpec {
  return {
    name: "simulated job",
    steps: [{ name: "test", run: "npm test" }],
    env: {},
    timeoutMs: Math.min(dayMs, Math.max(60_000, durationMs * 4)),
    resources: { cpus: 2, memoryBytes: 2 ** 31, diskBytes: 2 ** 32, processes: 256 },
    network: false,
    outputs: [],
    inputsDigest: null,
    requiredSpecs: [],
    os: "linux",
    replicas: jobs.replicas,
    quorum: jobs.quorum,
    shards: jobs.shards,
    priority: 0,
    maxAttempts: jobs.maxAttempts,
    deadlineMs,
    ...(jobs.locks.length > 0 ? { locks: jobs.locks } : {}),
  };
}

/**
 * What colluding identities tell each other: which of them hold a run of which shard. An identity that joins a shard
 * where another of its group already holds one makes both lie (those that wait for a partner leave a way to).
 * Only colluders' runs are written here, so it stays as small as their work.
 */
export class CollusionBoard {
  private readonly holders = new Map<
    string,
    { readonly group: number; readonly node: number; lie: (() => void) | null }[]
  >();

  /** Identity `node` of `group` holds a run of the shard; `lie` makes it lie now (null: it lies anyway). */
  joined(group: number, node: number, jobId: string, shard: number, lie: (() => void) | null): void {
    const key = `${jobId}#${shard}`;
    let list = this.holders.get(key);
    if (list === undefined) {
      list = [];
      this.holders.set(key, list);
    }
    const entry = { group, node, lie };
    list.push(entry);
    const partners = list.filter((other) => other.group === group && other.node !== node);
    if (partners.length === 0) return;
    for (const holder of [...partners, entry]) {
      const go = holder.lie;
      holder.lie = null;
      go?.();
    }
  }
}

export class Workload {
  /** Every arrival has come (each submitted, or held for its master). */
  arrivalsDone = false;
  private readonly scenario: Scenario;
  private readonly rng: Rng;
  private readonly world: SimWorld;
  private readonly observer: Observer;
  private readonly population: Population;
  /** Submissions held for a master that is down, by its node index, in arrival order. */
  private readonly pendingSubmits = new Map<number, (() => void)[]>();
  /** Runs each colluder did honestly, by node index, then by project: it lies once it has done `patience` of them. */
  private readonly honestRuns = new Map<number, Map<string, number>>();
  readonly collusion = new CollusionBoard();

  constructor(scenario: Scenario, rng: Rng, world: SimWorld, observer: Observer, population: Population) {
    this.scenario = scenario;
    this.rng = rng;
    this.world = world;
    this.observer = observer;
    this.population = population;
  }

  /** Draws every arrival time now, then schedules each arrival after the one before it. */
  scheduleArrivals(): void {
    const j = this.scenario.jobs;
    const times: number[] = [];
    for (let i = 0; i < j.count; i++) times.push(Math.floor(this.rng() * this.scenario.duration));
    times.sort((a, b) => a - b);
    const next = (i: number) => {
      if (i >= times.length) {
        this.arrivalsDone = true;
        return;
      }
      this.world.at(times[i] as number, () => {
        this.submit(i);
        next(i + 1);
      });
    };
    next(0);
  }

  /** A master is back: the submissions held for it, in arrival order. */
  deliverPending(master: number): void {
    const pending = this.pendingSubmits.get(master) ?? [];
    this.pendingSubmits.delete(master);
    for (const deliver of pending) deliver();
  }

  pendingSubmitsCount(): number {
    let n = 0;
    for (const list of this.pendingSubmits.values()) n += list.length;
    return n;
  }

  /**
   * The simulated sandbox: a run takes the job's duration on this node's speed; liars and sybils report their own
   * digests; a colluder runs honestly until it has done `patience` runs of the project, then reports its group's
   * digest `lieAfter` after the award, without running.
   */
  runOf(node: SimNode, run: ExecutionRequest): SimRun | null {
    const truth = this.observer.jobs.get(run.jobId);
    if (truth === undefined) return null;
    const durationMs = Math.max(1, Math.round(truth.durationMs / node.speed));
    if (node.behaviour === "colluder") {
      const c = this.scenario.actors.colluders;
      let runs = this.honestRuns.get(node.index);
      if (runs === undefined) {
        runs = new Map();
        this.honestRuns.set(node.index, runs);
      }
      const done = runs.get(run.project) ?? 0;
      const lie = {
        durationMs: Math.max(1, c.lieAfter),
        outcome: "succeeded",
        outputsDigest: colluderDigest(node.group),
      } as const;
      if (done < c.patience) runs.set(run.project, done + 1);
      else if (c.tactic === "always") {
        this.observer.figures.count("wrongResultsSent");
        this.observer.figures.count("colluderLies");
        return lie;
      } else
        return {
          ...this.honestRun(truth, run, durationMs),
          started: (finishEarly) =>
            this.collusion.joined(node.group, node.index, run.jobId, run.shard, () => {
              this.observer.figures.count("wrongResultsSent");
              this.observer.figures.count("colluderLies");
              finishEarly(lie.durationMs, lie);
            }),
        };
    } else if (node.behaviour !== "honest") this.observer.figures.count("wrongResultsSent");
    if (node.behaviour === "liar") return { durationMs, outcome: "succeeded", outputsDigest: liarDigest(node.index) };
    if (node.behaviour === "sybil") return { durationMs, outcome: "succeeded", outputsDigest: sybilDigest(node.group) };
    return this.honestRun(truth, run, durationMs);
  }

  private honestRun(truth: JobTruth, run: ExecutionRequest, durationMs: number): SimRun {
    return {
      durationMs,
      outcome: truth.failing ? "failed" : "succeeded",
      outputsDigest: honestDigest(truth.index, run.shard),
    };
  }

  private submit(index: number): void {
    const j = this.scenario.jobs;
    const project = pick(this.rng, this.scenario.projects);
    const durationMs = Math.max(1, Math.round(logNormal(this.rng, j.medianDuration, j.durationSigma)));
    const failing = this.rng() < j.failing;
    const jobId = simJobId(project, index);
    const truth: JobTruth = {
      index,
      project,
      submittedAtMs: this.world.nowMs,
      durationMs,
      failing,
      quorum: j.quorum,
      shards: j.shards,
      replicas: j.replicas,
      firstAwardAtMs: null,
      firstStartAtMs: null,
      awards: 0,
      endedAtMs: null,
      status: "open",
      terminalMessages: 0,
      endsPublished: 0,
      results: Array.from({ length: j.shards }, () => new Map()),
      trustedAlone: null,
    };
    this.observer.submit(truth, jobId);
    const master = this.world.nodes[this.population.masterOf(project)] as SimNode;
    // The project submits to its master node's store: a master that is down takes the job when it is back.
    const deliver = () =>
      master.driver?.toMaster(simProjectId(project), {
        kind: "submit",
        jobId,
        job: simJobSpec(j, this.world.absMs() + j.deadline, durationMs),
      });
    if (master.online) deliver();
    else {
      const pending = this.pendingSubmits.get(master.index);
      if (pending === undefined) this.pendingSubmits.set(master.index, [deliver]);
      else pending.push(deliver);
    }
  }
}
