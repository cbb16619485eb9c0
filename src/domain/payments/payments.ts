import type { Ctx } from '../shared/context.js';
import { newId } from '../shared/ids.js';
import { versions } from '../shared/cache.js';
import { Params, type Sql } from '../shared/sql.js';
import type { ChargeInput, ChargeOutcome } from './payment-provider.js';
import type { PaymentStatus } from './payment.entity.js';

/** One payment attempt as the payments table holds it. */
export interface PaymentAttempt {
  id: string;
  orderId: string;
  attempt: number;
  idempotencyKey: string;
  status: PaymentStatus;
  amount: number;
  currency: string;
  provider: string;
  providerReference: string | null;
  failureCode: string | null;
  failureReason: string | null;
  /** When its key was first handed to the provider (committed before the call); null: never sent. */
  sentAt: Date | null;
  createdAt: Date;
}

interface PaymentRow {
  id: string;
  order_id: string;
  attempt: number;
  idempotency_key: string;
  status: PaymentStatus;
  amount: number;
  currency: string;
  provider: string;
  provider_reference: string | null;
  failure_code: string | null;
  failure_reason: string | null;
  sent_at: Date | null;
  created_at: Date;
}

const COLUMNS =
  'id, order_id, attempt, idempotency_key, status, amount, currency, provider, provider_reference, failure_code, failure_reason, sent_at, created_at';

const view = (r: PaymentRow): PaymentAttempt => ({
  id: r.id,
  orderId: r.order_id,
  attempt: r.attempt,
  idempotencyKey: r.idempotency_key,
  status: r.status,
  amount: r.amount,
  currency: r.currency,
  provider: r.provider,
  providerReference: r.provider_reference,
  failureCode: r.failure_code,
  failureReason: r.failure_reason,
  sentAt: r.sent_at,
  createdAt: r.created_at,
});

/**
 * The idempotency key of an order's n-th payment attempt: derived, never random, so a retry that
 * lost the stored row (its transaction rolled back) sends the same key again.
 */
export const paymentKey = (orderId: string, attempt: number) => `pay:${orderId}:${attempt}`;

/** An order taken for payment: what to charge and its payment attempts (oldest first; attempt 1 included when the statement wrote it). */
export interface OrderToPay {
  total: number;
  currency: string;
  paymentMethod: string | null;
  /** What Stripe's webhooks recorded as refunded already (a refund made while the payment was in doubt). */
  refundedAmount: number;
  attempts: PaymentAttempt[];
}

/** What prepareForPayment did and found: whether it moved the order, and the charge to send now, if any. */
export interface PreparedPayment {
  /** It moved the order from `pending` to `processing` (its cached reads are then stale). */
  moved: boolean;
  /**
   * The charge the consumer may send before its transaction: the order is `processing`, payable, not
   * decided, the message not processed yet, and the attempt the transaction would start with
   * (`pending`, numbered one past the attempts decided `unknown`) is committed with its key.
   */
  charge?: ChargeInput;
  /**
   * The charge's key had been handed to the provider before (its `sent_at` was set): a call refused
   * now without reaching the provider (its circuit open) cannot tell whether an earlier one charged.
   */
  sentBefore?: boolean;
}

/**
 * Commits a pending order's move to `processing` with its attempt 1 (`pending`, its key) before any
 * transaction of the payments consumer, in one statement of its own: from then on a cancellation is
 * refused (the order is no longer pending) even if the process dies with the charge at the provider
 * and its transaction rolled back, and the redelivered message finds the key to send again. Nothing
 * moves for an order that is not pending (paid, failed, cancelled, or processing since an earlier
 * delivery), has no payment method or nothing to pay (a total of 0, which the consumer completes
 * without a charge).
 *
 * The same statement says which charge can be sent before the consumer's transaction (see
 * PreparedPayment): its key is committed, here or by an earlier delivery, so sending it with no
 * transaction open keeps the rule that a key is stored before its call, and holds no connection nor
 * the order's lock for the provider's round trip. Nothing to send for a message the inbox already
 * has (`inbox`), an order decided or not payable, or an attempt whose row is not there yet (a new
 * key after a stored failure: the transaction writes it before its call, as before).
 */
