/**
 * Admission (jobs/admission.ts): the one door every inbound message goes
 * through. Unit cases build real trust (a project's genesis roots, keysets
 * they sign) and real envelopes (sealed, then opened with jobs' registry as a
 * shell does), one case per rule and reason. Property tests then throw random
 * sequences of messages at a node, on any channel, from the announcer, workers
 * and strangers, with sequence numbers that repeat, signatures that do not
 * verify and time that moves on, and check admission against an oracle that
 * states the rules on its own. Messages are opened as a real node opens them
 * (crypto/'s openAnyEnvelopeUnverified): the signature is admission's to ask
 * about, after the cheaper rules.
 */
import { fc, testProp } from "@fast-check/ava";
import test, { type ExecutionContext } from "ava";
import {
  acceptKeyset,
  anchorFromGenesis,
  createReplayLedger,
  type Domain,
  type Identity,
  identityFromSeed,
  type KeysetBody,
  keysetProjectOf,
  maxClockSkewMs,
  openAnyEnvelopeUnverified,
  type ProjectTrust,
  type ReplayLedger,
  sealEnvelope,
  sealKeyset,
  trustFromAnchor,
} from "../crypto/index.ts";
import {
  type Admission,
  type AdmissionContext,
  type AdmissionReason,
  type AdmissionVerdict,
  admissionReasons,
  admit,
  type Channel,
  type Delivery,
  hexOf,
  messageDomains,
  messageRegistry,
  type Opened,
  type SignedBody,
} from "../jobs/index.ts";
import { typicalAnnouncement } from "./arbitraries.ts";

const nowMs = 1_800_000_000_000;
const minuteMs = 60_000;
const dayMs = 24 * 60 * minuteMs;

function identity(n: number): Identity {
  return identityFromSeed(new Uint8Array(32).fill(n));
}

// P is pinned with a keyset naming `announcer` and eleven more announcers (and `lapsed`, whose delegation ended); Q is
// pinned with no keyset yet; R is not pinned at all.
const rootP = identity(0x11);
const rootQ = identity(0x12);
const rootR = identity(0x13);
const announcer = identity(0x41);
const lapsed = identity(0x42);
const w1 = identity(0x61);
const w2 = identity(0x62);
const stranger = identity(0x51);
/** More announcers of P: the property with more announcers than the ledger keeps signs with them. */
const moreAnnouncers: readonly Identity[] = Array.from({ length: 11 }, (_, i) => identity(0xa0 + i));

const anchorP = anchorFromGenesis([rootP.publicKey], 1);
const anchorQ = anchorFromGenesis([rootQ.publicKey], 1);
const P = anchorP.project;
const Q = anchorQ.project;
const R = anchorFromGenesis([rootR.publicKey], 1).project;

function keysetBody(version: number, overrides: Partial<KeysetBody> = {}): KeysetBody {
  return {
    project: P,
    rootVersion: 1,
    version,
    issuedAtMs: nowMs,
    expiresAtMs: nowMs + 30 * dayMs,
    roots: [rootP.publicKey],
    threshold: 1,
    announcers: [
      { key: announcer.publicKey, label: "master", expiresAtMs: nowMs + 30 * dayMs },
      { key: lapsed.publicKey, label: "old master", expiresAtMs: nowMs - dayMs },
      ...moreAnnouncers.map((a, i) => ({
        key: a.publicKey,
        label: `master ${i + 2}`,
        expiresAtMs: nowMs + 30 * dayMs,
      })),
    ],
    ...overrides,
  };
}

const keysetV1 = sealKeyset(keysetBody(1), [rootP]);
const keysetV2 = sealKeyset(keysetBody(2), [rootP]);
const trustP = acceptKeyset(trustFromAnchor(anchorP), keysetV1, nowMs);
const trustQ = trustFromAnchor(anchorQ);
/** P's trust in a keyset that expired ten days ago (it was accepted while valid). */
const trustExpired = acceptKeyset(
  trustFromAnchor(anchorP),
  sealKeyset(keysetBody(1, { issuedAtMs: nowMs - 40 * dayMs, expiresAtMs: nowMs - 10 * dayMs }), [rootP]),
  nowMs - 20 * dayMs,
);

type Name =
  | "offer"
  | "jobAnnouncement"
  | "verdict"
  | "cancel"
  | "bid"
  | "award"
  | "reject"
  | "leaseRenew"
  | "logChunk"
  | "result"
  | "resultAck"
  | "report";

interface Header {
  readonly issuedAtMs: number;
  readonly expiresAtMs: number;
  readonly seq: number;
}

const dimensions = {
  os: "linux",
  arch: "x64",
  cores: 2,
  memoryBytes: 2 ** 32,
  diskBytes: 2 ** 34,
  tools: [],
  labels: [],
};

/** A valid body of each message type, naming `project`; `worker` is the worker an award, reject, renewal or ack names. */
function bodyOf(name: Name, header: Header, project: string, worker: Uint8Array): Record<string, unknown> {
  const job = { project, jobId: "job-1" };
  const outcome = {
    exitCode: 0,
    outcome: "succeeded",
    outputsDigest: null,
    logDigest: null,
    summary: "",
    durationMs: 1,
  };
  switch (name) {
    case "offer":
      return {
        ...header,
        project,
        freeSlots: 1,
        totalSlots: 1,
        availability: "eager",
        network: false,
        epoch: header.issuedAtMs,
        awardsSeen: 0,
        dimensions,
        specs: [],
      };
    case "jobAnnouncement":
      return { ...typicalAnnouncement(project, header.issuedAtMs), ...header };
    case "verdict":
      return { ...header, ...job, outcome: "passed", acceptedDigests: [null], agreeingWorkers: [], reason: "" };
    case "cancel":
      return { ...header, ...job, attempt: null, reason: "superseded" };
    case "bid":
      return {
        ...header,
        ...job,
        round: 0,
        availability: "eager",
        runningJobs: 0,
        freeSlots: 1,
        cachedInputBytes: 0,
      };
    case "award":
      return {
        ...header,
        ...job,
        worker,
        attempt: 0,
        shard: 0,
        shardAttempt: 0,
        leaseExpiresAtMs: header.issuedAtMs + minuteMs,
        job: typicalAnnouncement(project, header.issuedAtMs).job,
      };
    case "reject":
      return { ...header, ...job, worker, round: 0, reason: "not chosen" };
    case "leaseRenew":
      return {
        ...header,
        ...job,
        worker,
        attempt: 0,
        progressPermille: 0,
        leaseExpiresAtMs: header.issuedAtMs + minuteMs,
      };
    case "logChunk":
      return { ...header, ...job, attempt: 0, stream: "stdout", offset: 0, data: new Uint8Array([104, 105]) };
    case "result":
      return { ...header, ...job, attempt: 0, shard: 0, ...outcome };
    case "resultAck":
      return { ...header, ...job, worker, attempt: 0 };
    case "report":
      return {
        ...header,
        project,
        reportId: "report-1",
        jobName: "nightly",
        jobDigest: "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy",
        source: null,
        shard: 0,
        shards: 1,
        dimensions,
        specs: [],
        steps: [{ name: "build", outcome: "succeeded", exitCode: 0, durationMs: 1 }],
        ...outcome,
        startedAtMs: header.issuedAtMs - 2,
        endedAtMs: header.issuedAtMs - 1,
      };
  }
}

function seal(name: Name, body: Record<string, unknown>, signer: Identity): Uint8Array {
  return sealEnvelope(messageDomains[name] as Domain, body as never, signer);
}

/** How many signatures admission asked to verify, over every message `open` gave it. */
let verifications = 0;

/**
 * What a shell's opening (crypto/) gives admission, as node/runtime/ports.ts opens it: the message with every check
 * made but the signature, which admission asks about (counted in `verifications`), or why its bytes are unreadable.
 */
