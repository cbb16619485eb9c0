import type { Ctx } from '../shared/context.js';
import { newId } from '../shared/ids.js';
import { audit } from '../audit/audit.js';
import { transition } from '../orders/order-state.js';
import type { OrderStatus } from '../orders/order.entity.js';
import { paymentKey } from './payments.js';
import { versions } from '../shared/cache.js';

/** A Stripe event as its webhook delivers it: only the fields svc reads (the adapter verified its signature). */
export interface StripeEvent {
  /** `evt_…`: the key deliveries are de-duplicated by. */
  id: string;
  type: string;
  /** When Stripe created the event, in seconds since the epoch. */
  created: number;
  data: { object: Record<string, unknown> };
  /** The API request that caused the event, when one did (its idempotency key: `pay:<orderId>:<attempt>` for svc's charges). */
  request?: { id?: string | null; idempotency_key?: string | null } | null;
}

/** The port that turns a webhook delivery into a verified event (Stripe's SDK in production). */
export interface WebhookVerifier {
  /**
   * Checks the `Stripe-Signature` header against the raw body (and its timestamp against the
   * tolerance) and returns the event; rejects with a DomainError `invalid` saying what is wrong.
   */
  verify(payload: Buffer, signature: string): Promise<StripeEvent>;
}

/**
 * What an event did: `applied` (it changed the order or its payment, refunds or disputes),
 * `unchanged` (already so, or a late event the order's state machine refuses), `ignored` (a type
 * svc does not act on), `unknown_order` (no order of svc's: acknowledged so Stripe stops retrying),
 * `duplicate` (a redelivery of an event already received).
 */
export type WebhookOutcome = 'applied' | 'unchanged' | 'ignored' | 'unknown_order' | 'duplicate';

export interface WebhookResult {
  outcome: WebhookOutcome;
  orderId?: string;
  /** Why, when the outcome needs explaining (for the log). */
  note?: string;
}

/** The event types svc acts on; any other is recorded and acknowledged. */
export const HANDLED_STRIPE_EVENTS = [
  'payment_intent.succeeded',
  'payment_intent.payment_failed',
  'charge.refunded',
  'charge.dispute.created',
  'charge.dispute.updated',
  'charge.dispute.closed',
] as const;

interface LockedOrder {
  id: string;
  status: OrderStatus;
  total: number;
  currency: string;
  refunded_amount: number;
}

interface PaymentRef {
  id: string;
  status: string;
}

// Narrow readers of Stripe's JSON: a field of another type reads as absent.
const str = (v: unknown): string | undefined => (typeof v === 'string' && v.length > 0 ? v : undefined);
const int = (v: unknown): number | undefined => (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : undefined);
const obj = (v: unknown): Record<string, unknown> => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {});
// A related object is an id, or the object itself when Stripe expanded it.
const idOf = (v: unknown): string | undefined => str(v) ?? str(obj(v).id);

/**
 * Receives one verified Stripe event: records its id and applies it, in ONE transaction. A repeated
 * event (its id already recorded) changes nothing; an event whose processing throws records nothing
 * either, so the caller answers 5xx and Stripe's retry applies it. Effects go through the order's
 * state machine and are monotonic (a refunded amount never goes down, a succeeded payment is never
 * un-succeeded, a dispute's status only moves to a newer event's), so any delivery order of the same
 * events ends in the same state.
 */
export async function receiveStripeEvent(ctx: Ctx, event: StripeEvent): Promise<WebhookResult> {
  return ctx.transaction(async (tx) => {
    const now = new Date();
    // First, so a concurrent delivery of the same event waits here for this one to commit, then finds it.
    const [fresh] = await tx.sql<{ id: string }>(
      'insert into stripe_events (id, type, created_at, received_at) values ($1, $2, $3, $4) on conflict (id) do nothing returning id',
      [event.id, event.type.slice(0, 100), new Date(event.created * 1000), now],
    );
    if (!fresh) return { outcome: 'duplicate' as const };
    const result = await apply(tx, event);
    await tx.sql('update stripe_events set order_id = $2, outcome = $3, processed_at = $4 where id = $1', [
      event.id,
      result.orderId ?? null,
      result.outcome,
      new Date(),
    ]);
    return result;
  });
}