export async function prepareForPayment(
  sql: Sql,
  input: { orderId: string; provider: string; inbox: { consumer: string; messageId: string } },
): Promise<PreparedPayment> {
  const now = new Date();
  const firstKey = paymentKey(input.orderId, 1);
  // The CTEs other than `o` and `a` read the statement's snapshot: the order as it was (pending when
  // `o` moves it), the attempts without the one `a` writes.
  const [row] = await sql<{
    moved: boolean;
    total: number | null;
    currency: string | null;
    payment_method: string | null;
    charge_key: string | null;
    sent_before: boolean;
  }>(
    `with o as (update orders set status = 'processing', updated_at = $2 where id = $1 and status = 'pending' and coalesce(payment_method, '') <> '' and total > 0
       returning total, currency, payment_method),
     p as (select attempt, idempotency_key, status, sent_at from payments where order_id = $1),
     c as (select total, currency, payment_method from o
       union all
       select total, currency, payment_method from orders where id = $1 and status = 'processing' and coalesce(payment_method, '') <> '' and total > 0),
     k as (select case
         when not exists (select 1 from c) then null
         when exists (select 1 from processed_messages where consumer = $6 and message_id = $7) then null
         when exists (select 1 from p where status in ('succeeded', 'declined')) then null
         when not exists (select 1 from p) then case when exists (select 1 from o) then $4 end
         else (select idempotency_key from p where status = 'pending' and attempt = (select count(*) from p where status = 'unknown') + 1)
       end as charge_key),
     a as (insert into payments (id, order_id, attempt, idempotency_key, status, amount, currency, provider, sent_at, created_at, updated_at)
       select $3, $1, 1, $4, 'pending', o.total, o.currency, $5, case when (select charge_key from k) = $4 then $2::timestamptz end, $2, $2 from o
       on conflict do nothing),
     s as (update payments set sent_at = coalesce(sent_at, $2) where order_id = $1 and idempotency_key = (select charge_key from k))
     select exists (select 1 from o) as moved, c.total, c.currency, c.payment_method, k.charge_key,
       exists (select 1 from p where p.idempotency_key = k.charge_key and p.sent_at is not null) as sent_before
     from k left join c on true`,
    [input.orderId, now, newId('pay'), firstKey, input.provider, input.inbox.consumer, input.inbox.messageId],
  );
  if (!row) return { moved: false };
  const charge =
    row.charge_key && row.total !== null && row.currency && row.payment_method
      ? { orderId: input.orderId, amount: Number(row.total), currency: row.currency, paymentMethod: row.payment_method, idempotencyKey: row.charge_key }
      : undefined;
  return { moved: row.moved, ...(charge ? { charge, sentBefore: row.sent_before } : {}) };
}

/**
 * Puts an order taken for payment back to `pending` when nothing was charged after all (the provider
 * surely did nothing with its key: its circuit open, unreachable, rate limiting, and the key never
 * sent before), so that its customer may cancel it while the payment waits for the provider; the
 * next delivery prepares it again. The attempt's key is marked unsent again (`sent_at`).
 */
export async function backToPending(tx: Ctx, orderId: string, paymentId: string): Promise<void> {
  await tx.sql(
    `with p as (update payments set sent_at = null where id = $3)
     update orders set status = 'pending', updated_at = $2 where id = $1 and status = 'processing'`,
    [orderId, new Date(), paymentId],
  );
  await tx.changed(versions.order(orderId));
}

/**
 * Records, in the caller's transaction, that an attempt's key is handed to the provider now (for a
 * call the consumer makes inside its transaction; prepareForPayment records those it sends before).
 * Whether it had been sent before.
 */
export async function markSent(tx: Ctx, attempt: PaymentAttempt): Promise<boolean> {
  if (attempt.sentAt !== null) return true;
  await tx.sql('update payments set sent_at = coalesce(sent_at, $2) where id = $1', [attempt.id, new Date()]);
  return false;
}

/**
 * The statement that takes an order for payment, as common table expressions and the select that
 * reads them (the payments consumer's first statement, sent with its inbox insert, which `inbox`
 * names): the order locked and moved to `processing` when its status is one of `statuses` and the
 * message is new; its payment attempts read; and when it has none, has a payment method and a total
 * above 0, attempt 1 written `pending` with its key, so the key is stored before the provider is called without a
 * round trip of its own. Rows for takenForPayment: none when the order is not there, not payable
 * or the message a duplicate.
 *
 * The attempts are read in the statement's snapshot, taken before the order's lock was granted: a
 * transaction that committed meanwhile and left the order payable wrote no attempt (the consumer
 * and the webhooks write attempts only with the order locked, and decide it in the same commit),
 * and attempt 1's insert skips a row that is there all the same (`on conflict do nothing`).
 */
