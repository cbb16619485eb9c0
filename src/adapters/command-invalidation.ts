import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { maskUrl } from '../config.js';
import { DomainError } from '../domain/shared/errors.js';
import { VERSION_TTL_SECONDS, versionKey } from './two-level-cache.js';

// A command waits this long for Redis, once: an operator at a terminal, not a request.
const TIMEOUT_MS = 2_000;

export interface CommandInvalidationOptions {
  /** REDIS_URL */
  url: string;
  /** REDIS_PREFIX */
  prefix: string;
  /** USER_STANDING_TTL_SECONDS: what holds for the running instances if Redis cannot be told. */
  standingTtlSeconds: number;
}

/**
 * How a command (`svc users disable`, `enable`, `set-role`) tells every running `svc serve` that it
 * changed what they cache: it sets new values for the versions it changed in Redis, the keys
 * TwoLevelCache checks on every cached read, over a connection of its own made for that (most
 * commands change nothing cached and never connect). svc serve owes a failed invalidation and pays
 * it when Redis answers again (the epoch); a command ends, so it cannot: when Redis does not answer
 * it throws `unavailable` (exit 6) saying that the change is saved and what holds until it is told.
 */
export async function invalidateFromCommand(options: CommandInvalidationOptions, changed: readonly string[]): Promise<void> {
  if (changed.length === 0) return;
  const client = new Redis(options.url, {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    connectTimeout: TIMEOUT_MS,
    commandTimeout: TIMEOUT_MS,
  });
  // Reported by the throw below, once; ioredis would print unhandled 'error' events.
  client.on('error', () => undefined);
  const key = (...parts: string[]) => `${options.prefix}:${parts.join(':')}`;
  try {
    await client.connect();
    const batch = client.multi();
    for (const version of new Set(changed)) batch.set(versionKey({ key }, version), `cli.${randomBytes(9).toString('hex')}`, 'EX', VERSION_TTL_SECONDS);
    const results = await batch.exec();
    const failed = results?.find(([err]) => err)?.[0];
    if (!results || failed) throw failed ?? new Error('the invalidation was not applied');
  } catch (err) {
    throw new DomainError(
      'unavailable',
      `the change is saved, but Redis (REDIS_URL ${maskUrl(options.url)}) did not answer (${(err as Error).message}), so the running svc serve ` +
        `instances were not told: they apply it within USER_STANDING_TTL_SECONDS (${options.standingTtlSeconds} s) instead of at once. ` +
        'Run the same command again once Redis answers to apply it at once',
      { redis: 'unreachable' },
    );
  } finally {
    client.disconnect();
  }
}
