/**
 * What a running node offers its control API (control.ts) and so the CLI:
 * the shape both sides agree on. JSON in and out; keys are hex strings.
 */
import type { Availability, JobSpec, ReportDelivery, ReportFacts } from "../../jobs/index.ts";

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
  /** The worker's public key (hex), as the protocol names it. */
  readonly worker: string;
  /** The same worker as people name it: its libp2p PeerId. */
  readonly workerPeerId: string;
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
  /** Why an open job is still open, in one line ("no worker offers match: …"); empty once it ended. */
  readonly waiting: string;
  readonly attempts: readonly AttemptSummary[];
  readonly acceptedDigests: readonly (string | null)[];
}

export interface LogLine {
  readonly attempt: number;
  readonly stream: "stdout" | "stderr";
  readonly offset: number;
  readonly text: string;
}

/**
 * A run this node carried out as a worker, from its own history (node/runtime/history.ts): what a volunteer sees
 * with `cimesh jobs`, `cimesh result` and `cimesh logs` on a worker.
 */
export interface RunSummary {
  readonly project: string;
  readonly jobId: string;
  readonly name: string;
  readonly shard: number;
  /** The job's shards (CIMESH_TOTAL_SHARDS). */
  readonly shards: number;
  readonly attempt: number;
  /** The master that awarded the run, as a PeerId. */
  readonly master: string;
  readonly state: "running" | "ended";
  /** The executor's outcome, `interrupted` for a run the node's process ended with; null while it runs. */
  readonly outcome: string | null;
  readonly exitCode: number | null;
  readonly startedAtMs: number;
  readonly endedAtMs: number | null;
  /** As the executor measured it (what the master was told); null while it runs. */
  readonly durationMs: number | null;
  /** What replicas compare: the digest of outcome, exit code and outputs digest. */
  readonly resultDigest: string | null;
  readonly outputsDigest: string | null;
  readonly logDigest: string | null;
  readonly summary: string;
}

/** What one busy slot of a worker runs, and since when. */
export interface BusySlot {
  readonly project: string;
  readonly jobId: string;
  /** The job's name, when the node's history has it; empty otherwise. */
  readonly name: string;
  readonly shard: number;
  readonly attempt: number;
  readonly sinceMs: number;
  /** What the run's processes use now, read from /proc; absent when the node cannot tell (no pid yet, not Linux). */
  readonly usage?: {
    readonly processes: number;
    /** CPU time the run's live processes used so far. */
    readonly cpuMs: number;
    /** Share of one core used since the previous reading (100 = a whole core); null at the first. */
    readonly cpuPercent: number | null;
    readonly memoryBytes: number;
  };
}

/** A worker's time windows (local minutes, days 0 = Sunday, end before start wraps past midnight) and load ceiling. */
export interface RulesBody {
  readonly windows: readonly {
    readonly days: readonly number[];
    readonly startMinute: number;
    readonly endMinute: number;
  }[];
  readonly maxLoadAverage: number | null;
}

export interface NodeStatus {
  readonly peerId: string;
  readonly publicKey: string;
  readonly addresses: readonly string[];
  readonly roles: { readonly master: readonly string[]; readonly worker: boolean };
  readonly availability: Availability | null;
  /** The volunteer's own choice (kept in config.yaml), which a rule or a missing sandbox may override; null without a worker. */
  readonly availabilityChosen?: Availability | null;
  /** The worker's rules: time windows (local minutes, days 0 = Sunday) and load ceiling; null without a worker. */
  readonly availabilityRules?: {
    readonly windows: readonly {
      readonly days: readonly number[];
      readonly startMinute: number;
      readonly endMinute: number;
    }[];
    readonly maxLoadAverage: number | null;
  } | null;
  readonly running: number;
  readonly slots: number;
  /** What each busy slot of the worker runs; empty on a node without a worker. */
  readonly busySlots: readonly BusySlot[];
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
  /** Projects removed from config.yaml while the node runs: it serves them until its next start. */
  readonly trustRemoved?: readonly string[];
  /** The blob cache (job inputs and outputs): bytes held and the quota (null: none, a master's store). */
  readonly cache?: { readonly usedBytes: number; readonly quotaBytes: number | null };
  /**
   * How the node is reached (node/host/nat.ts): `public` (a peer dialled a direct address back, AutoNAT), `relayed`
   * (behind NAT, through the relays named), `unknown`; the peers reached directly after a hole punch; as a relay, its
   * limits and reservations held. Null on a node with no NAT services (one on loopback).
   */
  readonly reachability?: ReachabilityStatus | null;
}

export interface ReachabilityStatus {
  readonly kind: "public" | "relayed" | "unknown";
  readonly confirmed: readonly string[];
  readonly relays: readonly string[];
  readonly relayAddresses: readonly string[];
  readonly holePunched: readonly string[];
  readonly relayedPeers: number;
  readonly relayService: {
    readonly limits: {
      readonly maxReservations: number;
      readonly dataBytes: number;
      readonly durationMs: number;
      readonly reservationTtlMs: number;
    };
    readonly reservations: number;
  } | null;
  readonly upnp: boolean;
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

/**
 * A push-only build the node's master recorded (jobs/reports.ts): a build a volunteer made on its own and reported,
 * a kind of its own, never a job the master scheduled.
 */
export interface ReportSummary {
  readonly kind: "report";
  readonly project: string;
  readonly reportId: string;
  readonly jobName: string;
  /** The reporter's public key (hex), and the same as people name it: its PeerId. */
  readonly reporter: string;
  readonly reporterPeerId: string;
  readonly outcome: string;
  readonly exitCode: number | null;
  /** The source stamp as URL@REV; empty when the report names none. */
  readonly source: string;
  readonly startedAtMs: number;
  readonly endedAtMs: number;
  readonly receivedAtMs: number;
}

export interface ReportDetail extends ReportSummary {
  /** Everything the report says: job digest, shard, dimensions, specs passed, steps, log and outputs CIDs, summary. */
  readonly report: ReportFacts;
}

/** What `cimesh report` hands the node: a report's facts but the reporter's dimensions and specs, which the node adds. */
export type ReportDraft = Omit<ReportFacts, "dimensions" | "specs">;

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
  /** Replaces the worker's time windows and load ceiling, at once and in config.yaml. Absent: this node cannot. */
  setRules?(rules: RulesBody): Promise<NodeStatus>;
  /** Removes a trusted project from config.yaml, as `cimesh trust remove` does; in force at the next start. */
  removeTrust?(project: string): Promise<NodeStatus>;
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
  /** The runs this node's worker carried out and runs now (its history), oldest first; with jobId, that job's only. */
  runs(jobId?: string): Promise<readonly RunSummary[]>;
  /** The log the worker's history keeps of a job's runs (the first bytes of each stream), per attempt and stream. */
  runLogs(jobId: string): Promise<readonly LogLine[]>;
  /** Every metric of the node in Prometheus's text exposition format. */
  metrics(): Promise<string>;
  /** Queues a push-only build's report in the reporter's outbox (kept until a master answers); the same id twice is one. */
  queueReport?(draft: ReportDraft): Promise<ReportDelivery>;
  /** Where a report this node queued stands: waiting, answered (accepted, duplicate, refused) or given up. */
  reportDelivery?(reportId: string): Promise<ReportDelivery>;
  /** The reports this node's masters recorded, oldest first. */
  reports?(): Promise<readonly ReportSummary[]>;
  report?(reportId: string): Promise<ReportDetail | null>;
}
