/**
 * What a node keeps in and takes from the DHT: keysets (records under the
 * project id, the newest valid one wins), capability specs (records under
 * their uuid), and the self-checks that turn a spec into a claim a worker may
 * advertise. What is accepted is decided in crypto/ and jobs/ (acceptKeyset,
 * through the driver's admission and here, checkSpec, checkAnnouncer); this
 * file fetches and runs.
 *
 * A keyset record is stored, passed on and chosen only if this node could
 * believe it (keysetRecordRules): for a project it pins, it must follow from
 * the node's trust by crypto/'s acceptKeyset (the chain from the pinned
 * roots: signed by the current root threshold, newer, unexpired, not
 * future-dated) or be the keyset the node trusts now; for any other project,
 * it must be unexpired, not future-dated and signed by the threshold of its
 * own roots. The selector chooses among those only, so kad never spreads a
 * record a node would refuse.
 */
import {
  type CapabilitySpec,
  capabilitySpecDomain,
  checkSpec,
  explainUnmet,
  type WorkerAdvert,
} from "../../capabilities/index.ts";
import {
  acceptKeyset,
  checkAnnouncer,
  type KeysetBody,
  KeysetRollbackError,
  keysetDomain,
  openEnvelope,
  openMultiEnvelope,
  type ProjectTrust,
  trustFromAnchor,
} from "../../crypto/index.ts";
import { hexOf, type NodeDriver } from "../../jobs/index.ts";
import { loadPublishedSpecs, parseJobFile } from "../files/index.ts";
import { type Host, NoDhtPeersError } from "../host/index.ts";
import type { Executor } from "../sandbox/index.ts";
import { NodeStartError } from "./errors.ts";
import type { NodeLog } from "./ports.ts";

/** Capability specs a worker checks at most; each is a self-check run in the sandbox. */
export const maxCheckedSpecs = 64;
/** After a spec was not found in the DHT, how long before it is looked for again. */
export const specMissRetryMs = 30_000;
/** How often a node with every keyset it needs looks in the DHT for a newer one (one it lacks: every timing.keysetRepublishMs). */
export const keysetRefreshMs = 5 * 60_000;

/**
 * The validator and selector of keyset records, against the node's trust of the moment (the driver's, once made).
 * validate throws the crypto/ error that says why a record is refused.
 */
export function keysetRecordRules(trustOf: () => ReadonlyMap<string, ProjectTrust>, nowMs: () => number = Date.now) {
  const validate = (project: string, value: Uint8Array): KeysetBody => {
    const trust = trustOf().get(project);
    if (trust !== undefined) return validatePinned(trust, value, nowMs());
    return validateUnpinned(project, value, nowMs());
  };
  return {
    validate(project: string, value: Uint8Array): void {
      validate(project, value);
    },
    /** Of several keyset records, the newest valid one: highest (rootVersion, version); 0 when none is valid. */
    select(project: string, values: readonly Uint8Array[]): number {
      let best = 0;
      let bestOrder: readonly [number, number] = [-1, -1];
      values.forEach((value, index) => {
        let body: KeysetBody;
        try {
          body = validate(project, value);
        } catch {
          return; // a record the validator refuses is never the best
        }
        const newer =
          body.rootVersion > bestOrder[0] || (body.rootVersion === bestOrder[0] && body.version > bestOrder[1]);
        if (newer) {
          best = index;
          bestOrder = [body.rootVersion, body.version];
        }
      });
      return best;
    },
  };
}

/**
 * A pinned project's keyset record: one this node would accept now (acceptKeyset: the chain from its trust), or one
 * of the same version as the keyset it trusts, signed by the same root threshold and unexpired.
 */
function validatePinned(trust: ProjectTrust, value: Uint8Array, nowMs: number): KeysetBody {
  try {
    const accepted = acceptKeyset(trust, value, nowMs);
    return accepted.keyset as KeysetBody;
  } catch (error) {
    const current = trust.keyset;
    if (!(error instanceof KeysetRollbackError) || current === null) throw error;
    // Checked as the first keyset of a project anchored at the trusted roots would be, then its version compared.
    const same = acceptKeyset(
      trustFromAnchor({ project: trust.anchor.project, roots: current.roots, threshold: current.threshold }),
      value,
      nowMs,
    ).keyset as KeysetBody;
    if (same.rootVersion !== current.rootVersion || same.version !== current.version) throw error;
    return same;
  }
}