function open(bytes: Uint8Array, atMs: number): Opened {
  try {
    const opened = openAnyEnvelopeUnverified(messageRegistry, bytes, atMs);
    return {
      kind: "message",
      tag: opened.domain,
      signer: opened.signer,
      body: opened.body as SignedBody,
      signatureValid: () => {
        verifications++;
        return opened.signatureValid();
      },
    };
  } catch (error) {
    return { kind: "unreadable", error };
  }
}

interface MessageOptions {
  readonly signer?: Identity;
  readonly seq?: number;
  readonly project?: string;
  readonly worker?: Uint8Array;
  readonly issuedAtMs?: number;
  readonly lifetimeMs?: number;
}

/** The envelope with the last byte of its signature flipped: a forgery of its signer. */
function forgedBytes(bytes: Uint8Array): Uint8Array {
  const copy = Uint8Array.from(bytes);
  copy[copy.length - 1] = (copy[copy.length - 1] as number) ^ 1;
  return copy;
}

/**
 * A message sealed and opened at nowMs: by the announcer, seq 1, naming P, to worker w1, unless told otherwise;
 * `forged`: its signature does not verify.
 */
function message(name: Name, options: MessageOptions & { readonly forged?: boolean } = {}): Opened {
  const issuedAtMs = options.issuedAtMs ?? nowMs;
  const header = { issuedAtMs, expiresAtMs: issuedAtMs + (options.lifetimeMs ?? minuteMs), seq: options.seq ?? 1 };
  const body = bodyOf(name, header, options.project ?? P, options.worker ?? w1.publicKey);
  const bytes = seal(name, body, options.signer ?? announcer);
  return open(options.forged === true ? forgedBytes(bytes) : bytes, nowMs);
}

interface NodeOptions {
  readonly masterOf?: readonly string[];
  readonly hasWorker?: boolean;
  readonly trust?: ReadonlyMap<string, ProjectTrust>;
}

function node(options: NodeOptions = {}): AdmissionContext {
  const masterOf = options.masterOf ?? [];
  return {
    trust:
      options.trust ??
      new Map([
        [P, trustP],
        [Q, trustQ],
      ]),
    ledger: createReplayLedger(),
    isMasterOf: (project) => masterOf.includes(project),
    hasWorker: options.hasWorker ?? true,
  };
}

const topic = (project: string): Channel => ({ kind: "topic", topic: project });
const direct = (peer: Identity, prefix?: string): Channel => ({
  kind: "direct",
  peer: hexOf(peer.publicKey),
  ...(prefix === undefined ? {} : { prefix }),
});

/** A signer in words: the announcer and the two workers by name, anyone else by hex. */
function nameOf(signer: string): string {
  if (signer === hexOf(announcer.publicKey)) return "announcer";
  if (signer === hexOf(w1.publicKey)) return "w1";
  if (signer === hexOf(w2.publicKey)) return "w2";
  return signer;
}

/** A delivery in words: the machine, the project for a master, the input's kind and signer. */
function describe(delivery: Delivery): string {
  const signer = "signer" in delivery.input ? delivery.input.signer : "";
  const project =
    delivery.machine === "master" || delivery.machine === "desk"
      ? delivery.project === P
        ? " P"
        : ` ${delivery.project}`
      : "";
  return `${delivery.machine}${project} ${delivery.input.kind} by ${nameOf(signer)}`;
}

interface Case {
  readonly title: string;
  readonly channel: Channel;
  readonly opened: Opened;
  readonly node?: NodeOptions;
  /** Admitted first, on the same node: a replay needs the original before it. */
  readonly before?: readonly { readonly channel: Channel; readonly opened: Opened }[];
  readonly verdict: AdmissionVerdict;
  readonly reason: AdmissionReason;
  readonly deliveries?: readonly string[];
  /** Whether admission must ask whether the signature verifies: not when a cheaper rule already decides. */
  readonly verifies?: boolean;
}

const bidByW1 = message("bid", { signer: w1 });
/** A bid's envelope: bytes that are no keyset. */
const bidBytesByW1 = seal(
  "bid",
  bodyOf("bid", { issuedAtMs: nowMs, expiresAtMs: nowMs + minuteMs, seq: 1 }, P, w1.publicKey),
  w1,
);
const announcement = message("jobAnnouncement");

