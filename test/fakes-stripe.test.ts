import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import Stripe from 'stripe';
import {
  FAKE_STRIPE_API_VERSION,
  FAKE_STRIPE_SECRET_KEY,
  IDEMPOTENCY_KEY_TTL_MS,
  startFakeStripe,
  stripeSignatureHeader,
  type FakeStripe,
  type FakeStripeOptions,
} from './fakes/stripe.js';

// The fakes' own tests: each drives the fake through the real `stripe` SDK and checks the behaviour
// Stripe documents, so that tests of svc written against the fake test svc against Stripe's contract.

interface Setup {
  fake: FakeStripe;
  /** An SDK client on the fake; no automatic retries unless asked for. */
  stripe: (config?: Stripe.StripeConfig, key?: string) => Stripe;
}

async function setup(t: TestContext, options: FakeStripeOptions = {}): Promise<Setup> {
  const fake = await startFakeStripe(options);
  t.after(() => fake.close());
  return {
    fake,
    stripe: (config = {}, key = FAKE_STRIPE_SECRET_KEY) => new Stripe(key, { ...fake.sdkOptions, maxNetworkRetries: 0, ...config }),
  };
}

/** What svc's worker sends: confirm off-session for the order's total, with the order id in metadata. */
function payment(orderId: string, paymentMethod = 'pm_card_visa', extra: Partial<Stripe.PaymentIntentCreateParams> = {}): Stripe.PaymentIntentCreateParams {
  return { amount: 4950, currency: 'usd', payment_method: paymentMethod, confirm: true, off_session: true, metadata: { order_id: orderId }, ...extra };
}

/** The error a promise rejects with (fails the test if it resolves). */
async function failure(promise: Promise<unknown>): Promise<any> {
  try {
    await promise;
  } catch (e) {
    return e;
  }
  assert.fail('expected the call to fail');
}

test('the fake speaks the API version of the installed SDK', () => {
  assert.equal(FAKE_STRIPE_API_VERSION, Stripe.API_VERSION);
});

test('an off-session PaymentIntent with pm_card_visa succeeds with a charge, and payment_intent.succeeded is emitted', async (t) => {
  const { fake, stripe } = await setup(t);
  const pi = await stripe().paymentIntents.create(payment('ord_1'), { idempotencyKey: 'pay:ord_1:1' });
  assert.match(pi.id, /^pi_/);
  assert.equal(pi.status, 'succeeded');
  assert.equal(pi.amount_received, 4950);
  assert.equal(pi.currency, 'usd');
  assert.deepEqual(pi.metadata, { order_id: 'ord_1' });
  assert.match(pi.latest_charge as string, /^ch_/);
  assert.match(pi.payment_method as string, /^pm_/, 'a test token becomes a PaymentMethod of its own');
  assert.equal(pi.lastResponse.idempotencyKey, 'pay:ord_1:1');
  assert.match(pi.lastResponse.requestId, /^req_/);

  const [charge] = fake.chargesForOrder('ord_1');
  assert.equal(charge?.id, pi.latest_charge);
  assert.equal(charge?.amount_captured, 4950);
  const succeeded = fake.events.filter((e) => e.type === 'payment_intent.succeeded');
  assert.equal(succeeded.length, 1);
  assert.equal(succeeded[0]!.data.object.id, pi.id);
  assert.deepEqual(succeeded[0]!.request, { id: pi.lastResponse.requestId, idempotency_key: 'pay:ord_1:1' });

  const expanded = await stripe().paymentIntents.retrieve(pi.id, { expand: ['latest_charge'] });
  assert.equal((expanded.latest_charge as Stripe.Charge).status, 'succeeded');
});

