/**
 * The two worlds of the differential test (test/differential.test.ts) and the
 * one scenario played in both. Every cimesh node in either world runs the
 * shell core (jobs/driver.ts); only its ports differ:
 *
 * - SimDiffWorld: the simulator's ports (sim/world.ts): virtual clock, event
 *   queue, gossip model, in-memory SimStore, a timed stand-in for the sandbox;
 *   real signatures.
 * - RealDiffWorld: real libp2p hosts on @libp2p/memory (node/host), real
 *   gossipsub, node/runtime's createNodePorts, a level store per node in a
 *   temporary folder, and a scripted RunCarrier whose executor "runs" a job by
 *   waiting and reporting a fixed outputs digest.
 *
 * Both sit behind DiffWorld, so runScenario is written once. Each world records
 * every admission of every node (the driver's `admitted` port), which is what
 * the test compares. Identities are the simulator's (derived from its seed), so
 * a node has the same key in both worlds; each world seals its own keyset, at
 * its own clock's time.
 */
import { createHash } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { noise } from "@chainsafe/libp2p-noise";
import { yamux } from "@chainsafe/libp2p-yamux";
import { type GossipSub, gossipsub, StrictNoSign } from "@libp2p/gossipsub";
import { identify } from "@libp2p/identify";
import { memory } from "@libp2p/memory";
import { multiaddr } from "@multiformats/multiaddr";
import * as lp from "it-length-prefixed";
import { createLibp2p, type Libp2p } from "libp2p";
import {
  acceptKeyset,
  anchorFromGenesis,
  decodeCanonical,
  type Identity,
  identityFromSeed,
  type ProjectTrust,
  sealEnvelope,
  sealKeyset,
  trustFromAnchor,
} from "../crypto/index.ts";
import {
  type Admission,
  type Availability,
  type Channel,
  createWorker,
  type ExecutionReport,
  type ExecutionRequest,
  hexOf,
  type JobRecord,
  type JobSpec,
  type MasterConfig,
  type MasterState,
  type MessageDomainName,
  messageDomainName,
  messageDomains,
  NodeDriver,
  type StampedMessage,
  sequenceFloorAt,
  type WorkerState,
} from "../jobs/index.ts";
import { peerIdOf, toLibp2pPrivateKey } from "../node/files/index.ts";
import { createHost, directProtocol, gossipMessageId, type Host, publicKeyHexOf } from "../node/host/index.ts";
import { createNodePorts, type NodePorts, type RunCarrier } from "../node/runtime/ports.ts";
import type { Executor } from "../node/sandbox/index.ts";
import { type NodeStore, openNodeStore } from "../node/store/index.ts";
import { gossipsubDefaults, seededRng } from "../sim/index.ts";
import { Observer } from "../sim/observer.ts";
import { type SimNode, SimWorld, simEpochMs, type Wire } from "../sim/world.ts";

const dayMs = 86_400_000;

// ---------------------------------------------------------------------------
// What both worlds share: the project, the nodes, their configs, the jobs
// ---------------------------------------------------------------------------

/** The project's root key; its id follows from it (anchorFromGenesis). */
const projectRoot = identityFromSeed(new Uint8Array(32).fill(0xd1));
const projectAnchor = anchorFromGenesis([projectRoot.publicKey], 1);
export const project = projectAnchor.project;
/** The project id the attacker's announcement names instead of the topic's. */
export const otherProject = anchorFromGenesis([identityFromSeed(new Uint8Array(32).fill(0xd2)).publicKey], 1).project;

export const masterName = "M";
export const honestNames = ["W1", "W2", "W3"] as const;
export const liarName = "L";
export const attackerName = "A";
export const workerNames = [...honestNames, liarName] as const;

/** What an honest run reports as its outputs, and what the liar reports instead. */
export const honestOutputs = "bdiffhonestoutputsaaaa";
export const liarOutputs = "bdiffliaroutputsaaaaaa";

/** How long each job's run takes, in either world. */
export const runMs: Readonly<Record<string, number>> = { j1: 500, j2: 2_000, j3: 2_000 };

/** Timings short enough for a test, as the mesh tests' (test/mesh-harness.ts); the same in both worlds. */
export function masterConfig(): Partial<MasterConfig> & { project: string } {
  return { project, bidWindowMs: 300, leaseMs: 4_000, reannounceIntervalMs: 1_500 };
}

const dimensions = {
  os: "linux",
  arch: "x64",
  cores: 4,
  memoryBytes: 8 * 2 ** 30,
  diskBytes: 2 ** 36,
  tools: [],
  labels: [],
};

export function workerState(self: string): WorkerState {
  return createWorker(self, {
    shares: { [project]: 1 },
    dimensions,
    specs: [],
    slots: 1,
    renewIntervalMs: 1_000,
    offerJitterMs: 500,
  });
}

/**
 * The project's keyset at `nowMs`, naming the master's key as its one announcer and the honest workers' keys as its
 * runners: their results anchor a quorum (jobs/master.ts), so the liar, a volunteer with no record, never decides one,
 * and a one-replica job passes on a runner's result, with the master's default quorum rules.
 */
