/**
 * Per-peer limits of the host, and a log that a flood cannot fill.
 *
 * - RateLimiter: one token bucket per key (a peer id), under a named limit
 *   (burst, refill per second). The table is bounded: when full, the key used
 *   least recently is forgotten, and comes back with a full bucket. A peer that
 *   floods is used most recently, so churn of other keys cannot reset it.
 * - EventLog: writes the first lines of each (event, peer, reason) and of
 *   each event per window, counts the rest, and at the end of the window
 *   writes one `log-suppressed` line per (event, reason) with the count and
 *   the number of peers. A flood of 20,000 messages gives a few lines, not
 *   20,000.
 *
 * Both take the time as an argument (or a clock given at construction), so
 * unit tests drive them without waiting.
 */

/** A token bucket's shape: up to `burst` at once, then `perSecond` on average. */
export interface RateLimit {
  readonly burst: number;
  readonly perSecond: number;
}

/** Keys a RateLimiter tracks at most; the least recently used is forgotten first. */
export const maxRateLimitedKeys = 4096;

interface Bucket {
  tokens: number;
  atMs: number;
}

export class RateLimiter {
  readonly limit: RateLimit;
  private readonly maxKeys: number;
  private readonly buckets = new Map<string, Bucket>();

  constructor(limit: RateLimit, maxKeys = maxRateLimitedKeys) {
    if (!(limit.burst >= 1) || !(limit.perSecond > 0))
      throw new RangeError(`rate limit: expected burst >= 1 and perSecond > 0, got ${JSON.stringify(limit)}`);
    if (!Number.isInteger(maxKeys) || maxKeys < 1)
      throw new RangeError(`rate limiter keys: expected a positive integer, got ${maxKeys}`);
    this.limit = limit;
    this.maxKeys = maxKeys;
  }

  get size(): number {
    return this.buckets.size;
  }

  /** Takes one token now; false (nothing taken) when the bucket is empty. */
  take(key: string, nowMs: number): boolean {
    return this.reserve(key, nowMs, 0) === 0;
  }

  /**
   * Reserves one token: how long to wait for it (0: at once), or null when the wait would be over maxWaitMs (nothing
   * is reserved then). Reservations run the bucket below zero, so waiting callers are served in turn at the refill rate.
   */
  reserve(key: string, nowMs: number, maxWaitMs: number): number | null {
    const bucket = this.refilled(key, nowMs);
    const waitMs = bucket.tokens >= 1 ? 0 : ((1 - bucket.tokens) / this.limit.perSecond) * 1000;
    if (waitMs > maxWaitMs) return null;
    bucket.tokens -= 1;
    return waitMs;
  }

  private refilled(key: string, nowMs: number): Bucket {
    let bucket = this.buckets.get(key);
    if (bucket === undefined) {
      bucket = { tokens: this.limit.burst, atMs: nowMs };
      while (this.buckets.size >= this.maxKeys) this.buckets.delete(this.buckets.keys().next().value as string);
    } else {
      this.buckets.delete(key); // re-inserted below: the Map's order is the order of use
      const elapsedMs = Math.max(0, nowMs - bucket.atMs);
      bucket.tokens = Math.min(this.limit.burst, bucket.tokens + (elapsedMs / 1000) * this.limit.perSecond);
      bucket.atMs = nowMs;
    }
    this.buckets.set(key, bucket);
    return bucket;
  }
}

/** Lines one (event, peer, reason) may write per window. */
export const logLinesPerKey = 5;
/** Lines one event may write per window, over all peers and reasons. */
export const logLinesPerEvent = 50;
/** The window of the two limits above; the summary of what was held back is written at its end. */
export const logWindowMs = 60_000;
/** (event, peer, reason) keys counted per window; beyond, lines count against the event's limit only. */
export const maxLogKeys = 4096;
/** (event, reason) summaries kept per window; beyond, they are counted under reason "*". */
export const maxLogSummaries = 256;
/** Distinct peers counted per summary; beyond, the count stops (it says "at least"). */
export const maxPeersPerSummary = 1024;

