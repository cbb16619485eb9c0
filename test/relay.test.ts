import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type { RabbitMq } from '../src/adapters/rabbitmq.js';
import type { App } from '../src/app.js';
import type { EventMessage } from '../src/domain/events/events.js';
import type { EventPublisher } from '../src/domain/events/publisher.js';
import { OutboxRelay, type RelayOptions } from '../src/worker/relay.js';
import { query } from './helpers/db.js';
import { appFor, insertOutbox, rabbitFor, rabbitProxy, rawChannel, silent, waitFor } from './helpers/rabbit.js';

const SPEC = { name: 'audit', events: ['order.created'], retryDelaysMs: [50] } as const;

/**
 * The relays a test makes, stopped when it ends before anything else is torn down: call it first in
 * the test (after-hooks run in the order they were registered; a relay outliving its App or its
 * database would wait on a closed pool).
 */
function relays(t: TestContext): (app: App, publisher: EventPublisher, options?: Partial<RelayOptions>) => OutboxRelay {
  const made: OutboxRelay[] = [];
  t.after(() => Promise.all(made.map((r) => r.stop())));
  return (app, publisher, options = {}) => {
    const r = new OutboxRelay({
      publisher,
      context: (input) => app.context(input),
      logger: silent,
      pollIntervalMs: 50,
      backoff: { baseMs: 20, maxMs: 200 },
      ...options,
    });
    made.push(r);
    return r;
  };
}

const counts = async (db: string) =>
  Object.fromEntries(
    (await query<{ status: string; n: number }>(db, 'select status, count(*)::int as n from outbox_events group by status')).map((r) => [r.status, r.n]),
  ) as { pending?: number; published?: number };

/** Collects every message that reaches the consumer queue of SPEC. */
async function collect(t: TestContext, rabbit: RabbitMq): Promise<EventMessage[]> {
  await rabbit.declare({ ...SPEC, events: [...SPEC.events] });
  const ch = await rawChannel(t);
  const got: EventMessage[] = [];
  await ch.consume(
    rabbit.queues(SPEC).work,
    (msg) => {
      if (msg) got.push(JSON.parse(msg.content.toString()) as EventMessage);
    },
    { noAck: true },
  );
  return got;
}

test('two relays at once publish 500 pending rows exactly once each, in batches, and mark them all published', async (t) => {
  const relay = relays(t);
  const { app, db } = await appFor(t);
  const app2 = await secondApp(t, db);
  const rabbit = await rabbitFor(t);
  const got = await collect(t, rabbit);
  const ids = await insertOutbox(db, 500);
  const a = relay(app, rabbit, { batchSize: 20 });
  const b = relay(app2, rabbit, { batchSize: 20 });
  a.start();
  b.start();
  await waitFor(() => got.length >= 500, 30_000, '500 messages');
  await waitFor(async () => (await counts(db)).published === 500, 10_000, 'every row marked published');
  await Promise.all([a.stop(), b.stop()]);
  assert.equal(got.length, 500, 'no message twice');
  assert.deepEqual(new Set(got.map((m) => m.id)), new Set(ids));
  const rows = await query<{ attempts: number; last_error: string | null }>(db, 'select attempts, last_error from outbox_events');
  assert.ok(rows.every((r) => r.attempts === 0 && r.last_error === null));
  const sample = got.find((m) => m.id === ids[0])!;
  assert.equal(sample.type, 'order.created');
  assert.equal(sample.traceparent, '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01');
  assert.deepEqual(sample.payload, { n: 1 });
});

/** Another App (its own pool) on the same database: a second worker process. */
async function secondApp(t: TestContext, db: string): Promise<App> {
  const { createApp } = await import('../src/app.js');
  const { loadConfig } = await import('../src/config.js');
  const app = await createApp(loadConfig({ DATABASE_URL: db, LOG_LEVEL: 'silent' }), { logger: silent });
  t.after(() => app.close());
  return app;
}