export function keysetFor(masterKey: Uint8Array, runnerKeys: readonly Uint8Array[], nowMs: number): Uint8Array {
  return sealKeyset(
    {
      project,
      rootVersion: 1,
      version: 1,
      issuedAtMs: nowMs - 60_000,
      expiresAtMs: nowMs + dayMs,
      roots: [projectRoot.publicKey],
      threshold: 1,
      announcers: [{ key: masterKey, label: "master", expiresAtMs: nowMs + dayMs }],
      runners: runnerKeys.map((key, i) => ({ key, label: `runner ${i}`, expiresAtMs: nowMs + dayMs })),
    },
    [projectRoot],
  );
}

export function jobSpec(nowMs: number, fields: Pick<JobSpec, "replicas" | "quorum">): JobSpec {
  return {
    name: "differential",
    steps: [{ name: "check", run: "npm test" }],
    env: {},
    timeoutMs: 10 * 60_000,
    resources: { cpus: 1, memoryBytes: 2 ** 30, diskBytes: 0, processes: 64 },
    network: false,
    outputs: [],
    inputsDigest: null,
    requiredSpecs: [],
    os: "linux",
    shards: 1,
    priority: 0,
    maxAttempts: 4,
    deadlineMs: nowMs + 60 * 60_000,
    ...fields,
  };
}

function digestOf(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** A message's kind and job, read from its envelope without checking it: for the logs only. */
function describe(bytes: Uint8Array): string {
  try {
    const [tag, body] = decodeCanonical(bytes, "envelope") as [unknown, { jobId?: unknown } | undefined];
    const name = typeof tag === "string" ? (messageDomainName(tag) ?? tag) : "?";
    return typeof body?.jobId === "string" ? `${name} ${body.jobId}` : name;
  } catch {
    return "unreadable";
  }
}

// ---------------------------------------------------------------------------
// The interface the scenario plays on
// ---------------------------------------------------------------------------

/** One admission of one node, as either world records it. */
export interface AdmissionRecord {
  /** Milliseconds since the world started, on its clock. */
  readonly atMs: number;
  readonly node: string;
  readonly channel: "topic" | "direct" | "record";
  /** The topic ("P" for the project's), or the name of the direct sender. */
  readonly from: string;
  readonly verdict: Admission["verdict"];
  readonly reason: Admission["reason"];
  readonly detail: string;
  /** sha-256 (hex) of the message's bytes. */
  readonly digest: string;
  /** The message's kind and job, for the logs. */
  readonly what: string;
}

/** One admission as a record, in either world: `nameOfKey` names direct senders. */
function admissionRecord(
  atMs: number,
  node: string,
  channel: Channel,
  admission: Admission,
  nameOfKey: ReadonlyMap<string, string>,
  what: { readonly digest: string; readonly what: string },
): AdmissionRecord {
  return {
    atMs,
    node,
    channel: channel.kind,
    from:
      channel.kind === "direct"
        ? (nameOfKey.get(channel.peer) ?? channel.peer.slice(0, 8))
        : channel.kind === "topic" && channel.topic === project
          ? "P"
          : channel.kind === "topic"
            ? channel.topic.slice(0, 12)
            : channel.project.slice(0, 12),
    verdict: admission.verdict,
    reason: admission.reason,
    detail: admission.detail,
    ...what,
  };
}

/**
 * What the master holds of each worker's offer, proven (runners, workers with a record) or not (the liar): its
 * availability and the slots it has left to award, as "eager/1", by the worker's name.
 */
function knownWorkers(state: MasterState | undefined, nameOf: (key: string) => string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const table of [state?.workers ?? {}, state?.unproven ?? {}])
    for (const [key, known] of Object.entries(table)) out[nameOf(key)] = `${known.availability}/${known.freeSlots}`;
  return out;
}

/** A message signed by a node of the world, with its bytes. */
export interface Sealed {
  readonly signer: string;
  readonly message: StampedMessage;
  readonly bytes: Uint8Array;
}

export interface RunStart {
  readonly atMs: number;
  readonly node: string;
  readonly jobId: string;
}

export interface DiffWorld {
  readonly kind: "sim" | "libp2p";
  /** Bound of one step's wait, on the world's clock. */
  readonly stepLimitMs: number;
  readonly admissions: readonly AdmissionRecord[];
  readonly runStarts: readonly RunStart[];
  /** Lines the nodes logged (machine logs, failed sends), newest last. */
  readonly logs: readonly string[];
  elapsedMs(): number;
  /** The name of the node whose key (hex) this is. */
  nameOf(key: string): string;
  /** The world's clock, absolute (message times). */
  nowMs(): number;
  /** Runs the world until `check` holds; throws after stepLimitMs. */
  waitFor(what: string, check: () => boolean): Promise<void>;
  sleep(ms: number): Promise<void>;
  submit(jobId: string, job: JobSpec): void;
  /** The master's jobs, or null while it is down. */
  masterJobs(): Readonly<Record<string, JobRecord>> | null;
  /** What the master holds of each worker's offer, by name: "availability/free slots". Empty while it is down. */
  masterKnownWorkers(): Record<string, string>;
  setAvailability(node: string, availability: Availability): void;
  /** The node's process dies; its store stays. */
  crash(node: string): Promise<void>;
  /** A new process of the node, from its store. */
  restart(node: string): Promise<void>;
  /** The first announcement of a job the master published, as it left the master. */
  announcement(jobId: string): Sealed | undefined;
  /** Puts the attacker on the network, next to `target`, ready to publish to it. */
  connectAttacker(target: string): Promise<void>;
  sealAsAttacker(message: StampedMessage): Sealed;
  injectOnTopic(sealed: Sealed): Promise<void>;
  /** Sends a message over the direct protocol to any node of the world, from the attacker. */
  injectDirect(to: string, sealed: Sealed): Promise<void>;
  stop(): Promise<void>;
}