export function takeForPayment(input: { orderId: string; statuses: readonly string[]; provider: string }): { with: string; text: string; values: unknown[] } {
  return {
    with: `pay_order as (update orders set status = 'processing', updated_at = $2 where id = $1 and status = any($3::text[]) and exists (select 1 from inbox)
        returning total, currency, payment_method, refunded_amount),
      pay_existing as (select ${COLUMNS} from payments where order_id = $1),
      pay_started as (insert into payments (id, order_id, attempt, idempotency_key, status, amount, currency, provider, created_at, updated_at)
        select $4::text, $1, 1, $5::text, 'pending', o.total, o.currency, $6::text, $2::timestamptz, $2::timestamptz from pay_order o
        where coalesce(o.payment_method, '') <> '' and o.total > 0 and not exists (select 1 from pay_existing) on conflict do nothing returning ${COLUMNS})`,
    text: `select o.total as order_total, o.currency as order_currency, o.payment_method, o.refunded_amount as order_refunded, a.* from pay_order o
      left join (select * from pay_started union all select * from pay_existing) a on true`,
    values: [input.orderId, new Date(), input.statuses, newId('pay'), paymentKey(input.orderId, 1), input.provider],
  };
}

type TakenRow = { order_total: number; order_currency: string; payment_method: string | null; order_refunded: number } & (
  PaymentRow | { [K in keyof PaymentRow]: null }
);

/** The order takeForPayment took, from its rows; undefined for none (nothing to do). Call tx.changed for the order. */
export function takenForPayment(rows: readonly Record<string, unknown>[]): OrderToPay | undefined {
  const taken = rows as unknown as TakenRow[];
  const [order] = taken;
  if (!order) return undefined;
  const attempts = taken.filter((row) => row.id !== null).map((row) => view(row as PaymentRow));
  attempts.sort((a, b) => a.attempt - b.attempt);
  return {
    total: order.order_total,
    currency: order.order_currency,
    paymentMethod: order.payment_method,
    refundedAmount: Number(order.order_refunded),
    attempts,
  };
}

/**
 * The row of attempt `attempt`, written `pending` with its key if it is not there yet (the key is
 * stored before the provider is called); an existing row is returned as it is.
 */
export async function startAttempt(
  tx: Ctx,
  input: { orderId: string; attempt: number; amount: number; currency: string; provider: string },
): Promise<PaymentAttempt> {
  const now = new Date();
  const key = paymentKey(input.orderId, input.attempt);
  // One statement when the row is new (the usual case); the existing row read only when there is one.
  const [inserted] = await tx.sql<PaymentRow>(
    `insert into payments (id, order_id, attempt, idempotency_key, status, amount, currency, provider, created_at, updated_at)
     values ($1, $2, $3, $4, 'pending', $5, $6, $7, $8, $8) on conflict do nothing returning ${COLUMNS}`,
    [newId('pay'), input.orderId, input.attempt, key, input.amount, input.currency, input.provider, now],
  );
  await tx.changed(versions.order(input.orderId));
  if (inserted) return view(inserted);
  const [row] = await tx.sql<PaymentRow>(`select ${COLUMNS} from payments where idempotency_key = $1`, [key]);
  return view(row!);
}

/**
 * The update that records the provider's decision on an attempt, its values added to `p`: for a
 * statement of the caller's (the payments consumer records it in the statement of the order's transition). The
 * caller says that the order changed (`tx.changed`).
 */
export function outcomeUpdate(p: Params, paymentId: string, outcome: ChargeOutcome): string {
  if (outcome.status === 'succeeded') {
    return `update payments set status = 'succeeded', provider_reference = ${p.add(outcome.reference)}, amount = ${p.add(outcome.amount)}, updated_at = ${p.add(new Date())}
      where id = ${p.add(paymentId)}`;
  }
  return `update payments set status = 'declined', provider_reference = ${p.add(outcome.reference ?? null)}, failure_code = ${p.add(outcome.code)},
      failure_reason = ${p.add(outcome.reason.slice(0, 1000))}, updated_at = ${p.add(new Date())} where id = ${p.add(paymentId)}`;
}

/** Marks an attempt whose key holds a stored failure and that made no payment: the next attempt takes a new key. */
export async function markUnknown(tx: Ctx, paymentId: string, reason: string): Promise<void> {
  const rows = await tx.sql<{ order_id: string }>(
    `update payments set status = 'unknown', failure_reason = $2, updated_at = $3 where id = $1 returning order_id`,
    [paymentId, reason.slice(0, 1000), new Date()],
  );
  await tx.changed(...rows.map((r) => versions.order(r.order_id)));
}
