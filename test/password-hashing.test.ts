import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { setImmediate as settled } from 'node:timers/promises';
import { Bulkhead } from '../src/domain/shared/bulkhead.js';
import { DomainError } from '../src/domain/shared/errors.js';
import { testServer, jwksFile } from './helpers/server.js';
import { migratedDatabase, query } from './helpers/db.js';
import { svcServe } from './helpers/cli.js';
import { hashPassword } from '../src/domain/users/password.js';
import { newId } from '../src/domain/shared/ids.js';

const PASSWORD = 'correct horse battery staple';

test('a bulkhead runs at most its concurrency at once, keeps a bounded queue, and refuses the rest at once with unavailable and a Retry-After', async () => {
  const bulkhead = new Bulkhead('password hashes', { concurrency: 2, queue: 3 });
  let running = 0;
  let peak = 0;
  const started: number[] = [];
  const finish: (() => void)[] = [];
  const task = (i: number) => () =>
    new Promise<number>((resolve) => {
      running++;
      peak = Math.max(peak, running);
      started.push(i);
      finish[i] = () => {
        running--;
        resolve(i);
      };
    });
  const outcomes = Array.from({ length: 7 }, (_, i) =>
    bulkhead.run(task(i)).then(
      (value) => ({ value }),
      (error: unknown) => ({ error }),
    ),
  );
  await settled();
  assert.deepEqual(started, [0, 1], 'two run, three wait');

  for (const refused of await Promise.all(outcomes.slice(5))) {
    assert.ok('error' in refused && refused.error instanceof DomainError, 'the sixth and seventh are refused without waiting');
    assert.equal(refused.error.code, 'unavailable');
    assert.match(refused.error.message, /too many password hashes in progress/);
    const retryAfter = refused.error.details.retryAfterSeconds;
    assert.ok(typeof retryAfter === 'number' && retryAfter >= 1, `retryAfterSeconds ${String(retryAfter)}`);
  }

  finish[1]!();
  await settled();
  assert.deepEqual(started, [0, 1, 2], 'a finished task hands its place to the first waiting one');
  for (const i of [0, 2, 3, 4]) {
    finish[i]!();
    await settled();
  }
  assert.deepEqual(
    await Promise.all(outcomes.slice(0, 5)),
    [0, 1, 2, 3, 4].map((value) => ({ value })),
  );
  assert.equal(peak, 2, 'never more than the concurrency at once');
  assert.deepEqual(bulkhead.stats(), { running: 0, queued: 0, completed: 5, refused: 2 });

  // A task that fails frees its place too.
  await assert.rejects(
    bulkhead.run(() => Promise.reject(new Error('boom'))),
    /boom/,
  );
  assert.equal(await bulkhead.run(() => Promise.resolve('next')), 'next');
  assert.deepEqual(bulkhead.stats(), { running: 0, queued: 0, completed: 7, refused: 2 });
});

test('a burst of logins beyond the hash capacity gets 503 with Retry-After instead of a backlog, and the rest are answered', async (t) => {
  const ts = await testServer(t, { env: { PASSWORD_HASH_CONCURRENCY: '1', PASSWORD_HASH_QUEUE: '2' } });
  // Distinct emails, so the login throttle (per email) refuses none of them.
  const answers = await Promise.all(
    Array.from({ length: 20 }, (_, i) =>
      ts.server.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email: `burst-${i}@example.com`, password: PASSWORD } }),
    ),
  );
  const statuses = answers.map((a) => a.statusCode);
  assert.deepEqual([...new Set(statuses)].sort(), [401, 503], statuses.join(' '));
  assert.ok(statuses.filter((s) => s === 401).length >= 3, 'the one running and the two queued are answered');
  for (const busy of answers.filter((a) => a.statusCode === 503)) {
    assert.equal(busy.headers['content-type'], 'application/problem+json; charset=utf-8');
    assert.equal(busy.json().code, 'unavailable');
    assert.ok(Number(busy.headers['retry-after']) >= 1, `Retry-After ${busy.headers['retry-after']}`);
  }
  // A registration in the same state is turned away the same way, and creates nothing.
  const burst = Array.from({ length: 6 }, (_, i) =>
    ts.server.inject({ method: 'POST', url: '/api/v1/auth/register', payload: { email: `reg-${i}@example.com`, password: PASSWORD, name: 'R' } }),
  );
  const registered = (await Promise.all(burst)).map((a) => a.statusCode);
  assert.ok(registered.includes(503) && registered.includes(201), registered.join(' '));
  const listed = await ts.app.users.list(ts.app.context({ actor: 'cli:test' }), { search: 'reg-' });
  assert.equal(listed.data.length, registered.filter((s) => s === 201).length);
});

// Read from /proc: peak (VmHWM) and current (VmRSS) resident set of a process, in MiB.
function residentMiB(pid: number): { peak: number; now: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)![1]) / 1024;
  return { peak: kib('VmHWM'), now: kib('VmRSS') };
}

/** The bound the README gives for `svc serve` on PostgreSQL under a burst of logins (Operations). */
const SERVE_RSS_BOUND_MIB = 200;

test(
  `svc serve answers a burst of 200 concurrent logins (200 or 503 with Retry-After) and its RSS stays under ${SERVE_RSS_BOUND_MIB} MiB`,
  { timeout: 120_000 },
  async (t) => {
    const db = await migratedDatabase(t);
    const keys = await jwksFile(t);
    // 200 accounts with one password (hashed once here: the burst is about the server's hashing).
    const hash = await hashPassword(PASSWORD);
    const emails = Array.from({ length: 200 }, (_, i) => `crowd-${i}@example.com`);
    await query(
      db,
      `insert into users (id, email, name, role, status, password_hash, created_at, updated_at)
     select id, email, 'Crowd', 'user', 'active', $3, now(), now() from unnest($1::text[], $2::text[]) as u(id, email)`,
      [emails.map(() => newId('usr')), emails, hash],
    );
    const serve = await svcServe(t, ['--port', '0'], { env: { DATABASE_URL: db, JWT_KEYS_FILE: keys, LOG_LEVEL: 'warn' } });
    const pid = serve.child.pid!;
    const before = residentMiB(pid);

    const answers = await Promise.all(
      emails.map(async (email) => {
        const res = await fetch(`${serve.url}/api/v1/auth/login`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ email, password: PASSWORD }),
        });
        await res.arrayBuffer();
        return { status: res.status, retryAfter: res.headers.get('retry-after') };
      }),
    );
    const after = residentMiB(pid);
    const ok = answers.filter((a) => a.status === 200).length;
    const busy = answers.filter((a) => a.status === 503);
    t.diagnostic(`200 logins: ${ok} answered 200, ${busy.length} answered 503; RSS ${before.now.toFixed(0)} MiB before, peak ${after.peak.toFixed(0)} MiB`);
    assert.equal(ok + busy.length, 200, JSON.stringify(answers.filter((a) => a.status !== 200 && a.status !== 503)));
    assert.ok(
      busy.every((a) => Number(a.retryAfter) >= 1),
      'every 503 says when to retry',
    );
    assert.ok(after.peak < SERVE_RSS_BOUND_MIB, `peak RSS ${after.peak.toFixed(0)} MiB`);
    // A refusal under load is expected: one warning line each, no error with a stack.
    const lines = serve
      .stderr()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { level: string; msg: string; code?: string });
    assert.equal(lines.filter((l) => l.msg === 'request refused for now (503)' && l.level === 'warn' && l.code === 'unavailable').length, busy.length);
    assert.deepEqual(
      lines.filter((l) => l.level === 'error'),
      [],
    );
  },
);