// ---------------------------------------------------------------------------
// The scenario
// ---------------------------------------------------------------------------

export interface JobOutcome {
  readonly status: string;
  readonly decidedDigests: readonly (string | null)[];
  readonly attempts: number;
  /** Each attempt: worker, state. */
  readonly attemptStates: readonly string[];
}

export interface InjectedVerdict {
  readonly verdict: string;
  readonly reason: string;
  readonly detail: string;
}

export interface ScenarioOutcome {
  readonly world: DiffWorld["kind"];
  readonly jobs: Record<string, JobOutcome>;
  /** The worker crashed while it ran J2. */
  crashedWorker: string | null;
  /** Whether W had taken J1's first announcement (with the captured bytes) before the attack: its ledger holds it. */
  targetTookAnnouncement: boolean;
  /** How many admissions the world had recorded when the attack began. */
  attackMark: number;
  readonly injected: Record<Injected, InjectedVerdict | null>;
  readonly timeline: string[];
  failure: string | null;
  elapsedMs: number;
}

/** The worker the attacker talks to. */
export const targetName = "W1";

/** What the attacker injects, each judged by one node (see runScenario, step 5). */
export type Injected = "replay" | "wrongProject" | "direct" | "offerOnTopic" | "offerToMaster";

export async function runScenario(world: DiffWorld): Promise<ScenarioOutcome> {
  const outcome: ScenarioOutcome = {
    world: world.kind,
    jobs: {},
    crashedWorker: null,
    targetTookAnnouncement: false,
    attackMark: 0,
    injected: { replay: null, wrongProject: null, direct: null, offerOnTopic: null, offerToMaster: null },
    timeline: [],
    failure: null,
    elapsedMs: 0,
  };
  const note = (text: string) => outcome.timeline.push(`${Math.round(world.elapsedMs())} ms: ${text}`);
  const nameOf = (key: string) => world.nameOf(key);
  const jobOutcome = (jobId: string): JobOutcome => {
    const job = world.masterJobs()?.[jobId];
    if (job === undefined) return { status: "unknown", decidedDigests: [], attempts: 0, attemptStates: [] };
    return {
      status: job.status,
      decidedDigests: job.shards.map((shard) => shard.decidedDigest),
      attempts: job.attempts.length,
      attemptStates: job.attempts.map((attempt) => `${nameOf(attempt.worker)}:${attempt.state}`),
    };
  };
  const ended = async (jobId: string) => {
    await world.waitFor(`${jobId} to end`, () => {
      const status = world.masterJobs()?.[jobId]?.status;
      return status !== undefined && status !== "open";
    });
    outcome.jobs[jobId] = jobOutcome(jobId);
    note(`${jobId} ended: ${JSON.stringify(outcome.jobs[jobId])}`);
  };
  const running = async (jobId: string): Promise<string> => {
    await world.waitFor(`${jobId} to run on a worker`, () => world.runStarts.some((start) => start.jobId === jobId));
    const start = world.runStarts.find((s) => s.jobId === jobId) as RunStart;
    note(`${jobId} runs on ${start.node}`);
    return start.node;
  };
  /** A node's admission of an injected message (W's unless told): the first one after `mark` with its bytes, on the channel. */
  const admissionOf = async (
    mark: number,
    channel: "topic" | "direct",
    sealed: Sealed,
    node: string = targetName,
  ): Promise<InjectedVerdict> => {
    const digest = digestOf(sealed.bytes);
    const find = () =>
      world.admissions
        .slice(mark)
        .find((record) => record.node === node && record.channel === channel && record.digest === digest);
    await world.waitFor(`${node}'s admission of the injected message (${channel})`, () => find() !== undefined);
    const record = find() as AdmissionRecord;
    note(`${node} admitted it: ${record.verdict}/${record.reason} (${record.detail})`);
    return { verdict: record.verdict, reason: record.reason, detail: record.detail };
  };
  /** Waits until the master holds every worker's offer as `expected` says ("availability/free slots", by name). */
  const masterHolds = async (expected: Record<string, string>) => {
    const wanted = JSON.stringify(expected, Object.keys(expected).sort());
    const held = () => {
      const known = world.masterKnownWorkers();
      return JSON.stringify(known, Object.keys(known).sort());
    };
    await world.waitFor(`the master to hold the offers ${wanted}`, () => held() === wanted);
    note(`the master holds ${wanted}`);
  };

  try {
    // 1. Every worker reluctant, and heard of by the master: their offers say so, with no slot in them.
    for (const name of workerNames) world.setAvailability(name, "reluctant");
    await masterHolds(Object.fromEntries(workerNames.map((name) => [name, "reluctant/0"])));

    // 2. J1: three replicas, quorum two. No offer covers it, so it is announced; reluctant workers bid on the
    // re-announcement (the liar, if chosen, is outvoted), and its verdict is gossiped.
    world.submit("j1", jobSpec(world.nowMs(), { replicas: 3, quorum: 2 }));
    await ended("j1");
    // J2 and J3 run on one replica each, awarded at once from the honest workers' offers: with the liar paused, their
    // one result is an honest one in both worlds, so which offer is taken cannot make their accepted digests differ.
    for (const name of honestNames) world.setAvailability(name, "eager");
    world.setAvailability(liarName, "paused");
    await masterHolds({ ...Object.fromEntries(honestNames.map((name) => [name, "eager/1"])), [liarName]: "paused/0" });

    // 3. J2: the worker running it crashes and restarts from its store.
    world.submit("j2", jobSpec(world.nowMs(), { replicas: 1, quorum: 1 }));
    const x = await running("j2");
    outcome.crashedWorker = x;
    await world.crash(x);
    note(`${x} crashed`);
    await world.sleep(500);
    await world.restart(x);
    note(`${x} restarted from its store`);
    await ended("j2");

    // 4. J3: the master crashes while it runs and restarts a second later.
    world.submit("j3", jobSpec(world.nowMs(), { replicas: 1, quorum: 1 }));
    await running("j3");
    await world.crash(masterName);
    note("the master crashed");
    await world.sleep(1_000);
    await world.restart(masterName);
    note("the master restarted from its store");
    await ended("j3");

    // 5. The attack on W. W restarts first: gossipsub drops a message whose id (the sha-256 of its envelope) is in
    // its seen-cache (two minutes) before any validator runs, so a W that heard J1's announcement would never hand
    // the replay to its driver. A new process has an empty seen-cache, while its replay ledger comes back from its
    // store: the replay then reaches admission, which is what is under test. (The simulator's gossip model has no
    // seen-cache across publishes; W restarts there too, so both worlds play the same script.)
    const captured = world.announcement("j1");
    if (captured === undefined) throw new Error("the master's first announcement of j1 was not captured");
    const capturedDigest = digestOf(captured.bytes);
    outcome.targetTookAnnouncement = world.admissions.some(
      (record) =>
        record.node === targetName &&
        record.digest === capturedDigest &&
        record.verdict === "accept" &&
        record.reason === "taken",
    );
    await world.crash(targetName);
    await world.sleep(500);
    await world.restart(targetName);
    note(`${targetName} restarted from its store`);
    await world.connectAttacker(targetName);
    note("the attacker is connected");

    // (a) J1's announcement again, on the project's topic.
    let mark = world.admissions.length;
    outcome.attackMark = mark;
    await world.injectOnTopic(captured);
    outcome.injected.replay = await admissionOf(mark, "topic", captured);

    // (b) An announcement the attacker signs, naming another project, on this project's topic.
    const nowMs = world.nowMs();
    const forged = world.sealAsAttacker({
      domain: "jobAnnouncement",
      body: {
        ...captured.message.body,
        project: otherProject,
        jobId: "j-forged",
        issuedAtMs: nowMs,
        expiresAtMs: nowMs + 60_000,
        seq: sequenceFloorAt(nowMs),
      },
    });
    mark = world.admissions.length;
    await world.injectOnTopic(forged);
    outcome.injected.wrongProject = await admissionOf(mark, "topic", forged);

    // (c) J1's announcement sent straight to W by the attacker.
    mark = world.admissions.length;
    await world.injectDirect(targetName, captured);
    outcome.injected.direct = await admissionOf(mark, "direct", captured);

    // (d) A standing offer of the attacker's own, on the project's topic: offers go to masters directly, never there.
    const offerBody = {
      issuedAtMs: nowMs,
      expiresAtMs: nowMs + 10 * 60_000,
      seq: sequenceFloorAt(nowMs) + 1,
      project,
      freeSlots: 1,
      totalSlots: 1,
      availability: "eager",
      network: false,
      epoch: nowMs,
      awardsSeen: 0,
      dimensions,
      specs: [],
    };
    const offer = world.sealAsAttacker({ domain: "offer", body: offerBody });
    mark = world.admissions.length;
    await world.injectOnTopic(offer);
    outcome.injected.offerOnTopic = await admissionOf(mark, "topic", offer);

    // (e) The same kind of offer sent straight to the master: anyone may offer, and the master holds it (as unproven).
    const direct = world.sealAsAttacker({ domain: "offer", body: { ...offerBody, seq: offerBody.seq + 1 } });
    mark = world.admissions.length;
    await world.injectDirect(masterName, direct);
    outcome.injected.offerToMaster = await admissionOf(mark, "direct", direct, masterName);
    await world.waitFor("the master to hold the attacker's offer", () => attackerName in world.masterKnownWorkers());
    note(`the master holds the attacker's offer: ${world.masterKnownWorkers()[attackerName]}`);
  } catch (error) {
    outcome.failure = error instanceof Error ? error.message : String(error);
    note(`failed: ${outcome.failure}`);
  }
  outcome.elapsedMs = world.elapsedMs();
  return outcome;
}