function apply(tx: Ctx, event: StripeEvent): Promise<WebhookResult> {
  const object = obj(event.data?.object);
  switch (event.type) {
    case 'payment_intent.succeeded':
      return paymentSucceeded(tx, event, object);
    case 'payment_intent.payment_failed':
      return paymentFailed(tx, event, object);
    case 'charge.refunded':
      return chargeRefunded(tx, object);
    case 'charge.dispute.created':
    case 'charge.dispute.updated':
    case 'charge.dispute.closed':
      return disputeChanged(tx, event, object);
    default:
      return Promise.resolve({ outcome: 'ignored', note: `svc does not act on ${event.type}` });
  }
}

/**
 * The order a Stripe object is about, locked: by its `metadata.order_id` (svc's PaymentIntents carry
 * it, and their charges inherit it), else through the payment recorded for its PaymentIntent.
 */
async function lockOrder(tx: Ctx, metadataOrderId: string | undefined, paymentIntentId: string | undefined): Promise<LockedOrder | undefined> {
  let orderId = metadataOrderId;
  if (!orderId && paymentIntentId) {
    const [payment] = await tx.sql<{ order_id: string }>('select order_id from payments where provider_reference = $1 limit 1', [paymentIntentId]);
    orderId = payment?.order_id;
  }
  if (!orderId) return undefined;
  const [order] = await tx.sql<LockedOrder>('select id, status, total, currency, refunded_amount from orders where id = $1 for update', [orderId]);
  // Whatever the event changes (payment, refunds, dispute, status) shows in the order's cached read.
  if (order) await tx.changed(versions.order(order.id));
  return order;
}

const unknownOrder = (what: string): WebhookResult => ({ outcome: 'unknown_order', note: `no order of svc's for ${what}` });

/**
 * The payment row of a PaymentIntent: the one that has its id; else the attempt whose idempotency key
 * made it (the worker's row, when its transaction rolled back after Stripe charged, is not there: then
 * a new row takes that attempt's key, the one the worker would have written); else a new attempt.
 * Never a second row for a PaymentIntent the worker already recorded.
 */
async function paymentRowOf(
  tx: Ctx,
  order: LockedOrder,
  intent: { id: string; amount: number; currency: string },
  idempotencyKey: string | undefined,
): Promise<PaymentRef> {
  const [byReference] = await tx.sql<PaymentRef>('select id, status from payments where provider_reference = $1 and order_id = $2 limit 1 for update', [
    intent.id,
    order.id,
  ]);
  if (byReference) return byReference;
  const keyed = idempotencyKey?.startsWith(`pay:${order.id}:`) ? idempotencyKey : undefined;
  if (keyed) {
    const [byKey] = await tx.sql<PaymentRef>('select id, status from payments where idempotency_key = $1 for update', [keyed]);
    if (byKey) return byKey;
  }
  const attemptOfKey = keyed ? Number(keyed.slice(`pay:${order.id}:`.length)) : NaN;
  const [last] = await tx.sql<{ attempt: number | null }>('select max(attempt) as attempt from payments where order_id = $1', [order.id]);
  const attempt = Number.isSafeInteger(attemptOfKey) && attemptOfKey > 0 ? attemptOfKey : (last?.attempt ?? 0) + 1;
  const now = new Date();
  const [row] = await tx.sql<PaymentRef>(
    `insert into payments (id, order_id, attempt, idempotency_key, status, amount, currency, provider, provider_reference, created_at, updated_at)
     values ($1, $2, $3, $4, 'pending', $5, $6, 'stripe', $7, $8, $8) returning id, status`,
    [newId('pay'), order.id, attempt, paymentKey(order.id, attempt), intent.amount, intent.currency, intent.id, now],
  );
  return row!;
}

/** Whether a PaymentIntent is for the order's total in its currency, as every charge svc makes for it is. */
const paysFor = (intent: { amount: number; currency: string }, order: LockedOrder): boolean =>
  intent.amount === Number(order.total) && intent.currency === order.currency;

function intentOf(object: Record<string, unknown>) {
  const id = str(object.id);
  const amount = int(object.amount_received) || int(object.amount);
  const currency = str(object.currency)?.toUpperCase();
  if (!id || amount === undefined || !currency) return undefined;
  return { id, amount, currency, orderId: str(obj(object.metadata).order_id) };
}

/**
 * `payment_intent.succeeded`: the payment is recorded as succeeded, and a pending or processing order
 * completed (announced by `order.completed`, as the worker's charge does). A refund that arrived
 * before it is then applied. An order that is already failed or cancelled stays so (its stock went
 * back): the payment is recorded and audited, for an operator to refund.
 */
