/**
 * The node's metrics in Prometheus's text format, for `GET /metrics` on the
 * control API: libp2p's own (connections, streams, bytes per protocol, the
 * DHT; @libp2p/prometheus-metrics) and the process's (CPU, memory, event
 * loop), with cimesh's beside them in one prom-client registry.
 *
 * cimesh's series, all prefixed `cimesh_`:
 * - `cimesh_jobs{project,state}`: a master's jobs by state (open, passed, failed, cancelled).
 * - `cimesh_runs_total{outcome}`: runs this node's worker ended since it started, by outcome.
 * - `cimesh_worker_slots`, `cimesh_worker_slots_busy`: the worker's slots, and those running a job (0 without one).
 * - `cimesh_messages_sent_total{type}`, `cimesh_messages_received_total{type}`: signed messages this node handed
 *   to the network (direct or gossip) and those it took from peers, by type (`offer`, `bid`, `award`, `result`, ...).
 * - `cimesh_admissions_total{verdict,reason}`: every verdict of admission (the door of every inbound message), so
 *   refusals by reason are the series whose verdict is `reject` or `ignore`.
 * - `cimesh_peers`: libp2p peers connected.
 * - `cimesh_store_bytes`: the level store on disk; `cimesh_blob_cache_bytes`: the blob store (a worker's cache).
 * - `cimesh_run_history_entries`: runs the worker's history keeps.
 *
 * Counters start at 0 with the process, as Prometheus expects of a counter.
 */
import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { prometheusMetrics } from "@libp2p/prometheus-metrics";
import { Counter, Gauge, Registry } from "prom-client";
import { type Admission, type Channel, messageDomainName, messageDomains, type Opened } from "../../jobs/index.ts";
import type { HostOptions } from "../host/index.ts";

/** The job states a master's jobs are counted by. */
export const jobStates = ["open", "passed", "failed", "cancelled"] as const;
/** The outcomes a worker's runs are counted by. */
export const runOutcomes = ["succeeded", "failed", "timed-out", "killed", "refused"] as const;
/** Type of a received message that is a keyset (it has an envelope of its own), and of one that could not be read. */
export const keysetMessageType = "keyset";
export const unreadableMessageType = "unreadable";

/** What the gauges read at each scrape. */
export interface MetricSources {
  /** Each master project's jobs by state. */
  jobs(): Iterable<{ readonly project: string; readonly state: string; readonly count: number }>;
  peers(): number;
  /** The worker's slots and those busy; null on a node without a worker. */
  slots(): { readonly total: number; readonly busy: number } | null;
  storeBytes(): Promise<number>;
  blobCacheBytes(): number;
  historyEntries(): number;
  /** The worker's image cache: images it unpacked, and runs that found theirs unpacked already; absent or null without one. */
  images?(): { readonly unpacks: number; readonly reuses: number } | null;
}

export interface NodeMetrics {
  readonly registry: Registry;
  /** libp2p's metrics, registered in `registry`: give it to the host (HostOptions.metrics). */
  readonly libp2p: NonNullable<HostOptions["metrics"]>;
  /** A signed message handed to the network. */
  sent(domain: string): void;
  /** What opening an inbound message gave: its type counts once admission has judged it. */
  opened(opened: Opened): void;
  /** Admission's verdict on the message last opened; `fromSelf` for a node's message to itself (not counted as received). */
  admitted(channel: Channel, admission: Admission, fromSelf: boolean): void;
  runEnded(outcome: string): void;
  /** The gauges' sources, once the node has them. */
  bind(sources: MetricSources): void;
  /** The exposition text of every series. */
  text(): Promise<string>;
  readonly contentType: string;
}

/** Bytes of the files directly in a folder (a level store keeps its files flat). */
export async function folderBytes(folder: string): Promise<number> {
  const names = await readdir(folder).catch(() => [] as string[]);
  const sizes = await Promise.all(
    names.map((name) =>
      stat(join(folder, name)).then(
        (info) => (info.isFile() ? info.size : 0),
        () => 0,
      ),
    ),
  );
  return sizes.reduce((sum, size) => sum + size, 0);
}

/**
 * The node's registry and its counters. One node per process: @libp2p/prometheus-metrics keeps libp2p's metric
 * objects in a table of its module, which the next node made in the same process takes over.
 */
