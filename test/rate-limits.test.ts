// Rate limits (issue 10): per client address (sliding minute), tighter on the credential routes,
// per API key (sliding hour); shared by instances through Redis, per process while Redis is down.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import type { LightMyRequestResponse } from 'fastify';
import { testServer, type TestServer } from './helpers/server.js';
import { createLoggerTo } from '../src/logger.js';
import { redisPrefix, redisProxy } from './helpers/redis.js';

const MINUTE = 60_000;

/** A clock the test moves by hand, starting at the beginning of a minute. */
function manualClock(start = Date.UTC(2026, 10, 27, 12, 0, 0)) {
  let now = start;
  return { now: () => new Date(now), set: (ms: number) => (now = ms), start };
}

function capturingLogger() {
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
  return { logger, lines };
}

async function limited(t: TestContext, env: Record<string, string>, clock = manualClock(), logger?: ReturnType<typeof capturingLogger>['logger']) {
  const ts = await testServer(t, { env, overrides: { now: clock.now, ...(logger ? { logger } : {}) } });
  return { ts, clock };
}

const get = (ts: TestServer, url: string, headers: Record<string, string> = {}, remoteAddress?: string) =>
  ts.server.inject({ method: 'GET', url, headers, ...(remoteAddress ? { remoteAddress } : {}) });

async function times(n: number, fn: () => Promise<LightMyRequestResponse>): Promise<LightMyRequestResponse[]> {
  const out: LightMyRequestResponse[] = [];
  for (let i = 0; i < n; i++) out.push(await fn());
  return out;
}

test('the 101st request from one address within a minute is refused with 429, Retry-After and the RateLimit headers', async (t) => {
  const { ts, clock } = await limited(t, { RATE_LIMIT_IP_PER_MINUTE: '100' });
  const first = await times(100, () => get(ts, '/api/v2/products'));
  assert.ok(first.every((r) => r.statusCode === 401));
  assert.equal(first[0]!.headers['ratelimit-policy'], '"ip";q=100;w=60');
  // This request counts in the sliding window until the end of the next minute.
  assert.equal(first[0]!.headers['ratelimit'], '"ip";r=99;t=120');
  assert.match(String(first[99]!.headers['ratelimit']), /^"ip";r=0;t=\d+$/);

  clock.set(clock.start + 20_000);
  const refused = await get(ts, '/api/v2/products');
  assert.equal(refused.statusCode, 429);
  assert.equal(refused.headers['content-type'], 'application/problem+json; charset=utf-8');
  const body = refused.json<{ code: string; status: number; detail: string; traceId: string }>();
  assert.equal(body.code, 'rate_limited');
  assert.equal(body.status, 429);
  assert.match(body.detail, /at most 100 per minute/);
  // The next request fits once this minute's 100 weigh 99 or less: 0.6 s into the next minute, 40.6 s from now.
  assert.equal(refused.headers['retry-after'], '41');
  assert.equal(refused.headers['ratelimit-policy'], '"ip";q=100;w=60');
  assert.equal(refused.headers['ratelimit'], '"ip";r=0;t=41');

  // Another address is not affected.
  assert.equal((await get(ts, '/api/v2/products', {}, '10.1.2.3')).statusCode, 401);
});

test('the window slides: half a minute into the next minute, half of the last minute still counts', async (t) => {
  const { ts, clock } = await limited(t, { RATE_LIMIT_IP_PER_MINUTE: '100' });
  await times(100, () => get(ts, '/api/v2/products'));
  // A fixed window would allow 100 more at once; the sliding one allows 50 (the last minute weighs half).
  clock.set(clock.start + MINUTE + 30_000);
  const next = await times(51, () => get(ts, '/api/v2/products'));
  assert.equal(next.filter((r) => r.statusCode === 401).length, 50);
  assert.equal(next[50]!.statusCode, 429);
  // One more fits once the last minute weighs 49 or less: 0.6 s later.
  assert.equal(next[50]!.headers['retry-after'], '1');
  clock.set(clock.start + MINUTE + 30_600);
  assert.equal((await get(ts, '/api/v2/products')).statusCode, 401);
  // Two minutes on, the old requests are gone.
  clock.set(clock.start + 3 * MINUTE);
  assert.equal((await times(100, () => get(ts, '/api/v2/products'))).filter((r) => r.statusCode === 429).length, 0);
});

test('an API key gets its own hourly limit, counted after it authenticates', async (t) => {
  const { ts, clock } = await limited(t, { RATE_LIMIT_API_KEY_PER_HOUR: '3' });
  const user = await ts.user({ email: 'client@example.com' });
  const ctx = ts.app.context({ actor: 'cli:test' });
  const key = await ts.app.apiKeys.create(ctx, { user: user.id, name: 'one' });
  const other = await ts.app.apiKeys.create(ctx, { user: user.id, name: 'two' });
  const withKey = (secret: string) => get(ts, '/api/v2/products', { authorization: `Bearer ${secret}` });

  const ok = await times(3, () => withKey(key.secret));
  assert.deepEqual(
    ok.map((r) => r.statusCode),
    [200, 200, 200],
  );
  assert.equal(ok[0]!.headers['ratelimit-policy'], '"api-key";q=3;w=3600');
  const refused = await withKey(key.secret);
  assert.equal(refused.statusCode, 429);
  assert.match(refused.json<{ detail: string }>().detail, new RegExp(`API key ${key.id}: at most 3 per hour`));
  // Three requests at the start of the hour weigh 2 or less a third into the next hour: 80 minutes.
  assert.equal(refused.headers['retry-after'], '4800');
  // A wrong secret for the same key id is refused as unauthorized and uses nothing up.
  const forged = `svc_${key.id}_${'A'.repeat(43)}`;
  assert.equal((await withKey(forged)).statusCode, 401);
  // The other key, and the same user with an access token, are not limited by it.
  assert.equal((await withKey(other.secret)).statusCode, 200);
  assert.equal((await get(ts, '/api/v2/products', await ts.auth(user))).statusCode, 200);
  clock.set(clock.start + 2 * 3_600_000);
  assert.equal((await withKey(key.secret)).statusCode, 200);
});