/** Admissions per node as "verdict/reason: count", for the logs. */
export function admissionSummary(records: readonly AdmissionRecord[]): Record<string, Record<string, number>> {
  const out: Record<string, Record<string, number>> = {};
  for (const record of records) {
    const node = out[record.node] ?? {};
    out[record.node] = node;
    const key = `${record.channel} ${record.verdict}/${record.reason}`;
    node[key] = (node[key] ?? 0) + 1;
  }
  return out;
}

/** Keeps the last lines only. */
function pushBounded(lines: string[], line: string, max = 300): void {
  lines.push(line);
  if (lines.length > max) lines.splice(0, lines.length - max);
}

function fieldsText(fields: Readonly<Record<string, unknown>>): string {
  return JSON.stringify(fields, (_key, value: unknown) => (typeof value === "bigint" ? String(value) : value));
}

// ---------------------------------------------------------------------------
// The simulator's world
// ---------------------------------------------------------------------------

/** The observer sits between a master and the network: the tap on the master's publish port. */
class TappingObserver extends Observer {
  private readonly onPublish: (master: number, message: StampedMessage) => void;
  private readonly onLog: (event: string, fields: Readonly<Record<string, unknown>>) => void;
  constructor(
    onPublish: (master: number, message: StampedMessage) => void,
    onLog: (event: string, fields: Readonly<Record<string, unknown>>) => void,
  ) {
    super(1, undefined);
    this.onPublish = onPublish;
    this.onLog = onLog;
  }
  override published(master: number, message: StampedMessage): void {
    this.onPublish(master, message);
    super.published(master, message);
  }
  override logged(event: string, fields: Readonly<Record<string, unknown>>): void {
    this.onLog(event, fields);
    super.logged(event, fields);
  }
}

