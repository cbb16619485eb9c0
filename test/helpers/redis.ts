import { randomBytes } from 'node:crypto';
import type { TestContext } from 'node:test';
import { Redis } from 'ioredis';
import { tcpProxy, type TcpProxy } from './tcp-proxy.js';

/** The Redis the tests use (TEST_REDIS_URL, or the local one). */
export const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

/** A REDIS_PREFIX of the test's own, its keys deleted when the test ends. */
export function redisPrefix(t: TestContext): string {
  const prefix = `svctest-${randomBytes(6).toString('hex')}`;
  t.after(async () => {
    const redis = new Redis(REDIS_URL, { lazyConnect: true });
    try {
      await redis.connect();
      const keys = await redis.keys(`${prefix}:*`);
      if (keys.length > 0) await redis.del(...keys);
    } finally {
      redis.disconnect();
    }
  });
  return prefix;
}

/** A proxy in front of the tests' Redis that a test can cut and restore (Redis going away and coming back). */
export async function redisProxy(t: TestContext): Promise<TcpProxy & { url: string }> {
  const target = new URL(REDIS_URL);
  const proxy = await tcpProxy(t, target.hostname, Number(target.port || 6379));
  return Object.assign(proxy, {
    get url() {
      const url = new URL(REDIS_URL);
      url.port = String(proxy.port);
      return url.toString();
    },
  });
}
