import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { StripePayments, type StripePaymentsOptions } from '../src/adapters/stripe-payments.js';
import { PaymentUnavailable, type ChargeInput } from '../src/domain/payments/payment-provider.js';
import { DomainError } from '../src/domain/shared/errors.js';
import { createLoggerTo } from '../src/logger.js';
import { FAKE_STRIPE_SECRET_KEY, startFakeStripe, type FakeStripe } from './fakes/stripe.js';
import { rejection } from './helpers/assertions.js';

// StripePayments through the real SDK against the Stripe fake: outcomes, the error model the worker
// relies on (unknown vs not attempted, whether the key may be sent again), and the circuit breaker.

type Json = Record<string, any>;

interface Setup {
  fake: FakeStripe;
  payments: StripePayments;
  logs: () => Json[];
}

async function setup(t: TestContext, options: Partial<StripePaymentsOptions> = {}): Promise<Setup> {
  const fake = await startFakeStripe();
  const chunks: string[] = [];
  const sink = new Writable({ write: (chunk: Buffer, _enc, done) => (chunks.push(chunk.toString()), done()) });
  const payments = new StripePayments({ secretKey: FAKE_STRIPE_SECRET_KEY, apiUrl: fake.url, logger: createLoggerTo('info', sink), ...options });
  t.after(async () => {
    payments.close();
    await fake.close();
  });
  return { fake, payments, logs: () => chunks.map((c) => JSON.parse(c) as Json) };
}

let orders = 0;
/** A charge for a new order (its own id and key) unless told otherwise. */
function charge(overrides: Partial<ChargeInput> = {}): ChargeInput {
  const orderId = overrides.orderId ?? `ord_t${++orders}_${Date.now()}`;
  return { orderId, amount: 4950, currency: 'USD', paymentMethod: 'pm_card_visa', idempotencyKey: `pay:${orderId}:1`, ...overrides };
}

async function unavailable(promise: Promise<unknown>): Promise<PaymentUnavailable> {
  const err = await rejection(promise);
  assert.ok(err instanceof PaymentUnavailable, `${err.name}: ${err.message}`);
  assert.equal(err.code, 'unavailable');
  assert.equal(err.details.provider, 'stripe');
  return err;
}

test('a charge confirms an off-session PaymentIntent with the order id and the key, and succeeds', async (t) => {
  const { fake, payments } = await setup(t);
  const input = charge();
  const outcome = await payments.charge(input);
  assert.equal(outcome.status, 'succeeded');
  assert.ok(outcome.status === 'succeeded');
  assert.match(outcome.reference, /^pi_/);
  assert.equal(outcome.amount, 4950);
  assert.equal(outcome.currency, 'USD');
  const pi = fake.paymentIntent(outcome.reference)!;
  assert.equal(pi.currency, 'usd');
  assert.deepEqual(pi.metadata, { order_id: input.orderId });
  assert.equal(fake.requests.at(-1)!.idempotencyKey, input.idempotencyKey);
  assert.equal(fake.chargesForOrder(input.orderId).length, 1);
});

test('a declined card is a declined outcome with the PaymentIntent, Stripe’s code and the decline code', async (t) => {
  const { payments } = await setup(t);
  const declined = await payments.charge(charge({ paymentMethod: 'pm_card_chargeDeclined' }));
  assert.equal(declined.status, 'declined');
  assert.ok(declined.status === 'declined');
  assert.match(declined.reference!, /^pi_/);
  assert.equal(declined.code, 'card_declined');
  assert.equal(declined.declineCode, 'generic_decline');
  assert.equal(declined.reason, 'Your card was declined.');

  const funds = await payments.charge(charge({ paymentMethod: 'pm_card_chargeDeclinedInsufficientFunds' }));
  assert.deepEqual(funds.status === 'declined' && [funds.code, funds.declineCode], ['card_declined', 'insufficient_funds']);
});

test('a card that needs 3-D Secure is declined off-session with authentication_required', async (t) => {
  const { payments } = await setup(t);
  const outcome = await payments.charge(charge({ paymentMethod: 'pm_card_authenticationRequired' }));
  assert.equal(outcome.status, 'declined');
  assert.ok(outcome.status === 'declined');
  assert.equal(outcome.code, 'authentication_required');
  assert.match(outcome.reference!, /^pi_/);
});