export class SimDiffWorld implements DiffWorld {
  readonly kind = "sim";
  readonly stepLimitMs = 60_000;
  readonly world: SimWorld;
  readonly admissions: AdmissionRecord[] = [];
  readonly runStarts: RunStart[] = [];
  readonly logs: string[] = [];
  private readonly nodes = new Map<string, SimNode>();
  private readonly nameOfIndex = new Map<number, string>();
  private readonly nameOfKey = new Map<string, string>();
  private readonly announcements = new Map<string, Sealed>();
  private readonly trust: ProjectTrust;

  constructor(seed: number) {
    const observer = new TappingObserver(
      (master, message) => this.tapped(master, message),
      (event, fields) => pushBounded(this.logs, `${Math.round(this.world.nowMs)} ms: ${event} ${fieldsText(fields)}`),
    );
    this.world = new SimWorld({
      seed,
      rng: seededRng(seed),
      signatures: "real",
      network: { medianLatency: 5, latencySigma: 0.3, bandwidthMbps: 100, loss: 0 },
      gossip: gossipsubDefaults,
      partitions: [],
      observer,
      driverSetup: (node) => ({
        trust: new Map([[project, this.trust]]),
        masters: node.role === "master" ? [masterConfig()] : [],
        worker: node.role === "worker" ? workerState(node.key) : null,
      }),
      runOf: (node, run) => this.runOf(node, run),
      topicOf: (id) => (id === project ? 0 : undefined),
      projectOf: () => project,
      onAdmitted: (node, channel, admission, wire) => this.record(node, channel, admission, wire),
    });
    // No network prefixes: the real world's memory transport tells admission none either.
    const prefix = "";
    this.add(masterName, this.world.addNode("master", { topics: [0], project: 0, prefix }));
    for (const name of honestNames) this.add(name, this.world.addNode("worker", { topics: [0], prefix }));
    this.add(liarName, this.world.addNode("worker", { topics: [0], behaviour: "liar", prefix }));
    // A node without a driver: the world carries what it sends, and gossip for it is not delivered to it.
    this.add(attackerName, this.world.addNode("forger", { topics: [0], prefix }));
    this.trust = acceptKeyset(
      trustFromAnchor(projectAnchor),
      keysetFor(
        this.node(masterName).signer,
        honestNames.map((name) => this.node(name).signer),
        simEpochMs,
      ),
      simEpochMs,
    );
    for (const name of [masterName, ...workerNames]) this.world.bringOnline(this.node(name));
  }

  /** The nodes' identities, for the other world to use the same keys. */
  identities(): Map<string, Identity> {
    const out = new Map<string, Identity>();
    for (const [name, node] of this.nodes) out.set(name, node.identity as Identity);
    return out;
  }

  private add(name: string, node: SimNode): void {
    this.nodes.set(name, node);
    this.nameOfIndex.set(node.index, name);
    this.nameOfKey.set(node.key, name);
  }

  private node(name: string): SimNode {
    const node = this.nodes.get(name);
    if (node === undefined) throw new Error(`no node ${name}`);
    return node;
  }

  private get master(): SimNode {
    return this.node(masterName);
  }

  private runOf(node: SimNode, run: ExecutionRequest) {
    const name = this.nameOfIndex.get(node.index) ?? String(node.index);
    this.runStarts.push({ atMs: this.world.nowMs, node: name, jobId: run.jobId });
    return {
      durationMs: runMs[run.jobId] ?? 1_000,
      outcome: "succeeded" as const,
      outputsDigest: node.behaviour === "liar" ? liarOutputs : honestOutputs,
    };
  }

  /** Sealing is deterministic (canonical CBOR, ed25519): sealed again, the message is the bytes that left. */
  private tapped(master: number, message: StampedMessage): void {
    if (message.domain !== "jobAnnouncement") return;
    const jobId = String(message.body.jobId);
    if (this.announcements.has(jobId)) return;
    const wire = this.world.wire(master, message);
    this.announcements.set(jobId, { signer: masterName, message, bytes: wire.bytes as Uint8Array });
  }

  private record(node: SimNode, channel: Channel, admission: Admission, wire: Wire): void {
    const name = this.nameOfIndex.get(node.index) ?? String(node.index);
    this.admissions.push(
      admissionRecord(this.world.nowMs, name, channel, admission, this.nameOfKey, {
        digest: wire.bytes === null ? "" : digestOf(wire.bytes),
        what: wire.bytes === null ? wire.domain : describe(wire.bytes),
      }),
    );
  }

