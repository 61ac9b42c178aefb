/**
 * What the state machines ask their shell to do (DESIGN.md, Layers): effects
 * are data. node/ carries them out over libp2p and the store; sim/ carries
 * them out on its virtual network. Keys of peers are lowercase hex strings so
 * that every state and effect is plain, serialisable data.
 */
import type {
  Award,
  Bid,
  Cancel,
  JobAnnouncement,
  JobSpec,
  LeaseRenew,
  LogChunk,
  Offer,
  Reject,
  Report,
  ReportAck,
  Result,
  ResultAck,
  Verdict,
} from "./messages.ts";

/** Uniform in [0, 1), drawn from the shell's seeded generator: the machines never draw randomness of their own. */
export type Rng = () => number;

/**
 * A body as a machine builds it: everything but the sequence number, which the shell core (jobs/driver.ts) stamps
 * when it signs, from the one sequence of the node's key (a node's master and worker sign with the same key).
 */
export type Unsequenced<T> = Omit<T, "seq">;

/** A message for the shell core to stamp, sign with the node's identity (messageDomains[domain]) and deliver. */
export type OutboundMessage =
  | { readonly domain: "offer"; readonly body: Unsequenced<Offer> }
  | { readonly domain: "jobAnnouncement"; readonly body: Unsequenced<JobAnnouncement> }
  | { readonly domain: "bid"; readonly body: Unsequenced<Bid> }
  | { readonly domain: "award"; readonly body: Unsequenced<Award> }
  | { readonly domain: "reject"; readonly body: Unsequenced<Reject> }
  | { readonly domain: "leaseRenew"; readonly body: Unsequenced<LeaseRenew> }
  | { readonly domain: "logChunk"; readonly body: Unsequenced<LogChunk> }
  | { readonly domain: "result"; readonly body: Unsequenced<Result> }
  | { readonly domain: "resultAck"; readonly body: Unsequenced<ResultAck> }
  | { readonly domain: "verdict"; readonly body: Unsequenced<Verdict> }
  | { readonly domain: "cancel"; readonly body: Unsequenced<Cancel> }
  | { readonly domain: "report"; readonly body: Unsequenced<Report> }
  | { readonly domain: "reportAck"; readonly body: Unsequenced<ReportAck> };

/** A stretch of a run's output, as the master stores it (appended by offset: the same chunk twice is stored once). */
export interface LogChunkRecord {
  readonly attempt: number;
  readonly stream: "stdout" | "stderr";
  readonly offset: number;
  readonly data: Uint8Array;
}

/** One run of a job the worker is to start: the shell's executor runs `job.steps` with `env` added. */
export interface ExecutionRequest {
  readonly runId: string;
  readonly project: string;
  readonly jobId: string;
  readonly attempt: number;
  readonly shard: number;
  readonly job: JobSpec;
  readonly env: Readonly<Record<string, string>>;
}

export type Effect =
  | { readonly type: "publish"; readonly topic: string; readonly message: OutboundMessage }
  | { readonly type: "send"; readonly to: string; readonly message: OutboundMessage }
  | { readonly type: "set-timer"; readonly atMs: number }
  | { readonly type: "start-execution"; readonly run: ExecutionRequest }
  | { readonly type: "kill-execution"; readonly runId: string; readonly reason: string }
  /** Find these capability specs of the project and run their self-checks; the outcome comes back as a "specs" input. */
  | { readonly type: "check-specs"; readonly project: string; readonly uuids: readonly string[] }
  /** Keep a stretch of a run's log with the job (written with the step's state, before its other effects). */
  | { readonly type: "store-log"; readonly jobId: string; readonly chunk: LogChunkRecord }
  | {
      readonly type: "log";
      readonly event: string;
      readonly fields: Readonly<Record<string, string | number | boolean | null>>;
    };

export interface StepOutput<S> {
  readonly state: S;
  readonly effects: readonly Effect[];
}

export function hexOf(key: Uint8Array): string {
  return Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString("hex");
}

export function keyOf(hex: string): Uint8Array {
  return new Uint8Array(Buffer.from(hex, "hex"));
}

/** What one step of either machine accumulates: its effects, and the header (time, lifetime) of what it signs. */
export class StepContext<S> {
  readonly effects: Effect[] = [];
  readonly state: S;
  readonly nowMs: number;
  readonly rng: Rng;
  constructor(state: S, nowMs: number, rng: Rng) {
    this.state = state;
    this.nowMs = nowMs;
    this.rng = rng;
  }

  log(event: string, fields: Record<string, string | number | boolean | null>): void {
    this.effects.push({ type: "log", event, fields });
  }

  header(lifetimeMs: number): { issuedAtMs: number; expiresAtMs: number } {
    return { issuedAtMs: this.nowMs, expiresAtMs: this.nowMs + lifetimeMs };
  }

  send(to: string, message: OutboundMessage): void {
    this.effects.push({ type: "send", to, message });
  }

  publish(topic: string, message: OutboundMessage): void {
    this.effects.push({ type: "publish", topic, message });
  }
}
