import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { DomainError } from '../src/domain/shared/errors.js';
import { query } from './helpers/db.js';
import { rabbitProxy, waitFor } from './helpers/rabbit.js';
import { testServer } from './helpers/server.js';
import { assertDoneOnce, shop, statusCounts, svcWorker } from './helpers/worker.js';

// svc worker as a separate process (the built binary: npm run build first) failing the way processes
// fail: killed with SIGKILL in the middle of its work (on RabbitMQ, and on the in-process queue of
// PostgreSQL without AMQP_URL), cut off from RabbitMQ, signalled twice while it drains. The Stripe and SendGrid fakes run in this process; the worker reaches them through
// STRIPE_API_URL and SENDGRID_API_URL and the real SDKs.

const PI_ROUTE = 'POST /v1/payment_intents' as const;

/**
 * A worker killed (SIGKILL) with payments in flight (unsettled, held at Stripe) on the transport given,
 * a second one started: every order is paid exactly once, with one receipt and one email.
 */
async function killedUnderLoad(t: TestContext, transport: 'rabbitmq' | 'database'): Promise<void> {
  const s = await shop(t, { transport });
  // Without AMQP_URL the killed worker's deliveries wait out its leases in event_deliveries: 3 s here
  // rather than the default 30 s.
  const env = transport === 'database' ? { ...s.env, EVENT_DELIVERY_LEASE_MS: '3000' } : s.env;
  const first = await svcWorker(t, ['--health-port', '0', '--concurrency', '10'], env);
  const early = await s.place(40);
  await waitFor(async () => ((await statusCounts(s.db)).completed ?? 0) >= 20, 30_000, 'the first orders to be paid');

  // Stripe slows down: the next ten charges are held (their keys in flight at Stripe), then answers come late.
  const held = Array.from({ length: 10 }, () => s.fake.holdNext({ route: PI_ROUTE }));
  s.fake.delayNext({ route: PI_ROUTE, ms: 200, times: 40 });
  const late = await s.place(110);
  // The worker's ten message slots (--concurrency 10) are all waiting for Stripe.
  await Promise.all(held.map((h) => h.arrived));
  // The receipts and emails of the orders paid so far are done: the kill lands on payments. (An
  // email that SendGrid accepted in the instant before its commit would be sent again: the mail
  // consumer's documented at-least-once.)
  const paid = (await statusCounts(s.db)).completed;
  await waitFor(
    async () => (await query(s.db, 'select 1 from files')).length === paid && s.mail.messages.length === paid,
    30_000,
    'the receipts and emails of the orders paid so far',
  );
  first.kill('SIGKILL');
  assert.deepEqual(await first.exited, { code: null, signal: 'SIGKILL' });
  const orders = [...early, ...late];
  const before = await statusCounts(s.db);
  // The held orders' move to processing (with their keys) committed before Stripe was called: the
  // killed worker's transactions rolled back, not that. A customer cancelling one now is refused,
  // rather than getting their stock back while Stripe goes on to take their money.
  assert.ok((before.processing ?? 0) >= 10, `the held orders are processing: ${JSON.stringify(before)}`);
  assert.equal(before.failed, undefined);
  const [heldOrder] = await query<{ id: string; user_id: string }>(
    s.db,
    `select o.id, o.user_id from orders o join payments p on p.order_id = o.id where o.status = 'processing' and p.status = 'pending' limit 1`,
  );
  await assert.rejects(
    s.app.orders.cancel(s.app.context({ actor: heldOrder!.user_id }), { viewer: { userId: heldOrder!.user_id, role: 'user' }, id: heldOrder!.id }),
    (err: unknown) => err instanceof DomainError && err.code === 'conflict' && /processing/.test(err.message),
  );
  if (transport === 'database') {
    // The dead worker's leases (lease_owner is <pid>:<random>) are still on its ten payment deliveries.
    const leased = await query<{ n: number }>(
      s.db,
      `select count(*)::int as n from event_deliveries where consumer = 'payments' and status = 'pending' and lease_owner like $1`,
      [`${first.pid}:%`],
    );
    assert.equal(leased[0]!.n, 10, 'the killed worker still holds the leases of its ten payments');
  }

  const second = await svcWorker(t, ['--health-port', '0', '--concurrency', '10'], env);
  // The second worker sends the held orders' keys again (at once with RabbitMQ, which requeues the
  // unacknowledged messages of the closed connection; once their leases expire in the table): Stripe
  // answers 409 while the killed worker's requests are in flight (the message waits for its retry).
  // Those requests then finish at Stripe (their answers go nowhere), and the retries replay the
  // stored charges.
  await waitFor(() => s.fake.requests.some((r) => r.status === 409), 30_000, 'a 409 for a key still in flight');
  for (const h of held) h.release();
  await waitFor(async () => (await statusCounts(s.db)).completed === orders.length, 60_000, `all ${orders.length} orders to be completed`);
  await assertDoneOnce(s, orders);
  for (const id of orders) assert.equal(s.fake.executions(`pay:${id}:1`), 1, `the first key of ${id} charged once`);
  // Every outbox row was published (the killed worker's relay batch, if any, was published again).
  await waitFor(
    async () => (await query<{ n: number }>(s.db, `select count(*)::int as n from outbox_events where status <> 'published'`))[0]!.n === 0,
    15_000,
    'every outbox row published',
  );
  if (transport === 'database') {
    // Every delivery was settled and deleted: none left leased, none parked as dead.
    await waitFor(
      async () => (await query<{ n: number }>(s.db, 'select count(*)::int as n from event_deliveries'))[0]!.n === 0,
      15_000,
      'every event delivery settled',
    );
  }

  second.kill('SIGTERM');
  assert.deepEqual(await second.exited, { code: 0, signal: null });
}

