import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { migratedDatabase, query, urlFor } from './helpers/db.js';
import { tempDir } from './helpers/cli.js';
import { loadConfig } from '../src/config.js';
import { createApp } from '../src/app.js';
import { createLogger } from '../src/logger.js';
import { capturedLogs } from './helpers/logs.js';
import { jwksFile } from './helpers/server.js';
import { startServer } from '../src/server/serve.js';
import { purgeExpired } from '../src/domain/housekeeping.js';
import { scheduleHousekeeping } from '../src/housekeeping.js';
import type { SqlEntityManager } from '@mikro-orm/sql';

const USER = 'usr_01JZ0000000000000000000000';

/** An expired and a live idempotency key; family fam_dead wholly expired, family fam_live with one expired (used) and one live token. */
async function seed(db: string, extraExpiredKeys = 0): Promise<void> {
  await query(
    db,
    `insert into users (id, email, name, role, status, created_at, updated_at) values ($1, 'hk@example.com', 'HK', 'user', 'active', now(), now())`,
    [USER],
  );
  await query(
    db,
    `insert into idempotency_keys (principal, key, request_hash, status_code, response_body, created_at, expires_at)
     select $1, k, repeat('0', 64), 201, '{}'::jsonb, now() - interval '2 days', now() - interval '1 day' from unnest(array['expired']) k
     union all select $1, 'live', repeat('0', 64), 201, '{}'::jsonb, now(), now() + interval '1 day'
     union all select $1, 'old-' || n, repeat('0', 64), 201, '{}'::jsonb, now() - interval '2 days', now() - interval '1 day' from generate_series(1, $2::int) n`,
    [USER, extraExpiredKeys],
  );
  await query(
    db,
    `insert into refresh_tokens (id, user_id, family_id, token_hash, expires_at, used_at, revoked_at, created_at) values
     ('rt_dead_1', $1, 'fam_dead', repeat('1', 64), now() - interval '2 days', now() - interval '3 days', null, now() - interval '40 days'),
     ('rt_dead_2', $1, 'fam_dead', repeat('2', 64), now() - interval '1 day', null, null, now() - interval '31 days'),
     ('rt_live_1', $1, 'fam_live', repeat('3', 64), now() - interval '1 day', now() - interval '2 days', null, now() - interval '31 days'),
     ('rt_live_2', $1, 'fam_live', repeat('4', 64), now() + interval '29 days', null, null, now() - interval '1 day')`,
    [USER],
  );
  // Login attempts: one count that has decayed to zero, one still decaying, one at the limit (locked).
  await query(
    db,
    `insert into login_throttles (key, drained_at) values
     ('old', now() - interval '1 minute'),
     ('recent', now() + interval '15 minutes'),
     ('locked', now() + interval '70 minutes')`,
  );
}

const remaining = async (db: string) => ({
  keys: (await query<{ key: string }>(db, 'select key from idempotency_keys order by key')).map((r) => r.key),
  tokens: (await query<{ id: string }>(db, 'select id from refresh_tokens order by id')).map((r) => r.id),
  throttles: (await query<{ key: string }>(db, 'select key from login_throttles order by key')).map((r) => r.key),
});
const KEPT = { keys: ['live'], tokens: ['rt_live_1', 'rt_live_2'], throttles: ['locked', 'recent'] };

test('purgeExpired deletes expired idempotency keys (in batches), dead refresh-token families and spent login-failure counts, and keeps everything still in use', async (t) => {
  const db = await migratedDatabase(t);
  await seed(db, 12_000);
  const app = await createApp(loadConfig({ DATABASE_URL: db, SVC_DATA_DIR: join(tempDir(t), 'data'), LOG_LEVEL: 'silent' }));
  t.after(() => app.close());
  const em = () => app.db.orm.em.fork() as SqlEntityManager;

  assert.deepEqual(await purgeExpired(em()), { idempotencyKeys: 12_001, refreshTokens: 2, loginThrottles: 1 });
  // A live family keeps its used token, so presenting it is still recognised as reuse; a lock stays until it ends.
  assert.deepEqual(await remaining(db), KEPT);
  assert.deepEqual(await purgeExpired(em()), { idempotencyKeys: 0, refreshTokens: 0, loginThrottles: 0 }, 'a second pass finds nothing');
});