test('an unknown payment method or an amount Stripe will not charge fails the payment; a malformed request is invalid, not retryable', async (t) => {
  const { payments } = await setup(t);
  const missing = await payments.charge(charge({ paymentMethod: 'pm_does_not_exist' }));
  assert.deepEqual(missing.status === 'declined' && [missing.code, missing.reference], ['resource_missing', undefined]);
  assert.match(missing.status === 'declined' ? missing.reason : '', /No such PaymentMethod: 'pm_does_not_exist'/);

  const small = await payments.charge(charge({ amount: 10 }));
  assert.deepEqual(small.status === 'declined' && small.code, 'amount_too_small');

  const err = await rejection(payments.charge(charge({ idempotencyKey: 'k'.repeat(300) })));
  assert.ok(err instanceof DomainError && !(err instanceof PaymentUnavailable));
  assert.equal(err.code, 'invalid');
  assert.match(err.message, /Idempotency keys can be at most 255 characters/);
});

test('the same idempotency key twice is one PaymentIntent and one charge; the key with other parameters is a bug', async (t) => {
  const { fake, payments } = await setup(t);
  const input = charge();
  const first = await payments.charge(input);
  const second = await payments.charge(input);
  assert.deepEqual(second, first);
  assert.equal(fake.executions(input.idempotencyKey), 1);
  assert.equal(fake.requests.at(-1)!.replayed, true);
  assert.equal(fake.chargesForOrder(input.orderId).length, 1);

  const other = await rejection(payments.charge({ ...input, amount: 5000 }));
  assert.ok(other instanceof DomainError);
  assert.equal(other.code, 'invalid');
  assert.match(other.message, /same parameters/);
});

test('a timeout after Stripe charged is an unknown outcome; the same key or findCharge finds the one charge', async (t) => {
  const { fake, payments } = await setup(t, { timeoutMs: 1_000 });
  const input = charge();
  fake.delayNext({ ms: 10_000, route: 'POST /v1/payment_intents' });
  const err = await unavailable(payments.charge(input));
  assert.deepEqual(
    { outcome: err.details.outcome, keyReusable: err.details.keyReusable, reason: err.details.reason },
    { outcome: 'unknown', keyReusable: true, reason: 'timeout' },
  );

  const found = await payments.findCharge(input.orderId);
  assert.equal(found?.status, 'succeeded');
  const again = await payments.charge(input);
  assert.deepEqual(again, found, 'the same key answers with the stored PaymentIntent');
  assert.equal(fake.chargesForOrder(input.orderId).length, 1);
  assert.equal(fake.executions(input.idempotencyKey), 1);
});

test('a stored 500 is an unknown outcome whose key cannot be reused; findCharge finds the charge it hid', async (t) => {
  const { fake, payments } = await setup(t);
  const input = charge();
  fake.failNext({ afterExecution: true, route: 'POST /v1/payment_intents' });
  const err = await unavailable(payments.charge(input));
  assert.deepEqual(
    { outcome: err.details.outcome, keyReusable: err.details.keyReusable, reason: err.details.reason },
    { outcome: 'unknown', keyReusable: false, reason: 'provider_error' },
  );
  assert.match(err.details.requestId!, /^req_/);
  // Stripe replays the stored 500 to the same key: sending it again tells nothing new.
  const replayed = await unavailable(payments.charge(input));
  assert.equal(replayed.details.keyReusable, false);
  assert.equal(fake.requests.at(-1)!.replayed, true);

  const found = await payments.findCharge(input.orderId, { since: new Date(Date.now() - 1_000) });
  assert.equal(found?.status, 'succeeded');
  assert.equal(fake.chargesForOrder(input.orderId).length, 1);
});

test('after a 500 that did nothing, findCharge finds nothing and a new key charges once', async (t) => {
  const { fake, payments } = await setup(t, { searchLagMs: 0 });
  const input = charge();
  fake.failNext({ route: 'POST /v1/payment_intents' });
  await unavailable(payments.charge(input));
  assert.equal(await payments.findCharge(input.orderId, { since: new Date() }), undefined);
  const retried = await payments.charge({ ...input, idempotencyKey: `pay:${input.orderId}:2` });
  assert.equal(retried.status, 'succeeded');
  assert.equal(fake.chargesForOrder(input.orderId).length, 1);
});

test('findCharge does not answer "none" while Stripe’s search may still hide a recent attempt', async (t) => {
  const { fake, payments } = await setup(t, { searchLagMs: 60_000 });
  const input = charge();
  fake.setSearchLag(60_000);
  fake.failNext({ afterExecution: true, route: 'POST /v1/payment_intents' });
  const since = new Date();
  await unavailable(payments.charge(input));
  const lag = await unavailable(payments.findCharge(input.orderId, { since }));
  assert.deepEqual(
    { outcome: lag.details.outcome, keyReusable: lag.details.keyReusable, reason: lag.details.reason, retryAfterSeconds: lag.details.retryAfterSeconds },
    { outcome: 'unknown', keyReusable: false, reason: 'search_lag', retryAfterSeconds: 60 },
  );
  fake.setSearchLag(0); // the index caught up
  assert.equal((await payments.findCharge(input.orderId, { since }))?.status, 'succeeded');
});