async function paymentSucceeded(tx: Ctx, event: StripeEvent, object: Record<string, unknown>): Promise<WebhookResult> {
  const intent = intentOf(object);
  if (!intent) return { outcome: 'ignored', note: 'the PaymentIntent has no id, amount or currency' };
  const order = await lockOrder(tx, intent.orderId, intent.id);
  if (!order) return unknownOrder(`PaymentIntent ${intent.id}`);
  if (!paysFor(intent, order)) {
    // Not svc's charge for this order (svc charges the order's total in its currency): made outside svc
    // (a payment created in Stripe's dashboard with the order's id), it neither pays the order nor
    // becomes its payment (the worker would then complete the order with it); money was taken, so an
    // operator is told to look.
    await audit(tx, 'order.payment_mismatch', order.id, {
      status: order.status,
      paymentIntent: intent.id,
      amount: intent.amount,
      currency: intent.currency,
      orderTotal: order.total,
      orderCurrency: order.currency,
      note: "Stripe took a payment that names this order but not its total and currency; the order's own payment is still due: check it, refund it",
    });
    return {
      outcome: 'applied',
      orderId: order.id,
      note: `${intent.id} took ${intent.amount} ${intent.currency}, not the order's ${order.total} ${order.currency}: not its payment; refund it`,
    };
  }
  const payment = await paymentRowOf(tx, order, intent, str(event.request?.idempotency_key));
  let changed = false;
  if (payment.status !== 'succeeded') {
    await tx.sql(
      `update payments set status = 'succeeded', provider_reference = $2, amount = $3, failure_code = null, failure_reason = null, updated_at = $4 where id = $1`,
      [payment.id, intent.id, intent.amount, new Date()],
    );
    changed = true;
  }
  if (order.status === 'pending') await transition(tx, order.id, 'processing');
  if (order.status === 'pending' || order.status === 'processing') {
    changed = (await transition(tx, order.id, 'completed')).moved || changed;
    await refundIfAllRefunded(tx, order);
  } else if (order.status !== 'completed' && order.status !== 'refunded' && changed) {
    await audit(tx, 'order.paid_after_close', order.id, {
      status: order.status,
      paymentIntent: intent.id,
      amount: intent.amount,
      currency: intent.currency,
      note: 'Stripe took a payment for an order that is no longer open; refund it',
    });
    return { outcome: 'applied', orderId: order.id, note: `the order is ${order.status} but Stripe says ${intent.id} succeeded: refund it` };
  }
  return { outcome: changed ? 'applied' : 'unchanged', orderId: order.id };
}

/**
 * `payment_intent.payment_failed`: the attempt is recorded as declined (unless that PaymentIntent
 * already succeeded), and a pending or processing order fails with the provider's code as its reason
 * (its stock back, `order.failed` announced). A completed order stays completed: a late failure of
 * an attempt never un-pays a paid order.
 */
async function paymentFailed(tx: Ctx, event: StripeEvent, object: Record<string, unknown>): Promise<WebhookResult> {
  const intent = intentOf({ ...object, amount_received: undefined });
  if (!intent) return { outcome: 'ignored', note: 'the PaymentIntent has no id, amount or currency' };
  const order = await lockOrder(tx, intent.orderId, intent.id);
  if (!order) return unknownOrder(`PaymentIntent ${intent.id}`);
  // Not svc's charge for this order (see paymentSucceeded): its failure does not fail the order.
  if (!paysFor(intent, order)) {
    return { outcome: 'ignored', orderId: order.id, note: `${intent.id} is for ${intent.amount} ${intent.currency}, not the order's total: not its payment` };
  }
  const error = obj(object.last_payment_error);
  const code = (str(error.code) ?? 'payment_failed').slice(0, 100);
  const message = (str(error.message) ?? 'the payment failed').slice(0, 1000);
  const payment = await paymentRowOf(tx, order, intent, str(event.request?.idempotency_key));
  let changed = false;
  if (payment.status !== 'succeeded' && payment.status !== 'declined') {
    await tx.sql(`update payments set status = 'declined', provider_reference = $2, failure_code = $3, failure_reason = $4, updated_at = $5 where id = $1`, [
      payment.id,
      intent.id,
      code,
      message,
      new Date(),
    ]);
    changed = true;
  }
  if (order.status === 'pending' || order.status === 'processing') {
    changed = (await transition(tx, order.id, 'failed', { reason: code, message })).moved || changed;
  }
  return { outcome: changed ? 'applied' : 'unchanged', orderId: order.id };
}

