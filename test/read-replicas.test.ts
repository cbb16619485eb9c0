// Read replicas (DATABASE_REPLICA_URLS): lists and catalog reads come from a replica, except for a
// caller who has just written, who reads the primary. The "replica" here is a second database with
// the same schema that the test makes diverge (a marker row only it has), so where a read came from
// shows in what it answers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { testServer, jwksFile } from './helpers/server.js';
import { migratedDatabase, query } from './helpers/db.js';
import { svcServe, tempDir, type ServeProcess } from './helpers/cli.js';
import { REDIS_URL, redisPrefix, redisProxy } from './helpers/redis.js';
import { ConfigError, loadConfig } from '../src/config.js';
import { createApp } from '../src/app.js';
import { createLogger } from '../src/logger.js';
import { ReadYourWrites } from '../src/domain/shared/read-your-writes.js';
import { RedisConnection } from '../src/adapters/redis.js';
import { RedisReadYourWrites } from '../src/adapters/redis-read-your-writes.js';

test('order lists come from the replica; a list right after the caller’s own write, and the (cached) catalog, from the primary', async (t) => {
  const replicaUrl = await migratedDatabase(t);
  const ts = await testServer(t, { env: { DATABASE_REPLICA_URLS: replicaUrl } });
  const admin = await ts.user({ email: 'admin@example.com', role: 'admin' });
  const bob = await ts.user({ email: 'bob@example.com' });
  // The replica has a product the primary does not, and (below) lacks what the primary gets.
  await query(
    replicaUrl,
    `insert into products (id, sku, name, price, currency, stock, active, created_at, updated_at)
     values ('prd_01RE9CA0000000000000000000', 'ONLY-ON-REPLICA', 'Replica marker', 100, 'USD', 1, true, now(), now())`,
  );
  const call = async (who: { id: string; role: 'admin' | 'user' | 'guest' }, method: 'GET' | 'POST', url: string, payload?: object) => {
    const res = await ts.server.inject({ method, url: `/api/v2${url}`, headers: await ts.auth(who), ...(payload ? { payload } : {}) });
    return { status: res.statusCode, body: res.json<Record<string, any>>() };
  };
  const skus = (page: { body: Record<string, any> }) => (page.body.data as { sku: string }[]).map((p) => p.sku);
  const orderIds = (page: { body: Record<string, any> }) => (page.body.data as { id: string }[]).map((o) => o.id);

  await t.test('the catalog is read from the primary: a cache is filled from it only, so it never holds what a replica lags behind', async () => {
    const created = await call(admin, 'POST', '/products', { sku: 'TEA-1', name: 'Tea', price: { amount: 450, currency: 'USD' }, stock: 5 });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    assert.deepEqual(skus(await call(bob, 'GET', '/products')), ['TEA-1']);
    assert.equal((await call(bob, 'GET', '/products/prd_01RE9CA0000000000000000000')).status, 404);
  });

  let placed: string;
  await t.test("a user's order is in that user's next order list (the primary)", async () => {
    const res = await call(bob, 'POST', '/orders', { paymentMethod: 'pm_card_visa', items: [{ sku: 'TEA-1', quantity: 1 }] });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    placed = res.body.id as string;
    assert.deepEqual(orderIds(await call(bob, 'GET', '/orders')), [placed]);
  });

  await t.test('an admin who has not written lately reads the order list from the replica (which has no orders); after a write, from the primary', async () => {
    const admin2 = await ts.user({ email: 'admin2@example.com', role: 'admin' });
    assert.deepEqual(orderIds(await call(admin2, 'GET', '/orders')), [], 'the replica lags: no orders there');
    const created = await call(admin2, 'POST', '/products', { sku: 'MUG-1', name: 'Mug', price: { amount: 900, currency: 'USD' }, stock: 1 });
    assert.equal(created.status, 201);
    assert.deepEqual(orderIds(await call(admin2, 'GET', '/orders')), [placed], 'its own write: the primary for a while');
  });
});

