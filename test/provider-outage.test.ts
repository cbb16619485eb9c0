import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { DatabaseQueue } from '../src/adapters/database-queue.js';
import { SendGridMailer } from '../src/adapters/sendgrid-mailer.js';
import { StripePayments } from '../src/adapters/stripe-payments.js';
import type { App } from '../src/app.js';
import type { EventMessage } from '../src/domain/events/events.js';
import type { ConsumerTransport } from '../src/domain/events/transport.js';
import type { FileStore } from '../src/domain/files/file-store.js';
import { MailUnavailable, type Mailer } from '../src/domain/notifications/mailer.js';
import { DomainError } from '../src/domain/shared/errors.js';
import { newId } from '../src/domain/shared/ids.js';
import type { Logger } from 'pino';
import { capturedLogs } from './helpers/logs.js';
import { ConsumerRunner, defineConsumer, ProviderUnavailable, type ConsumerDefinition, type Outcome } from '../src/worker/consumer.js';
import { mailConsumer } from '../src/worker/consumers/mail.js';
import { paymentsConsumer } from '../src/worker/consumers/payments.js';
import { receiptsConsumer } from '../src/worker/consumers/receipts.js';
import { FAKE_SENDGRID_API_KEY, startFakeSendGrid } from './fakes/sendgrid.js';
import { FAKE_STRIPE_SECRET_KEY, startFakeStripe } from './fakes/stripe.js';
import { query } from './helpers/db.js';
import { appFor, rabbitFor, rawChannel, silent, waitFor } from './helpers/rabbit.js';

// A provider outage (Stripe's circuit open, SendGrid or S3 unreachable) defers a message: it waits in
// the retry queues as long as the outage lasts without using up its attempts, on both transports.
// The retry ladder here is 20, 50, 100 ms (the real one 1 s, 10 s, 1 min, 10 min): three retries,
// then the dead-letter queue.

const DELAYS = [20, 50, 100];
const PI_ROUTE = 'POST /v1/payment_intents' as const;
const KINDS = ['rabbitmq', 'in-process'] as const;
type Kind = (typeof KINDS)[number];

interface Bench {
  app: App;
  db: string;
  transport: ConsumerTransport & { publish(messages: readonly EventMessage[]): Promise<void> };
  /** The dead letters of a consumer: their last error and attempts (and deferrals). */
  deadLetters(consumer: string): Promise<{ error: string; attempts: number; deferrals: number }[]>;
}

async function bench(t: TestContext, kind: Kind): Promise<Bench> {
  const { app, db } = await appFor(t);
  if (kind === 'rabbitmq') {
    const rabbit = await rabbitFor(t);
    const ch = await rawChannel(t);
    return {
      app,
      db,
      transport: rabbit,
      async deadLetters(consumer) {
        const queue = rabbit.queues({ name: consumer, retryDelaysMs: DELAYS }).dead;
        const found = [];
        for (let msg = await ch.get(queue, { noAck: true }); msg; msg = await ch.get(queue, { noAck: true })) {
          const h = msg.properties.headers ?? {};
          found.push({ error: String(h['x-svc-last-error']), attempts: Number(h['x-svc-attempts'] ?? 0), deferrals: Number(h['x-svc-deferrals'] ?? 0) });
        }
        return found;
      },
    };
  }
  const queue = new DatabaseQueue({ sql: app.context({ actor: 'cli:test' }).sql, context: (input) => app.context(input), logger: silent, pollIntervalMs: 50 });
  t.after(() => queue.close());
  return {
    app,
    db,
    transport: queue,
    deadLetters: async (consumer) =>
      (
        await query<{ last_error: string; attempts: number; deferrals: number }>(
          db,
          `select last_error, attempts, deferrals from event_deliveries where consumer = $1 and status = 'dead'`,
          [consumer],
        )
      ).map((r) => ({ error: r.last_error, attempts: r.attempts, deferrals: r.deferrals })),
  };
}

interface Running {
  outcomes: Outcome[];
  /** Resolves once the outcomes satisfy `pred`. */
  until(pred: (outcomes: Outcome[]) => boolean): Promise<void>;
}

