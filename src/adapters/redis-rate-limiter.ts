import { decide, InProcessRateLimiter, windowIndex, type RateLimitDecision, type RateLimiter, type RateLimitRule } from '../domain/shared/rate-limit.js';
import type { RedisConnection } from './redis.js';

// The sliding window of rate-limit.ts on Redis, in one atomic step per request: read both windows'
// counters, count this request only if it fits, and return the counts read (the caller computes
// the headers from them). The fit test is done here in integer arithmetic (previous * (W - e) +
// current * W + W <= limit * W) so that every instance agrees without floating point.
// rate-limiter-flexible's Redis limiters are fixed windows and @fastify/rate-limit's store is too,
// which let a client send twice the limit across a window boundary: hence this script.
const SLIDING_WINDOW = `
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local elapsed = tonumber(ARGV[3])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local previous = tonumber(redis.call('GET', KEYS[2]) or '0')
if previous * (window - elapsed) + (current + 1) * window <= limit * window then
  redis.call('INCR', KEYS[1])
  redis.call('PEXPIRE', KEYS[1], window * 2)
  return {1, current, previous}
end
return {0, current, previous}
`;

type SlidingWindowCommand = (current: string, previous: string, windowMs: number, limit: number, elapsedMs: number) => Promise<[number, number, number]>;

/**
 * Rate limits shared by every instance through Redis, falling back to this process's own windows
 * while Redis cannot answer (never an error for the request): the limits then hold per instance.
 */
export class RedisRateLimiter implements RateLimiter {
  private readonly local = new InProcessRateLimiter();

  constructor(private readonly redis: RedisConnection) {
    redis.client.defineCommand('svcSlidingWindow', { numberOfKeys: 2, lua: SLIDING_WINDOW });
  }

  async consume(rule: RateLimitRule, id: string, nowMs: number): Promise<RateLimitDecision> {
    if (!this.redis.available()) return this.local.consume(rule, id, nowMs);
    const window = windowIndex(rule, nowMs);
    const key = this.redis.key('rl', rule.name, String(rule.windowMs), id);
    try {
      const run = (this.redis.client as unknown as { svcSlidingWindow: SlidingWindowCommand }).svcSlidingWindow;
      const [allowed, current, previous] = await run.call(
        this.redis.client,
        `${key}:${window}`,
        `${key}:${window - 1}`,
        rule.windowMs,
        rule.limit,
        nowMs - window * rule.windowMs,
      );
      this.redis.succeeded();
      return decide(rule, { current, previous }, nowMs, allowed === 1);
    } catch (err) {
      // A timeout or a connection lost mid-command: this instance counts alone for now (one warning per outage).
      this.redis.failed(err as Error);
      return this.local.consume(rule, id, nowMs);
    }
  }
}