test('DATABASE_REPLICA_URLS needs DATABASE_URL: the embedded database has no replicas', () => {
  assert.throws(
    () => loadConfig({ DATABASE_REPLICA_URLS: 'postgres://replica.example:5432/svc' }),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(err.key, 'DATABASE_REPLICA_URLS');
      assert.match(err.message, /DATABASE_REPLICA_URLS is set but DATABASE_URL is not: the embedded database \(PGlite\) has no read replicas/);
      return true;
    },
  );
  assert.throws(
    () => loadConfig({ DATABASE_URL: 'postgres://primary.example/svc', DATABASE_REPLICA_URLS: 'postgres://r1.example/svc,mysql://r2.example/svc' }),
    /DATABASE_REPLICA_URLS=.* is invalid: expected PostgreSQL URLs separated by commas/,
  );
  const config = loadConfig({
    DATABASE_URL: 'postgres://primary.example/svc',
    DATABASE_REPLICA_URLS: 'postgres://u:secret@r1.example/svc, postgres://r2.example/svc',
  });
  assert.equal(config.DATABASE_REPLICA_URLS, 'postgres://u:secret@r1.example/svc,postgres://r2.example/svc');
});

test("a caller's read-your-writes window ends DATABASE_REPLICA_READ_YOUR_WRITES_MS after its last write; other callers are unaffected", () => {
  let now = 1_000_000;
  const window = new ReadYourWrites(10_000, () => now);
  assert.equal(window.mayReadReplica('usr_a'), true);
  window.wrote('usr_a');
  assert.equal(window.mayReadReplica('usr_a'), false);
  assert.equal(window.mayReadReplica('usr_b'), true);
  now += 9_999;
  window.wrote('usr_b');
  assert.equal(window.mayReadReplica('usr_a'), false);
  now += 1;
  assert.equal(window.mayReadReplica('usr_a'), true);
  assert.equal(window.mayReadReplica('usr_b'), false);
  now += 20_000;
  window.wrote('usr_c');
  assert.equal(window.mayReadReplica('usr_b'), true);
});