const cases: readonly Case[] = [
  // Unreadable bytes.
  {
    title: "an envelope past its expiry is ignored as stale",
    channel: topic(P),
    opened: message("jobAnnouncement", { issuedAtMs: nowMs - 10 * minuteMs, lifetimeMs: minuteMs }),
    verdict: "ignore",
    reason: "stale",
  },
  {
    title: "an envelope issued too far in the future is ignored as stale",
    channel: topic(P),
    opened: message("jobAnnouncement", { issuedAtMs: nowMs + 10 * minuteMs }),
    verdict: "ignore",
    reason: "stale",
  },
  {
    title: "an envelope whose signature does not verify is rejected as forged",
    channel: topic(P),
    opened: message("verdict", { forged: true }),
    verdict: "reject",
    reason: "forged",
    verifies: true,
  },
  {
    title: "a forged bid to the project's master is rejected as forged",
    channel: direct(w1),
    opened: message("bid", { signer: w1, forged: true }),
    node: { masterOf: [P] },
    verdict: "reject",
    reason: "forged",
    verifies: true,
  },
  {
    title: "a forged offer to the project's master is rejected as forged",
    channel: direct(w1),
    opened: message("offer", { signer: w1, forged: true }),
    node: { masterOf: [P] },
    verdict: "reject",
    reason: "forged",
    verifies: true,
  },
  {
    title: "a forged offer on a topic is not-on-topic, with no verification: no offer travels there",
    channel: topic(P),
    opened: message("offer", { signer: w1, forged: true }),
    node: { masterOf: [P] },
    verdict: "reject",
    reason: "not-on-topic",
    verifies: false,
  },
  {
    title: "a forged award to a worker is rejected as forged",
    channel: direct(announcer),
    opened: message("award", { forged: true }),
    verdict: "reject",
    reason: "forged",
    verifies: true,
  },
  {
    title: "an expired forgery is ignored as stale, with no verification",
    channel: topic(P),
    opened: message("jobAnnouncement", { issuedAtMs: nowMs - 10 * minuteMs, forged: true }),
    verdict: "ignore",
    reason: "stale",
    verifies: false,
  },
  {
    title: "a forged announcement by a key the keyset does not name is untrusted-signer, with no verification",
    channel: topic(P),
    opened: message("jobAnnouncement", { signer: stranger, forged: true }),
    verdict: "reject",
    reason: "untrusted-signer",
    verifies: false,
  },
  {
    title: "a forged bid to a node that is not the project's master is ignored, with no verification",
    channel: direct(w1),
    opened: message("bid", { signer: w1, forged: true }),
    node: { masterOf: [Q] },
    verdict: "ignore",
    reason: "no-machine",
    verifies: false,
  },
  {
    title: "a forged announcement of a project this node does not pin is ignored, with no verification",
    channel: topic(R),
    opened: message("jobAnnouncement", { project: R, forged: true }),
    verdict: "ignore",
    reason: "untrusted-project",
    verifies: false,
  },
  {
    title: "a forged bid sent by another peer than its signer is signer-not-sender, with no verification",
    channel: direct(w2),
    opened: message("bid", { signer: w1, forged: true }),
    node: { masterOf: [P] },
    verdict: "reject",
    reason: "signer-not-sender",
    verifies: false,
  },
  {
    title: "a tag that is no message of jobs/ is rejected",
    channel: topic(P),
    opened: {
      kind: "message",
      tag: "cimesh/other/v1",
      signer: announcer.publicKey,
      body: { issuedAtMs: nowMs, expiresAtMs: nowMs, seq: 1, project: P },
    },
    verdict: "reject",
    reason: "unknown-domain",
  },
  // Keysets.
  {
    title: "a newer keyset signed by the roots on the project's topic is accepted",
    channel: topic(P),
    opened: { kind: "keyset", bytes: keysetV2 },
    verdict: "accept",
    reason: "keyset-accepted",
  },
  {
    title: "the first keyset of a project pinned without one is accepted from a DHT record",
    channel: { kind: "record", project: Q },
    opened: {
      kind: "keyset",
      bytes: sealKeyset(keysetBody(1, { project: Q, roots: [rootQ.publicKey] }), [rootQ]),
    },
    verdict: "accept",
    reason: "keyset-accepted",
  },
  {
    title: "a keyset no newer than the one held is ignored: no rollback",
    channel: topic(P),
    opened: { kind: "keyset", bytes: keysetV1 },
    verdict: "ignore",
    reason: "keyset-old",
  },
  {
    title: "a keyset signed by a key that is not a root is refused",
    channel: topic(P),
    opened: { kind: "keyset", bytes: sealKeyset(keysetBody(3), [stranger]) },
    verdict: "reject",
    reason: "keyset-refused",
  },
  {
    title: "a keyset of one project on another project's topic is refused",
    channel: topic(Q),
    opened: { kind: "keyset", bytes: keysetV2 },
    verdict: "reject",
    reason: "keyset-refused",
  },
  {
    title: "an expired keyset is ignored as keyset-expired: honest peers pass on what they hold",
    channel: topic(P),
    opened: {
      kind: "keyset",
      bytes: sealKeyset(keysetBody(3, { issuedAtMs: nowMs - 40 * dayMs, expiresAtMs: nowMs - 10 * dayMs }), [rootP]),
    },
    verdict: "ignore",
    reason: "keyset-expired",
  },
  {
    title: "a keyset of a project this node does not pin is ignored",
    channel: topic(R),
    opened: { kind: "keyset", bytes: keysetV2 },
    verdict: "ignore",
    reason: "untrusted-project",
  },
  {
    title:
      "a newer keyset pushed on a direct stream, chaining to the pinned roots, is accepted into its project's trust",
    channel: direct(announcer),
    opened: { kind: "keyset", bytes: keysetV2 },
    verdict: "accept",
    reason: "keyset-accepted",
  },
  {
    title: "the first keyset of a project pinned without one is accepted from any peer that pushes it directly",
    channel: direct(stranger),
    opened: {
      kind: "keyset",
      bytes: sealKeyset(keysetBody(1, { project: Q, roots: [rootQ.publicKey] }), [rootQ]),
    },
    verdict: "accept",
    reason: "keyset-accepted",
  },
  {
    title: "a keyset pushed directly and signed by a key that is not a root is refused",
    channel: direct(stranger),
    opened: { kind: "keyset", bytes: sealKeyset(keysetBody(3), [stranger]) },
    verdict: "reject",
    reason: "keyset-refused",
  },
  {
    title: "a keyset pushed directly whose root signature does not verify is refused",
    channel: direct(announcer),
    opened: { kind: "keyset", bytes: forgedBytes(sealKeyset(keysetBody(3), [rootP])) },
    verdict: "reject",
    reason: "keyset-refused",
  },
  {
    title: "a keyset pushed directly naming a project but signed with another project's roots is refused",
    channel: direct(stranger),
    opened: { kind: "keyset", bytes: sealKeyset(keysetBody(3, { roots: [rootQ.publicKey] }), [rootQ]) },
    verdict: "reject",
    reason: "keyset-refused",
  },
  {
    title: "a keyset pushed directly for a project pinned without one, under another project's roots, is refused",
    channel: direct(stranger),
    opened: { kind: "keyset", bytes: sealKeyset(keysetBody(1, { project: Q }), [rootP]) },
    verdict: "reject",
    reason: "keyset-refused",
  },
  {
    title: "a keyset pushed directly no newer than the one held is ignored: no rollback",
    channel: direct(announcer),
    opened: { kind: "keyset", bytes: keysetV1 },
    verdict: "ignore",
    reason: "keyset-old",
  },
  {
    title: "a keyset pushed directly of a project this node does not pin is ignored",
    channel: direct(stranger),
    opened: {
      kind: "keyset",
      bytes: sealKeyset(keysetBody(1, { project: R, roots: [rootR.publicKey] }), [rootR]),
    },
    verdict: "ignore",
    reason: "untrusted-project",
  },
  {
    title: "bytes pushed directly as a keyset that are none are refused: they name no project",
    channel: direct(stranger),
    opened: { kind: "keyset", bytes: forgedBytes(bidBytesByW1) },
    verdict: "reject",
    reason: "keyset-refused",
  },
  {
    title: "a DHT record holds keysets only",
    channel: { kind: "record", project: P },
    opened: announcement,
    verdict: "reject",
    reason: "not-on-topic",
  },
  // On a topic.
  {
    title: "an announcement by the project's announcer on its topic is taken by the worker",
    channel: topic(P),
    opened: announcement,
    verdict: "accept",
    reason: "taken",
    deliveries: ["worker announcement by announcer"],
  },
  {
    title: "a verdict and a cancel by the announcer on the topic are taken by the worker",
    channel: topic(P),
    opened: message("verdict", { seq: 2 }),
    before: [{ channel: topic(P), opened: message("cancel", { seq: 3 }) }],
    verdict: "accept",
    reason: "taken",
    deliveries: ["worker verdict by announcer"],
  },
  {
    title: "an announcement on its topic, at a node with no worker, is only relayed",
    channel: topic(P),
    opened: announcement,
    node: { hasWorker: false, masterOf: [P] },
    verdict: "accept",
    reason: "relayed",
  },
  {
    title: "a worker's offer on the topic is refused even at the project's master: offers go to masters directly",
    channel: topic(P),
    opened: message("offer", { signer: w1 }),
    node: { masterOf: [P] },
    verdict: "reject",
    reason: "not-on-topic",
  },
  {
    title: "a worker's offer on the topic is refused at a node that would only relay it: no one passes it on",
    channel: topic(P),
    opened: message("offer", { signer: w1 }),
    node: { masterOf: [Q] },
    verdict: "reject",
    reason: "not-on-topic",
  },
  {
    title: "an announcement on a topic naming another project is rejected",
    channel: topic(P),
    opened: message("jobAnnouncement", { project: Q }),
    verdict: "reject",
    reason: "wrong-project",
  },
  {
    title: "an offer on a topic whose project it does not name is not-on-topic: no offer travels on a topic",
    channel: topic(P),
    opened: message("offer", { signer: w1, project: Q }),
    node: { masterOf: [P] },
    verdict: "reject",
    reason: "not-on-topic",
  },
  {
    title: "an announcement on the topic of a project this node does not pin is ignored",
    channel: topic(R),
    opened: message("jobAnnouncement", { project: R }),
    verdict: "ignore",
    reason: "untrusted-project",
  },
  {
    title: "an announcement of a project whose keyset has not come yet is ignored: its announcers are unknown",
    channel: topic(Q),
    opened: message("jobAnnouncement", { project: Q }),
    verdict: "ignore",
    reason: "no-keyset-yet",
  },
  {
    title: "an announcement signed by a key the keyset does not name is rejected",
    channel: topic(P),
    opened: message("jobAnnouncement", { signer: stranger }),
    verdict: "reject",
    reason: "untrusted-signer",
  },
  {
    title: "a verdict signed by a worker is rejected",
    channel: topic(P),
    opened: message("verdict", { signer: w1 }),
    verdict: "reject",
    reason: "untrusted-signer",
  },
  {
    title: "an announcement by an announcer whose delegation ended is rejected",
    channel: topic(P),
    opened: message("jobAnnouncement", { signer: lapsed }),
    verdict: "reject",
    reason: "untrusted-signer",
  },
  {
    title:
      "an announcement checked against an expired trusted keyset is ignored as keyset-expired: this node is behind",
    channel: topic(P),
    opened: announcement,
    node: { trust: new Map([[P, trustExpired]]) },
    verdict: "ignore",
    reason: "keyset-expired",
  },
  {
    title: "a bid on a topic is rejected: it is a direct message",
    channel: topic(P),
    opened: message("bid", { signer: w1 }),
    node: { masterOf: [P] },
    verdict: "reject",
    reason: "not-on-topic",
  },
  {
    title: "a result acknowledgement on a topic is rejected",
    channel: topic(P),
    opened: message("resultAck"),
    verdict: "reject",
    reason: "not-on-topic",
  },
  {
    title: "a report on a topic is rejected: no machine of jobs/ takes it",
    channel: topic(P),
    opened: message("report", { signer: w1 }),
    node: { masterOf: [P] },
    verdict: "reject",
    reason: "not-on-topic",
  },
  // Direct.
  {
    title: "a worker's bid sent by the worker is taken by the project's master",
    channel: direct(w1),
    opened: bidByW1,
    node: { masterOf: [P] },
    verdict: "accept",
    reason: "taken",
    deliveries: ["master P bid by w1"],
  },
  {
    title: "a worker's result is taken by the project's master",
    channel: direct(w1),
    opened: message("result", { signer: w1 }),
    node: { masterOf: [P] },
    verdict: "accept",
    reason: "taken",
    deliveries: ["master P result by w1"],
  },
  {
    title: "a worker's log chunk is taken by the project's master",
    channel: direct(w1),
    opened: message("logChunk", { signer: w1 }),
    node: { masterOf: [P] },
    verdict: "accept",
    reason: "taken",
    deliveries: ["master P log-chunk by w1"],
  },
  {
    title: "a lease renewal naming its signer as the worker is the worker's asking: the master takes it",
    channel: direct(w1),
    opened: message("leaseRenew", { signer: w1, worker: w1.publicKey }),
    node: { masterOf: [P] },
    verdict: "accept",
    reason: "taken",
    deliveries: ["master P lease-renew by w1"],
  },
  {
    title: "a lease renewal by the announcer naming the worker is the master's answer: the worker takes it",
    channel: direct(announcer),
    opened: message("leaseRenew", { worker: w1.publicKey }),
    verdict: "accept",
    reason: "taken",
    deliveries: ["worker lease-renew by announcer"],
  },
  {
    title: "an award by the announcer is taken by the worker",
    channel: direct(announcer),
    opened: message("award"),
    verdict: "accept",
    reason: "taken",
    deliveries: ["worker award by announcer"],
  },
  {
    title: "a reject by the announcer is taken by the worker",
    channel: direct(announcer),
    opened: message("reject"),
    verdict: "accept",
    reason: "taken",
    deliveries: ["worker reject by announcer"],
  },
  {
    title: "a cancel of one attempt by the announcer is taken by the worker",
    channel: direct(announcer),
    opened: message("cancel"),
    verdict: "accept",
    reason: "taken",
    deliveries: ["worker cancel by announcer"],
  },
  {
    title: "a result acknowledgement by the announcer is taken by the worker",
    channel: direct(announcer),
    opened: message("resultAck"),
    verdict: "accept",
    reason: "taken",
    deliveries: ["worker result-ack by announcer"],
  },
  {
    title: "a report sent by its signer is taken by the project's report desk, with no ledger entry",
    channel: direct(w1),
    opened: message("report", { signer: w1 }),
    node: { masterOf: [P] },
    verdict: "accept",
    reason: "taken",
    deliveries: ["desk P report by w1"],
  },
  {
    title: "a report to a node that is not the project's master is ignored",
    channel: direct(w1),
    opened: message("report", { signer: w1 }),
    verdict: "ignore",
    reason: "no-machine",
  },
  {
    title: "an announcement sent direct is rejected: it travels on a topic",
    channel: direct(announcer),
    opened: announcement,
    verdict: "reject",
    reason: "not-direct",
  },
  {
    title: "a worker's offer sent by the worker is taken by the project's master",
    channel: direct(w1),
    opened: message("offer", { signer: w1 }),
    node: { masterOf: [P] },
    verdict: "accept",
    reason: "taken",
    deliveries: ["master P offer by w1"],
  },
  {
    title: "an offer signed by another key than the peer that sent it is rejected: no one offers for another",
    channel: direct(w2),
    opened: message("offer", { signer: w1 }),
    node: { masterOf: [P] },
    verdict: "reject",
    reason: "signer-not-sender",
    verifies: false,
  },
  {
    title: "an offer to a node that is not the master of its project is ignored, with no verification",
    channel: direct(w1),
    opened: message("offer", { signer: w1 }),
    node: { masterOf: [Q] },
    verdict: "ignore",
    reason: "no-machine",
    verifies: false,
  },
  {
    title: "an offer for a project its master does not even pin is ignored: the node is master of another project",
    channel: direct(w1),
    opened: message("offer", { signer: w1, project: R }),
    node: { masterOf: [P] },
    verdict: "ignore",
    reason: "no-machine",
  },
  {
    title: "an offer is not for a worker: a node with a worker and no master ignores it",
    channel: direct(w1),
    opened: message("offer", { signer: w1 }),
    node: { masterOf: [], hasWorker: true },
    verdict: "ignore",
    reason: "no-machine",
  },
  {
    title: "a message signed by another key than the peer that sent it is rejected",
    channel: direct(w2),
    opened: bidByW1,
    node: { masterOf: [P] },
    verdict: "reject",
    reason: "signer-not-sender",
  },
  {
    title: "an award by a key the keyset does not name is rejected",
    channel: direct(stranger),
    opened: message("award", { signer: stranger }),
    verdict: "reject",
    reason: "untrusted-signer",
  },
  {
    title: "an award for a project this node does not pin is ignored",
    channel: direct(announcer),
    opened: message("award", { project: R }),
    verdict: "ignore",
    reason: "untrusted-project",
  },
  {
    title: "an award for a project with no keyset yet is ignored",
    channel: direct(announcer),
    opened: message("award", { project: Q }),
    verdict: "ignore",
    reason: "no-keyset-yet",
  },
  {
    title: "a bid to a node that is not the project's master is ignored",
    channel: direct(w1),
    opened: bidByW1,
    node: { masterOf: [Q] },
    verdict: "ignore",
    reason: "no-machine",
  },
  {
    title: "an award to a node with no worker is ignored",
    channel: direct(announcer),
    opened: message("award"),
    node: { hasWorker: false, masterOf: [P] },
    verdict: "ignore",
    reason: "no-machine",
  },
  // The replay ledger: only for what announcers sign.
  {
    title: "the same bid a second time is taken again, with no ledger entry: its master keeps its own records",
    channel: direct(w1),
    opened: bidByW1,
    node: { masterOf: [P] },
    before: [{ channel: direct(w1), opened: bidByW1 }],
    verdict: "accept",
    reason: "taken",
    deliveries: ["master P bid by w1"],
  },
  {
    title: "the same offer a second time is taken again, with no ledger entry: the master keeps a worker's newest",
    channel: direct(w1),
    opened: message("offer", { signer: w1 }),
    node: { masterOf: [P] },
    before: [{ channel: direct(w1), opened: message("offer", { signer: w1 }) }],
    verdict: "accept",
    reason: "taken",
    deliveries: ["master P offer by w1"],
  },
  {
    title: "the same award a second time is ignored as a replay",
    channel: direct(announcer),
    opened: message("award", { seq: 7 }),
    before: [{ channel: direct(announcer), opened: message("award", { seq: 7 }) }],
    verdict: "ignore",
    reason: "replay",
  },
  {
    title: "another message with a sequence number already taken from its announcer is ignored as a replay",
    channel: direct(announcer),
    opened: message("reject", { seq: 7 }),
    before: [{ channel: topic(P), opened: message("jobAnnouncement", { seq: 7 }) }],
    verdict: "ignore",
    reason: "replay",
  },
  {
    title: "the same announcement on the topic a second time is ignored as a replay",
    channel: topic(P),
    opened: announcement,
    before: [{ channel: topic(P), opened: announcement }],
    verdict: "ignore",
    reason: "replay",
  },
  {
    title: "a relayed message leaves no ledger entry: relayed again, it is relayed again",
    channel: topic(P),
    opened: announcement,
    node: { hasWorker: false },
    before: [{ channel: topic(P), opened: announcement }],
    verdict: "accept",
    reason: "relayed",
  },
];

