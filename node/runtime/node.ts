/**
 * The mesh node: the shell core of jobs/driver.ts with real ports. It loads
 * the node's key, config, store and trust, makes the libp2p host, the blob
 * store and the sandboxed executor, hands every inbound message to the
 * driver (whose admission answers gossipsub's validator), and serves the
 * control API. It decides nothing about the protocol (DESIGN.md, Rule 2).
 *
 * What a peer can make the node write at will (refusals, rate limits, bans,
 * refused DHT records, failed sends) goes through one EventLog: the first
 * lines per peer and reason, then one `log-suppressed` line per window with
 * the count. Each refusal admission makes is also charged to the peer that
 * sent it (host.penalize): a forgery costs more than a stale message, and
 * what says more about this node than the sender (not pinned here, no
 * keyset yet, no machine for it) costs nothing.
 */
import { statfs } from "node:fs/promises";
import { arch, cpus, loadavg, platform, totalmem } from "node:os";
import { join } from "node:path";
import type { WorkerAdvert } from "../../capabilities/index.ts";
import type { Identity, ProjectTrust } from "../../crypto/index.ts";
import { trustFromAnchor } from "../../crypto/index.ts";
import {
  createWorker,
  hexOf,
  type MasterConfig,
  NodeDriver,
  type ReportDeskConfig,
  type WorkerState,
} from "../../jobs/index.ts";
import type { NodeApi } from "../control/index.ts";
import { loadConfig, loadIdentity, loadProjectKeyset, type NodeConfig } from "../files/index.ts";
import {
  createHost,
  EventLog,
  type Host,
  type LogWrite,
  type NatOptions,
  networkPrefixOf,
  type Offence,
  PeerBans,
  peerIdOfPublicKeyHex,
  publicKeyHexOf,
  serveBlobs,
} from "../host/index.ts";
import { type ImageCache, openImageCache } from "../images/index.ts";
import { createExecutor, type Executor, neutralWorkRoot } from "../sandbox/index.ts";
import { type BlobStore, type NodeStore, openBlobStore, workerStoreMemory } from "../store/index.ts";
import { nodeApi } from "./api.ts";
import { NodeStartError } from "./errors.ts";
import { openRunHistory, type RunHistory, recordedRuns } from "./history.ts";
import { defaultInputsDeadline, heldBytes, imagePreparer, runCarrier, treeFetcher } from "./inputs.ts";
import { createNodeMetrics, folderBytes, jobStates, type NodeMetrics } from "./metrics.ts";
import { createNodePorts, type NodeLog, type NodePorts } from "./ports.ts";
import { keysetKeeper, keysetRecordRules, publishSpecs, specChecker, validateSpecRecord } from "./records.ts";
import { forgetTrust, keepAvailability, keepRules, openStoreOf, resumeAvailability } from "./startup.ts";

/** How often a worker hands its machine the local time and load average, the facts its availability rules read. */
export const factsIntervalMs = 30_000;
/** A corrupted outputs digest, for the fault-injection option: a worker that lies. */
export const corruptOutputsDigest = "bafkreicorruptedoutputsbyfaultinjectionaaaaaaaaaaaaaaaaaaaa";
/**
 * How long stop() waits for the driver to finish what it is doing before it closes the host and the store anyway.
 * Inbound work still queued is dropped (the protocol sends all of it again); what a step decided is persisted before
 * any of its effects, so nothing decided is lost.
 */
export const stopDrainMs = 5_000;
/**
 * Test knob: with CIMESH_TEST_MESH=1 every peer is on 127.0.0.1, so the IP-colocation weight is 0; this variable set
 * to 1 keeps gossipsub's weight, for tests of colocation itself.
 */
export const keepColocationEnv = "CIMESH_TEST_REAL_COLOCATION";
/** Admission reasons of an Ignore that are the sender's doing (it sent something out of date or again); they cost it. */
export const senderFaultIgnores: ReadonlySet<string> = new Set(["stale", "replay"]);
/**
 * Keyset pushes to peers met (a master hands its projects' keysets to each peer it connects to) under way at once; a
 * peer met beyond it is not told (it finds the keyset in the DHT or on the topic, as before).
 */