async function run(t: TestContext, b: Bench, consumer: ConsumerDefinition, options: { maxDeferralMs?: number; logger?: Logger } = {}) {
  const runner = new ConsumerRunner(consumer, {
    transport: b.transport,
    context: (input) => b.app.context(input),
    logger: options.logger ?? silent,
    prefetch: 4,
    retryDelaysMs: DELAYS,
    ...(options.maxDeferralMs ? { maxDeferralMs: options.maxDeferralMs } : {}),
  });
  const outcomes: Outcome[] = [];
  const waiters: { pred: (o: Outcome[]) => boolean; resolve: () => void }[] = [];
  runner.onSettled = (outcome) => {
    outcomes.push(outcome);
    for (const w of waiters.filter((x) => x.pred(outcomes))) w.resolve();
  };
  await runner.start();
  t.after(() => runner.stop());
  const running: Running = {
    outcomes,
    until: (pred) => (pred(outcomes) ? Promise.resolve() : new Promise<void>((resolve) => waiters.push({ pred, resolve }))),
  };
  return running;
}

const count = (outcomes: Outcome[], outcome: Outcome) => outcomes.filter((o) => o === outcome).length;

const event = (): EventMessage => ({
  id: newId('evt'),
  type: 'order.created',
  aggregateId: newId('ord'),
  payload: {},
  occurredAt: new Date().toISOString(),
});

/** A customer, a product and an order (its order.created message, as the relay publishes it). */
async function placeOrder(app: App, db: string, paymentMethod: string): Promise<EventMessage> {
  const ctx = app.context({ actor: 'cli:test' });
  const user = await app.users.create(ctx, { email: `${newId('usr').toLowerCase()}@example.com`, name: 'Ada' });
  const sku = `SKU-${newId('prd').slice(-8)}`;
  await app.products.create(ctx, { sku, name: 'Widget', price: { amount: 2475, currency: 'USD' }, stock: 10 });
  const created = await app.orders.create(ctx, { userId: user.id, items: [{ sku, quantity: 1 }], paymentMethod });
  const [row] = await query<{ id: string; payload: Record<string, unknown>; created_at: Date }>(
    db,
    `select id, payload, created_at from outbox_events where aggregate_id = $1 and type = 'order.created'`,
    [created.order.id],
  );
  return { id: row!.id, type: 'order.created', aggregateId: created.order.id, payload: row!.payload, occurredAt: row!.created_at.toISOString() };
}

const orderStatus = async (db: string, id: string) => (await query<{ status: string }>(db, 'select status from orders where id = $1', [id]))[0]!.status;