function checkCase(t: ExecutionContext, c: Case): void {
  const context = node(c.node);
  let ledger: ReplayLedger = context.ledger;
  for (const earlier of c.before ?? [])
    ledger = admit(earlier.channel, earlier.opened, { ...context, ledger }, nowMs).ledger;
  const signersBefore = ledger.signers.size;
  const snapshot = JSON.stringify([...ledger.signers].map(([key, w]) => [key, w.highestSeq, [...w.bitmap]]));
  const verificationsBefore = verifications;
  const admission = admit(c.channel, c.opened, { ...context, ledger }, nowMs);
  if (c.verifies !== undefined)
    t.is(verifications > verificationsBefore, c.verifies, "whether the signature was verified");
  t.is(admission.verdict, c.verdict, admission.detail);
  t.is(admission.reason, c.reason, admission.detail);
  t.deepEqual(admission.deliveries.map(describe), [...(c.deliveries ?? [])]);
  if (c.verdict === "accept") t.is(admission.detail, "", "an accepted message needs no words for a log line");
  const byAnnouncer = admission.deliveries.some((delivery) => delivery.machine === "worker");
  if (c.reason === "taken" && byAnnouncer) {
    if (c.opened.kind !== "message") {
      t.fail("only a message is taken");
      return;
    }
    t.deepEqual(admission.ledgerEntry?.signer, c.opened.signer, "the signer's window changed, to persist");
    t.is(admission.ledgerEntry?.window, admission.ledger.signers.get(admission.ledgerEntry?.key ?? ""));
    t.true(admission.ledger.signers.size >= signersBefore);
    t.true(admission.deliveries.length > 0);
  } else {
    t.is(admission.ledgerEntry, null);
    t.is(admission.ledger.signers.size, signersBefore);
    const after = JSON.stringify([...admission.ledger.signers].map(([key, w]) => [key, w.highestSeq, [...w.bitmap]]));
    t.is(after, snapshot, "the ledger is untouched by a message no worker machine here takes");
  }
  if (c.reason === "keyset-accepted") {
    if (c.opened.kind !== "keyset") {
      t.fail("only a keyset is accepted as one");
      return;
    }
    t.deepEqual(admission.keyset?.bytes, c.opened.bytes);
    t.is(
      admission.keyset?.project,
      c.channel.kind === "topic"
        ? c.channel.topic
        : c.channel.kind === "record"
          ? c.channel.project
          : (keysetProjectOf(c.opened.bytes) ?? undefined),
      "a keyset pushed directly counts for the project it names",
    );
    t.deepEqual(admission.keyset?.trust.keysetBytes, c.opened.bytes, "the new trust holds the keyset");
  } else t.is(admission.keyset, null);
}