test('behind a trusted proxy the X-Forwarded-For client counts; from anyone else the socket address counts', async (t) => {
  const trusting = await limited(t, { RATE_LIMIT_IP_PER_MINUTE: '2', TRUSTED_PROXIES: '127.0.0.1,10.0.0.0/8' });
  const viaProxy = (client: string) => get(trusting.ts, '/api/v2/products', { 'x-forwarded-for': client }, '10.9.9.9');
  await times(2, () => viaProxy('203.0.113.7'));
  assert.equal((await viaProxy('203.0.113.7')).statusCode, 429);
  assert.equal((await viaProxy('203.0.113.8')).statusCode, 401, 'another client behind the same balancer has its own quota');
  // A client that is not a trusted proxy cannot pick its address by sending the header.
  const direct = (claimed: string) => get(trusting.ts, '/api/v2/products', { 'x-forwarded-for': claimed }, '198.51.100.1');
  await times(2, () => direct('192.0.2.1'));
  assert.equal((await direct('192.0.2.2')).statusCode, 429);

  const plain = await limited(t, { RATE_LIMIT_IP_PER_MINUTE: '2' });
  const spoof = (claimed: string) => get(plain.ts, '/api/v2/products', { 'x-forwarded-for': claimed });
  await times(2, () => spoof('192.0.2.1'));
  assert.equal((await spoof('192.0.2.2')).statusCode, 429, 'without TRUSTED_PROXIES the header is ignored');
});

test('login and registration have a tighter per-address limit; health routes are never limited', async (t) => {
  const { ts } = await limited(t, { RATE_LIMIT_IP_PER_MINUTE: '5', RATE_LIMIT_AUTH_IP_PER_MINUTE: '2' });
  const login = () => ts.server.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email: 'nobody@example.com', password: 'not the password' } });
  const attempts = await times(3, login);
  assert.deepEqual(
    attempts.map((r) => r.statusCode),
    [401, 401, 429],
  );
  assert.equal(attempts[2]!.headers['ratelimit-policy'], '"auth";q=2;w=60');
  const register = await ts.server.inject({
    method: 'POST',
    url: '/api/v2/auth/register',
    payload: { email: 'a@example.com', password: 'x'.repeat(12), name: 'A' },
  });
  assert.equal(register.statusCode, 429);
  // Other routes still have their own quota.
  assert.equal((await get(ts, '/api/v2/products')).statusCode, 401);

  const health = await times(20, () => get(ts, '/health/live'));
  assert.ok(health.every((r) => r.statusCode === 200 && r.headers['ratelimit'] === undefined));
  assert.equal((await get(ts, '/health/ready')).statusCode, 200);
});

test('two instances on one Redis share the limit; with Redis gone each counts alone (one warning), and shares again when it is back', async (t) => {
  const proxy = await redisProxy(t);
  const prefix = redisPrefix(t);
  const clock = manualClock();
  const captured = capturingLogger();
  const env = { RATE_LIMIT_IP_PER_MINUTE: '4', REDIS_URL: proxy.url, REDIS_PREFIX: prefix };
  const a = await limited(t, env, clock, captured.logger);
  const b = await limited(t, env, clock);
  const hit = (ts: TestServer) => get(ts, '/api/v2/products').then((r) => r.statusCode);

  assert.deepEqual([await hit(a.ts), await hit(b.ts), await hit(a.ts), await hit(b.ts)], [401, 401, 401, 401]);
  assert.equal(await hit(a.ts), 429, 'the fifth request in the minute fails on whichever instance gets it');
  assert.equal(await hit(b.ts), 429);

  await proxy.down();
  // Each instance now counts in its own process: requests are served, never a 500.
  clock.set(clock.start + 5 * MINUTE);
  const alone = await times(5, () => get(a.ts, '/api/v2/products'));
  assert.deepEqual(
    alone.map((r) => r.statusCode),
    [401, 401, 401, 401, 429],
  );
  assert.equal(await hit(b.ts), 401, "b's own count is separate while Redis is away");
  const warnings = captured.lines.filter((l) => l.level === 'warn' && String(l.msg).includes('REDIS_URL'));
  assert.equal(warnings.length, 1, 'one warning for the outage');

  await proxy.up();
  await waitFor(() => captured.lines.some((l) => l.level === 'info' && String(l.msg).includes('reachable again')));
  await waitFor(() => b.ts.app.redis?.state() === 'ok');
  clock.set(clock.start + 10 * MINUTE);
  for (let i = 0; i < 4; i++) assert.equal(await hit(i % 2 ? b.ts : a.ts), 401);
  assert.equal(await hit(b.ts), 429, 'shared again');
  assert.equal(captured.lines.filter((l) => l.level === 'warn' && String(l.msg).includes('REDIS_URL')).length, 1);
});

/** Polls a condition that an event outside the test's reach (a reconnection) makes true. */
async function waitFor(condition: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error('timed out waiting for the condition');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
