// Several instances at once (issue 10): two `svc serve` processes on one PostgreSQL and one Redis
// behave as one: no stale read after a write through the other, one shared rate limit, SIGTERM on
// one leaves the other serving, and Redis going away and coming back in the middle of it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { jwksFile } from './helpers/server.js';
import { createApp } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { migratedDatabase } from './helpers/db.js';
import { svcServe, tempDir, type ServeProcess } from './helpers/cli.js';
import { redisPrefix, redisProxy } from './helpers/redis.js';

const LIMIT = 20;

test('two svc serve on one database and Redis: writes never read stale across them, one rate limit, SIGTERM on one leaves the other serving', async (t) => {
  const dir = tempDir(t);
  const keys = await jwksFile(t);
  const proxy = await redisProxy(t);
  const env = {
    DATABASE_URL: await migratedDatabase(t),
    JWT_KEYS_FILE: keys,
    SVC_DATA_DIR: join(dir, 'data'),
    REDIS_URL: proxy.url,
    REDIS_PREFIX: redisPrefix(t),
    RATE_LIMIT_IP_PER_MINUTE: String(LIMIT),
    // The test is every client: X-Forwarded-For from loopback (the "balancer") names which one.
    TRUSTED_PROXIES: '127.0.0.1',
    LOG_LEVEL: 'info',
  };
  const admin = await createApp(loadConfig(env), { logger: (await import('../src/logger.js')).createLogger('silent') });
  t.after(() => admin.close());
  const user = await admin.users.create(admin.context({ actor: 'cli:test' }), { email: 'admin@example.com', name: 'Admin', role: 'admin' });
  const authorization = `Bearer ${await admin.tokens.sign({ sub: user.id, role: user.role })}`;

  const a = await svcServe(t, ['--port', '0'], { env });
  const b = await svcServe(t, ['--port', '0'], { env });

  let client = 0;
  /** A request from a client address of its own (so only the rate-limit part below meets the limit). */
  const call = (server: ServeProcess, method: string, path: string, body?: unknown, from = `10.0.${Math.floor(++client / 250)}.${client % 250}`) =>
    fetch(`${server.url}${path}`, {
      method,
      headers: { authorization, 'x-forwarded-for': from, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
  const json = async (res: Response) => {
    assert.ok(res.ok, `${res.status} ${await res.clone().text()}`);
    return (await res.json()) as Record<string, unknown>;
  };

  // One shared limit: the (LIMIT+1)th request of one client within the minute fails on whichever instance gets it.
  // The window slides: a burst split by a minute boundary counts its first part a little less, so
  // it starts well inside a minute (waiting on the clock, not on the service).
  while (Date.now() % 60_000 > 45_000) await new Promise((resolve) => setTimeout(resolve, 250));
  const statuses: number[] = [];
  for (let i = 0; i < LIMIT; i++) statuses.push((await call(i % 2 ? b : a, 'GET', '/api/v2/products', undefined, '203.0.113.9')).status);
  assert.deepEqual(statuses, Array<number>(LIMIT).fill(200));
  const refusedA = await call(a, 'GET', '/api/v2/products', undefined, '203.0.113.9');
  const refusedB = await call(b, 'GET', '/api/v2/products', undefined, '203.0.113.9');
  assert.deepEqual([refusedA.status, refusedB.status], [429, 429]);
  assert.ok(Number(refusedB.headers.get('retry-after')) >= 1);
  assert.equal(refusedB.headers.get('ratelimit-policy'), `"ip";q=${LIMIT};w=60`);

  // Writes through one are read fresh through the other, at once, every time.
  const created = await json(await call(a, 'POST', '/api/v2/products', { sku: 'LAMP-1', name: 'Lamp', price: { amount: 3000, currency: 'EUR' }, stock: 5 }));
  const path = `/api/v2/products/${String(created.id)}`;
  for (let round = 1; round <= 5; round++) {
    const [writer, reader] = round % 2 ? [a, b] : [b, a];
    await json(await call(reader, 'GET', path));
    await json(await call(writer, 'PATCH', path, { stock: round * 10 }));
    assert.equal((await json(await call(reader, 'GET', path))).stock, round * 10, `round ${round}`);
    assert.equal(((await json(await call(reader, 'GET', '/api/v2/products'))).data as { stock: number }[])[0]!.stock, round * 10);
  }

  // Redis goes away: both keep serving (from the database), still fresh; then it comes back.
  await proxy.down();
  await Promise.all([a, b].map((s) => s.waitForStderr(/Redis \(REDIS_URL\) is unreachable/)));
  await json(await call(a, 'PATCH', path, { name: 'Lamp (offline)' }));
  assert.equal((await json(await call(b, 'GET', path))).name, 'Lamp (offline)');
  await proxy.up();
  await Promise.all([a, b].map((s) => s.waitForStderr(/Redis \(REDIS_URL\) is reachable again/)));
  assert.equal((await json(await call(b, 'GET', path))).name, 'Lamp (offline)');
  await json(await call(b, 'PATCH', path, { name: 'Lamp (online)' }));
  assert.equal((await json(await call(a, 'GET', path))).name, 'Lamp (online)');
  for (const s of [a, b]) assert.equal(s.stderr().match(/Redis \(REDIS_URL\) is unreachable/g)?.length, 1, 'one warning per outage');

  // SIGTERM on one: it stops cleanly, the other goes on serving reads and writes.
  a.child.kill('SIGTERM');
  assert.deepEqual(await a.exited, { code: 0, signal: null });
  await json(await call(b, 'PATCH', path, { stock: 1 }));
  assert.equal((await json(await call(b, 'GET', path))).stock, 1);
  assert.equal((await call(b, 'GET', '/health/ready')).status, 200);
});
