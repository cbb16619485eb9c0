import type { EventMessage } from '../../domain/events/events.js';
import { transition } from '../../domain/orders/order-state.js';
import type { OrderStatus } from '../../domain/orders/order.entity.js';
import { PaymentUnavailable, type ChargeInput, type ChargeOutcome, type PaymentProvider } from '../../domain/payments/payment-provider.js';
import {
  backToPending,
  markSent,
  markUnknown,
  outcomeUpdate,
  prepareForPayment,
  startAttempt,
  takeForPayment,
  takenForPayment,
  type OrderToPay,
  type PaymentAttempt,
} from '../../domain/payments/payments.js';
import { versions } from '../../domain/shared/cache.js';
import { DomainError } from '../../domain/shared/errors.js';
import type { Ctx } from '../../domain/shared/context.js';
import type { Params } from '../../domain/shared/sql.js';
import { CommitAndWait, defineConsumer, firstRows, ProviderUnavailable, type ConsumerDefinition, type FirstRows } from '../consumer.js';

/** Attempts with a new key (each after a stored failure that made no payment) before the message waits for its retry. */
export const MAX_PAYMENT_ATTEMPTS = 5;
// Keys one run may walk through in all, replayed stored failures included: a guard, never reached
// in practice (a run that gave up leaves at most MAX_PAYMENT_ATTEMPTS such keys behind).
const MAX_KEYS_PER_RUN = 10 * MAX_PAYMENT_ATTEMPTS;

// Keys remembered by one process (their first send time); the oldest forgotten first.
const FIRST_SENT_LIMIT = 10_000;

// The statuses the payments consumer takes an order from (to processing, then to its outcome).
const PAYABLE: OrderStatus[] = ['pending', 'processing'];

/** The consumer's name: its queues' and `svc worker --queues`'. */
export const PAYMENTS_CONSUMER = 'payments';

/**
 * The payments consumer: on `order.created`, charges the order's payment method for its total and
 * completes or fails the order.
 *
 * First, committed on its own (`prepare`): a pending order moved to `processing` with attempt 1
 * and its key (prepareForPayment), so that a process killed with the charge at the provider leaves
 * an order no cancellation can take (409) rather than a pending one; and, the key committed, the
 * charge itself, sent with no transaction open, bounded by the provider's circuit breaker (5 s). Then
 * the inbox transaction the runner hands over (the order row locked first), which decides on that
 * answer (a call it makes itself only for a later key, after a stored failure, or when the order
 * changed meanwhile). When the provider surely did nothing with the key (circuit open,
 * unreachable, rate limiting, a refused key) the order goes back to `pending` in that transaction
 * (CommitAndWait), cancellable while the message waits.
 *
 * "The key is stored before the call": attempt 1's row was committed before the call; a later
 * attempt's row (`pay:<orderId>:<attempt>`, `pending`) is written in this transaction before its call.
 * If the transaction rolls back (an error, a crash), such a row goes with it (the order stays
 * `processing`), and the redelivered message derives the SAME key again: the attempt number
 * is 1 + the attempts decided `unknown` (a key that holds a stored failure), and those are decided
 * within one run (see below). Reusing a key whose request may or may not have reached the provider
 * is exactly the idempotency rule: the provider replays what it did, or does it now.
 *
 * Outcomes: succeeded → the attempt `succeeded`, the order `completed`; declined → the attempt
 * `declined`, the order `failed` with the provider's code as reason (`authentication_required`
 * for 3-D Secure off-session), its stock back. Unavailable with a reusable key (circuit open,
 * connection refused, rate limited, a refused API key) → the order back to `pending` and a
 * CommitAndWait with a ProviderUnavailable (thrown instead when keys of this run were marked, see
 * below): the runner defers the message (it waits as long as the outage lasts, not counted as a
 * failed attempt) and retries with the same key. When that unavailable call may have charged (a timeout, a lost
 * connection, a 5xx Stripe says to retry, 409 in flight), or a stored failure's search cannot say
 * yet whether it did (see below), the run returns CommitAndWait instead: the order stays
 * `processing` with the attempt rows and their keys committed (no cancellation can put its stock
 * back while the money may be at Stripe), and the message waits all the same. Unavailable with a key that holds a stored failure (Stripe's 500) → `findCharge` first: a
 * payment found decides the order; none → the attempt is marked `unknown` and the next key is
 * tried at once, in the same run (throwing would roll the mark back and loop on the dead key).
 * After MAX_PAYMENT_ATTEMPTS new stored failures (or the circuit opening meanwhile) the run throws
 * and its marks roll back: the next run meets those keys again, each replaying its failure
 * (`replayed`), and walks past them, searching again for each, to the first unused key.
 * Never two successful charges: a new key is only used after a search found no payment.
 *
 * The search's `since` must not be earlier than the key's first use (a provider whose search lags,
 * as Stripe's does, only answers "none" once that attempt is old enough to be visible). The
 * attempt row's time is such a bound, but a rolled-back row is re-written later on each retry; so
 * the consumer also remembers when this process first sent each key and uses the earlier of the
 * two (both are at or after the key's first use anywhere). After a restart the wait starts again:
 * slower, never unsafe.
 */