test('a declined card is a 402 card_error carrying the PaymentIntent, which waits in requires_payment_method', async (t) => {
  const { fake, stripe } = await setup(t);
  const err = await failure(stripe().paymentIntents.create(payment('ord_d', 'pm_card_chargeDeclined')));
  assert.ok(err instanceof Stripe.errors.StripeCardError, String(err));
  assert.equal(err.statusCode, 402);
  assert.equal(err.code, 'card_declined');
  assert.equal(err.decline_code, 'generic_decline');
  assert.equal(err.message, 'Your card was declined.');
  assert.match(err.charge!, /^ch_/);
  assert.equal(err.payment_intent!.status, 'requires_payment_method');
  assert.equal(err.payment_intent!.last_payment_error!.decline_code, 'generic_decline');
  assert.deepEqual(err.payment_intent!.metadata, { order_id: 'ord_d' });
  assert.equal(fake.chargesForOrder('ord_d').length, 0);
  assert.equal(fake.events.at(-1)!.type, 'payment_intent.payment_failed');

  const funds = await failure(stripe().paymentIntents.create(payment('ord_f', 'pm_card_chargeDeclinedInsufficientFunds')));
  assert.equal(funds.decline_code, 'insufficient_funds');
});

test('a card that needs 3-D Secure fails off-session with authentication_required, and waits in requires_action on session', async (t) => {
  const { stripe } = await setup(t);
  const err = await failure(stripe().paymentIntents.create(payment('ord_3ds', 'pm_card_authenticationRequired')));
  assert.ok(err instanceof Stripe.errors.StripeCardError);
  assert.equal(err.code, 'authentication_required');
  assert.equal(err.decline_code, 'authentication_required');
  assert.equal(err.payment_intent!.status, 'requires_payment_method');

  const onSession = await stripe().paymentIntents.create({ amount: 1000, currency: 'eur', payment_method: 'pm_card_authenticationRequired', confirm: true });
  assert.equal(onSession.status, 'requires_action');
  assert.equal(onSession.next_action?.type, 'use_stripe_sdk');
});

test('a wrong or missing API key is a 401 the SDK raises as StripeAuthenticationError', async (t) => {
  const { fake, stripe } = await setup(t);
  const wrong = await failure(stripe({}, 'sk_test_not_a_key_of_this_account').paymentIntents.create(payment('ord_k')));
  assert.ok(wrong instanceof Stripe.errors.StripeAuthenticationError);
  assert.equal(wrong.statusCode, 401);
  assert.match(wrong.message, /^Invalid API Key provided: sk_test_\**ount$/);
  const none = await fetch(`${fake.url}/v1/payment_intents/pi_x`);
  assert.equal(none.status, 401);
  assert.match(((await none.json()) as { error: { message: string } }).error.message, /You did not provide an API key/);
});

test('invalid parameters are a 400 naming the param, and are not stored under the idempotency key', async (t) => {
  const { fake, stripe } = await setup(t);
  const missing = await failure(
    stripe().paymentIntents.create({ amount: 4950, payment_method: 'pm_card_visa', confirm: true } as Stripe.PaymentIntentCreateParams, {
      idempotencyKey: 'k1',
    }),
  );
  assert.ok(missing instanceof Stripe.errors.StripeInvalidRequestError);
  assert.equal(missing.param, 'currency');
  assert.equal(missing.code, 'parameter_missing');

  // Nothing was stored for k1: the corrected request runs.
  const pi = await stripe().paymentIntents.create(payment('ord_p'), { idempotencyKey: 'k1' });
  assert.equal(pi.status, 'succeeded');

  const unknown = await failure(stripe().paymentIntents.create({ ...payment('ord_p'), colour: 'red' } as Stripe.PaymentIntentCreateParams));
  assert.equal(unknown.param, 'colour');
  const small = await failure(stripe().paymentIntents.create(payment('ord_p', 'pm_card_visa', { amount: 10 })));
  assert.equal(small.code, 'amount_too_small');
  const pm = await failure(stripe().paymentIntents.create(payment('ord_p', 'pm_card_nonsense')));
  assert.equal(pm.code, 'resource_missing');
  assert.equal(pm.param, 'payment_method');
  const notFound = await failure(stripe().paymentIntents.retrieve('pi_missing'));
  assert.ok(notFound instanceof Stripe.errors.StripeInvalidRequestError);
  assert.equal(notFound.statusCode, 404);
  assert.equal(notFound.code, 'resource_missing');
  assert.equal(fake.paymentIntents().length, 1);
});

