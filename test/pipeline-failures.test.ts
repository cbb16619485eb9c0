import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { StripePayments } from '../src/adapters/stripe-payments.js';
import { RabbitMq } from '../src/adapters/rabbitmq.js';
import type { ChargeInput, PaymentProvider, RefundInput } from '../src/domain/payments/payment-provider.js';
import { FAKE_STRIPE_SECRET_KEY, type FakeStripe } from './fakes/stripe.js';
import { query } from './helpers/db.js';
import { AMQP_URL, rawChannel, silent, waitFor } from './helpers/rabbit.js';
import { assertDoneOnce, shop, statusCounts } from './helpers/worker.js';

// The payments pipeline (relay, RabbitMQ, payments consumer, Stripe through the SDK and the fake) run
// by svc worker in this process (startWorker), failing: Stripe down until the breaker opens, two
// workers and two relays at once. Retry delays are short; the real ones are 1 s, 10 s, 1 min, 10 min.

const PI_ROUTE = 'POST /v1/payment_intents' as const;
const RETRY_DELAYS_MS = [100, 200, 400, 800, 1_600, 3_200];

/** The Stripe adapter on the fake, with a breaker that opens after 3 calls at 50 % errors and tries again after 1 s. */
function stripeFor(t: TestContext, fake: FakeStripe): StripePayments {
  const payments = new StripePayments({
    secretKey: FAKE_STRIPE_SECRET_KEY,
    apiUrl: fake.url,
    logger: silent,
    timeoutMs: 1_000,
    searchLagMs: 0,
    breaker: { volumeThreshold: 3, resetTimeoutMs: 1_000, rollingWindowMs: 5_000, timeoutMs: 2_000 },
  });
  t.after(() => payments.close());
  return payments;
}

/** Messages waiting in the payments consumer's wait queues, and in its dead-letter queue. */
async function queueDepths(t: TestContext, prefix: string) {
  const rabbit = await RabbitMq.connect(AMQP_URL, { logger: silent, prefix });
  t.after(() => rabbit.close());
  const ch = await rawChannel(t);
  const q = rabbit.queues({ name: 'payments', retryDelaysMs: RETRY_DELAYS_MS });
  return async () => {
    let waiting = 0;
    for (const r of q.retries) waiting += (await ch.checkQueue(r.queue)).messageCount;
    return { waiting, dead: (await ch.checkQueue(q.dead)).messageCount };
  };
}

