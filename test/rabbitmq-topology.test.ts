import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { GetMessage } from 'amqplib';
import { RabbitMq } from '../src/adapters/rabbitmq.js';
import { DomainError } from '../src/domain/shared/errors.js';
import type { EventMessage } from '../src/domain/events/events.js';
import type { ConsumerSpec } from '../src/domain/events/transport.js';
import { newId } from '../src/domain/shared/ids.js';
import { AMQP_URL, rabbitFor, rawChannel, silent, testPrefix, waitFor } from './helpers/rabbit.js';

const spec = (name: string, retryDelaysMs = [50, 100]): ConsumerSpec => ({ name, events: ['order.created', 'order.cancelled'], retryDelaysMs });

const event = (over: Partial<EventMessage> = {}): EventMessage => ({
  id: newId('evt'),
  type: 'order.created',
  aggregateId: 'ord_01JZ0000000000000000000000',
  payload: { total: 4950 },
  occurredAt: new Date('2026-11-27T10:00:00.000Z').toISOString(),
  traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
  ...over,
});

test('a consumer gets a work queue, one wait queue per retry delay and a dead-letter queue, declared again harmlessly', async (t) => {
  const rabbit = await rabbitFor(t);
  const ch = await rawChannel(t);
  await rabbit.declare(spec('payments'));
  await rabbit.declare(spec('payments')); // idempotent
  const q = rabbit.queues(spec('payments'));
  assert.deepEqual(
    q.retries.map((r) => r.queue),
    [`${q.work}.retry.50ms`, `${q.work}.retry.100ms`],
  );
  for (const name of [q.work, q.dead, ...q.retries.map((r) => r.queue)]) {
    const info = await ch.checkQueue(name);
    assert.equal(info.messageCount, 0, name);
  }
  await ch.checkExchange(rabbit.exchange);
});

test('a queue that exists with other arguments is refused with an error that says what to do', async (t) => {
  const prefix = testPrefix();
  const first = await rabbitFor(t, { prefix, deliveryLimit: 5 });
  await first.declare(spec('mail'));
  const second = await rabbitFor(t, { prefix, deliveryLimit: 3 });
  await assert.rejects(second.declare(spec('mail')), (err: unknown) => {
    assert.ok(err instanceof DomainError && err.code === 'unavailable');
    assert.match(err.message, /could not declare the RabbitMQ queues of consumer mail .*PRECONDITION_FAILED.*x-delivery-limit/s);
    return true;
  });
});

test('publish resolves once confirmed; the message is persistent with the event id, type, timestamp and traceparent, routed by type', async (t) => {
  const rabbit = await rabbitFor(t);
  const ch = await rawChannel(t);
  await rabbit.declare(spec('receipts'));
  const q = rabbit.queues(spec('receipts'));
  const created = event();
  const completed = event({ type: 'order.completed' }); // receipts does not listen to it
  await rabbit.publish([created, completed]);
  await waitFor(async () => (await ch.checkQueue(q.work)).messageCount === 1, 5_000, 'the message in the work queue');
  const got = await ch.get(q.work, { noAck: true });
  assert.ok(got);
  assert.deepEqual(JSON.parse(got.content.toString()), created);
  assert.equal(got.properties.deliveryMode, 2);
  assert.equal(got.properties.messageId, created.id);
  assert.equal(got.properties.type, 'order.created');
  assert.equal(got.properties.contentType, 'application/json');
  assert.equal(got.properties.timestamp, Date.parse(created.occurredAt) / 1000);
  assert.equal(got.properties.headers?.traceparent, created.traceparent);
  assert.equal(got.fields.routingKey, 'order.created');
  assert.equal(await rabbit.check(), 'ok');
});