test('the same idempotency key and parameters replay the first answer; other parameters are an idempotency_error', async (t) => {
  const { fake, stripe } = await setup(t);
  const first = await stripe().paymentIntents.create(payment('ord_i'), { idempotencyKey: 'pay:ord_i' });
  const again = await stripe().paymentIntents.create(payment('ord_i'), { idempotencyKey: 'pay:ord_i' });
  assert.equal(again.id, first.id);
  assert.equal((again.lastResponse.headers as Record<string, string>)['idempotent-replayed'], 'true');
  assert.equal((again.lastResponse.headers as Record<string, string>)['original-request'], first.lastResponse.requestId);
  assert.equal(fake.executions('pay:ord_i'), 1);
  assert.equal(fake.chargesForOrder('ord_i').length, 1);

  const declined = await failure(stripe().paymentIntents.create(payment('ord_j', 'pm_card_chargeDeclined'), { idempotencyKey: 'pay:ord_j' }));
  const declinedAgain = await failure(stripe().paymentIntents.create(payment('ord_j', 'pm_card_chargeDeclined'), { idempotencyKey: 'pay:ord_j' }));
  assert.equal(declinedAgain.payment_intent.id, declined.payment_intent.id, 'a 402 is stored and replayed too');

  const other = await failure(stripe().paymentIntents.create(payment('ord_i', 'pm_card_visa', { amount: 5000 }), { idempotencyKey: 'pay:ord_i' }));
  assert.ok(other instanceof Stripe.errors.StripeIdempotencyError, String(other));
  assert.equal(other.statusCode, 400);
  assert.match(other.message, /same parameters they were first used with/);
  assert.equal(fake.executions('pay:ord_i'), 1);
});

test('a 500 is stored under its key for 24 hours: the retry replays it, and search by metadata tells whether the payment happened', async (t) => {
  const { fake, stripe } = await setup(t);
  const client = stripe({ maxNetworkRetries: 2 });
  fake.failNext({ route: 'POST /v1/payment_intents', afterExecution: true });
  const err = await failure(client.paymentIntents.create(payment('ord_500'), { idempotencyKey: 'pay:ord_500:1' }));
  assert.ok(err instanceof Stripe.errors.StripeAPIError, String(err));
  assert.equal(err.statusCode, 500);
  assert.equal(err.headers!['stripe-should-retry'], 'false');
  assert.equal(fake.requests.length, 1, 'Stripe-Should-Retry: false stops the SDK retrying a stored 500');

  const replay = await failure(client.paymentIntents.create(payment('ord_500'), { idempotencyKey: 'pay:ord_500:1' }));
  assert.equal(replay.statusCode, 500);
  assert.equal(replay.headers['idempotent-replayed'], 'true');
  assert.equal(fake.executions('pay:ord_500:1'), 1);

  const found = await client.paymentIntents.search({ query: "metadata['order_id']:'ord_500'" });
  assert.equal(found.data.length, 1);
  assert.equal(found.data[0]!.status, 'succeeded', 'the charge happened behind the 500');
  assert.equal(fake.chargesForOrder('ord_500').length, 1);

  // A day later the key is forgotten and the same request runs again (a second charge: the caller's to avoid).
  fake.clock.advance(IDEMPOTENCY_KEY_TTL_MS);
  await client.paymentIntents.create(payment('ord_500'), { idempotencyKey: 'pay:ord_500:1' });
  assert.equal(fake.chargesForOrder('ord_500').length, 2);
});

