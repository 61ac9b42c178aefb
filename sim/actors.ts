/**
 * Hostile actors of a simulated mesh. They are not cimesh nodes (they run no
 * driver): they speak the protocol from outside, as an attacker's own program
 * would, and every honest node judges what they send with the same admission
 * as any message (jobs/admission.ts).
 *
 * - A spammer bids on every announcement it hears and never runs anything.
 * - A forger publishes announcements with a broken signature, or well signed
 *   by a key the project never delegated.
 * - A replayer records the signed messages it hears on its topic (the
 *   master's announcements, verdicts and cancels) and, tapping the master's
 *   network path, what workers send the master directly (offers, bids,
 *   results). It sends each again later, on the topic and directly to the
 *   project's master: every honest receiver's replay ledger (or the message's
 *   expiry) must refuse a replayed announcement, verdict or cancel; a worker's
 *   message has no business on a topic, and sent by another peer than its
 *   signer it is refused as such.
 * - A throwaway identity is a fresh key of a colluding group: it offers
 *   every project's master its slots (renewed, and again after each award),
 *   bids on every announcement it hears, claiming to hold every input, and
 *   reports the group's wrong digest for whatever it is awarded, soon,
 *   without running it.
 */
import {
  announcementOf,
  awardOf,
  type MessageDomainName,
  maxCachedInputBytes,
  type StampedMessage,
} from "../jobs/index.ts";
import type { Rng } from "./rng.ts";
import { exponential } from "./rng.ts";

/** Signed messages a replayer keeps to send again; the oldest is forgotten first. */
export const maxRecordedWiresCount = 64;
const hourMs = 3_600_000;

/** What the actors count (Metrics.security). */
export type ActorCounter =
  | "spamBids"
  | "forgeriesSent"
  | "replaysSent"
  | "throwawayBids"
  | "throwawayAwards"
  | "wrongResultsSent";

/** How long the bids and results of a throwaway identity claim to stay valid. */
export const throwawayMessageLifetimeMs = 60_000;
/** How long a throwaway identity's standing offers last; renewed when a quarter is left. */
export const throwawayOfferLifetimeMs = 20 * 60_000;
/** Slots a throwaway identity offers each master: more than an honest volunteer has, as an attacker would claim. */
export const throwawayOfferSlotsCount = 8;

/** What an actor needs of the simulated world. */
export interface ActorWorld<W extends { readonly body: unknown; readonly domain: string }> {
  readonly rng: Rng;
  nowMs(): number;
  /** Absolute (epoch) time, as signed bodies carry it. */
  absMs(): number;
  /** Seals a message as node `from` (a forgery when tampered), counted as carried. */
  wire(from: number, message: StampedMessage, tampered?: boolean): W;
  /** The same wire, marked for the observer as a forger's (it must never reach a machine). */
  forged(wire: W): W;
  /** The same signed message once more, sent by `from`, marked as a replay for the observer. */
  replay(from: number, original: W): W;
  publishWire(from: number, topic: number, wire: W): void;
  sendWire(from: number, to: number, wire: W): void;
  at(atMs: number, run: () => void): void;
  masterOf(topic: number): number;
  projectId(topic: number): string;
  /** The topic (project index) of a project id. */
  topicOf(project: string): number | undefined;
  jobSpec(deadlineAbsMs: number, durationMs: number): Record<string, unknown>;
  durationMs(): number;
  count(counter: ActorCounter): void;
  /** A colluding identity of `group` was awarded a run of the shard: its partners there lie with it. */
  colluded(group: number, index: number, jobId: string, shard: number): void;
  /** The machine an honest volunteer describes in its offers: a throwaway claims the same. */
  readonly dimensions: Readonly<Record<string, unknown>>;
  /** The projects (topics) of the mesh. */
  projectsCount(): number;
  /** When actors stop acting (the end of the scenario's duration). */
  readonly endMs: number;
  signerOf(wire: W): string | null;
}

export class Spammer<W extends { readonly body: unknown; readonly domain: string }> {
  private seq = 0;
  private readonly world: ActorWorld<W>;
  readonly index: number;
  constructor(world: ActorWorld<W>, index: number) {
    this.world = world;
    this.index = index;
  }