export const maxKeysetPushesInFlight = 32;
/** Tries of one keyset push (a failed one leaves the connection up: the DHT and the topic carry the keyset too). */
export const keysetPushAttempts = 2;
/** Wait between two tries of a keyset push. */
export const keysetPushRetryMs = 1_000;
/** Events of the driver's ports a peer can multiply (one per message it sends): written through the EventLog. */
const floodableEvents: ReadonlySet<string> = new Set([
  "step-failed",
  "send-failed",
  "publish-failed",
  "keyset-push-failed",
]);

export interface StartOptions {
  readonly dataDir: string;
  readonly worker: boolean;
  readonly master: boolean;
  readonly listen: readonly string[];
  readonly bootstrap: readonly string[];
  readonly allowUnsandboxed: boolean;
  /** Fault injection for tests: every result this worker reports carries a wrong outputs digest. */
  readonly faultInjectCorruptResults: boolean;
}

export interface RunningNode extends NodeApi {
  readonly peerId: string;
  addresses(): string[];
  stop(): Promise<void>;
}

async function detectDimensions(dataDir: string, config: NodeConfig): Promise<WorkerAdvert["dimensions"]> {
  const disk = await statfs(dataDir);
  const overrides = config.worker.dimensions;
  return {
    os: platform(),
    arch: arch(),
    cores: overrides.cores ?? Math.max(1, cpus().length),
    memoryBytes: overrides.memoryBytes ?? totalmem(),
    diskBytes: overrides.diskBytes ?? Number(disk.bavail) * Number(disk.bsize),
    // Tools are what the volunteer declares; a spec's self-check is what proves them.
    tools: overrides.tools,
    labels: config.worker.labels,
  };
}

async function loadNodeIdentity(dataDir: string): Promise<Identity> {
  const keyPath = join(dataDir, "node.key");
  try {
    return await loadIdentity(keyPath);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT")
      throw new NodeStartError(`${keyPath} does not exist: run \`cimesh init --data-dir ${dataDir}\` first`);
    throw error;
  }
}

/** The pinned projects' anchors, their shares, and the keysets of the projects this node announces for. */
async function loadTrust(options: StartOptions, config: NodeConfig) {
  const trust = new Map<string, ProjectTrust>();
  const shares: Record<string, number> = {};
  for (const entry of config.trust) {
    const roots = entry.roots.map((hex) => new Uint8Array(Buffer.from(hex, "hex")));
    trust.set(entry.project, trustFromAnchor({ project: entry.project, roots, threshold: entry.threshold }));
    shares[entry.project] = entry.share;
  }
  const ownKeysets = new Map<string, Uint8Array>();
  for (const project of options.master ? config.masters : []) {
    const bytes = await loadProjectKeyset(options.dataDir, project);
    if (bytes === null)
      throw new NodeStartError(`no keyset for project ${project} in ${options.dataDir}: run \`cimesh project init\``);
    if (!trust.has(project))
      throw new NodeStartError(`project ${project} is a master project but not in trust: run \`cimesh trust add\``);
    ownKeysets.set(project, bytes);
  }
  return { trust, shares, ownKeysets };
}

/** The worker side: the executor, whether a sandbox can be made, and the machine as today's config makes it. */
async function prepareWorker(
  options: StartOptions,
  config: NodeConfig,
  self: string,
  shares: Record<string, number>,
  blobs: BlobStore,
  log: NodeLog,
): Promise<{ executor: Executor; worker: WorkerState; sandboxProblem: string }> {
  const executor = createExecutor({
    // Not under the data folder: a job sees its run folder's host path (mountinfo); the executor makes this one.
    workRoot: neutralWorkRoot(options.dataDir),
    allowUnsandboxed: options.allowUnsandboxed,
    allowNetwork: config.worker.allowNetwork,
    blobStore: blobs,
    onWarning: (message: string) => log("executor-warning", { message }),
  });
  const probe = await executor.probe();
  let sandboxProblem = "";
  if (!probe.ok && !options.allowUnsandboxed) {
    sandboxProblem = `no sandbox: ${probe.reason}; this worker takes no job (install bubblewrap, or run with --allow-unsandboxed)`;
    log("sandbox-unavailable", { reason: probe.reason });
  }
  const worker = createWorker(
    self,
    {
      shares,
      dimensions: await detectDimensions(options.dataDir, config),
      specs: [],
      slots: config.worker.slots,
      allowNetwork: config.worker.allowNetwork,
      locks: config.worker.locks,
      rules: config.worker.rules,
      renewIntervalMs: config.timing.renewIntervalMs,
      offerLifetimeMs: config.timing.offerLifetimeMs,
      cannotRun: sandboxProblem,
    },
    config.worker.availability,
  );
  return { executor, worker, sandboxProblem };
}