// Each test has a database, a broker prefix and fakes of its own, and mostly waits for the retry
// ladder's timers: four run at once.
describe('provider outages', { concurrency: 4 }, () => {
  for (const kind of KINDS) {
    test(`${kind}: Stripe down far longer than the whole retry ladder (its breaker open): the payment waits, is never dead-lettered, and completes once Stripe is back`, async (t) => {
      const b = await bench(t, kind);
      const fake = await startFakeStripe();
      // A breaker that opens at the first failure and lets one trial call through every 50 ms.
      const payments = new StripePayments({
        secretKey: FAKE_STRIPE_SECRET_KEY,
        apiUrl: fake.url,
        logger: silent,
        timeoutMs: 1_000,
        searchLagMs: 0,
        breaker: { volumeThreshold: 1, resetTimeoutMs: 50, rollingWindowMs: 1_000 },
      });
      t.after(async () => {
        payments.close();
        await fake.close();
      });
      let opened = 0;
      payments.breaker.circuit.on('open', () => opened++);
      // Stripe is down: every charge loses its connection before Stripe does anything.
      fake.dropNext({ route: PI_ROUTE, times: 100_000, afterExecution: false });
      const message = await placeOrder(b.app, b.db, 'pm_card_visa');
      const r = await run(t, b, paymentsConsumer({ payments }));
      await b.transport.publish([message]);

      // Twelve deferrals: four times the ladder's three retries, each waiting at least its last step.
      await r.until((o) => count(o, 'deferred') >= 12);
      assert.ok(opened >= 1, 'the breaker opened');
      assert.deepEqual(
        r.outcomes.filter((o) => o !== 'deferred'),
        [],
        'no failed attempt counted, nothing dead-lettered',
      );
      // A lost connection does not say whether Stripe charged: the order waits in processing, out of a cancellation's reach.
      assert.equal(await orderStatus(b.db, message.aggregateId), 'processing');
      if (kind === 'in-process') {
        const [row] = await query<{ status: string; attempts: number; deferrals: number; last_error: string }>(
          b.db,
          `select status, attempts, deferrals, last_error from event_deliveries where consumer = 'payments'`,
        );
        assert.equal(row!.status, 'pending');
        assert.equal(row!.attempts, 0);
        assert.ok(row!.deferrals >= 12, `deferrals recorded: ${row!.deferrals}`);
        assert.match(row!.last_error, /^ProviderUnavailable: Stripe charge: /);
      }

      fake.clearFaults();
      await r.until((o) => o.includes('processed'));
      assert.equal(await orderStatus(b.db, message.aggregateId), 'completed');
      assert.equal(fake.chargesForOrder(message.aggregateId).length, 1);
      assert.deepEqual(await b.deadLetters('payments'), []);
    });

    test(`${kind}: deferrals do not use up attempts, and a real failure after them still climbs the ladder and is dead-lettered`, async (t) => {
      const b = await bench(t, kind);
      let calls = 0;
      const consumer = defineConsumer({
        name: 'flaky',
        events: ['order.created'],
        handle() {
          calls++;
          if (calls <= 5) return Promise.reject(new ProviderUnavailable('sendgrid', 'SendGrid: cannot connect (ECONNREFUSED)'));
          return Promise.reject(new Error('the template is broken'));
        },
      });
      const r = await run(t, b, consumer);
      await b.transport.publish([event()]);
      await r.until((o) => o.includes('dead-letter'));
      assert.deepEqual(r.outcomes, ['deferred', 'deferred', 'deferred', 'deferred', 'deferred', 'retry', 'retry', 'retry', 'dead-letter']);
      let dead: { error: string; attempts: number; deferrals: number }[] = [];
      await waitFor(async () => (dead = await b.deadLetters('flaky')).length === 1, 10_000, 'the dead letter');
      assert.deepEqual(dead, [{ error: 'Error: the template is broken', attempts: 4, deferrals: 5 }]);
    });
  }

  test('the mail and receipts consumers defer when SendGrid or S3 is unavailable; a refused message still fails as before', async (t) => {
    const { app, db } = await appFor(t);
    const message = await placeOrder(app, db, 'pm_card_visa');
    await query(db, `update orders set status = 'completed' where id = $1`, [message.aggregateId]);
    await query(
      db,
      `insert into payments (id, order_id, attempt, idempotency_key, status, amount, currency, provider, provider_reference, created_at, updated_at)
     values ($1, $2, 1, $3, 'succeeded', 2475, 'USD', 'simulated', 'pi_1', now(), now())`,
      [newId('pay'), message.aggregateId, `pay:${message.aggregateId}:1`],
    );
    const completed: EventMessage = { ...message, id: newId('evt'), type: 'order.completed', payload: {} };
    const handle = (consumer: ConsumerDefinition) => app.context({ actor: 'worker:test' }).transaction((tx) => consumer.handle(tx, completed));

    const mailer = (err: Error): Mailer => ({ name: 'sendgrid', send: () => Promise.reject(err) });
    const down = new MailUnavailable('SendGrid: circuit open', {
      provider: 'sendgrid',
      outcome: 'not_attempted',
      reason: 'circuit_open',
      retryAfterSeconds: 30,
    });
    await assert.rejects(
      handle(mailConsumer({ mailer: mailer(down), logger: silent, publicUrl: () => 'http://127.0.0.1:1' })),
      (err: unknown) => err instanceof ProviderUnavailable && err.service === 'sendgrid' && err.retryAfterMs === 30_000 && err.cause === down,
    );
    await assert.rejects(
      handle(mailConsumer({ mailer: mailer(new DomainError('invalid', 'SendGrid refused the message (400)')), logger: silent, publicUrl: () => 'http://x' })),
      (err: unknown) => err instanceof DomainError && err.code === 'invalid',
    );

    const store = (err: Error): FileStore => ({
      name: 's3',
      put: () => Promise.reject(err),
      signedUrl: () => Promise.reject(new Error('unused')),
      check: () => Promise.resolve('ok'),
    });
    const unreachable = new DomainError('unavailable', 'cannot store receipts/x.pdf: cannot reach S3', { service: 's3', bucket: 'receipts' });
    await assert.rejects(
      handle(receiptsConsumer({ files: store(unreachable), logger: silent })),
      (err: unknown) => err instanceof ProviderUnavailable && err.service === 's3' && err.cause === unreachable,
    );
    await assert.rejects(handle(receiptsConsumer({ files: store(new Error('disk full')), logger: silent })), /disk full/);
  });

  for (const kind of KINDS) {
    test(`${kind}: SendGrid refusing the API key (401: a revoked SENDGRID_API_KEY) defers the emails, as a refused Stripe key does; with a valid key each is sent once`, async (t) => {
      const b = await bench(t, kind);
      const sendgrid = await startFakeSendGrid();
      t.after(() => sendgrid.close());
      sendgrid.revokeKey(FAKE_SENDGRID_API_KEY);
      const mailer = new SendGridMailer({ apiKey: FAKE_SENDGRID_API_KEY, apiUrl: sendgrid.url, from: 'Shop <orders@example.com>', logger: silent });
      t.after(() => mailer.close());
      const { logger, lines } = capturedLogs('warn');
      const r = await run(t, b, mailConsumer({ mailer, logger: silent, publicUrl: () => 'https://shop.example' }), { logger });

      const placed = await placeOrder(b.app, b.db, 'pm_card_visa');
      await query(b.db, `update orders set status = 'completed' where id = $1`, [placed.aggregateId]);
      await b.transport.publish([{ ...placed, id: newId('evt'), type: 'order.completed', payload: {} }]);
      await r.until((o) => count(o, 'deferred') >= 3 || o.includes('dead-letter'));
      assert.deepEqual(await b.deadLetters('mail'), [], 'a refused key is the configuration, not the email: nothing is dead-lettered');
      assert.equal(sendgrid.messages.length, 0);
      const wait = lines.find((l) => String(l.msg).startsWith('sendgrid unavailable; the message waits'));
      assert.match(String(wait?.error), /SendGrid: refused the API key \(401\): check SENDGRID_API_KEY/);

      // The operator puts a valid key in place: the waiting email goes out, once.
      sendgrid.acceptKey(FAKE_SENDGRID_API_KEY);
      await r.until((o) => o.includes('processed'));
      assert.equal(sendgrid.messages.length, 1);
      assert.equal(sendgrid.messages[0]!.body.custom_args.reference, `order-confirmation-${placed.aggregateId}`);
      assert.deepEqual(await b.deadLetters('mail'), []);
      assert.ok(!r.outcomes.includes('retry') && !r.outcomes.includes('dead-letter'), r.outcomes.join());
    });
  }
});

