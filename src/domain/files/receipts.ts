import type { Viewer } from '../auth/principal.js';
import type { Ctx } from '../shared/context.js';
import { notFound } from '../shared/errors.js';
import { newId } from '../shared/ids.js';
import type { FileStore, StoredFile } from './file-store.js';

export const RECEIPT_CONTENT_TYPE = 'application/pdf';

/**
 * Where an order's receipt is stored. Deterministic: a receipt made again (a retry after a crash
 * between the upload and the commit that records it) overwrites the same object instead of leaving
 * an orphan beside it.
 */
export const receiptKey = (orderId: string): string => `receipts/${orderId}.pdf`;

/** What a receipt shows: the order as charged. Money in integer minor units of `currency`. */
export interface ReceiptData {
  orderId: string;
  /** When the order was placed. */
  orderedAt: Date;
  /** When it was paid (the order.completed event's time). */
  paidAt: Date;
  customer: { name: string; email: string };
  lines: { name: string; sku: string; quantity: number; unitPrice: number }[];
  total: number;
  currency: string;
  /** The provider's reference of the successful payment (`pi_…`); null when none is recorded. */
  paymentReference: string | null;
}

/** A row of RECEIPT_SELECT. */
export interface ReceiptRow {
  id: string;
  status: string;
  created_at: Date;
  total: number;
  currency: string;
  user_name: string;
  user_email: string;
  payment_reference: string | null;
  lines: { name: string; sku: string; quantity: number; unitPrice: number }[] | null;
  /** Whether the order's receipt is recorded already. */
  has_receipt: boolean;
}

/** The statement that reads what an order's receipt shows (`$1`: the order id): one row, or none when the order is not there. */
export const RECEIPT_SELECT = `select o.id, o.status, o.created_at, o.total, o.currency, u.name as user_name, u.email as user_email,
       (select p.provider_reference from payments p where p.order_id = o.id and p.status = 'succeeded' order by p.attempt limit 1) as payment_reference,
       (select json_agg(json_build_object('name', i.name, 'sku', i.sku, 'quantity', i.quantity, 'unitPrice', i.unit_price) order by i.id)
          from order_items i where i.order_id = o.id) as lines,
       exists (select 1 from files f where f.order_id = o.id and f.kind = 'receipt') as has_receipt
     from orders o join users u on u.id = o.user_id where o.id = $1`;

/**
 * What the receipts consumer reads before its transaction (`$1`: the order id, `$2` and `$3`: the
 * consumer and the message id): RECEIPT_SELECT's row, plus whether the message is processed already.
 */
export const RECEIPT_PREPARE_SELECT = `select r.*, exists (select 1 from processed_messages where consumer = $2 and message_id = $3) as processed
     from (${RECEIPT_SELECT}) r`;

/**
 * The insert that records a stored receipt, as common table expressions for a consumer's first
 * statement (after the inbox insert, which `inbox` names: nothing is written for a duplicate), its
 * values from `$1`; `receipt_recorded` has the row written. As recordReceipt: one row per order, an
 * existing one updated to the bytes just stored under the same key.
 */
export function recordReceiptStatement(orderId: string, stored: StoredFile): { with: string; text: string; values: unknown[] } {
  return {
    with: `receipt_recorded as (insert into files (id, kind, order_id, key, content_type, size, sha256, created_at)
        select $1, 'receipt', $2, $3, $4, $5::bigint, $6, now() where exists (select 1 from inbox)
        on conflict (order_id, kind) do update set key = excluded.key, content_type = excluded.content_type, size = excluded.size, sha256 = excluded.sha256
        returning id)`,
    text: 'select id as recorded from receipt_recorded',
    values: [newId('fil'), orderId, stored.key, RECEIPT_CONTENT_TYPE, stored.size, stored.sha256],
  };
}

/**
 * The data of an order's receipt from a row of RECEIPT_SELECT: undefined when the order is not
 * there or not paid (only a completed order, or one refunded since, has a receipt).
 */
export function receiptFromRow(row: ReceiptRow | undefined, paidAt: Date): ReceiptData | undefined {
  if (!row || (row.status !== 'completed' && row.status !== 'refunded')) return undefined;
  return {
    orderId: row.id,
    orderedAt: row.created_at,
    paidAt,
    customer: { name: row.user_name, email: row.user_email },
    lines: row.lines ?? [],
    total: row.total,
    currency: row.currency,
    paymentReference: row.payment_reference,
  };
}

/**
 * The data of an order's receipt, in the caller's transaction: undefined when the order is not
 * there or not paid (only a completed order, or one refunded since, has a receipt).
 */
export async function receiptData(tx: Ctx, orderId: string, paidAt: Date): Promise<ReceiptData | undefined> {
  const [row] = await tx.sql<ReceiptRow>(RECEIPT_SELECT, [orderId]);
  return receiptFromRow(row, paidAt);
}

/**
 * Records the stored receipt in the files table, in the caller's transaction. One row per order: if
 * one is there (it cannot be, behind the inbox, but a replay by hand could), it is updated to the
 * bytes just stored under the same key, so the row always describes the object.
 */
export async function recordReceipt(tx: Ctx, orderId: string, stored: StoredFile): Promise<void> {
  await tx.sql(
    `insert into files (id, kind, order_id, key, content_type, size, sha256, created_at) values ($1, 'receipt', $2, $3, $4, $5, $6, now())
     on conflict (order_id, kind) do update set key = excluded.key, content_type = excluded.content_type, size = excluded.size, sha256 = excluded.sha256`,
    [newId('fil'), orderId, stored.key, RECEIPT_CONTENT_TYPE, stored.size, stored.sha256],
  );
}

/**
 * A short-lived download link to an order's receipt for its owner or an admin. Another user's
 * order is not found (its existence is not revealed); an order without a receipt yet is not found
 * with a detail saying so.
 */
export async function receiptLink(
  ctx: Ctx,
  input: { files: FileStore; viewer: Viewer; orderId: string; ttlSeconds: number },
): Promise<{ url: string; expiresAt: Date }> {
  const own = input.viewer.role !== 'admin';
  const [row] = await ctx.sql<{ status: string; key: string | null }>(
    `select o.status, f.key from orders o left join files f on f.order_id = o.id and f.kind = 'receipt'
     where o.id = $1${own ? ' and o.user_id = $2' : ''}`,
    own ? [input.orderId, input.viewer.userId] : [input.orderId],
  );
  if (!row) throw notFound(`no order ${input.orderId}`, { order: input.orderId });
  if (!row.key) {
    if (row.status !== 'pending' && row.status !== 'processing' && row.status !== 'completed' && row.status !== 'refunded') {
      throw notFound(`order ${input.orderId} has no receipt: it is ${row.status}, and only a paid order gets one`, {
        order: input.orderId,
        status: row.status,
      });
    }
    const when = row.status === 'pending' || row.status === 'processing' ? 'it is made once the order is paid' : 'it is being made; try again in a moment';
    throw notFound(`the receipt for order ${input.orderId} is not made yet: ${when}`, { order: input.orderId, status: row.status });
  }
  return input.files.signedUrl(row.key, input.ttlSeconds);
}
