import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type { Channel, GetMessage } from 'amqplib';
import type { RabbitMq } from '../src/adapters/rabbitmq.js';
import type { App } from '../src/app.js';
import type { EventMessage } from '../src/domain/events/events.js';
import type { Delivery } from '../src/domain/events/transport.js';
import type { Ctx } from '../src/domain/shared/context.js';
import { DomainError } from '../src/domain/shared/errors.js';
import { newId } from '../src/domain/shared/ids.js';
import { query as sql } from '../src/domain/shared/sql.js';
import { ConsumerRunner, defineConsumer, type ConsumerDefinition, type Outcome } from '../src/worker/consumer.js';
import { query } from './helpers/db.js';
import { appFor, rabbitFor, rawChannel, silent, waitFor } from './helpers/rabbit.js';

const DELAYS = [50, 100];

const event = (over: Partial<EventMessage> = {}): EventMessage => ({
  id: newId('evt'),
  type: 'order.created',
  aggregateId: 'ord_01JZ0000000000000000000000',
  payload: { total: 4950 },
  occurredAt: new Date().toISOString(),
  ...over,
});

/** The handler's effect: a row in a table of the test's own database, written in the handler's transaction. */
async function recordEffect(ctx: Ctx, consumer: string, message: EventMessage): Promise<void> {
  await sql(ctx.em, 'insert into test_effects (consumer, message_id) values ($1, $2)', [consumer, message.id]);
}

interface Running {
  app: App;
  rabbit: RabbitMq;
  db: string;
  ch: Channel;
  runner: ConsumerRunner;
  /** Resolves with the outcome of the n-th settled delivery (1-based). */
  outcomes: Outcome[];
  settled(n: number): Promise<Outcome[]>;
}

/** Runs a consumer on a database and a RabbitMQ prefix of the test's own, or on those of `beside` (another consumer). */
async function run(t: TestContext, consumer: ConsumerDefinition, options: { prefetch?: number; beside?: Running } = {}): Promise<Running> {
  const { app, db } = options.beside ?? (await appFor(t));
  if (!options.beside) await query(db, 'create table test_effects (consumer text not null, message_id text not null)');
  const rabbit = options.beside?.rabbit ?? (await rabbitFor(t));
  const ch = await rawChannel(t);
  const runner = new ConsumerRunner(consumer, {
    transport: rabbit,
    context: (input) => app.context(input),
    logger: silent,
    prefetch: options.prefetch ?? 4,
    retryDelaysMs: DELAYS,
  });
  const outcomes: Outcome[] = [];
  const waiters: { n: number; resolve: () => void }[] = [];
  runner.onSettled = (outcome: Outcome, _delivery: Delivery) => {
    outcomes.push(outcome);
    for (const w of waiters.filter((w) => outcomes.length >= w.n)) w.resolve();
  };
  await runner.start();
  t.after(() => runner.stop());
  return {
    app,
    rabbit,
    db,
    ch,
    runner,
    outcomes,
    settled: (n) =>
      outcomes.length >= n ? Promise.resolve(outcomes) : new Promise<void>((resolve) => waiters.push({ n, resolve })).then(() => outcomes.slice()),
  };
}

const effects = (db: string, consumer?: string) =>
  query<{ consumer: string; message_id: string }>(
    db,
    `select consumer, message_id from test_effects ${consumer ? 'where consumer = $1' : ''} order by consumer`,
    consumer ? [consumer] : [],
  );
const inbox = (db: string) => query<{ consumer: string; message_id: string }>(db, 'select consumer, message_id from processed_messages order by consumer');

async function deadLetters(ch: Channel, queue: string, count: number): Promise<GetMessage[]> {
  await waitFor(async () => (await ch.checkQueue(queue)).messageCount >= count, 10_000, `${count} message(s) in ${queue}`);
  const got: GetMessage[] = [];
  for (let i = 0; i < count; i++) got.push((await ch.get(queue, { noAck: true })) as GetMessage);
  return got;
}

