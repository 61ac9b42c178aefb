/**
 * A small in-test message loop for the scheduling core (not the simulator):
 * masters and workers exchange their effects over a virtual clock, with a
 * fixed delivery latency, in a deterministic order. Each node stamps its
 * messages from its own sequence, as the shell core does (jobs/driver.ts).
 * With `sign: true` every message is sealed with the sender's identity and
 * opened (verified) by the receiver, as a real node would.
 *
 * Every worker starts with a restart input, as a node does, then hears the
 * masters of each of its projects (every master in the loop of that project),
 * as jobs/driver.ts tells it the announcers of the project's keyset: its
 * offers go to them directly. A master added later is told to the workers of
 * its project as a new keyset would be. Whatever is published on a topic
 * (announcements, verdicts, cancels) reaches every worker.
 *
 * What admission tells a master of a worker's message beyond its body (whether
 * trust names the worker a runner, the network prefix its offers and bids come
 * from) is fixed per worker when it is added.
 */
import { uniformFloat64 } from "pure-rand/distribution/uniformFloat64";
import { xoroshiro128plus } from "pure-rand/generator/xoroshiro128plus";
import { type Identity, identityFromSeed, openEnvelope, sealEnvelope } from "../crypto/index.ts";
import {
  type Availability,
  createMaster,
  createWorker,
  type Effect,
  type ExecutionReport,
  type ExecutionRequest,
  hexOf,
  type LogChunkRecord,
  type MasterConfig,
  type MasterInput,
  type MasterState,
  messageDomains,
  type OutboundMessage,
  type Rng,
  restoreMaster,
  stepMaster,
  stepWorker,
  type WorkerConfig,
  type WorkerInput,
  type WorkerState,
} from "../jobs/index.ts";

export function seededRng(seed: number): Rng {
  const generator = xoroshiro128plus(seed);
  return () => uniformFloat64(generator);
}

/** What a worker's executor does with a run: how long it takes and what it reports. Null: the run never finishes (a vanished worker). */
export type Behaviour = (run: ExecutionRequest, worker: string) => Omit<ExecutionReport, "runId"> | null;

export const honest: Behaviour = () => ({
  outcome: "succeeded",
  exitCode: 0,
  outputsDigest: "bafkreihonestoutputsaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
  logDigest: null,
  summary: "ok",
  durationMs: 1000,
});

export const liar: Behaviour = (run, worker) => ({
  ...(honest(run, worker) as Omit<ExecutionReport, "runId">),
  outputsDigest: "bafkreiliaroutputsaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
});

interface Event {
  readonly atMs: number;
  readonly order: number;
  readonly run: () => void;
}

function before(a: Event, b: Event): boolean {
  return a.atMs < b.atMs || (a.atMs === b.atMs && a.order < b.order);
}

export interface LoopOptions {
  readonly seed?: number;
  readonly latencyMs?: number;
  readonly sign?: boolean;
  readonly startMs?: number;
}

/** A message as it travels: the body with the sequence number its sender stamped. */
type Stamped<M> = M extends { readonly domain: infer D; readonly body: infer B }
  ? { readonly domain: D; readonly body: B & { readonly seq: number } }
  : never;
export type DeliveredMessage = Stamped<OutboundMessage>;

interface Node {
  readonly identity: Identity;
  /** The next sequence number this node stamps: one sequence for everything its key signs. */
  nextSeq: number;
}

interface MasterNode extends Node {
  state: MasterState;
  /** A master that is down receives nothing and wakes for nothing, until restartMaster. */
  down: boolean;
}

/** What admission says of a worker's messages to a master (jobs/routing.ts's SenderFacts). */
export interface SenderFacts {
  /** Trust names the worker a runner of the project. Default false. */
  readonly runner?: boolean;
  /** The network prefix its bids come from. Default: unknown (""). */
  readonly prefix?: string;
}

interface WorkerNode extends Node {
  state: WorkerState;
  readonly sender: SenderFacts;
  behaviour: Behaviour;
  /** A vanished worker receives nothing and says nothing. */
  vanished: boolean;
  readonly finishing: Map<string, number>;
}

export class Loop {
  nowMs: number;
  readonly rng: Rng;
  readonly latencyMs: number;
  readonly sign: boolean;
  readonly masters = new Map<string, MasterNode>();
  readonly workers = new Map<string, WorkerNode>();
  /** Every effect but wake-ups (which no test reads, and which would fill memory in a large mesh). */
  readonly log: { atMs: number; node: string; effect: Effect }[] = [];
  /** Messages sent, by domain. */
  readonly delivered: Record<string, number> = {};
  /** Log chunks each master stored, by job id. */
  readonly storedLogs = new Map<string, LogChunkRecord[]>();
  /** Spec checks the workers asked for. */
  readonly specChecks: { atMs: number; worker: string; project: string; uuids: readonly string[] }[] = [];
  private readonly queue: Event[] = [];
  private order = 0;
  private seedCounter = 1;

  constructor(options: LoopOptions = {}) {
    this.nowMs = options.startMs ?? 1_800_000_000_000;
    this.rng = seededRng(options.seed ?? 1);
    this.latencyMs = options.latencyMs ?? 10;
    this.sign = options.sign ?? false;
  }