for (const c of cases) test(c.title, (t) => checkCase(t, c));

test("every reason admission can give is reached by a case above", (t) => {
  const reached = new Set(cases.map((c) => c.reason));
  t.deepEqual(
    admissionReasons.filter((reason) => !reached.has(reason)),
    [],
  );
});

test("the inputs admission delivers carry the message body and the signer as hex", (t) => {
  const opened = message("award", { seq: 42 });
  const admission = admit(direct(announcer), opened, node(), nowMs);
  const delivery = admission.deliveries[0];
  if (delivery?.machine !== "worker" || delivery.input.kind !== "award")
    return t.fail("expected an award to the worker");
  t.is(delivery.input.signer, hexOf(announcer.publicKey));
  t.is(delivery.input.award.seq, 42);
  t.deepEqual(delivery.input.award.worker, w1.publicKey);
});

/** P's trust in a keyset that names w2 a runner, and the stranger a runner whose entry ended. */
const trustRunners = acceptKeyset(
  trustFromAnchor(anchorP),
  sealKeyset(
    keysetBody(1, {
      runners: [
        { key: w2.publicKey, label: "ci runner", expiresAtMs: nowMs + 30 * dayMs },
        { key: stranger.publicKey, label: "old runner", expiresAtMs: nowMs - dayMs },
      ],
    }),
    [rootP],
  ),
  nowMs,
);

/** The master input admission delivered at a master of P trusting `trustRunners`, with what it states of the sender. */
function senderFacts(channel: Channel, opened: Opened): { kind: string; runner?: boolean; prefix?: string } {
  const context = node({ masterOf: [P], trust: new Map([[P, trustRunners]]) });
  const delivery = admit(channel, opened, context, nowMs).deliveries[0];
  if (delivery?.machine !== "master") return { kind: "none" };
  const input = delivery.input as { kind: string; runner?: boolean; prefix?: string };
  return { kind: input.kind, runner: input.runner, prefix: input.prefix };
}

test("a bid carries whether trust names its signer a runner (keyset runners and announcers) and its connection's prefix", (t) => {
  const prefix = "203.0.113.0/24";
  t.deepEqual(senderFacts(direct(w2, prefix), message("bid", { signer: w2 })), { kind: "bid", runner: true, prefix });
  t.deepEqual(senderFacts(direct(announcer, prefix), message("bid", { signer: announcer })), {
    kind: "bid",
    runner: true,
    prefix,
  });
  t.deepEqual(senderFacts(direct(w1, prefix), message("bid", { signer: w1 })), { kind: "bid", runner: false, prefix });
  t.deepEqual(
    senderFacts(direct(stranger, prefix), message("bid", { signer: stranger })),
    { kind: "bid", runner: false, prefix },
    "a runner whose entry ended is no runner",
  );
  t.deepEqual(senderFacts(direct(w1), message("bid", { signer: w1 })), { kind: "bid", runner: false, prefix: "" });
  // Trust in a keyset with no runners: only announcers are runners.
  const plain = admit(direct(w2, prefix), message("bid", { signer: w2 }), node({ masterOf: [P] }), nowMs);
  t.like(plain.deliveries[0]?.input, { kind: "bid", runner: false, prefix });
});

test("an offer carries whether trust names its signer a runner and its connection's prefix, and its body whole", (t) => {
  const prefix = "2001:db8:1::/48";
  t.deepEqual(senderFacts(direct(w2, prefix), message("offer", { signer: w2 })), {
    kind: "offer",
    runner: true,
    prefix,
  });
  t.deepEqual(senderFacts(direct(w1, prefix), message("offer", { signer: w1 })), {
    kind: "offer",
    runner: false,
    prefix,
  });
  t.deepEqual(
    senderFacts(direct(stranger, prefix), message("offer", { signer: stranger })),
    { kind: "offer", runner: false, prefix },
    "a runner whose entry ended is no runner",
  );
  t.deepEqual(senderFacts(direct(w1), message("offer", { signer: w1 })), { kind: "offer", runner: false, prefix: "" });
  const opened = message("offer", { signer: w1, seq: 9 });
  const delivery = admit(direct(w1, prefix), opened, node({ masterOf: [P] }), nowMs).deliveries[0];
  if (delivery?.machine !== "master" || delivery.input.kind !== "offer")
    return t.fail("expected an offer to the master");
  t.is(delivery.project, P);
  t.is(delivery.input.signer, hexOf(w1.publicKey));
  t.like(delivery.input.offer, { project: P, seq: 9, freeSlots: 1, totalSlots: 1, availability: "eager" });
});

test("a runner is no announcer: what it signs for workers is refused as from an untrusted signer", (t) => {
  const context = node({ trust: new Map([[P, trustRunners]]) });
  t.is(admit(direct(w2), message("award", { signer: w2 }), context, nowMs).reason, "untrusted-signer");
  t.is(admit(topic(P), message("jobAnnouncement", { signer: w2 }), context, nowMs).reason, "untrusted-signer");
});

test("admission is pure: the same message to equal nodes gets the same admission", (t) => {
  const a = admit(direct(w1), bidByW1, node({ masterOf: [P] }), nowMs);
  const b = admit(direct(w1), bidByW1, node({ masterOf: [P] }), nowMs);
  t.is(a.verdict, b.verdict);
  t.deepEqual(a.deliveries, b.deliveries);
  t.deepEqual([...a.ledger.signers.keys()], [...b.ledger.signers.keys()]);
});