// Each test has a database and a broker prefix of its own, and mostly waits for the broker and the
// retry ladder's timers: four run at once.
describe('the consumer runner on RabbitMQ', { concurrency: 4 }, () => {
  test('a handler that fails twice goes through both wait queues and succeeds on the third attempt; another consumer of the event sees it once', async (t) => {
    let calls = 0;
    const flaky = await run(
      t,
      defineConsumer({
        name: 'flaky',
        events: ['order.created'],
        async handle(ctx, message) {
          calls++;
          await recordEffect(ctx, 'flaky', message);
          if (calls < 3) throw new Error(`provider timeout ${calls}`);
        },
      }),
    );
    const other = await run(t, defineConsumer({ name: 'other', events: ['order.created'], handle: (ctx, message) => recordEffect(ctx, 'other', message) }), {
      beside: flaky,
    });
    const message = event();
    await flaky.rabbit.publish([message]);
    assert.deepEqual(await flaky.settled(3), ['retry', 'retry', 'processed']);
    assert.deepEqual(await other.settled(1), ['processed']);
    assert.equal(calls, 3);
    // Failed attempts rolled back their effect; the retried message came back to flaky only.
    assert.deepEqual(await effects(flaky.db), [
      { consumer: 'flaky', message_id: message.id },
      { consumer: 'other', message_id: message.id },
    ]);
    assert.deepEqual(await inbox(flaky.db), [
      { consumer: 'flaky', message_id: message.id },
      { consumer: 'other', message_id: message.id },
    ]);
    assert.deepEqual(other.outcomes, ['processed'], 'the retries never reached the other consumer');
  });

  test('a handler that always fails ends in the dead-letter queue with the message, its headers, the attempts and the last error', async (t) => {
    const r = await run(
      t,
      defineConsumer({
        name: 'broken',
        events: ['order.created'],
        handle() {
          return Promise.reject(new Error('the mail provider said 503'));
        },
      }),
    );
    const message = event({ traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' });
    await r.rabbit.publish([message]);
    assert.deepEqual(await r.settled(3), ['retry', 'retry', 'dead-letter']);
    const [dead] = await deadLetters(r.ch, r.rabbit.queues(r.runner.spec).dead, 1);
    assert.deepEqual(JSON.parse(dead!.content.toString()), message);
    const h = dead!.properties.headers!;
    assert.equal(h['x-svc-attempts'], 3);
    assert.equal(h['x-svc-last-error'], 'Error: the mail provider said 503');
    assert.equal(h['x-svc-consumer'], 'broken');
    assert.ok(!Number.isNaN(Date.parse(h['x-svc-first-failed-at'] as string)));
    assert.ok(Date.parse(h['x-svc-dead-at'] as string) >= Date.parse(h['x-svc-first-failed-at'] as string));
    assert.equal(h.traceparent, message.traceparent);
    assert.equal(dead!.properties.messageId, message.id);
    assert.equal(dead!.properties.deliveryMode, 2);
    assert.deepEqual(await inbox(r.db), []);
  });

  test('a poison message (not JSON, or not an event) goes to the dead-letter queue at once with the reason', async (t) => {
    let calls = 0;
    const r = await run(
      t,
      defineConsumer({
        name: 'strict',
        events: ['order.created'],
        handle: () => {
          calls++;
          return Promise.resolve();
        },
      }),
    );
    const exchange = r.rabbit.exchange;
    r.ch.publish(exchange, 'order.created', Buffer.from('{not json'), { messageId: 'junk-1', persistent: true });
    r.ch.publish(exchange, 'order.created', Buffer.from(JSON.stringify({ id: 'evt_x', type: 'order.created' })), { persistent: true });
    assert.deepEqual(await r.settled(2), ['dead-letter', 'dead-letter']);
    const dead = await deadLetters(r.ch, r.rabbit.queues(r.runner.spec).dead, 2);
    const reasons = dead.map((d) => d.properties.headers!['x-svc-last-error'] as string).sort();
    assert.deepEqual(reasons, ['malformed message: aggregateId is missing or not a string of 1 to 64 characters', 'malformed message: the body is not JSON']);
    assert.ok(dead.every((d) => d.properties.headers!['x-svc-attempts'] === 1));
    assert.equal(dead.find((d) => d.properties.messageId === 'junk-1')?.content.toString(), '{not json');
    assert.equal(calls, 0);
  });

  test('a message whose ids PostgreSQL cannot store or svc never makes (a NUL, spaces, markup) goes to the dead-letter queue at once, not through the retries', async (t) => {
    let calls = 0;
    const r = await run(
      t,
      defineConsumer({
        name: 'ids',
        events: ['order.created'],
        handle: () => {
          calls++;
          return Promise.resolve();
        },
      }),
    );
    const exchange = r.rabbit.exchange;
    const bodies = [event({ id: 'evt_1\u0000' }), event({ aggregateId: 'ord_1\u0000' }), event({ aggregateId: "ord_1' or '1'='1" })];
    for (const body of bodies) r.ch.publish(exchange, 'order.created', Buffer.from(JSON.stringify(body)), { persistent: true });
    assert.deepEqual(await r.settled(3), ['dead-letter', 'dead-letter', 'dead-letter']);
    const dead = await deadLetters(r.ch, r.rabbit.queues(r.runner.spec).dead, 3);
    assert.deepEqual(dead.map((d) => [d.properties.headers!['x-svc-attempts'], d.properties.headers!['x-svc-last-error']]).sort(), [
      [1, 'malformed message: aggregateId is not an id (letters, digits, _ and -)'],
      [1, 'malformed message: aggregateId is not an id (letters, digits, _ and -)'],
      [1, 'malformed message: id is not an id (letters, digits, _ and -)'],
    ]);
    assert.equal(calls, 0);
    assert.deepEqual(await inbox(r.db), []);
  });

  test('an error the handler marks as permanent (DomainError invalid) goes to the dead-letter queue without retries', async (t) => {
    const r = await run(
      t,
      defineConsumer({
        name: 'picky',
        events: ['order.created'],
        handle: () => Promise.reject(new DomainError('invalid', 'order ord_… has no items')),
      }),
    );
    await r.rabbit.publish([event()]);
    assert.deepEqual(await r.settled(1), ['dead-letter']);
    const [dead] = await deadLetters(r.ch, r.rabbit.queues(r.runner.spec).dead, 1);
    assert.equal(dead!.properties.headers!['x-svc-last-error'], 'invalid: order ord_… has no items');
    assert.equal(dead!.properties.headers!['x-svc-attempts'], 1);
  });

  test('a database connection lost under a message (a restart, a failover) defers it like a provider outage: no attempt used up, never dead-lettered, done once the database answers', async (t) => {
    let calls = 0;
    const r = await run(
      t,
      defineConsumer({
        name: 'failover',
        events: ['order.created'],
        async handle(ctx, message) {
          calls++;
          await recordEffect(ctx, 'failover', message);
          // More losses than the retry ladder has steps (DELAYS: 2 retries, then the dead-letter queue).
          if (calls <= DELAYS.length + 1) await sql(ctx.em, 'select pg_terminate_backend(pg_backend_pid())', []);
        },
      }),
    );
    const message = event();
    await r.rabbit.publish([message]);
    assert.deepEqual(await r.settled(DELAYS.length + 1), ['deferred', 'deferred', 'deferred']);
    assert.deepEqual(await r.settled(DELAYS.length + 2), ['deferred', 'deferred', 'deferred', 'processed']);
    assert.deepEqual(await effects(r.db), [{ consumer: 'failover', message_id: message.id }]);
    assert.deepEqual(await inbox(r.db), [{ consumer: 'failover', message_id: message.id }]);
    assert.equal((await r.ch.checkQueue(r.rabbit.queues(r.runner.spec).dead)).messageCount, 0);
  });

  test('the same message delivered twice has one effect: the second is acknowledged without running the handler', async (t) => {
    let calls = 0;
    const r = await run(
      t,
      defineConsumer({
        name: 'once',
        events: ['order.created'],
        async handle(ctx, message) {
          calls++;
          await recordEffect(ctx, 'once', message);
        },
      }),
      { prefetch: 1 },
    );
    const message = event();
    await r.rabbit.publish([message]);
    await r.rabbit.publish([message]);
    assert.deepEqual(await r.settled(2), ['processed', 'duplicate']);
    assert.equal(calls, 1);
    assert.equal((await effects(r.db, 'once')).length, 1);
    assert.equal((await r.ch.checkQueue(r.rabbit.queues(r.runner.spec).work)).messageCount, 0);
  });

  test("a consumer's first statement goes with the inbox insert: the handler gets its rows; a duplicate runs neither the handler nor the statement's write", async (t) => {
    const seen: unknown[] = [];
    const r = await run(
      t,
      defineConsumer({
        name: 'first',
        events: ['order.created'],
        // A write, so it must check the inbox: the statement runs for a duplicate too.
        first: (message) => ({
          text: `insert into test_effects (consumer, message_id) select 'first', $1 where exists (select 1 from inbox) returning consumer, message_id`,
          values: [message.id],
        }),
        handle(_ctx, _message, first) {
          seen.push(first);
          return Promise.resolve();
        },
      }),
    );
    const message = event();
    // Both deliveries in flight at once (prefetch 4): the second waits on the first one's inbox row.
    await r.rabbit.publish([message, message]);
    assert.deepEqual((await r.settled(2)).toSorted(), ['duplicate', 'processed']);
    assert.deepEqual(seen, [[{ consumer: 'first', message_id: message.id }]]);
    assert.deepEqual(await effects(r.db), [{ consumer: 'first', message_id: message.id }]);
    assert.deepEqual(await inbox(r.db), [{ consumer: 'first', message_id: message.id }]);
  });

  test('the inbox row and the effect commit together: a handler that throws after writing leaves neither', async (t) => {
    let calls = 0;
    // The retry (50 ms later) waits until the failed attempt's traces are looked for: on a busy
    // machine it could otherwise commit between the two reads.
    let lookedAt!: () => void;
    const looked = new Promise<void>((resolve) => (lookedAt = resolve));
    const r = await run(
      t,
      defineConsumer({
        name: 'atomic',
        events: ['order.created'],
        async handle(ctx, message) {
          calls++;
          if (calls > 1) await looked;
          await recordEffect(ctx, 'atomic', message);
          if (calls === 1) throw new Error('crash after the write');
        },
      }),
    );
    const message = event();
    await r.rabbit.publish([message]);
    assert.deepEqual(await r.settled(1), ['retry']);
    assert.deepEqual(await effects(r.db), [], 'the effect of the failed attempt was rolled back');
    assert.deepEqual(await inbox(r.db), [], 'and so was its inbox row, so the retry runs the handler');
    lookedAt();
    assert.deepEqual(await r.settled(2), ['retry', 'processed']);
    assert.deepEqual(await effects(r.db), [{ consumer: 'atomic', message_id: message.id }]);
    assert.deepEqual(await inbox(r.db), [{ consumer: 'atomic', message_id: message.id }]);
  });

  test('graceful stop: no new messages, the ones in flight finish, commit and are acknowledged', async (t) => {
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let started!: () => void;
    const inHandler = new Promise<void>((resolve) => (started = resolve));
    const r = await run(
      t,
      defineConsumer({
        name: 'slow',
        events: ['order.created'],
        async handle(ctx, message) {
          started();
          await released;
          await recordEffect(ctx, 'slow', message);
        },
      }),
      { prefetch: 1 },
    );
    const [first, second] = [event(), event()];
    await r.rabbit.publish([first, second]);
    await inHandler;
    assert.equal(r.runner.busy, 1);
    const stopping = r.runner.stop();
    let stopped = false;
    void stopping.then(() => (stopped = true));
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(stopped, false, 'stop waits for the message in flight');
    release();
    await stopping;
    assert.deepEqual(r.outcomes, ['processed'], 'the second message was never started');
    assert.deepEqual(await effects(r.db), [{ consumer: 'slow', message_id: first.id }]);
    // The channel is closed: an unacknowledged first message would be back in the queue beside the second.
    const work = r.rabbit.queues(r.runner.spec).work;
    await waitFor(async () => (await r.ch.checkQueue(work)).messageCount === 1, 5_000, 'the second message back in the queue');
    const left = (await r.ch.get(work, { noAck: true })) as GetMessage;
    assert.equal(left.properties.messageId, second.id);
  });
});
