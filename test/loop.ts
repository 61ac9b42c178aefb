/**
 * A small in-test message loop for the scheduling core (not the simulator):
 * masters and workers exchange their effects over a virtual clock, with a
 * fixed delivery latency, in a deterministic order. With `sign: true` every
 * message is sealed with the sender's identity and opened (verified) by the
 * receiver, as a real node would.
 */
import { uniformFloat64 } from "pure-rand/distribution/uniformFloat64";
import { xoroshiro128plus } from "pure-rand/generator/xoroshiro128plus";
import { type Identity, identityFromSeed, openEnvelope, sealEnvelope } from "../crypto/index.ts";
import {
  type Availability,
  advertOf,
  createMaster,
  createWorker,
  type Effect,
  type ExecutionReport,
  type ExecutionRequest,
  hexOf,
  type MasterConfig,
  type MasterInput,
  type MasterState,
  messageDomains,
  type OutboundMessage,
  type Rng,
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

interface MasterNode {
  readonly identity: Identity;
  state: MasterState;
}

interface WorkerNode {
  readonly identity: Identity;
  state: WorkerState;
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
  readonly log: { atMs: number; node: string; effect: Effect }[] = [];
  readonly delivered: Record<string, number> = {};
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
    this.masters.set(key, { identity, state: createMaster(config) });
    return key;
  }

  addWorker(
    config: Partial<WorkerConfig> & Pick<WorkerConfig, "shares" | "dimensions" | "specs">,
    behaviour: Behaviour = honest,
    availability: Availability = "eager",
  ): string {
    const identity = this.newIdentity();
    const key = hexOf(identity.publicKey);
    this.workers.set(key, {
      identity,
      state: createWorker(key, config, availability),
      behaviour,
      vanished: false,
      finishing: new Map(),
    });
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
    const { state, effects } = stepMaster(node.state, input, this.nowMs, this.rng);
    node.state = state;
    this.carryOut(key, node.identity, effects);
  }

  toWorker(key: string, input: WorkerInput): void {
    const node = this.worker(key);
    if (node.vanished) return;
    const { state, effects } = stepWorker(node.state, input, this.nowMs, this.rng);
    node.state = state;
    this.carryOut(key, node.identity, effects);
  }

  /** Every worker tells every master what it is (a WorkerAdvert), so masters can size the eligible pool. */
  advertiseAll(lifetimeMs = 24 * 60 * 60 * 1000): void {
    for (const [key, node] of this.workers) {
      if (node.vanished) continue;
      const advert = { ...advertOf(node.state), issuedAtMs: this.nowMs, expiresAtMs: this.nowMs + lifetimeMs, seq: 0 };
      for (const master of this.masters.keys()) this.toMaster(master, { kind: "advert", signer: key, advert });
    }
  }

  /** Seals and opens the message when signing is on, so the receiver gets what verification gives back. */
  private transport(message: OutboundMessage, sender: Identity): OutboundMessage {
    this.delivered[message.domain] = (this.delivered[message.domain] ?? 0) + 1;
    if (!this.sign) return message;
    const domain = messageDomains[message.domain];
    const bytes = sealEnvelope(domain as never, message.body as never, sender);
    return { domain: message.domain, body: openEnvelope(domain as never, bytes, this.nowMs).body } as OutboundMessage;
  }

  private deliver(from: string, to: string, message: OutboundMessage): void {
    if (this.masters.has(to)) {
      switch (message.domain) {
        case "bid":
          this.toMaster(to, { kind: "bid", signer: from, bid: message.body });
          return;
        case "leaseRenew":
          this.toMaster(to, { kind: "lease-renew", signer: from, renew: message.body });
          return;
        case "result":
          this.toMaster(to, { kind: "result", signer: from, result: message.body });
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
      default:
        return;
    }
  }

  private carryOut(from: string, identity: Identity, effects: readonly Effect[]): void {
    for (const effect of effects) {
      this.log.push({ atMs: this.nowMs, node: from, effect });
      switch (effect.type) {
        case "publish": {
          const message = this.transport(effect.message, identity);
          for (const to of this.workers.keys())
            this.at(this.nowMs + this.latencyMs, () => this.deliver(from, to, message));
          break;
        }
        case "send": {
          const message = this.transport(effect.message, identity);
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
