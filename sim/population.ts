/**
 * Who is in a simulated mesh: the projects (their ids and the trust every
 * node pins, its keyset naming the master as announcer and a few honest
 * workers as runners), one master per project, the volunteers (each worker's
 * projects, speed, availability, night window and network prefix), Sybil and
 * colluding groups and the hostile actors, and what a node's driver is made
 * of when its process starts.
 *
 * Network prefixes (what a master sees of a bidder's address, sim/README.md):
 * every master and actor has a prefix of its own; an honest worker (or a lone
 * liar) shares the prefix of an earlier one with the scenario's
 * `network.sharedPrefix` probability (one NAT, one campus), else has its own;
 * a Sybil group sits on one prefix; a colluding group's identities, throwaway
 * ones included, on `prefixesPerGroup` prefixes of their own.
 */
import { acceptKeyset, identityFromSeed, type ProjectTrust, sealKeyset, trustFromAnchor } from "../crypto/index.ts";
import { type Availability, createWorker, type WorkerState } from "../jobs/index.ts";
import { type ActorWorld, Replayer, Spammer, startForger, Throwaway } from "./actors.ts";
import { colluderDigest } from "./invariants.ts";
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
/** A worker's first offers come within this much of its start, at a random phase: a mesh started at once does not offer in one burst. */
export const offerJitterMs = 5_000;
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

/** The machine every simulated volunteer describes in its offers. */
export const simDimensions = {
  os: "linux",
  arch: "x64",
  cores: 8,
  memoryBytes: 16 * 2 ** 30,
  diskBytes: 2 ** 40,
  tools: [],
  labels: [],
};

/** The text of network prefix number `n`: an IPv4 /24. */
export function prefixText(n: number): string {
  return `${10 + Math.floor(n / 65_536)}.${(n >> 8) & 255}.${n & 255}.0/24`;
}

/**
 * A project's trust as every node pins it: a root seeded from the run's seed, its master's key the one announcer,
 * and `runnerSigners` its runners.
 */
