import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import Stripe from 'stripe';
import { newId } from '../src/domain/shared/ids.js';
import type { EventMessage } from '../src/domain/events/events.js';
import { paymentsConsumer } from '../src/worker/consumers/payments.js';
import { StripeWebhookVerifier } from '../src/adapters/stripe-webhooks.js';
import { testServer, type TestServer } from './helpers/server.js';
import { query } from './helpers/db.js';
import { assertProblem, type Json } from './helpers/http.js';
import { FAKE_STRIPE_SECRET_KEY, FAKE_STRIPE_WEBHOOK_SECRET, startFakeStripe, type FakeStripe, type StripeObject } from './fakes/stripe.js';

// POST /api/v1/webhooks/stripe through real HTTP, on PostgreSQL, with events made by the Stripe fake
// (PaymentIntents, refunds and disputes created through the real SDK) and deliveries signed with the
// SDK's own test helper.

const PRICE = 2475;
const QUANTITY = 2;
const TOTAL = PRICE * QUANTITY;

interface World {
  ts: TestServer;
  /** A statement on the server's own database (PostgreSQL or the embedded one, which only the server may open). */
  sql: <T = Json>(text: string, params?: unknown[]) => Promise<T[]>;
  fake: FakeStripe;
  stripe: Stripe;
  userId: string;
  productId: string;
  sku: string;
}

async function world(t: TestContext, options: { embedded?: boolean } = {}): Promise<World> {
  const fake = await startFakeStripe();
  t.after(() => fake.close());
  const ts = await testServer(t, {
    ...options,
    env: { STRIPE_SECRET_KEY: FAKE_STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET: FAKE_STRIPE_WEBHOOK_SECRET, STRIPE_API_URL: fake.url },
  });
  const sql: World['sql'] = (text, params = []) => ts.app.context({ actor: 'cli:test' }).sql(text, params);
  const user = await ts.user({ email: 'ada@example.com' });
  const productId = newId('prd');
  const sku = `SKU-${productId.slice(-8)}`;
  await sql(
    `insert into products (id, sku, name, price, currency, stock, active, created_at, updated_at) values ($1, $2, 'Widget', $3, 'USD', 100, true, now(), now())`,
    [productId, sku, PRICE],
  );
  const stripe = new Stripe(FAKE_STRIPE_SECRET_KEY, { ...fake.sdkOptions, maxNetworkRetries: 0 });
  return { ts, sql, fake, stripe, userId: user.id, productId, sku };
}

/**
 * A pending order of two widgets (stock taken), written directly: no order.created outbox row, so
 * nothing but the webhooks under test (and the test itself) touches it.
 */
async function pendingOrder(w: World, status = 'pending'): Promise<string> {
  const id = newId('ord');
  await w.sql(
    `insert into orders (id, user_id, status, currency, total, refunded_amount, payment_method, created_at, updated_at)
     values ($1, $2, $3, 'USD', $4, 0, 'pm_card_visa', now(), now())`,
    [id, w.userId, status, TOTAL],
  );
  await w.sql(`insert into order_items (id, order_id, product_id, sku, name, unit_price, quantity) values ($1, $2, $3, $4, 'Widget', $5, $6)`, [
    newId('itm'),
    id,
    w.productId,
    w.sku,
    PRICE,
    QUANTITY,
  ]);
  await w.sql('update products set stock = stock - $2 where id = $1', [w.productId, QUANTITY]);
  return id;
}

/** Charges an order in Stripe as the worker does (its metadata and idempotency key), without recording anything in svc. */
async function charge(w: World, orderId: string, paymentMethod = 'pm_card_visa', attempt = 1): Promise<string> {
  const params = {
    amount: TOTAL,
    currency: 'usd',
    payment_method: paymentMethod,
    confirm: true,
    off_session: true,
    metadata: { order_id: orderId },
  };
  try {
    return (await w.stripe.paymentIntents.create(params, { idempotencyKey: `pay:${orderId}:${attempt}` })).id;
  } catch (err) {
    // A decline is a 402 whose error carries the PaymentIntent.
    const pi = (err as { raw?: { payment_intent?: { id: string } } }).raw?.payment_intent;
    if (!pi) throw err;
    return pi.id;
  }
}