  elapsedMs(): number {
    return this.world.nowMs;
  }

  nameOf(key: string): string {
    return this.nameOfKey.get(key) ?? key.slice(0, 8);
  }

  nowMs(): number {
    return this.world.absMs();
  }

  async waitFor(what: string, check: () => boolean): Promise<void> {
    const limit = this.world.nowMs + this.stepLimitMs;
    if (!this.world.runUntil(check, limit))
      throw new Error(`expected ${what} within ${this.stepLimitMs} virtual ms (at ${Math.round(this.world.nowMs)} ms)`);
  }

  async sleep(ms: number): Promise<void> {
    const until = this.world.nowMs + ms;
    this.world.runUntil(() => false, until);
    // Every event left is after `until`: the clock may move there.
    this.world.nowMs = Math.max(this.world.nowMs, until);
  }

  submit(jobId: string, job: JobSpec): void {
    this.master.driver?.toMaster(project, { kind: "submit", jobId, job });
  }

  masterJobs(): Readonly<Record<string, JobRecord>> | null {
    return this.master.driver?.masterState(project)?.jobs ?? null;
  }

  masterKnownWorkers(): Record<string, string> {
    return knownWorkers(this.master.driver?.masterState(project), (key) => this.nameOf(key));
  }

  setAvailability(node: string, availability: Availability): void {
    this.node(node).driver?.toWorker({ kind: "set-availability", availability });
  }

  async crash(node: string): Promise<void> {
    this.world.takeOffline(this.node(node));
  }

  async restart(node: string): Promise<void> {
    this.world.bringOnline(this.node(node));
  }

  announcement(jobId: string): Sealed | undefined {
    return this.announcements.get(jobId);
  }

  /**
   * Joins the attacker to the topic; a heartbeat and a half later the gossip model has it in the mesh. The model
   * carries its publishes to every subscriber, so every worker judges them here, not only the target.
   */
  async connectAttacker(_target: string): Promise<void> {
    this.world.bringOnline(this.node(attackerName));
    await this.sleep(1_500);
  }

  sealAsAttacker(message: StampedMessage): Sealed {
    const wire = this.world.wire(this.node(attackerName).index, message);
    return { signer: attackerName, message, bytes: wire.bytes as Uint8Array };
  }

  /**
   * The wire the attacker puts on the network: sealed bytes it holds, signed by whoever signed them. What it signs
   * claims to be what it is not, a forgery to the observer, except an offer: anyone may offer its own slots.
   */
  private attackerWire(sealed: Sealed): Wire {
    const attacker = this.node(attackerName);
    const own = sealed.signer === attackerName && sealed.message.domain !== "offer";
    return {
      from: attacker.index,
      signer: this.node(sealed.signer).index,
      domain: sealed.message.domain as MessageDomainName,
      body: sealed.message.body,
      bytes: sealed.bytes,
      size: sealed.bytes.length,
      tampered: false,
      forged: own,
    };
  }

  async injectOnTopic(sealed: Sealed): Promise<void> {
    this.world.publishWire(this.node(attackerName).index, 0, this.attackerWire(sealed));
  }

  async injectDirect(to: string, sealed: Sealed): Promise<void> {
    this.world.sendWire(this.node(attackerName).index, this.node(to).index, this.attackerWire(sealed));
  }

  async stop(): Promise<void> {}
}

// ---------------------------------------------------------------------------
// The libp2p world
// ---------------------------------------------------------------------------

/** A sandbox stand-in: a run waits its job's time and reports a fixed outputs digest. */
class ScriptedExecutor implements Executor {
  private readonly runs = new Map<
    string,
    { readonly timer: NodeJS.Timeout; readonly resolve: (report: ExecutionReport) => void; readonly startedAt: number }
  >();
  private readonly outputsDigest: string;
  private readonly onStart: (run: ExecutionRequest) => void;
  constructor(outputsDigest: string, onStart: (run: ExecutionRequest) => void) {
    this.outputsDigest = outputsDigest;
    this.onStart = onStart;
  }
  async probe() {
    return { ok: true, reason: "" };
  }
  run(request: ExecutionRequest): Promise<ExecutionReport> {
    this.onStart(request);
    const durationMs = runMs[request.jobId] ?? 1_000;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.runs.delete(request.runId);
        resolve({
          runId: request.runId,
          outcome: "succeeded",
          exitCode: 0,
          outputsDigest: this.outputsDigest,
          logDigest: null,
          summary: "succeeded",
          durationMs,
        });
      }, durationMs);
      this.runs.set(request.runId, { timer, resolve, startedAt: Date.now() });
    });
  }
  kill(runId: string, reason: string): boolean {
    const run = this.runs.get(runId);
    if (run === undefined) return false;
    clearTimeout(run.timer);
    this.runs.delete(runId);
    run.resolve({
      runId,
      outcome: "killed",
      exitCode: null,
      outputsDigest: null,
      logDigest: null,
      summary: reason,
      durationMs: Date.now() - run.startedAt,
    });
    return true;
  }
  /** The process died: its runs end with it, reporting nothing. */
  crash(): void {
    for (const run of this.runs.values()) clearTimeout(run.timer);
    this.runs.clear();
  }
}

interface RealLife {
  readonly host: Host;
  readonly store: NodeStore;
  readonly ports: NodePorts;
  readonly driver: NodeDriver<Uint8Array>;
  readonly executor: ScriptedExecutor;
}