export function simProjectTrust(
  seed: number,
  project: number,
  masterSigner: Uint8Array,
  runnerSigners: readonly Uint8Array[] = [],
): ProjectTrust {
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
      ...(runnerSigners.length === 0
        ? {}
        : {
            runners: runnerSigners.map((key, i) => ({
              key,
              label: `runner ${i}`,
              expiresAtMs: simEpochMs + simKeysetLifetimeMs,
            })),
          }),
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
      offerLifetimeMs: w.offerLifetime,
      offerStaggerMs: w.offerStagger,
      offerJitterMs: Math.min(w.offerLifetime, offerJitterMs),
      shares,
      dimensions: simDimensions,
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
  /** The runners of each project (node indices), by project index. */
  private readonly runners: number[][] = [];
  /** Prefixes handed out so far. */
  private prefixCount = 0;
  /** The prefix of every honest worker so far (repeats and all): a newcomer sharing one picks among these. */
  private readonly honestPrefixes: string[] = [];
  /** The prefixes of each Sybil ("s<group>") and colluding ("c<group>") group. */
  private readonly groupPrefixes = new Map<string, string[]>();
  /** Colluders made so far: the next one joins group colluders % groups. */
  private colluderCount = 0;

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

  /** The runners of a project (node indices). */
  runnersOf(project: number): readonly number[] {
    return this.runners[project] ?? [];
  }

  /**
   * One master per project, then the initial workers (liars and colluders drawn among them), the Sybil groups, each
   * project's runners, and last the projects' trust (its keyset names the runners).
   */
  addMastersAndWorkers(): void {
    const s = this.scenario;
    for (let p = 0; p < s.projects; p++) {
      const node = this.world.addNode("master", { topics: [p], project: p, prefix: this.freshPrefix() });
      this.masters.push(node.index);
      this.counts.masters++;
    }
    const a = s.actors;
    const c = a.colluders;
    // Exactly this many colluders (the first workers that are no liars: topics and prefixes are drawn per worker).
    const colluders = Math.round(c.fraction * s.workers.count);
    for (let i = 0; i < s.workers.count; i++) {
      const liar = a.liars > 0 && this.rng() < a.liars;
      const colluder = !liar && this.colluderCount < colluders;
      if (colluder) {
        this.createWorkerNode("colluder", this.colluderCount++ % c.groups);
        this.counts.colluders++;
      } else this.createWorkerNode(liar ? "liar" : "honest", -1);
      if (liar) this.counts.liars++;
    }
    this.counts.workersInitial = s.workers.count;
    for (let g = 0; g < a.sybilGroups; g++)
      for (let i = 0; i < a.sybilGroupSize; i++) {
        this.createWorkerNode("sybil", g);
        this.counts.sybils++;
      }
    for (let p = 0; p < s.projects; p++) {
      this.runners.push(this.chooseRunners(p));
      this.counts.runners += this.runnersOf(p).length;
      const master = this.world.nodes[this.masterOf(p)] as SimNode;
      const runnerSigners = this.runnersOf(p).map((index) => (this.world.nodes[index] as SimNode).signer);
      this.projectTrust.push(simProjectTrust(this.seed, p, master.signer, runnerSigners));
      this.topicOfProject.set(simProjectId(p), p);
    }
  }

  /**
   * The project's runners: its honest initial workers, eager day-and-night ones first (a project's own machines
   * are on), then in the order they were made; at most `workers.runnersPerProject`.
   */
  private chooseRunners(project: number): number[] {
    const candidates = this.world.nodes.filter(
      (node) => node.role === "worker" && node.behaviour === "honest" && node.topics.includes(project),
    );
    const ready = (node: SimNode) => (node.availability === "eager" && !node.nightOnly ? 0 : 1);
    candidates.sort((a, b) => ready(a) - ready(b) || a.index - b.index);
    return candidates.slice(0, this.scenario.workers.runnersPerProject).map((node) => node.index);
  }

  private freshPrefix(): string {
    return prefixText(this.prefixCount++);
  }

  /** An honest worker's prefix: an earlier one's with the `sharedPrefix` probability, else its own. */
  private honestPrefix(): string {
    const shared =
      this.honestPrefixes.length > 0 && this.rng() < this.scenario.network.sharedPrefix
        ? this.honestPrefixes[pick(this.rng, this.honestPrefixes.length)]
        : undefined;
    const prefix = shared ?? this.freshPrefix();
    this.honestPrefixes.push(prefix);
    return prefix;
  }

  /** One of a group's prefixes (`count` of them, made when the group's first identity needs one). */
  private groupPrefix(group: string, count: number): string {
    let prefixes = this.groupPrefixes.get(group);
    if (prefixes === undefined) {
      prefixes = Array.from({ length: count }, () => this.freshPrefix());
      this.groupPrefixes.set(group, prefixes);
    }
    return prefixes[pick(this.rng, prefixes.length)] as string;
  }

  private prefixFor(behaviour: Behaviour, group: number): string {
    if (behaviour === "sybil") return this.groupPrefix(`s${group}`, 1);
    if (behaviour === "colluder") return this.groupPrefix(`c${group}`, this.scenario.actors.colluders.prefixesPerGroup);
    return this.honestPrefix();
  }

  /** The spammers, forgers and replayers, each started on the world `actors` gives them; the throwaways' joins. */
  addActors(actors: ActorWorld<Wire>): void {
    const a = this.scenario.actors;
    for (let i = 0; i < a.spammers; i++) {
      const node = this.world.addNode("spammer", { topics: this.pickProjects(), prefix: this.freshPrefix() });
      node.spammer = new Spammer(actors, node.index);
      this.counts.spammers++;
    }
    for (let i = 0; i < a.forgers; i++) {
      const node = this.world.addNode("forger", {
        topics: [pick(this.rng, this.scenario.projects)],
        prefix: this.freshPrefix(),
      });
      startForger(actors, node.index, node.topics[0] as number, i, a.forgeriesPerHour, this.scenario.duration);
      this.counts.forgers++;
    }
    for (let i = 0; i < a.replayers; i++) {
      const topic = pick(this.rng, this.scenario.projects);
      const node = this.world.addNode("replayer", { topics: [topic], prefix: this.freshPrefix() });
      node.replayer = new Replayer(actors, node.index, topic);
      node.replayer.start(a.replaysPerHour, this.scenario.duration);
      this.world.carrier.tapMaster(this.masterOf(topic), node);
      this.counts.replayers++;
    }
    this.scheduleThrowaways(actors);
  }

  /**
   * Throwaway identities: each joins at a time drawn now, with a fresh key, on every project's topic, in colluding
   * group i % groups and on one of its prefixes.
   */
  private scheduleThrowaways(actors: ActorWorld<Wire>): void {
    const c = this.scenario.actors.colluders;
    for (let i = 0; i < c.throwaways; i++) {
      const atMs = c.throwawaysFrom + Math.floor(this.rng() * (c.throwawaysUntil - c.throwawaysFrom));
      this.world.at(atMs, () => {
        const group = i % c.groups;
        const topics = Array.from({ length: this.scenario.projects }, (_, p) => p);
        const node = this.world.addNode("throwaway", {
          topics,
          group,
          behaviour: "colluder",
          prefix: this.groupPrefix(`c${group}`, c.prefixesPerGroup),
        });
        node.throwaway = new Throwaway(actors, node.index, group, colluderDigest(group), c.lieAfter);
        this.counts.throwaways++;
        this.world.bringOnline(node);
        node.throwaway.start();
      });
    }
  }

  /** A new worker node (offline): its availability, projects, speed and night window drawn in this order. */
  createWorkerNode(behaviour: Behaviour, group: number): SimNode {
    const w = this.scenario.workers;
    const r = this.rng();
    const availability: Availability = r < w.reluctant ? "reluctant" : r < w.reluctant + w.paused ? "paused" : "eager";
    return this.world.addNode("worker", {
      topics: this.pickProjects(),
      prefix: this.prefixFor(behaviour, group),
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
                quorumWeight: s.master.quorum.weight,
                validRunsForFullWeight: s.master.quorum.validRunsForFullWeight,
                distinctPrefixes: s.master.quorum.distinctPrefixes,
                spotCheckFraction: s.master.quorum.spotCheckFraction,
                trustVolunteersAlone: s.master.quorum.trustVolunteersAlone,
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
