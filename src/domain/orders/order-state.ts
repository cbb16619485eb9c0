import type { Ctx } from '../shared/context.js';
import type { Sql } from '../shared/sql.js';
import { emit } from '../events/emit.js';
import type { OrderStatus } from './order.entity.js';
import { versions } from '../shared/cache.js';

/**
 * The order's state machine: the statuses an order may move to from each status. Anything else is
 * not a transition: a repeated or late event (a payment failure arriving after the order was paid)
 * changes nothing.
 */
export const ORDER_TRANSITIONS: Readonly<Record<OrderStatus, readonly OrderStatus[]>> = {
  pending: ['processing', 'failed', 'cancelled'],
  processing: ['completed', 'failed'],
  // All of a paid order's total refunded (Stripe's charge.refunded webhook). A failure never follows
  // completed: a late payment_failed event leaves a paid order paid.
  completed: ['refunded'],
  failed: [],
  cancelled: [],
  refunded: [],
};

/** The statuses `to` may be reached from. */
export function sourcesOf(to: OrderStatus): OrderStatus[] {
  return (Object.keys(ORDER_TRANSITIONS) as OrderStatus[]).filter((from) => ORDER_TRANSITIONS[from].includes(to));
}

export interface TransitionResult {
  moved: boolean;
  /** The order's status after the call (undefined when there is no such order). */
  status: OrderStatus | undefined;
}

interface MovedRow {
  id: string;
  user_id: string;
  total: number;
  currency: string;
  status: OrderStatus;
}

/**
 * Puts an order's stock back: its product rows are locked in SKU order, as order creation locks
 * them, so the two never deadlock (the order row itself is locked first by the caller's update).
 * Says which products changed (their cached reads are stale once the caller commits).
 */
export async function restock(sql: Sql, orderId: string, now: Date): Promise<string[]> {
  const rows = await sql<{ id: string }>(
    `with back as (select product_id, sum(quantity)::int as qty from order_items where order_id = $1 group by product_id),
     locked as materialized (select p.id from products p where p.id in (select product_id from back) order by p.sku for update)
     update products p set stock = p.stock + back.qty, updated_at = $2
     from locked join back on back.product_id = locked.id where p.id = locked.id returning p.id`,
    [orderId, now],
  );
  return rows.map((r) => r.id);
}

/** The cached reads a change of stock makes stale: those products and the product lists. */
export const stockVersions = (productIds: string[]): string[] => [...productIds.map((id) => versions.product(id)), versions.products];

/**
 * Moves an order to `to` if its status allows it (one guarded update: `where status in (…)`), in the
 * caller's transaction, and says whether it moved. A completed order is announced by
 * `order.completed`, a failed one by `order.failed` (with `reason`) and gets its stock back, all in
 * the same transaction. Repeated and out-of-order calls are harmless: they do not move.
 */
export async function transition(tx: Ctx, orderId: string, to: OrderStatus, options: { reason?: string; message?: string } = {}): Promise<TransitionResult> {
  const from = sourcesOf(to);
  const now = new Date();
  const [moved] = await tx.sql<MovedRow>(
    'update orders set status = $2, updated_at = $3 where id = $1 and status = any($4::text[]) returning id, user_id, total, currency, status',
    [orderId, to, now, from],
  );
  if (!moved) {
    const [row] = await tx.sql<{ status: OrderStatus }>('select status from orders where id = $1', [orderId]);
    return { moved: false, status: row?.status };
  }
  await tx.changed(versions.order(orderId));
  if (to === 'failed') await tx.changed(...stockVersions(await restock(tx.sql, orderId, now)));
  if (to === 'completed' || to === 'failed') {
    await emit(tx, `order.${to}`, orderId, {
      orderId,
      userId: moved.user_id,
      total: moved.total,
      currency: moved.currency,
      ...(options.reason !== undefined ? { reason: options.reason } : {}),
      ...(options.message !== undefined ? { message: options.message } : {}),
    });
  }
  return { moved: true, status: to };
}