  private newIdentity(): Identity {
    const seed = new Uint8Array(32);
    new DataView(seed.buffer).setUint32(0, this.seedCounter++);
    return identityFromSeed(seed);
  }

  addMaster(config: Partial<MasterConfig> & { project: string }): string {
    const identity = this.newIdentity();
    const key = hexOf(identity.publicKey);
    this.masters.set(key, { identity, nextSeq: 0, state: createMaster(config), down: false });
    for (const [worker, node] of this.workers)
      if (config.project in node.state.config.shares) this.tellMasters(worker, config.project);
    return key;
  }

  /** The masters of a project: every master in the loop of it, as a keyset's announcers (hex, sorted). */
  mastersOf(project: string): string[] {
    return [...this.masters]
      .filter(([, node]) => node.state.config.project === project)
      .map(([key]) => key)
      .sort();
  }

  /** Tells a worker who the project's masters are now, as the driver does from trust. */
  private tellMasters(worker: string, project: string): void {
    this.toWorker(worker, { kind: "masters", project, masters: this.mastersOf(project) });
  }

  /** The restart input, then the masters of each of the worker's projects: what a node's start() hands its worker. */
  private startWorker(key: string): void {
    this.toWorker(key, { kind: "restart" });
    for (const project of Object.keys(this.worker(key).state.config.shares)) this.tellMasters(key, project);
  }

  addWorker(
    config: Partial<WorkerConfig> & Pick<WorkerConfig, "shares" | "dimensions" | "specs">,
    behaviour: Behaviour = honest,
    availability: Availability = "eager",
    sender: SenderFacts = {},
  ): string {
    const identity = this.newIdentity();
    const key = hexOf(identity.publicKey);
    this.workers.set(key, {
      identity,
      nextSeq: 0,
      state: createWorker(key, config, availability),
      sender,
      behaviour,
      vanished: false,
      finishing: new Map(),
    });
    this.startWorker(key);
    return key;
  }