export function paymentsConsumer(deps: { payments: PaymentProvider }): ConsumerDefinition {
  const { payments } = deps;
  // When this process first sent each key: the `since` of findCharge after a stored failure (see
  // sinceOf). An attempt row that rolled back is re-written with a later time on the next run, so
  // the row alone would keep the search "too recent" forever on a provider whose search lags.
  const firstSent = new Map<string, Date>();
  const sinceOf = (attempt: PaymentAttempt): Date => {
    const sent = firstSent.get(attempt.idempotencyKey);
    return sent && sent < attempt.createdAt ? sent : attempt.createdAt;
  };
  const sending = (key: string) => {
    if (firstSent.has(key)) return;
    if (firstSent.size >= FIRST_SENT_LIMIT) firstSent.delete(firstSent.keys().next().value!);
    firstSent.set(key, new Date());
  };
  const consumer: ConsumerDefinition = defineConsumer({
    name: PAYMENTS_CONSUMER,
    events: ['order.created'],
    emits: ['order.completed', 'order.failed'],
    // In the inbox insert's round trip: the order locked and moved to processing (from pending, or
    // still processing after a rolled-back run), its attempts read, and attempt 1 written with its key
    // when it has none; no row when it is gone, cancelled or already decided (nothing to do), or
    // when the message is a duplicate.
    first: (message) => takeForPayment({ orderId: message.aggregateId, statuses: PAYABLE, provider: payments.name }),
    // Before the transaction, committed on its own: the order processing with its key (see
    // prepareForPayment); then that key's charge, sent with no transaction open (see SentCharge).
    async prepare(ctx: Ctx, message: EventMessage): Promise<SentCharge | undefined> {
      const prepared = await prepareForPayment(ctx.sql, {
        orderId: message.aggregateId,
        provider: payments.name,
        inbox: { consumer: PAYMENTS_CONSUMER, messageId: message.id },
      });
      if (prepared.moved) await ctx.changed(versions.order(message.aggregateId));
      if (!prepared.charge) return undefined;
      const input = prepared.charge;
      sending(input.idempotencyKey);
      const sentBefore = prepared.sentBefore === true;
      try {
        return { input, sentBefore, outcome: await payments.charge(input) };
      } catch (error) {
        return { input, sentBefore, error };
      }
    },
    async handle(tx: Ctx, message: EventMessage, first?: FirstRows, prepared?: unknown): Promise<void | CommitAndWait> {
      try {
        return await pay(tx, message, first, prepared as SentCharge | undefined);
      } catch (err) {
        throw waitingForProvider(err);
      }
    },
  });
  return consumer;

  async function pay(tx: Ctx, message: EventMessage, first: FirstRows | undefined, sent: SentCharge | undefined): Promise<void | CommitAndWait> {
    const orderId = message.aggregateId;
    // The charge prepare sent answers the first call of this run if it is the same request (it is,
    // unless the order changed in between); any other call goes to the provider now, its key marked
    // sent in this transaction first. `sentBefore`: whether the call's key had been sent before it.
    let sentBefore = false;
    const charge = async (tx: Ctx, attempt: PaymentAttempt, input: ChargeInput): Promise<ChargeOutcome> => {
      const answered = sent && sameCharge(sent.input, input) ? sent : undefined;
      sent = undefined;
      if (!answered) {
        sentBefore = await markSent(tx, attempt);
        return payments.charge(input);
      }
      sentBefore = answered.sentBefore;
      if ('error' in answered) throw answered.error;
      return answered.outcome;
    };
    const order = takenForPayment(await firstRows(tx, consumer, message, first));
    if (!order) return;
    await tx.changed(versions.order(orderId));
    const { attempts, paymentMethod } = order;
    const decided = attempts.find((a) => a.status === 'succeeded' || a.status === 'declined');
    if (decided) return settle(tx, order, orderId, fromAttempt(decided));
    // Nothing to pay (free products): completed without a charge, which no provider makes for 0
    // (Stripe refuses amounts below its minimum). The order has no payment.
    if (Number(order.total) === 0) return void (await transition(tx, orderId, 'completed'));
    if (!paymentMethod) {
      return void (await transition(tx, orderId, 'failed', { reason: 'payment_method_missing', message: 'the order has no payment method' }));
    }
    const input = { orderId, amount: order.total, currency: order.currency, provider: payments.name };
    const firstKey = attempts.filter((a) => a.status === 'unknown').length + 1;
    let n = firstKey;
    // Only new stored failures count towards giving up. A run that gave up rolled its `unknown`
    // marks back, so the next run meets those keys again, each replaying its stored failure: they
    // are walked past (the search still decides each one), or the order could never be paid
    // until the provider forgets the keys (Stripe: 24 h).
    let fresh = 0;
    for (const last = n + MAX_KEYS_PER_RUN; fresh < MAX_PAYMENT_ATTEMPTS && n < last; n++) {
      // Attempt 1 is there already (written by prepare, or by the first statement for an order that had none).
      const attempt = attempts.find((a) => a.attempt === n) ?? (await startAttempt(tx, { ...input, attempt: n }));
      let outcome: ChargeOutcome | undefined;
      sending(attempt.idempotencyKey);
      try {
        outcome = await charge(tx, attempt, {
          orderId,
          amount: order.total,
          currency: order.currency,
          paymentMethod,
          idempotencyKey: attempt.idempotencyKey,
        });
      } catch (err) {
        if (refusedRequest(err) && n === firstKey) {
          // The provider refused the request itself (a malformed one: a bug, not the customer's card),
          // so nothing was charged: the order is pending again, cancellable, while the message goes
          // to the dead-letter queue for an operator (a refusal is permanent; a retry cannot help).
          await backToPending(tx, orderId, attempt.id);
          return new CommitAndWait(err);
        }
        if (!(err instanceof PaymentUnavailable)) throw err;
        if (err.details.keyReusable) {
          // The charge may have happened (a timeout, a lost answer, a 5xx worth retrying, or an earlier
          // request with this key still running): the order stays processing and the attempt keeps its
          // key, committed, so the order cannot be cancelled (its stock put back) while the customer's
          // money may be at Stripe; the message waits and sends the same key again.
          if (err.details.outcome === 'unknown' || err.details.reason === 'in_flight') return new CommitAndWait(waitingForProvider(err));
          // Nothing charged by this call (the circuit open, Stripe unreachable or rate limiting, a
          // refused key) and no key of this run marked: the order is pending again while the message
          // waits, so its customer may still cancel it. (Later in a run, the throw rolls the marks
          // back, as below.) Unless the key had been sent before: an earlier call (whose answer was
          // lost, or whose process died) may have charged, so the order stays processing, as above.
          if (n !== firstKey) throw err;
          if (sentBefore) return new CommitAndWait(waitingForProvider(err));
          await backToPending(tx, orderId, attempt.id);
          return new CommitAndWait(waitingForProvider(err));
        }
        // The key holds a stored failure: did the payment happen? Until the search can say (it lags
        // behind, the payment is still processing, Stripe is away), it is in doubt as above.
        try {
          outcome = await payments.findCharge(orderId, { since: sinceOf(attempt), amount: Number(order.total), currency: order.currency });
        } catch (searchErr) {
          if (searchErr instanceof PaymentUnavailable) return new CommitAndWait(waitingForProvider(searchErr));
          throw searchErr;
        }
        if (!outcome) {
          await markUnknown(tx, attempt.id, err.message);
          if (!err.details.replayed) fresh++;
          continue;
        }
      }
      firstSent.delete(attempt.idempotencyKey);
      // The attempt's outcome recorded in the statement that moves the order (one round trip).
      return settle(tx, order, orderId, outcome, attempt.id);
    }
    throw new Error(`order ${orderId}: ${fresh} payment attempts in a row ended in a stored provider failure; retrying later`);
  }
}