// Counts deferrals within a 400 ms bound: run on its own, not beside the tests above.
for (const kind of KINDS) {
  test(`${kind}: a message deferred longer than maxDeferralMs is dead-lettered, and every deferral is logged with how long it has waited`, async (t) => {
    const b = await bench(t, kind);
    const { logger, lines } = capturedLogs('warn');
    const consumer = defineConsumer({
      name: 'receipts-down',
      events: ['order.created'],
      handle: () =>
        Promise.reject(new ProviderUnavailable('s3', 'cannot store receipts/x.pdf: cannot reach S3 at http://127.0.0.1:9 (S3_ENDPOINT): ECONNREFUSED')),
    });
    const r = await run(t, b, consumer, { logger, maxDeferralMs: 400 });
    await b.transport.publish([event()]);
    await r.until((o) => o.includes('dead-letter'));
    assert.ok(count(r.outcomes, 'deferred') >= 3, r.outcomes.join());
    assert.equal(r.outcomes.at(-1), 'dead-letter');
    let dead: { error: string; attempts: number; deferrals: number }[] = [];
    await waitFor(async () => (dead = await b.deadLetters('receipts-down')).length === 1, 10_000, 'the dead letter');
    assert.match(dead[0]!.error, /^ProviderUnavailable: cannot store receipts\/x\.pdf: .* \(still unavailable after waiting \d+ ms since .*, \d+ deferrals\)$/);
    assert.equal(dead[0]!.attempts, 1);

    const waits = lines.filter((l) => String(l.msg).startsWith('s3 unavailable; the message waits'));
    assert.equal(waits.length, count(r.outcomes, 'deferred'));
    assert.deepEqual(
      waits.map((l) => [l.level, l.service, l.deferrals]),
      waits.map((_l, i) => ['warn', 's3', i]),
    );
    assert.ok(
      waits.every((l, i) => i === 0 || l.waitedMs >= waits[i - 1]!.waitedMs),
      'the wait so far grows',
    );
    assert.match(lines.at(-1)!.msg, /^s3 unavailable for \d+ ms, longer than the 400 ms a message may wait; moved to the dead-letter queue$/);
    assert.equal(lines.at(-1)!.level, 'error');
  });
}
