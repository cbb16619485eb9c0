// The two-level cache (issue 10): products and order reads, L1 in each process and L2 in Redis,
// never stale on any instance after a write was acknowledged, bypassed while Redis is away.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, type RunningServer } from '../src/server/serve.js';
import { createApp } from '../src/app.js';
import { transition } from '../src/domain/orders/order-state.js';
import { TwoLevelCache } from '../src/adapters/two-level-cache.js';
import { RedisConnection } from '../src/adapters/redis.js';
import { createLogger } from '../src/logger.js';
import { testServer, type TestServer } from './helpers/server.js';
import { Redis } from 'ioredis';
import { redisPrefix, redisProxy, REDIS_URL } from './helpers/redis.js';

interface Instance {
  inject: RunningServer['server']['inject'];
  app: RunningServer['app'];
}

/** Two svc serve instances on one database and one Redis (in this process, each with its own App and L1). */
async function twoInstances(t: TestContext, redisUrl: string) {
  const a = await testServer(t, { env: { REDIS_URL: redisUrl, REDIS_PREFIX: redisPrefix(t) } });
  const running = await startServer(a.config);
  t.after(() => running.stop());
  const b: Instance = { inject: running.server.inject.bind(running.server), app: running.app };
  const admin = await a.user({ email: 'admin@example.com', role: 'admin' });
  const buyer = await a.user({ email: 'buyer@example.com' });
  return { a, b, adminAuth: await a.auth(admin), buyerAuth: await a.auth(buyer) };
}

async function newProduct(ts: TestServer, auth: Record<string, string>, sku = 'MUG-1', stock = 10): Promise<string> {
  const res = await ts.server.inject({
    method: 'POST',
    url: '/api/v2/products',
    headers: auth,
    payload: { sku, name: 'Mug', price: { amount: 1200, currency: 'USD' }, stock },
  });
  assert.equal(res.statusCode, 201, res.body);
  return res.json<{ id: string }>().id;
}

const read = async (instance: Instance | TestServer, url: string, auth: Record<string, string>) => {
  const inject = 'server' in instance ? instance.server.inject.bind(instance.server) : instance.inject;
  const res = await inject({ method: 'GET', url, headers: auth });
  assert.equal(res.statusCode, 200, res.body);
  return res.json<Record<string, unknown>>();
};

test('a write through one instance is never read stale through the other, and reads are served from L1 and L2', async (t) => {
  const { a, b, adminAuth, buyerAuth } = await twoInstances(t, 'redis://127.0.0.1:6379');
  const id = await newProduct(a, adminAuth);
  const url = `/api/v2/products/${id}`;

  assert.equal((await read(a, url, buyerAuth)).name, 'Mug');
  assert.equal((await read(b, url, buyerAuth)).name, 'Mug');
  assert.equal((await read(b, url, buyerAuth)).name, 'Mug');
  assert.deepEqual(a.app.cache.stats().products.l2, { hits: 0, misses: 1 }, 'a loaded it from the database');
  assert.deepEqual(b.app.cache.stats().products.l2, { hits: 1, misses: 0 }, 'b found it in Redis');
  assert.equal(b.app.cache.stats().products.l1.hits, 1, 'then in its own memory');
  // Authentication's read of the buyer's role and status: on a warm cache, no database read either.
  const users = b.app.cache.stats().users;
  await read(b, url, buyerAuth);
  assert.deepEqual(b.app.cache.stats().users, { ...users, l1: { hits: users.l1.hits + 1, misses: users.l1.misses } });

  // Renamed through a: b's very next read, at once, sees the new name (its L1 copy is of an old version).
  const patched = await a.server.inject({ method: 'PATCH', url, headers: adminAuth, payload: { name: 'Big mug' } });
  assert.equal(patched.statusCode, 200);
  assert.equal((await read(b, url, buyerAuth)).name, 'Big mug');
  assert.equal((await read(a, url, buyerAuth)).name, 'Big mug');

  // The list too, and the stock an order takes: placed through b, seen through a.
  const list = await read(a, '/api/v2/products', buyerAuth);
  assert.equal((list.data as { stock: number }[])[0]!.stock, 10);
  const order = await b.inject({
    method: 'POST',
    url: '/api/v2/orders',
    headers: buyerAuth,
    payload: { items: [{ sku: 'MUG-1', quantity: 3 }], paymentMethod: 'pm_card_visa' },
  });
  assert.equal(order.statusCode, 201, order.body);
  assert.equal(((await read(a, '/api/v2/products', buyerAuth)).data as { stock: number }[])[0]!.stock, 7);
  assert.equal((await read(a, url, buyerAuth)).stock, 7);

  // An order read, cancelled through the other instance.
  const orderId = order.json<{ id: string }>().id;
  assert.equal((await read(a, `/api/v2/orders/${orderId}`, buyerAuth)).status, 'pending');
  assert.equal((await read(a, `/api/v2/orders/${orderId}`, buyerAuth)).status, 'pending');
  assert.equal(a.app.cache.stats().orders.l1.hits, 1);
  const cancelled = await b.inject({ method: 'POST', url: `/api/v2/orders/${orderId}/cancel`, headers: buyerAuth });
  assert.equal(cancelled.statusCode, 200, cancelled.body);
  assert.equal((await read(a, `/api/v2/orders/${orderId}`, buyerAuth)).status, 'cancelled');
  assert.equal((await read(a, url, buyerAuth)).stock, 10, 'the stock came back');

  // Another user's order stays hidden although it is cached.
  const other = await a.user({ email: 'other@example.com' });
  const hidden = await a.server.inject({ method: 'GET', url: `/api/v2/orders/${orderId}`, headers: await a.auth(other) });
  assert.equal(hidden.statusCode, 404);
});

