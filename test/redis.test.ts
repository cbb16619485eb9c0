// The Redis connection (issue 10): REDIS_URL's configuration, and an unreachable Redis degrading
// rather than stopping or hanging svc serve.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { describeConfig, loadConfig } from '../src/config.js';
import { createLoggerTo } from '../src/logger.js';
import { testServer } from './helpers/server.js';
import { tempDir } from './helpers/cli.js';
import { REDIS_URL, redisPrefix, redisProxy } from './helpers/redis.js';
import { Redis } from 'ioredis';
import { RedisConnection } from '../src/adapters/redis.js';
import { RedisRateLimiter } from '../src/adapters/redis-rate-limiter.js';
import { TwoLevelCache } from '../src/adapters/two-level-cache.js';

test('REDIS_URL takes redis:// and rediss:// (or a file through REDIS_URL_FILE) and is shown with its password masked', (t) => {
  const config = loadConfig({ REDIS_URL: 'redis://:s3cret@cache.internal:6379/2' });
  assert.equal(config.REDIS_URL, 'redis://:s3cret@cache.internal:6379/2');
  const shown = describeConfig(config).find((e) => e.key === 'REDIS_URL')!;
  assert.equal(shown.value, 'redis://:****@cache.internal:6379/2');
  assert.equal(loadConfig({ REDIS_URL: 'rediss://cache.internal:6380' }).REDIS_URL, 'rediss://cache.internal:6380');

  const file = join(tempDir(t), 'redis_url');
  writeFileSync(file, 'redis://:fromfile@cache.internal:6379\n');
  const fromFile = loadConfig({ REDIS_URL_FILE: file });
  assert.equal(fromFile.REDIS_URL, 'redis://:fromfile@cache.internal:6379');
  assert.equal(fromFile.sources.REDIS_URL, 'secret-file');

  assert.throws(() => loadConfig({ REDIS_URL: 'http://cache.internal:6379' }), /REDIS_URL=.* is invalid: expected a Redis URL/);
  assert.throws(() => loadConfig({ TRUSTED_PROXIES: '10.0.0.0/8, not-an-address' }), /TRUSTED_PROXIES=.* is invalid/);
  assert.equal(loadConfig({ TRUSTED_PROXIES: '10.0.0.0/8, 127.0.0.1,::1' }).TRUSTED_PROXIES, '10.0.0.0/8,127.0.0.1,::1');
});

test('svc serve with an unreachable REDIS_URL starts, warns once naming it, stays ready and serves; it connects when Redis comes', async (t) => {
  const proxy = await redisProxy(t);
  await proxy.down();
  const lines: Record<string, unknown>[] = [];
  const logger = createLoggerTo(
    'info',
    new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const line of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(line) as Record<string, unknown>);
        done();
      },
    }),
  );
  const ts = await testServer(t, { env: { REDIS_URL: proxy.url, REDIS_PREFIX: redisPrefix(t), RATE_LIMIT_IP_PER_MINUTE: '100' }, overrides: { logger } });
  assert.equal(ts.app.redis?.state(), 'unreachable');
  const ready = await ts.server.inject({ method: 'GET', url: '/health/ready' });
  assert.equal(ready.statusCode, 200, 'Redis is a cache and a counter store: the instance stays in the balancer');
  const admin = await ts.user({ email: 'admin@example.com', role: 'admin' });
  const products = await ts.server.inject({ method: 'GET', url: '/api/v2/products', headers: await ts.auth(admin) });
  assert.equal(products.statusCode, 200);
  assert.equal(products.headers['ratelimit-policy'], '"ip";q=100;w=60', 'limited in the process meanwhile');
  const warnings = lines.filter((l) => l.level === 'warn' && String(l.msg).includes('REDIS_URL'));
  assert.equal(warnings.length, 1);
  assert.doesNotMatch(JSON.stringify(warnings[0]), /fromfile|s3cret/);

  await proxy.up();
  const deadline = Date.now() + 20_000;
  while (ts.app.redis?.state() !== 'ok') {
    assert.ok(Date.now() < deadline, 'connects once Redis answers');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  assert.ok(lines.some((l) => l.level === 'info' && String(l.msg).includes('reachable again')));
});

test('the cached reads and rate limits of one turn reach Redis as one script run each, every caller with its own answer', async (t) => {
  const prefix = redisPrefix(t);
  const redis = await RedisConnection.connect(REDIS_URL, { logger: createLoggerTo('silent', process.stderr), prefix });
  t.after(() => redis.close());
  const cache = new TwoLevelCache({ maxEntries: 100, maxBytes: 1_000_000, redis });
  const limiter = new RedisRateLimiter(redis);
  // What Redis runs, as MONITOR shows it, of this test's keys only (other tests share the server).
  const monitor = await new Redis(REDIS_URL, { lazyConnect: true }).monitor();
  t.after(() => monitor.disconnect());
  const scripts: string[][] = [];
  monitor.on('monitor', (_time: string, args: string[]) => {
    if (args.some((arg) => arg.startsWith(`${prefix}:`))) scripts.push(args);
  });
  // A command of its own first, seen once MONITOR shows it: every command sent before it was seen too.
  const seen = async () => {
    const marker = `${prefix}:marker:${scripts.length}`;
    const shown = new Promise<void>((resolve) => {
      const on = (_time: string, args: string[]) => {
        if (!args.includes(marker)) return;
        monitor.off('monitor', on);
        resolve();
      };
      monitor.on('monitor', on);
    });
    await redis.client.set(marker, '1');
    await shown;
  };

  const ids = Array.from({ length: 20 }, (_, i) => `order:${i}`);
  const values = await Promise.all(ids.map((id) => cache.get('orders', id, id, () => Promise.resolve({ id }))));
  assert.deepEqual(
    values,
    ids.map((id) => ({ id })),
    'each read answered with its own entry',
  );
  await seen();
  const runs = (name: string) => scripts.filter((args) => /^evalsha$|^eval$/i.test(args[0]!) && args.length > 2 && args.slice(3).some((a) => a.includes(name)));
  assert.equal(runs(':c:v:').length, 1, 'twenty reads in one turn, one script run');
  const again = await Promise.all(ids.map((id) => cache.get('orders', id, id, () => Promise.resolve({ id, loaded: 'again' }))));
  assert.deepEqual(
    again,
    ids.map((id) => ({ id })),
    'served from L1 at the version Redis confirmed',
  );

  const rule = { name: 'ip', limit: 5, windowMs: 60_000 };
  const now = Date.now();
  const decisions = await Promise.all(Array.from({ length: 8 }, () => limiter.consume(rule, '192.0.2.1', now)));
  assert.deepEqual(
    decisions.map((d) => [d.allowed, d.remaining]),
    [
      [true, 4],
      [true, 3],
      [true, 2],
      [true, 1],
      [true, 0],
      [false, 0],
      [false, 0],
      [false, 0],
    ],
    'counted in the order asked, the sixth and later refused',
  );
  await seen();
  assert.equal(runs(':rl:').length, 1, 'eight requests in one turn, one script run');
});