test('a batch of publishes leaves in a few socket writes, not one per message, and arrives whole and in order', async (t) => {
  const rabbit = await rabbitFor(t);
  const ch = await rawChannel(t);
  await rabbit.declare(spec('relay-batch'));
  const q = rabbit.queues(spec('relay-batch'));
  // The adapter's socket (inside amqplib): each _write or _writev is one system call.
  const socket = (Reflect.get(rabbit, 'model') as { connection: { stream: Record<'_write' | '_writev', (...args: unknown[]) => unknown> } }).connection.stream;
  let writes = 0;
  for (const method of ['_write', '_writev'] as const) {
    const original = socket[method].bind(socket);
    socket[method] = (...args: unknown[]) => {
      writes++;
      return original(...args);
    };
  }
  const batch = Array.from({ length: 200 }, (_, i) => event({ aggregateId: `ord_${String(i).padStart(26, '0')}` }));
  await rabbit.publish(batch);
  // 200 messages of about 500 bytes: a handful of writes at the socket's 16 KiB high-water mark.
  assert.ok(writes <= 20, `${writes} socket writes for 200 messages`);
  await waitFor(async () => (await ch.checkQueue(q.work)).messageCount === 200, 10_000, 'the 200 messages in the work queue');
  const got: string[] = [];
  for (let i = 0; i < 200; i++) got.push(((await ch.get(q.work, { noAck: true })) as GetMessage).properties.messageId as string);
  assert.deepEqual(
    got,
    batch.map((m) => m.id),
  );
});

test('a message delivered too often (a consumer that dies on it every time) is dead-lettered by the broker instead of blocking its queue', async (t) => {
  const rabbit = await rabbitFor(t, { deliveryLimit: 2 });
  await rabbit.declare(spec('orders'));
  const q = rabbit.queues(spec('orders'));
  const ch = await rawChannel(t);
  await ch.prefetch(1);
  await rabbit.publish([event()]);
  let deliveries = 0;
  // A consumer that gives every delivery back (as a crash would): after x-delivery-limit the broker moves it.
  await ch.consume(q.work, (msg) => {
    if (!msg) return;
    deliveries++;
    ch.nack(msg, false, true);
  });
  await waitFor(async () => (await ch.checkQueue(q.dead)).messageCount === 1, 10_000, 'the message in the dead-letter queue');
  assert.equal(deliveries, 3, 'delivered once, then redelivered up to the limit of 2');
  assert.equal((await ch.checkQueue(q.work)).messageCount, 0);
  const dead = (await ch.get(q.dead, { noAck: true })) as GetMessage;
  const death = (dead.properties.headers?.['x-death'] as { reason: string; queue: string }[])[0]!;
  assert.equal(death.reason, 'delivery_limit');
  assert.equal(death.queue, q.work);
});

test('RabbitMQ unreachable at start: an error naming AMQP_URL and the masked address', async () => {
  const url = new URL(AMQP_URL);
  url.port = '1'; // nothing listens there
  await assert.rejects(
    RabbitMq.connect(url.toString(), { logger: silent, prefix: testPrefix(), startupRetries: 1, reconnect: { initialMs: 10, maxMs: 20 } }),
    (err: unknown) => {
      assert.ok(err instanceof DomainError && err.code === 'unavailable');
      assert.match(err.message, /^RabbitMQ is unreachable at amqp:\/\/guest:\*\*\*\*@127\.0\.0\.1:1 \(ECONNREFUSED.*\): check AMQP_URL/);
      return true;
    },
  );
});

test('publish rejects while RabbitMQ is not connected, and after close', async (t) => {
  const url = new URL(AMQP_URL);
  url.port = '1';
  const down = await RabbitMq.connect(url.toString(), {
    logger: silent,
    prefix: testPrefix(),
    waitForConnect: false,
    reconnect: { initialMs: 50, maxMs: 100 },
  });
  t.after(() => down.close());
  await assert.rejects(down.publish([event()]), /RabbitMQ at amqp:\/\/guest:\*\*\*\*@127\.0\.0\.1:1 is not connected/);
  assert.match(await down.check(), /is not connected/);

  const rabbit = await rabbitFor(t);
  await rabbit.close();
  await assert.rejects(rabbit.publish([event()]), /not connected/);
});