/**
 * `charge.refunded` (a refund made in Stripe's dashboard, or by svc): the order's refunded amount
 * becomes the charge's `amount_refunded`, never lower than it was (an older event delivered late
 * keeps the higher amount), and a completed order all refunded becomes `refunded`. No refund event is
 * announced: svc's own refunds will announce theirs when they are made, and this event also arrives
 * for those (Stripe sends it for every refund), so announcing here would announce them twice.
 */
async function chargeRefunded(tx: Ctx, object: Record<string, unknown>): Promise<WebhookResult> {
  const chargeId = str(object.id);
  const refunded = int(object.amount_refunded);
  if (!chargeId || refunded === undefined) return { outcome: 'ignored', note: 'the charge has no id or amount_refunded' };
  const order = await lockOrder(tx, str(obj(object.metadata).order_id), idOf(object.payment_intent));
  if (!order) return unknownOrder(`charge ${chargeId}`);
  // A refund of a charge that is not the order's payment (made outside svc, see paymentSucceeded) gives none of it back.
  const charged = { amount: int(object.amount) ?? -1, currency: str(object.currency)?.toUpperCase() ?? '' };
  if (!paysFor(charged, order)) {
    return {
      outcome: 'ignored',
      orderId: order.id,
      note: `charge ${chargeId} is for ${charged.amount} ${charged.currency}, not the order's total: not its payment`,
    };
  }
  // At most the order's total (a larger amount would be another charge's): the check constraint holds.
  const amount = Math.min(refunded, order.total);
  let changed = false;
  if (amount > order.refunded_amount) {
    await tx.sql('update orders set refunded_amount = $2, updated_at = $3 where id = $1', [order.id, amount, new Date()]);
    await audit(tx, 'order.refund_recorded', order.id, {
      charge: chargeId,
      refundedAmount: amount,
      previousRefundedAmount: order.refunded_amount,
      currency: order.currency,
      source: 'stripe',
    });
    changed = true;
  }
  changed = (await refundIfAllRefunded(tx, { ...order, refunded_amount: Math.max(amount, order.refunded_amount) })) || changed;
  return { outcome: changed ? 'applied' : 'unchanged', orderId: order.id };
}

/** Moves a completed order whose total is all refunded to `refunded`; says whether it moved. */
async function refundIfAllRefunded(tx: Ctx, order: Pick<LockedOrder, 'id' | 'total' | 'refunded_amount'>): Promise<boolean> {
  if (order.total <= 0 || order.refunded_amount < order.total) return false;
  return (await transition(tx, order.id, 'refunded')).moved;
}

/**
 * `charge.dispute.created` / `.updated` / `.closed`: the dispute is recorded on the order (inserted,
 * or its status moved when this event is newer than the one that set it) and audited.
 */
async function disputeChanged(tx: Ctx, event: StripeEvent, object: Record<string, unknown>): Promise<WebhookResult> {
  const id = str(object.id);
  const amount = int(object.amount);
  const currency = str(object.currency)?.toUpperCase();
  if (!id || amount === undefined || !currency) return { outcome: 'ignored', note: 'the dispute has no id, amount or currency' };
  const order = await lockOrder(tx, str(obj(object.metadata).order_id), idOf(object.payment_intent));
  if (!order) return unknownOrder(`dispute ${id}`);
  const reason = (str(object.reason) ?? 'general').slice(0, 100);
  const status = (str(object.status) ?? 'needs_response').slice(0, 50);
  const at = new Date(event.created * 1000);
  const now = new Date();
  // xmax = 0: the row was inserted by this statement (PostgreSQL's own marker), not updated.
  const [written] = await tx.sql<{ inserted: boolean }>(
    `insert into order_disputes (id, order_id, charge_id, amount, currency, reason, status, status_at, created_at, updated_at)
     values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
     on conflict (id) do update set amount = excluded.amount, reason = excluded.reason, status = excluded.status, status_at = excluded.status_at, updated_at = excluded.updated_at
     where order_disputes.status_at < excluded.status_at and (order_disputes.status, order_disputes.amount, order_disputes.reason) is distinct from (excluded.status, excluded.amount, excluded.reason)
     returning (xmax = 0) as inserted`,
    [id, order.id, idOf(object.charge) ?? null, amount, currency, reason, status, at, now],
  );
  if (!written) return { outcome: 'unchanged', orderId: order.id };
  // The first event recorded for a dispute (whichever type it is, when they arrive out of order) is its opening.
  await audit(tx, written.inserted ? 'order.disputed' : 'order.dispute_updated', order.id, {
    dispute: id,
    charge: idOf(object.charge) ?? null,
    reason,
    status,
    amount,
    currency,
  });
  return { outcome: 'applied', orderId: order.id };
}