/** The last event of this type the fake made about a PaymentIntent (its own, or its charge's or dispute's). */
function eventOf(w: World, type: string, paymentIntentId: string, nth = -1): StripeObject {
  const events = w.fake.events.filter((e) => e.type === type && (e.data.object.id === paymentIntentId || e.data.object.payment_intent === paymentIntentId));
  const event = events.at(nth);
  assert.ok(event, `the fake made a ${type} event for ${paymentIntentId}`);
  return event;
}

/** A Stripe-like event id for events the tests build from the fake's. */
const newEventId = () => `evt_${randomBytes(12).toString('hex')}`;

interface Delivery {
  status: number;
  type: string | null;
  body: Json;
}

/** POSTs an event as Stripe would: pretty-printed, signed with the SDK's test helper. */
async function deliver(
  w: World,
  event: StripeObject,
  options: { secret?: string; timestamp?: number; tamper?: (payload: string) => string; version?: 'v1' | 'v2' } = {},
): Promise<Delivery> {
  const payload = JSON.stringify(event, null, 2);
  const signature = Stripe.webhooks.generateTestHeaderString({
    payload,
    secret: options.secret ?? FAKE_STRIPE_WEBHOOK_SECRET,
    ...(options.timestamp === undefined ? {} : { timestamp: options.timestamp }),
  });
  const res = await fetch(`${w.ts.url}/api/${options.version ?? 'v1'}/webhooks/stripe`, {
    method: 'POST',
    headers: { 'content-type': 'application/json; charset=utf-8', 'stripe-signature': signature },
    body: options.tamper ? options.tamper(payload) : payload,
  });
  const text = await res.text();
  return { status: res.status, type: res.headers.get('content-type'), body: text ? JSON.parse(text) : undefined };
}

function assertReceived(res: Delivery, event: StripeObject, outcome: string): void {
  assert.equal(res.status, 200, JSON.stringify(res.body));
  assert.deepEqual(res.body, { received: true, id: event.id, type: event.type, outcome });
}

async function orderState(w: World, orderId: string) {
  const [order] = await w.sql<{ status: string; refunded_amount: string }>('select status, refunded_amount from orders where id = $1', [orderId]);
  const [product] = await w.sql<{ stock: number }>('select stock from products where id = $1', [w.productId]);
  const payments = await w.sql<{ attempt: number; idempotency_key: string; status: string; provider_reference: string | null; failure_code: string | null }>(
    'select attempt, idempotency_key, status, provider_reference, failure_code from payments where order_id = $1 order by attempt',
    [orderId],
  );
  const events = await w.sql<{ type: string; payload: Json }>('select type, payload from outbox_events where aggregate_id = $1 order by created_at, id', [
    orderId,
  ]);
  const audit = await w.sql<{ actor: string; action: string; details: Json }>(
    'select actor, action, details from audit_log where target = $1 order by created_at, id',
    [orderId],
  );
  return { status: order!.status, refunded: Number(order!.refunded_amount), stock: product!.stock, payments, events: events.map((e) => e.type), audit };
}

const recorded = async (w: World, eventId: string) =>
  (await w.sql<{ type: string; order_id: string | null; outcome: string }>('select type, order_id, outcome from stripe_events where id = $1', [eventId]))[0];

/** The order as its owner reads it through the API. */
async function view(w: World, orderId: string, version: 'v1' | 'v2' = 'v2'): Promise<Json> {
  const res = await fetch(`${w.ts.url}/api/${version}/orders/${orderId}`, { headers: await w.ts.auth({ id: w.userId, role: 'user' }) });
  assert.equal(res.status, 200);
  return (await res.json()) as Json;
}

test('without STRIPE_WEBHOOK_SECRET the endpoint answers 503 saying which setting enables it, and records nothing', async (t) => {
  const ts = await testServer(t);
  const res = await fetch(`${ts.url}/api/v1/webhooks/stripe`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'stripe-signature': 't=1,v1=00' },
    body: JSON.stringify({ id: 'evt_1', type: 'payment_intent.succeeded' }),
  });
  assertProblem({ status: res.status, type: res.headers.get('content-type'), body: (await res.json()) as Json }, 503, 'unavailable', /STRIPE_WEBHOOK_SECRET/);
  assert.deepEqual(await query(ts.databaseUrl!, 'select id from stripe_events'), []);
});

