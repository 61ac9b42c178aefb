/**
 * The mesh node: carries out what the state machines of jobs/ decide
 * (DESIGN.md, Rule 2: no protocol decision here). It wires the libp2p host,
 * the store, the sandboxed executor and the control API around one worker
 * machine and one master machine per project this node announces for.
 *
 * House rules of this file:
 * - Every input to a machine goes through one queue, so steps never
 *   interleave; a step's new state is stored before its effects go out, so a
 *   crash never leaves peers knowing more than the store.
 * - Everything that arrives is verified first (crypto/: envelope, keyset
 *   trust, replay ledger); gossip validators answer Reject for forgeries and
 *   Ignore for what is merely stale, so gossipsub's scores punish forgers.
 * - The node signs what the machines emit with its own key and a node-wide
 *   sequence number from the store (one signer, one sequence, whatever the
 *   role).
 */
import { randomBytes } from "node:crypto";
import { mkdir, readdir, statfs } from "node:fs/promises";
import { arch, cpus, loadavg, platform, totalmem } from "node:os";
import { isAbsolute, join } from "node:path";
import {
  type CapabilitySpec,
  capabilitySpecDomain,
  checkSpec,
  explainUnmet,
  type WorkerAdvert,
} from "../capabilities/index.ts";
import {
  acceptKeyset,
  CimeshError,
  checkAnnouncer,
  type Identity,
  KeysetRollbackError,
  keysetDomain,
  openAnyEnvelope,
  openEnvelope,
  openMultiEnvelope,
  type ProjectTrust,
  type ReplayLedger,
  recordSeq,
  sealEnvelope,
  trustFromAnchor,
  type Verified,
} from "../crypto/index.ts";
import {
  type Availability,
  advertOf,
  createMaster,
  createWorker,
  directSide,
  type Effect,
  explainJob,
  hexOf,
  type JobRecord,
  type JobSpec,
  type MasterInput,
  type MasterState,
  masterInputOf,
  messageDomainName,
  messageDomains,
  messageRegistry,
  type OutboundMessage,
  type Rng,
  stepMaster,
  stepWorker,
  topicRoute,
  type WorkerInput,
  type WorkerState,
  workerInputOf,
} from "../jobs/index.ts";
import type { FetchStatus, JobDetail, JobSummary, LogLine, NodeApi, NodeStatus } from "./control/index.ts";
import {
  loadConfig,
  loadIdentity,
  loadProjectKeyset,
  loadPublishedSpecs,
  type NodeConfig,
  parseJobFile,
} from "./files/index.ts";
import {
  createHost,
  fetchTree,
  type Host,
  PeerBans,
  peerIdOfPublicKeyHex,
  publicKeyHexOf,
  serveBlobs,
} from "./host/index.ts";
import { createExecutor, type Executor } from "./sandbox/index.ts";
import { type BlobStore, openBlobStore, openStore, treeBlobs, unpackTree } from "./store/index.ts";

/** How often a node with every keyset it needs looks in the DHT for a newer one (one it lacks: every timing.keysetRepublishMs). */
export const keysetRefreshMs = 5 * 60_000;
/** Capability specs a worker checks at most; each is a self-check run in the sandbox. */
export const maxCheckedSpecs = 64;
/** After a spec was not found in the DHT, how long before it is looked for again. */
export const specMissRetryMs = 30_000;
/** How often a worker hands its machine the local time and load average, the facts its availability rules read. */
export const factsIntervalMs = 30_000;
/** Fetches the node remembers for the CLI to ask about; the oldest is forgotten first. */
export const maxFetchRecords = 64;
/** Tries of one direct message before it is given up (the protocol's leases and re-announcements cover the rest). */
export const maxSendAttempts = 5;
/** Wait before the second try of a direct message; doubled for each try after, up to maxSendRetryWaitMs. */
export const sendRetryBaseMs = 500;
export const maxSendRetryWaitMs = 5_000;
/** How long a worker keeps trying to deliver a result (its master may be restarting). */
export const resultDeliveryMs = 5 * 60_000;
/** How long an advert claims to be valid. */
export const advertLifetimeMs = 5 * 60_000;
/** A corrupted outputs digest, for the fault-injection option: a worker that lies. */
export const corruptOutputsDigest = "bafkreicorruptedoutputsbyfaultinjectionaaaaaaaaaaaaaaaaaaaa";

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

export class NodeStartError extends CimeshError {
  constructor(message: string) {
    super("ERR_NODE_START", message);
  }
}

export class NodeRequestError extends CimeshError {
  readonly status: number;
  constructor(status: number, message: string) {
    super("ERR_NODE_REQUEST", message);
    this.status = status;
  }
}