  /** Gossip for workers reached the spammer: an announcement draws a bid, whatever its probability said. */
  heard(wire: W, topic: number): void {
    if (this.world.signerOf(wire) === null) return;
    const announcement = announcementOf(wire.domain as MessageDomainName, wire.body);
    if (announcement === null) return;
    const world = this.world;
    world.count("spamBids");
    const body = {
      issuedAtMs: world.absMs(),
      expiresAtMs: world.absMs() + 60_000,
      seq: this.seq++,
      project: announcement.project,
      jobId: announcement.jobId,
      round: announcement.round,
      availability: "eager",
      runningJobs: 0,
      freeSlots: 1,
      cachedInputBytes: 0,
    };
    world.sendWire(this.index, world.masterOf(topic), world.wire(this.index, { domain: "bid", body }));
  }
}

export function startForger<W extends { readonly body: unknown; readonly domain: string }>(
  world: ActorWorld<W>,
  index: number,
  topic: number,
  number: number,
  perHour: number,
  endMs: number,
): void {
  if (perHour <= 0) return;
  let count = 0;
  let seq = 0;
  const forge = () => {
    if (world.nowMs() >= endMs) return;
    const tampered = count++ % 2 === 0;
    const body = {
      issuedAtMs: world.absMs(),
      expiresAtMs: world.absMs() + 600_000,
      seq: seq++,
      project: world.projectId(topic),
      jobId: `forged-${number}-${count}`,
      job: world.jobSpec(world.absMs() + hourMs, 60_000),
      round: 0,
      bidProbability: 1,
      wantedRuns: 1,
      eligiblePoolEstimate: 1,
    };
    world.count("forgeriesSent");
    // Tampered: claims to be a valid announcement but the signature is broken. Otherwise: well signed, by a key the
    // project never delegated.
    world.publishWire(index, topic, world.forged(world.wire(index, { domain: "jobAnnouncement", body }, tampered)));
    world.at(world.nowMs() + Math.max(1, Math.round(exponential(world.rng, hourMs / perHour))), forge);
  };
  world.at(Math.round(exponential(world.rng, hourMs / perHour)), forge);
}

/** Keeps a recorded wire, forgetting the oldest beyond maxRecordedWiresCount. */
function keep<W>(recorded: W[], wire: W): void {
  recorded.push(wire);
  if (recorded.length > maxRecordedWiresCount) recorded.shift();
}

export class Replayer<W extends { readonly body: unknown; readonly domain: string }> {
  /** What it heard on the topic: the master's messages. */
  private readonly recorded: W[] = [];
  /** What it overheard reaching the master directly: workers' messages. */
  private readonly overheardWires: W[] = [];
  private readonly world: ActorWorld<W>;
  readonly index: number;
  readonly topic: number;
  constructor(world: ActorWorld<W>, index: number, topic: number) {
    this.world = world;
    this.index = index;
    this.topic = topic;
  }

  /** Gossip on its topic reached it. */
  heard(wire: W): void {
    keep(this.recorded, wire);
  }

  /** A worker's direct message to the master passed it on the way. */
  overheard(wire: W): void {
    keep(this.overheardWires, wire);
  }

  start(perHour: number, endMs: number): void {
    if (perHour <= 0) return;
    const world = this.world;
    const replay = () => {
      if (world.nowMs() >= endMs) return;
      // One of the master's messages and one of a worker's, each on the topic and straight to the master.
      for (const recorded of [this.recorded, this.overheardWires]) {
        if (recorded.length === 0) continue;
        const original = recorded[Math.floor(world.rng() * recorded.length)] as W;
        world.count("replaysSent");
        world.publishWire(this.index, this.topic, world.replay(this.index, original));
        world.sendWire(this.index, world.masterOf(this.topic), world.replay(this.index, original));
      }
      world.at(world.nowMs() + Math.max(1, Math.round(exponential(world.rng, hourMs / perHour))), replay);
    };
    world.at(Math.round(exponential(world.rng, hourMs / perHour)), replay);
  }
}

