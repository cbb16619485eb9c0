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
import { redisPrefix, redisProxy } from './helpers/redis.js';

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