function masterConfigs(options: StartOptions, config: NodeConfig): (Partial<MasterConfig> & { project: string })[] {
  if (!options.master) return [];
  const { leaseMs, bidWindowMs, reannounceIntervalMs } = config.timing;
  const { weight: quorumWeight, validRunsForFullWeight, distinctPrefixes, spotCheckFraction } = config.quorum;
  return config.masters.map((project) => ({
    project,
    leaseMs,
    bidWindowMs,
    reannounceIntervalMs,
    quorumWeight,
    validRunsForFullWeight,
    distinctPrefixes,
    spotCheckFraction,
  }));
}

/** Each master project's report desk: who may report builds made on their own, and how many (config.yaml's reports). */
function reportDeskConfigs(
  options: StartOptions,
  config: NodeConfig,
): (Partial<ReportDeskConfig> & { project: string })[] {
  if (!options.master) return [];
  const { from, perReporterPerHour, perProjectPerHour } = config.reports;
  return config.masters.map((project) => ({
    project,
    policy: from === "volunteers" ? { from } : { from: "listed", keys: from },
    maxReportsPerReporter: perReporterPerHour,
    maxReportsPerProject: perProjectPerHour,
  }));
}

async function startHost(
  options: StartOptions,
  config: NodeConfig,
  identity: Identity,
  trustOf: () => ReadonlyMap<string, ProjectTrust>,
  events: EventLog,
  metrics: NodeMetrics,
): Promise<Host> {
  const testMesh = process.env.CIMESH_TEST_MESH === "1";
  const keysets = keysetRecordRules(trustOf);
  const note: LogWrite = (event, fields) => events.note(event, fields);
  const listen = options.listen.length > 0 ? [...options.listen] : config.listen;
  return createHost({
    identity,
    listen,
    nat: natOptionsOf(config, listen, options.master && config.masters.length > 0),
    bootstrap: [...options.bootstrap, ...config.bootstrap],
    ipColocationWeight: testMesh && process.env[keepColocationEnv] !== "1" ? 0 : undefined,
    mdns: config.mdns && !testMesh,
    recordValidators: { keyset: keysets.validate, spec: validateSpecRecord },
    recordSelectors: { keyset: keysets.select },
    onRefusedStream: (from, why) => note("direct-refused", { from, reason: "stream", why }),
    log: note,
    metrics: metrics.libp2p,
  });
}

/** Whether a listen address can be reached from another machine at all (not loopback, not in-process memory). */
function beyondLoopback(address: string): boolean {
  return !/^\/(ip4\/127\.|ip6\/::1\/|memory\/)/.test(address);
}

/**
 * The NAT services of a node (node/host/nat.ts) from its config's reachability section: `auto` relays for others on a
 * project's master and reserves a relay slot on any other node, both only when the node listens beyond loopback. A
 * node on loopback alone (or in memory) with every switch on auto gets none of it.
 */
export function natOptionsOf(config: NodeConfig, listen: readonly string[], master: boolean): NatOptions | undefined {
  const { reachability } = config;
  const wide = listen.some(beyondLoopback);
  const relay = reachability.relay === "auto" ? master && wide : reachability.relay;
  const reserveRelay = reachability.reserveRelay === "auto" ? !relay && wide : reachability.reserveRelay;
  if (!wide && !relay && !reserveRelay && !reachability.upnp) return undefined;
  return { relay: relay ? { ...reachability.relayLimits } : null, reserveRelay, upnp: reachability.upnp };
}

