import { test } from 'node:test';
import assert from 'node:assert/strict';
import { testServer } from './helpers/server.js';
import { dropDatabase } from './helpers/db.js';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

for (const embedded of [false, true]) {
  test(`the API answers health checks and problem documents (${embedded ? 'embedded' : 'PostgreSQL'})`, async (t) => {
    const ts = await testServer(t, { embedded });

    const live = await fetch(`${ts.url}/health/live`);
    assert.equal(live.status, 200);
    assert.deepEqual(await live.json(), { status: 'ok' });

    const ready = await fetch(`${ts.url}/health/ready`);
    assert.deepEqual(await ready.json(), { status: 'ok', checks: { database: 'ok' } });

    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    const missing = await fetch(`${ts.url}/api/v1/nothing-here`, { headers: { traceparent: `00-${traceId}-00f067aa0ba902b7-01` } });
    assert.equal(missing.status, 404);
    assert.equal(missing.headers.get('content-type'), 'application/problem+json; charset=utf-8');
    assert.equal(missing.headers.get('x-trace-id'), traceId);
    const body = (await missing.json()) as Record<string, unknown>;
    assert.deepEqual(
      { ...body, detail: undefined },
      { type: 'urn:svc:problem:not_found', title: 'Not Found', status: 404, code: 'not_found', traceId, detail: undefined },
    );
  });
}

test('a burst of new connections waits in the listen queue: svc serve listens with a backlog of 4096 (or the kernel cap, if lower), not 511', async (t) => {
  const ts = await testServer(t);
  const port = new URL(ts.url).port;
  // For a listening socket, ss shows the backlog as its Send-Q; the kernel caps it at somaxconn.
  const [line] = execFileSync('ss', ['-ltnH', `sport = :${port}`], { encoding: 'utf8' })
    .trim()
    .split('\n');
  const backlog = Number(line!.trim().split(/\s+/)[2]);
  const cap = Number(readFileSync('/proc/sys/net/core/somaxconn', 'utf8'));
  assert.equal(backlog, Math.min(4096, cap), line);
});

test('readiness answers 503 naming the database when it stops answering, while liveness stays 200', async (t) => {
  const ts = await testServer(t);
  assert.equal((await fetch(`${ts.url}/health/ready`)).status, 200);
  // Take the database away under the running server (its connections are terminated too).
  await dropDatabase(new URL(ts.databaseUrl!).pathname.slice(1));
  const ready = await fetch(`${ts.url}/health/ready`);
  assert.equal(ready.status, 503);
  assert.equal(ready.headers.get('content-type'), 'application/problem+json; charset=utf-8');
  const body = (await ready.json()) as Record<string, unknown>;
  assert.equal(body.code, 'unavailable');
  assert.match(String(body.detail), /^not ready: database \(unreachable\)$/);
  assert.doesNotMatch(JSON.stringify(body), /svc_t_|127\.0\.0\.1|does not exist/);
  assert.equal((await fetch(`${ts.url}/health/live`)).status, 200);
});