export class Throwaway<W extends { readonly body: unknown; readonly domain: string }> {
  private seq = 0;
  private readonly world: ActorWorld<W>;
  readonly index: number;
  readonly group: number;
  /** The group's shared wrong outputs digest. */
  private readonly digest: string;
  private readonly reportAfterMs: number;
  /** The start of this identity's offers (their epoch). */
  private epochMs = 0;
  /** Awards had from each project's master (by topic). */
  private readonly awardsSeen = new Map<number, number>();
  constructor(world: ActorWorld<W>, index: number, group: number, digest: string, reportAfterMs: number) {
    this.world = world;
    this.index = index;
    this.group = group;
    this.digest = digest;
    this.reportAfterMs = reportAfterMs;
  }

  private header(lifetimeMs = throwawayMessageLifetimeMs): { issuedAtMs: number; expiresAtMs: number; seq: number } {
    const nowMs = this.world.absMs();
    return { issuedAtMs: nowMs, expiresAtMs: nowMs + lifetimeMs, seq: this.seq++ };
  }

  /** Joined: offers every project's master its slots, renewed until the actors stop. */
  start(): void {
    const world = this.world;
    this.epochMs = world.absMs();
    const renew = () => {
      if (world.nowMs() >= world.endMs) return;
      for (let topic = 0; topic < world.projectsCount(); topic++) this.offer(topic);
      world.at(world.nowMs() + Math.floor((throwawayOfferLifetimeMs * 3) / 4), renew);
    };
    renew();
  }

  /** A standing offer of every slot to the project's master, saying how many of its awards it has had. */
  private offer(topic: number): void {
    const world = this.world;
    const body = {
      ...this.header(throwawayOfferLifetimeMs),
      project: world.projectId(topic),
      freeSlots: throwawayOfferSlotsCount,
      totalSlots: throwawayOfferSlotsCount,
      availability: "eager",
      network: false,
      epoch: this.epochMs,
      awardsSeen: this.awardsSeen.get(topic) ?? 0,
      dimensions: world.dimensions,
      specs: [],
    };
    world.sendWire(this.index, world.masterOf(topic), world.wire(this.index, { domain: "offer", body }));
  }

  /** An announcement draws a bid, whatever its probability said, claiming every input held and nothing running. */
  heard(wire: W, topic: number): void {
    if (this.world.signerOf(wire) === null) return;
    const announcement = announcementOf(wire.domain as MessageDomainName, wire.body);
    if (announcement === null) return;
    const world = this.world;
    world.count("throwawayBids");
    const body = {
      ...this.header(),
      project: announcement.project,
      jobId: announcement.jobId,
      round: announcement.round,
      availability: "eager",
      runningJobs: 0,
      freeSlots: 1,
      cachedInputBytes: maxCachedInputBytes,
    };
    world.sendWire(this.index, world.masterOf(topic), world.wire(this.index, { domain: "bid", body }));
  }

  /** A direct message reached it: an award is answered with the group's digest, without a run. */
  direct(wire: W): void {
    const award = awardOf(wire.domain as MessageDomainName, wire.body);
    if (award === null || this.world.signerOf(wire) === null) return;
    const world = this.world;
    const topic = world.topicOf(award.project);
    if (topic === undefined) return;
    world.count("throwawayAwards");
    world.colluded(this.group, this.index, award.jobId, award.shard);
    this.awardsSeen.set(topic, (this.awardsSeen.get(topic) ?? 0) + 1);
    // Offer the slots again at once: the attacker wants every run it can get.
    if (world.nowMs() < world.endMs) this.offer(topic);
    world.at(world.nowMs() + this.reportAfterMs, () => {
      world.count("wrongResultsSent");
      const body = {
        ...this.header(),
        project: award.project,
        jobId: award.jobId,
        attempt: award.attempt,
        shard: award.shard,
        exitCode: 0,
        outcome: "succeeded",
        outputsDigest: this.digest,
        logDigest: null,
        summary: "succeeded",
        durationMs: this.reportAfterMs,
      };
      world.sendWire(this.index, world.masterOf(topic), world.wire(this.index, { domain: "result", body }));
    });
  }
}