test("a status change by the worker (another process's App) is seen at once", async (t) => {
  const { a, b, adminAuth, buyerAuth } = await twoInstances(t, 'redis://127.0.0.1:6379');
  await newProduct(a, adminAuth);
  const placed = await a.server.inject({
    method: 'POST',
    url: '/api/v2/orders',
    headers: buyerAuth,
    payload: { items: [{ sku: 'MUG-1', quantity: 1 }], paymentMethod: 'pm_card_visa' },
  });
  const orderId = placed.json<{ id: string }>().id;
  assert.equal((await read(b, `/api/v2/orders/${orderId}`, buyerAuth)).status, 'pending');
  assert.equal((await read(b, `/api/v2/orders/${orderId}`, buyerAuth)).status, 'pending');

  const worker = await createApp(a.config, { role: 'worker', logger: a.app.logger });
  t.after(() => worker.close());
  await worker.context({ actor: 'worker:test' }).transaction((tx) => transition(tx, orderId, 'processing'));
  assert.equal((await read(b, `/api/v2/orders/${orderId}`, buyerAuth)).status, 'processing');
  await worker.context({ actor: 'worker:test' }).transaction((tx) => transition(tx, orderId, 'failed', { reason: 'card_declined' }));
  assert.equal((await read(a, `/api/v2/orders/${orderId}`, buyerAuth)).status, 'failed');
  assert.equal(((await read(b, '/api/v2/products', buyerAuth)).data as { stock: number }[])[0]!.stock, 10, 'a failed order gives its stock back');
});

test('with Redis gone reads come from the database without errors; when it is back nothing stale is served and caching resumes', async (t) => {
  const proxy = await redisProxy(t);
  const { a, b, adminAuth, buyerAuth } = await twoInstances(t, proxy.url);
  const id = await newProduct(a, adminAuth);
  const url = `/api/v2/products/${id}`;
  await read(a, url, buyerAuth);
  await read(b, url, buyerAuth);

  await proxy.down();
  const bypassed = b.app.cache.stats().products.bypassed;
  assert.equal((await read(b, url, buyerAuth)).name, 'Mug');
  // A write while Redis is away cannot reach the other instance's cache: b must not serve its copy.
  assert.equal((await a.server.inject({ method: 'PATCH', url, headers: adminAuth, payload: { name: 'Renamed offline' } })).statusCode, 200);
  assert.equal((await read(b, url, buyerAuth)).name, 'Renamed offline');
  assert.ok(b.app.cache.stats().products.bypassed >= bypassed + 2);

  await proxy.up();
  for (const app of [a.app, b.app]) await waitFor(() => app.redis?.state() === 'ok');
  // The entries cached before the outage are of an older epoch: never served.
  assert.equal((await read(b, url, buyerAuth)).name, 'Renamed offline');
  assert.equal((await read(a, url, buyerAuth)).name, 'Renamed offline');
  const hits = b.app.cache.stats().products.l1.hits;
  assert.equal((await read(b, url, buyerAuth)).name, 'Renamed offline');
  assert.equal(b.app.cache.stats().products.l1.hits, hits + 1, 'caching again');
});