// ---------------------------------------------------------------------------
// Property: keysets pushed directly
// ---------------------------------------------------------------------------

/** A keyset a peer pushes: the project it names, the roots it lists, who signs it, its version, whether it expired. */
interface PushedKeyset {
  readonly names: "P" | "Q" | "R";
  readonly roots: "P" | "Q";
  readonly signedBy: readonly ("P" | "Q" | "stranger")[];
  readonly version: number;
  readonly expired: boolean;
  /** One root signature does not verify. */
  readonly forged: boolean;
  /** Not a keyset at all: some message's bytes. */
  readonly garbage: boolean;
}

/** Mostly false: each way a keyset fails on its own comes now and then, so the roots and signers decide most runs. */
const rarely = fc.oneof({ weight: 4, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) });

const arbPushedKeyset: fc.Arbitrary<PushedKeyset> = fc.record({
  names: fc.constantFrom("P" as const, "Q" as const, "R" as const),
  roots: fc.constantFrom("P" as const, "Q" as const),
  signedBy: fc.subarray(["P" as const, "Q" as const, "stranger" as const], { minLength: 1 }),
  version: fc.integer({ min: 1, max: 4 }),
  expired: rarely,
  forged: rarely,
  garbage: rarely,
});

const rootOf = { P: rootP, Q: rootQ, R: rootR, stranger } as const;
const projectOf = { P, Q, R } as const;

/**
 * What a keyset pushed directly must come to, stated apart from jobs/admission.ts and crypto/keyset.ts for the
 * node pinning P (keyset v1 held) and Q (none yet): bytes that are no keyset are refused; an unpinned project's
 * keyset is ignored, an expired one too, one no newer than P's v1 is old; otherwise it counts only when it lists the
 * project's pinned roots (or, as the first keyset of Q, rotates to others both sets signed) and every signature holds.
 */
function pushedOracle(k: PushedKeyset): `${AdmissionVerdict} ${AdmissionReason}` {
  if (k.garbage) return "reject keyset-refused";
  if (k.names === "R") return "ignore untrusted-project";
  if (k.expired) return "ignore keyset-expired";
  if (k.names === "P" && k.version <= 1) return "ignore keyset-old";
  const pinnedRoot = k.names;
  const signedByPinned = k.signedBy.includes(pinnedRoot);
  const chains =
    k.roots === pinnedRoot
      ? signedByPinned
      : // A first keyset may rotate away from the genesis roots, signed by both; one with a keyset held may not.
        k.names === "Q" && signedByPinned && k.signedBy.includes(k.roots);
  return chains && !k.forged ? "accept keyset-accepted" : "reject keyset-refused";
}

function pushedBytes(k: PushedKeyset): Uint8Array {
  if (k.garbage) return bidBytesByW1;
  const rootsOf = rootOf[k.roots];
  const body = keysetBody(k.version, {
    project: projectOf[k.names],
    roots: [rootsOf.publicKey],
    ...(k.expired ? { issuedAtMs: nowMs - 40 * dayMs, expiresAtMs: nowMs - 10 * dayMs } : {}),
  });
  const bytes = sealKeyset(
    body,
    k.signedBy.map((who) => rootOf[who]),
  );
  return k.forged ? forgedBytes(bytes) : bytes;
}

testProp(
  "a keyset pushed directly by any peer counts exactly as the same keyset on its project's topic or in its DHT record: only the project's roots make it count",
  [arbPushedKeyset, fc.constantFrom(announcer, w1, stranger)],
  (t, pushed, peer) => {
    const bytes = pushedBytes(pushed);
    const context = node();
    const admission = admit(direct(peer), { kind: "keyset", bytes }, context, nowMs);
    t.is(`${admission.verdict} ${admission.reason}`, pushedOracle(pushed), admission.detail);
    t.deepEqual(admission.deliveries, [], "a keyset is no machine's input");
    t.is(admission.ledgerEntry, null, "a keyset does not touch the replay ledger");
    if (admission.reason === "keyset-accepted") {
      t.is(admission.keyset?.project, projectOf[pushed.names]);
      t.deepEqual(admission.keyset?.trust.keysetBytes, bytes);
      t.is(admission.keyset?.trust.keyset?.version, pushed.version);
    } else t.is(admission.keyset, null, "a keyset not accepted leaves trust as it was");
    if (pushed.garbage) return;
    const named = projectOf[pushed.names];
    for (const channel of [topic(named), { kind: "record", project: named } as const]) {
      const elsewhere = admit(channel, { kind: "keyset", bytes }, node(), nowMs);
      t.is(`${elsewhere.verdict} ${elsewhere.reason}`, `${admission.verdict} ${admission.reason}`, channel.kind);
      t.deepEqual(elsewhere.keyset?.trust.keyset ?? null, admission.keyset?.trust.keyset ?? null);
    }
  },
  { numRuns: 500 },
);

// ---------------------------------------------------------------------------
// Properties: random traffic against an oracle
// ---------------------------------------------------------------------------

const windowSeqs = 32;
const maxSigners = 8;
/** Sequence numbers drawn from a range well inside the window, so that repeats are common and none is too old. */
const maxDrawnSeq = 11;
const lifetimesMs = [1_000, minuteMs, 5 * minuteMs] as const;
/** Time between two messages, with its weight: mostly a burst, now and then long enough for everything to go stale. */
const stepsMs: readonly [ms: number, weight: number][] = [
  [0, 10],
  [1_000, 8],
  [5_000, 5],
  [30_000, 4],
  [2 * minuteMs, 2],
  [7 * minuteMs, 1],
];

/** Workers and outsiders without number: the third property signs with them to crowd the ledger. */
const crowd: readonly Identity[] = Array.from({ length: 64 }, (_, i) => {
  const seed = new Uint8Array(32);
  seed[0] = 0xc0;
  seed[1] = i;
  return identityFromSeed(seed);
});

/** Who signs in the properties, by index: the announcer, two workers, strangers, P's other announcers, the crowd. */
const strangers: readonly Identity[] = Array.from({ length: 11 }, (_, i) => identity(0x80 + i));
const signers: readonly Identity[] = [announcer, w1, w2, ...strangers, ...moreAnnouncers, ...crowd];
const indexesOf = (group: readonly Identity[]): number[] => group.map((member) => signers.indexOf(member));
const announcerHexes = new Set([announcer, ...moreAnnouncers].map((a) => hexOf(a.publicKey)));
const topicNames: readonly Name[] = ["jobAnnouncement", "verdict", "cancel"];
const directNames: readonly Name[] = [
  "offer",
  "bid",
  "award",
  "reject",
  "leaseRenew",
  "logChunk",
  "result",
  "resultAck",
];
const names: readonly Name[] = [...topicNames, ...directNames, "report"];

/** Whom a property's events are signed (and sent) by, as indexes into `signers`. */
interface SignerPool {
  /** Who signs what workers take, mostly. */
  readonly announcers: readonly number[];
  /** Who signs what masters take, mostly. */
  readonly workers: readonly number[];
  /** Who signs anything now and then, and who sends what its signer did not. */
  readonly anyone: readonly number[];
}

/** Five signers, one an announcer: fewer than the ledger keeps. */
const fewSigners: SignerPool = { announcers: [0], workers: [1, 2], anyone: [0, 1, 2, 3, 4] };
/** Twelve announcers, more than the ledger keeps, with workers and strangers. */
const manyAnnouncers: SignerPool = {
  announcers: indexesOf([announcer, ...moreAnnouncers]),
  workers: [1, 2],
  anyone: indexesOf([announcer, w1, w2, ...strangers, ...moreAnnouncers]),
};
/** Four announcers (fewer than the ledger keeps) among 77 workers and strangers (many times more than it keeps). */
const crowdedAnnouncers = indexesOf([announcer, ...moreAnnouncers.slice(0, 3)]);
const crowded: SignerPool = {
  announcers: crowdedAnnouncers,
  workers: indexesOf([w1, w2, ...crowd]),
  anyone: indexesOf([announcer, w1, w2, ...strangers, ...moreAnnouncers.slice(0, 3), ...crowd]),
};

