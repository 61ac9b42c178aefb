/**
 * Admission: the one door every inbound message goes through, gossip or
 * direct, in a real node and in the simulator alike (the shape of h11's
 * `_process_event`). Given the channel it came on, what opening its bytes
 * gave (crypto/: size, canonical form, domain, schema, signature, time), the
 * node's trust, its replay ledger and the time, it returns a verdict with a
 * reason, the machine inputs to step, and what changed of the ledger and the
 * trust. It does no I/O and reads no clock (DESIGN.md, Rule 1).
 *
 * The rules, in the order they are checked:
 * 1. Unreadable bytes: stale (expired, not yet valid) is ignored, anything
 *    else (oversize, malformed, bad signature) is rejected as forged.
 * 2. A keyset (on a project topic, or a DHT record under a project) is
 *    accepted into that project's trust only as crypto/keyset.ts allows: a
 *    newer version signed by the current roots; an older one is ignored.
 * 3. On a topic: only announcements, verdicts and cancels travel
 *    (jobs/routing.ts); each must name the topic's project and be signed by
 *    an announcer of the project's keyset.
 * 4. Direct: the signer must be the authenticated peer that sent it; the
 *    master takes offers, bids, results, log chunks and a worker's lease
 *    renewals for the projects it is master of; the worker takes awards,
 *    rejects, cancels, renewals and acknowledgements only from an announcer of
 *    a project it trusts. A keyset may come directly too (rule 2). A report
 *    (a push-only build) goes to the report desk of the project it names,
 *    which keeps a replay ledger of its own (jobs/reports.ts); the answer to a
 *    report goes to the node's reporter, from an announcer of the project.
 * 5. The signature, only now: opening checked size, form, schema and time,
 *    and the rules above need no verification, so what fails them costs a
 *    decode, not a signature check. A bad signature is a forgery.
 * 6. The replay ledger last, so nothing forged ever fills it, and only for
 *    messages signed by an announcer of a project this node trusts: a number
 *    of keys the keysets bound, which no outsider can add to, so no outsider
 *    can evict a signer and raise the ledger's floor. A message a worker
 *    machine takes must carry a sequence number not seen before from its
 *    signer. What workers sign needs no ledger: a direct message's signer is
 *    the authenticated peer that sent it (no third party can send it again),
 *    and an offer is state, not an event (the master keeps a worker's newest
 *    and drops older ones). A message this node only relays (gossip for
 *    others) is accepted without a ledger entry: it changes nothing here, and
 *    each receiver's own ledger judges it.
 *
 * Reject answers forgeries (gossipsub lowers the sender's score); Ignore
 * answers what is merely stale, duplicated or not for this node.
 *
 * A worker's message to a master carries what trust says of its signer (a
 * trusted runner of the project: its results anchor a quorum) and the network
 * prefix of the connection it came on (replicas go to distinct prefixes).
 */
import {
  acceptKeyset,
  CimeshError,
  checkAnnouncer,
  type KeysetBody,
  KeysetExpiredError,
  KeysetRollbackError,
  keysetProjectOf,
  maxClockSkewMs,
  type ProjectTrust,
  type ReplayLedger,
  recordSeq,
  type SignerWindow,
} from "../crypto/index.ts";
import { hexOf as hexOfKey } from "./effects.ts";
import type { MasterInput } from "./master.ts";
import type { ReportDeskInput, ReporterInput } from "./reports.ts";
import {
  directSide,
  masterInputOf,
  messageDomainName,
  type SenderFacts,
  topicRoute,
  workerInputOf,
} from "./routing.ts";
import type { WorkerInput } from "./worker.ts";

/** Where a message came from. */
export type Channel =
  /** Gossip on a project's topic (the topic is the project id). */
  | { readonly kind: "topic"; readonly topic: string }
  /**
   * A direct stream from the peer whose key (hex) the transport authenticated; `prefix` is the network prefix of the
   * connection (an IPv4 /24 or IPv6 /48, as text), empty when unknown.
   */
  | {
      readonly kind: "direct";
      readonly peer: string;
      readonly prefix?: string;
      /**
       * Set only by the shell core for a node's message to itself (its master and its worker share one key): which
       * machine takes it, where the signer cannot tell (a lease renewal names the worker both ways).
       */
      readonly to?: "master" | "worker";
    }
  /** A keyset record found in the DHT under a project's id. */
  | { readonly kind: "record"; readonly project: string };

/** The header every signed body carries, and the fields admission reads. */
export interface SignedBody {
  readonly issuedAtMs: number;
  readonly expiresAtMs: number;
  readonly seq: number;
  readonly project?: string;
  readonly projects?: readonly string[];
  readonly worker?: Uint8Array;
}