  at(atMs: number, run: () => void): void {
    const event = { atMs, order: this.order++, run };
    const queue = this.queue;
    let i = queue.length;
    queue.push(event);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(event, queue[parent] as Event)) break;
      queue[i] = queue[parent] as Event;
      i = parent;
    }
    queue[i] = event;
  }

  private popEvent(): Event | undefined {
    const queue = this.queue;
    const top = queue[0];
    const last = queue.pop();
    if (top === undefined || last === undefined || queue.length === 0) return top;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      const right = left + 1;
      let smallest = -1;
      let best = last;
      if (left < queue.length && before(queue[left] as Event, best)) {
        smallest = left;
        best = queue[left] as Event;
      }
      if (right < queue.length && before(queue[right] as Event, best)) smallest = right;
      if (smallest < 0) break;
      queue[i] = queue[smallest] as Event;
      i = smallest;
    }
    queue[i] = last;
    return top;
  }

  master(key: string): MasterNode {
    const node = this.masters.get(key);
    if (node === undefined) throw new Error(`no master ${key}`);
    return node;
  }

  worker(key: string): WorkerNode {
    const node = this.workers.get(key);
    if (node === undefined) throw new Error(`no worker ${key}`);
    return node;
  }

  toMaster(key: string, input: MasterInput): void {
    const node = this.master(key);
    if (node.down) return;
    const { state, effects } = stepMaster(node.state, input, this.nowMs, this.rng);
    node.state = state;
    this.carryOut(key, node, effects);
  }

  toWorker(key: string, input: WorkerInput): void {
    const node = this.worker(key);
    if (node.vanished) return;
    const { state, effects } = stepWorker(node.state, input, this.nowMs, this.rng);
    node.state = state;
    this.carryOut(key, node, effects);
  }

  /**
   * Runs the loop until every worker's first offers (sent after its start) have reached the masters, so that they
   * hold the workers' offers (and know the eligible pool) before a job is submitted.
   */
  offerAll(): void {
    // A worker's first offer goes out within offerJitterMs of its start, to each next project offerStaggerMs later.
    let withinMs = 0;
    for (const node of this.workers.values()) {
      const { offerJitterMs, offerStaggerMs, shares } = node.state.config;
      const projects = Object.keys(shares).length;
      withinMs = Math.max(withinMs, offerJitterMs + Math.max(0, projects - 1) * offerStaggerMs);
    }
    this.run(this.nowMs + withinMs + this.latencyMs);
  }

  /** The worker's process ends and starts again from its state: its runs are gone, and it is told it restarted. */
  restartWorker(key: string): void {
    const node = this.worker(key);
    node.finishing.clear();
    this.startWorker(key);
  }

  /** The master goes down: what is sent to it is lost and its wake-ups do nothing, until restartMaster. */
  stopMaster(key: string): void {
    this.master(key).down = true;
  }

  /**
   * The master starts again from what a store would have kept of it (its job records and reputations, through JSON),
   * and is told it restarted.
   */
  restartMaster(key: string): void {
    const node = this.master(key);
    const { config, jobs, reputation } = JSON.parse(JSON.stringify(node.state)) as MasterState;
    node.state = restoreMaster(config, Object.values(jobs), reputation);
    node.down = false;
    this.toMaster(key, { kind: "restart" });
  }

  /** Stamps the sender's next sequence number; seals and opens the message when signing is on, so the receiver gets what verification gives back. */
  private transport(message: OutboundMessage, sender: Node): DeliveredMessage {
    this.delivered[message.domain] = (this.delivered[message.domain] ?? 0) + 1;
    const stamped = { domain: message.domain, body: { ...message.body, seq: sender.nextSeq++ } } as DeliveredMessage;
    if (!this.sign) return stamped;
    const domain = messageDomains[message.domain];
    const bytes = sealEnvelope(domain as never, stamped.body as never, sender.identity);
    return { domain: message.domain, body: openEnvelope(domain as never, bytes, this.nowMs).body } as DeliveredMessage;
  }

  private deliver(from: string, to: string, message: DeliveredMessage): void {
    if (this.masters.has(to)) {
      const sender = this.workers.get(from)?.sender ?? {};
      switch (message.domain) {
        case "offer": {
          const { runner = false, prefix = "" } = sender;
          this.toMaster(to, { kind: "offer", signer: from, offer: message.body, runner, prefix });
          return;
        }
        case "bid": {
          const { runner = false, prefix = "" } = sender;
          this.toMaster(to, { kind: "bid", signer: from, bid: message.body, runner, prefix });
          return;
        }
        case "leaseRenew":
          this.toMaster(to, { kind: "lease-renew", signer: from, renew: message.body });
          return;
        case "result":
          this.toMaster(to, { kind: "result", signer: from, result: message.body });
          return;
        case "logChunk":
          this.toMaster(to, { kind: "log-chunk", signer: from, chunk: message.body });
          return;
        default:
          return;
      }
    }
    switch (message.domain) {
      case "jobAnnouncement":
        this.toWorker(to, { kind: "announcement", signer: from, announcement: message.body });
        return;
      case "award":
        this.toWorker(to, { kind: "award", signer: from, award: message.body });
        return;
      case "reject":
        this.toWorker(to, { kind: "reject", signer: from, reject: message.body });
        return;
      case "leaseRenew":
        this.toWorker(to, { kind: "lease-renew", signer: from, renew: message.body });
        return;
      case "cancel":
        this.toWorker(to, { kind: "cancel", signer: from, cancel: message.body });
        return;
      case "verdict":
        this.toWorker(to, { kind: "verdict", signer: from, verdict: message.body });
        return;
      case "resultAck":
        this.toWorker(to, { kind: "result-ack", signer: from, ack: message.body });
        return;
      default:
        return;
    }
  }

  private carryOut(from: string, sender: Node, effects: readonly Effect[]): void {
    for (const effect of effects) {
      if (effect.type !== "set-timer") this.log.push({ atMs: this.nowMs, node: from, effect });
      switch (effect.type) {
        case "publish": {
          const message = this.transport(effect.message, sender);
          for (const to of this.workers.keys())
            this.at(this.nowMs + this.latencyMs, () => this.deliver(from, to, message));
          break;
        }
        case "send": {
          const message = this.transport(effect.message, sender);
          this.at(this.nowMs + this.latencyMs, () => this.deliver(from, effect.to, message));
          break;
        }
        case "set-timer":
          this.at(effect.atMs, () =>
            this.masters.has(from) ? this.toMaster(from, { kind: "tick" }) : this.toWorker(from, { kind: "tick" }),
          );
          break;
        case "start-execution": {
          const node = this.worker(from);
          const report = node.behaviour(effect.run, from);
          if (report === null) break;
          const id = this.order;
          node.finishing.set(effect.run.runId, id);
          this.at(this.nowMs + report.durationMs, () => {
            if (node.finishing.get(effect.run.runId) !== id) return;
            node.finishing.delete(effect.run.runId);
            this.toWorker(from, { kind: "execution-finished", report: { ...report, runId: effect.run.runId } });
          });
          break;
        }
        case "kill-execution":
          this.worker(from).finishing.delete(effect.runId);
          break;
        case "store-log": {
          const chunks = this.storedLogs.get(effect.jobId) ?? [];
          chunks.push(effect.chunk);
          this.storedLogs.set(effect.jobId, chunks);
          break;
        }
        case "check-specs":
          this.specChecks.push({ atMs: this.nowMs, worker: from, project: effect.project, uuids: effect.uuids });
          break;
        case "log":
          break;
      }
    }
  }

  /** Runs events in time order until none is left or `untilMs` is reached; bounded by `maxEvents`. */
  run(untilMs = Number.POSITIVE_INFINITY, maxEvents = 10_000_000): number {
    let count = 0;
    while (this.queue.length > 0 && count < maxEvents) {
      const event = this.queue[0] as Event;
      if (event.atMs > untilMs) break;
      this.popEvent();
      this.nowMs = Math.max(this.nowMs, event.atMs);
      event.run();
      count++;
    }
    if (untilMs !== Number.POSITIVE_INFINITY) this.nowMs = Math.max(this.nowMs, untilMs);
    return count;
  }
}