/** A keyset record of a project this node does not pin: unexpired, not future-dated, signed by its own root threshold. */
function validateUnpinned(project: string, value: Uint8Array, nowMs: number): KeysetBody {
  // Its roots, read without verifying: acceptKeyset below checks the cheap claims first, then every signature.
  const { body } = openMultiEnvelope(keysetDomain, value, { verifySignatures: false });
  if (body.project !== project)
    throw new NodeStartError(`keyset record: expected project ${project}, got ${body.project}`);
  // Anchored at its own roots, acceptKeyset checks the time and the threshold of those roots, and nothing more.
  acceptKeyset(trustFromAnchor({ project, roots: body.roots, threshold: body.threshold }), value, nowMs);
  return body;
}

/** A DHT spec record must be a valid, unexpired capability spec under its own uuid (whose spec it is, the worker checks on use). */
export function validateSpecRecord(uuid: string, value: Uint8Array): void {
  const { body } = openEnvelope(capabilitySpecDomain, value, Date.now());
  if (body.uuid !== uuid) throw new NodeStartError(`spec record: expected uuid ${uuid}, got ${body.uuid}`);
}

/**
 * Keysets travel as DHT records (found by anyone, any time) and on the topic (fast, for rotations and revocations).
 * The same keyset bytes have the same gossip message id, so the topic carries each version once.
 */
export function keysetKeeper(options: {
  readonly host: Host;
  readonly driver: () => NodeDriver<Uint8Array>;
  readonly ownKeysets: ReadonlyMap<string, Uint8Array>;
  readonly log: NodeLog;
  /** How often publish runs (timing.keysetRepublishMs), for the line that says when it tries again. */
  readonly republishMs: number;
}) {
  const { host, driver, ownKeysets, log } = options;
  let lastFetchMs = 0;
  /** Projects whose keyset put found no DHT peer and has not been put since: said once, at info level. */
  const deferred = new Set<string>();
  return {
    /** Whether a put waits for a DHT peer: the node calls publish again when one joins. */
    waitingForDhtPeers: () => deferred.size > 0,
    async publish(): Promise<void> {
      for (const [project, bytes] of ownKeysets) {
        const short = project.slice(0, 12);
        await host.putRecord("keyset", project, bytes).then(
          () => {
            if (deferred.delete(project))
              log("dht-put-done", { level: "info", project: short, dhtPeers: host.dhtPeerCount() });
          },
          (error: unknown) => {
            // A lone master (or one whose peers speak no cimesh DHT) has nowhere to put it yet: expected, not a fault.
            if (!(error instanceof NoDhtPeersError)) {
              log("dht-put-failed", { level: "warn", project: short, error: String(error) });
              return;
            }
            if (deferred.has(project)) return;
            deferred.add(project);
            log("dht-put-deferred", {
              level: "info",
              project: short,
              peers: host.peerCount(),
              why: `no peer of the cimesh DHT yet: the keyset goes into the DHT when one joins (tried again then, and every ${options.republishMs} ms); peers this node meets get it directly meanwhile`,
            });
          },
        );
        await host.publish(project, bytes).catch(() => undefined);
      }
    },
    async fetch(): Promise<void> {
      const trust = driver().trust();
      for (const [project, entry] of trust) {
        if (ownKeysets.has(project)) continue;
        if (entry.keyset !== null && Date.now() - lastFetchMs < keysetRefreshMs) continue;
        const bytes = await host.getRecord("keyset", project).catch(() => null);
        if (bytes === null) continue;
        const admission = driver().receiveKeysetRecord(project, bytes);
        if (admission.keyset !== null) log("keyset-accepted", { project: project.slice(0, 12) });
        else if (admission.detail !== "")
          log("keyset-refused", { project, reason: admission.reason, why: admission.detail });
      }
      if ([...driver().trust().values()].every((entry) => entry.keyset !== null)) lastFetchMs = Date.now();
    },
  };
}

