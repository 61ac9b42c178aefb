/**
 * The simulator: a scenario's workload, faults and actors played on a
 * simulated world (sim/world.ts), in which every cimesh node runs the very
 * shell core a real node runs (jobs/driver.ts), with only the network, the
 * store, the sandbox and the clock replaced. The observer (sim/observer.ts)
 * watches from outside and checks the invariants against what the network
 * carried; the run's figures come back as Metrics.
 *
 * Determinism: one seeded generator (sim/rng.ts) draws everything in event
 * order; events at the same instant run in the order they were scheduled;
 * no wall clock is read here.
 */
import { acceptKeyset, identityFromSeed, type ProjectTrust, sealKeyset, trustFromAnchor } from "../crypto/index.ts";
import {
  type Availability,
  createWorker,
  type ExecutionRequest,
  type JobSpec,
  type StampedMessage,
  type WorkerState,
} from "../jobs/index.ts";
import { type ActorWorld, Replayer, Spammer, startForger } from "./actors.ts";
import {
  honestDigest,
  invariantNames,
  type JobTruth,
  liarDigest,
  Observer,
  type Sabotage,
  sybilDigest,
  type Violation,
} from "./observer.ts";
import { exponential, logNormal, pick, type Rng, seededRng } from "./rng.ts";
import type { Scenario } from "./scenario.ts";
import { exactQuantile, jainIndex, type Percentiles, round } from "./stats.ts";
import { SimStore } from "./store.ts";
import { type Behaviour, type SimNode, type SimRun, SimWorld, simEpochMs, type Wire } from "./world.ts";

export { fastEnvelopeBytes, simEpochMs } from "./world.ts";
export { invariantNames, type Sabotage, type Violation };

export const dayMs = 86_400_000;
export const hourMs = 3_600_000;
/** How often (in events) the loop reports progress. */
export const progressEveryEventsCount = 1 << 10;
/** Night-only volunteers take work from this minute of the day (20:00)... */
export const nightStartMinute = 20 * 60;
/** ...until this one (08:00). */
export const nightEndMinute = 8 * 60;
/** The first advert of a worker comes within this much of its start (or one advert interval, if shorter). */
export const maxAdvertJitterMs = 5_000;
/** How long the simulated projects' keysets are valid from the start of the run. */
export const simKeysetLifetimeMs = 300 * dayMs;

export interface SeriesPoint {
  readonly tMs: number;
  readonly openJobs: number;
  readonly liveWorkers: number;
  readonly messages: number;
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
  readonly claimLatencyMs: Percentiles;
  readonly timeToVerdictMs: Percentiles;
  readonly bidsPerJob: number;
  readonly messagesPerJob: number;
  readonly messages: Record<string, number>;
  readonly messagesByDomain: Record<string, number>;
  /** Admission verdicts of every node, by reason (jobs/admission.ts). */
  readonly admissions: Record<string, number>;
  readonly gossip: { readonly publishes: number; readonly deliveryFraction: number; readonly latencyMs: Percentiles };
  readonly load: {
    readonly workersEverOnline: number;
    readonly runsPerWorker: { mean: number; p50: number | null; p90: number | null; max: number };
    readonly idleWorkers: number;
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
  readonly invariants: { readonly checked: readonly string[]; readonly violations: readonly Violation[] };
  readonly series: readonly SeriesPoint[];
}

export interface RunOptions {
  /** Called every few thousand events with the simulated time reached: for a progress bar. */
  readonly onProgress?: (simulatedMs: number, endMs: number, events: number) => void;
  /** Test-only: break the run on purpose to show that the invariants catch it. */
  readonly sabotage?: Sabotage;
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

/** A valid project id: 'b' then 52 lowercase base32 characters, derived from the index. */
export function simProjectId(index: number): string {
  return `bsim${letters(index)}`.padEnd(53, "a");
}

export function simJobId(project: number, index: number): string {
  return `p${project}-j${index}`;
}

const baseDimensions = {
  os: "linux",
  arch: "x64",
  cores: 8,
  memoryBytes: 16 * 2 ** 30,
  diskBytes: 2 ** 40,
  tools: [],
  labels: [],
};

export class Simulation implements ActorWorld<Wire> {
  readonly scenario: Scenario;
  readonly seed: number;
  readonly rng: Rng;
  readonly world: SimWorld;
  private events = 0;
  private readonly masters: number[] = [];
  private readonly topicOfProject = new Map<string, number>();
  /** Each project's trust as every node pinned it: its anchor and its keyset naming the master's key, accepted once. */
  private readonly projectTrust: ProjectTrust[] = [];
  private arrivalsDone = false;
  private readonly observer: Observer;
  private readonly nodeCounts: Record<string, number> = {
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
  };
  private readonly series: SeriesPoint[] = [];
  private readonly pendingSubmits = new Map<number, (() => void)[]>();

