/**
 * Rate limits as sliding windows. Each limit keeps two counters per client: the requests of the
 * current fixed window and of the one before; the count "within the last window" is the previous
 * window's count weighted by how much of it still overlaps the sliding window, plus the current
 * one's. It slides (a burst at the end of one minute still counts early in the next) at O(1) memory
 * per client, where an exact log of timestamps would keep up to `limit` entries per client.
 */

/** One limit: at most `limit` requests per `windowMs`, per client of `name` (an address, an API key). */
export interface RateLimitRule {
  /** The policy's name in the RateLimit headers ("ip", "auth", "api-key"). */
  name: string;
  limit: number;
  windowMs: number;
}

/** The outcome of one request against one rule. */
export interface RateLimitDecision {
  allowed: boolean;
  rule: RateLimitRule;
  /** Requests left in the window after this one (0 when refused). */
  remaining: number;
  /** Seconds until the quota is fully available again (allowed), or until a request would pass (refused). */
  resetSeconds: number;
}

/** Counts requests against sliding-window rules (in this process, or shared through Redis). */
export interface RateLimiter {
  /** Counts one request of client `id` against `rule` at `nowMs` unless that would exceed the limit, and says which. */
  consume(rule: RateLimitRule, id: string, nowMs: number): Promise<RateLimitDecision>;
}

/** The counters of one client for one rule, as read before this request. */
export interface WindowCounts {
  current: number;
  previous: number;
}

/** The fixed window `nowMs` falls in. */
export const windowIndex = (rule: RateLimitRule, nowMs: number): number => Math.floor(nowMs / rule.windowMs);

/** Requests counted in the sliding window ending at `nowMs`. */
function estimate(rule: RateLimitRule, counts: WindowCounts, nowMs: number): number {
  const elapsed = nowMs - windowIndex(rule, nowMs) * rule.windowMs;
  return (counts.previous * (rule.windowMs - elapsed)) / rule.windowMs + counts.current;
}

/**
 * Whether one more request fits, given the counts before it: previous * (W - elapsed) / W + current + 1
 * <= limit, in integers (the Redis script makes the same test, so instances agree to the request).
 */
export function fits(rule: RateLimitRule, counts: WindowCounts, nowMs: number): boolean {
  const elapsed = nowMs - windowIndex(rule, nowMs) * rule.windowMs;
  return counts.previous * (rule.windowMs - elapsed) + (counts.current + 1) * rule.windowMs <= rule.limit * rule.windowMs;
}

/**
 * The decision for a request given the counts before it (`allowed`: it was counted). A refused
 * request is not counted, so a client that keeps retrying gets through as soon as the window has
 * slid far enough, and Retry-After says when that is.
 */
export function decide(rule: RateLimitRule, before: WindowCounts, nowMs: number, allowed: boolean): RateLimitDecision {
  const start = windowIndex(rule, nowMs) * rule.windowMs;
  if (allowed) {
    const after = { current: before.current + 1, previous: before.previous };
    const remaining = Math.max(0, Math.floor(rule.limit - estimate(rule, after, nowMs)));
    // The previous window stops counting at the end of this one; this one's requests a window later.
    const resetMs = after.current > 0 ? start + 2 * rule.windowMs - nowMs : start + rule.windowMs - nowMs;
    return { allowed, rule, remaining, resetSeconds: Math.max(1, Math.ceil(resetMs / 1000)) };
  }
  return { allowed, rule, remaining: 0, resetSeconds: Math.max(1, Math.ceil(waitMs(rule, before, nowMs) / 1000)) };
}

/** How long until one more request fits: the previous window's weight has to fall far enough. */
function waitMs(rule: RateLimitRule, counts: WindowCounts, nowMs: number): number {
  const start = windowIndex(rule, nowMs) * rule.windowMs;
  const room = rule.limit - 1 - counts.current;
  if (room >= 0 && counts.previous > 0) {
    // previous * (W - e) / W <= room  ⇔  e >= W * (1 - room / previous)
    const e = Math.ceil((rule.windowMs * (counts.previous - room)) / counts.previous);
    return Math.max(0, start + e - nowMs);
  }
  // This window alone is full: in the next one, this window's count is the one that decays.
  const e = counts.current > 0 ? Math.ceil((rule.windowMs * (counts.current - (rule.limit - 1))) / counts.current) : 0;
  return start + rule.windowMs + Math.max(0, e) - nowMs;
}

interface Counter {
  window: number;
  current: number;
  previous: number;
  windowMs: number;
}

/**
 * The sliding windows in this process: svc serve's limiter without REDIS_URL (one instance), and
 * each instance's own while Redis is unreachable. Idle clients are forgotten once their windows
 * have passed, so memory follows the clients of the last two windows.
 */
export class InProcessRateLimiter implements RateLimiter {
  private readonly counters = new Map<string, Counter>();
  private lastSweep = 0;

  consume(rule: RateLimitRule, id: string, nowMs: number): Promise<RateLimitDecision> {
    this.sweep(nowMs);
    const key = `${rule.name}:${id}`;
    const window = windowIndex(rule, nowMs);
    let counter = this.counters.get(key);
    if (!counter) {
      counter = { window, current: 0, previous: 0, windowMs: rule.windowMs };
      this.counters.set(key, counter);
    } else if (counter.window !== window) {
      counter.previous = counter.window === window - 1 ? counter.current : 0;
      counter.current = 0;
      counter.window = window;
    }
    const before = { current: counter.current, previous: counter.previous };
    const allowed = fits(rule, before, nowMs);
    if (allowed) counter.current++;
    return Promise.resolve(decide(rule, before, nowMs, allowed));
  }

  private sweep(nowMs: number): void {
    if (nowMs - this.lastSweep < 60_000) return;
    this.lastSweep = nowMs;
    for (const [key, c] of this.counters) {
      if ((c.window + 2) * c.windowMs <= nowMs) this.counters.delete(key);
    }
  }
}