test('a 500 before the work leaves nothing to find', async (t) => {
  const { fake, stripe } = await setup(t);
  fake.failNext();
  const err = await failure(stripe().paymentIntents.create(payment('ord_x'), { idempotencyKey: 'pay:ord_x:1' }));
  assert.equal(err.statusCode, 500);
  const found = await stripe().paymentIntents.search({ query: "metadata['order_id']:'ord_x'" });
  assert.equal(found.data.length, 0);
  const second = await stripe().paymentIntents.create(payment('ord_x'), { idempotencyKey: 'pay:ord_x:2' });
  assert.equal(second.status, 'succeeded');
  assert.equal(fake.chargesForOrder('ord_x').length, 1);
});

test('a GET that fails with a 500 is retried by the SDK (no idempotency key, no Stripe-Should-Retry)', async (t) => {
  const { fake, stripe } = await setup(t);
  const pi = await stripe().paymentIntents.create(payment('ord_g'));
  fake.failNext({ route: 'GET /v1/payment_intents/:id' });
  const got = await stripe({ maxNetworkRetries: 1 }).paymentIntents.retrieve(pi.id);
  assert.equal(got.id, pi.id);
  assert.deepEqual(
    fake.requests.filter((r) => r.method === 'GET').map((r) => r.status),
    [500, 200],
  );
});

test('a request while another with the same key is in flight is a 409 idempotency_key_in_use', async (t) => {
  const { fake, stripe } = await setup(t);
  const held = fake.holdNext({ route: 'POST /v1/payment_intents' });
  const first = stripe().paymentIntents.create(payment('ord_c'), { idempotencyKey: 'pay:ord_c' });
  await held.arrived;
  const err = await failure(stripe().paymentIntents.create(payment('ord_c'), { idempotencyKey: 'pay:ord_c' }));
  // stripe-node maps only 400/404 idempotency errors to StripeIdempotencyError; a 409 is a StripeAPIError.
  assert.ok(err instanceof Stripe.errors.StripeAPIError, String(err));
  assert.equal(err.statusCode, 409);
  assert.equal(err.rawType, 'idempotency_error');
  assert.equal(err.code, 'idempotency_key_in_use');
  assert.equal(err.headers!['stripe-should-retry'], 'true');
  held.release();
  const pi = await first;
  assert.equal(pi.status, 'succeeded');
  const replay = await stripe().paymentIntents.create(payment('ord_c'), { idempotencyKey: 'pay:ord_c' });
  assert.equal(replay.id, pi.id);
  assert.equal(fake.chargesForOrder('ord_c').length, 1);
});

test('a timeout after Stripe charged: the retry with the same key finds the charge, and there is one', async (t) => {
  const { fake, stripe } = await setup(t);
  fake.delayNext({ route: 'POST /v1/payment_intents', ms: 5_000 });
  const err = await failure(stripe({ timeout: 100 }).paymentIntents.create(payment('ord_t'), { idempotencyKey: 'pay:ord_t' }));
  assert.ok(err instanceof Stripe.errors.StripeConnectionError, String(err));
  assert.match(err.message, /timeout/);
  assert.equal(fake.chargesForOrder('ord_t').length, 1, 'the charge happened although the answer never came');

  const retried = await stripe().paymentIntents.create(payment('ord_t'), { idempotencyKey: 'pay:ord_t' });
  assert.equal(retried.status, 'succeeded');
  assert.equal((retried.lastResponse.headers as Record<string, string>)['idempotent-replayed'], 'true');
  assert.equal(fake.chargesForOrder('ord_t').length, 1);
});

test("the SDK's own retry after a timeout reuses its generated idempotency key", async (t) => {
  const { fake, stripe } = await setup(t);
  fake.delayNext({ route: 'POST /v1/payment_intents', ms: 5_000 });
  // The timeout also bounds the retry, which gets the stored answer at once: keep it roomy on a busy machine.
  const pi = await stripe({ timeout: 1_000, maxNetworkRetries: 1 }).paymentIntents.create(payment('ord_sdk'));
  assert.equal(pi.status, 'succeeded');
  const posts = fake.requests.filter((r) => r.method === 'POST');
  assert.equal(posts.length, 2);
  assert.match(posts[0]!.idempotencyKey!, /^stripe-node-retry-/);
  assert.equal(posts[1]!.idempotencyKey, posts[0]!.idempotencyKey);
  assert.equal(posts[1]!.replayed, true);
  assert.equal(fake.chargesForOrder('ord_sdk').length, 1);
});