/** What opening a message's bytes gave: the shell opens (crypto/), admission judges. */
export type Opened =
  | {
      readonly kind: "message";
      readonly tag: string;
      readonly signer: Uint8Array;
      readonly body: SignedBody;
      /** Whether the signature verifies, asked only once the cheaper rules pass; absent when opening verified it. */
      readonly signatureValid?: () => boolean;
    }
  | { readonly kind: "keyset"; readonly bytes: Uint8Array }
  | { readonly kind: "unreadable"; readonly error: unknown };

export type AdmissionVerdict = "accept" | "reject" | "ignore";

/** Why, in one word a log line or a metric can count. */
export const admissionReasons = [
  "taken",
  "relayed",
  "keyset-accepted",
  "forged",
  "stale",
  "replay",
  "unknown-domain",
  "not-on-topic",
  "not-direct",
  "wrong-project",
  "signer-not-sender",
  "untrusted-signer",
  "untrusted-project",
  "no-keyset-yet",
  "keyset-expired",
  "no-machine",
  "keyset-old",
  "keyset-refused",
] as const;
export type AdmissionReason = (typeof admissionReasons)[number];

/** A machine input admission produced: for the master of a project, or for the node's worker. */
export type Delivery =
  | { readonly machine: "master"; readonly project: string; readonly input: MasterInput }
  | { readonly machine: "worker"; readonly input: WorkerInput }
  /** A push-only build's report, for the report desk of the project this node is master of (jobs/reports.ts). */
  | { readonly machine: "desk"; readonly project: string; readonly input: ReportDeskInput }
  /** A master's answer to a report this node sent: every node has a reporter. */
  | { readonly machine: "reporter"; readonly input: ReporterInput };

export interface AdmissionContext {
  readonly trust: ReadonlyMap<string, ProjectTrust>;
  readonly ledger: ReplayLedger;
  /** Whether this node is master of the project. */
  readonly isMasterOf: (project: string) => boolean;
  /** Whether this node runs a worker. */
  readonly hasWorker: boolean;
}

export interface Admission {
  readonly verdict: AdmissionVerdict;
  readonly reason: AdmissionReason;
  /** Words for a log line; empty when there is nothing worth logging (accepted, or a keyset seen again). */
  readonly detail: string;
  readonly deliveries: readonly Delivery[];
  /** The ledger to use next (updated in place, as crypto/ledger.ts does). */
  readonly ledger: ReplayLedger;
  /** The signer whose replay window changed, with its key in the ledger and the window: the shell core persists it. */
  readonly ledgerEntry: {
    readonly signer: Uint8Array;
    readonly key: string;
    readonly window: SignerWindow;
  } | null;
  /** A keyset accepted into a project's trust, to use and persist. Null when none was. */
  readonly keyset: { readonly project: string; readonly trust: ProjectTrust; readonly bytes: Uint8Array } | null;
}

/** Keys as hex, remembered per key object: a simulated node's signer is one object, met once per message. */
const hexOfKeys = new WeakMap<Uint8Array, string>();
function hexOf(key: Uint8Array): string {
  let hex = hexOfKeys.get(key);
  if (hex === undefined) {
    hex = hexOfKey(key);
    hexOfKeys.set(key, hex);
  }
  return hex;
}

const staleCodes = new Set(["ERR_EXPIRED", "ERR_NOT_YET_VALID", "ERR_KEYSET_EXPIRED", "ERR_REPLAY"]);

/** Whether an error only says the message is out of its time (ignored), rather than forged (rejected). */
export function isStale(error: unknown): boolean {
  return error instanceof CimeshError && staleCodes.has(error.code);
}

function judged(
  context: AdmissionContext,
  verdict: AdmissionVerdict,
  reason: AdmissionReason,
  detail: string,
): Admission {
  return { verdict, reason, detail, deliveries: [], ledger: context.ledger, ledgerEntry: null, keyset: null };
}

/** Judges one inbound message. Pure: the same arguments give the same admission. */
export function admit(channel: Channel, opened: Opened, context: AdmissionContext, nowMs: number): Admission {
  switch (opened.kind) {
    case "unreadable":
      return isStale(opened.error)
        ? judged(context, "ignore", "stale", String(opened.error))
        : judged(context, "reject", "forged", String(opened.error));
    case "keyset":
      return admitKeyset(channel, opened.bytes, context, nowMs);
    case "message":
      if (channel.kind === "topic") return admitOnTopic(channel.topic, opened, context, nowMs);
      if (channel.kind === "direct")
        return admitDirect(channel.peer, channel.prefix ?? "", opened, context, nowMs, channel.to);
      return judged(context, "reject", "not-on-topic", "a DHT record holds keysets only");
  }
}