interface NodeSetup {
  readonly masterOf: readonly string[];
  readonly hasWorker: boolean;
}

interface Event {
  readonly channel: "topic" | "direct" | "record";
  /** The topic, or the project the body names on a direct stream. */
  readonly project: string;
  /** On a topic: whether the body names the topic's project (else the next one of P, Q, R). */
  readonly onItsTopic: boolean;
  readonly signer: number;
  /** Direct: the peer that sent it is the signer, or this other identity. */
  readonly sentBySigner: boolean;
  readonly peer: number;
  readonly name: Name;
  /** The worker an award, reject, renewal or acknowledgement names: the signer itself, or w1 (w2 when w1 signs). */
  readonly namesSigner: boolean;
  readonly seq: number;
  readonly lifetimeMs: number;
  readonly stepMs: number;
  /** The signature does not verify. */
  readonly forged: boolean;
}

const arbSetup: fc.Arbitrary<NodeSetup> = fc.record({
  masterOf: fc.subarray([P, Q, R]),
  hasWorker: fc.boolean(),
});

/** Messages a worker takes: signed by an announcer. */
const workerBound: readonly Name[] = ["jobAnnouncement", "verdict", "cancel", "award", "reject", "resultAck"];

/**
 * Mostly traffic a node meets every day (the message types of the channel, signed by whom they should be), so that
 * many are taken and sequence numbers come again; the rest anything at all.
 */
function arbEvent(pool: SignerPool): fc.Arbitrary<Event> {
  const weighted = <T>(common: T, rare: T) =>
    fc.oneof({ arbitrary: fc.constant(common), weight: 6 }, { arbitrary: fc.constant(rare), weight: 1 });
  const channel = fc.oneof(
    { arbitrary: fc.constant("topic" as const), weight: 5 },
    { arbitrary: fc.constant("direct" as const), weight: 5 },
    { arbitrary: fc.constant("record" as const), weight: 1 },
  );
  const nameOn = (on: Event["channel"]) =>
    fc.oneof(
      { arbitrary: fc.constantFrom(...(on === "topic" ? topicNames : directNames)), weight: 4 },
      { arbitrary: fc.constantFrom(...names), weight: 1 },
    );
  // An announcer for what workers take, a worker for what masters take; sometimes anyone.
  const signerOf = (name: Name) =>
    fc.oneof(
      {
        arbitrary:
          name === "leaseRenew"
            ? fc.constantFrom(...pool.announcers, ...pool.workers)
            : workerBound.includes(name)
              ? fc.constantFrom(...pool.announcers)
              : fc.constantFrom(...pool.workers),
        weight: 4,
      },
      { arbitrary: fc.constantFrom(...pool.anyone), weight: 1 },
    );
  return channel.chain((on) =>
    nameOn(on).chain((name) =>
      fc.record({
        channel: fc.constant(on),
        project: fc.constantFrom(P, P, Q, R),
        onItsTopic: weighted(true, false),
        signer: signerOf(name),
        sentBySigner: weighted(true, false),
        peer: fc.constantFrom(...pool.anyone),
        name: fc.constant(name),
        namesSigner: fc.boolean(),
        seq: fc.nat({ max: maxDrawnSeq }),
        lifetimeMs: fc.constantFrom(...lifetimesMs),
        stepMs: fc.oneof(...stepsMs.map(([ms, weight]) => ({ arbitrary: fc.constant(ms), weight }))),
        forged: weighted(false, true),
      }),
    ),
  );
}

/**
 * What the rules say of a message, without the ledger: judged, or to be taken by a machine. A worker machine's input
 * is signed by an announcer and goes through the ledger (`ledger`: then the ledger decides); a master's is a worker's
 * and is taken with no ledger entry.
 */
type Expected =
  | { readonly kind: "judged"; readonly verdict: AdmissionVerdict; readonly reason: AdmissionReason }
  | { readonly kind: "take"; readonly delivery: string; readonly ledger: boolean };

const pinnedWithKeyset = new Set([P]);
const pinned = new Set([P, Q]);

const masterKinds: Partial<Record<Name, string>> = {
  offer: "offer",
  bid: "bid",
  result: "result",
  leaseRenew: "lease-renew",
  logChunk: "log-chunk",
};
const workerKinds: Partial<Record<Name, string>> = {
  jobAnnouncement: "announcement",
  verdict: "verdict",
  cancel: "cancel",
  award: "award",
  reject: "reject",
  leaseRenew: "lease-renew",
  resultAck: "result-ack",
};

/**
 * The rules of admission, stated apart from jobs/admission.ts: a stale envelope is ignored; a DHT record holds no
 * messages; on a topic, announcements, verdicts and cancels naming the topic go to a worker when an announcer of a
 * pinned keyset signed them (relayed by a node with no worker), nothing else travels (offers included); direct, the
 * signer must be the peer, offers, bids, results, log chunks and a worker's own renewals go to the master of their
 * project, awards, rejects, cancels, answered renewals and acknowledgements go to a worker from an announcer of a
 * pinned keyset, nothing else travels. A bad signature is a forgery, checked once every other rule let the message
 * through (so before it is relayed or taken). Only what a worker takes meets the ledger.
 */
function oracle(
  setup: NodeSetup,
  event: Event,
  bodyProject: string,
  worker: string,
  expiresAtMs: number,
  atMs: number,
): Expected {
  const judged = (verdict: AdmissionVerdict, reason: AdmissionReason): Expected => ({
    kind: "judged",
    verdict,
    reason,
  });
  const signer = hexOf((signers[event.signer] as Identity).publicKey);
  const who = (kind: string) => `${kind} by ${nameOf(signer)}`;
  const forged = judged("reject", "forged");
  const forWorker = (project: string, kind: string): Expected => {
    if (!pinned.has(project)) return judged("ignore", "untrusted-project");
    if (!pinnedWithKeyset.has(project)) return judged("ignore", "no-keyset-yet");
    if (!announcerHexes.has(signer)) return judged("reject", "untrusted-signer");
    if (event.forged) return forged;
    return { kind: "take", delivery: `worker ${who(kind)}`, ledger: true };
  };
  const forMaster = (project: string, kind: string): Expected => ({
    kind: "take",
    delivery: `master ${project === P ? "P" : project} ${who(kind)}`,
    ledger: false,
  });
  if (expiresAtMs + maxClockSkewMs < atMs) return judged("ignore", "stale");
  if (event.channel === "record") return judged("reject", "not-on-topic");
  if (event.channel === "topic") {
    const topicProject = event.project;
    if (!topicNames.includes(event.name)) return judged("reject", "not-on-topic");
    if (bodyProject !== topicProject) return judged("reject", "wrong-project");
    const outcome = forWorker(topicProject, workerKinds[event.name] as string);
    return outcome.kind === "take" && !setup.hasWorker ? judged("accept", "relayed") : outcome;
  }
  const peer = event.sentBySigner ? signer : hexOf((signers[event.peer] as Identity).publicKey);
  if (peer !== signer) return judged("reject", "signer-not-sender");
  const toMaster =
    event.name === "offer" ||
    event.name === "bid" ||
    event.name === "result" ||
    event.name === "logChunk" ||
    (event.name === "leaseRenew" && worker === signer);
  const toWorker = ["award", "reject", "cancel", "resultAck", "leaseRenew"].includes(event.name) && !toMaster;
  if (event.name === "report") {
    // A push-only build goes to the project's report desk, which keeps its own replay ledger.
    if (!setup.masterOf.includes(bodyProject)) return judged("ignore", "no-machine");
    if (event.forged) return forged;
    return { kind: "take", delivery: `desk ${bodyProject === P ? "P" : bodyProject} ${who("report")}`, ledger: false };
  }
  if (toMaster) {
    if (!setup.masterOf.includes(bodyProject)) return judged("ignore", "no-machine");
    if (event.forged) return forged;
    return forMaster(bodyProject, masterKinds[event.name] as string);
  }
  if (toWorker) {
    if (!setup.hasWorker) return judged("ignore", "no-machine");
    return forWorker(bodyProject, workerKinds[event.name] as string);
  }
  return judged("reject", "not-direct");
}

