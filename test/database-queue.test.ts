import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { jwksFile } from './helpers/server.js';
import { DatabaseQueue, type DatabaseQueueOptions } from '../src/adapters/database-queue.js';
import { createApp, type App } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import type { EventMessage } from '../src/domain/events/events.js';
import type { Delivery } from '../src/domain/events/transport.js';
import { emit } from '../src/domain/events/emit.js';
import { newId } from '../src/domain/shared/ids.js';
import { ConsumerRunner, defineConsumer, type ConsumerDefinition, type Outcome } from '../src/worker/consumer.js';
import { OutboxRelay } from '../src/worker/relay.js';
import { tempDir } from './helpers/cli.js';
import { migratedDataDir, migratedDatabase, query } from './helpers/db.js';
import { appFor, insertOutbox, silent, waitFor } from './helpers/rabbit.js';

// The in-process transport's contract (the database is the queue), on PostgreSQL and on PGlite,
// through the consumer runner svc worker and svc serve use.

const DELAYS = [50, 100];

const event = (over: Partial<EventMessage> = {}): EventMessage => ({
  id: newId('evt'),
  type: 'order.created',
  aggregateId: 'ord_01JZ0000000000000000000000',
  payload: { total: 4950 },
  occurredAt: new Date().toISOString(),
  ...over,
});

type Later = (fn: () => Promise<unknown>) => void;

/**
 * What a test starts on its Apps (transports, runners, relays), stopped when it ends, last first,
 * before the Apps close: call it first in the test (after-hooks run in the order they were registered).
 */
function teardown(t: TestContext): Later {
  const fns: (() => Promise<unknown>)[] = [];
  t.after(async () => {
    for (const fn of fns.reverse()) await fn();
  });
  return (fn) => void fns.push(fn);
}

/** A transport on an App's database, closed when the test ends. */
function queueOn(later: Later, app: App, options: Partial<DatabaseQueueOptions> = {}): DatabaseQueue {
  const queue = new DatabaseQueue({
    sql: app.context({ actor: 'cli:test' }).sql,
    context: (input) => app.context(input),
    logger: silent,
    pollIntervalMs: 50,
    ...options,
  });
  later(() => queue.close());
  return queue;
}

interface Running {
  runner: ConsumerRunner;
  outcomes: Outcome[];
  /** Resolves with the outcomes once `n` deliveries are settled. */
  settled(n: number): Promise<Outcome[]>;
}

async function run(later: Later, app: App, queue: DatabaseQueue, consumer: ConsumerDefinition, prefetch = 4): Promise<Running> {
  const runner = new ConsumerRunner(consumer, { transport: queue, context: (input) => app.context(input), logger: silent, prefetch, retryDelaysMs: DELAYS });
  const outcomes: Outcome[] = [];
  const waiters: { n: number; resolve: () => void }[] = [];
  runner.onSettled = (outcome: Outcome) => {
    outcomes.push(outcome);
    for (const w of waiters.filter((w) => outcomes.length >= w.n)) w.resolve();
  };
  await runner.start();
  later(() => runner.stop());
  return {
    runner,
    outcomes,
    settled: (n) =>
      outcomes.length >= n ? Promise.resolve(outcomes.slice()) : new Promise<void>((resolve) => waiters.push({ n, resolve })).then(() => outcomes.slice()),
  };
}

interface DeliveryRow {
  consumer: string;
  message_id: string;
  body: string;
  status: string;
  attempts: number;
  last_error: string | null;
  lease_owner: string | null;
  due_in_ms: number;
  dead_at: Date | null;
}

const deliveries = (db: string) =>
  query<DeliveryRow>(
    db,
    `select consumer, message_id, body, status, attempts, last_error, lease_owner, dead_at,
       (extract(epoch from available_at - now()) * 1000)::float8 as due_in_ms
     from event_deliveries order by consumer, created_at`,
  );

