/**
 * Where a signed message goes: which messages may travel on a project topic
 * and whose key must have signed them there, which machine takes a direct
 * message, and the machine input each one becomes. The protocol decides this
 * once, here; node/ and sim/ (the two shells) only carry it out.
 */
import { hexOf } from "./effects.ts";
import type { MasterInput } from "./master.ts";
import type { Award, JobAnnouncement } from "./messages.ts";
import { messageDomains } from "./messages.ts";
import type { WorkerInput } from "./worker.ts";

export type MessageDomainName = keyof typeof messageDomains;

const namesByTag = new Map<string, MessageDomainName>(
  Object.entries(messageDomains).map(([name, domain]) => [domain.tag, name as MessageDomainName]),
);

/** The name of a message domain from its envelope tag, or null for a tag of no message of jobs/. */
export function messageDomainName(tag: string): MessageDomainName | null {
  return namesByTag.get(tag) ?? null;
}

/**
 * A message on a project topic: announcements, verdicts and cancels go to workers and must be signed by an
 * announcer of the project's keyset. Anything else has no business on a topic (null): a sender that puts it there is
 * to be refused. What a worker tells masters (offers, bids, results) goes to them directly, never to every worker.
 */
export type TopicRoute = { readonly to: "worker"; readonly signer: "announcer" };

export function topicRoute(name: MessageDomainName): TopicRoute | null {
  switch (name) {
    case "jobAnnouncement":
    case "verdict":
    case "cancel":
      return { to: "worker", signer: "announcer" };
    default:
      return null;
  }
}

/**
 * The machine that takes a direct message: offers, bids, results and log chunks come from workers to the master; awards,
 * rejects, cancels and result acknowledgements from the master (an announcer) to a worker; a lease renewal goes either way, and one that
 * names its signer as the worker is the worker's asking. Null: not a direct message.
 */
export function directSide(
  name: MessageDomainName,
  body: { readonly worker?: Uint8Array },
  signer: string,
): "master" | "worker" | null {
  switch (name) {
    case "offer":
    case "bid":
    case "result":
    case "logChunk":
    case "report":
      return "master";
    case "leaseRenew":
      return body.worker !== undefined && hexOf(body.worker) === signer ? "master" : "worker";
    case "award":
    case "reject":
    case "cancel":
    case "resultAck":
    case "reportAck":
      return "worker";
    default:
      return null;
  }
}

/** What admission knows of a worker's message beyond its body: whether trust names the signer a runner, and where it came from. */
export interface SenderFacts {
  /** The signer is a trusted runner of the project (crypto/'s trustedRunnersOf). */
  readonly runner: boolean;
  /** The network prefix of the connection a direct message came on; empty when unknown (not told). */
  readonly prefix: string;
}

const unknownSender: SenderFacts = { runner: false, prefix: "" };

/** The master's input for a message it takes, or null. */
export function masterInputOf(
  name: MessageDomainName,
  signer: string,
  body: unknown,
  sender: SenderFacts = unknownSender,
): MasterInput | null {
  switch (name) {
    case "offer":
      return { kind: "offer", signer, offer: body as never, runner: sender.runner, prefix: sender.prefix };
    case "bid":
      return { kind: "bid", signer, bid: body as never, runner: sender.runner, prefix: sender.prefix };
    case "result":
      return { kind: "result", signer, result: body as never };
    case "leaseRenew":
      return { kind: "lease-renew", signer, renew: body as never };
    case "logChunk":
      return { kind: "log-chunk", signer, chunk: body as never };
    default:
      return null;
  }
}

/** The job offer a message is, or null: for a listener (a test's actor, say) that wants announcements only. */
export function announcementOf(name: MessageDomainName, body: unknown): JobAnnouncement | null {
  return name === "jobAnnouncement" ? (body as JobAnnouncement) : null;
}

/** The award a message is, or null: for a listener that answers awards only (a simulated attacker, say). */
export function awardOf(name: MessageDomainName, body: unknown): Award | null {
  return name === "award" ? (body as Award) : null;
}

/** The worker's input for a message it takes, or null. */
export function workerInputOf(name: MessageDomainName, signer: string, body: unknown): WorkerInput | null {
  switch (name) {
    case "jobAnnouncement":
      return { kind: "announcement", signer, announcement: body as never };
    case "verdict":
      return { kind: "verdict", signer, verdict: body as never };
    case "cancel":
      return { kind: "cancel", signer, cancel: body as never };
    case "award":
      return { kind: "award", signer, award: body as never };
    case "reject":
      return { kind: "reject", signer, reject: body as never };
    case "leaseRenew":
      return { kind: "lease-renew", signer, renew: body as never };
    case "resultAck":
      return { kind: "result-ack", signer, ack: body as never };
    default:
      return null;
  }
}
