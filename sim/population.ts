/**
 * Who is in a simulated mesh: the projects (their ids and the trust every
 * node pins), one master per project, the volunteers (each worker's projects,
 * speed, availability and night window), Sybil groups and the hostile actors,
 * and what a node's driver is made of when its process starts.
 */
import { acceptKeyset, identityFromSeed, type ProjectTrust, sealKeyset, trustFromAnchor } from "../crypto/index.ts";
import { type Availability, createWorker, type WorkerState } from "../jobs/index.ts";
import { type ActorWorld, Replayer, Spammer, startForger } from "./actors.ts";
import type { NodeCounts } from "./metrics.ts";
import { pick, type Rng } from "./rng.ts";
import type { Scenario } from "./scenario.ts";
import { type Behaviour, type SimNode, type SimWorld, simEpochMs, type Wire, type WorldSetup } from "./world.ts";

export const dayMs = 86_400_000;
export const hourMs = 3_600_000;
/** Night-only volunteers take work from this minute of the day (20:00)... */
export const nightStartMinute = 20 * 60;
/** ...until this one (08:00). */
export const nightEndMinute = 8 * 60;
/** The first advert of a worker comes within this much of its start (or one advert interval, if shorter). */
export const maxAdvertJitterMs = 5_000;
/** How long the simulated projects' keysets are valid from the start of the run. */
export const simKeysetLifetimeMs = 300 * dayMs;

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

const baseDimensions = {
  os: "linux",
  arch: "x64",
  cores: 8,
  memoryBytes: 16 * 2 ** 30,
  diskBytes: 2 ** 40,
  tools: [],
  labels: [],
};

/** A project's trust as every node pins it: a root seeded from the run's seed, its master's key the one announcer. */
export function simProjectTrust(seed: number, project: number, masterSigner: Uint8Array): ProjectTrust {
  const rootSeed = new Uint8Array(32);
  const view = new DataView(rootSeed.buffer);
  view.setUint32(0, seed);
  view.setUint32(4, project);
  view.setUint32(8, 0x2007);
  const root = identityFromSeed(rootSeed);
  const id = simProjectId(project);
  const keyset = sealKeyset(
    {
      project: id,
      rootVersion: 1,
      version: 1,
      issuedAtMs: simEpochMs,
      expiresAtMs: simEpochMs + simKeysetLifetimeMs,
      roots: [root.publicKey],
      threshold: 1,
      announcers: [{ key: masterSigner, label: `master ${project}`, expiresAtMs: simEpochMs + simKeysetLifetimeMs }],
    },
    [root],
  );
  const anchor = trustFromAnchor({ project: id, roots: [root.publicKey], threshold: 1 });
  return acceptKeyset(anchor, keyset, simEpochMs);
}