function osRng(): Rng {
  return () => randomBytes(6).readUIntBE(0, 6) / 2 ** 48;
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

/** A DHT keyset record must be a keyset of the project it is stored under, signed as it claims (the chain is checked on use). */
function validateKeysetRecord(project: string, value: Uint8Array): void {
  const { body } = openMultiEnvelope(keysetDomain, value);
  if (body.project !== project)
    throw new NodeStartError(`keyset record: expected project ${project}, got ${body.project}`);
}

/** A DHT spec record must be a valid, unexpired capability spec under its own uuid (whose spec it is, the worker checks on use). */
function validateSpecRecord(uuid: string, value: Uint8Array): void {
  const { body } = openEnvelope(capabilitySpecDomain, value, Date.now());
  if (body.uuid !== uuid) throw new NodeStartError(`spec record: expected uuid ${uuid}, got ${body.uuid}`);
}

/** Of several keyset records, the newest: highest (rootVersion, version). */
function selectKeysetRecord(_project: string, values: readonly Uint8Array[]): number {
  let best = 0;
  let bestOrder = [-1, -1];
  values.forEach((value, index) => {
    try {
      const { body } = openMultiEnvelope(keysetDomain, value);
      const order = [body.rootVersion, body.version] as const;
      if (order[0] > (bestOrder[0] as number) || (order[0] === bestOrder[0] && order[1] > (bestOrder[1] as number))) {
        best = index;
        bestOrder = [...order];
      }
    } catch {
      // an invalid record is never the best
    }
  });
  return best;
}

/** The config file's timings win over those a stored master was created with. */
function withTiming(state: MasterState, config: NodeConfig): MasterState {
  const { leaseMs, bidWindowMs, reannounceIntervalMs } = config.timing;
  return { ...state, config: { ...state.config, leaseMs, bidWindowMs, reannounceIntervalMs } };
}

/** A serial queue: machine steps and the writes that follow them never interleave. */
function serial() {
  let tail: Promise<unknown> = Promise.resolve();
  return <T>(task: () => Promise<T>): Promise<T> => {
    const run = tail.then(task, task);
    tail = run.catch(() => undefined);
    return run;
  };
}

export async function startNode(options: StartOptions): Promise<RunningNode> {
  const keyPath = join(options.dataDir, "node.key");
  let identity: Identity;
  try {
    identity = await loadIdentity(keyPath);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") {
      throw new NodeStartError(`${keyPath} does not exist: run \`cimesh init --data-dir ${options.dataDir}\` first`);
    }
    throw error;
  }
  const config = await loadConfig(options.dataDir);
  const self = hexOf(identity.publicKey);
  const store = await openStore(join(options.dataDir, "store"));
  const ledgerState: { ledger: ReplayLedger } = { ledger: await store.loadLedger() };
  // Job inputs and outputs by content; a worker's is a cache with a quota, a master's keeps what it was given.
  const blobs: BlobStore = await openBlobStore(join(options.dataDir, "blobs"), {
    quotaBytes: options.worker && !options.master ? config.worker.cacheQuota : null,
  });
  const bans = new PeerBans();
  const rng = osRng();
  const queue = serial();
  const log = (event: string, fields: Record<string, unknown> = {}) =>
    process.stderr.write(`${JSON.stringify({ t: Date.now(), node: self.slice(0, 8), event, ...fields })}\n`);

  // Trust: the pinned projects and, for the projects this node announces for, its own keysets.
  const trust = new Map<string, ProjectTrust>();
  const shares: Record<string, number> = {};
  for (const entry of config.trust) {
    const roots = entry.roots.map((hex) => new Uint8Array(Buffer.from(hex, "hex")));
    trust.set(entry.project, trustFromAnchor({ project: entry.project, roots, threshold: entry.threshold }));
    shares[entry.project] = entry.share;
  }
  const acceptInto = (project: string, bytes: Uint8Array): boolean => {
    const current = trust.get(project);
    if (current === undefined) return false;
    try {
      trust.set(project, acceptKeyset(current, bytes, Date.now()));
      return true;
    } catch (error) {
      if (!(error instanceof KeysetRollbackError)) log("keyset-refused", { project, error: String(error) });
      return false;
    }
  };
  const masterProjects = options.master ? config.masters : [];
  for (const project of [...trust.keys()]) {
    const stored = await store.loadKeyset(project);
    if (stored !== undefined) acceptInto(project, stored);
  }
  const ownKeysets = new Map<string, Uint8Array>();
  for (const project of masterProjects) {
    const bytes = await loadProjectKeyset(options.dataDir, project);
    if (bytes === null)
      throw new NodeStartError(`no keyset for project ${project} in ${options.dataDir}: run \`cimesh project init\``);
    if (!trust.has(project))
      throw new NodeStartError(`project ${project} is a master project but not in trust: run \`cimesh trust add\``);
    if (acceptInto(project, bytes)) await store.saveKeyset(project, bytes);
    ownKeysets.set(project, bytes);
  }

  // Machines.
  const masters = new Map<string, MasterState>();
  for (const project of masterProjects)
    masters.set(project, withTiming((await store.loadMaster(project)) ?? createMaster({ project }), config));
  let worker: WorkerState | null = null;
  let sandboxProblem = "";
  let executor: Executor | null = null;
  if (options.worker) {
    await mkdir(join(options.dataDir, "work"), { recursive: true, mode: 0o700 });
    executor = createExecutor({
      workRoot: join(options.dataDir, "work"),
      allowUnsandboxed: options.allowUnsandboxed,
      allowNetwork: config.worker.allowNetwork,
      blobStore: blobs,
      onWarning: (message: string) => log("executor-warning", { message }),
    });
    const probe = await executor.probe();
    if (!probe.ok && !options.allowUnsandboxed) {
      sandboxProblem = `no sandbox: ${probe.reason}; this worker takes no job (install bubblewrap, or run with --allow-unsandboxed)`;
      log("sandbox-unavailable", { reason: probe.reason });
    }
    const stored = await store.loadWorker();
    worker = createWorker(
      self,
      {
        shares,
        dimensions: await detectDimensions(options.dataDir, config),
        specs: [],
        slots: config.worker.slots,
        allowNetwork: config.worker.allowNetwork,
        rules: config.worker.rules,
        renewIntervalMs: config.timing.renewIntervalMs,
      },
      sandboxProblem === "" ? config.worker.availability : "paused",
    );
    // Runs died with the last process (their masters re-award them after the lease); fair-share usage carries over.
    if (stored !== undefined) {
      worker.usage = stored.usage;
      worker.seq = stored.seq;
    }
  }

  const host: Host = await createHost({
    identity,
    listen: options.listen.length > 0 ? [...options.listen] : config.listen,
    bootstrap: [...options.bootstrap, ...config.bootstrap],
    ipColocationWeight: process.env.CIMESH_TEST_MESH === "1" ? 0 : undefined,
    mdns: config.mdns && process.env.CIMESH_TEST_MESH !== "1",
    recordValidators: { keyset: validateKeysetRecord, spec: validateSpecRecord },
    onRefusedStream: (from, why) => log("direct-refused", { from, why }),
    recordSelectors: { keyset: selectKeysetRecord },
  });

  await serveBlobs(host, blobs);

  /** Fetches a tree from the peers given (PeerIds or public keys) and the DHT's providers of it, verifying every blob. */
  const fetchFrom = async (
    root: string,
    hints: readonly string[],
    onProgress?: (done: number, total: number) => void,
    pin?: (cids: readonly string[]) => () => void,
  ) => {
    // A tree held whole needs no provider: a cached job must not wait on a DHT query.
    const held = (await blobs.has(root)) ? await treeBlobs(root, blobs).catch(() => null) : null;
    const fromDht =
      held !== null && held.missing.length === 0 ? [] : await host.findProviders(root).catch(() => [] as string[]);
    const providers = [
      ...hints.map((hint) => (/^[0-9a-f]{64}$/.test(hint) ? peerIdOfPublicKeyHex(hint).toString() : hint)),
      ...fromDht,
    ].filter((peerId) => peerId !== host.peerId);
    return fetchTree(host, blobs, root, providers, {
      bans,
      onProgress,
      pin,
      onDropped: (peerId, why) => log("blob-peer-dropped", { peerId, why }),
    });
  };
  /** Runs' pins on their input blobs: released when the run ends, so a running job's inputs are never evicted. */
  const inputPins = new Map<string, () => void>();
  const prepareInputs = async (runId: string, root: string, master: string, folder: string) => {
    const releases: (() => void)[] = [blobs.pin([root])];
    inputPins.set(runId, () => {
      for (const release of releases) release();
    });
    const report = await fetchFrom(root, [master], undefined, (cids) => {
      const release = blobs.pin(cids);
      releases.push(release);
      return release;
    });
    const unpacked = await unpackTree(root, blobs, folder);
    log("inputs-ready", {
      runId,
      root,
      fetchedBlobs: report.fetchedBlobs,
      fetchedBytes: report.fetchedBytes,
      totalBytes: report.totalBytes,
      files: unpacked.files,
    });
    void host.provide(root).catch(() => undefined);
  };

  const fetches = new Map<string, FetchStatus>();
  const timers = new Map<string, NodeJS.Timeout>();
  const runs = new Map<string, { master: string; project: string; jobId: string; attempt: number }>();
  let stopping = false;

  const seal = async (message: OutboundMessage): Promise<Uint8Array> => {
    const body = { ...message.body, seq: await store.nextSeq() };
    return sealEnvelope(messageDomains[message.domain] as never, body as never, identity);
  };

  /**
   * A direct message to a peer that is restarting or briefly unreachable is tried again, a bounded number of
   * times: the receiver's replay ledger makes a second delivery of the same bytes harmless.
   */
  const sendWithRetry = async (to: string, bytes: Uint8Array, domain: string): Promise<void> => {
    // A result is a whole run's work: it is tried for as long as a master takes to restart, not a few times.
    const giveUpAtMs = domain === "result" ? Date.now() + resultDeliveryMs : null;
    for (let attempt = 1; ; attempt++) {
      try {
        await host.send(to, bytes);
        return;
      } catch (error) {
        const exhausted = giveUpAtMs === null ? attempt >= maxSendAttempts : Date.now() >= giveUpAtMs;
        if (exhausted || stopping) {
          log("send-failed", { to: to.slice(0, 8), domain, attempts: attempt, error: String(error) });
          return;
        }
        await new Promise((resolve) =>
          setTimeout(resolve, Math.min(sendRetryBaseMs * 2 ** (attempt - 1), maxSendRetryWaitMs)),
        );
      }
    }
  };

  const carryOut = async (role: string, effects: readonly Effect[]): Promise<void> => {
    for (const effect of effects) {
      switch (effect.type) {
        case "publish":
          await host
            .publish(effect.topic, await seal(effect.message))
            .catch((error: unknown) => log("publish-failed", { error: String(error) }));
          break;
        case "send": {
          const bytes = await seal(effect.message);
          if (effect.message.domain === "bid")
            log("bid", { to: effect.to.slice(0, 8), jobId: (effect.message.body as { jobId?: string }).jobId });
          if (effect.to === self) {
            void deliverDirect(bytes, self);
            break;
          }
          void sendWithRetry(effect.to, bytes, effect.message.domain);
          break;
        }
        case "set-timer": {
          clearTimeout(timers.get(role));
          if (stopping) break;
          // Node's timers may fire a millisecond early: wait until the machine's clock says the time has come.
          const arm = () => {
            const delayMs = Math.max(0, Math.min(effect.atMs - Date.now(), 2 ** 31 - 1));
            timers.set(
              role,
              setTimeout(() => (Date.now() < effect.atMs ? arm() : void tick(role)), delayMs),
            );
          };
          arm();
          break;
        }
        case "start-execution":
          startRun(effect.run);
          break;
        case "kill-execution":
          executor?.kill(effect.runId, effect.reason);
          break;
        case "log":
          log(effect.event, effect.fields);
          break;
      }
    }
  };

  const toMaster = (project: string, input: MasterInput) =>
    queue(async () => {
      const state = masters.get(project);
      if (state === undefined) return;
      const { state: next, effects } = stepMaster(state, input, Date.now(), rng);
      masters.set(project, next);
      await store.saveMaster(next);
      await carryOut(`master/${project}`, effects);
    });

  const toWorker = (input: WorkerInput) =>
    queue(async () => {
      if (worker === null) return;
      const { state: next, effects } = stepWorker(worker, input, Date.now(), rng);
      worker = next;
      await store.saveWorker(next);
      await carryOut("worker", effects);
    });

  const tick = (role: string) =>
    role === "worker" ? toWorker({ kind: "tick" }) : toMaster(role.slice("master/".length), { kind: "tick" });

  const startRun = (run: Parameters<Executor["run"]>[0]) => {
    if (executor === null) return;
    const exec = executor;
    const info = worker?.running[run.runId];
    if (info === undefined) return;
    runs.set(run.runId, { master: info.master, project: run.project, jobId: run.jobId, attempt: run.attempt });
    log("execution-started", { project: run.project.slice(0, 12), jobId: run.jobId, attempt: run.attempt });
    const logQueue = serial();
    const root = run.job.inputsDigest;
    void exec
      .run(run, {
        prepare: root === null ? undefined : (folder) => prepareInputs(run.runId, root, info.master, folder),
        onLog: (chunk) => {
          void logQueue(async () => {
            const body = {
              issuedAtMs: Date.now(),
              expiresAtMs: Date.now() + 60 * 60_000,
              seq: 0,
              project: run.project,
              jobId: run.jobId,
              attempt: run.attempt,
              stream: chunk.stream,
              offset: chunk.offset,
              data: chunk.data,
            };
            const bytes = await seal({ domain: "logChunk", body } as unknown as OutboundMessage);
            await host.send(info.master, bytes).catch(() => undefined);
          });
        },
      })
      .then(async (report) => {
        await logQueue(async () => undefined);
        runs.delete(run.runId);
        inputPins.get(run.runId)?.();
        inputPins.delete(run.runId);
        if (report.outputsDigest !== null && (await blobs.has(report.outputsDigest)))
          void host.provide(report.outputsDigest).catch(() => undefined);
        const reported = options.faultInjectCorruptResults
          ? { ...report, outputsDigest: corruptOutputsDigest }
          : report;
        await toWorker({ kind: "execution-finished", report: reported });
      })
      .catch((error: unknown) => {
        runs.delete(run.runId);
        inputPins.get(run.runId)?.();
        inputPins.delete(run.runId);
        log("execution-error", { runId: run.runId, error: String(error) });
        return toWorker({
          kind: "execution-finished",
          report: {
            runId: run.runId,
            outcome: "refused",
            exitCode: null,
            outputsDigest: null,
            logDigest: null,
            summary: String(error).slice(0, 1000),
            durationMs: 0,
          },
        });
      });
  };

  /** Records the message's sequence number; false for a replay (or one too old or forgotten to judge). */
  const fresh = (verified: Verified<{ issuedAtMs: number; expiresAtMs: number; seq: number }>): boolean => {
    const outcome = recordSeq(
      ledgerState.ledger,
      verified.signer,
      verified.body.seq,
      verified.body.expiresAtMs,
      Date.now(),
    );
    ledgerState.ledger = outcome.ledger;
    if (outcome.verdict !== "fresh") return false;
    const window = ledgerState.ledger.signers.get(Buffer.from(verified.signer).toString("latin1"));
    if (window !== undefined) void store.saveLedgerEntry(verified.signer, window, ledgerState.ledger.floorExpiresAtMs);
    return true;
  };

  type Verdict = "accept" | "reject" | "ignore";
  const stale = (error: unknown): boolean =>
    error instanceof CimeshError &&
    ["ERR_EXPIRED", "ERR_NOT_YET_VALID", "ERR_KEYSET_EXPIRED", "ERR_REPLAY"].includes(error.code);

  /** A validator's verdict, with why, for the log: a refused message is always explained. */
  type Judged = { verdict: Verdict; why: string };
  const accept: Judged = { verdict: "accept", why: "" };
  const judged = (verdict: Verdict, why: string): Judged => ({ verdict, why });

  /** The gossip validator of a project topic: verifies, checks trust and replay, then hands the message to a machine. */
  const onGossip = async (project: string, bytes: Uint8Array, fromPeerId: string): Promise<Verdict> => {
    const { verdict, why } = await judgeGossip(project, bytes);
    if (verdict !== "accept" && why !== "")
      log(`gossip-${verdict}`, { project: project.slice(0, 12), from: fromPeerId, why });
    return verdict;
  };

  const judgeGossip = async (project: string, bytes: Uint8Array): Promise<Judged> => {
    let verified: Verified<{ issuedAtMs: number; expiresAtMs: number; seq: number; project?: string }>;
    try {
      verified = openAnyEnvelope(messageRegistry, bytes, Date.now()) as typeof verified;
    } catch (error) {
      if (
        error instanceof CimeshError &&
        error.code === "ERR_SCHEMA" &&
        (error as { field?: string }).field === "envelope"
      )
        return onKeyset(project, bytes); // a keyset: the one multi-signature envelope on a topic
      return judged(stale(error) ? "ignore" : "reject", String(error));
    }
    const domain = verified.domain;
    const name = messageDomainName(domain);
    const route = name === null ? null : topicRoute(name);
    if (name === null || route === null)
      return judged("reject", `${domain} is a direct message and has no business on a topic`);
    const signer = hexOf(verified.signer);
    if (route.to === "master") {
      const projects = (verified.body as unknown as WorkerAdvert).projects;
      if (!projects.includes(project))
        return judged("reject", `advert.projects: expected it to name ${project}, the topic it came on`);
      if (!fresh(verified)) return judged("ignore", "a replayed or stale advert");
      const input = masterInputOf(name, signer, verified.body);
      if (masters.has(project) && input !== null) void toMaster(project, input);
      return accept;
    }
    if (verified.body.project !== project)
      return judged("reject", `project: expected ${project}, got ${String(verified.body.project)}`);
    const projectTrust = trust.get(project);
    if (projectTrust === undefined || projectTrust.keyset === null)
      return judged("ignore", "no keyset of the project yet: cannot judge its announcer");
    try {
      checkAnnouncer(projectTrust, verified.signer, Date.now());
    } catch (error) {
      return judged(stale(error) ? "ignore" : "reject", String(error));
    }
    if (!fresh(verified)) return judged("ignore", `a replayed or stale ${domain}`);
    const input = workerInputOf(name, signer, verified.body);
    if (input?.kind === "announcement") {
      const { job } = input.announcement;
      void ensureSpecs(project, job.requiredSpecs);
      const root = job.inputsDigest;
      const cachedInputBytes =
        root !== null && worker !== null && (await blobs.has(root).catch(() => false))
          ? (await treeBlobs(root, blobs).catch(() => ({ heldBytes: 0 }))).heldBytes
          : 0;
      void toWorker({ ...input, cachedInputBytes });
    } else if (input !== null) void toWorker(input);
    return accept;
  };

  // Capability specs a job requires: found in the DHT, checked as the project's own (signed by its announcer),
  // then proven by running the spec's self-check in the sandbox. The outcome is what adverts and bids claim.
  const specClaims = new Map<string, WorkerAdvert["specs"][number]>();
  const specsInFlight = new Set<string>();
  const specMisses = new Map<string, number>();
  const ensureSpecs = async (project: string, uuids: readonly string[]) => {
    if (worker === null || executor === null || sandboxProblem !== "") return;
    for (const uuid of uuids) {
      if (specClaims.has(uuid) || specsInFlight.has(uuid)) continue;
      if (Date.now() - (specMisses.get(uuid) ?? Number.NEGATIVE_INFINITY) < specMissRetryMs) continue;
      if (specClaims.size + specsInFlight.size >= maxCheckedSpecs) {
        log("spec-skipped", { uuid, why: `already checking ${maxCheckedSpecs} specs` });
        return;
      }
      specsInFlight.add(uuid);
      try {
        const claim = await checkOneSpec(project, uuid);
        if (claim === null) {
          specMisses.set(uuid, Date.now());
          continue;
        }
        specClaims.set(uuid, claim);
        await toWorker({ kind: "specs", specs: [...specClaims.values()] });
        void advertise();
        if (claim.passed)
          void host.provide(uuid).catch((error: unknown) => log("dht-provide-failed", { uuid, error: String(error) }));
      } finally {
        specsInFlight.delete(uuid);
      }
    }
  };
  const checkOneSpec = async (project: string, uuid: string): Promise<WorkerAdvert["specs"][number] | null> => {
    const bytes = await host.getRecord("spec", uuid).catch(() => null);
    const exec = executor;
    if (bytes === null || worker === null || exec === null) {
      log("spec-not-found", { uuid });
      return null;
    }
    let spec: CapabilitySpec;
    try {
      const opened = openEnvelope(capabilitySpecDomain, bytes, Date.now());
      const projectTrust = trust.get(project);
      if (projectTrust === undefined) return null;
      checkAnnouncer(projectTrust, opened.signer, Date.now());
      spec = opened.body;
    } catch (error) {
      log("spec-refused", { uuid, why: String(error) });
      return null;
    }
    const checkedAtMs = Date.now();
    const unmet = checkSpec(spec.requirements, worker.config.dimensions);
    if (unmet.length > 0) {
      log("spec-unmet", { uuid, why: explainUnmet(unmet) });
      return { uuid, version: spec.version, passed: false, checkedAtMs };
    }
    const { spec: job } = parseJobFile(
      JSON.stringify({
        project,
        name: `self-check of ${spec.name}`,
        steps: spec.selfCheck.steps,
        timeoutMs: spec.selfCheck.timeoutMs,
      }),
      `self-check of spec ${uuid}`,
      checkedAtMs,
    );
    const report = await exec
      .run(
        { runId: `spec/${uuid}/${checkedAtMs}`, project, jobId: `spec-${uuid}`, attempt: 0, shard: 0, job, env: {} },
        { onLog: () => undefined },
      )
      .catch((error: unknown) => ({ outcome: "refused", summary: String(error) }));
    const passed = report.outcome === "succeeded";
    log("spec-checked", { uuid, version: spec.version, passed, summary: report.summary });
    return { uuid, version: spec.version, passed, checkedAtMs };
  };

  const onKeyset = async (project: string, bytes: Uint8Array): Promise<Judged> => {
    const current = trust.get(project);
    if (current === undefined) return judged("ignore", "a keyset of a project this node does not trust");
    try {
      const { body } = openMultiEnvelope(keysetDomain, bytes);
      if (body.project !== project) return judged("reject", `keyset.project: expected ${project}, got ${body.project}`);
      trust.set(project, acceptKeyset(current, bytes, Date.now()));
      await store.saveKeyset(project, bytes);
      log("keyset-accepted", { project: project.slice(0, 12), version: body.version });
      return accept;
    } catch (error) {
      if (error instanceof KeysetRollbackError) return judged("ignore", "");
      return judged(stale(error) ? "ignore" : "reject", String(error));
    }
  };

  /** A direct message: the signer must be the authenticated peer that sent it. */
  const deliverDirect = async (bytes: Uint8Array, fromKeyHex: string): Promise<void> => {
    let verified: Verified<{
      issuedAtMs: number;
      expiresAtMs: number;
      seq: number;
      project: string;
      worker?: Uint8Array;
    }>;
    try {
      verified = openAnyEnvelope(messageRegistry, bytes, Date.now()) as typeof verified;
    } catch (error) {
      log("direct-refused", { from: fromKeyHex.slice(0, 8), error: String(error) });
      return;
    }
    const signer = hexOf(verified.signer);
    if (signer !== fromKeyHex) {
      log("direct-refused", { from: fromKeyHex.slice(0, 8), error: "signer is not the sending peer" });
      return;
    }
    if (!fresh(verified)) return;
    const { domain, body } = verified;
    const project = body.project;
    const name = messageDomainName(domain);
    const side = name === null ? null : directSide(name, body, signer);
    if (name === null || side === null) {
      log("direct-refused", { from: signer.slice(0, 8), error: `${domain} is no direct message` });
      return;
    }
    if (side === "master") {
      if (!masters.has(project)) return;
      const input = masterInputOf(name, signer, body);
      if (input !== null) void toMaster(project, input);
      else if (name === "logChunk") void onLogChunk(signer, body as never);
      return;
    }
    const projectTrust = trust.get(project);
    if (projectTrust === undefined) return;
    try {
      checkAnnouncer(projectTrust, verified.signer, Date.now());
    } catch (error) {
      log("direct-refused", { from: signer.slice(0, 8), error: String(error) });
      return;
    }
    const input = workerInputOf(name, signer, body);
    if (input !== null) void toWorker(input);
  };

  const onLogChunk = async (
    signer: string,
    chunk: {
      project: string;
      jobId: string;
      attempt: number;
      stream: "stdout" | "stderr";
      offset: number;
      data: Uint8Array;
    },
  ) => {
    const job = masters.get(chunk.project)?.jobs[chunk.jobId];
    const attempt = job?.attempts[chunk.attempt];
    if (attempt === undefined || attempt.worker !== signer) return; // only the worker the attempt was awarded to writes its log
    await store.putLogChunk(chunk.jobId, chunk);
  };

  host.onDirect((bytes, fromPeerId) => deliverDirect(bytes, publicKeyHexOf(fromPeerId)));
  const topics = new Set<string>([...trust.keys()]);
  for (const project of topics) host.subscribe(project, (bytes, fromPeerId) => onGossip(project, bytes, fromPeerId));

  // Keysets travel as DHT records (found by anyone, any time) and on the topic (fast, for rotations and revocations).
  // The same keyset bytes have the same gossip message id, so the topic carries each version once.
  const publishKeysets = async () => {
    for (const [project, bytes] of ownKeysets) {
      await host
        .putRecord("keyset", project, bytes)
        .catch((error: unknown) => log("dht-put-failed", { project: project.slice(0, 12), error: String(error) }));
      await host.publish(project, bytes).catch(() => undefined);
    }
  };
  const publishSpecs = async () => {
    if (masters.size === 0) return;
    for (const bytes of await loadPublishedSpecs(options.dataDir)) {
      try {
        const { body } = openEnvelope(capabilitySpecDomain, bytes, Date.now());
        await host.putRecord("spec", body.uuid, bytes);
      } catch (error) {
        log("spec-publish-failed", { error: String(error) });
      }
    }
  };
  const fetchKeysets = async () => {
    for (const [project, entry] of trust) {
      if (ownKeysets.has(project)) continue;
      if (entry.keyset !== null && Date.now() - lastKeysetFetchMs < keysetRefreshMs) continue;
      const bytes = await host.getRecord("keyset", project).catch(() => null);
      if (bytes !== null) await onKeyset(project, bytes);
    }
    if ([...trust.values()].every((entry) => entry.keyset !== null)) lastKeysetFetchMs = Date.now();
  };
  let lastKeysetFetchMs = 0;
  const advertise = async () => {
    if (worker === null) return;
    const body = { ...advertOf(worker), issuedAtMs: Date.now(), expiresAtMs: Date.now() + advertLifetimeMs, seq: 0 };
    for (const project of Object.keys(shares)) {
      const bytes = await seal({ domain: "workerAdvert", body } as unknown as OutboundMessage);
      await host.publish(project, bytes).catch(() => undefined);
    }
  };
  const keysetTimer = setInterval(() => {
    void publishKeysets();
    void publishSpecs();
    void fetchKeysets();
    void fetchKeysets();
  }, config.timing.keysetRepublishMs);
  const advertTimer = setInterval(() => void advertise(), config.timing.advertRepublishMs);
  const sendFacts = () => {
    if (worker === null) return;
    const now = new Date();
    void toWorker({
      kind: "facts",
      facts: {
        localMinuteOfDay: now.getHours() * 60 + now.getMinutes(),
        localDayOfWeek: now.getDay(),
        loadAverage: loadavg()[0] ?? 0,
      },
    });
  };
  const factsTimer = setInterval(sendFacts, factsIntervalMs);
  sendFacts();
  void publishKeysets();
  void advertise();
  // Wake every master and the worker once: timers do not survive a restart, the state does.
  for (const project of masters.keys()) void toMaster(project, { kind: "tick" });
  if (worker !== null) void toWorker({ kind: "tick" });
  log("started", {
    peerId: host.peerId,
    addresses: host.multiaddrs(),
    masters: [...masters.keys()],
    worker: worker !== null,
  });

  const summary = (project: string, job: JobRecord): JobSummary => ({
    project,
    jobId: job.jobId,
    name: job.spec.name,
    status: job.status,
    reason: job.reason,
    submittedAtMs: job.submittedAtMs,
    endedAtMs: job.endedAtMs,
    runsAwarded: job.attempts.length,
    runsLive: job.attempts.filter((attempt) => attempt.state === "running").length,
  });
  const findJob = (jobId: string): [string, JobRecord] | null => {
    for (const [project, state] of masters) {
      const job = state.jobs[jobId];
      if (job !== undefined) return [project, job];
    }
    return null;
  };

  const status = async (): Promise<NodeStatus> => ({
    peerId: host.peerId,
    publicKey: self,
    addresses: host.multiaddrs(),
    roles: { master: [...masters.keys()], worker: worker !== null },
    availability: worker?.availability ?? null,
    running: worker === null ? 0 : Object.keys(worker.running).length,
    slots: worker?.config.slots ?? 0,
    peers: host.peerCount(),
    peerScores: host.scores(),
    trusted: [...trust.entries()].map(([project, entry]) => ({
      project,
      share: shares[project] ?? 0,
      keysetVersion: entry.keyset === null ? null : `${entry.keyset.rootVersion}.${entry.keyset.version}`,
    })),
  });

  return {
    peerId: host.peerId,
    addresses: () => host.multiaddrs(),
    status,
    async submit(project: string, jobId: string, spec: JobSpec) {
      if (!masters.has(project))
        throw new NodeRequestError(
          400,
          `project: expected one this node is master for (${[...masters.keys()].join(", ") || "none: start with --master"}), got ${project}`,
        );
      const id = jobId === "" ? `job-${randomBytes(6).toString("hex")}` : jobId;
      if (findJob(id) !== null)
        throw new NodeRequestError(409, `jobId: expected a new id, ${id} was already submitted`);
      if (spec.inputsDigest !== null) {
        if (!(await blobs.has(spec.inputsDigest)))
          throw new NodeRequestError(
            400,
            `inputsDigest: expected the tree ${spec.inputsDigest} in this node's blob store (cimesh submit packs a job's inputs folder there)`,
          );
        void host.provide(spec.inputsDigest).catch(() => undefined);
      }
      await toMaster(project, { kind: "submit", jobId: id, job: spec });
      const job = masters.get(project)?.jobs[id];
      if (job === undefined) throw new NodeRequestError(500, `job ${id} was not stored`);
      return summary(project, job);
    },
    async jobs() {
      return [...masters.entries()].flatMap(([project, state]) =>
        Object.values(state.jobs).map((job) => summary(project, job)),
      );
    },
    async job(jobId: string): Promise<JobDetail | null> {
      const found = findJob(jobId);
      if (found === null) return null;
      const [project, job] = found;
      return {
        ...summary(project, job),
        spec: job.spec,
        attempts: job.attempts.map((attempt) => ({
          attempt: attempt.attempt,
          shard: attempt.shard,
          worker: attempt.worker,
          state: attempt.state,
          outcome: attempt.outcome,
          exitCode: attempt.exitCode,
          outputsDigest: attempt.outputsDigest,
          resultDigest: attempt.digest,
          logDigest: attempt.logDigest,
          summary: attempt.summary,
        })),
        acceptedDigests: job.shards.map((shard) => shard.decidedDigest),
      };
    },
    async logs(jobId: string): Promise<LogLine[]> {
      const chunks = await store.logChunks(jobId);
      return chunks.map((chunk) => ({
        attempt: chunk.attempt,
        stream: chunk.stream,
        offset: chunk.offset,
        text: Buffer.from(chunk.data).toString("utf8"),
      }));
    },
    async explain(jobId: string) {
      const found = findJob(jobId);
      if (found === null) throw new NodeRequestError(404, `job ${jobId}: no such job on this node`);
      const state = masters.get(found[0]) as MasterState;
      const text = explainJob(state, jobId, Date.now());
      const specs = found[1].spec.requiredSpecs;
      if (found[1].status !== "open" || specs.length === 0) return text;
      const lines = await Promise.all(
        specs.map(async (uuid) => {
          const providers = await host.findProviders(uuid).catch(() => []);
          return `spec ${uuid}: ${providers.length} worker(s) provide it in the DHT`;
        }),
      );
      return [text, ...lines].join("\n");
    },
    async cancel(jobId: string, reason: string) {
      const found = findJob(jobId);
      if (found === null) throw new NodeRequestError(404, `job ${jobId}: no such job on this node`);
      await toMaster(found[0], { kind: "cancel", jobId, reason });
      return summary(found[0], masters.get(found[0])?.jobs[jobId] as JobRecord);
    },
    async setAvailability(availability: Availability) {
      if (worker === null)
        throw new NodeRequestError(400, "availability: this node is not a worker (start it with --worker)");
      if (sandboxProblem !== "" && availability !== "paused" && availability !== "offline") {
        throw new NodeRequestError(409, sandboxProblem);
      }
      await toWorker({ kind: "set-availability", availability });
      void advertise();
      return status();
    },
    async startFetch(root: string, destination: string, providers: readonly string[]) {
      if (!isAbsolute(destination))
        throw new NodeRequestError(400, `destination: expected an absolute path, got ${destination}`);
      const existing = await readdir(destination).catch((error: NodeJS.ErrnoException) =>
        error.code === "ENOENT" ? [] : Promise.reject(error),
      );
      if (existing.length > 0)
        throw new NodeRequestError(409, `destination: expected an absent or empty folder, ${destination} holds files`);
      const id = `fetch-${randomBytes(6).toString("hex")}`;
      const record: { -readonly [K in keyof FetchStatus]: FetchStatus[K] } = {
        id,
        root,
        destination,
        state: "fetching",
        doneBytes: 0,
        totalBytes: 0,
        fetchedBytes: 0,
        files: 0,
        error: "",
      };
      fetches.set(id, record);
      while (fetches.size > maxFetchRecords) fetches.delete(fetches.keys().next().value as string);
      void (async () => {
        const release = blobs.pin([root]);
        try {
          const report = await fetchFrom(root, providers, (done, total) => {
            record.doneBytes = done;
            record.totalBytes = total;
          });
          record.fetchedBytes = report.fetchedBytes;
          const unpacked = await unpackTree(root, blobs, destination);
          record.files = unpacked.files;
          record.doneBytes = record.totalBytes;
          record.state = "done";
        } catch (error) {
          record.error = String(error);
          record.state = "failed";
        } finally {
          release();
        }
      })();
      return { ...record };
    },
    async fetchStatus(id: string) {
      const record = fetches.get(id);
      return record === undefined ? null : { ...record };
    },
    async stop() {
      stopping = true;
      clearInterval(keysetTimer);
      clearInterval(advertTimer);
      clearInterval(factsTimer);
      for (const timer of timers.values()) clearTimeout(timer);
      for (const runId of runs.keys()) executor?.kill(runId, "the node is stopping");
      await queue(async () => undefined);
      await host.stop();
      await store.close();
    },
  };
}