test('a connection dropped after the charge is retried once by the SDK even with maxNetworkRetries 0, and replays', async (t) => {
  const { fake, stripe } = await setup(t);
  fake.dropNext({ route: 'POST /v1/payment_intents' });
  const pi = await stripe().paymentIntents.create(payment('ord_drop'), { idempotencyKey: 'pay:ord_drop' });
  assert.equal(pi.status, 'succeeded');
  assert.deepEqual(
    fake.requests.map((r) => [r.status, r.replayed]),
    [
      [-1, false],
      [200, true],
    ],
  );
  assert.equal(fake.chargesForOrder('ord_drop').length, 1);

  fake.dropNext({ afterExecution: false, times: 2 });
  const err = await failure(stripe().paymentIntents.create(payment('ord_drop2'), { idempotencyKey: 'pay:ord_drop2' }));
  assert.ok(err instanceof Stripe.errors.StripeConnectionError);
  assert.equal(fake.chargesForOrder('ord_drop2').length, 0);
});

test('a 429 comes before the idempotency layer: nothing is stored and the same key runs later', async (t) => {
  const { fake, stripe } = await setup(t);
  fake.rateLimitNext();
  const err = await failure(stripe({ maxNetworkRetries: 2 }).paymentIntents.create(payment('ord_r'), { idempotencyKey: 'pay:ord_r' }));
  assert.ok(err instanceof Stripe.errors.StripeRateLimitError, String(err));
  assert.equal(err.code, 'rate_limit');
  assert.equal(fake.requests.length, 1, 'stripe-node does not retry a 429 unless Stripe-Should-Retry says so');
  const pi = await stripe().paymentIntents.create(payment('ord_r'), { idempotencyKey: 'pay:ord_r' });
  assert.equal(pi.status, 'succeeded');
  assert.notEqual((pi.lastResponse.headers as Record<string, string>)['idempotent-replayed'], 'true');
});

test('idempotency keys are scoped per API key', async (t) => {
  const other = 'sk_test_svcfake_second_account_000000';
  const { fake, stripe } = await setup(t, { apiKeys: [FAKE_STRIPE_SECRET_KEY, other] });
  const a = await stripe().paymentIntents.create(payment('ord_s'), { idempotencyKey: 'same' });
  const b = await stripe({}, other).paymentIntents.create(payment('ord_s'), { idempotencyKey: 'same' });
  assert.notEqual(a.id, b.id);
  assert.equal(fake.paymentIntents().length, 2);
});

test('search finds PaymentIntents by metadata and status, newest first, and lags when told to', async (t) => {
  const { fake, stripe } = await setup(t);
  const client = stripe();
  const a1 = await client.paymentIntents.create(payment('ord_a'));
  await failure(client.paymentIntents.create(payment('ord_a', 'pm_card_chargeDeclined')));
  await client.paymentIntents.create(payment('ord_b'));

  const all = await client.paymentIntents.search({ query: "metadata['order_id']:'ord_a'" });
  assert.equal(all.object, 'search_result');
  assert.equal(all.data.length, 2);
  assert.equal(all.data[1]!.id, a1.id, 'newest first');
  const ok = await client.paymentIntents.search({ query: "metadata['order_id']:'ord_a' AND status:'succeeded'" });
  assert.deepEqual(
    ok.data.map((p) => p.id),
    [a1.id],
  );
  const page = await client.paymentIntents.search({ query: 'amount>1000', limit: 2 });
  assert.equal(page.data.length, 2);
  assert.equal(page.has_more, true);
  const rest = await client.paymentIntents.search({ query: 'amount>1000', limit: 2, page: page.next_page! });
  assert.equal(rest.data.length, 1);

  const bad = await failure(client.paymentIntents.search({ query: "colour:'red'" }));
  assert.ok(bad instanceof Stripe.errors.StripeInvalidRequestError);
  assert.equal(bad.param, 'query');

  fake.setSearchLag(60_000);
  await client.paymentIntents.create(payment('ord_late'));
  assert.equal((await client.paymentIntents.search({ query: "metadata['order_id']:'ord_late'" })).data.length, 0, 'not yet indexed');
  fake.clock.advance(60_000);
  assert.equal((await client.paymentIntents.search({ query: "metadata['order_id']:'ord_late'" })).data.length, 1);
});

