import { test } from 'node:test';
import assert from 'node:assert/strict';
import { query } from './helpers/db.js';
import { waitFor } from './helpers/rabbit.js';
import { assertPaidOnce, shop, statusCounts, svcWorker } from './helpers/worker.js';

// svc worker as a separate process (the built binary: npm run build first) failing the way processes
// fail: killed with SIGKILL in the middle of its work, and signalled twice while it drains. The
// Stripe fake runs in this process; the worker reaches it through STRIPE_API_URL and the real SDK.

const PI_ROUTE = 'POST /v1/payment_intents' as const;

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