test('findCharge prefers a succeeded PaymentIntent, else the latest declined one, else none', async (t) => {
  const { payments } = await setup(t);
  const input = charge({ paymentMethod: 'pm_card_chargeDeclined' });
  assert.equal(await payments.findCharge(input.orderId), undefined);
  await payments.charge(input);
  const declined = await payments.findCharge(input.orderId);
  assert.deepEqual(declined?.status === 'declined' && [declined.code, declined.declineCode], ['card_declined', 'generic_decline']);
  const paid = await payments.charge({ ...input, paymentMethod: 'pm_card_visa', idempotencyKey: `pay:${input.orderId}:2` });
  await payments.charge({ ...input, paymentMethod: 'pm_card_chargeDeclined', idempotencyKey: `pay:${input.orderId}:3` });
  assert.deepEqual(await payments.findCharge(input.orderId), paid);
});

test('a request with the key still in flight is 409: not attempted, send the same key later', async (t) => {
  const { fake, payments } = await setup(t);
  const input = charge();
  const held = fake.holdNext({ route: 'POST /v1/payment_intents' });
  const first = payments.charge(input);
  await held.arrived;
  const err = await unavailable(payments.charge(input));
  assert.deepEqual(
    { outcome: err.details.outcome, keyReusable: err.details.keyReusable, reason: err.details.reason },
    { outcome: 'not_attempted', keyReusable: true, reason: 'in_flight' },
  );
  held.release();
  assert.equal((await first).status, 'succeeded');
  assert.equal(fake.executions(input.idempotencyKey), 1);
});

test('a 429 is not attempted: nothing is stored under the key, which then succeeds', async (t) => {
  const { fake, payments } = await setup(t);
  const input = charge();
  fake.rateLimitNext();
  const err = await unavailable(payments.charge(input));
  assert.deepEqual(
    { outcome: err.details.outcome, keyReusable: err.details.keyReusable, reason: err.details.reason },
    { outcome: 'not_attempted', keyReusable: true, reason: 'rate_limited' },
  );
  assert.equal(fake.executions(input.idempotencyKey), 0);
  assert.equal((await payments.charge(input)).status, 'succeeded');
});

test('a dropped answer is retried once by the SDK with the same key (one charge); two drops are an unknown outcome', async (t) => {
  const { fake, payments } = await setup(t);
  const input = charge();
  fake.dropNext({ route: 'POST /v1/payment_intents' });
  assert.equal((await payments.charge(input)).status, 'succeeded');
  assert.equal(fake.executions(input.idempotencyKey), 1);
  assert.deepEqual(
    fake.requests.filter((r) => r.idempotencyKey === input.idempotencyKey).map((r) => [r.status, r.replayed]),
    [
      [-1, false],
      [200, true],
    ],
  );

  const lost = charge();
  fake.dropNext({ route: 'POST /v1/payment_intents', afterExecution: false, times: 2 });
  const err = await unavailable(payments.charge(lost));
  assert.deepEqual([err.details.outcome, err.details.keyReusable, err.details.reason], ['unknown', true, 'connection_lost']);
});

test('a refused connection is not attempted, and a wrong key names STRIPE_SECRET_KEY without showing it', async (t) => {
  const closed = createServer();
  closed.listen(0, '127.0.0.1');
  await once(closed, 'listening');
  const { port } = closed.address() as AddressInfo;
  await new Promise((resolve) => closed.close(resolve));
  const { payments } = await setup(t, { apiUrl: `http://127.0.0.1:${port}` });
  const refused = await unavailable(payments.charge(charge()));
  assert.deepEqual([refused.details.outcome, refused.details.reason], ['not_attempted', 'connection_refused']);

  const { payments: wrongKey } = await setup(t, { secretKey: 'sk_test_not_the_right_key_at_all_1234' });
  const auth = await unavailable(wrongKey.charge(charge()));
  assert.deepEqual([auth.details.outcome, auth.details.reason], ['not_attempted', 'auth']);
  assert.match(auth.message, /STRIPE_SECRET_KEY/);
  assert.ok(!auth.message.includes('sk_test_not_the_right_key_at_all_1234'));
});