  constructor(scenario: Scenario, seed: number, sabotage?: Sabotage) {
    this.scenario = scenario;
    this.seed = seed;
    this.rng = seededRng(seed);
    this.observer = new Observer(scenario.projects, sabotage);
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
      driverSetup: (node) => this.driverSetup(node),
      runOf: (node, run) => this.runOf(node, run),
      topicOf: (project) => this.topicOfProject.get(project),
      projectOf: (topic) => simProjectId(topic),
      onOnline: (node) => {
        if (node.nightOnly) this.feedFacts(node);
      },
    });
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

  // ---- nodes ----

  private pickProjects(): number[] {
    const count = this.scenario.workers.projectsPerWorker;
    const chosen: number[] = [];
    while (chosen.length < count) {
      const p = pick(this.rng, this.scenario.projects);
      if (!chosen.includes(p)) chosen.push(p);
    }
    return chosen.sort((a, b) => a - b);
  }

  private newWorkerState(node: SimNode): WorkerState {
    const shares: Record<string, number> = {};
    for (const p of node.topics) shares[simProjectId(p)] = 1;
    const w = this.scenario.workers;
    return createWorker(
      node.key,
      {
        slots: w.slots,
        maxSeenRounds: w.seenRounds,
        renewIntervalMs: w.renewInterval,
        advertIntervalMs: this.scenario.advertInterval,
        advertJitterMs: Math.min(this.scenario.advertInterval, maxAdvertJitterMs),
        shares,
        dimensions: baseDimensions,
        specs: [],
        rules: {
          windows: node.nightOnly ? [{ days: [], startMinute: nightStartMinute, endMinute: nightEndMinute }] : [],
          maxLoadAverage: null,
        },
      },
      node.availability,
    );
  }

  private createWorkerNode(behaviour: Behaviour, group: number): SimNode {
    const w = this.scenario.workers;
    const r = this.rng();
    const availability: Availability = r < w.reluctant ? "reluctant" : r < w.reluctant + w.paused ? "paused" : "eager";
    return this.world.addNode("worker", {
      topics: this.pickProjects(),
      behaviour,
      group,
      speed: w.slowest + this.rng() * (w.fastest - w.slowest),
      nightOnly: this.rng() < w.nightOnly,
      availability,
    });
  }

  /** The projects' keysets: one root per project (seeded), its master's key the one announcer. */
  private makeTrust(): void {
    for (let p = 0; p < this.scenario.projects; p++) {
      const seed = new Uint8Array(32);
      const view = new DataView(seed.buffer);
      view.setUint32(0, this.seed);
      view.setUint32(4, p);
      view.setUint32(8, 0x2007);
      const root = identityFromSeed(seed);
      const project = simProjectId(p);
      const master = this.world.nodes[this.masters[p] as number] as SimNode;
      const keyset = sealKeyset(
        {
          project,
          rootVersion: 1,
          version: 1,
          issuedAtMs: simEpochMs,
          expiresAtMs: simEpochMs + simKeysetLifetimeMs,
          roots: [root.publicKey],
          threshold: 1,
          announcers: [{ key: master.signer, label: `master ${p}`, expiresAtMs: simEpochMs + simKeysetLifetimeMs }],
        },
        [root],
      );
      const anchor = trustFromAnchor({ project, roots: [root.publicKey], threshold: 1 });
      this.projectTrust.push(acceptKeyset(anchor, keyset, simEpochMs));
      this.topicOfProject.set(project, p);
    }
  }

