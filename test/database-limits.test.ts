// Database limits: the statement timeout (a slow query answers 503 with Retry-After, never hangs or
// 500s) and its exemptions (migrations and housekeeping may run longer).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as delay } from 'node:timers/promises';
import pg from 'pg';
import { testServer } from './helpers/server.js';
import { migratedDatabase, query, sessionOn } from './helpers/db.js';
import { assertProblem } from './helpers/http.js';
import { loadConfig } from '../src/config.js';
import { createApp } from '../src/app.js';
import { createLogger } from '../src/logger.js';
import { capturedLogs } from './helpers/logs.js';

/**
 * Resolves once another session has waited for a lock `holder` holds for longer than `ms`: past the
 * statement timeout under test. PostgreSQL has no notification for that, so ask it.
 */
async function untilSomeoneWaitedFor(url: string, holder: pg.Client, ms: number): Promise<void> {
  const { rows } = await holder.query<{ pid: number }>('select pg_backend_pid() as pid');
  const deadline = Date.now() + 60_000;
  for (;;) {
    const [row] = await query<{ n: number }>(
      url,
      `select count(*)::int as n from pg_stat_activity where $1 = any(pg_blocking_pids(pid)) and now() - query_start > make_interval(secs => $2)`,
      [rows[0]!.pid, ms / 1000],
    );
    if (row!.n > 0) return;
    if (Date.now() > deadline) throw new Error('no session came to wait for the lock');
    await delay(20);
  }
}

/**
 * A server on PostgreSQL whose products table another session holds (a long migration elsewhere, a
 * stuck admin session), after one product list went through: `list()` reads it again, and waits.
 */
async function productsHeld(t: TestContext, env: Record<string, string>) {
  const ts = await testServer(t, { env });
  const alice = await ts.user({ email: 'alice@example.com' });
  const headers = await ts.auth(alice);
  const list = () => ts.server.inject({ method: 'GET', url: '/api/v2/products', headers });
  const ok = await list();
  assert.equal(ok.statusCode, 200, ok.body);
  const holder = await sessionOn(t, ts.databaseUrl!);
  await holder.query('begin');
  await holder.query('lock table products in access exclusive mode');
  return { ts, holder, list };
}

test('a query slower than DATABASE_STATEMENT_TIMEOUT_MS answers 503 with Retry-After and says why; the next one works', async (t) => {
  const { holder, list } = await productsHeld(t, { DATABASE_STATEMENT_TIMEOUT_MS: '300' });
  const slow = await list();
  await holder.query('rollback');

  assertProblem({ status: slow.statusCode, type: slow.headers['content-type'], body: slow.json() }, 503, 'unavailable', /statement timeout.*try again/);
  assert.equal(slow.headers['retry-after'], '1');
  assert.doesNotMatch(slow.body, /57014|canceling statement|products/);

  const again = await list();
  assert.equal(again.statusCode, 200, again.body);
});

test('with every pooled connection busy (DATABASE_POOL_MAX), a request that cannot get one in time answers 503 with Retry-After', async (t) => {
  const { ts, holder, list } = await productsHeld(t, { DATABASE_POOL_MAX: '1', DATABASE_STATEMENT_TIMEOUT_MS: '60000' });
  // The one connection waits for the table another session holds; the next request waits for the connection.
  const first = list();
  await untilSomeoneWaitedFor(ts.databaseUrl!, holder, 0);
  const second = await list();
  await holder.query('rollback');

  assertProblem({ status: second.statusCode, type: second.headers['content-type'], body: second.json() }, 503, 'unavailable', /busy; try again/);
  assert.equal(second.headers['retry-after'], '1');
  assert.equal((await first).statusCode, 200);
});

test('a request whose database connection is lost under it (a restart, a failover) answers 503 with Retry-After, not 500, without the database in the body', async (t) => {
  const { ts, holder, list } = await productsHeld(t, { DATABASE_STATEMENT_TIMEOUT_MS: '60000' });
  // The request's statement waits for the table another session holds; PostgreSQL then ends its session.
  const lost = list();
  await untilSomeoneWaitedFor(ts.databaseUrl!, holder, 0);
  await holder.query(
    `select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid() and wait_event_type = 'Lock'`,
  );
  await holder.query('rollback');
  const res = await lost;

  assertProblem({ status: res.statusCode, type: res.headers['content-type'], body: res.json() }, 503, 'unavailable', /temporarily unavailable; try again/);
  assert.equal(res.headers['retry-after'], '1');
  assert.doesNotMatch(res.body, /57P01|terminat|administrator|products/);
  assert.equal((await list()).statusCode, 200);
});