test('Redis answering late on a connection that stays up: reads bypass meanwhile and the caches are kept after; a writer whose invalidation timed out moves the epoch by itself', async (t) => {
  const proxy = await redisProxy(t);
  const { a, b, adminAuth, buyerAuth } = await twoInstances(t, proxy.url);
  const epochOf = async () => {
    const redis = new Redis(REDIS_URL);
    try {
      return Number((await redis.get(`${a.config.REDIS_PREFIX}:c:epoch`)) ?? 0);
    } finally {
      redis.disconnect();
    }
  };
  const id = await newProduct(a, adminAuth);
  const other = await newProduct(a, adminAuth, 'CUP-1');
  const url = `/api/v2/products/${id}`;
  await read(b, url, buyerAuth);
  await read(b, `/api/v2/products/${other}`, buyerAuth);

  proxy.stall();
  const bypassed = b.app.cache.stats().products.bypassed;
  // The cache's command times out (250 ms): the read comes from the database.
  assert.equal((await read(b, url, buyerAuth)).name, 'Mug');
  assert.equal(b.app.cache.stats().products.bypassed, bypassed + 1);
  proxy.resume();
  // Redis kept every version: b's copies are still current and served from L1.
  const hits = b.app.cache.stats().products.l1.hits;
  await read(b, url, buyerAuth);
  await read(b, `/api/v2/products/${other}`, buyerAuth);
  assert.equal(b.app.cache.stats().products.l1.hits, hits + 2, 'served from L1 after the late answers');
  assert.equal(await epochOf(), 0);

  // A write whose invalidation times out: the writer moves the epoch once Redis answers, with no read of its own.
  proxy.stall();
  assert.equal((await a.server.inject({ method: 'PATCH', url, headers: adminAuth, payload: { name: 'Renamed late' } })).statusCode, 200);
  proxy.resume();
  await waitForAsync(async () => (await epochOf()) > 0);
  assert.equal((await read(b, url, buyerAuth)).name, 'Renamed late');
});

test('without REDIS_URL: no cache on PostgreSQL (instances could not tell each other), L1 alone on the embedded database', async (t) => {
  const pg = await testServer(t);
  const admin = await pg.user({ email: 'admin@example.com', role: 'admin' });
  const auth = await pg.auth(admin);
  const id = await newProduct(pg, auth);
  await read(pg, `/api/v2/products/${id}`, auth);
  await read(pg, `/api/v2/products/${id}`, auth);
  assert.equal(pg.app.cache.stats().products.l1.hits, 0);
  assert.equal(pg.app.cache.stats().products.bypassed, 2);

  const embedded = await testServer(t, { embedded: true });
  const eAdmin = await embedded.user({ email: 'admin@example.com', role: 'admin' });
  const eAuth = await embedded.auth(eAdmin);
  const eid = await newProduct(embedded, eAuth);
  await read(embedded, `/api/v2/products/${eid}`, eAuth);
  assert.equal((await read(embedded, `/api/v2/products/${eid}`, eAuth)).name, 'Mug');
  assert.equal(embedded.app.cache.stats().products.l1.hits, 1);
  await embedded.server.inject({ method: 'PATCH', url: `/api/v2/products/${eid}`, headers: eAuth, payload: { name: 'Changed' } });
  assert.equal((await read(embedded, `/api/v2/products/${eid}`, eAuth)).name, 'Changed');
});