/**
 * A charge the payments consumer sent in `prepare`, with no transaction open, and how the provider
 * answered (its outcome, or the error the call rejected with): handed to the transaction, which
 * decides on it exactly as on a call made inside it (the same catch, the same CommitAndWait), so
 * no database connection, transaction or order lock is held for the provider's round trip, which
 * may last the breaker's whole timeout while Stripe is slow. Its key was committed before the call
 * (prepareForPayment), so a crash after it leaves what it always left: the order `processing` with
 * that key, which the redelivery sends again and Stripe replays.
 */
type SentCharge = { input: ChargeInput; sentBefore: boolean } & ({ outcome: ChargeOutcome } | { error: unknown });

const sameCharge = (a: ChargeInput, b: ChargeInput): boolean =>
  a.orderId === b.orderId &&
  a.idempotencyKey === b.idempotencyKey &&
  Number(a.amount) === Number(b.amount) &&
  a.currency === b.currency &&
  a.paymentMethod === b.paymentMethod;

/**
 * The provider refused the charge request as invalid, surely without charging: not a refusal of its
 * idempotency key (a key reused with other parameters may hold an earlier request that did charge).
 */
function refusedRequest(err: unknown): err is DomainError {
  return err instanceof DomainError && err.code === 'invalid' && err.details.keyConflict !== true;
}