interface RealNode {
  readonly name: string;
  readonly identity: Identity;
  readonly key: string;
  readonly listen: string;
  /** Its listen address with its peer id: what the others bootstrap from. */
  readonly address: string;
  readonly peerId: string;
  readonly storePath: string;
  life: RealLife | null;
}

/** How long a stopping node's queued steps get before its store closes under them. */
const stopGraceMs = 5_000;

function within<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export class RealDiffWorld implements DiffWorld {
  readonly kind = "libp2p";
  readonly stepLimitMs = 30_000;
  readonly admissions: AdmissionRecord[] = [];
  readonly runStarts: RunStart[] = [];
  readonly logs: string[] = [];
  private readonly startedAtMs = Date.now();
  private readonly root: string;
  private readonly nodes = new Map<string, RealNode>();
  private readonly nameOfKey = new Map<string, string>();
  private readonly announcements = new Map<string, Sealed>();
  private readonly attackerIdentity: Identity;
  private readonly keyset: Uint8Array;
  private readonly trust: ProjectTrust;
  private attacker: Libp2p<{ pubsub: GossipSub }> | null = null;

  private constructor(root: string, identities: ReadonlyMap<string, Identity>) {
    this.root = root;
    const tag = `cimesh-diff-${process.pid}-${Math.floor(Math.random() * 1e9).toString(36)}`;
    for (const name of [masterName, ...workerNames]) {
      const identity = identities.get(name);
      if (identity === undefined) throw new Error(`no identity for ${name}`);
      const peerId = peerIdOf(identity.publicKey).toString();
      const listen = `/memory/${tag}-${name}`;
      const key = hexOf(identity.publicKey);
      this.nodes.set(name, {
        name,
        identity,
        key,
        listen,
        address: `${listen}/p2p/${peerId}`,
        peerId,
        storePath: join(root, name),
        life: null,
      });
      this.nameOfKey.set(key, name);
    }
    const attacker = identities.get(attackerName);
    if (attacker === undefined) throw new Error(`no identity for ${attackerName}`);
    this.attackerIdentity = attacker;
    this.nameOfKey.set(hexOf(attacker.publicKey), attackerName);
    this.keyset = keysetFor(
      this.node(masterName).identity.publicKey,
      honestNames.map((name) => this.node(name).identity.publicKey),
      this.startedAtMs,
    );
    this.trust = acceptKeyset(trustFromAnchor(projectAnchor), this.keyset, this.startedAtMs);
  }

  /** Starts the master, then the workers; `stop` ends them, whatever happened. */
  static async create(identities: ReadonlyMap<string, Identity>): Promise<RealDiffWorld> {
    const world = new RealDiffWorld(await mkdtemp(join(tmpdir(), "cimesh-diff-")), identities);
    try {
      for (const name of [masterName, ...workerNames]) await world.start(world.node(name));
    } catch (error) {
      await world.stop();
      throw error;
    }
    return world;
  }

  private node(name: string): RealNode {
    const node = this.nodes.get(name);
    if (node === undefined) throw new Error(`no node ${name}`);
    return node;
  }

  private log(node: string, event: string, fields: Readonly<Record<string, unknown>> = {}): void {
    pushBounded(this.logs, `${this.elapsedMs()} ms: ${node} ${event} ${fieldsText(fields)}`);
  }

  private record(node: string, channel: Channel, admission: Admission, bytes: Uint8Array): void {
    this.admissions.push(
      admissionRecord(this.elapsedMs(), node, channel, admission, this.nameOfKey, {
        digest: digestOf(bytes),
        what: describe(bytes),
      }),
    );
  }

  /** A node's process, as node/runtime/node.ts starts one: store, host, ports, driver, inbound wiring, start. */
  private async start(node: RealNode): Promise<void> {
    const isMaster = node.name === masterName;
    const store = await openNodeStore(node.storePath);
    let host: Host;
    try {
      host = await createHost({
        identity: node.identity,
        listen: [node.listen],
        bootstrap: [...this.nodes.values()].filter((other) => other !== node).map((other) => other.address),
        ipColocationWeight: 0,
        connectionMonitor: false,
      });
    } catch (error) {
      await store.close();
      throw error;
    }
    const executor = new ScriptedExecutor(node.name === liarName ? liarOutputs : honestOutputs, (run) =>
      this.runStarts.push({ atMs: this.elapsedMs(), node: node.name, jobId: run.jobId }),
    );
    const runs: RunCarrier = {
      executor,
      prepare: async () => undefined,
      finished: async (_run, report) => report,
    };
    let made: NodeDriver<Uint8Array> | null = null;
    const base = createNodePorts({
      identity: node.identity,
      host,
      store,
      log: (event, fields) => this.log(node.name, event, fields),
      driver: () => made as NodeDriver<Uint8Array>,
      runs: isMaster ? null : runs,
    });
    const ports: NodePorts = {
      ...base,
      publish: (topic, wire, message) => {
        if (isMaster && message.domain === "jobAnnouncement") {
          const jobId = String(message.body.jobId);
          if (!this.announcements.has(jobId))
            this.announcements.set(jobId, { signer: masterName, message, bytes: wire.slice() });
        }
        base.publish(topic, wire, message);
      },
      admitted: (channel, admission, wire) => this.record(node.name, channel, admission, wire),
    };
    const driver = new NodeDriver<Uint8Array>({
      self: node.key,
      ports,
      trust: new Map([[project, this.trust]]),
      masters: isMaster ? [masterConfig()] : [],
      worker: isMaster ? null : workerState(node.key),
      stored: await store.load(),
    });
    made = driver;
    if (isMaster) driver.receiveKeysetRecord(project, this.keyset);
    host.onDirect((bytes, fromPeerId) => {
      driver.receive({ kind: "direct", peer: publicKeyHexOf(fromPeerId) }, bytes);
    });
    host.subscribe(project, (bytes) => driver.receive({ kind: "topic", topic: project }, bytes).verdict);
    driver.start();
    node.life = { host, store, ports, driver, executor };
  }

  /** The process ends: no timer of it fires again, its runs die with it, its host goes; its store is closed, kept. */
  private async end(node: RealNode): Promise<void> {
    const life = node.life;
    if (life === null) return;
    node.life = null;
    life.ports.close();
    life.executor.crash();
    const stopping = life.driver.stop();
    await within(life.host.stop(), stopGraceMs);
    await within(stopping, stopGraceMs);
    await life.store.close();
  }

  elapsedMs(): number {
    return Date.now() - this.startedAtMs;
  }

  nameOf(key: string): string {
    return this.nameOfKey.get(key) ?? key.slice(0, 8);
  }

  nowMs(): number {
    return Date.now();
  }

  async waitFor(what: string, check: () => boolean): Promise<void> {
    const deadline = Date.now() + this.stepLimitMs;
    while (!check()) {
      if (Date.now() >= deadline)
        throw new Error(`expected ${what} within ${this.stepLimitMs} ms (at ${this.elapsedMs()} ms)`);
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  }

  async sleep(ms: number): Promise<void> {
    await new Promise((resolve) => setTimeout(resolve, ms));
  }

  private get master(): NodeDriver<Uint8Array> | null {
    return this.node(masterName).life?.driver ?? null;
  }

  submit(jobId: string, job: JobSpec): void {
    this.master?.toMaster(project, { kind: "submit", jobId, job });
  }

  masterJobs(): Readonly<Record<string, JobRecord>> | null {
    return this.master?.masterState(project)?.jobs ?? null;
  }

  masterKnownWorkers(): Record<string, string> {
    return knownWorkers(this.master?.masterState(project), (key) => this.nameOf(key));
  }

  setAvailability(node: string, availability: Availability): void {
    this.node(node).life?.driver.toWorker({ kind: "set-availability", availability });
  }

  async crash(node: string): Promise<void> {
    await this.end(this.node(node));
  }

  async restart(node: string): Promise<void> {
    await this.start(this.node(node));
  }

  announcement(jobId: string): Sealed | undefined {
    return this.announcements.get(jobId);
  }

  /**
   * A plain libp2p node (gossipsub as node/host configures it, no DHT, no driver) dialled to the target only, so
   * what it publishes reaches the target first hand (which forwards nothing it ignores or rejects); ready once its
   * gossipsub knows the target subscribes to the project's topic, so a publish goes to it.
   */
  async connectAttacker(target: string): Promise<void> {
    const node = this.node(target);
    const attacker = await createLibp2p({
      privateKey: toLibp2pPrivateKey(this.attackerIdentity),
      addresses: { listen: [`${node.listen}-attacker`] },
      transports: [memory()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      connectionMonitor: { enabled: false },
      services: {
        identify: identify(),
        pubsub: gossipsub({
          globalSignaturePolicy: StrictNoSign,
          msgIdFn: gossipMessageId,
          allowPublishToZeroTopicPeers: true,
          emitSelf: false,
        }),
      },
    });
    this.attacker = attacker;
    await attacker.dial(multiaddr(node.address), { signal: AbortSignal.timeout(this.stepLimitMs) });
    await this.waitFor(`the attacker to see ${target} subscribed`, () =>
      attacker.services.pubsub.getSubscribers(project).some((peer) => peer.toString() === node.peerId),
    );
  }

  sealAsAttacker(message: StampedMessage): Sealed {
    const bytes = sealEnvelope(messageDomains[message.domain] as never, message.body as never, this.attackerIdentity);
    return { signer: attackerName, message, bytes };
  }

  private get attackerNode(): Libp2p<{ pubsub: GossipSub }> {
    if (this.attacker === null) throw new Error("the attacker is not connected");
    return this.attacker;
  }

  async injectOnTopic(sealed: Sealed): Promise<void> {
    const sent = await this.attackerNode.services.pubsub.publish(project, sealed.bytes);
    this.log(attackerName, "published", { recipients: sent.recipients.map((peer) => peer.toString().slice(-8)) });
  }

  /** One frame on the direct protocol, as node/host's sendDirect writes it; dialled by address (the attacker knows only W). */
  async injectDirect(to: string, sealed: Sealed): Promise<void> {
    const signal = AbortSignal.timeout(this.stepLimitMs);
    const stream = await this.attackerNode.dialProtocol(multiaddr(this.node(to).address), directProtocol, {
      signal,
    });
    if (!stream.send(lp.encode.single(sealed.bytes))) await stream.onDrain({ signal });
    await stream.close({ signal });
  }

  async stop(): Promise<void> {
    if (this.attacker !== null) await within(Promise.resolve(this.attacker.stop()), stopGraceMs);
    this.attacker = null;
    for (const node of this.nodes.values()) await this.end(node);
    await rm(this.root, { recursive: true, force: true });
  }
}