test('refunds: partial, then the rest; more than is left is refused; each emits charge.refunded', async (t) => {
  const { fake, stripe } = await setup(t);
  const client = stripe();
  const pi = await client.paymentIntents.create(payment('ord_rf'));
  const partial = await client.refunds.create({ payment_intent: pi.id, amount: 1000, metadata: { refund_id: 'rf_1' } }, { idempotencyKey: 'refund:rf_1' });
  assert.match(partial.id, /^re_/);
  assert.equal(partial.status, 'succeeded');
  assert.equal(partial.amount, 1000);
  assert.equal(partial.charge, pi.latest_charge);
  assert.deepEqual((await client.refunds.retrieve(partial.id)).metadata, { refund_id: 'rf_1' });

  const tooMuch = await failure(client.refunds.create({ payment_intent: pi.id, amount: 4000 }));
  assert.ok(tooMuch instanceof Stripe.errors.StripeInvalidRequestError);
  assert.equal(tooMuch.code, 'amount_too_large');
  assert.equal(tooMuch.param, 'amount');

  const rest = await client.refunds.create({ payment_intent: pi.id });
  assert.equal(rest.amount, 3950);
  const again = await failure(client.refunds.create({ payment_intent: pi.id }));
  assert.equal(again.code, 'charge_already_refunded');

  const refunded = fake.events.filter((e) => e.type === 'charge.refunded');
  assert.deepEqual(
    refunded.map((e) => [e.data.object.amount_refunded, e.data.object.refunded, e.data.previous_attributes.amount_refunded]),
    [
      [1000, false, 0],
      [4950, true, 1000],
    ],
  );
  assert.equal(refunded[0]!.request.idempotency_key, 'refund:rf_1');

  const declined = await failure(client.paymentIntents.create(payment('ord_rf2', 'pm_card_chargeDeclined')));
  const nothing = await failure(client.refunds.create({ payment_intent: declined.payment_intent.id }));
  assert.match(nothing.message, /does not have a successful charge to refund/);
});

test('a manual-capture PaymentIntent waits in requires_capture until captured', async (t) => {
  const { stripe } = await setup(t);
  const client = stripe();
  const pi = await client.paymentIntents.create(payment('ord_m', 'pm_card_visa', { capture_method: 'manual' }));
  assert.equal(pi.status, 'requires_capture');
  assert.equal(pi.amount_capturable, 4950);
  const captured = await client.paymentIntents.capture(pi.id);
  assert.equal(captured.status, 'succeeded');
  assert.equal(captured.amount_received, 4950);
  const twice = await failure(client.paymentIntents.capture(pi.id));
  assert.equal(twice.code, 'payment_intent_unexpected_state');
});

test('disputes: pm_card_createDispute and fake.dispute() open one with charge.dispute.created', async (t) => {
  const { fake, stripe } = await setup(t);
  const pi = await stripe().paymentIntents.create(payment('ord_dp', 'pm_card_createDispute'));
  const created = fake.events.filter((e) => e.type === 'charge.dispute.created');
  assert.equal(created.length, 1);
  assert.equal(created[0]!.data.object.payment_intent, pi.id);
  assert.equal(created[0]!.data.object.status, 'needs_response');
  const other = await stripe().paymentIntents.create(payment('ord_dp2'));
  const dispute = fake.dispute(other.id, 'product_not_received');
  assert.match(dispute.id, /^dp_/);
  assert.equal(fake.events.at(-1)!.data.object.reason, 'product_not_received');
  const event = await stripe().events.retrieve(fake.events.at(-1)!.id);
  assert.equal(event.type, 'charge.dispute.created');
});

