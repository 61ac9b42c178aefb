/**
 * The simulator: a scenario's workload, faults and actors played on a
 * simulated world (sim/world.ts), in which every cimesh node runs the very
 * shell core a real node runs (jobs/driver.ts), with only the network, the
 * store, the sandbox and the clock replaced. The observer (sim/observer.ts)
 * watches from outside and checks the invariants against what the network
 * carried; the run's figures come back as Metrics (sim/metrics.ts).
 *
 * The pieces: who is in the mesh (sim/population.ts), the jobs and the
 * simulated sandbox (sim/workload.ts), the faults (sim/faults.ts), the
 * figures (sim/metrics.ts); here they are put together and the clock run.
 *
 * Determinism: one seeded generator (sim/rng.ts) draws everything in event
 * order; events at the same instant run in the order they were scheduled;
 * no wall clock is read here.
 */
import type { JobSpec, StampedMessage } from "../jobs/index.ts";
import type { ActorCounter, ActorWorld } from "./actors.ts";
import { Faults } from "./faults.ts";
import {
  type ArrivalWindow,
  collectMetrics,
  type Metrics,
  newNodeCounts,
  type SeriesPoint,
  scheduleSamples,
} from "./metrics.ts";
import { type EndedJob, Observer, type Sabotage } from "./observer.ts";
import { feedNightFacts, Population, simDimensions, simProjectId } from "./population.ts";
import { type Rng, seededRng } from "./rng.ts";
import type { Scenario } from "./scenario.ts";
import { simJobSpec, Workload } from "./workload.ts";
import { SimWorld, type Wire } from "./world.ts";

/** How often (in events) the loop reports progress. */
export const progressEveryEventsCount = 1 << 10;

export interface RunOptions {
  /** Called every few thousand events with the simulated time reached: for a progress bar. */
  readonly onProgress?: (simulatedMs: number, endMs: number, events: number) => void;
  /** Test-only: break the run on purpose to show that the invariants catch it. */
  readonly sabotage?: Sabotage;
  /** Told of every job as it ends: for figures per job (bench/sybil.ts). */
  readonly onJobEnded?: (job: EndedJob) => void;
}

/** The world as the hostile actors see it: the simulated world, with what they send counted by the observer. */
class SimActorWorld implements ActorWorld<Wire> {
  readonly rng: Rng;
  readonly dimensions = simDimensions;
  readonly endMs: number;
  private readonly scenario: Scenario;
  private readonly world: SimWorld;
  private readonly observer: Observer;
  private readonly population: Population;
  private readonly workload: Workload;

  constructor(scenario: Scenario, world: SimWorld, observer: Observer, population: Population, workload: Workload) {
    this.rng = world.rng;
    this.endMs = scenario.duration;
    this.scenario = scenario;
    this.world = world;
    this.observer = observer;
    this.population = population;
    this.workload = workload;
  }

  nowMs(): number {
    return this.world.nowMs;
  }

  absMs(): number {
    return this.world.absMs();
  }

  at(atMs: number, run: () => void): void {
    this.world.at(atMs, run);
  }

  wire(from: number, message: StampedMessage, tampered = false): Wire {
    this.observer.carried(message);
    return this.world.wire(from, message, tampered);
  }

  forged(wire: Wire): Wire {
    return { ...wire, forged: true };
  }

  replay(from: number, original: Wire): Wire {
    return this.world.replay(from, original);
  }

  signerOf(wire: Wire): string | null {
    return this.world.signerOf(wire);
  }

  publishWire(from: number, topic: number, wire: Wire): void {
    this.world.publishWire(from, topic, wire);
  }

  sendWire(from: number, to: number, wire: Wire): void {
    this.world.sendWire(from, to, wire);
  }

  count(counter: ActorCounter): void {
    this.observer.figures.count(counter);
  }

  colluded(group: number, index: number, jobId: string, shard: number): void {
    this.workload.collusion.joined(group, index, jobId, shard, null);
  }

  masterOf(topic: number): number {
    return this.population.masterOf(topic);
  }

  projectsCount(): number {
    return this.scenario.projects;
  }

  projectId(topic: number): string {
    return simProjectId(topic);
  }

  topicOf(project: string): number | undefined {
    return this.population.topicOf(project);
  }

  jobSpec(deadlineMs: number, durationMs: number): JobSpec {
    return simJobSpec(this.scenario.jobs, deadlineMs, durationMs);
  }

  durationMs(): number {
    return this.scenario.jobs.medianDuration;
  }
}