test('a read that loaded before a write committed is not served after it; L1 is bounded by entries and bytes', async (t) => {
  const redis = await RedisConnection.connect('redis://127.0.0.1:6379', { logger: createLogger('silent'), prefix: redisPrefix(t) });
  t.after(() => redis.close());
  const cache = new TwoLevelCache({ maxEntries: 100, maxBytes: 1_000, redis });
  let release!: () => void;
  const loaded = new Promise<void>((resolve) => (release = resolve));
  let started!: () => void;
  const loading = new Promise<void>((resolve) => (started = resolve));
  // The load reads the old row; the write commits and invalidates before the load returns.
  const slow = cache.get('products', 'product:p1', 'product:p1', async () => {
    started();
    await loaded;
    return { name: 'old' };
  });
  await loading;
  await cache.invalidate(['product:p1']);
  release();
  assert.deepEqual(await slow, { name: 'old' }, 'that read itself answers what it read');
  assert.deepEqual(await cache.get('products', 'product:p1', 'product:p1', () => Promise.resolve({ name: 'new' })), { name: 'new' });
  assert.deepEqual(await cache.get('products', 'product:p1', 'product:p1', () => Promise.resolve({ name: 'never loaded' })), { name: 'new' });

  // 1,000 bytes of L1: entries of about 300 bytes, so at most three stay in memory.
  const local = new TwoLevelCache({ maxEntries: 100, maxBytes: 1_000 });
  for (let i = 0; i < 5; i++) await local.get('orders', `order:${i}`, `order:${i}`, () => Promise.resolve({ blob: 'x'.repeat(290) }));
  let loads = 0;
  for (let i = 0; i < 5; i++) await local.get('orders', `order:${i}`, `order:${i}`, () => Promise.resolve({ blob: 'x'.repeat(290), again: ++loads }));
  assert.ok(loads >= 2, `the least recently used entries were evicted (${loads} loaded again)`);
  const few = new TwoLevelCache({ maxEntries: 2, maxBytes: 1_000_000 });
  for (const i of [1, 2, 3]) await few.get('orders', `order:${i}`, `order:${i}`, () => Promise.resolve(i));
  assert.equal(await few.get('orders', 'order:1', 'order:1', () => Promise.resolve(-1)), -1, 'the oldest of three went with a bound of two');
});

test("a read with maxAgeMs (users' standings) never gets a copy that old from L1 or L2; with Redis unreachable it gets a younger one, and the instance's own change empties it", async (t) => {
  const prefix = redisPrefix(t);
  const proxy = await redisProxy(t);
  const logger = createLogger('silent');
  const [redisA, redisB] = await Promise.all([REDIS_URL, proxy.url].map((url) => RedisConnection.connect(url, { logger, prefix })));
  let now = 1_000_000;
  const [a, b] = [redisA!, redisB!].map((redis) => new TwoLevelCache({ maxEntries: 100, maxBytes: 100_000, redis, now: () => now }));
  t.after(async () => {
    for (const cache of [a!, b!]) cache.close();
    await Promise.all([redisA!.close(), redisB!.close()]);
  });
  let row = 'active';
  const get = (cache: TwoLevelCache) => cache.get('users', 'user:u1', 'standing:u1', () => Promise.resolve(row), { maxAgeMs: 5_000 });

  assert.equal(await get(a!), 'active');
  assert.equal(await get(b!), 'active', "b: a's copy, from L2");
  // Changed with no invalidation (one that never reached Redis): the copies serve until the bound.
  row = 'disabled';
  now += 4_999;
  assert.deepEqual([await get(a!), await get(b!)], ['active', 'active']);
  now += 1;
  assert.equal(await get(b!), 'disabled', "b: neither its L1 copy nor a's in L2");
  assert.equal(await get(a!), 'disabled', 'a: not its L1 copy');
  assert.deepEqual(b!.stats().users.l2, { hits: 1, misses: 1 }, 'b found the first copy in L2, not the one too old');

  await proxy.down();
  await waitFor(() => redisB!.state() === 'unreachable');
  row = 'active';
  now += 4_999;
  assert.equal(await get(b!), 'disabled', 'b, Redis unreachable: its copy younger than the bound');
  now += 1;
  assert.equal(await get(b!), 'active', 'read again at the bound');
  row = 'disabled';
  await b!.invalidate(['user:u1']);
  assert.equal(await get(b!), 'disabled', "b's own change, at once");
});

/** Polls a condition that an event outside the test's reach (a reconnection) makes true. */
async function waitFor(condition: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('timed out waiting for the condition');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function waitForAsync(condition: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error('timed out waiting for the condition');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
