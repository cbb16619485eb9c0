import { ReadYourWrites, type WriteWindows } from '../domain/shared/read-your-writes.js';
import type { RedisConnection } from './redis.js';

/**
 * Read your own writes across svc serve instances (REDIS_URL): a write sets a key per caller that
 * expires with the window, so a read through any instance sees it. A read asks this process first
 * (its own writes, and what Redis told it), then Redis. Redis failing never fails a request and
 * never risks a stale read: while it is unreachable every read goes to the primary, and for one
 * window after its connection is back too (a write made meanwhile may not be in Redis, or Redis may
 * have lost its keys); the writes this process recorded meanwhile are written to Redis again when it
 * answers again.
 */
export class RedisReadYourWrites implements WriteWindows {
  private readonly local: ReadYourWrites;
  /** Every read goes to the primary until then: Redis has just come back. */
  private primaryUntil = 0;

  constructor(
    private readonly redis: RedisConnection,
    private readonly windowMs: number,
    private readonly now: () => number = Date.now,
  ) {
    this.local = new ReadYourWrites(windowMs, now);
    redis.onReconnect((dropped) => {
      // A lost connection may mean a Redis that restarted without its keys: nothing it says is sure
      // for a window. Commands that only timed out on a connection that stayed up (a busy machine)
      // lost nothing but what this process failed to write, which goes back now.
      if (dropped) this.primaryUntil = this.now() + windowMs;
      void this.republish();
    });
  }

  private key(actor: string): string {
    return this.redis.key('ryw', actor);
  }

  /** Recorded here at once, then in Redis (awaited, so that the caller's next request, on any instance, sees it). */
  async wrote(actor: string): Promise<void> {
    this.local.wrote(actor);
    if (!this.redis.available()) return;
    try {
      await this.redis.client.set(this.key(actor), '1', 'PX', this.windowMs);
      this.redis.succeeded();
    } catch (err) {
      // A timeout or the connection lost: republished when Redis is back; reads go to the primary meanwhile.
      this.redis.failed(err as Error);
    }
  }

  async mayReadReplica(actor: string): Promise<boolean> {
    if (!this.local.mayReadReplica(actor)) return false;
    if (!this.redis.available() || this.now() < this.primaryUntil) return false;
    try {
      const left = await this.redis.client.pttl(this.key(actor));
      this.redis.succeeded();
      if (left === -2) return true;
      // Written through another instance within the window: this one remembers it for the rest of it.
      if (left > 0) this.local.wrote(actor, this.now() + left - this.windowMs);
      return false;
    } catch (err) {
      this.redis.failed(err as Error);
      return false;
    }
  }

  /** The windows this process knows of, into Redis again (never shortening one another instance set). */
  private async republish(): Promise<void> {
    const open = this.local.open();
    if (open.length === 0) return;
    const batch = this.redis.client.multi();
    for (const [actor, left] of open) {
      batch.set(this.key(actor), '1', 'PX', left, 'NX');
      batch.pexpire(this.key(actor), left, 'GT');
    }
    try {
      await batch.exec();
      this.redis.succeeded();
    } catch (err) {
      this.redis.failed(err as Error);
    }
  }
}