export class Simulation {
  readonly scenario: Scenario;
  readonly seed: number;
  readonly rng: Rng;
  readonly world: SimWorld;
  private events = 0;
  private readonly observer: Observer;
  private readonly nodeCounts = newNodeCounts();
  private readonly series: SeriesPoint[] = [];
  private readonly population: Population;
  private readonly workload: Workload;
  private readonly faults: Faults;

  constructor(scenario: Scenario, seed: number, sabotage?: Sabotage) {
    this.scenario = scenario;
    this.seed = seed;
    this.rng = seededRng(seed);
    this.observer = new Observer(scenario.projects, sabotage, scenario.actors.replayers > 0);
    const g = scenario.gossip;
    this.world = new SimWorld({
      seed,
      rng: this.rng,
      signatures: scenario.signatures,
      network: scenario.network,
      gossip: {
        meshDegree: g.meshDegree,
        meshDegreeLow: g.meshDegreeLow,
        meshDegreeHigh: g.meshDegreeHigh,
        lazyDegree: g.lazyDegree,
        heartbeatMs: g.heartbeat,
        historyGossip: g.historyGossip,
        seenTtlMs: g.seenTtl,
      },
      partitions: scenario.partitions,
      observer: this.observer,
      driverSetup: (node) => this.population.driverSetup(node),
      runOf: (node, run) => this.workload.runOf(node, run),
      topicOf: (project) => this.population.topicOf(project),
      projectOf: (topic) => simProjectId(topic),
      onOnline: (node) => {
        if (node.nightOnly) feedNightFacts(this.world, node);
      },
    });
    this.population = new Population(scenario, seed, this.rng, this.world, this.nodeCounts);
    this.workload = new Workload(scenario, this.rng, this.world, this.observer, this.population);
    this.faults = new Faults(scenario, this.rng, this.world, this.nodeCounts, this.population, this.workload);
  }

  run(options: RunOptions = {}): Metrics {
    const s = this.scenario;
    this.observer.onJobEnded = options.onJobEnded;
    const endMs = s.duration + s.drain;
    this.setUp();
    scheduleSamples(this.world, this.observer, s.sampleInterval, endMs, this.series);
    // What the mesh carried while jobs arrived: the steady cost per worker, apart from the drain's tail.
    let arrivals: ArrivalWindow | null = null;
    this.world.at(s.duration, () => {
      arrivals = { messages: this.world.carrier.totalMessages(), workerOnlineMs: this.world.workerOnlineMs() };
    });
    let endedEarly = false;
    for (;;) {
      const next = this.world.queue.peekMs();
      if (next === null || next > endMs) break;
      if (next >= s.duration && this.allJobsEnded()) {
        endedEarly = true;
        break;
      }
      const event = this.world.queue.pop();
      if (event === undefined) break;
      this.world.nowMs = event.atMs;
      this.observer.at(this.world.nowMs);
      event.run();
      this.events++;
      if (options.onProgress !== undefined && (this.events & (progressEveryEventsCount - 1)) === 0)
        options.onProgress(this.world.nowMs, endMs, this.events);
    }
    if (!endedEarly) this.world.nowMs = Math.max(this.world.nowMs, Math.min(endMs, this.world.queue.peekMs() ?? endMs));
    return collectMetrics({
      scenario: s,
      seed: this.seed,
      world: this.world,
      observer: this.observer,
      events: this.events,
      endedEarly,
      arrivals,
      nodes: this.nodeCounts,
      series: this.series,
    });
  }

  /** The nodes (all brought online), then the arrivals and the faults on the clock. */
  private setUp(): void {
    this.population.addMastersAndWorkers();
    for (let p = 0; p < this.scenario.projects; p++) this.observer.setRunners(p, this.population.runnersOf(p));
    this.population.addActors(
      new SimActorWorld(this.scenario, this.world, this.observer, this.population, this.workload),
    );
    for (const node of this.world.nodes) this.world.bringOnline(node);
    this.workload.scheduleArrivals();
    this.faults.schedule();
  }

  /** Every job has arrived and ended, and none waits for its master. */
  private allJobsEnded(): boolean {
    return (
      this.workload.arrivalsDone && this.observer.figures.openJobs === 0 && this.workload.pendingSubmitsCount() === 0
    );
  }
}

/** Runs one scenario with one seed. */
export function simulate(scenario: Scenario, seed: number = scenario.seed, options: RunOptions = {}): Metrics {
  return new Simulation(scenario, seed, options.sabotage).run(options);
}
