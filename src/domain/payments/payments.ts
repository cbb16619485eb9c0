import type { Ctx } from '../shared/context.js';
import { newId } from '../shared/ids.js';
import { versions } from '../shared/cache.js';
import { Params } from '../shared/sql.js';
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
 * An order's payment attempts, oldest first, and when it has none, attempt 1 written `pending`
 * with its key first (`started`, also in `attempts`): one statement either way, where reading the
 * attempts and then starting the first took two. Call with the order row locked.
 */
export async function attemptsOrFirst(
  tx: Ctx,
  input: { orderId: string; amount: number; currency: string; provider: string },
): Promise<{ attempts: PaymentAttempt[]; started: PaymentAttempt | undefined }> {
  const now = new Date();
  const rows = await tx.sql<PaymentRow & { started: boolean }>(
    `with existing as (select ${COLUMNS} from payments where order_id = $2),
     inserted as (insert into payments (id, order_id, attempt, idempotency_key, status, amount, currency, provider, created_at, updated_at)
       select $1, $2, 1, $3, 'pending', $4, $5, $6, $7, $7 where not exists (select 1 from existing) on conflict do nothing returning ${COLUMNS})
     select true as started, inserted.* from inserted union all select false as started, existing.* from existing order by attempt`,
    [newId('pay'), input.orderId, paymentKey(input.orderId, 1), input.amount, input.currency, input.provider, now],
  );
  const started = rows.find((r) => r.started);
  if (started) await tx.changed(versions.order(input.orderId));
  return { attempts: rows.map(view), started: started && view(started) };
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