/** What an admission's verdict costs the peer that sent the message, or null when nothing. */
export function offenceOf(admission: {
  readonly verdict: string;
  readonly reason: string;
  readonly detail: string;
}): Offence | null {
  if (admission.verdict === "reject") return "forged";
  if (admission.verdict !== "ignore" || !senderFaultIgnores.has(admission.reason)) return null;
  return "useless";
}

/**
 * Every inbound message goes to the driver; gossipsub acts on its admission's verdict. A refusal is charged to the
 * peer that sent it and logged through the EventLog. Once the node stops, nothing more goes to the driver: direct
 * messages are refused unacknowledged (their senders try again later), gossip is ignored.
 */
function wireInbound(
  host: Host,
  driver: NodeDriver<Uint8Array>,
  topics: Iterable<string>,
  events: EventLog,
  stopping: () => boolean,
): void {
  host.onDirect((bytes, fromPeerId, remoteAddress) => {
    if (stopping()) throw new NodeStartError("the node is stopping");
    let peer: string;
    try {
      peer = publicKeyHexOf(fromPeerId);
    } catch (error) {
      host.penalize(fromPeerId, "forged");
      events.note("direct-refused", { from: fromPeerId, reason: "peer-key", error: String(error) });
      return;
    }
    const admission = driver.receive({ kind: "direct", peer, prefix: networkPrefixOf(remoteAddress) }, bytes);
    if (admission.keyset !== null)
      events.note("keyset-accepted", {
        project: admission.keyset.project.slice(0, 12),
        from: fromPeerId,
        via: "direct",
      });
    if (admission.verdict === "accept") return;
    const offence = offenceOf(admission);
    if (offence !== null) host.penalize(fromPeerId, offence);
    // An empty detail is routine (a keyset this node trusts already, pushed again): not worth a line.
    if (admission.detail !== "")
      events.note("direct-refused", { from: fromPeerId, reason: admission.reason, error: admission.detail });
  });
  for (const topic of topics)
    host.subscribe(topic, (bytes, fromPeerId) => {
      if (stopping()) return "ignore";
      const admission = driver.receive({ kind: "topic", topic }, bytes);
      if (admission.verdict === "accept") return "accept";
      const offence = offenceOf(admission);
      if (offence !== null) host.penalize(fromPeerId, offence);
      if (admission.detail !== "")
        events.note(`gossip-${admission.verdict}`, {
          project: topic.slice(0, 12),
          from: fromPeerId,
          reason: admission.reason,
          why: admission.detail,
        });
      return admission.verdict;
    });
}

/**
 * A master hands its projects' keysets to every peer it meets, directly, once per connection: a fresh worker learns
 * the project's masters (the keyset's announcers) at once and offers its slots, instead of waiting for the DHT or the
 * topic. The receiver's admission judges it like any keyset; one that does not pin the project ignores it, free.
 * Bounded (maxKeysetPushesInFlight) and never awaited by the host's event.
 */
function pushKeysets(host: Host, ownKeysets: ReadonlyMap<string, Uint8Array>, log: NodeLog, stopping: () => boolean) {
  if (ownKeysets.size === 0) return;
  let inFlight = 0;
  const push = async (peerId: string): Promise<void> => {
    const key = publicKeyHexOf(peerId);
    for (const [project, bytes] of ownKeysets)
      for (let attempt = 1; attempt <= keysetPushAttempts && !stopping(); attempt++) {
        try {
          await host.send(key, bytes, { keepConnection: true });
          break;
        } catch (error) {
          if (attempt === keysetPushAttempts)
            log("keyset-push-failed", { to: key.slice(0, 8), project: project.slice(0, 12), error: String(error) });
          else await new Promise((resolve) => setTimeout(resolve, keysetPushRetryMs));
        }
      }
  };
  host.onPeerMet((peerId) => {
    if (stopping() || inFlight >= maxKeysetPushesInFlight) return;
    inFlight++;
    void push(peerId)
      .catch(() => undefined)
      .finally(() => {
        inFlight--;
      });
  });
}

/**
 * The ports, counted for the metrics: each signed message sent or published by its type, and each admission's
 * verdict (with the type of the message it judged) as the driver reports it.
 */