interface Traffic {
  readonly event: Event;
  readonly atMs: number;
  readonly expected: Expected;
  readonly admission: Admission;
  readonly signer: Uint8Array;
  readonly header: Header;
  readonly floorBefore: number;
  readonly signersAfter: number;
  /** The ledger after this message (the one object, updated in place). */
  readonly ledger: ReplayLedger;
}

/**
 * Plays events at a node with a small ledger. A signer's sequence number fixes its message's time the first time it
 * is drawn (a signer stamps each number once: what comes again with that number is a replay, on any channel or in
 * any domain), so messages also come late.
 */
function play(setup: NodeSetup, events: readonly Event[], each: (traffic: Traffic) => void): void {
  const ledger = createReplayLedger({ windowSeqs, maxSigners });
  const context: AdmissionContext = {
    trust: new Map([
      [P, trustP],
      [Q, trustQ],
    ]),
    ledger,
    isMasterOf: (project) => setup.masterOf.includes(project),
    hasWorker: setup.hasWorker,
  };
  const headers = new Map<string, Header>();
  let atMs = nowMs;
  const projects = [P, Q, R];
  for (const event of events) {
    atMs += event.stepMs;
    const identity = signers[event.signer] as Identity;
    const key = `${event.signer}/${event.seq}`;
    const header = headers.get(key) ?? { issuedAtMs: atMs, expiresAtMs: atMs + event.lifetimeMs, seq: event.seq };
    headers.set(key, header);
    const bodyProject =
      event.channel !== "topic" || event.onItsTopic
        ? event.project
        : (projects[(projects.indexOf(event.project) + 1) % projects.length] as string);
    const worker = event.namesSigner ? identity : identity === w1 ? w2 : w1;
    const body = bodyOf(event.name, header, bodyProject, worker.publicKey);
    const sealed = seal(event.name, body, identity);
    const opened = open(event.forged ? forgedBytes(sealed) : sealed, atMs);
    const peer = event.sentBySigner ? identity : (signers[event.peer] as Identity);
    const channel: Channel =
      event.channel === "topic"
        ? topic(event.project)
        : event.channel === "direct"
          ? direct(peer)
          : { kind: "record", project: event.project };
    const floorBefore = ledger.floorExpiresAtMs;
    const admission = admit(channel, opened, context, atMs);
    const expected = oracle(setup, event, bodyProject, hexOf(worker.publicKey), header.expiresAtMs, atMs);
    each({
      event,
      atMs,
      expected,
      admission,
      signer: identity.publicKey,
      header,
      floorBefore,
      signersAfter: admission.ledger.signers.size,
      ledger: admission.ledger,
    });
  }
}

/** Checks what the rules decide alone; true when the message is the ledger's to judge (a worker machine takes it). */
function judgedAsExpected(t: ExecutionContext, traffic: Traffic): boolean {
  const { expected, admission } = traffic;
  if (expected.kind === "judged") {
    t.is(`${admission.verdict} ${admission.reason}`, `${expected.verdict} ${expected.reason}`, admission.detail);
    t.deepEqual(admission.deliveries, [], "delivered although the rules do not allow it");
    t.is(admission.ledgerEntry, null, "a message no machine here takes touched the ledger");
    return false;
  }
  if (!expected.ledger) {
    t.is(`${admission.verdict} ${admission.reason}`, "accept taken", admission.detail);
    t.deepEqual(admission.deliveries.map(describe), [expected.delivery]);
    t.is(admission.ledgerEntry, null, "a worker's message entered the ledger");
    return false;
  }
  return true;
}

/** Admission is exactly the rules while the ledger forgets no one: a worker machine takes each sequence number once. */
function exactlyTheRules(
  t: ExecutionContext,
  setup: NodeSetup,
  events: readonly Event[],
  also: (traffic: Traffic) => void,
) {
  const taken = new Set<string>();
  play(setup, events, (traffic) => {
    also(traffic);
    if (!judgedAsExpected(t, traffic)) return;
    const { admission, expected, event } = traffic;
    if (expected.kind !== "take") return;
    const key = `${event.signer}/${event.seq}`;
    if (taken.has(key)) {
      t.is(`${admission.verdict} ${admission.reason}`, "ignore replay", "a sequence number taken before");
      t.deepEqual(admission.deliveries, []);
    } else {
      t.is(`${admission.verdict} ${admission.reason}`, "accept taken", admission.detail);
      t.deepEqual(admission.deliveries.map(describe), [expected.delivery]);
      t.deepEqual(admission.ledgerEntry?.signer, traffic.signer);
      taken.add(key);
    }
  });
}

testProp(
  "with fewer signers than the ledger keeps, admission is exactly the rules: judged, taken by a master every time, or taken by a worker once per announcer's sequence number",
  [arbSetup, fc.array(arbEvent(fewSigners), { minLength: 1, maxLength: 60, size: "max" })],
  (t, setup, events) => exactlyTheRules(t, setup, events, () => {}),
  { numRuns: 150 },
);

testProp(
  "with more announcers than the ledger keeps: nothing is delivered against the rules, no announcer's sequence number is taken twice while its message is valid, and the ledger stays within its bound",
  [arbSetup, fc.array(arbEvent(manyAnnouncers), { minLength: 1, maxLength: 80, size: "max" })],
  (t, setup, events) => {
    const takenUntil = new Map<string, number>();
    play(setup, events, (traffic) => {
      t.true(traffic.signersAfter <= maxSigners, `${traffic.signersAfter} signers kept, bound ${maxSigners}`);
      if (judgedAsExpected(t, traffic)) {
        const { admission, expected, event, header, atMs } = traffic;
        if (expected.kind !== "take") return;
        const key = `${event.signer}/${event.seq}`;
        const until = takenUntil.get(key);
        if (admission.reason === "taken") {
          t.is(admission.verdict, "accept");
          t.deepEqual(admission.deliveries.map(describe), [expected.delivery]);
          t.true(
            until === undefined || until + maxClockSkewMs < atMs,
            `seq ${event.seq} of signer ${event.signer} taken twice while valid`,
          );
          takenUntil.set(key, header.expiresAtMs);
        } else {
          t.is(`${admission.verdict} ${admission.reason}`, "ignore replay", admission.detail);
          t.deepEqual(admission.deliveries, []);
          // Refused only as a replay, or as possibly one: a forgotten signer's floor covers its expiry.
          t.true(until !== undefined || header.expiresAtMs <= traffic.floorBefore, "refused a message never taken");
        }
      }
    });
  },
  { numRuns: 150 },
);

/** The ledger's key of a signer (crypto/ledger.ts keys its windows by the key's bytes as latin1 text). */
const ledgerKeyOf = (identity: Identity) => Buffer.from(identity.publicKey).toString("latin1");
const crowdedAnnouncerKeys = new Set(crowdedAnnouncers.map((i) => ledgerKeyOf(signers[i] as Identity)));

testProp(
  "no number of worker and outsider signers moves the ledger's floor or evicts an announcer: only announcers enter it, and admission stays exactly the rules",
  [arbSetup, fc.array(arbEvent(crowded), { minLength: 1, maxLength: 120, size: "max" })],
  (t, setup, events) => {
    const recorded = new Set<string>();
    exactlyTheRules(t, setup, events, (traffic) => {
      t.is(traffic.ledger.floorExpiresAtMs, Number.NEGATIVE_INFINITY, "the ledger's floor moved");
      for (const key of traffic.ledger.signers.keys()) {
        t.true(crowdedAnnouncerKeys.has(key), "a signer that is no announcer entered the ledger");
        recorded.add(key);
      }
      t.is(traffic.ledger.signers.size, recorded.size, "an announcer was evicted");
    });
  },
  { numRuns: 100 },
);