// Each test has its own database, broker prefix, fakes and svc worker processes, and waits on them
// (a lease to expire, a reconnection's backoff): two run at once.
describe('svc worker failing', { concurrency: 2 }, () => {
  test(
    'SIGKILL under load: a worker killed with payments in flight (unacknowledged, held at Stripe) is replaced, and every order is paid exactly once, with one receipt and one email',
    { timeout: 120_000 },
    (t) => killedUnderLoad(t, 'rabbitmq'),
  );

  test(
    "SIGKILL under load without AMQP_URL (the event_deliveries table as the queue on PostgreSQL): the killed worker's leases expire, a second worker takes them over, and every order is paid exactly once, with one receipt and one email",
    { timeout: 120_000 },
    (t) => killedUnderLoad(t, 'database'),
  );

  test(
    'RabbitMQ down at publish time: orders are still taken by the API, the relay keeps their events and backs off, svc worker reconnects with backoff, and they all complete',
    { timeout: 120_000 },
    async (t) => {
      const s = await shop(t);
      const broker = await rabbitProxy(t);
      const worker = await svcWorker(t, ['--health-port', '0'], { ...s.env, AMQP_URL: broker.url });
      // The first payment is held at Stripe while the connection drops under it.
      const held = s.fake.holdNext({ route: PI_ROUTE });
      const before = await s.place(5);
      await held.arrived;
      await waitFor(async () => (await statusCounts(s.db)).completed === before.length - 1, 30_000, 'the other first orders to be paid');

      await broker.down();
      await worker.waitForStderr(/lost the connection to RabbitMQ/);
      // The held payment completes its order, but its message cannot be acknowledged on the lost channel:
      // it is delivered again after the reconnection, and the inbox absorbs it.
      held.release();
      await waitFor(async () => (await statusCounts(s.db)).completed === before.length, 15_000, 'the held order to be paid');
      await worker.waitForStderr(/could not settle a message; it will be delivered again/);
      // svc serve (on the same database and broker) takes an order as usual: it only writes the outbox.
      const api = await testServer(t, { env: { DATABASE_URL: s.db, AMQP_URL: broker.url } });
      const bob = await api.user({ email: 'bob@example.com' });
      const res = await fetch(`${api.url}/api/v1/orders`, {
        method: 'POST',
        headers: { ...(await api.auth(bob)), 'content-type': 'application/json' },
        body: JSON.stringify({ paymentMethod: 'pm_card_visa', items: [{ sku: 'TEA-1', quantity: 1 }] }),
      });
      assert.equal(res.status, 201, await res.clone().text());
      const viaApi = ((await res.json()) as { id: string }).id;
      const during = await s.place(20);
      const orders = [...before, viaApi, ...during];

      // The relay tried, kept the rows pending with the error, and said so; the worker tries to reconnect, waiting longer each time.
      await waitFor(
        async () =>
          (
            await query<{ n: number }>(
              s.db,
              `select count(*)::int as n from outbox_events where status = 'pending' and attempts > 0 and last_error like '%not connected%'`,
            )
          )[0]!.n > 0,
        15_000,
        'pending rows with the publish error',
      );
      await worker.waitForStderr(/could not publish \d+ event\(s\); they stay pending and are retried/);
      await worker.waitForStderr(/reconnecting to RabbitMQ at [^"]+ in \d+ ms \(attempt 3\)/);
      const delays = [...worker.stderr().matchAll(/reconnecting to RabbitMQ at [^"]+ in (\d+) ms \(attempt (\d+)\)/g)].map((m) => [Number(m[2]), Number(m[1])]);
      const delayOf = (attempt: number) => delays.find(([a]) => a === attempt)![1]!;
      assert.ok(delayOf(1) < delayOf(2) && delayOf(2) < delayOf(3), `growing reconnection delays: ${JSON.stringify(delays)}`);
      assert.equal((await fetch(`${worker.healthUrl}/health/ready`)).status, 503);
      assert.deepEqual(Object.keys(await statusCounts(s.db)).sort(), ['completed', 'pending']);

      await broker.up();
      await waitFor(async () => (await statusCounts(s.db)).completed === orders.length, 60_000, `all ${orders.length} orders to be completed`);
      await assertDoneOnce(s, orders);
      await worker.waitForStderr(/already processed; acknowledged without effect/);
      assert.equal((await fetch(`${worker.healthUrl}/health/ready`)).status, 200);
      worker.kill('SIGTERM');
      assert.deepEqual(await worker.exited, { code: 0, signal: null });
    },
  );

  test('a second signal while svc worker drains is logged and ignored: the payment in flight finishes, then it exits 0', { timeout: 60_000 }, async (t) => {
    const s = await shop(t);
    const worker = await svcWorker(t, ['--health-port', '0', '--json'], s.env);
    const held = s.fake.holdNext({ route: PI_ROUTE });
    const [order] = await s.place(1);
    await held.arrived;

    worker.kill('SIGTERM');
    await worker.waitForStderr(/"msg":"SIGTERM: stopping"/);
    worker.kill('SIGINT');
    await worker.waitForStderr(/"msg":"SIGINT: already stopping"/);
    held.release();
    assert.deepEqual(await worker.exited, { code: 0, signal: null });
    assert.deepEqual(JSON.parse(worker.stdout()), { stopped: 'SIGTERM', drained: true });
    assert.deepEqual(await statusCounts(s.db), { completed: 1 });
    assert.equal(s.fake.chargesForOrder(order!).length, 1);
  });
});