  private driverSetup(node: SimNode) {
    const trust = new Map<string, ProjectTrust>();
    for (const topic of node.topics) trust.set(simProjectId(topic), this.projectTrust[topic] as ProjectTrust);
    const s = this.scenario;
    return {
      trust,
      masters:
        node.role === "master"
          ? [
              {
                project: simProjectId(node.project),
                bidWindowMs: s.master.bidWindow,
                leaseMs: s.master.lease,
                targetBidsPerRun: s.master.targetBidsPerRun,
                reannounceIntervalMs: s.master.reannounceInterval,
                trustAloneAfterValid: s.master.trustAloneAfterValid,
                maxJobs: Math.max(100_000, s.jobs.count + 1),
              },
            ]
          : [],
      worker: node.role === "worker" ? this.newWorkerState(node) : null,
    };
  }

  /** The simulated sandbox: a run takes the job's duration on this node's speed; liars and sybils report their own digests. */
  private runOf(node: SimNode, run: ExecutionRequest): SimRun | null {
    const truth = this.observer.jobs.get(run.jobId);
    if (truth === undefined) return null;
    const durationMs = Math.max(1, Math.round(truth.durationMs / node.speed));
    if (node.behaviour !== "honest") this.count("wrongResultsSent");
    if (node.behaviour === "liar") return { durationMs, outcome: "succeeded", outputsDigest: liarDigest(node.index) };
    if (node.behaviour === "sybil") return { durationMs, outcome: "succeeded", outputsDigest: sybilDigest(node.group) };
    return {
      durationMs,
      outcome: truth.failing ? "failed" : "succeeded",
      outputsDigest: honestDigest(truth.index, run.shard),
    };
  }

  // ---- what actors need of the world ----

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

  count(counter: "spamBids" | "forgeriesSent" | "replaysSent" | "wrongResultsSent"): void {
    this.observer.security[counter] = (this.observer.security[counter] ?? 0) + 1;
  }

  masterOf(topic: number): number {
    return this.masters[topic] as number;
  }

  projectId(topic: number): string {
    return simProjectId(topic);
  }

  durationMs(): number {
    return this.scenario.jobs.medianDuration;
  }

  // ---- workload ----

  jobSpec(deadlineMs: number, durationMs: number): JobSpec {
    const j = this.scenario.jobs;
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
      replicas: j.replicas,
      quorum: j.quorum,
      shards: j.shards,
      priority: 0,
      maxAttempts: j.maxAttempts,
      deadlineMs,
    };
  }