function countedPorts(ports: NodePorts, metrics: NodeMetrics, self: string): NodePorts {
  return {
    ...ports,
    open(wire, nowMs) {
      const opened = ports.open(wire, nowMs);
      metrics.opened(opened);
      return opened;
    },
    publish(topic, wire, message) {
      metrics.sent(message.domain);
      ports.publish(topic, wire, message);
    },
    send(to, wire, message) {
      metrics.sent(message.domain);
      ports.send(to, wire, message);
    },
    admitted(channel, admission) {
      metrics.admitted(channel, admission, channel.kind === "direct" && channel.peer === self);
    },
  };
}

/** What the metrics' gauges read of a running node. */
function bindMetrics(
  metrics: NodeMetrics,
  parts: {
    driver: NodeDriver<Uint8Array>;
    host: Host;
    blobs: BlobStore;
    history: RunHistory;
    dataDir: string;
    images: ImageCache | null;
  },
): void {
  const { driver, host, blobs, history } = parts;
  metrics.bind({
    *jobs() {
      for (const project of driver.masterProjects()) {
        const counts = new Map<string, number>(jobStates.map((state) => [state, 0]));
        for (const job of Object.values(driver.masterState(project)?.jobs ?? {}))
          counts.set(job.status, (counts.get(job.status) ?? 0) + 1);
        for (const [state, count] of counts) yield { project, state, count };
      }
    },
    peers: () => host.peerCount(),
    slots() {
      const worker = driver.workerState();
      return worker === null ? null : { total: worker.config.slots, busy: Object.keys(worker.running).length };
    },
    storeBytes: () => folderBytes(join(parts.dataDir, "store")),
    blobCacheBytes: () => blobs.usedBytes(),
    historyEntries: () => history.list().length,
    images: () => parts.images?.counters() ?? null,
  });
}

