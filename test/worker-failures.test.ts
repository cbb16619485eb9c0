import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createApp, type App } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { migratedDatabase, query } from './helpers/db.js';
import { AMQP_URL, silent, testPrefix, waitFor } from './helpers/rabbit.js';
import { removeExchangeAfter, svcWorker } from './helpers/worker.js';
import { FAKE_STRIPE_SECRET_KEY, startFakeStripe, type FakeStripe } from './fakes/stripe.js';

// svc worker as a separate process (the built binary: npm run build first) failing the way processes
// fail: killed with SIGKILL in the middle of its work, and signalled twice while it drains. The
// Stripe fake runs in this process; the worker reaches it through STRIPE_API_URL and the real SDK.

const PI_ROUTE = 'POST /v1/payment_intents' as const;

interface Shop {
  db: string;
  prefix: string;
  app: App;
  fake: FakeStripe;
  /** The environment of a worker on this shop's database, broker prefix and Stripe fake. */
  env: Record<string, string>;
  /** Places `count` orders of one tea each (paid with pm_card_visa), `parallel` at a time; their ids. */
  place(count: number, parallel?: number): Promise<string[]>;
}

async function shop(t: TestContext): Promise<Shop> {
  const db = await migratedDatabase(t);
  const prefix = testPrefix();
  removeExchangeAfter(t, prefix);
  const fake = await startFakeStripe();
  t.after(() => fake.close());
  const app = await createApp(loadConfig({ DATABASE_URL: db, LOG_LEVEL: 'silent' }), { logger: silent });
  t.after(() => app.close());
  const ctx = app.context({ actor: 'cli:test' });
  const ada = await app.users.create(ctx, { email: 'ada@example.com', name: 'Ada' });
  await app.products.create(ctx, { sku: 'TEA-1', name: 'Tea', price: { amount: 450, currency: 'USD' }, stock: 10_000 });
  const placeOne = async () =>
    (await app.orders.create(app.context({ actor: ada.id }), { userId: ada.id, items: [{ sku: 'TEA-1', quantity: 1 }], paymentMethod: 'pm_card_visa' })).order
      .id;
  return {
    db,
    prefix,
    app,
    fake,
    env: { DATABASE_URL: db, AMQP_URL, AMQP_PREFIX: prefix, STRIPE_SECRET_KEY: FAKE_STRIPE_SECRET_KEY, STRIPE_API_URL: fake.url },
    async place(count, parallel = 8) {
      const ids: string[] = [];
      for (let i = 0; i < count; i += parallel) ids.push(...(await Promise.all(Array.from({ length: Math.min(parallel, count - i) }, placeOne))));
      return ids;
    },
  };
}

const statusCounts = async (db: string) =>
  Object.fromEntries(
    (await query<{ status: string; n: number }>(db, 'select status, count(*)::int as n from orders group by status')).map((r) => [r.status, r.n]),
  ) as Record<string, number | undefined>;

/** Every order completed, paid exactly once at Stripe and in the payments table, announced once. */
async function assertPaidOnce(s: Shop, orderIds: string[]): Promise<void> {
  assert.deepEqual(await statusCounts(s.db), { completed: orderIds.length });
  for (const id of orderIds) assert.equal(s.fake.chargesForOrder(id).length, 1, `one successful charge at Stripe for ${id}`);
  const payments = await query<{ order_id: string; n: number }>(
    s.db,
    `select order_id, count(*)::int as n from payments where status = 'succeeded' group by order_id having count(*) = 1`,
  );
  assert.equal(payments.length, orderIds.length, 'one succeeded payment row per order');
  const announced = await query<{ n: number }>(s.db, `select count(distinct aggregate_id)::int as n from outbox_events where type = 'order.completed'`);
  const events = await query<{ n: number }>(s.db, `select count(*)::int as n from outbox_events where type = 'order.completed'`);
  assert.deepEqual([announced[0]!.n, events[0]!.n], [orderIds.length, orderIds.length], 'one order.completed per order');
}

test(
  'SIGKILL under load: a worker killed with payments in flight (unacknowledged, held at Stripe) is replaced, and every order is paid exactly once',
  { timeout: 120_000 },
  async (t) => {
    const s = await shop(t);
    const first = await svcWorker(t, ['--health-port', '0', '--concurrency', '10'], s.env);
    const early = await s.place(40);
    await waitFor(async () => ((await statusCounts(s.db)).completed ?? 0) >= 20, 30_000, 'the first orders to be paid');

    // Stripe slows down: the next ten charges are held (their keys in flight at Stripe), then answers come late.
    const held = Array.from({ length: 10 }, () => s.fake.holdNext({ route: PI_ROUTE }));
    s.fake.delayNext({ route: PI_ROUTE, ms: 200, times: 40 });
    const late = await s.place(110);
    // The worker's ten message slots (--concurrency 10) are all waiting for Stripe.
    await Promise.all(held.map((h) => h.arrived));
    first.kill('SIGKILL');
    assert.deepEqual(await first.exited, { code: null, signal: 'SIGKILL' });
    const orders = [...early, ...late];
    const before = await statusCounts(s.db);
    assert.ok((before.pending ?? 0) >= 10, `the held orders are still pending: ${JSON.stringify(before)}`);
    assert.equal(before.failed, undefined);

    const second = await svcWorker(t, ['--health-port', '0', '--concurrency', '10'], s.env);
    // The second worker sends the held orders' keys again: Stripe answers 409 while the killed
    // worker's requests are in flight (the message waits for its retry). Those requests then finish
    // at Stripe (their answers go nowhere), and the retries replay the stored charges.
    await waitFor(() => s.fake.requests.some((r) => r.status === 409), 30_000, 'a 409 for a key still in flight');
    for (const h of held) h.release();
    await waitFor(async () => (await statusCounts(s.db)).completed === orders.length, 60_000, `all ${orders.length} orders to be completed`);
    await assertPaidOnce(s, orders);
    for (const id of orders) assert.equal(s.fake.executions(`pay:${id}:1`), 1, `the first key of ${id} charged once`);
    // Every outbox row reached RabbitMQ (the killed worker's relay batch, if any, was published again).
    await waitFor(
      async () => (await query<{ n: number }>(s.db, `select count(*)::int as n from outbox_events where status <> 'published'`))[0]!.n === 0,
      15_000,
      'every outbox row published',
    );

    second.kill('SIGTERM');
    assert.deepEqual(await second.exited, { code: 0, signal: null });
  },
);