/**
 * A keyset on a topic, in the DHT or pushed directly by a peer (a master hands its projects' keysets to each peer it
 * meets, so a fresh worker learns the project's masters at once): whichever way it came, only the project's roots
 * make it count. A direct one names its project in the keyset itself.
 */
function admitKeyset(channel: Channel, bytes: Uint8Array, context: AdmissionContext, nowMs: number): Admission {
  const project =
    channel.kind === "topic" ? channel.topic : channel.kind === "record" ? channel.project : keysetProjectOf(bytes);
  if (project === null) return judged(context, "reject", "keyset-refused", "a keyset that names no project");
  const current = context.trust.get(project);
  if (current === undefined) return judged(context, "ignore", "untrusted-project", `${project} is not pinned here`);
  try {
    const trust = acceptKeyset(current, bytes, nowMs);
    return { ...judged(context, "accept", "keyset-accepted", ""), keyset: { project, trust, bytes } };
  } catch (error) {
    // Keysets are republished on the topic all the time: seeing the trusted one again is routine, not worth a log line.
    if (error instanceof KeysetRollbackError) return judged(context, "ignore", "keyset-old", "");
    // Honest peers pass on the keyset they hold, expired or not: not worth a charge.
    if (error instanceof KeysetExpiredError) return judged(context, "ignore", "keyset-expired", String(error));
    return isStale(error)
      ? judged(context, "ignore", "stale", String(error))
      : judged(context, "reject", "keyset-refused", String(error));
  }
}

type OpenedMessage = Extract<Opened, { kind: "message" }>;

/** An announcer check's failure as a verdict, or null when the signer is an announcer of the project now. */
function announcerProblem(
  project: string,
  signer: Uint8Array,
  context: AdmissionContext,
  nowMs: number,
): Admission | null {
  const trust = context.trust.get(project);
  if (trust === undefined) return judged(context, "ignore", "untrusted-project", `${project} is not pinned here`);
  if (trust.keyset === null)
    return judged(context, "ignore", "no-keyset-yet", `no keyset of ${project} yet: its announcers are unknown`);
  try {
    checkAnnouncer(trust, signer, nowMs);
    return null;
  } catch (error) {
    // This node's own keyset of the project ran out: the sender did nothing wrong, it is this node that is behind.
    if (error instanceof KeysetExpiredError)
      return judged(context, "ignore", "keyset-expired", `the trusted keyset of ${project} has expired: ${error}`);
    return isStale(error)
      ? judged(context, "ignore", "stale", String(error))
      : judged(context, "reject", "untrusted-signer", String(error));
  }
}

function admitOnTopic(topic: string, opened: OpenedMessage, context: AdmissionContext, nowMs: number): Admission {
  const name = messageDomainName(opened.tag);
  if (name === null) return judged(context, "reject", "unknown-domain", `${opened.tag} is no message of jobs/`);
  const route = topicRoute(name);
  if (route === null) return judged(context, "reject", "not-on-topic", `${name} is a direct message`);
  const { body, signer } = opened;
  const signerHex = hexOf(signer);
  if (body.project !== topic)
    return judged(
      context,
      "reject",
      "wrong-project",
      `${name}.project: expected ${topic}, got ${String(body.project)}`,
    );
  const problem = announcerProblem(topic, signer, context, nowMs) ?? signatureProblem(context, opened, name);
  if (problem !== null) return problem;
  if (!context.hasWorker) return judged(context, "accept", "relayed", "");
  const input = workerInputOf(name, signerHex, body);
  return taken(context, opened, input === null ? [] : [{ machine: "worker", input }], nowMs);
}

function admitDirect(
  peer: string,
  prefix: string,
  opened: OpenedMessage,
  context: AdmissionContext,
  nowMs: number,
  to?: "master" | "worker",
): Admission {
  const name = messageDomainName(opened.tag);
  if (name === null) return judged(context, "reject", "unknown-domain", `${opened.tag} is no message of jobs/`);
  const { body, signer } = opened;
  const signerHex = hexOf(signer);
  if (signerHex !== peer)
    return judged(
      context,
      "reject",
      "signer-not-sender",
      `${name}: signed by ${signerHex.slice(0, 16)}…, sent by ${peer.slice(0, 16)}…`,
    );
  if (name === "report" || name === "reportAck")
    return admitReportMessage(name, signerHex, prefix, opened, context, nowMs);
  const side = directSide(name, body, signerHex) === null ? null : (to ?? directSide(name, body, signerHex));
  if (side === null) return judged(context, "reject", "not-direct", `${name} travels on a topic`);
  const project = body.project ?? "";
  if (side === "master") {
    if (!context.isMasterOf(project)) return judged(context, "ignore", "no-machine", `not master of ${project}`);
    const forged = signatureProblem(context, opened, name);
    if (forged !== null) return forged;
    const input = masterInputOf(name, signerHex, body, senderFacts(context, project, signerHex, prefix, nowMs));
    return takenUnledgered(context, input === null ? [] : [{ machine: "master", project, input }]);
  }
  if (!context.hasWorker) return judged(context, "ignore", "no-machine", "this node runs no worker");
  const problem = announcerProblem(project, signer, context, nowMs) ?? signatureProblem(context, opened, name);
  if (problem !== null) return problem;
  const input = workerInputOf(name, signerHex, body);
  return taken(context, opened, input === null ? [] : [{ machine: "worker", input }], nowMs);
}