/** A worker's machine as its process starts: the scenario's worker settings, its projects, its night window. */
export function simWorkerState(scenario: Scenario, node: SimNode): WorkerState {
  const shares: Record<string, number> = {};
  for (const p of node.topics) shares[simProjectId(p)] = 1;
  const w = scenario.workers;
  return createWorker(
    node.key,
    {
      slots: w.slots,
      maxSeenRounds: w.seenRounds,
      renewIntervalMs: w.renewInterval,
      advertIntervalMs: scenario.advertInterval,
      advertJitterMs: Math.min(scenario.advertInterval, maxAdvertJitterMs),
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

/**
 * Tells a night-only worker the local time now and at each boundary of its night window, while this process
 * of it stays online.
 */
export function feedNightFacts(world: SimWorld, node: SimNode): void {
  const epoch = node.epoch;
  const minuteMs = 60_000;
  const feed = () => {
    if (!node.online || node.epoch !== epoch || node.driver === null) return;
    const minute = Math.floor((world.nowMs % dayMs) / minuteMs);
    const day = (Math.floor(world.absMs() / dayMs) + 4) % 7;
    node.driver.toWorker({ kind: "facts", facts: { localMinuteOfDay: minute, localDayOfWeek: day, loadAverage: 0 } });
    // Next boundary of the night window.
    const dayStart = Math.floor(world.nowMs / dayMs) * dayMs;
    const candidates = [nightEndMinute, nightStartMinute, nightEndMinute + 24 * 60].map((m) => dayStart + m * minuteMs);
    const nextAt = candidates.find((t) => t > world.nowMs) as number;
    world.at(nextAt, feed);
  };
  world.at(world.nowMs, feed);
}

/** Adds the mesh's nodes to the world (none online yet) and keeps what their drivers are made of. */
export class Population {
  private readonly scenario: Scenario;
  private readonly seed: number;
  private readonly rng: Rng;
  private readonly world: SimWorld;
  private readonly counts: NodeCounts;
  /** The master node of each project, by project index. */
  private readonly masters: number[] = [];
  private readonly topicOfProject = new Map<string, number>();
  /** Each project's trust as every node pinned it: its anchor and its keyset naming the master's key, accepted once. */
  private readonly projectTrust: ProjectTrust[] = [];

  constructor(scenario: Scenario, seed: number, rng: Rng, world: SimWorld, counts: NodeCounts) {
    this.scenario = scenario;
    this.seed = seed;
    this.rng = rng;
    this.world = world;
    this.counts = counts;
  }

  masterOf(project: number): number {
    return this.masters[project] as number;
  }

  /** The topic (project index) of a project id. */
  topicOf(project: string): number | undefined {
    return this.topicOfProject.get(project);
  }

  /** One master per project, then the projects' trust, then the initial workers and the Sybil groups. */
  addMastersAndWorkers(): void {
    const s = this.scenario;
    for (let p = 0; p < s.projects; p++) {
      const node = this.world.addNode("master", { topics: [p], project: p });
      this.masters.push(node.index);
      this.counts.masters++;
    }
    for (let p = 0; p < s.projects; p++) {
      const master = this.world.nodes[this.masterOf(p)] as SimNode;
      this.projectTrust.push(simProjectTrust(this.seed, p, master.signer));
      this.topicOfProject.set(simProjectId(p), p);
    }
    const a = s.actors;
    for (let i = 0; i < s.workers.count; i++) {
      const liar = a.liars > 0 && this.rng() < a.liars;
      this.createWorkerNode(liar ? "liar" : "honest", -1);
      if (liar) this.counts.liars++;
    }
    this.counts.workersInitial = s.workers.count;
    for (let g = 0; g < a.sybilGroups; g++)
      for (let i = 0; i < a.sybilGroupSize; i++) {
        this.createWorkerNode("sybil", g);
        this.counts.sybils++;
      }
  }

  /** The spammers, forgers and replayers, each started on the world `actors` gives them. */
  addActors(actors: ActorWorld<Wire>): void {
    const a = this.scenario.actors;
    for (let i = 0; i < a.spammers; i++) {
      const node = this.world.addNode("spammer", { topics: this.pickProjects() });
      node.spammer = new Spammer(actors, node.index);
      this.counts.spammers++;
    }
    for (let i = 0; i < a.forgers; i++) {
      const node = this.world.addNode("forger", { topics: [pick(this.rng, this.scenario.projects)] });
      startForger(actors, node.index, node.topics[0] as number, i, a.forgeriesPerHour, this.scenario.duration);
      this.counts.forgers++;
    }
    for (let i = 0; i < a.replayers; i++) {
      const topic = pick(this.rng, this.scenario.projects);
      const node = this.world.addNode("replayer", { topics: [topic] });
      node.replayer = new Replayer(actors, node.index, topic);
      node.replayer.start(a.replaysPerHour, this.scenario.duration);
      this.counts.replayers++;
    }
  }

  /** A new worker node (offline): its availability, projects, speed and night window drawn in this order. */
  createWorkerNode(behaviour: Behaviour, group: number): SimNode {
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

  /** What a node's driver is made of when its process (re)starts. */
  driverSetup(node: SimNode): ReturnType<WorldSetup["driverSetup"]> {
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
      worker: node.role === "worker" ? simWorkerState(s, node) : null,
    };
  }

  private pickProjects(): number[] {
    const count = this.scenario.workers.projectsPerWorker;
    const chosen: number[] = [];
    while (chosen.length < count) {
      const p = pick(this.rng, this.scenario.projects);
      if (!chosen.includes(p)) chosen.push(p);
    }
    return chosen.sort((a, b) => a - b);
  }
}