test('Stripe webhooks', async (t) => {
  const w = await world(t);

  await t.test('payment_intent.succeeded completes a pending order and records its payment; a redelivery is acknowledged and changes nothing', async () => {
    const orderId = await pendingOrder(w);
    const pi = await charge(w, orderId);
    const succeeded = eventOf(w, 'payment_intent.succeeded', pi);

    assertReceived(await deliver(w, succeeded), succeeded, 'applied');
    const after = await orderState(w, orderId);
    assert.equal(after.status, 'completed');
    assert.deepEqual(
      after.payments.map((p) => [p.attempt, p.idempotency_key, p.status, p.provider_reference]),
      [[1, `pay:${orderId}:1`, 'succeeded', pi]],
    );
    assert.deepEqual(after.events, ['order.completed']);
    assert.deepEqual(await recorded(w, succeeded.id), { type: 'payment_intent.succeeded', order_id: orderId, outcome: 'applied' });

    // Again, and twice at once: acknowledged, no second effect.
    assertReceived(await deliver(w, succeeded), succeeded, 'duplicate');
    const both = await Promise.all([deliver(w, succeeded), deliver(w, succeeded, { version: 'v2' })]);
    for (const res of both) assertReceived(res, succeeded, 'duplicate');
    const again = await orderState(w, orderId);
    assert.equal(again.payments.length, 1);
    assert.deepEqual(again.events, ['order.completed']);
  });

  await t.test('the order view (v1 and v2) shows the payment: status, amount per version, provider reference', async () => {
    const orderId = await pendingOrder(w);
    assert.equal((await view(w, orderId)).payment, null);
    const pi = await charge(w, orderId);
    assertReceived(await deliver(w, eventOf(w, 'payment_intent.succeeded', pi)), eventOf(w, 'payment_intent.succeeded', pi), 'applied');
    const v2 = await view(w, orderId, 'v2');
    assert.equal(v2.status, 'completed');
    assert.deepEqual(v2.payment, {
      status: 'succeeded',
      amount: { amount: TOTAL, currency: 'USD' },
      provider: 'stripe',
      reference: pi,
      failureCode: null,
      failureReason: null,
    });
    assert.deepEqual(v2.refundedAmount, { amount: 0, currency: 'USD' });
    assert.equal(v2.dispute, null);
    const v1 = await view(w, orderId, 'v1');
    assert.equal(v1.payment.amount, 49.5);
    assert.equal(v1.refundedAmount, 0);
    // The list shows the same.
    const list = await fetch(`${w.ts.url}/api/v1/orders?limit=100`, { headers: await w.ts.auth({ id: w.userId, role: 'user' }) });
    const listed = ((await list.json()) as Json).data.find((o: Json) => o.id === orderId);
    assert.deepEqual(listed.payment, v1.payment);
  });

  await t.test(
    'a tampered body, a stale timestamp, a wrong secret or no signature answer 400 and change nothing; the genuine delivery then applies',
    async () => {
      const orderId = await pendingOrder(w);
      const pi = await charge(w, orderId);
      const succeeded = eventOf(w, 'payment_intent.succeeded', pi);
      const now = Math.floor(Date.now() / 1000);
      const refusals: Array<[string, Delivery, RegExp]> = [
        ['tampered body', await deliver(w, succeeded, { tamper: (p) => p.replace(`"amount": ${TOTAL}`, '"amount": 1') }), /does not sign this body/],
        ['stale timestamp', await deliver(w, succeeded, { timestamp: now - 301 }), /more than 300 s old/],
        ['wrong secret', await deliver(w, succeeded, { secret: 'whsec_someoneelse00000000000000' }), /does not sign this body/],
      ];
      for (const [what, res, detail] of refusals) {
        assert.equal(res.status, 400, what);
        assertProblem(res, 400, 'invalid', detail, 'stripe-signature');
      }
      const unsigned = await fetch(`${w.ts.url}/api/v1/webhooks/stripe`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(succeeded),
      });
      assertProblem(
        { status: unsigned.status, type: unsigned.headers.get('content-type'), body: (await unsigned.json()) as Json },
        400,
        'invalid',
        /Stripe-Signature header is missing/,
      );

      const before = await orderState(w, orderId);
      assert.equal(before.status, 'pending');
      assert.deepEqual(before.payments, []);
      assert.equal(await recorded(w, succeeded.id), undefined);

      // Within the tolerance (signed 4 minutes ago) it is accepted.
      assertReceived(await deliver(w, succeeded, { timestamp: now - 240 }), succeeded, 'applied');
      assert.equal((await orderState(w, orderId)).status, 'completed');
    },
  );

  await t.test('the body is read as bytes only here: other media types answer 415, a body over the limit 413', async () => {
    const res = await fetch(`${w.ts.url}/api/v1/webhooks/stripe`, {
      method: 'POST',
      headers: { 'content-type': 'text/plain', 'stripe-signature': 't=1,v1=0' },
      body: 'x',
    });
    assert.equal(res.status, 415);
    const big = await fetch(`${w.ts.url}/api/v1/webhooks/stripe`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'stripe-signature': 't=1,v1=0' },
      body: JSON.stringify({ pad: 'x'.repeat(600 * 1024) }),
    });
    assert.equal(big.status, 413);
    // Other routes still parse JSON as before.
    const order = await fetch(`${w.ts.url}/api/v1/orders`, {
      method: 'POST',
      headers: { ...(await w.ts.auth({ id: w.userId, role: 'user' })), 'content-type': 'application/json' },
      body: JSON.stringify({ items: [{ sku: w.sku, quantity: 'two' }], paymentMethod: 'pm_card_visa' }),
    });
    assertProblem(
      { status: order.status, type: order.headers.get('content-type'), body: (await order.json()) as Json },
      400,
      'invalid',
      undefined,
      'items[0].quantity',
    );
  });

  await t.test('when the worker already recorded the PaymentIntent, its succeeded event adds no second payment row', async () => {
    const created = await w.ts.app.orders.create(w.ts.app.context({ actor: 'cli:test' }), {
      userId: w.userId,
      items: [{ sku: w.sku, quantity: QUANTITY }],
      paymentMethod: 'pm_card_visa',
    });
    const orderId = created.order.id;
    const message: EventMessage = { id: newId('evt'), type: 'order.created', aggregateId: orderId, payload: {}, occurredAt: new Date().toISOString() };
    await w.ts.app.context({ actor: 'worker:payments' }).transaction((tx) => paymentsConsumer({ payments: w.ts.app.payments }).handle(tx, message));
    const worked = await orderState(w, orderId);
    assert.equal(worked.status, 'completed');
    const pi = worked.payments[0]!.provider_reference!;

    const succeeded = eventOf(w, 'payment_intent.succeeded', pi);
    assertReceived(await deliver(w, succeeded), succeeded, 'unchanged');
    const after = await orderState(w, orderId);
    assert.deepEqual(after.payments, worked.payments);
    assert.deepEqual(after.events, ['order.created', 'order.completed']);
  });

  await t.test('when the worker already failed the order, its payment_failed event changes nothing (the stock goes back once)', async () => {
    const created = await w.ts.app.orders.create(w.ts.app.context({ actor: 'cli:test' }), {
      userId: w.userId,
      items: [{ sku: w.sku, quantity: QUANTITY }],
      paymentMethod: 'pm_card_chargeDeclined',
    });
    const orderId = created.order.id;
    const message: EventMessage = { id: newId('evt'), type: 'order.created', aggregateId: orderId, payload: {}, occurredAt: new Date().toISOString() };
    await w.ts.app.context({ actor: 'worker:payments' }).transaction((tx) => paymentsConsumer({ payments: w.ts.app.payments }).handle(tx, message));
    const worked = await orderState(w, orderId);
    assert.equal(worked.status, 'failed');
    const failed = eventOf(w, 'payment_intent.payment_failed', worked.payments[0]!.provider_reference!);
    assertReceived(await deliver(w, failed), failed, 'unchanged');
    const after = await orderState(w, orderId);
    assert.equal(after.stock, worked.stock);
    assert.deepEqual(after.payments, worked.payments);
    assert.deepEqual(after.events, ['order.created', 'order.failed']);
  });

  await t.test("when the worker's transaction was lost after Stripe charged, the succeeded event records the payment under the worker's key", async () => {
    // The order was moved to processing and charged, but the worker's commit never happened.
    const orderId = await pendingOrder(w, 'processing');
    const pi = await charge(w, orderId);
    assertReceived(await deliver(w, eventOf(w, 'payment_intent.succeeded', pi)), eventOf(w, 'payment_intent.succeeded', pi), 'applied');
    const after = await orderState(w, orderId);
    assert.equal(after.status, 'completed');
    assert.deepEqual(
      after.payments.map((p) => [p.attempt, p.idempotency_key, p.status]),
      [[1, `pay:${orderId}:1`, 'succeeded']],
    );
    // The worker's redelivered order.created then finds the order paid and charges nothing.
    const message: EventMessage = { id: newId('evt'), type: 'order.created', aggregateId: orderId, payload: {}, occurredAt: new Date().toISOString() };
    const charges = w.fake.chargesForOrder(orderId).length;
    await w.ts.app.context({ actor: 'worker:payments' }).transaction((tx) => paymentsConsumer({ payments: w.ts.app.payments }).handle(tx, message));
    assert.equal(w.fake.chargesForOrder(orderId).length, charges);
    assert.deepEqual((await orderState(w, orderId)).payments.length, 1);
  });

  await t.test('payment_intent.payment_failed fails a processing order with the provider code, its stock back', async () => {
    const orderId = await pendingOrder(w, 'processing');
    const stock = (await orderState(w, orderId)).stock;
    const pi = await charge(w, orderId, 'pm_card_chargeDeclined');
    const failed = eventOf(w, 'payment_intent.payment_failed', pi);
    assertReceived(await deliver(w, failed), failed, 'applied');
    const after = await orderState(w, orderId);
    assert.equal(after.status, 'failed');
    assert.equal(after.stock, stock + QUANTITY);
    assert.deepEqual(after.events, ['order.failed']);
    const [event] = await w.sql<{ payload: Json }>(`select payload from outbox_events where aggregate_id = $1 and type = 'order.failed'`, [orderId]);
    assert.equal(event!.payload.reason, 'card_declined');
    const payment = (await view(w, orderId)).payment;
    assert.equal(payment.status, 'declined');
    assert.equal(payment.failureCode, 'card_declined');
    assert.match(payment.failureReason, /declined/);
    // Again: nothing more (no second restock).
    assertReceived(await deliver(w, failed), failed, 'duplicate');
    assert.equal((await orderState(w, orderId)).stock, stock + QUANTITY);
  });

  await t.test('a late payment_failed (an earlier attempt, delivered after the success) never un-completes a paid order', async () => {
    const orderId = await pendingOrder(w, 'processing');
    const stock = (await orderState(w, orderId)).stock;
    const declinedPi = await charge(w, orderId, 'pm_card_chargeDeclined', 1);
    const paidPi = await charge(w, orderId, 'pm_card_visa', 2);
    const succeeded = eventOf(w, 'payment_intent.succeeded', paidPi);
    const failed = eventOf(w, 'payment_intent.payment_failed', declinedPi);

    assertReceived(await deliver(w, succeeded), succeeded, 'applied');
    // Applied to the payments (the declined attempt is recorded), not to the order.
    assertReceived(await deliver(w, failed), failed, 'applied');
    const after = await orderState(w, orderId);
    assert.equal(after.status, 'completed');
    assert.equal(after.stock, stock);
    assert.deepEqual(after.events, ['order.completed']);
    // The failed attempt is on record, the view shows the payment that succeeded.
    assert.deepEqual(
      after.payments.map((p) => [p.attempt, p.status, p.provider_reference]),
      [
        [1, 'declined', declinedPi],
        [2, 'succeeded', paidPi],
      ],
    );
    assert.equal((await view(w, orderId)).payment.reference, paidPi);

    // A failure event for the PaymentIntent that succeeded (Stripe retried an earlier delivery) keeps it succeeded.
    const forged = { ...failed, id: newEventId(), data: { object: { ...failed.data.object, id: paidPi } } };
    assertReceived(await deliver(w, forged), forged, 'unchanged');
    assert.equal((await orderState(w, orderId)).payments[1]!.status, 'succeeded');
  });

  await t.test('a payment that succeeds for an order already failed is recorded and audited for a refund; the order stays failed', async () => {
    const orderId = await pendingOrder(w, 'processing');
    const stock = (await orderState(w, orderId)).stock;
    const declined = await charge(w, orderId, 'pm_card_chargeDeclined', 1);
    const failed = eventOf(w, 'payment_intent.payment_failed', declined);
    assertReceived(await deliver(w, failed), failed, 'applied');
    // The same PaymentIntent paid later (say, confirmed again from Stripe's dashboard).
    const succeeded = {
      ...failed,
      id: newEventId(),
      type: 'payment_intent.succeeded',
      data: { object: { ...failed.data.object, status: 'succeeded', amount_received: TOTAL, last_payment_error: null } },
    };
    assertReceived(await deliver(w, succeeded), succeeded, 'applied');
    const state = await orderState(w, orderId);
    assert.equal(state.status, 'failed');
    assert.equal(state.stock, stock + QUANTITY);
    assert.deepEqual(state.events, ['order.failed']);
    assert.deepEqual(
      state.payments.map((p) => [p.status, p.provider_reference]),
      [['succeeded', declined]],
    );
    assert.deepEqual(
      state.audit.map((a) => [a.actor, a.action, a.details.paymentIntent, a.details.amount]),
      [['webhook:stripe', 'order.paid_after_close', declined, TOTAL]],
    );
  });

  await t.test('charge.refunded: a partial refund sets the refunded amount, the rest makes the order refunded; audited', async () => {
    const orderId = await pendingOrder(w);
    const pi = await charge(w, orderId);
    await deliver(w, eventOf(w, 'payment_intent.succeeded', pi));
    await w.stripe.refunds.create({ payment_intent: pi, amount: 1000 });
    await w.stripe.refunds.create({ payment_intent: pi });
    const partial = eventOf(w, 'charge.refunded', pi, 0);
    const full = eventOf(w, 'charge.refunded', pi, 1);

    assertReceived(await deliver(w, partial), partial, 'applied');
    let state = await orderState(w, orderId);
    assert.deepEqual([state.status, state.refunded], ['completed', 1000]);
    assert.deepEqual((await view(w, orderId)).refundedAmount, { amount: 1000, currency: 'USD' });

    assertReceived(await deliver(w, full), full, 'applied');
    state = await orderState(w, orderId);
    assert.deepEqual([state.status, state.refunded], ['refunded', TOTAL]);
    assert.equal((await view(w, orderId, 'v1')).refundedAmount, 49.5);
    // No refund event is announced (svc's own refunds will announce theirs); each change is audited.
    assert.deepEqual(state.events, ['order.completed']);
    assert.deepEqual(
      state.audit.map((a) => [a.actor, a.action, a.details.refundedAmount]),
      [
        ['webhook:stripe', 'order.refund_recorded', 1000],
        ['webhook:stripe', 'order.refund_recorded', TOTAL],
      ],
    );
  });

  await t.test('refund events out of order: the older (smaller) one after the newer keeps the higher amount and the refunded status', async () => {
    const orderId = await pendingOrder(w);
    const pi = await charge(w, orderId);
    await deliver(w, eventOf(w, 'payment_intent.succeeded', pi));
    await w.stripe.refunds.create({ payment_intent: pi, amount: 1000 });
    await w.stripe.refunds.create({ payment_intent: pi });
    const [partial, full] = [eventOf(w, 'charge.refunded', pi, 0), eventOf(w, 'charge.refunded', pi, 1)];
    assertReceived(await deliver(w, full), full, 'applied');
    assertReceived(await deliver(w, partial), partial, 'unchanged');
    const state = await orderState(w, orderId);
    assert.deepEqual([state.status, state.refunded], ['refunded', TOTAL]);
  });

  await t.test('a full refund delivered before the payment succeeded: the order ends refunded once the success arrives', async () => {
    const orderId = await pendingOrder(w, 'processing');
    const pi = await charge(w, orderId);
    await w.stripe.refunds.create({ payment_intent: pi });
    const succeeded = eventOf(w, 'payment_intent.succeeded', pi);
    const refund = eventOf(w, 'charge.refunded', pi);
    // The refund finds the order through the charge's metadata, before any payment row exists.
    assertReceived(await deliver(w, refund), refund, 'applied');
    const early = await orderState(w, orderId);
    assert.deepEqual([early.status, early.refunded], ['processing', TOTAL]);
    assertReceived(await deliver(w, succeeded), succeeded, 'applied');
    const state = await orderState(w, orderId);
    assert.deepEqual([state.status, state.refunded], ['refunded', TOTAL]);
    assert.deepEqual(state.events, ['order.completed']);
  });

  await t.test('charge.dispute.created is recorded on the order (shown in its view) and audited, once', async () => {
    const orderId = await pendingOrder(w);
    const pi = await charge(w, orderId);
    await deliver(w, eventOf(w, 'payment_intent.succeeded', pi));
    const dispute = w.fake.dispute(pi, 'product_not_received');
    const created = eventOf(w, 'charge.dispute.created', pi);
    assertReceived(await deliver(w, created), created, 'applied');
    assertReceived(await deliver(w, created), created, 'duplicate');

    const v2 = await view(w, orderId);
    assert.equal(v2.status, 'completed');
    assert.deepEqual(
      { ...v2.dispute, createdAt: undefined },
      {
        id: dispute.id,
        reason: 'product_not_received',
        status: 'needs_response',
        amount: { amount: TOTAL, currency: 'USD' },
        createdAt: undefined,
      },
    );
    assert.ok(!Number.isNaN(Date.parse(v2.dispute.createdAt)));
    const audits = (await orderState(w, orderId)).audit.filter((a) => a.action.startsWith('order.disput'));
    assert.deepEqual(
      audits.map((a) => [a.actor, a.action, a.details.dispute, a.details.reason, a.details.amount]),
      [['webhook:stripe', 'order.disputed', dispute.id, 'product_not_received', TOTAL]],
    );

    // A later status (closed, won) moves it; the older created event delivered again later would not move it back.
    const closed = {
      ...created,
      id: newEventId(),
      type: 'charge.dispute.closed',
      created: created.created + 60,
      data: { object: { ...created.data.object, status: 'won' } },
    };
    assertReceived(await deliver(w, closed), closed, 'applied');
    const stale = {
      ...created,
      id: newEventId(),
      type: 'charge.dispute.updated',
      data: { object: { ...created.data.object, status: 'under_review' } },
    };
    assertReceived(await deliver(w, stale), stale, 'unchanged');
    assert.equal((await view(w, orderId)).dispute.status, 'won');
  });

  await t.test(
    "a PaymentIntent that names an order but not its amount or currency (made outside svc) neither pays nor fails it: audited, and the order's own payment then completes it",
    async () => {
      const orderId = await pendingOrder(w);
      const stock = (await orderState(w, orderId)).stock;
      // Someone with access to the Stripe account charges 1.00 USD "for" the order, and tries 49.50 EUR with a card that is declined.
      const foreign = async (amount: number, currency: string, paymentMethod: string) => {
        try {
          const pi = await w.stripe.paymentIntents.create({
            amount,
            currency,
            payment_method: paymentMethod,
            confirm: true,
            off_session: true,
            metadata: { order_id: orderId },
          });
          return pi.id;
        } catch (err) {
          return (err as { raw: { payment_intent: { id: string } } }).raw.payment_intent.id;
        }
      };
      const small = eventOf(w, 'payment_intent.succeeded', await foreign(100, 'usd', 'pm_card_visa'));
      const euros = eventOf(w, 'payment_intent.payment_failed', await foreign(TOTAL, 'eur', 'pm_card_chargeDeclined'));
      assertReceived(await deliver(w, small), small, 'applied');
      assertReceived(await deliver(w, euros), euros, 'ignored');
      const state = await orderState(w, orderId);
      assert.deepEqual([state.status, state.stock, state.payments, state.events], ['pending', stock, [], []]);
      assert.deepEqual(
        state.audit.map((a) => [a.actor, a.action, a.details.paymentIntent, a.details.amount, a.details.currency]),
        [['webhook:stripe', 'order.payment_mismatch', small.data.object.id, 100, 'USD']],
      );

      const own = eventOf(w, 'payment_intent.succeeded', await charge(w, orderId));
      assertReceived(await deliver(w, own), own, 'applied');
      assert.equal((await orderState(w, orderId)).status, 'completed');
    },
  );

  await t.test(
    "the refund of a charge that is not the order's payment (another currency or amount, made outside svc) leaves the order's refunded amount alone",
    async () => {
      const orderId = await pendingOrder(w);
      const paid = eventOf(w, 'payment_intent.succeeded', await charge(w, orderId));
      assertReceived(await deliver(w, paid), paid, 'applied');
      const euros = await w.stripe.paymentIntents.create({
        amount: TOTAL,
        currency: 'eur',
        payment_method: 'pm_card_visa',
        confirm: true,
        off_session: true,
        metadata: { order_id: orderId },
      });
      await w.stripe.refunds.create({ payment_intent: euros.id });
      const refunded = eventOf(w, 'charge.refunded', euros.id);
      assertReceived(await deliver(w, refunded), refunded, 'ignored');
      const state = await orderState(w, orderId);
      assert.deepEqual([state.status, state.refunded], ['completed', 0]);
      assert.deepEqual(
        state.audit.map((a) => a.action),
        [],
      );
    },
  );

  await t.test(
    'the same event delivered five times at once (Stripe retrying while the first is applied) is applied once; the others answer duplicate',
    async () => {
      const orderId = await pendingOrder(w);
      const succeeded = eventOf(w, 'payment_intent.succeeded', await charge(w, orderId));
      const answers = await Promise.all(Array.from({ length: 5 }, () => deliver(w, succeeded)));
      assert.deepEqual(answers.map((a) => [a.status, a.body.outcome]).sort(), [
        [200, 'applied'],
        [200, 'duplicate'],
        [200, 'duplicate'],
        [200, 'duplicate'],
        [200, 'duplicate'],
      ]);
      const state = await orderState(w, orderId);
      assert.equal(state.status, 'completed');
      assert.equal(state.payments.length, 1);
      assert.deepEqual(state.events, ['order.completed']);
    },
  );

  await t.test('an event about no order of ours, or of a type svc does not act on, is acknowledged and recorded', async () => {
    const pi = await charge(w, newId('ord'));
    const stranger = eventOf(w, 'payment_intent.succeeded', pi);
    assertReceived(await deliver(w, stranger), stranger, 'unknown_order');
    assert.deepEqual(await recorded(w, stranger.id), { type: 'payment_intent.succeeded', order_id: null, outcome: 'unknown_order' });
    const other = eventOf(w, 'payment_intent.created', pi);
    assertReceived(await deliver(w, other), other, 'ignored');
    assert.deepEqual(await recorded(w, other.id), { type: 'payment_intent.created', order_id: null, outcome: 'ignored' });
  });

  await t.test('a failure while applying answers 500 without details and records nothing; Stripe’s retry then applies the event', async () => {
    const orderId = await pendingOrder(w);
    const pi = await charge(w, orderId);
    const succeeded = eventOf(w, 'payment_intent.succeeded', pi);
    // The database refuses the order's update (as a lost connection or a full disk would, mid-transaction).
    await w.sql(`create function webhook_test_refuse() returns trigger language plpgsql as $$ begin raise exception 'injected failure'; end $$`);
    await w.sql('create trigger webhook_test_refuse before update on orders for each row execute function webhook_test_refuse()');
    const res = await deliver(w, succeeded);
    assertProblem(res, 500, 'internal');
    assert.equal(res.body.detail, undefined);
    assert.doesNotMatch(JSON.stringify(res.body), /injected/);
    const during = await orderState(w, orderId);
    assert.equal(during.status, 'pending');
    assert.deepEqual(during.payments, []);
    assert.equal(await recorded(w, succeeded.id), undefined);

    await w.sql('drop trigger webhook_test_refuse on orders');
    assertReceived(await deliver(w, succeeded), succeeded, 'applied');
    assert.equal((await orderState(w, orderId)).status, 'completed');
  });
});