/**
 * A report goes to the desk of the project it names, on a node that is its master; the desk judges it (policy, its
 * own replay ledger, rate limits). A report's answer must come from an announcer of a project this node pins and is
 * ledgered like everything announcers sign; every node has a reporter to take it.
 */
function admitReportMessage(
  name: "report" | "reportAck",
  signer: string,
  prefix: string,
  opened: OpenedMessage,
  context: AdmissionContext,
  nowMs: number,
): Admission {
  const project = opened.body.project ?? "";
  if (name === "report") {
    if (!context.isMasterOf(project)) return judged(context, "ignore", "no-machine", `not master of ${project}`);
    const forged = signatureProblem(context, opened, name);
    if (forged !== null) return forged;
    const report = opened.body as unknown as ReportDeskInput["report"];
    return takenUnledgered(context, [{ machine: "desk", project, input: { kind: "report", signer, prefix, report } }]);
  }
  const problem = announcerProblem(project, opened.signer, context, nowMs) ?? signatureProblem(context, opened, name);
  if (problem !== null) return problem;
  const ack = opened.body as unknown as Extract<ReporterInput, { kind: "ack" }>["ack"];
  return taken(context, opened, [{ machine: "reporter", input: { kind: "ack", signer, ack } }], nowMs);
}

/** A bad signature as a verdict (a forgery), or null when it verifies or opening already verified it. */
function signatureProblem(context: AdmissionContext, opened: OpenedMessage, name: string): Admission | null {
  if (opened.signatureValid === undefined || opened.signatureValid()) return null;
  return judged(context, "reject", "forged", `${name}: the signature does not verify`);
}

/** Each keyset's runners and announcers with their expiry, by hex key: looked up once per worker message. */
const runnerTables = new WeakMap<KeysetBody, Map<string, number>>();

function isTrustedRunner(trust: ProjectTrust | undefined, signer: string, nowMs: number): boolean {
  const keyset = trust?.keyset ?? null;
  if (keyset === null || keyset.expiresAtMs + maxClockSkewMs < nowMs) return false;
  let table = runnerTables.get(keyset);
  if (table === undefined) {
    table = new Map();
    for (const entry of [...keyset.announcers, ...(keyset.runners ?? [])]) {
      const key = hexOfKey(entry.key);
      table.set(key, Math.max(table.get(key) ?? 0, entry.expiresAtMs));
    }
    runnerTables.set(keyset, table);
  }
  const expiresAtMs = table.get(signer);
  return expiresAtMs !== undefined && expiresAtMs + maxClockSkewMs >= nowMs;
}

function senderFacts(
  context: AdmissionContext,
  project: string,
  signer: string,
  prefix: string,
  nowMs: number,
): SenderFacts {
  return { runner: isTrustedRunner(context.trust.get(project), signer, nowMs), prefix };
}

/** A worker's message the master takes: no ledger (see rule 6). */
function takenUnledgered(context: AdmissionContext, deliveries: readonly Delivery[]): Admission {
  return { ...judged(context, "accept", "taken", ""), deliveries };
}

/** The last check, for a message a worker machine here takes: its sequence number must be new from its signer. */
function taken(
  context: AdmissionContext,
  opened: OpenedMessage,
  deliveries: readonly Delivery[],
  nowMs: number,
): Admission {
  const { body, signer } = opened;
  const outcome = recordSeq(context.ledger, signer, body.seq, body.expiresAtMs, nowMs);
  if (outcome.verdict !== "fresh")
    return {
      ...judged(context, "ignore", "replay", `seq ${body.seq} of ${hexOf(signer).slice(0, 16)}…: ${outcome.verdict}`),
      ledger: outcome.ledger,
    };
  return {
    verdict: "accept",
    reason: "taken",
    detail: "",
    deliveries,
    ledger: outcome.ledger,
    ledgerEntry: outcome.recorded === undefined ? null : { signer, ...outcome.recorded },
    keyset: null,
  };
}