test('refunds: partial, replayed under the same key, then refused when more than is left', async (t) => {
  const { fake, payments } = await setup(t);
  const paid = await payments.charge(charge());
  assert.ok(paid.status === 'succeeded');
  const first = await payments.refund({ paymentReference: paid.reference, amount: 1000, idempotencyKey: 'refund:1', reason: 'requested_by_customer' });
  assert.equal(first.status, 'succeeded');
  assert.deepEqual(
    await payments.refund({ paymentReference: paid.reference, amount: 1000, idempotencyKey: 'refund:1', reason: 'requested_by_customer' }),
    first,
  );
  assert.equal(fake.refunds().length, 1);
  assert.deepEqual(fake.refunds()[0]!.metadata, { reason: 'requested_by_customer' });

  const tooMuch = await payments.refund({ paymentReference: paid.reference, amount: 4000, idempotencyKey: 'refund:2' });
  assert.deepEqual(tooMuch.status === 'failed' && tooMuch.code, 'amount_too_large');
  const rest = await payments.refund({ paymentReference: paid.reference, amount: 3950, idempotencyKey: 'refund:3', reason: 'goodwill' });
  assert.deepEqual(rest.status === 'succeeded' && rest.amount, 3950);
  const again = await payments.refund({ paymentReference: paid.reference, amount: 1, idempotencyKey: 'refund:4' });
  assert.deepEqual(again.status === 'failed' && again.code, 'charge_already_refunded');
});

test('the breaker opens on provider failures, refuses at once without reaching Stripe, then half-opens and closes', async (t) => {
  const { fake, payments, logs } = await setup(t, { breaker: { volumeThreshold: 2, resetTimeoutMs: 1_000 } });
  fake.failNext({ route: 'POST /v1/payment_intents', times: 2 });
  await unavailable(payments.charge(charge()));
  assert.equal(payments.breaker.state, 'closed', 'one failure is under the volume threshold');
  await unavailable(payments.charge(charge()));
  assert.equal(payments.breaker.state, 'open');

  const seen = fake.requests.length;
  const started = Date.now();
  const refused = await unavailable(payments.charge(charge()));
  assert.deepEqual(
    { outcome: refused.details.outcome, keyReusable: refused.details.keyReusable, reason: refused.details.reason },
    { outcome: 'not_attempted', keyReusable: true, reason: 'circuit_open' },
  );
  await unavailable(payments.findCharge('ord_any'));
  assert.equal(fake.requests.length, seen, 'nothing reached Stripe while open');
  assert.ok(Date.now() - started < 500, 'refused at once');

  await once(payments.breaker.circuit, 'halfOpen');
  assert.equal(payments.breaker.state, 'half-open');
  const closed = once(payments.breaker.circuit, 'close');
  assert.equal((await payments.charge(charge())).status, 'succeeded');
  await closed;
  assert.equal(payments.breaker.state, 'closed');

  const changes = logs()
    .filter((l) => l.provider === 'stripe')
    .map((l) => [l.level, l.msg as string]);
  assert.deepEqual(
    changes.map(([level, msg]) => [level, /open:|half-open|closed/.exec(msg)?.[0]]),
    [
      ['warn', 'open:'],
      ['info', 'half-open'],
      ['info', 'closed'],
    ],
  );
});

test('a stored 500 replayed for its key says so and does not move the breaker (Stripe answering from its store is Stripe up)', async (t) => {
  const { fake, payments } = await setup(t, { breaker: { volumeThreshold: 2 } });
  const input = charge();
  fake.failNext({ route: 'POST /v1/payment_intents' });
  const first = await unavailable(payments.charge(input));
  assert.deepEqual([first.details.reason, first.details.keyReusable, first.details.replayed], ['provider_error', false, undefined]);
  for (let i = 0; i < 4; i++) {
    const replay = await unavailable(payments.charge(input));
    assert.deepEqual([replay.details.reason, replay.details.keyReusable, replay.details.replayed], ['provider_error', false, true]);
    assert.match(replay.message, /replayed for this key/);
  }
  assert.equal(payments.breaker.state, 'closed', 'one failure now, four old answers');
  assert.equal(fake.paymentIntents().length, 0);
});

test('declines and malformed requests do not open the breaker', async (t) => {
  const { payments } = await setup(t, { breaker: { volumeThreshold: 2 } });
  for (let i = 0; i < 4; i++) assert.equal((await payments.charge(charge({ paymentMethod: 'pm_card_chargeDeclined' }))).status, 'declined');
  await rejection(payments.charge(charge({ idempotencyKey: 'k'.repeat(300) })));
  assert.equal(payments.breaker.state, 'closed');
});

test('a call still running at the breaker timeout is an unknown outcome whose key may be sent again', async (t) => {
  const { fake, payments } = await setup(t, { breaker: { timeoutMs: 1_000 }, timeoutMs: 4_000 });
  const input = charge();
  fake.delayNext({ ms: 10_000, route: 'POST /v1/payment_intents' });
  const slow = await unavailable(payments.charge(input));
  assert.deepEqual([slow.details.outcome, slow.details.keyReusable, slow.details.reason], ['unknown', true, 'timeout']);
  assert.match(slow.message, /did not answer within 1000 ms/);
  assert.equal((await payments.charge(input)).status, 'succeeded');
  assert.equal(fake.chargesForOrder(input.orderId).length, 1);
});