test('the relay writes one delivery per consumer listening to the event, in its own transaction; a failure waits its delay in the table, then succeeds', async (t) => {
  const later = teardown(t);
  const { app, db } = await appFor(t);
  const queue = queueOn(later, app);
  let calls = 0;
  const flaky = defineConsumer({
    name: 'flaky',
    events: ['order.created'],
    handle: () => (++calls === 1 ? Promise.reject(new Error('provider timeout')) : Promise.resolve()),
  });
  // Declared (routed to) but not running: its deliveries wait for it.
  await queue.declare({ name: 'mailer', events: ['order.created', 'order.completed'], retryDelaysMs: DELAYS });
  await queue.declare({ name: 'refunds', events: ['refund.requested'], retryDelaysMs: DELAYS });
  const runner = new ConsumerRunner(flaky, { transport: queue, context: (input) => app.context(input), logger: silent, prefetch: 4, retryDelaysMs: [60_000] });
  const outcomes: Outcome[] = [];
  runner.onSettled = (o) => outcomes.push(o);
  await runner.start();
  later(() => runner.stop());

  const [id] = await insertOutbox(db, 1);
  const relay = new OutboxRelay({ publisher: queue, context: (input) => app.context(input), logger: silent });
  assert.deepEqual(await relay.relayOnce(), { published: 1, failed: 0 });
  assert.deepEqual(await query(db, 'select status from outbox_events'), [{ status: 'published' }]);
  await waitFor(() => outcomes.length === 1, 10_000, 'the first attempt');
  assert.deepEqual(outcomes, ['retry']);
  const [flakyRow, mailerRow, ...others] = await deliveries(db);
  assert.equal(others.length, 0, 'refunds does not listen to order.created');
  assert.equal(mailerRow!.consumer, 'mailer');
  assert.equal(mailerRow!.attempts, 0);
  assert.equal((JSON.parse(mailerRow!.body) as EventMessage).id, id);
  assert.equal(flakyRow!.consumer, 'flaky');
  assert.equal(flakyRow!.status, 'pending');
  assert.equal(flakyRow!.attempts, 1);
  assert.equal(flakyRow!.last_error, 'Error: provider timeout');
  assert.equal(flakyRow!.lease_owner, null);
  assert.ok(flakyRow!.due_in_ms > 50_000, `waits its retry delay (due in ${flakyRow!.due_in_ms} ms)`);

  // Due now: taken again, handled, acknowledged (the row is gone), recorded in the inbox.
  await query(db, `update event_deliveries set available_at = now() where consumer = 'flaky'`);
  queue.committed();
  await waitFor(() => outcomes.length === 2, 10_000, 'the retry');
  assert.deepEqual(outcomes, ['retry', 'processed']);
  assert.equal(calls, 2);
  assert.deepEqual(
    (await deliveries(db)).map((r) => r.consumer),
    ['mailer'],
  );
  assert.deepEqual(await query(db, 'select consumer, message_id from processed_messages'), [{ consumer: 'flaky', message_id: id }]);
});

