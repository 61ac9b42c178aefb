/**
 * What a peer has cost this node, remembered for a while: a bounded table of
 * penalty points per peer that decay with a half-life, and the bans of peers
 * that went past a bound. The host turns the points into gossipsub's
 * application-specific score (P5), so a peer that floods or sends what is
 * refused falls below gossipsub's thresholds (at 10 points no gossip to it, at
 * 50 nothing published to it), and at banPoints it is hung up on and refused
 * for banMs. banPoints is gossipsub's graylist threshold: past it gossipsub
 * would drop the peer's messages before they reach our validators, so no
 * further offence could be counted and a slow flood would sit graylisted but
 * connected for ever; it is cut off instead.
 *
 * The table survives disconnections: gossipsub forgets a peer's score when it
 * reconnects (its PeerScore.addPeer starts afresh), this record does not.
 *
 * Costs are per offence, chosen so that an honest peer never comes near the
 * thresholds: points decay with a half-life of penaltyHalfLifeMs, so a steady
 * rate r of offences holds about r × penaltyHalfLifeMs / ln 2 points; reaching
 * banPoints takes about one ignored message per second, sustained for a
 * minute, from one peer, or eight forgeries. A flood of stale messages is
 * banned within its first hundred. A message over the rate limit costs less:
 * it says the peer sends much, not that what it sends is bad (an honest relay
 * on a busy topic may overrun the limit for a moment), so a pure volume flood
 * is banned after a few hundred dropped messages.
 */

/** What a peer did that costs it. */
export type Offence =
  /** A message admission rejected as forged (bad signature, wrong signer, not allowed on its channel). */
  | "forged"
  /** A message admission ignored for what the sender did (expired, not yet valid, replayed). */
  | "useless"
  /** A message or stream over the peer's rate limit, dropped unread. */
  | "flooding"
  /** A direct stream broken before its request was read (oversize, malformed framing, too slow). */
  | "broken-stream";

/** Points per offence. */
export const offenceCosts: Readonly<Record<Offence, number>> = {
  forged: 10,
  useless: 1,
  flooding: 0.2,
  "broken-stream": 2,
};

/** Points halve in this time. */
export const penaltyHalfLifeMs = 60_000;
/** At this many points a peer is hung up on and refused for banMs: gossipsub's graylist threshold (−80) as points. */
export const banPoints = 80;
/** How long a banned peer is refused (connections both ways, gossip, direct streams). */
export const banMs = 10 * 60_000;
/** Points stop growing here, so a peer that flooded comes back to zero within a bounded time after its ban. */
export const maxPenaltyPoints = 2 * banPoints;
/** Peers whose points are remembered at once; when full, the one with the fewest points is forgotten. */
export const maxPenalizedPeers = 4096;
/** Bans remembered at once; when full, the one that ends first is lifted. */
export const maxBannedPeers = 4096;
/** Points below this are forgotten (the entry is dropped). */
export const forgottenBelowPoints = 0.5;

export interface PenaltyLimits {
  readonly halfLifeMs: number;
  readonly banPoints: number;
  readonly banMs: number;
}

export const defaultPenaltyLimits: PenaltyLimits = { halfLifeMs: penaltyHalfLifeMs, banPoints, banMs };

interface Entry {
  points: number;
  atMs: number;
  /** Offences counted since the entry was made, per kind: for status and logs. */
  readonly offences: Partial<Record<Offence, number>>;
}

/** One peer's record, as status shows it. */
export interface PenaltyView {
  readonly peer: string;
  readonly points: number;
  readonly offences: Partial<Record<Offence, number>>;
}

/** What charge() did: the peer's points after it, and whether it was banned by it. */
export interface Charged {
  readonly points: number;
  readonly banned: boolean;
}

export class PeerPenalties {
  readonly limits: PenaltyLimits;
  private readonly entries = new Map<string, Entry>();
  private readonly bans = new Map<string, number>();
  private readonly exempt = new Set<string>();
  /** Bans since the table was made. */
  bansTotal = 0;

  constructor(limits: PenaltyLimits = defaultPenaltyLimits) {
    this.limits = limits;
  }

  /** A peer never charged (this node itself: its own messages go through the same validators). */
  exemptPeer(peer: string): void {
    this.exempt.add(peer);
  }

