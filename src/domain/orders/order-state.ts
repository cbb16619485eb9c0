import { requireTransaction, type Ctx } from '../shared/context.js';
import { newId } from '../shared/ids.js';
import { Params, type Sql } from '../shared/sql.js';
import { OUTBOX_INSERT } from '../events/emit.js';
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
 *
 * `alongside` is a write that goes in the same statement as the update (a round trip less), run
 * whether or not the order moves: it adds its values to the statement's parameters and returns its
 * text (a fixed text: it is prepared once per connection).
 */
export async function transition(
  tx: Ctx,
  orderId: string,
  to: OrderStatus,
  options: { reason?: string; message?: string; alongside?: (params: Params) => string } = {},
): Promise<TransitionResult> {
  const now = new Date();
  const announced = to === 'completed' || to === 'failed';
  if (announced) requireTransaction(tx, `the order.${to} event`);
  const p = new Params();
  const ctes = [
    `moved as (update orders set status = ${p.add(to)}, updated_at = ${p.add(now)} where id = ${p.add(orderId)} and status = any(${p.add(sourcesOf(to))}::text[])
      returning id, user_id, total, currency, status)`,
  ];
  // An announced transition writes its outbox row in the same statement as the update; the row is
  // there only if the order moved (the payload's keys as emit would write them).
  if (announced) {
    const extra = {
      ...(options.reason !== undefined ? { reason: options.reason } : {}),
      ...(options.message !== undefined ? { message: options.message } : {}),
    };
    ctes.push(`announced as (${OUTBOX_INSERT} select ${p.add(newId('evt'))}, ${p.add(`order.${to}`)}, id,
      jsonb_build_object('orderId', id, 'userId', user_id, 'total', total, 'currency', currency) || ${p.add(JSON.stringify(extra))}::jsonb,
      ${p.add(tx.traceparent ?? null)}, 'pending', 0, ${p.add(now)}, ${p.add(now)} from moved)`);
  }
  if (options.alongside) ctes.push(`alongside as (${options.alongside(p)})`);
  const [moved] = await tx.sql<MovedRow>(`with ${ctes.join(',\n')} select id, user_id, total, currency, status from moved`, p.values);
  if (!moved) {
    const [row] = await tx.sql<{ status: OrderStatus }>('select status from orders where id = $1', [orderId]);
    return { moved: false, status: row?.status };
  }
  await tx.changed(versions.order(orderId));
  if (to === 'failed') await tx.changed(...stockVersions(await restock(tx.sql, orderId, now)));
  return { moved: true, status: to };
}