test('svc serve purges expired rows when it starts (then every 15 minutes); a failed pass is logged as a warning', async (t) => {
  const dir = tempDir(t);
  const db = await migratedDatabase(t);
  await seed(db);
  const keys = await jwksFile(t);
  const running = await startServer(
    loadConfig({ DATABASE_URL: db, JWT_KEYS_FILE: keys, SVC_DATA_DIR: join(dir, 'data'), LOG_LEVEL: 'silent', PORT: '0', HOST: '127.0.0.1' }),
  );
  // stop() waits for a pass in progress.
  await running.stop();
  assert.deepEqual(await remaining(db), KEPT);

  const { logger, lines } = capturedLogs('info');
  // A database that is not there: the pass fails, is logged as a warning, and the schedule goes on.
  const app = await createApp(loadConfig({ DATABASE_URL: urlFor('svc_no_such_database'), SVC_DATA_DIR: join(dir, 'data'), LOG_LEVEL: 'silent' }), {
    logger: createLogger('silent'),
  });
  t.after(() => app.close());
  const failing = scheduleHousekeeping(() => app.db.orm.em.fork() as SqlEntityManager, logger, 60_000);
  await failing.stop();
  const line = lines.at(-1)!;
  assert.deepEqual([line.level, line.msg], ['warn', 'housekeeping failed; trying again at the next pass']);
});

test('housekeeping deletes published outbox rows past OUTBOX_RETENTION_HOURS and keeps pending and recent ones', async (t) => {
  const db = await migratedDatabase(t);
  await query(
    db,
    `insert into outbox_events (id, type, aggregate_id, payload, status, attempts, available_at, created_at, published_at) values
     ('evt_old_published', 'order.created', 'ord_1', '{}', 'published', 0, now(), now() - interval '30 hours', now() - interval '30 hours'),
     ('evt_new_published', 'order.created', 'ord_2', '{}', 'published', 0, now(), now() - interval '2 hours', now() - interval '2 hours'),
     ('evt_old_pending', 'order.created', 'ord_3', '{}', 'pending', 3, now(), now() - interval '30 hours', null)`,
  );
  const app = await createApp(loadConfig({ DATABASE_URL: db, SVC_DATA_DIR: join(tempDir(t), 'data'), LOG_LEVEL: 'silent', OUTBOX_RETENTION_HOURS: '24' }));
  t.after(() => app.close());
  // The first pass runs at once; stop() waits for it.
  await app.scheduleHousekeeping(60_000).stop();
  const left = await query<{ id: string }>(db, 'select id from outbox_events order by id');
  assert.deepEqual(
    left.map((r) => r.id),
    ['evt_new_published', 'evt_old_pending'],
  );
});

test('housekeeping deletes inbox rows past PROCESSED_MESSAGES_RETENTION_HOURS and keeps recent ones', async (t) => {
  const db = await migratedDatabase(t);
  await query(
    db,
    `insert into processed_messages (consumer, message_id, processed_at) values
     ('payments', 'evt_old', now() - interval '30 hours'),
     ('mail', 'evt_old', now() - interval '25 hours'),
     ('payments', 'evt_new', now() - interval '2 hours')`,
  );
  const app = await createApp(
    loadConfig({
      DATABASE_URL: db,
      SVC_DATA_DIR: join(tempDir(t), 'data'),
      LOG_LEVEL: 'silent',
      OUTBOX_RETENTION_HOURS: '12',
      PROCESSED_MESSAGES_RETENTION_HOURS: '24',
    }),
  );
  t.after(() => app.close());
  await app.scheduleHousekeeping(60_000).stop();
  assert.deepEqual(await query(db, 'select consumer, message_id from processed_messages'), [{ consumer: 'payments', message_id: 'evt_new' }]);
});

test('housekeeping deletes Stripe webhook inbox rows past STRIPE_EVENTS_RETENTION_HOURS, keeps recent ones, and never touches dead event deliveries', async (t) => {
  const db = await migratedDatabase(t);
  await query(
    db,
    `insert into stripe_events (id, type, order_id, outcome, created_at, received_at, processed_at) values
     ('evt_stripe_old', 'payment_intent.succeeded', null, 'applied', now() - interval '80 hours', now() - interval '80 hours', now() - interval '80 hours'),
     ('evt_stripe_new', 'payment_intent.succeeded', null, 'applied', now() - interval '70 hours', now() - interval '70 hours', now() - interval '70 hours')`,
  );
  // Dead letters of the in-process queue wait for an operator (svc recover), however old.
  await query(
    db,
    `insert into event_deliveries (id, consumer, message_id, body, status, attempts, unsettled, available_at, last_error, first_failed_at, dead_at, created_at) values
     ('dlv_dead', 'payments', 'evt_dead', '{}', 'dead', 5, 0, now() - interval '2000 hours', 'Error: boom', now() - interval '2000 hours', now() - interval '2000 hours', now() - interval '2000 hours')`,
  );
  const app = await createApp(
    loadConfig({ DATABASE_URL: db, SVC_DATA_DIR: join(tempDir(t), 'data'), LOG_LEVEL: 'silent', STRIPE_EVENTS_RETENTION_HOURS: '73' }),
  );
  t.after(() => app.close());
  await app.scheduleHousekeeping(60_000).stop();
  assert.deepEqual(await query(db, 'select id from stripe_events'), [{ id: 'evt_stripe_new' }]);
  assert.deepEqual(await query(db, 'select id, status from event_deliveries'), [{ id: 'dlv_dead', status: 'dead' }]);
});