test('webhook signatures verify with the SDK; tampered, stale and wrongly signed deliveries do not', async (t) => {
  const { fake, stripe } = await setup(t);
  await stripe().paymentIntents.create(payment('ord_w'));
  const event = fake.events.find((e) => e.type === 'payment_intent.succeeded')!;
  const secret = fake.webhookSecret;

  const good = fake.webhookRequest(event);
  const verified = Stripe.webhooks.constructEvent(good.payload, good.headers['stripe-signature']!, secret, 300);
  assert.equal(verified.id, event.id);
  assert.equal(verified.type, 'payment_intent.succeeded');
  assert.equal(verified.livemode, false);
  assert.equal(verified.api_version, Stripe.API_VERSION);

  // The header is the one the SDK's own test helper makes.
  const t0 = Math.floor(Date.now() / 1000);
  assert.equal(stripeSignatureHeader(good.payload, secret, t0), Stripe.webhooks.generateTestHeaderString({ payload: good.payload, secret, timestamp: t0 }));

  const refused = (req: { payload: string; headers: Record<string, string> }) => {
    try {
      Stripe.webhooks.constructEvent(req.payload, req.headers['stripe-signature']!, secret, 300);
    } catch (e) {
      assert.ok(e instanceof Stripe.errors.StripeSignatureVerificationError);
      return (e as Error).message;
    }
    assert.fail('expected the signature check to fail');
  };
  assert.match(refused(fake.webhookRequest(event, { tamper: 'payload' })), /No signatures found matching/);
  assert.match(refused(fake.webhookRequest(event, { tamper: 'signature' })), /No signatures found matching/);
  assert.match(refused(fake.webhookRequest(event, { secret: 'whsec_someone_else' })), /No signatures found matching/);
  assert.match(refused(fake.webhookRequest(event, { signedAt: t0 - 301 })), /Timestamp outside the tolerance zone/);
  const recent = fake.webhookRequest(event, { signedAt: t0 - 290 });
  assert.equal(Stripe.webhooks.constructEvent(recent.payload, recent.headers['stripe-signature']!, secret, 300).id, event.id, 'within the 300 s tolerance');
});

test('deliver() POSTs raw signed events as given: duplicates and out of order', async (t) => {
  const { fake, stripe } = await setup(t);
  const received: Array<{ id: string; ok: boolean }> = [];
  const receiver = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      try {
        const event = Stripe.webhooks.constructEvent(Buffer.concat(chunks), req.headers['stripe-signature'] as string, fake.webhookSecret, 300);
        received.push({ id: event.id, ok: true });
        res.writeHead(200).end('{"received":true}');
      } catch {
        received.push({ id: '?', ok: false });
        res.writeHead(400).end();
      }
    });
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => receiver.close(() => resolve())));
  const url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/api/v1/webhooks/stripe`;

  const pi = await stripe().paymentIntents.create(payment('ord_o'));
  await stripe().refunds.create({ payment_intent: pi.id });
  const succeeded = fake.events.find((e) => e.type === 'payment_intent.succeeded')!;
  const refunded = fake.events.find((e) => e.type === 'charge.refunded')!;

  const answers = await fake.deliver(url, [refunded, succeeded, succeeded]);
  assert.deepEqual(
    answers.map((a) => a.status),
    [200, 200, 200],
  );
  assert.deepEqual(
    received.map((r) => r.id),
    [refunded.id, succeeded.id, succeeded.id],
  );
  const [stale] = await fake.deliver(url, succeeded, { signedAt: Math.floor(Date.now() / 1000) - 3600 });
  assert.equal(stale!.status, 400);
});
