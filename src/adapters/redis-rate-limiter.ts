import { decide, InProcessRateLimiter, windowIndex, type RateLimitDecision, type RateLimiter, type RateLimitRule } from '../domain/shared/rate-limit.js';
import type { RedisConnection } from './redis.js';

// The sliding window of rate-limit.ts on Redis, in one atomic step per request: read both windows'
// counters, count this request only if it fits, and return the counts read (the caller computes
// the headers from them). The fit test is done here in integer arithmetic (previous * (W - e) +
// current * W + W <= limit * W) so that every instance agrees without floating point. The requests
// of a turn of the event loop go in one run, in order (see RedisConnection.batched): KEYS are each
// request's current and previous window counters, ARGV its window, limit and time into the window;
// the answer is each request's verdict and the counts it read.
// rate-limiter-flexible's Redis limiters are fixed windows and @fastify/rate-limit's store is too,
// which let a client send twice the limit across a window boundary: hence this script.
const SLIDING_WINDOW = `
local out = {}
for i = 1, #KEYS / 2 do
  local window = tonumber(ARGV[3 * i - 2])
  local limit = tonumber(ARGV[3 * i - 1])
  local elapsed = tonumber(ARGV[3 * i])
  local current = tonumber(redis.call('GET', KEYS[2 * i - 1]) or '0')
  local previous = tonumber(redis.call('GET', KEYS[2 * i]) or '0')
  local allowed = 0
  if previous * (window - elapsed) + (current + 1) * window <= limit * window then
    redis.call('INCR', KEYS[2 * i - 1])
    redis.call('PEXPIRE', KEYS[2 * i - 1], window * 2)
    allowed = 1
  end
  out[3 * i - 2] = allowed
  out[3 * i - 1] = current
  out[3 * i] = previous
end
return out
`;

interface Consume {
  current: string;
  previous: string;
  windowMs: number;
  limit: number;
  elapsedMs: number;
}

/**
 * Rate limits shared by every instance through Redis, falling back to this process's own windows
 * while Redis cannot answer (never an error for the request): the limits then hold per instance.
 */
export class RedisRateLimiter implements RateLimiter {
  private readonly local = new InProcessRateLimiter();
  private readonly slide: (consume: Consume) => Promise<[number, number, number]>;

  constructor(private readonly redis: RedisConnection) {
    this.slide = redis.batched<Consume, [number, number, number]>({
      name: 'svcSlidingWindow',
      lua: SLIDING_WINDOW,
      encode: (calls) => ({
        keys: calls.flatMap((c) => [c.current, c.previous]),
        args: calls.flatMap((c) => [c.windowMs, c.limit, c.elapsedMs]),
      }),
      decode: (reply, calls) => calls.map((_, i) => [Number(reply[3 * i]), Number(reply[3 * i + 1]), Number(reply[3 * i + 2])]),
    });
  }

  async consume(rule: RateLimitRule, id: string, nowMs: number): Promise<RateLimitDecision> {
    if (!this.redis.available()) return this.local.consume(rule, id, nowMs);
    const window = windowIndex(rule, nowMs);
    const key = this.redis.key('rl', rule.name, String(rule.windowMs), id);
    try {
      const [allowed, current, previous] = await this.slide({
        current: `${key}:${window}`,
        previous: `${key}:${window - 1}`,
        windowMs: rule.windowMs,
        limit: rule.limit,
        elapsedMs: nowMs - window * rule.windowMs,
      });
      this.redis.succeeded();
      return decide(rule, { current, previous }, nowMs, allowed === 1);
    } catch (err) {
      // A timeout or a connection lost mid-command: this instance counts alone for now (one warning per outage).
      this.redis.failed(err as Error);
      return this.local.consume(rule, id, nowMs);
    }
  }
}