/**
 * A provider failure that only waiting can fix, with nothing stored against the key (the circuit
 * open, the provider unreachable, rate limiting, a timeout, a request still in flight, a refused
 * API key): the message is deferred, retried with the same key as long as the outage lasts, never
 * counted towards the dead-letter queue. Anything else as it is.
 */
function waitingForProvider(err: unknown): unknown {
  if (!(err instanceof PaymentUnavailable) || !err.details.keyReusable) return err;
  const retryAfter = err.details.retryAfterSeconds;
  return new ProviderUnavailable(err.details.provider, err.message, {
    cause: err,
    ...(retryAfter === undefined ? {} : { retryAfterMs: retryAfter * 1_000 }),
  });
}

/**
 * Completes or fails the order by the outcome; with `paymentId`, records the outcome on that attempt in the same statement.
 * A paid order whose total the webhooks recorded as refunded meanwhile (an operator refunded the charge in Stripe while
 * its outcome was in doubt) moves on to `refunded`, as the webhook's own success would have moved it.
 */
async function settle(tx: Ctx, order: OrderToPay, orderId: string, outcome: ChargeOutcome, paymentId?: string): Promise<void> {
  const alongside = paymentId === undefined ? {} : { alongside: (p: Params) => outcomeUpdate(p, paymentId, outcome) };
  if (paymentId !== undefined) await tx.changed(versions.order(orderId));
  if (outcome.status === 'succeeded') {
    await transition(tx, orderId, 'completed', alongside);
    if (Number(order.total) > 0 && order.refundedAmount >= Number(order.total)) await transition(tx, orderId, 'refunded');
  } else await transition(tx, orderId, 'failed', { reason: outcome.code, message: outcome.reason, ...alongside });
}

function fromAttempt(a: PaymentAttempt): ChargeOutcome {
  if (a.status === 'succeeded') return { status: 'succeeded', reference: a.providerReference ?? '', amount: a.amount, currency: a.currency };
  return { status: 'declined', code: a.failureCode ?? 'declined', reason: a.failureReason ?? 'declined' };
}