/** A master puts the capability specs its project published into the DHT, under their uuids. */
export async function publishSpecs(host: Host, dataDir: string, log: NodeLog): Promise<void> {
  for (const bytes of await loadPublishedSpecs(dataDir)) {
    try {
      const { body } = openEnvelope(capabilitySpecDomain, bytes, Date.now());
      await host.putRecord("spec", body.uuid, bytes);
    } catch (error) {
      // No DHT peer yet: the keyset's dht-put-deferred line says so once; the next round tries again.
      if (error instanceof NoDhtPeersError) return;
      log("spec-publish-failed", { error: String(error) });
    }
  }
}

type SpecClaim = WorkerAdvert["specs"][number];

/**
 * Capability specs a job requires: found in the DHT, checked as the project's own (signed by its announcer), then
 * proven by running the spec's self-check in the sandbox (in the spec's image, fetched from its signer and the DHT,
 * when it names one). The outcomes are the claims the worker machine advertises.
 */
export function specChecker(options: {
  readonly host: Host;
  readonly executor: Executor;
  readonly driver: () => NodeDriver<Uint8Array>;
  readonly log: NodeLog;
  /** Makes an image ready from a hinted peer (hex public key); without it, a spec naming an image is not met. */
  readonly prepareImage?: (image: string, hint: string) => Promise<{ root: string; release: () => void }>;
}) {
  const { host, executor, driver, log } = options;
  const claims = new Map<string, SpecClaim>();
  const inFlight = new Set<string>();
  const misses = new Map<string, number>();

  const checkOne = async (project: string, uuid: string): Promise<SpecClaim | null> => {
    const bytes = await host.getRecord("spec", uuid).catch(() => null);
    const worker = driver().workerState();
    if (bytes === null || worker === null) {
      log("spec-not-found", { uuid });
      return null;
    }
    let spec: CapabilitySpec;
    let signer: string;
    try {
      const opened = openEnvelope(capabilitySpecDomain, bytes, Date.now());
      const projectTrust = driver().trust().get(project);
      if (projectTrust === undefined) return null;
      checkAnnouncer(projectTrust, opened.signer, Date.now());
      spec = opened.body;
      signer = hexOf(opened.signer);
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
        ...(spec.image === undefined ? {} : { image: spec.image }),
      }),
      `self-check of spec ${uuid}`,
      checkedAtMs,
    );
    const image = spec.image;
    const prepareImage = options.prepareImage;
    let release = () => {};
    const report = await executor
      .run(
        { runId: `spec/${uuid}/${checkedAtMs}`, project, jobId: `spec-${uuid}`, attempt: 0, shard: 0, job, env: {} },
        {
          onLog: () => undefined,
          ...(image === undefined || prepareImage === undefined
            ? {}
            : {
                prepare: async () => {
                  const ready = await prepareImage(image, signer);
                  release = ready.release;
                  return { imageRoot: ready.root };
                },
              }),
        },
      )
      .catch((error: unknown) => ({ outcome: "refused", summary: String(error) }))
      .finally(() => release());
    const passed = report.outcome === "succeeded";
    log("spec-checked", { uuid, version: spec.version, passed, summary: report.summary });
    return { uuid, version: spec.version, passed, checkedAtMs };
  };

  return async (project: string, uuids: readonly string[]): Promise<void> => {
    for (const uuid of uuids) {
      if (claims.has(uuid) || inFlight.has(uuid)) continue;
      if (Date.now() - (misses.get(uuid) ?? Number.NEGATIVE_INFINITY) < specMissRetryMs) continue;
      if (claims.size + inFlight.size >= maxCheckedSpecs) {
        log("spec-skipped", { uuid, why: `already checking ${maxCheckedSpecs} specs` });
        return;
      }
      inFlight.add(uuid);
      try {
        const claim = await checkOne(project, uuid);
        if (claim === null) {
          misses.set(uuid, Date.now());
          continue;
        }
        claims.set(uuid, claim);
        driver().toWorker({ kind: "specs", specs: [...claims.values()] });
        if (claim.passed)
          void host.provide(uuid).catch((error: unknown) => log("dht-provide-failed", { uuid, error: String(error) }));
      } finally {
        inFlight.delete(uuid);
      }
    }
  };
}