/** Resolves true when `promise` settles within `limitMs`, false when the time runs out first. */
async function settledWithin(promise: Promise<unknown>, limitMs: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), limitMs);
  });
  try {
    return await Promise.race([
      promise.then(
        () => true,
        () => true,
      ),
      timeout,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** The facts a worker's availability rules read: local time and load, every factsIntervalMs. */
function feedFacts(driver: NodeDriver<Uint8Array>): NodeJS.Timeout {
  const feed = () => {
    if (driver.workerState() === null) return;
    const now = new Date();
    driver.toWorker({
      kind: "facts",
      facts: {
        localMinuteOfDay: now.getHours() * 60 + now.getMinutes(),
        localDayOfWeek: now.getDay(),
        loadAverage: loadavg()[0] ?? 0,
      },
    });
  };
  feed();
  return setInterval(feed, factsIntervalMs);
}

/** Log fields that name a peer by its public key (the machines' own log events), as a key the user knows: a PeerId. */
const peerFields = ["worker", "master", "signer"] as const;
const publicKeyHexPattern = /^[0-9a-f]{64}$/;

function namedByPeerId(fields: Readonly<Record<string, unknown>>): Record<string, unknown> {
  let named: Record<string, unknown> | undefined;
  for (const field of peerFields) {
    const value = fields[field];
    if (typeof value !== "string" || !publicKeyHexPattern.test(value)) continue;
    named ??= { ...fields };
    try {
      named[field] = peerIdOfPublicKeyHex(value).toString();
    } catch {
      // Not a key after all: logged as it came.
    }
  }
  return named ?? { ...fields };
}

/** The node's log (JSON lines on stderr, peers named by PeerId), and the one its ports use, where floods are counted. */
function nodeLogs(self: string): { log: NodeLog; events: EventLog; portLog: NodeLog } {
  const log: NodeLog = (event, fields = {}) =>
    process.stderr.write(
      `${JSON.stringify({ t: Date.now(), node: self.slice(0, 8), event, ...namedByPeerId(fields) })}\n`,
    );
  const events = new EventLog((event, fields) => log(event, fields));
  events.start();
  const portLog: NodeLog = (event, fields = {}) =>
    floodableEvents.has(event) ? events.note(event, fields) : log(event, fields);
  return { log, events, portLog };
}

type WorkerParts = Awaited<ReturnType<typeof prepareWorker>>;

/** What a worker's runs are carried out with: the images, the runs (recorded in the history) and the specs' checks. */
interface WorkerCarriers {
  readonly images: ImageCache | null;
  readonly runs: ReturnType<typeof recordedRuns> | null;
  readonly checkSpecs: ReturnType<typeof specChecker> | undefined;
}

async function workerCarriers(
  options: StartOptions,
  workerParts: WorkerParts | null,
  parts: {
    readonly host: Host;
    readonly blobs: BlobStore;
    readonly fetchFrom: ReturnType<typeof treeFetcher>;
    readonly history: RunHistory;
    readonly metrics: NodeMetrics;
    readonly log: NodeLog;
    readonly driver: () => NodeDriver<Uint8Array>;
  },
): Promise<WorkerCarriers> {
  if (workerParts === null) return { images: null, runs: null, checkSpecs: undefined };
  const { host, blobs, fetchFrom, history, metrics, log, driver } = parts;
  // Unpacked images beside the run folders (a neutral path, as the sandbox shows it), one copy per image CID.
  const images = await openImageCache(join(neutralWorkRoot(options.dataDir), "images"), blobs);
  const runs = recordedRuns(
    runCarrier({
      executor: workerParts.executor,
      host,
      blobs,
      fetchFrom,
      log,
      images,
      corruptOutputsDigest: options.faultInjectCorruptResults ? corruptOutputsDigest : null,
    }),
    history,
    {
      masterOf: (runId) => driver().workerState()?.running[runId]?.master ?? "",
      log,
      onEnded: (entry) => metrics.runEnded(entry.outcome ?? "refused"),
    },
  );
  const checkSpecs =
    workerParts.sandboxProblem !== ""
      ? undefined
      : specChecker({
          host,
          executor: workerParts.executor,
          driver,
          log,
          prepareImage: imagePreparer({ blobs, fetchFrom, images, deadline: defaultInputsDeadline }),
        });
  return { images, runs, checkSpecs };
}

/** Keysets and specs kept published and fetched: now, every keysetRepublishMs, and when a DHT peer first joins. */
function keepRecords(
  options: StartOptions,
  config: NodeConfig,
  host: Host,
  driver: () => NodeDriver<Uint8Array>,
  ownKeysets: Map<string, Uint8Array>,
  log: NodeLog,
  stopping: () => boolean,
): ReturnType<typeof setInterval> {
  const keysets = keysetKeeper({ host, driver, ownKeysets, log, republishMs: config.timing.keysetRepublishMs });
  // A keyset put that found no DHT peer goes in as soon as one joins.
  host.onDhtPeer(() => {
    if (!stopping() && keysets.waitingForDhtPeers()) void keysets.publish();
  });
  const timer = setInterval(() => {
    void keysets.publish();
    void keysets.fetch();
    if (driver().masterProjects().length > 0) void publishSpecs(host, options.dataDir, log);
  }, config.timing.keysetRepublishMs);
  void keysets.publish();
  return timer;
}

export async function startNode(options: StartOptions): Promise<RunningNode> {
  const identity = await loadNodeIdentity(options.dataDir);
  const config = await loadConfig(options.dataDir);
  const self = hexOf(identity.publicKey);
  const { log, events, portLog } = nodeLogs(self);
  const { trust, shares, ownKeysets } = await loadTrust(options, config);
  const metrics = createNodeMetrics({ dataDir: options.dataDir });
  const store: NodeStore = await openStoreOf(
    options.dataDir,
    options.worker && !options.master ? workerStoreMemory : undefined,
  );
  // Opened on every node, so a node started without --worker still shows what it ran as one.
  const history = await openRunHistory(store.db, {
    onWriteError: (error) => log("history-write-failed", { error: String(error) }),
  });
  // Job inputs and outputs by content; a worker's is a cache with a quota, a master's keeps what it was given.
  const blobs = await openBlobStore(join(options.dataDir, "blobs"), {
    quotaBytes: options.worker && !options.master ? config.worker.cacheQuota : null,
  });
  const workerParts = options.worker ? await prepareWorker(options, config, self, shares, blobs, log) : null;
  let driver: NodeDriver<Uint8Array> | null = null;
  let stopping = false;
  const host = await startHost(options, config, identity, () => driver?.trust() ?? trust, events, metrics);
  pushKeysets(host, ownKeysets, portLog, () => stopping);
  await serveBlobs(host, blobs);
  const fetchFrom = treeFetcher(host, blobs, new PeerBans(), log);

  const driverOf = () => driver as NodeDriver<Uint8Array>;
  const { images, runs, checkSpecs } = await workerCarriers(options, workerParts, {
    host,
    blobs,
    fetchFrom,
    history,
    metrics,
    log,
    driver: driverOf,
  });
  const basePorts: NodePorts = createNodePorts({
    identity,
    host,
    store,
    log: portLog,
    driver: driverOf,
    runs,
    inputsHeld: (root) => heldBytes(blobs, root),
    checkSpecs: checkSpecs === undefined ? undefined : (project, uuids) => void checkSpecs(project, uuids),
  });
  const ports = countedPorts(basePorts, metrics, self);
  driver = new NodeDriver<Uint8Array>({
    self,
    ports,
    trust,
    masters: masterConfigs(options, config),
    reportDesks: reportDeskConfigs(options, config),
    worker: workerParts?.worker ?? null,
    stored: await store.load(),
  });
  for (const [project, bytes] of ownKeysets) driver.receiveKeysetRecord(project, bytes);
  wireInbound(host, driver, trust.keys(), events, () => stopping);
  if (workerParts !== null) resumeAvailability(driver, config.worker.availability);
  bindMetrics(metrics, { driver, host, blobs, history, dataDir: options.dataDir, images });
  driver.start();

  const keysetTimer = keepRecords(options, config, host, driverOf, ownKeysets, log, () => stopping);
  const factsTimer = workerParts === null ? null : feedFacts(driver);
  log("started", {
    peerId: host.peerId,
    addresses: host.multiaddrs(),
    masters: driver.masterProjects(),
    worker: workerParts !== null,
    // What the worker resumed with: the config's, which every availability change is written to.
    availability: workerParts === null ? null : config.worker.availability,
  });

  const trustRemoved = new Set<string>();
  const api = nodeApi({
    driver,
    host,
    store,
    blobs,
    fetchFrom,
    self,
    shares,
    sandboxProblem: workerParts?.sandboxProblem ?? "",
    history,
    metrics,
    ...(workerParts === null ? {} : { pidOf: (runId: string) => workerParts.executor.pidOf?.(runId) ?? null }),
    trustRemoved,
    // What this node's reports say of the machine, when it runs no worker that knows.
    dimensions: workerParts?.worker.config.dimensions ?? (await detectDimensions(options.dataDir, config)),
  });
  const running = driver;
  return {
    ...api,
    async setAvailability(availability) {
      const status = await api.setAvailability(availability);
      await keepAvailability(options.dataDir, availability);
      return status;
    },
    async setRules(rules) {
      await api.setRules?.(rules);
      await keepRules(options.dataDir, rules);
      return api.status();
    },
    async removeTrust(project) {
      await forgetTrust(options.dataDir, project);
      trustRemoved.add(project);
      log("trust-removed", { project, inForce: "at the next start" });
      return api.status();
    },
    peerId: host.peerId,
    addresses: () => host.multiaddrs(),
    async stop() {
      stopping = true;
      clearInterval(keysetTimer);
      if (factsTimer !== null) clearInterval(factsTimer);
      ports.close();
      const worker = running.workerState();
      for (const runId of Object.keys(worker?.running ?? {})) workerParts?.executor.kill(runId, "the node is stopping");
      // The killed runs are written down in the history while the driver drains: both before the store closes.
      const [drained, recorded] = await Promise.all([
        settledWithin(running.stop(), stopDrainMs),
        settledWithin(
          history.noneRunning().then(() => history.flushed()),
          stopDrainMs,
        ),
      ]);
      if (!drained)
        log("stop-drain-abandoned", { waitedMs: stopDrainMs, why: "the driver's queue did not drain in time" });
      if (!recorded) log("history-drain-abandoned", { waitedMs: stopDrainMs, why: "a killed run did not end in time" });
      await history.close();
      await host.stop();
      events.close();
      await store.close();
    },
  };
}