test('connections PostgreSQL drops in the middle of transactions (a restart, a failover) are given back: the pool is not used up', async (t) => {
  const ts = await testServer(t, { env: { DATABASE_POOL_MAX: '2', DATABASE_STATEMENT_TIMEOUT_MS: '60000' } });
  const alice = await ts.user({ email: 'alice@example.com' });
  const headers = await ts.auth(alice);
  // More lost connections than the pool holds: each one kept would leave one fewer for requests.
  for (let i = 0; i < 3; i++) {
    const marker = `lost_${i}`;
    const work = ts.app
      .context({ actor: 'cli:test' })
      .transaction((tx) => tx.sql(`select pg_sleep(60) as ${marker}`, []))
      .then(
        () => assert.fail('the transaction outlived its connection'),
        (err: unknown) => err,
      );
    const pids = await untilRunning(ts.databaseUrl!, marker);
    await query(ts.databaseUrl!, 'select pg_terminate_backend(pid) from unnest($1::int[]) as pid', [pids]);
    assert.match(String(await work), /terminating connection|Connection terminated/);
  }
  const res = await ts.server.inject({ method: 'GET', url: '/api/v2/products', headers });
  assert.equal(res.statusCode, 200, res.body);
});

/** The backends running a statement that contains `marker`, once there is one. */
async function untilRunning(url: string, marker: string): Promise<number[]> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const rows = await query<{ pid: number }>(url, `select pid from pg_stat_activity where query like '%' || $1 || '%' and pid <> pg_backend_pid()`, [marker]);
    if (rows.length > 0) return rows.map((r) => r.pid);
    if (Date.now() > deadline) throw new Error(`no statement with ${marker} ran`);
    await delay(20);
  }
}

test('migrations run without the statement timeout: one that waits longer than it still applies', async (t) => {
  const url = await migratedDatabase(t);
  const config = loadConfig({ DATABASE_URL: url, DATABASE_STATEMENT_TIMEOUT_MS: '200', LOG_LEVEL: 'silent' });
  const app = await createApp(config, { logger: createLogger('silent') });
  t.after(() => app.close());
  const [last] = (await app.migrations.down()).migrations;
  assert.ok(last);

  // Recording a migration writes to mikro_orm_migrations: held here, the run waits well past 200 ms.
  const holder = await sessionOn(t, url);
  await holder.query('begin');
  await holder.query('lock table mikro_orm_migrations in access exclusive mode');
  const run = app.migrations.up();
  await untilSomeoneWaitedFor(url, holder, 600);
  await holder.query('rollback');

  assert.deepEqual((await run).migrations, [last]);
  assert.deepEqual((await app.migrations.status()).pending, []);
});

test('housekeeping runs without the statement timeout: a pass that waits longer than it still purges', async (t) => {
  const url = await migratedDatabase(t);
  const { logger, lines } = capturedLogs('info');
  const config = loadConfig({ DATABASE_URL: url, DATABASE_STATEMENT_TIMEOUT_MS: '200', LOG_LEVEL: 'info' });
  const app = await createApp(config, { logger });
  t.after(() => app.close());
  await query(url, `insert into login_throttles (key, drained_at) values ('ip:203.0.113.9', now() - interval '1 day')`);

  const holder = await sessionOn(t, url);
  await holder.query('begin');
  await holder.query('lock table login_throttles in access exclusive mode');
  const housekeeping = app.scheduleHousekeeping(3_600_000);
  await untilSomeoneWaitedFor(url, holder, 600);
  await holder.query('rollback');
  await housekeeping.stop();

  assert.deepEqual(await query(url, 'select key from login_throttles'), []);
  assert.deepEqual(
    lines.filter((l) => /housekeeping failed/.test(String(l.msg))),
    [],
  );
});