  /** Adds an offence's cost to a peer's points; bans it when the points pass banPoints. */
  charge(peer: string, offence: Offence, nowMs: number, times = 1): Charged {
    if (this.exempt.has(peer)) return { points: 0, banned: false };
    const entry = this.entry(peer, nowMs);
    entry.points = Math.min(maxPenaltyPoints, entry.points + offenceCosts[offence] * times);
    entry.offences[offence] = (entry.offences[offence] ?? 0) + times;
    if (entry.points < this.limits.banPoints || this.isBanned(peer, nowMs))
      return { points: entry.points, banned: false };
    this.ban(peer, nowMs);
    return { points: entry.points, banned: true };
  }

  /** A peer's points now (decayed). */
  points(peer: string, nowMs: number): number {
    const entry = this.entries.get(peer);
    if (entry === undefined) return 0;
    this.decay(entry, nowMs);
    if (entry.points < forgottenBelowPoints) {
      this.entries.delete(peer);
      return 0;
    }
    return entry.points;
  }

  /** gossipsub's application-specific score of a peer: minus its points (the host weighs it 1). */
  score(peer: string, nowMs: number): number {
    return -this.points(peer, nowMs);
  }

  isBanned(peer: string, nowMs: number): boolean {
    const until = this.bans.get(peer);
    if (until === undefined) return false;
    if (until > nowMs) return true;
    this.bans.delete(peer);
    return false;
  }

  ban(peer: string, nowMs: number): void {
    if (this.exempt.has(peer)) return;
    this.bans.delete(peer);
    this.bans.set(peer, nowMs + this.limits.banMs);
    this.bansTotal++;
    // Every ban lasts banMs, so the Map's order is the order they end: the first ends first.
    while (this.bans.size > maxBannedPeers) this.bans.delete(this.bans.keys().next().value as string);
  }

  /** Until when a peer is banned, or null. */
  bannedUntil(peer: string, nowMs: number): number | null {
    return this.isBanned(peer, nowMs) ? (this.bans.get(peer) as number) : null;
  }

  /** The peers with the most points, most first, and the bans in force. */
  view(nowMs: number, limit: number): { penalized: PenaltyView[]; banned: { peer: string; untilMs: number }[] } {
    const penalized: PenaltyView[] = [];
    for (const [peer, entry] of this.entries) {
      const points = this.points(peer, nowMs);
      if (points > 0) penalized.push({ peer, points: Math.round(points * 10) / 10, offences: { ...entry.offences } });
    }
    penalized.sort((a, b) => b.points - a.points);
    const banned: { peer: string; untilMs: number }[] = [];
    for (const [peer, untilMs] of this.bans) if (untilMs > nowMs) banned.push({ peer, untilMs });
    return { penalized: penalized.slice(0, limit), banned: banned.slice(-limit) };
  }

  get size(): number {
    return this.entries.size;
  }

  private entry(peer: string, nowMs: number): Entry {
    const known = this.entries.get(peer);
    if (known !== undefined) {
      this.decay(known, nowMs);
      return known;
    }
    if (this.entries.size >= maxPenalizedPeers) this.forgetLeast(nowMs);
    const entry: Entry = { points: 0, atMs: nowMs, offences: {} };
    this.entries.set(peer, entry);
    return entry;
  }

  private decay(entry: Entry, nowMs: number): void {
    const elapsedMs = nowMs - entry.atMs;
    if (elapsedMs <= 0) return;
    entry.points *= 2 ** (-elapsedMs / this.limits.halfLifeMs);
    entry.atMs = nowMs;
  }

  /** Makes room: drops the entries decayed to nothing, or else the one with the fewest points. */
  private forgetLeast(nowMs: number): void {
    let least: string | null = null;
    let leastPoints = Number.POSITIVE_INFINITY;
    for (const [peer, entry] of this.entries) {
      this.decay(entry, nowMs);
      if (entry.points < forgottenBelowPoints) {
        this.entries.delete(peer);
        least = null;
        leastPoints = Number.NEGATIVE_INFINITY;
        continue;
      }
      if (entry.points < leastPoints) {
        least = peer;
        leastPoints = entry.points;
      }
    }
    if (this.entries.size >= maxPenalizedPeers && least !== null) this.entries.delete(least);
  }
}
