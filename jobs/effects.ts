/**
 * What the state machines ask their shell to do (DESIGN.md, Layers): effects
 * are data. node/ carries them out over libp2p and the store; sim/ carries
 * them out on its virtual network. Keys of peers are lowercase hex strings so
 * that every state and effect is plain, serialisable data.
 */
import type { Award, Bid, Cancel, JobAnnouncement, JobSpec, LeaseRenew, Reject, Result, Verdict } from "./messages.ts";

/** Uniform in [0, 1), drawn from the shell's seeded generator: the machines never draw randomness of their own. */
export type Rng = () => number;

/** A message for the shell to sign with the node's identity (sealEnvelope with messageDomains[domain]) and deliver. */
export type OutboundMessage =
  | { readonly domain: "jobAnnouncement"; readonly body: JobAnnouncement }
  | { readonly domain: "bid"; readonly body: Bid }
  | { readonly domain: "award"; readonly body: Award }
  | { readonly domain: "reject"; readonly body: Reject }
  | { readonly domain: "leaseRenew"; readonly body: LeaseRenew }
  | { readonly domain: "result"; readonly body: Result }
  | { readonly domain: "verdict"; readonly body: Verdict }
  | { readonly domain: "cancel"; readonly body: Cancel };

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

/** What one step of either machine accumulates: its effects, and the header (time, lifetime, next seq) of what it signs. */
export class StepContext<S extends { seq: number }> {
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

  header(lifetimeMs: number) {
    return { issuedAtMs: this.nowMs, expiresAtMs: this.nowMs + lifetimeMs, seq: this.state.seq++ };
  }

  send(to: string, message: OutboundMessage): void {
    this.effects.push({ type: "send", to, message });
  }
}
