/**
 * The real node's ports of the shell core (jobs/driver.ts): libp2p for the
 * network, level for the store, bubblewrap (node/sandbox) for runs, the wall
 * clock and the OS's randomness. Each port carries out; none decides.
 */
import { randomBytes } from "node:crypto";
import { CimeshError, type Identity, openAnyEnvelopeUnverified, sealEnvelope } from "../../crypto/index.ts";
import {
  type DriverPorts,
  type ExecutionReport,
  type ExecutionRequest,
  type LogFields,
  messageDomains,
  messageRegistry,
  type NodeDriver,
  type Opened,
  type Rng,
  type StampedMessage,
} from "../../jobs/index.ts";
import type { Host } from "../host/index.ts";
import type { Executor, PreparedRun } from "../sandbox/index.ts";
import type { NodeStore } from "../store/index.ts";

/** Tries of one direct message before it is given up (the protocol's leases, outbox and re-announcements cover the rest). */
export const maxSendAttempts = 5;
/** Wait before the second try of a direct message; doubled for each try after, up to maxSendRetryWaitMs. */
export const sendRetryBaseMs = 500;
export const maxSendRetryWaitMs = 5_000;
/** Longest single wait of a timer (setTimeout's own limit). */
export const maxTimerWaitMs = 2 ** 31 - 1;

export function osRng(): Rng {
  return () => randomBytes(6).readUIntBE(0, 6) / 2 ** 48;
}

/**
 * Opens an inbound message: a single-signed message of jobs/, a keyset (the multi-signed envelope), or why not. The
 * signature is left for admission to ask about once the cheaper rules pass (jobs/admission.ts).
 */
export function openInbound(bytes: Uint8Array, nowMs: number): Opened {
  try {
    const opened = openAnyEnvelopeUnverified(messageRegistry, bytes, nowMs);
    return {
      kind: "message",
      tag: opened.domain,
      signer: opened.signer,
      body: opened.body as never,
      signatureValid: opened.signatureValid,
    };
  } catch (error) {
    // A keyset has the multi-signature envelope's shape, which the single-signed reader refuses as its envelope.
    if (
      error instanceof CimeshError &&
      error.code === "ERR_SCHEMA" &&
      (error as { field?: string }).field === "envelope"
    )
      return { kind: "keyset", bytes };
    return { kind: "unreadable", error };
  }
}

export type NodeLog = (event: string, fields?: Record<string, unknown>) => void;

/** How a run is carried out: the executor, and what to do before it starts (fetch and unpack inputs). */
export interface RunCarrier {
  readonly executor: Executor;
  prepare(run: ExecutionRequest, master: string, folder: string): Promise<PreparedRun | undefined>;
  /** After a run, whatever its end: release its pins, provide its outputs. */
  finished(run: ExecutionRequest, report: ExecutionReport | null): Promise<ExecutionReport | null>;
}

export interface NodePortsOptions {
  readonly identity: Identity;
  readonly host: Host;
  readonly store: NodeStore;
  readonly log: NodeLog;
  /** The driver, once made (ports are made first). */
  readonly driver: () => NodeDriver<Uint8Array>;
  readonly runs: RunCarrier | null;
  readonly inputsHeld?: (root: string) => Promise<number>;
  readonly checkSpecs?: (project: string, uuids: readonly string[]) => void;
}

export interface NodePorts extends DriverPorts<Uint8Array> {
  /** Stops the wake-up timer and the retries. */
  close(): void;
}

export function createNodePorts(options: NodePortsOptions): NodePorts {
  const { identity, host, store, log, driver, runs } = options;
  let wakeTimer: NodeJS.Timeout | undefined;
  let closed = false;

  /** A direct message to a peer that is restarting or briefly unreachable is tried again: the receiver's ledger makes a second delivery of the same bytes harmless. */
  const sendWithRetry = async (to: string, bytes: Uint8Array, domain: string): Promise<void> => {
    for (let attempt = 1; ; attempt++) {
      try {
        await host.send(to, bytes);
        return;
      } catch (error) {
        if (attempt >= maxSendAttempts || closed) {
          log("send-failed", { to: to.slice(0, 8), domain, attempts: attempt, error: String(error) });
          return;
        }
        await new Promise((resolve) =>
          setTimeout(resolve, Math.min(sendRetryBaseMs * 2 ** (attempt - 1), maxSendRetryWaitMs)),
        );
      }
    }
  };

  const startRun = (run: ExecutionRequest, master: string): void => {
    if (runs === null) return;
    log("execution-started", { project: run.project.slice(0, 12), jobId: run.jobId, attempt: run.attempt });
    void runs.executor
      .run(run, {
        prepare:
          run.job.inputsDigest === null && run.job.image === undefined
            ? undefined
            : (folder) => runs.prepare(run, master, folder),
        onLog: (chunk) => driver().runOutput(run.runId, chunk),
      })
      .then(
        (report) => runs.finished(run, report),
        (error: unknown) => {
          log("execution-error", { runId: run.runId, error: String(error) });
          void runs.finished(run, null);
          return {
            runId: run.runId,
            outcome: "refused" as const,
            exitCode: null,
            outputsDigest: null,
            logDigest: null,
            summary: String(error).slice(0, 1000),
            durationMs: 0,
          };
        },
      )
      .then((report) => {
        if (report !== null && !closed) driver().runFinished(report);
      });
  };

  return {
    nowMs: () => Date.now(),
    rng: osRng(),
    seal: (message: StampedMessage) =>
      sealEnvelope(messageDomains[message.domain] as never, message.body as never, identity),
    open: openInbound,
    publish: (topic, bytes) => {
      void host.publish(topic, bytes).catch((error: unknown) => log("publish-failed", { error: String(error) }));
    },
    send: (to, bytes, message) => {
      void sendWithRetry(to, bytes, message.domain);
    },
    wakeAt: (atMs) => {
      clearTimeout(wakeTimer);
      // Node's timers may fire a millisecond early, and wait at most maxTimerWaitMs: wait again until the time has come.
      const arm = () => {
        if (closed) return;
        const waitMs = Math.max(0, Math.min(atMs - Date.now(), maxTimerWaitMs));
        wakeTimer = setTimeout(() => (Date.now() < atMs ? arm() : driver().wake()), waitMs);
      };
      arm();
    },
    startRun,
    killRun: (runId, reason) => {
      runs?.executor.kill(runId, reason);
    },
    persist: (batch) => store.persist(batch),
    log: (event: string, fields: LogFields) => log(event, fields),
    inputsHeld: options.inputsHeld,
    checkSpecs: options.checkSpecs,
    close: () => {
      closed = true;
      clearTimeout(wakeTimer);
    },
  };
}