// Each test has its own database, broker prefix, fakes and workers, and mostly waits on the retry
// queues: they run at once.
describe('the payments pipeline failing', { concurrency: true }, () => {
  test('Stripe failing opens the breaker: orders stay pending while their messages wait in the retry queues, and complete once Stripe recovers', async (t) => {
    const s = await shop(t, { retryDelaysMs: RETRY_DELAYS_MS });
    const payments = stripeFor(t, s.fake);
    const transitions: string[] = [];
    payments.breaker.circuit.on('open', () => transitions.push('open'));
    payments.breaker.circuit.on('close', () => transitions.push('close'));
    await s.worker({ concurrency: 4, overrides: { payments } });
    const depths = await queueDepths(t, s.prefix);

    // Until told otherwise Stripe fails in turn: a 500 (stored under a charge's key, nothing charged; a
    // search fails too), a charge whose answer never comes (the SDK times out), a charge whose
    // connection drops before the answer.
    for (let i = 0; i < 300; i++) {
      s.fake.failNext();
      s.fake.delayNext({ route: PI_ROUTE, ms: 3_000 });
      s.fake.dropNext({ route: PI_ROUTE });
    }
    const orders = await s.place(12);
    await waitFor(() => payments.breaker.state === 'open', 15_000, 'the breaker to open');
    await waitFor(async () => (await depths()).waiting > 0, 15_000, 'messages waiting in the retry queues');
    const during = await statusCounts(s.db);
    // A charge made before its connection dropped may be found (the SDK's one retry of a reset
    // connection replays it); no order fails, and those Stripe could not charge wait.
    assert.equal(during.failed, undefined, `no order failed while Stripe is down: ${JSON.stringify(during)}`);
    assert.ok((during.pending ?? 0) > 0, `orders wait: ${JSON.stringify(during)}`);

    s.fake.clearFaults();
    await waitFor(async () => (await statusCounts(s.db)).completed === orders.length, 30_000, `all ${orders.length} orders to be completed`);
    await assertDoneOnce(s, orders);
    assert.deepEqual(await depths(), { waiting: 0, dead: 0 });
    assert.equal(payments.breaker.state, 'closed');
    assert.ok(transitions.includes('open') && transitions.at(-1) === 'close', `the breaker opened, then closed: ${transitions.join(', ')}`);
    // Every payment attempt that Stripe answered with a stored 500 is recorded as unknown, never as a failure of the order.
    const attempts = await query<{ status: string }>(s.db, `select distinct status from payments order by status`);
    assert.ok(
      attempts.every((a) => ['succeeded', 'unknown'].includes(a.status)),
      JSON.stringify(attempts),
    );
  });

  /** A payment provider that counts the charges it was asked for. */
  function counting(inner: PaymentProvider): PaymentProvider & { charges: number } {
    const wrapper = {
      name: inner.name,
      charges: 0,
      charge(input: ChargeInput) {
        wrapper.charges++;
        return inner.charge(input);
      },
      findCharge: (orderId: string, options?: { since?: Date }) => inner.findCharge(orderId, options),
      refund: (input: RefundInput) => inner.refund(input),
    };
    return wrapper;
  }

  /** Every message published to the exchange (all routing keys), by message id, from now on. */
  async function tapExchange(t: TestContext, exchange: string): Promise<Map<string, number>> {
    const ch = await rawChannel(t);
    const { queue } = await ch.assertQueue('', { exclusive: true, autoDelete: true });
    await ch.bindQueue(queue, exchange, '#');
    const seen = new Map<string, number>();
    await ch.consume(
      queue,
      (msg) => {
        const id = msg?.properties.messageId as string | undefined;
        if (id) seen.set(id, (seen.get(id) ?? 0) + 1);
      },
      { noAck: true },
    );
    return seen;
  }

  test('two workers and two relays at once: every order is charged once, every outbox row published once', async (t) => {
    const s = await shop(t, { retryDelaysMs: RETRY_DELAYS_MS });
    const [a, b] = [counting(stripeFor(t, s.fake)), counting(stripeFor(t, s.fake))];
    await s.worker({ concurrency: 5, overrides: { payments: a } });
    await s.worker({ concurrency: 5, overrides: { payments: b } });
    const published = await tapExchange(t, `${s.prefix}.events`);

    const orders = await s.place(120, 12);
    await waitFor(async () => (await statusCounts(s.db)).completed === orders.length, 60_000, `all ${orders.length} orders to be completed`);
    await assertDoneOnce(s, orders);
    assert.ok(a.charges > 0 && b.charges > 0, `both workers charged orders (${a.charges} and ${b.charges})`);
    assert.equal(a.charges + b.charges, orders.length, 'no order was charged by both');

    await waitFor(
      async () => (await query<{ n: number }>(s.db, `select count(*)::int as n from outbox_events where status <> 'published'`))[0]!.n === 0,
      15_000,
      'every outbox row published',
    );
    const rows = await query<{ id: string }>(s.db, 'select id from outbox_events');
    assert.equal(rows.length, 2 * orders.length, 'order.created and order.completed for each order');
    await waitFor(() => published.size === rows.length, 10_000, 'every row seen on the exchange');
    assert.deepEqual(
      rows.filter((r) => published.get(r.id) !== 1),
      [],
      'each row published exactly once',
    );
  });

  test('poison messages reaching svc worker go to the payments dead-letter queue with the reason, and the orders behind them are paid', async (t) => {
    const s = await shop(t, { retryDelaysMs: RETRY_DELAYS_MS });
    await s.worker({ concurrency: 1, overrides: { payments: stripeFor(t, s.fake) } });
    const ch = await rawChannel(t);
    const exchange = `${s.prefix}.events`;
    ch.publish(exchange, 'order.created', Buffer.from('<html>502 Bad Gateway</html>'), { messageId: 'junk-1', persistent: true });
    ch.publish(exchange, 'order.created', Buffer.from(JSON.stringify({ id: 'evt_x', type: 'order.created', aggregateId: 'ord_x', payload: [] })), {
      messageId: 'junk-2',
      persistent: true,
    });
    const orders = await s.place(3);
    await waitFor(async () => (await statusCounts(s.db)).completed === orders.length, 30_000, 'the orders to be paid');
    await assertDoneOnce(s, orders);

    const rabbit = await RabbitMq.connect(AMQP_URL, { logger: silent, prefix: s.prefix });
    t.after(() => rabbit.close());
    const dead = rabbit.queues({ name: 'payments', retryDelaysMs: RETRY_DELAYS_MS }).dead;
    await waitFor(async () => (await ch.checkQueue(dead)).messageCount === 2, 10_000, 'two messages in the dead-letter queue');
    const parked = [await ch.get(dead, { noAck: true }), await ch.get(dead, { noAck: true })].map((m) => {
      assert.ok(m);
      return [m.properties.messageId as string, m.properties.headers!['x-svc-last-error'] as string, m.properties.headers!['x-svc-consumer'] as string];
    });
    assert.deepEqual(parked.sort(), [
      ['junk-1', 'malformed message: the body is not JSON', 'payments'],
      ['junk-2', 'malformed message: occurredAt is missing or not a string of 1 to 40 characters', 'payments'],
    ]);
    assert.deepEqual(await query(s.db, 'select consumer, message_id from processed_messages where message_id like $1', ['junk%']), []);
  });
});
