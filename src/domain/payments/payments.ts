import type { Ctx } from '../shared/context.js';
import { newId } from '../shared/ids.js';
import { versions } from '../shared/cache.js';
import type { ChargeOutcome } from './payment-provider.js';
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
  created_at: Date;
}

const COLUMNS = 'id, order_id, attempt, idempotency_key, status, amount, currency, provider, provider_reference, failure_code, failure_reason, created_at';

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
  createdAt: r.created_at,
});

/**
 * The idempotency key of an order's n-th payment attempt: derived, never random, so a retry that
 * lost the stored row (its transaction rolled back) sends the same key again.
 */
export const paymentKey = (orderId: string, attempt: number) => `pay:${orderId}:${attempt}`;

/** An order's payment attempts, oldest first. */
export async function paymentsOf(ctx: Ctx, orderId: string): Promise<PaymentAttempt[]> {
  return (await ctx.sql<PaymentRow>(`select ${COLUMNS} from payments where order_id = $1 order by attempt`, [orderId])).map(view);
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

/** Records the provider's decision on an attempt. */
export async function recordOutcome(tx: Ctx, paymentId: string, outcome: ChargeOutcome): Promise<void> {
  let rows: { order_id: string }[];
  if (outcome.status === 'succeeded') {
    rows = await tx.sql(`update payments set status = 'succeeded', provider_reference = $2, amount = $3, updated_at = $4 where id = $1 returning order_id`, [
      paymentId,
      outcome.reference,
      outcome.amount,
      new Date(),
    ]);
  } else {
    rows = await tx.sql(
      `update payments set status = 'declined', provider_reference = $2, failure_code = $3, failure_reason = $4, updated_at = $5 where id = $1 returning order_id`,
      [paymentId, outcome.reference ?? null, outcome.code, outcome.reason.slice(0, 1000), new Date()],
    );
  }
  await tx.changed(...rows.map((r) => versions.order(r.order_id)));
}

/** Marks an attempt whose key holds a stored failure and that made no payment: the next attempt takes a new key. */
export async function markUnknown(tx: Ctx, paymentId: string, reason: string): Promise<void> {
  const rows = await tx.sql<{ order_id: string }>(
    `update payments set status = 'unknown', failure_reason = $2, updated_at = $3 where id = $1 returning order_id`,
    [paymentId, reason.slice(0, 1000), new Date()],
  );
  await tx.changed(...rows.map((r) => versions.order(r.order_id)));
}