export interface EventLogLimits {
  readonly linesPerKey: number;
  readonly linesPerEvent: number;
  readonly windowMs: number;
}

export const defaultEventLogLimits: EventLogLimits = {
  linesPerKey: logLinesPerKey,
  linesPerEvent: logLinesPerEvent,
  windowMs: logWindowMs,
};

export type LogWrite = (event: string, fields: Record<string, unknown>) => void;

interface Summary {
  readonly event: string;
  readonly reason: string;
  suppressed: number;
  readonly peers: Set<string>;
}

/**
 * A log for events a peer can cause at will (refusals, rate limits). The peer is read from `fields.from` (or
 * `fields.peer`), the reason from `fields.reason`. Call flush() at the end of each window (start() arms a timer that
 * does) and close() when done.
 */
export class EventLog {
  private readonly write: LogWrite;
  private readonly limits: EventLogLimits;
  private readonly clock: () => number;
  private windowStartMs: number;
  private readonly perKey = new Map<string, number>();
  private readonly perEvent = new Map<string, number>();
  private readonly summaries = new Map<string, Summary>();
  private timer: ReturnType<typeof setInterval> | null = null;
  /** Lines held back since the log was made, per event: what status reports. */
  readonly suppressedTotals = new Map<string, number>();

  constructor(write: LogWrite, limits: EventLogLimits = defaultEventLogLimits, clock: () => number = Date.now) {
    this.write = write;
    this.limits = limits;
    this.clock = clock;
    this.windowStartMs = clock();
  }

  /** Writes the summary of each window at its end, on a timer that keeps no process alive. */
  start(): void {
    if (this.timer !== null) return;
    this.timer = setInterval(() => this.flush(), this.limits.windowMs);
    this.timer.unref();
  }

  note(event: string, fields: Record<string, unknown>): void {
    const nowMs = this.clock();
    if (nowMs - this.windowStartMs >= this.limits.windowMs) this.flush(nowMs);
    const peer = String(fields.from ?? fields.peer ?? "");
    const reason = String(fields.reason ?? "");
    const key = `${event}\u0000${peer}\u0000${reason}`;
    const byKey = this.perKey.get(key) ?? 0;
    const byEvent = this.perEvent.get(event) ?? 0;
    if (byKey < this.limits.linesPerKey && byEvent < this.limits.linesPerEvent) {
      if (byKey > 0 || this.perKey.size < maxLogKeys) this.perKey.set(key, byKey + 1);
      this.perEvent.set(event, byEvent + 1);
      this.write(event, fields);
      return;
    }
    this.holdBack(event, reason, peer);
  }

  /** Writes one line per (event, reason) held back in the window, and starts a new window. */
  flush(nowMs = this.clock()): void {
    for (const summary of this.summaries.values())
      this.write("log-suppressed", {
        of: summary.event,
        reason: summary.reason,
        suppressed: summary.suppressed,
        peers: summary.peers.size,
        windowMs: nowMs - this.windowStartMs,
      });
    this.summaries.clear();
    this.perKey.clear();
    this.perEvent.clear();
    this.windowStartMs = nowMs;
  }

  close(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    this.flush();
  }

  private holdBack(event: string, reason: string, peer: string): void {
    this.suppressedTotals.set(event, (this.suppressedTotals.get(event) ?? 0) + 1);
    let id = `${event}\u0000${reason}`;
    if (!this.summaries.has(id) && this.summaries.size >= maxLogSummaries) id = `${event}\u0000*`;
    let summary = this.summaries.get(id);
    if (summary === undefined) {
      summary = { event, reason: id.endsWith("\u0000*") ? "*" : reason, suppressed: 0, peers: new Set() };
      this.summaries.set(id, summary);
    }
    summary.suppressed++;
    if (peer !== "" && summary.peers.size < maxPeersPerSummary) summary.peers.add(peer);
  }
}
