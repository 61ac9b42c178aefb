/**
 * What a running node offers its control API (control.ts) and so the CLI:
 * the shape both sides agree on. JSON in and out; keys are hex strings.
 */
import type { Availability, JobSpec } from "../../jobs/index.ts";

export interface JobSummary {
  readonly project: string;
  readonly jobId: string;
  readonly name: string;
  readonly status: "open" | "passed" | "failed" | "cancelled";
  readonly reason: string;
  readonly submittedAtMs: number;
  readonly endedAtMs: number | null;
  readonly runsAwarded: number;
  readonly runsLive: number;
}

export interface AttemptSummary {
  readonly attempt: number;
  readonly shard: number;
  readonly worker: string;
  readonly state: string;
  readonly outcome: string | null;
  readonly exitCode: number | null;
  readonly outputsDigest: string | null;
  /** What replicas compare: the digest of outcome, exit code and outputs digest. */
  readonly resultDigest: string | null;
  readonly logDigest: string | null;
  readonly summary: string;
}

export interface JobDetail extends JobSummary {
  readonly spec: JobSpec;
  readonly attempts: readonly AttemptSummary[];
  readonly acceptedDigests: readonly (string | null)[];
}

export interface LogLine {
  readonly attempt: number;
  readonly stream: "stdout" | "stderr";
  readonly offset: number;
  readonly text: string;
}

export interface NodeStatus {
  readonly peerId: string;
  readonly publicKey: string;
  readonly addresses: readonly string[];
  readonly roles: { readonly master: readonly string[]; readonly worker: boolean };
  readonly availability: Availability | null;
  readonly running: number;
  readonly slots: number;
  /**
   * A worker's standing offer: the slots it offers now (0 unless eager and free) and, per pinned project, the masters
   * it offers them to (hex keys, the announcers of the project's keyset). Null on a node without a worker.
   */
  readonly offering: {
    readonly freeSlots: number;
    readonly masters: Readonly<Record<string, readonly string[]>>;
  } | null;
  /**
   * A master's offers on hand, per project it is master of: the workers whose standing offers have free slots left,
   * and those slots (what a job submitted now is awarded from at once, with no announcement).
   */
  readonly offersHeld: Readonly<Record<string, { readonly workers: number; readonly freeSlots: number }>>;
  readonly peers: number;
  /** gossipsub's score of each peer as this node sees it: a forger's falls below zero. */
  readonly peerScores: Readonly<Record<string, number>>;
  /**
   * What the host holds against peers (node/host): the most penalized with their points and offences, the bans in
   * force, bans since start, and messages and streams dropped over their rate limits.
   */
  readonly peerPenalties: {
    readonly penalized: readonly {
      readonly peer: string;
      readonly points: number;
      readonly offences: Readonly<Record<string, number>>;
    }[];
    readonly banned: readonly { readonly peer: string; readonly untilMs: number }[];
    readonly bansTotal: number;
    readonly rateLimited: { readonly gossip: number; readonly requests: number };
  };
  readonly trusted: readonly { project: string; share: number; keysetVersion: string | null }[];
}

/** A tree fetch the node runs for the CLI (`cimesh fetch`, `cimesh result --download`). */
export interface FetchStatus {
  readonly id: string;
  readonly root: string;
  readonly destination: string;
  readonly state: "fetching" | "done" | "failed";
  readonly doneBytes: number;
  readonly totalBytes: number;
  /** Bytes that came over the network; the rest the node held already. */
  readonly fetchedBytes: number;
  readonly files: number;
  readonly error: string;
}

export interface NodeApi {
  status(): Promise<NodeStatus>;
  /** Stores the job, then announces it; resolves once stored (the acknowledgement). */
  submit(project: string, jobId: string, spec: JobSpec): Promise<JobSummary>;
  jobs(): Promise<readonly JobSummary[]>;
  job(jobId: string): Promise<JobDetail | null>;
  /** Log text of every attempt received so far, from `sinceOffset` per attempt and stream. */
  logs(jobId: string): Promise<readonly LogLine[]>;
  explain(jobId: string): Promise<string>;
  cancel(jobId: string, reason: string): Promise<JobSummary>;
  setAvailability(availability: Availability): Promise<NodeStatus>;
  /**
   * Starts fetching the tree `root` into `destination` (an absolute path, absent or an empty folder); a tree that
   * would unpack past `limit` (default: the node's download limit) is refused before a byte is written.
   */
  startFetch(
    root: string,
    destination: string,
    providers: readonly string[],
    limit?: { readonly maxBytes: number; readonly name: string },
  ): Promise<FetchStatus>;
  fetchStatus(id: string): Promise<FetchStatus | null>;
}