test('on the embedded database (PGlite) too, an event is applied once and a dispute recorded and audited', async (t) => {
  const w = await world(t, { embedded: true });
  const orderId = await pendingOrder(w);
  const pi = await charge(w, orderId);
  const succeeded = eventOf(w, 'payment_intent.succeeded', pi);
  assertReceived(await deliver(w, succeeded), succeeded, 'applied');
  assertReceived(await deliver(w, succeeded), succeeded, 'duplicate');
  w.fake.dispute(pi);
  const disputed = eventOf(w, 'charge.dispute.created', pi);
  assertReceived(await deliver(w, disputed), disputed, 'applied');
  const state = await orderState(w, orderId);
  assert.equal(state.status, 'completed');
  assert.equal(state.payments.length, 1);
  assert.deepEqual(
    state.audit.map((a) => a.action),
    ['order.disputed'],
  );
  const v2 = await view(w, orderId);
  assert.equal(v2.payment.reference, pi);
  assert.equal(v2.dispute.reason, 'fraudulent');
});

test('the verifier refuses a tolerance of 0 (which the SDK reads as "no timestamp check")', () => {
  assert.throws(() => new StripeWebhookVerifier(FAKE_STRIPE_WEBHOOK_SECRET, 0), /positive number of seconds/);
});