test('a handler that always fails is dead-lettered after the last retry, with the message, the attempts and the last error kept', async (t) => {
  const later = teardown(t);
  const { app, db } = await appFor(t);
  const queue = queueOn(later, app);
  const r = await run(
    later,
    app,
    queue,
    defineConsumer({ name: 'broken', events: ['order.created'], handle: () => Promise.reject(new Error('the mail provider said 503')) }),
  );
  const message = event({ traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' });
  await queue.publish([message]);
  queue.committed();
  assert.deepEqual(await r.settled(3), ['retry', 'retry', 'dead-letter']);
  const [dead] = await deliveries(db);
  assert.equal(dead!.status, 'dead');
  assert.equal(dead!.attempts, 3);
  assert.equal(dead!.last_error, 'Error: the mail provider said 503');
  assert.deepEqual(JSON.parse(dead!.body), message);
  assert.ok(dead!.dead_at instanceof Date);
  assert.equal(dead!.lease_owner, null);
  assert.deepEqual(await query(db, 'select * from processed_messages'), []);
});

test('a malformed body is dead-lettered at once with the reason, without running the handler', async (t) => {
  const later = teardown(t);
  const { app, db } = await appFor(t);
  const queue = queueOn(later, app);
  let calls = 0;
  const r = await run(later, app, queue, defineConsumer({ name: 'strict', events: ['order.created'], handle: () => Promise.resolve(void calls++) }));
  await query(
    db,
    `insert into event_deliveries (id, consumer, message_id, body, status, attempts, unsettled, available_at, created_at)
     values ($1, 'strict', 'junk-1', '{not json', 'pending', 0, 0, now(), now())`,
    [newId('dlv')],
  );
  queue.committed();
  assert.deepEqual(await r.settled(1), ['dead-letter']);
  const [dead] = await deliveries(db);
  assert.equal(dead!.status, 'dead');
  assert.equal(dead!.last_error, 'malformed message: the body is not JSON');
  assert.equal(dead!.body, '{not json');
  assert.equal(dead!.attempts, 1);
  assert.equal(calls, 0);
});

test('at most prefetch deliveries of a consumer are in flight; the others wait in the table until one is settled', async (t) => {
  const later = teardown(t);
  const { app, db } = await appFor(t);
  const queue = queueOn(later, app);
  const gates: (() => void)[] = [];
  let inFlight = 0;
  let most = 0;
  const r = await run(
    later,
    app,
    queue,
    defineConsumer({
      name: 'slow',
      events: ['order.created'],
      handle: async () => {
        most = Math.max(most, ++inFlight);
        await new Promise<void>((resolve) => gates.push(resolve));
        inFlight--;
      },
    }),
    3,
  );
  await queue.publish(Array.from({ length: 10 }, () => event()));
  queue.committed();
  await waitFor(() => gates.length === 3, 10_000, 'three deliveries in flight');
  const leased = async () => Number((await query<{ n: number }>(db, 'select count(*)::int as n from event_deliveries where lease_owner is not null'))[0]!.n);
  assert.equal(await leased(), 3);
  // Let them through one at a time: never more than three at once.
  for (let released = 0; released < 10; released++) {
    await waitFor(() => gates.length > released, 10_000, `delivery ${released + 1}`);
    gates[released]!();
  }
  assert.deepEqual(new Set(await r.settled(10)), new Set(['processed']));
  assert.equal(most, 3);
  assert.deepEqual(await deliveries(db), []);
});

test('a delivery leased by a process that died is taken over when its lease expires; one that killed its process every time is parked', async (t) => {
  const later = teardown(t);
  const { app, db } = await appFor(t);
  const queue = queueOn(later, app);
  const handled: string[] = [];
  const r = await run(
    later,
    app,
    queue,
    defineConsumer({ name: 'takeover', events: ['order.created'], handle: (_ctx, m) => Promise.resolve(void handled.push(m.id)) }),
  );
  const orphan = event();
  const poison = event();
  // As a process leaves them when it dies: leased (the lease runs out in 300 ms), and for the poison
  // message the fifth such lease since its last settled attempt.
  await query(
    db,
    `insert into event_deliveries (id, consumer, message_id, body, status, attempts, unsettled, available_at, lease_owner, created_at)
     values ($1, 'takeover', $2, $3, 'pending', 0, 1, now() + interval '300 milliseconds', '4242:dead', now()),
            ($4, 'takeover', $5, $6, 'pending', 2, 5, now() + interval '300 milliseconds', '4242:dead', now())`,
    [newId('dlv'), orphan.id, JSON.stringify(orphan), newId('dlv'), poison.id, JSON.stringify(poison)],
  );
  assert.deepEqual(await r.settled(1), ['processed']);
  assert.deepEqual(handled, [orphan.id]);
  await waitFor(async () => (await deliveries(db)).length === 1 && (await deliveries(db))[0]!.status === 'dead', 10_000, 'the poison message parked');
  const [dead] = await deliveries(db);
  assert.equal(dead!.message_id, poison.id);
  assert.equal(dead!.last_error, 'delivered 5 times without being settled (the process handling it stopped each time)');
  assert.equal(dead!.attempts, 3);
});

test('two transports on one PostgreSQL database (two processes) never both handle one delivery', async (t) => {
  const later = teardown(t);
  const { app, db } = await appFor(t);
  const app2 = await createApp(loadConfig({ DATABASE_URL: db, SVC_DATA_DIR: join(tempDir(t), 'unused'), LOG_LEVEL: 'silent' }), { logger: silent });
  t.after(() => app2.close());
  const queues = [queueOn(later, app), queueOn(later, app2)];
  const spec = { name: 'shared', events: ['order.created'] as const, retryDelaysMs: DELAYS };
  const seen = new Map<string, number>();
  const by = [0, 0];
  for (const [i, queue] of queues.entries()) {
    await queue.subscribe(spec, { prefetch: 5 }, async (delivery: Delivery) => {
      seen.set(delivery.messageId!, (seen.get(delivery.messageId!) ?? 0) + 1);
      by[i]!++;
      await new Promise((resolve) => setTimeout(resolve, Math.random() * 3));
      await delivery.ack();
    });
  }
  const messages = Array.from({ length: 300 }, () => event());
  for (let i = 0; i < messages.length; i += 50) await queues[i % 2]!.publish(messages.slice(i, i + 50));
  for (const queue of queues) queue.committed();
  await waitFor(() => seen.size === 300, 60_000, 'every message handled');
  await waitFor(async () => (await deliveries(db)).length === 0, 10_000, 'every delivery acknowledged');
  assert.ok(
    [...seen.values()].every((n) => n === 1),
    'no message handled twice',
  );
  assert.ok(by[0]! > 0 && by[1]! > 0, `both transports took deliveries (${by.join(' / ')})`);
});

test('on the embedded database (PGlite): the relay publishes in its transaction, the consumer takes each event once, and leases left by a dead process are released at start', async (t) => {
  const later = teardown(t);
  const dir = tempDir(t);
  const app = await createApp(loadConfig({ SVC_DATA_DIR: await migratedDataDir(dir), LOG_LEVEL: 'silent' }), { logger: silent, role: 'worker' });
  t.after(() => app.close());
  await app.migrations.prepareSchema({ orElse: 'migrate' });
  assert.equal(app.publisher?.kind, 'in-process');
  assert.equal(app.transport, app.publisher);
  // A delivery leased for an hour by a process that died before this one opened the folder.
  const left = event();
  await app.context({ actor: 'cli:test' }).sql(
    `insert into event_deliveries (id, consumer, message_id, body, status, attempts, unsettled, available_at, lease_owner, created_at)
     values ($1, 'embedded', $2, $3, 'pending', 0, 1, now() + interval '1 hour', '4242:dead', now())`,
    [newId('dlv'), left.id, JSON.stringify(left)],
  );
  const handled: string[] = [];
  const r = await run(
    later,
    app,
    app.transport as DatabaseQueue,
    defineConsumer({ name: 'embedded', events: ['order.created', 'order.cancelled'], handle: (_ctx, m) => Promise.resolve(void handled.push(m.id)) }),
  );
  const relay = new OutboxRelay({ publisher: app.publisher, context: (input) => app.context(input), logger: silent, pollIntervalMs: 50 });
  relay.start();
  later(() => relay.stop());
  const ids = await app
    .context({ actor: 'cli:test' })
    .transaction(async (tx) => [
      await emit(tx, 'order.created', 'ord_01JZ0000000000000000000001', { n: 1 }),
      await emit(tx, 'order.cancelled', 'ord_01JZ0000000000000000000001', { n: 2 }),
      await emit(tx, 'order.completed', 'ord_01JZ0000000000000000000001', { n: 3 }),
    ]);
  relay.notify();
  assert.deepEqual(await r.settled(3), ['processed', 'processed', 'processed']);
  assert.deepEqual(new Set(handled), new Set([left.id, ids[0], ids[1]]));
  const sql = app.context({ actor: 'cli:test' }).sql;
  await waitFor(async () => (await sql<{ n: number }>(`select count(*)::int as n from outbox_events where status = 'pending'`, []))[0]!.n === 0);
  assert.deepEqual(await sql('select * from event_deliveries', []), [], 'order.completed has no consumer here; the rest are acknowledged');
});

test('createApp: svc serve and svc worker without AMQP_URL get the in-process transport; with it svc serve gets none; overrides win', async (t) => {
  const db = await migratedDatabase(t);
  const dir = tempDir(t);
  const keys = await jwksFile(t);
  const config = loadConfig({ DATABASE_URL: db, JWT_KEYS_FILE: keys, SVC_DATA_DIR: join(dir, 'data'), LOG_LEVEL: 'silent' });
  for (const role of ['serve', 'worker'] as const) {
    const app = await createApp(config, { role, logger: silent });
    t.after(() => app.close());
    assert.equal(app.publisher?.kind, 'in-process', role);
    assert.equal(app.transport, app.publisher, role);
  }
  const command = await createApp(config, { logger: silent });
  t.after(() => command.close());
  assert.equal(command.publisher, undefined);
  const served = await createApp({ ...config, AMQP_URL: 'amqp://guest:guest@127.0.0.1:1' }, { role: 'serve', logger: silent });
  t.after(() => served.close());
  assert.equal(served.publisher, undefined, 'with AMQP_URL, svc worker relays and consumes on RabbitMQ');
  const publisher = { kind: 'test', publish: () => Promise.resolve(), check: () => Promise.resolve('ok'), close: () => Promise.resolve() };
  const transport = { kind: 'test', declare: () => Promise.resolve(), subscribe: () => Promise.reject(new Error('unused')) };
  const replaced = await createApp(config, { role: 'worker', logger: silent, publisher, transport });
  t.after(() => replaced.close());
  assert.equal(replaced.publisher, publisher);
  assert.equal(replaced.transport, transport);
});