test('RabbitMQ down at publish time: rows stay pending with attempts and the error, and are published once it is back', async (t) => {
  const relay = relays(t);
  const { app, db } = await appFor(t);
  const proxy = await rabbitProxy(t);
  const rabbit = await rabbitFor(t, { url: proxy.url });
  const got = await collect(t, rabbit);
  await proxy.down();
  await waitFor(async () => (await rabbit.check()) !== 'ok', 5_000, 'the adapter to notice');
  const ids = await insertOutbox(db, 10);
  // A first pass with a long backoff, to see the rows pushed back.
  assert.deepEqual(await relay(app, rabbit, { backoff: { baseMs: 60_000, maxMs: 60_000 } }).relayOnce(), { published: 0, failed: 10 });
  const pending = await query<{ status: string; attempts: number; last_error: string; due_in_ms: number }>(
    db,
    `select status, attempts, last_error, (extract(epoch from available_at - now()) * 1000)::float8 as due_in_ms from outbox_events`,
  );
  assert.equal(pending.length, 10);
  for (const row of pending) {
    assert.equal(row.status, 'pending');
    assert.equal(row.attempts, 1);
    assert.match(row.last_error, /RabbitMQ at amqp:\/\/guest:\*\*\*\*@127\.0\.0\.1:\d+\/? is not connected/);
    assert.ok(row.due_in_ms > 50_000, 'pushed back by the backoff');
  }
  await query(db, 'update outbox_events set available_at = now()');
  const r = relay(app, rabbit);
  // The relay keeps trying (with backoff) while RabbitMQ is away, then publishes once it is back.
  r.start();
  await waitFor(
    async () => ((await query<{ n: number }>(db, 'select min(attempts)::int as n from outbox_events'))[0]!.n ?? 0) >= 2,
    10_000,
    'a second failed attempt',
  );
  await proxy.up();
  await waitFor(async () => (await counts(db)).published === 10, 15_000, 'the rows published after reconnection');
  await waitFor(() => got.length >= 10, 5_000, 'the messages consumed');
  assert.deepEqual(new Set(got.map((m) => m.id)), new Set(ids));
  assert.equal(got.length, 10);
  await r.stop();
});

test('a publisher that fails is replaced by a working one: the pending rows are published (nothing lost)', async (t) => {
  const relay = relays(t);
  const { app, db } = await appFor(t);
  await insertOutbox(db, 3);
  const failing: EventPublisher = {
    kind: 'test',
    publish: () => Promise.reject(new Error('connection closed mid-publish')),
    check: () => Promise.resolve('down'),
    close: () => Promise.resolve(),
  };
  // Rows are due again at once (baseMs 0) so the second relay does not wait for the backoff.
  assert.deepEqual(await relay(app, failing, { backoff: { baseMs: 0, maxMs: 0 } }).relayOnce(), { published: 0, failed: 3 });
  assert.deepEqual(await query(db, 'select distinct attempts, last_error from outbox_events'), [{ attempts: 1, last_error: 'connection closed mid-publish' }]);
  const rabbit = await rabbitFor(t);
  const got = await collect(t, rabbit);
  assert.deepEqual(await relay(app, rabbit).relayOnce(), { published: 3, failed: 0 });
  await waitFor(() => got.length === 3, 5_000, 'three messages');
  assert.deepEqual(await counts(db), { published: 3 });
});

test('notify() wakes an idle relay at once, long before its next poll; stop() ends it', async (t) => {
  const relay = relays(t);
  const { app, db } = await appFor(t);
  const rabbit = await rabbitFor(t);
  const got = await collect(t, rabbit);
  const r = relay(app, rabbit, { pollIntervalMs: 600_000 });
  await insertOutbox(db, 1);
  r.start();
  await waitFor(() => got.length === 1, 5_000, 'the first message, from the first pass');
  // The relay now sleeps for ten minutes, unless woken.
  await insertOutbox(db, 1);
  r.notify();
  await waitFor(() => got.length === 2, 5_000, 'the message published after notify');
  await r.stop();
});