test("two svc serve on one PostgreSQL and Redis: after a caller's write through one, its next read through the other comes from the primary; with Redis down, every read does", async (t) => {
  const dir = tempDir(t);
  const keys = await jwksFile(t);
  const proxy = await redisProxy(t);
  const prefix = redisPrefix(t);
  // The "replica" is a database of its own that never receives the primary's orders: an order list
  // that shows the primary's order came from the primary.
  const env = {
    DATABASE_URL: await migratedDatabase(t),
    DATABASE_REPLICA_URLS: await migratedDatabase(t),
    // Long enough that "at once" never outlasts it on a busy machine.
    DATABASE_REPLICA_READ_YOUR_WRITES_MS: '60000',
    JWT_KEYS_FILE: keys,
    SVC_DATA_DIR: join(dir, 'data'),
    REDIS_URL: proxy.url,
    REDIS_PREFIX: prefix,
    METRICS_PORT: 'off',
    LOG_LEVEL: 'info',
  };
  const admin = await createApp(loadConfig(env), { logger: createLogger('silent') });
  t.after(() => admin.close());
  let n = 0;
  const caller = async (role: 'admin' | 'user') => {
    const user = await admin.users.create(admin.context({ actor: 'cli:test' }), { email: `${role}${++n}@example.com`, name: `${role} ${n}`, role });
    return { id: user.id, authorization: `Bearer ${await admin.tokens.sign({ sub: user.id, role: user.role })}` };
  };
  const [a, b] = await Promise.all([svcServe(t, ['--port', '0'], { env }), svcServe(t, ['--port', '0'], { env })]);
  const call = async (server: ServeProcess, who: { authorization: string }, method: 'GET' | 'POST', path: string, body?: unknown) => {
    const res = await fetch(`${server.url}/api/v2${path}`, {
      method,
      headers: { authorization: who.authorization, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const json = (await res.json()) as Record<string, unknown>;
    assert.ok(res.ok, `${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
    return json;
  };
  const orders = async (server: ServeProcess, who: { authorization: string }) =>
    ((await call(server, who, 'GET', '/orders')).data as { id: string }[]).map((o) => o.id);
  let sku = 0;
  const write = (server: ServeProcess, who: { authorization: string }) =>
    call(server, who, 'POST', '/products', { sku: `SKU-${++sku}`, name: 'Thing', price: { amount: 100, currency: 'USD' }, stock: 5 });

  const shop = await caller('admin');
  await write(a, shop);
  const bob = await caller('user');
  const placed = (await call(a, bob, 'POST', '/orders', { paymentMethod: 'pm_card_visa', items: [{ sku: 'SKU-1', quantity: 1 }] })).id as string;
  assert.deepEqual(await orders(b, bob), [placed], "bob's order, placed through A, in his next list through B");

  for (let round = 1; round <= 6; round++) {
    const [writer, reader] = round % 2 ? [a, b] : [b, a];
    const someone = await caller('admin');
    assert.deepEqual(await orders(reader, someone), [], `round ${round}: a caller who has not written reads the replica`);
    await write(writer, someone);
    assert.deepEqual(await orders(reader, someone), [placed], `round ${round}: right after its write through the other instance, the primary`);
  }

  // Redis goes away: nobody's read can be known to be safe on a replica, so every read goes to the primary, and nothing fails.
  await proxy.down();
  await Promise.all([a, b].map((s) => s.waitForStderr(/Redis \(REDIS_URL\) is unreachable/)));
  const idle = await caller('admin');
  assert.deepEqual(await orders(b, idle), [placed], 'Redis down: the primary, for a caller who has not written');
  const offline = await caller('admin');
  await write(a, offline);
  assert.deepEqual(await orders(b, offline), [placed]);

  // Back: a write made meanwhile is written to Redis by the instance that took it, and until one
  // window has passed every read still goes to the primary (such a write may not be in Redis yet).
  await proxy.up();
  await Promise.all([a, b].map((s) => s.waitForStderr(/Redis \(REDIS_URL\) is reachable again/)));
  assert.deepEqual(await orders(b, offline), [placed]);
  assert.deepEqual(await orders(b, await caller('admin')), [placed], 'within a window of Redis coming back: the primary');
  const redis = new Redis(REDIS_URL);
  t.after(() => redis.disconnect());
  const republished = async () => {
    for (let i = 0; i < 50; i++) {
      const left = await redis.pttl(`${prefix}:ryw:${offline.id}`);
      if (left > 0) return left;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    return -2;
  };
  const left = await republished();
  assert.ok(left > 0 && left <= 60_000, `the write made while Redis was down is in Redis again (${left} ms left)`);
  for (const s of [a, b]) assert.equal(s.stderr().match(/"level":50/g)?.length ?? 0, 0, s.stderr());
});

test('Redis commands that time out on a connection that stays up send those reads to the primary, and only those: no window of primary reads follows', async (t) => {
  const prefix = redisPrefix(t);
  const proxy = await redisProxy(t);
  const connection = await RedisConnection.connect(proxy.url, { logger: createLogger('silent'), prefix });
  t.after(() => connection.close());
  const ryw = new RedisReadYourWrites(connection, 60_000);
  assert.equal(await ryw.mayReadReplica('usr_a'), true);
  proxy.stall();
  // The command times out (250 ms): this read cannot be known safe, so it goes to the primary.
  assert.equal(await ryw.mayReadReplica('usr_a'), false);
  await ryw.wrote('usr_b');
  proxy.resume();
  // Redis answers again on the same connection: the next command that succeeds ends the outage, and
  // the write whose command timed out is written again, for the other instances.
  await ryw.mayReadReplica('usr_x');
  const redis = new Redis(REDIS_URL);
  t.after(() => redis.disconnect());
  let left = -2;
  for (let i = 0; i < 50 && left < 0; i++) {
    left = await redis.pttl(`${prefix}:ryw:usr_b`);
    if (left < 0) await new Promise((resolve) => setTimeout(resolve, 100));
  }
  // After it, a caller who has not written reads the replica at once: no window of primary reads.
  assert.equal(await ryw.mayReadReplica('usr_c'), true, 'a caller who has not written reads the replica again');
  assert.ok(left > 0, 'the write whose command timed out was written again');
});

test('through Redis: a write sets a key per caller that expires with the window; another instance learns it; cut from Redis, the primary, and the windows recorded meanwhile are written back, never shortening one', async (t) => {
  const prefix = redisPrefix(t);
  const connect = async () => {
    const connection = await RedisConnection.connect(REDIS_URL, { logger: createLogger('silent'), prefix });
    t.after(() => connection.close());
    return connection;
  };
  const [one, two] = [await connect(), await connect()];
  const a = new RedisReadYourWrites(one, 30_000);
  const b = new RedisReadYourWrites(two, 30_000);
  const redis = new Redis(REDIS_URL);
  t.after(() => redis.disconnect());

  assert.equal(await b.mayReadReplica('usr_a'), true);
  await a.wrote('usr_a');
  const left = await redis.pttl(`${prefix}:ryw:usr_a`);
  assert.ok(left > 29_000 && left <= 30_000, `${left} ms left of the window`);
  assert.equal(await b.mayReadReplica('usr_a'), false, 'written through the other instance');
  assert.equal(await b.mayReadReplica('usr_b'), true, 'another caller is unaffected');
  // b remembers what Redis told it: with the key gone (as if expired early), b still knows for the rest of the window.
  await redis.del(`${prefix}:ryw:usr_a`);
  assert.equal(await b.mayReadReplica('usr_a'), false);

  // The key expires with the window.
  const short = new RedisReadYourWrites(one, 200);
  await short.wrote('usr_c');
  assert.ok((await redis.pttl(`${prefix}:ryw:usr_c`)) <= 200);
  while ((await redis.exists(`${prefix}:ryw:usr_c`)) === 1) await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(await new RedisReadYourWrites(two, 200).mayReadReplica('usr_c'), true);

  // Cut from Redis: writes are recorded here alone and reads go to the primary; back, the windows
  // recorded meanwhile are written to Redis, none shortening a longer one another instance set.
  const proxy = await redisProxy(t);
  const viaProxy = await RedisConnection.connect(proxy.url, { logger: createLogger('silent'), prefix });
  t.after(() => viaProxy.close());
  const c = new RedisReadYourWrites(viaProxy, 30_000);
  assert.equal(await c.mayReadReplica('usr_d'), true);
  const closed = once(viaProxy.client, 'close');
  await proxy.down();
  await closed;
  assert.equal(await c.mayReadReplica('usr_d'), false, 'Redis unreachable: the primary');
  await c.wrote('usr_d');
  await c.wrote('usr_e');
  await redis.set(`${prefix}:ryw:usr_e`, '1', 'PX', 50_000);
  const ready = once(viaProxy.client, 'ready');
  await proxy.up();
  await ready;
  assert.equal(await c.mayReadReplica('usr_f'), false, 'one window after Redis is back: the primary');
  let republished = -2;
  for (let i = 0; i < 50 && republished < 0; i++) {
    republished = await redis.pttl(`${prefix}:ryw:usr_d`);
    if (republished < 0) await new Promise((resolve) => setTimeout(resolve, 100));
  }
  assert.ok(republished > 0 && republished <= 30_000, `usr_d's window is in Redis again (${republished} ms left)`);
  assert.ok((await redis.pttl(`${prefix}:ryw:usr_e`)) > 40_000, "usr_e's longer window is kept");
});