  private scheduleArrivals(): void {
    const j = this.scenario.jobs;
    const times: number[] = [];
    for (let i = 0; i < j.count; i++) times.push(Math.floor(this.rng() * this.scenario.duration));
    times.sort((a, b) => a - b);
    const next = (i: number) => {
      if (i >= times.length) {
        this.arrivalsDone = true;
        return;
      }
      this.at(times[i] as number, () => {
        this.submit(i);
        next(i + 1);
      });
    };
    next(0);
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
      firstAwardAtMs: null,
      endedAtMs: null,
      status: "open",
      terminalMessages: 0,
      results: Array.from({ length: j.shards }, () => new Map()),
      trustedAlone: null,
    };
    this.observer.submit(truth, jobId);
    const master = this.world.nodes[this.masters[project] as number] as SimNode;
    // The project submits to its master node's store: a master that is down takes the job when it is back.
    const deliver = () =>
      master.driver?.toMaster(simProjectId(project), {
        kind: "submit",
        jobId,
        job: this.jobSpec(this.absMs() + j.deadline, durationMs),
      });
    if (master.online) deliver();
    else {
      const pending = this.pendingSubmits.get(master.index);
      if (pending === undefined) this.pendingSubmits.set(master.index, [deliver]);
      else pending.push(deliver);
    }
  }

  private feedFacts(node: SimNode): void {
    const epoch = node.epoch;
    const minuteMs = 60_000;
    const feed = () => {
      if (!node.online || node.epoch !== epoch || node.driver === null) return;
      const minute = Math.floor((this.world.nowMs % dayMs) / minuteMs);
      const day = (Math.floor(this.absMs() / dayMs) + 4) % 7;
      node.driver.toWorker({ kind: "facts", facts: { localMinuteOfDay: minute, localDayOfWeek: day, loadAverage: 0 } });
      // Next boundary of the night window.
      const dayStart = Math.floor(this.world.nowMs / dayMs) * dayMs;
      const candidates = [nightEndMinute, nightStartMinute, nightEndMinute + 24 * 60].map(
        (m) => dayStart + m * minuteMs,
      );
      const nextAt = candidates.find((t) => t > this.world.nowMs) as number;
      this.at(nextAt, feed);
    };
    this.at(this.world.nowMs, feed);
  }

  // ---- faults and actors ----

  private scheduleChurn(): void {
    const c = this.scenario.churn;
    const initial = this.scenario.workers.count;
    const duration = this.scenario.duration;
    const workerIndices = () => this.world.nodes.filter((n) => n.role === "worker").map((n) => n.index);
    // Joins: a Poisson process over the whole mesh.
    if (c.joinPerHour > 0 && initial > 0) {
      const mean = hourMs / (c.joinPerHour * initial);
      const join = () => {
        if (this.world.nowMs >= duration) return;
        const node = this.createWorkerNode(
          this.scenario.actors.liars > 0 && this.rng() < this.scenario.actors.liars ? "liar" : "honest",
          -1,
        );
        this.nodeCounts.joined = (this.nodeCounts.joined as number) + 1;
        this.world.bringOnline(node);
        this.at(this.world.nowMs + exponential(this.rng, mean), join);
      };
      this.at(exponential(this.rng, mean), join);
    }
    // Leaves and crashes: per-worker rates, drawn as one mesh-wide process that picks a live worker.
    const perWorker = (rate: number, act: (node: SimNode) => void) => {
      if (rate <= 0 || initial <= 0) return;
      const mean = hourMs / (rate * initial);
      const tick = () => {
        if (this.world.nowMs >= duration) return;
        const candidates = workerIndices();
        const node = this.world.nodes[candidates[pick(this.rng, candidates.length)] as number] as SimNode;
        if (node.online) act(node);
        this.at(this.world.nowMs + exponential(this.rng, mean), tick);
      };
      this.at(exponential(this.rng, mean), tick);
    };
    perWorker(c.leavePerHour, (node) => {
      this.nodeCounts.left = (this.nodeCounts.left as number) + 1;
      node.driver?.toWorker({ kind: "set-availability", availability: "offline" });
      this.world.takeOffline(node);
    });
    perWorker(c.crashPerHour, (node) => {
      const losesStore = this.rng() < c.crashLosesStore;
      this.nodeCounts.crashed = (this.nodeCounts.crashed as number) + 1;
      if (losesStore) this.nodeCounts.crashedLosingStore = (this.nodeCounts.crashedLosingStore as number) + 1;
      this.world.takeOffline(node);
      const back = Math.min(this.world.nowMs + c.restartAfter, duration);
      this.at(back, () => {
        if (node.online) return;
        // A lost store is a new volunteer under the same key: its sequence starts again from the clock's floor.
        if (losesStore) node.store = new SimStore();
        this.world.bringOnline(node);
      });
    });
  }

  private scheduleExodus(): void {
    this.scenario.exodus.forEach((exodus) => {
      const gone: SimNode[] = [];
      this.at(exodus.at, () => {
        for (const node of this.world.nodes) {
          if (node.role !== "worker" || !node.online || this.rng() >= exodus.fraction) continue;
          gone.push(node);
          node.driver?.toWorker({ kind: "set-availability", availability: "offline" });
          this.world.takeOffline(node, true);
        }
        this.nodeCounts.exodusDepartures = (this.nodeCounts.exodusDepartures as number) + gone.length;
      });
      this.at(exodus.back, () => {
        for (const node of gone) {
          if (node.online) continue;
          this.world.bringOnline(node);
          node.driver?.toWorker({ kind: "set-availability", availability: node.availability });
        }
      });
    });
  }

  private scheduleFaults(): void {
    const s = this.scenario;
    this.scheduleExodus();
    s.partitions.forEach((partition, index) => {
      this.at(partition.at, () => {
        this.world.activePartitions.push(index);
        this.world.gossip.cutUnreachable();
        this.world.scheduleRepair();
      });
      this.at(partition.heal, () => {
        const i = this.world.activePartitions.indexOf(index);
        if (i >= 0) this.world.activePartitions.splice(i, 1);
        this.world.gossip.reconnect();
        this.world.scheduleRepair();
      });
    });
    s.masterCrashes.forEach((crash) => {
      const node = this.world.nodes[this.masters[crash.project] as number] as SimNode;
      this.at(crash.at, () => {
        if (!node.online) return;
        this.nodeCounts.masterCrashes = (this.nodeCounts.masterCrashes as number) + 1;
        this.world.takeOffline(node);
      });
      this.at(crash.back, () => {
        if (node.online) return;
        // The master kept its store: a new process carries on from it (restoreMaster, then the restart input).
        this.world.bringOnline(node);
        const pending = this.pendingSubmits.get(node.index) ?? [];
        this.pendingSubmits.delete(node.index);
        for (const deliver of pending) deliver();
      });
    });
  }

  private startActors(): void {
    const a = this.scenario.actors;
    for (let i = 0; i < a.spammers; i++) {
      const node = this.world.addNode("spammer", { topics: this.pickProjects() });
      node.spammer = new Spammer(this, node.index);
      this.nodeCounts.spammers = (this.nodeCounts.spammers as number) + 1;
    }
    for (let i = 0; i < a.forgers; i++) {
      const node = this.world.addNode("forger", { topics: [pick(this.rng, this.scenario.projects)] });
      startForger(this, node.index, node.topics[0] as number, i, a.forgeriesPerHour, this.scenario.duration);
      this.nodeCounts.forgers = (this.nodeCounts.forgers as number) + 1;
    }
    for (let i = 0; i < a.replayers; i++) {
      const topic = pick(this.rng, this.scenario.projects);
      const node = this.world.addNode("replayer", { topics: [topic] });
      node.replayer = new Replayer(this, node.index, topic);
      node.replayer.start(a.replaysPerHour, this.scenario.duration);
      this.nodeCounts.replayers = (this.nodeCounts.replayers as number) + 1;
    }
  }

  private scheduleSamples(endMs: number): void {
    const every = this.scenario.sampleInterval;
    const sample = () => {
      let liveWorkers = 0;
      for (const node of this.world.nodes) if (node.online && node.role === "worker") liveWorkers++;
      this.series.push({
        tMs: this.world.nowMs,
        openJobs: this.observer.openJobs,
        liveWorkers,
        ...this.observer.takeInterval(),
      });
      if (this.world.nowMs + every <= endMs) this.at(this.world.nowMs + every, sample);
    };
    this.at(0, sample);
  }

  // ---- the run ----

  private setUp(): void {
    const s = this.scenario;
    for (let p = 0; p < s.projects; p++) {
      const node = this.world.addNode("master", { topics: [p], project: p });
      this.masters.push(node.index);
      this.nodeCounts.masters = (this.nodeCounts.masters as number) + 1;
    }
    this.makeTrust();
    const a = s.actors;
    for (let i = 0; i < s.workers.count; i++) {
      const liar = a.liars > 0 && this.rng() < a.liars;
      this.createWorkerNode(liar ? "liar" : "honest", -1);
      if (liar) this.nodeCounts.liars = (this.nodeCounts.liars as number) + 1;
    }
    this.nodeCounts.workersInitial = s.workers.count;
    for (let g = 0; g < a.sybilGroups; g++)
      for (let i = 0; i < a.sybilGroupSize; i++) {
        this.createWorkerNode("sybil", g);
        this.nodeCounts.sybils = (this.nodeCounts.sybils as number) + 1;
      }
    this.startActors();
    for (const node of this.world.nodes) this.world.bringOnline(node);
    this.scheduleArrivals();
    this.scheduleChurn();
    this.scheduleFaults();
  }

  run(options: RunOptions = {}): Metrics {
    const s = this.scenario;
    const endMs = s.duration + s.drain;
    this.setUp();
    this.scheduleSamples(endMs);
    let endedEarly = false;
    for (;;) {
      const next = this.world.queue.peekMs();
      if (next === null || next > endMs) break;
      if (next >= s.duration && this.arrivalsDone && this.observer.openJobs === 0 && this.pendingSubmitsCount() === 0) {
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
    return this.collect(endedEarly);
  }

  private pendingSubmitsCount(): number {
    let n = 0;
    for (const list of this.pendingSubmits.values()) n += list.length;
    return n;
  }

  private collect(endedEarly: boolean): Metrics {
    const s = this.scenario;
    const observer = this.observer;
    const lost = observer.checkEnded(this.world.nowMs, s.duration);
    const workers = this.world.nodes.filter((n) => n.role === "worker" && n.everOnline);
    const runs = workers.map((n) => n.runsStarted).sort((a, b) => a - b);
    const perProject = observer.perProject();
    const withJobs = perProject.filter((p) => p.submitted > 0);
    const totalMessages =
      (this.world.counters.gossipTransmissions as number) +
      (this.world.counters.gossipControl as number) +
      (this.world.counters.direct as number);
    const submitted = observer.submitted;
    return {
      scenario: s.name,
      seed: this.seed,
      signatures: s.signatures,
      settings: s,
      run: { simulatedMs: Math.round(this.world.nowMs), events: this.events, endedWhenAllJobsEnded: endedEarly },
      nodes: this.nodeCounts,
      jobs: {
        submitted,
        passed: observer.jobCounts.passed,
        failed: observer.jobCounts.failed,
        cancelled: observer.jobCounts.cancelled,
        lost,
        wrongResultsAccepted: observer.jobCounts.wrongResultsAccepted,
      },
      claimLatencyMs: observer.claim.summary(),
      timeToVerdictMs: observer.verdictLatency.summary(),
      bidsPerJob: round(observer.bids / Math.max(1, submitted)),
      messagesPerJob: round(totalMessages / Math.max(1, submitted)),
      messages: { ...this.world.counters, total: totalMessages },
      messagesByDomain: observer.byDomain,
      admissions: observer.admissions,
      gossip: {
        publishes: this.world.gossipPublishes,
        deliveryFraction: round(this.world.gossipDelivered / Math.max(1, this.world.gossipExpected)),
        latencyMs: this.world.gossipLatency.summary(),
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
      },
      fairness: {
        jainCompletion: jainIndex(withJobs.map((p) => (p.passed + p.failed) / p.submitted)),
        jainTimeToVerdict: jainIndex(
          withJobs.flatMap((p) => (p.p50TimeToVerdictMs === null ? [] : [1 / Math.max(1, p.p50TimeToVerdictMs)])),
        ),
        perProject,
      },
      security: observer.security,
      invariants: { checked: invariantNames, violations: observer.listedViolations() },
      series: this.series,
    };
  }
}

/** Runs one scenario with one seed. */
export function simulate(scenario: Scenario, seed: number = scenario.seed, options: RunOptions = {}): Metrics {
  return new Simulation(scenario, seed, options.sabotage).run(options);
}