export function createNodeMetrics(options: { readonly dataDir: string }): NodeMetrics {
  const registry = new Registry();
  const libp2p = prometheusMetrics({ registry, statfsLocation: options.dataDir });
  const registers = [registry];
  const sentTotal = new Counter({
    name: "cimesh_messages_sent_total",
    help: "Signed messages this node handed to the network (direct or gossip), by type",
    labelNames: ["type"],
    registers,
  });
  const receivedTotal = new Counter({
    name: "cimesh_messages_received_total",
    help: "Messages from peers that admission accepted, by type",
    labelNames: ["type"],
    registers,
  });
  const admissionsTotal = new Counter({
    name: "cimesh_admissions_total",
    help: "Admission verdicts on inbound messages (accept, reject, ignore), by reason",
    labelNames: ["verdict", "reason"],
    registers,
  });
  const runsTotal = new Counter({
    name: "cimesh_runs_total",
    help: "Runs this node's worker ended since it started, by outcome",
    labelNames: ["outcome"],
    registers,
  });
  for (const type of Object.keys(messageDomains)) {
    sentTotal.inc({ type }, 0);
    receivedTotal.inc({ type }, 0);
  }
  receivedTotal.inc({ type: keysetMessageType }, 0);
  for (const outcome of runOutcomes) runsTotal.inc({ outcome }, 0);

  let lastOpenedType = unreadableMessageType;
  return {
    registry,
    libp2p,
    contentType: registry.contentType,
    sent: (domain) => sentTotal.inc({ type: domain }),
    opened(opened) {
      // The driver opens a message and admits it in one synchronous call: the type read here is that message's.
      lastOpenedType =
        opened.kind === "message"
          ? (messageDomainName(opened.tag) ?? unreadableMessageType)
          : opened.kind === "keyset"
            ? keysetMessageType
            : unreadableMessageType;
    },
    admitted(_channel, admission, fromSelf) {
      admissionsTotal.inc({ verdict: admission.verdict, reason: admission.reason });
      if (admission.verdict === "accept" && !fromSelf) receivedTotal.inc({ type: lastOpenedType });
    },
    runEnded: (outcome) => runsTotal.inc({ outcome }),
    bind(sources) {
      new Gauge({
        name: "cimesh_jobs",
        help: "Jobs of the projects this node is master of, by state",
        labelNames: ["project", "state"],
        registers,
        collect() {
          this.reset();
          for (const { project, state, count } of sources.jobs()) this.set({ project, state }, count);
        },
      });
      new Gauge({
        name: "cimesh_peers",
        help: "libp2p peers connected",
        registers,
        collect() {
          this.set(sources.peers());
        },
      });
      new Gauge({
        name: "cimesh_worker_slots",
        help: "The worker's slots (jobs at once); 0 without a worker",
        registers,
        collect() {
          this.set(sources.slots()?.total ?? 0);
        },
      });
      new Gauge({
        name: "cimesh_worker_slots_busy",
        help: "The worker's slots running a job now",
        registers,
        collect() {
          this.set(sources.slots()?.busy ?? 0);
        },
      });
      new Gauge({
        name: "cimesh_store_bytes",
        help: "Bytes of the node's level store on disk",
        registers,
        async collect() {
          this.set(await sources.storeBytes());
        },
      });
      new Gauge({
        name: "cimesh_blob_cache_bytes",
        help: "Bytes held in the node's blob store (a worker's input and output cache)",
        registers,
        collect() {
          this.set(sources.blobCacheBytes());
        },
      });
      new Counter({
        name: "cimesh_image_unpacks_total",
        help: "Images the worker unpacked into its image cache since it started (one per image CID it kept)",
        registers,
        collect() {
          this.reset();
          this.inc(sources.images?.()?.unpacks ?? 0);
        },
      });
      new Counter({
        name: "cimesh_image_reuses_total",
        help: "Runs that found their image unpacked already, since the worker started",
        registers,
        collect() {
          this.reset();
          this.inc(sources.images?.()?.reuses ?? 0);
        },
      });
      new Gauge({
        name: "cimesh_run_history_entries",
        help: "Runs kept in the worker's history",
        registers,
        collect() {
          this.set(sources.historyEntries());
        },
      });
    },
    text: () => registry.metrics(),
  };
}
