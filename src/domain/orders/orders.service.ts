import type { Ctx } from '../shared/context.js';
import { conflict, DomainError, invalid, notFound } from '../shared/errors.js';
import { keysetPage, pageLimit, type Page } from '../shared/pagination.js';
import { newId } from '../shared/ids.js';
import { Params, type Sql } from '../shared/sql.js';
import { refuseControlCharacters } from '../shared/text.js';
import { audit } from '../audit/audit.js';
import { emit, OUTBOX_INSERT } from '../events/emit.js';
import type { Viewer } from '../auth/principal.js';
import { checkIdempotencyKey, claimStatement, release, replay, requestHash, type IdempotentRequest, type StoredResponse } from '../idempotency/idempotency.js';
import { ORDER_STATUSES, type OrderStatus } from './order.entity.js';
import type { PaymentStatus } from '../payments/payment.entity.js';
import { restock, stockVersions } from './order-state.js';
import { NoCache, versions, type Cache } from '../shared/cache.js';

/** One line of an order: what was bought, at the price charged then (minor units). */
export interface OrderItemView {
  productId: string;
  sku: string;
  name: string;
  unitPrice: number;
  quantity: number;
}

/**
 * An order's payment as clients see it: the succeeded attempt if there is one, else the latest.
 * `status`: pending (being charged), succeeded, declined, unknown (the provider's answer was lost;
 * another attempt follows). Money in minor units of `currency`.
 */
export interface OrderPaymentView {
  status: PaymentStatus;
  amount: number;
  currency: string;
  /** 'stripe' or 'simulated'. */
  provider: string;
  /** The provider's id of the payment (a Stripe PaymentIntent `pi_…`); null until the provider made one. */
  reference: string | null;
  /** Why it was declined, as the provider's code (`card_declined`, `authentication_required` …) and words. */
  failureCode: string | null;
  failureReason: string | null;
}

/** A cardholder's dispute of the order's payment, as Stripe last reported it. */
export interface OrderDisputeView {
  id: string;
  reason: string;
  /** Stripe's dispute status: needs_response, under_review, won, lost … */
  status: string;
  amount: number;
  currency: string;
  createdAt: string;
}

/** An order as clients see it; money is integer minor units of `currency`. */
export interface OrderView {
  id: string;
  userId: string;
  status: OrderStatus;
  currency: string;
  total: number;
  /** The payment method the order is paid with (`pm_…`); null on orders placed before it was required. */
  paymentMethod: string | null;
  items: OrderItemView[];
  /** The payment, or null before the first attempt. */
  payment: OrderPaymentView | null;
  /** How much of the total has been refunded (minor units); all of it when the status is `refunded`. */
  refundedAmount: number;
  /** The latest dispute of the payment, or null. */
  dispute: OrderDisputeView | null;
  createdAt: string;
  updatedAt: string;
}

export interface CreateOrderInput {
  /** Whose order it is. */
  userId: string;
  items: { sku: string; quantity: number }[];
  /** The payment method to charge (a Stripe PaymentMethod id such as `pm_card_visa`). */
  paymentMethod: string;
  /** The Idempotency-Key and who sent it (the API key or user), when the client gave one. */
  idempotency?: { key: string; principal: string };
}

/** The outcome of create: the order and the status to answer with; `replayed` when it is the first response to a repeated key. */
export interface CreatedOrder {
  statusCode: number;
  order: OrderView;
  replayed: boolean;
}

export interface ListOrdersInput {
  viewer: Viewer;
  status?: string;
  userId?: string;
  /** Orders created at or after this instant. */
  createdFrom?: Date;
  /** Orders created before this instant. */
  createdTo?: Date;
  limit?: number;
  cursor?: string;
}

export const MAX_ORDER_LINES = 100;
export const MAX_QUANTITY = 1000;
/** A Stripe PaymentMethod id: `pm_` and up to 100 letters, digits or underscores (`pm_card_visa`, `pm_1Q0PsIJvEtkwdCNY…`). */
export const PAYMENT_METHOD_PATTERN = '^pm_[A-Za-z0-9_]{1,100}$';
const PAYMENT_METHOD = new RegExp(PAYMENT_METHOD_PATTERN);

function checkPaymentMethod(raw: unknown): string {
  if (typeof raw !== 'string' || !PAYMENT_METHOD.test(raw)) {
    throw invalid('paymentMethod must be a payment method id: pm_ and up to 100 letters, digits or underscores, such as pm_card_visa', {
      field: 'paymentMethod',
    });
  }
  return raw;
}

interface OrderRow {
  id: string;
  user_id: string;
  status: OrderStatus;
  currency: string;
  total: number;
  payment_method: string | null;
  refunded_amount: number;
  created_at: Date;
  updated_at: Date;
  items: OrderItemView[] | null;
  payment: OrderPaymentView | null;
  // As JSON: created_at is text.
  dispute: OrderDisputeView | null;
}

interface LockedProduct {
  id: string;
  sku: string;
  name: string;
  price: number;
  currency: string;
  active: boolean;
  stock: number;
}

// Items aggregated in the same query as their order: one round trip for an order with its lines.
// So are its payment (the succeeded attempt, else the latest) and its latest dispute.
const ORDER_COLUMNS = `o.id, o.user_id, o.status, o.currency, o.total, o.payment_method, o.refunded_amount, o.created_at, o.updated_at,
  (select json_agg(json_build_object('productId', i.product_id, 'sku', i.sku, 'name', i.name, 'unitPrice', i.unit_price, 'quantity', i.quantity) order by i.id)
     from order_items i where i.order_id = o.id) as items,
  (select json_build_object('status', p.status, 'amount', p.amount, 'currency', p.currency, 'provider', p.provider, 'reference', p.provider_reference,
          'failureCode', p.failure_code, 'failureReason', p.failure_reason)
     from payments p where p.order_id = o.id order by p.status = 'succeeded' desc, p.attempt desc limit 1) as payment,
  (select json_build_object('id', d.id, 'reason', d.reason, 'status', d.status, 'amount', d.amount, 'currency', d.currency, 'createdAt', d.created_at)
     from order_disputes d where d.order_id = o.id order by d.created_at desc, d.id desc limit 1) as dispute`;

/** Merges repeated SKUs into one line (quantities added), keeping the order in which they first appear. */
function mergeItems(items: CreateOrderInput['items']): Map<string, number> {
  if (!Array.isArray(items) || items.length < 1 || items.length > MAX_ORDER_LINES) {
    throw invalid(`an order has 1 to ${MAX_ORDER_LINES} items`, { field: 'items' });
  }
  const lines = new Map<string, number>();
  items.forEach((item, i) => {
    if (typeof item.sku !== 'string' || item.sku.length < 1 || item.sku.length > 64)
      throw invalid(`items[${i}].sku must be 1 to 64 characters`, { field: `items[${i}].sku` });
    // PostgreSQL cannot take a NUL even to look a SKU up (it was a 500), and the refusal of an unknown SKU quotes it.
    refuseControlCharacters(item.sku, `items[${i}].sku`, `items[${i}].sku`);
    if (!Number.isInteger(item.quantity) || item.quantity < 1 || item.quantity > MAX_QUANTITY) {
      throw invalid(`items[${i}].quantity must be an integer from 1 to ${MAX_QUANTITY}`, { field: `items[${i}].quantity` });
    }
    lines.set(item.sku, (lines.get(item.sku) ?? 0) + item.quantity);
  });
  return lines;
}

// Instants a filter may name: years 1 to 9999 in UTC. A valid RFC 3339 time such as
// 0000-01-01T00:00:00Z (or 0001-01-01T00:00:00+01:00) is year 0 in UTC, which PGlite's driver
// sends as a text PostgreSQL refuses ("date/time field value out of range"), a 500 otherwise.
const FIRST_INSTANT = Date.parse('0001-01-01T00:00:00Z');
const LAST_INSTANT = Date.parse('9999-12-31T23:59:59.999Z');

function checkInstant(at: Date, field: string): Date {
  const ms = at.getTime();
  if (Number.isNaN(ms) || ms < FIRST_INSTANT || ms > LAST_INSTANT) {
    throw invalid(`${field} must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z`, { field });
  }
  return at;
}

/** Orders: creation that reserves stock atomically (idempotent with a key), reads scoped to their owner, cancellation. */
export class OrdersService {
  /** `cache`: where order reads are cached (never stale after a write; see cache.ts). */
  constructor(private readonly cache: Cache = new NoCache()) {}

  /**
   * Places an order at the catalog's prices and reserves its stock, all or nothing: a short SKU is a
   * conflict naming it, an unknown or inactive one is unprocessable. With an idempotency key, a repeat
   * of the same request returns the order the first one created instead of ordering again.
   */
  async create(ctx: Ctx, input: CreateOrderInput): Promise<CreatedOrder> {
    const lines = mergeItems(input.items);
    const wanted = { userId: input.userId, paymentMethod: checkPaymentMethod(input.paymentMethod), lines, traceparent: ctx.traceparent ?? null };
    if (!input.idempotency) return { statusCode: 201, order: await this.placed(ctx, (await this.place(ctx.sql, newId('ord'), wanted))!), replayed: false };
    const idem = {
      principal: input.idempotency.principal,
      key: checkIdempotencyKey(input.idempotency.key),
      requestHash: requestHash('POST /orders', {
        items: input.items.map(({ sku, quantity }) => [sku, quantity]),
        paymentMethod: wanted.paymentMethod,
      }),
    };
    // The key is claimed by the order's own statement, before it locks anything: a concurrent repeat
    // waits for that statement and then finds the key taken. A claim can outlive a failed attempt
    // (released right after, or by the next repeat), so a repeat that finds a claim without its
    // order clears it and tries again.
    for (let attempt = 0; attempt < 3; attempt++) {
      const orderId = newId('ord');
      const response = { statusCode: 201, body: { orderId } };
      let placed: OrderView | undefined;
      try {
        placed = await this.place(ctx.sql, orderId, wanted, { request: idem, response });
      } catch (err) {
        if (err instanceof DomainError) await release(ctx.sql, idem, response);
        throw err;
      }
      if (placed) return { statusCode: 201, order: await this.placed(ctx, placed), replayed: false };
      const first = await replay(ctx.sql, idem);
      const firstId = (first.body as { orderId: string }).orderId;
      const order = await this.find(ctx.sql, { userId: input.userId, role: 'user' }, firstId).catch((err: unknown) => {
        if (err instanceof DomainError && err.code === 'not_found') return undefined;
        throw err;
      });
      if (order) return { statusCode: first.statusCode, order: this.view(order), replayed: true };
      await release(ctx.sql, idem, first);
    }
    throw new DomainError('retryable', `the Idempotency-Key ${idem.key} is contended by concurrent attempts; send it again`);
  }

  /** Lists orders newest first, one cursor page at a time: a user's own, or (for admins) anyone's with filters. */
  async list(ctx: Ctx, input: ListOrdersInput): Promise<Page<OrderView>> {
    const limit = pageLimit(input.limit);
    const admin = input.viewer.role === 'admin';
    if (!admin && input.userId !== undefined && input.userId !== input.viewer.userId) {
      throw new DomainError('forbidden', "only admins may list other users' orders; leave out userId to list your own", { field: 'userId' });
    }
    const where: string[] = [];
    const params = new Params();
    const userId = admin ? input.userId : input.viewer.userId;
    if (userId !== undefined) where.push(`o.user_id = ${params.add(userId)}`);
    if (input.status !== undefined) {
      if (!(ORDER_STATUSES as readonly string[]).includes(input.status)) {
        throw invalid(`"${input.status}" is not an order status; expected one of ${ORDER_STATUSES.join(', ')}`, { field: 'status' });
      }
      where.push(`o.status = ${params.add(input.status)}`);
    }
    if (input.createdFrom) where.push(`o.created_at >= ${params.add(checkInstant(input.createdFrom, 'createdFrom'))}`);
    if (input.createdTo) where.push(`o.created_at < ${params.add(checkInstant(input.createdTo, 'createdTo'))}`);
    return keysetPage<OrderRow, OrderView>(
      ctx,
      {
        from: `select ${ORDER_COLUMNS} from orders o`,
        alias: 'o',
        where,
        params,
        limit,
        scope: { list: 'orders', filters: { userId, status: input.status, createdFrom: input.createdFrom, createdTo: input.createdTo } },
        cursor: input.cursor,
      },
      (row) => this.view(row),
    );
  }

  /** One order with its items; another user's order is not found (its existence is not revealed). */
  async get(ctx: Ctx, input: { viewer: Viewer; id: string }): Promise<OrderView> {
    const key = versions.order(input.id);
    // Cached whoever owns it ("none" as null); whether this viewer may see it is decided per request.
    const order = await this.cache.get('orders', key, key, async () => {
      const [row] = await ctx.sql<OrderRow>(`select ${ORDER_COLUMNS} from orders o where o.id = $1`, [input.id]);
      return row ? this.view(row) : null;
    });
    if (!order || (input.viewer.role !== 'admin' && order.userId !== input.viewer.userId)) throw notFound(`no order ${input.id}`, { order: input.id });
    return order;
  }

  /** An order just placed took stock: the cached reads of its products are stale now that it has committed. */
  private async placed(ctx: Ctx, order: OrderView): Promise<OrderView> {
    await ctx.changed(...stockVersions(order.items.map((i) => i.productId)));
    return order;
  }

  /**
   * Cancels a pending order and puts its stock back, announcing `order.cancelled`, in one transaction;
   * any other status is a conflict.
   */
  async cancel(ctx: Ctx, input: { viewer: Viewer; id: string }): Promise<OrderView> {
    return ctx.transaction(async (tx) => {
      const order = await this.find(tx.sql, input.viewer, input.id, true);
      if (order.status !== 'pending') {
        throw conflict(`order ${order.id} is ${order.status}; only a pending order can be cancelled`, { status: order.status });
      }
      // Product rows are locked in SKU order, as order creation locks them, so the two never deadlock.
      const now = new Date();
      await tx.changed(versions.order(order.id), ...stockVersions(await restock(tx.sql, order.id, now)));
      const [updated] = await tx.sql<OrderRow>(`update orders o set status = 'cancelled', updated_at = $2 where o.id = $1 returning ${ORDER_COLUMNS}`, [
        order.id,
        now,
      ]);
      if (input.viewer.role === 'admin') await audit(tx, 'order.cancelled', order.id, { userId: order.user_id, from: order.status });
      await emit(tx, 'order.cancelled', order.id, {
        orderId: order.id,
        userId: order.user_id,
        total: order.total,
        currency: order.currency,
        paymentMethod: order.payment_method,
      });
      return this.view(updated!);
    });
  }

  /**
   * Places the order in ONE statement (one round trip): lock the products in SKU order, check that
   * every line can be served (all SKUs exist and are active, share one currency, have the stock), and
   * only then take the stock and insert the order, its items at the locked prices and its
   * `order.created` outbox row (one statement is one transaction: all of them commit, or none). Locking in a
   * fixed order makes concurrent orders wait for each other instead of deadlocking; once it holds a
   * row's lock the statement sees its latest committed stock, so orders never oversell. When a line
   * cannot be served nothing is written and the locked rows say why.
   *
   * With `claim` (an idempotency key's claim), the statement runs it before locking anything and does
   * nothing else when the key is taken: then it answers undefined. When a line cannot be served the
   * claim is committed alone, and the caller releases it.
   */
  private async place(
    sql: Sql,
    orderId: string,
    { userId, paymentMethod, lines, traceparent }: { userId: string; paymentMethod: string; lines: Map<string, number>; traceparent: string | null },
    claim?: { request: IdempotentRequest; response: StoredResponse },
  ): Promise<OrderView | undefined> {
    const skus = [...lines.keys()];
    const now = new Date();
    const params = new Params();
    // $1 … $9, in this order (the statement's text names them).
    for (const value of [skus, [...lines.values()], skus.map(() => newId('itm')), now, orderId, userId, paymentMethod, newId('evt'), traceparent]) {
      params.add(value);
    }
    const claimSql = claim ? claimStatement(claim.request, claim.response, params) : 'select 1 as claimed';
    // The lines travel as three arrays, so the statement's text is the same for any number of lines
    // and is prepared once per connection (with and without a claim): planning this statement costs
    // the server more than running it.
    const [result] = await sql<{ claimed: boolean; ok: boolean; products: LockedProduct[] }>(
      `with req (sku, qty, item_id) as (select * from unnest($1::varchar[], $2::int[], $3::varchar[])),
       claim as (${claimSql}),
       locked as materialized (
         -- the claim runs first (a one-time filter under the lock), so a taken key locks nothing
         select p.id, p.sku, p.name, p.price, p.currency, p.active, p.stock from products p
         where exists (select 1 from claim) and p.sku = any($1::varchar[])
         order by p.sku for update
       ),
       ok as (
         select (select count(*) from locked) = (select count(*) from req)
           and not exists (select 1 from locked l join req r on r.sku = l.sku where not l.active or l.stock < r.qty)
           and (select count(distinct currency) from locked) = 1 as ok
       ),
       taken as (
         update products p set stock = p.stock - r.qty, updated_at = $4
         from locked l join req r on r.sku = l.sku
         where p.id = l.id and (select ok from ok)
       ),
       placed as (
         insert into orders (id, user_id, status, currency, total, refunded_amount, payment_method, created_at, updated_at)
         select $5, $6, 'pending', min(l.currency), sum(l.price * r.qty), 0, $7, $4, $4 from locked l join req r on r.sku = l.sku
         having (select ok from ok)
       ),
       lines as (
         insert into order_items (id, order_id, product_id, sku, name, unit_price, quantity)
         select r.item_id, $5, l.id, l.sku, l.name, l.price, r.qty from locked l join req r on r.sku = l.sku
         where (select ok from ok)
       ),
       -- order.created, in the same commit as the order (the transactional outbox; see events/emit.ts)
       event as (
         ${OUTBOX_INSERT}
         select $8, 'order.created', $5,
                jsonb_build_object('orderId', $5::text, 'userId', $6::text, 'total', sum(l.price * r.qty), 'currency', min(l.currency),
                  'paymentMethod', $7::text,
                  'items', jsonb_agg(jsonb_build_object('productId', l.id, 'sku', l.sku, 'name', l.name, 'unitPrice', l.price, 'quantity', r.qty) order by r.item_id)),
                $9, 'pending', 0, $4, $4
         from locked l join req r on r.sku = l.sku
         having (select ok from ok)
       )
       select exists (select 1 from claim) as claimed, (select ok from ok) as ok,
              coalesce((select json_agg(l order by l.sku) from locked l), '[]'::json) as products`,
      params.values,
    );
    if (!result!.claimed) return undefined;
    const products = result!.products;
    const bySku = new Map(products.map((p) => [p.sku, p]));
    if (result!.ok) {
      const items = [...lines].map(([sku, quantity]) => {
        const p = bySku.get(sku)!;
        return { productId: p.id, sku, name: p.name, unitPrice: p.price, quantity };
      });
      return {
        id: orderId,
        userId,
        status: 'pending',
        currency: products[0]!.currency,
        total: items.reduce((sum, i) => sum + i.unitPrice * i.quantity, 0),
        paymentMethod,
        items,
        payment: null,
        refundedAmount: 0,
        dispute: null,
        createdAt: now.toISOString(),
        updatedAt: now.toISOString(),
      };
    }

    const missing = skus.filter((sku) => !bySku.get(sku)?.active);
    if (missing.length > 0) {
      throw new DomainError(
        'unprocessable',
        `no product on sale with SKU ${missing.join(', ')}; remove ${missing.length > 1 ? 'those items' : 'that item'} or check the SKU`,
        { field: 'items', skus: missing },
      );
    }
    const currencies = [...new Set(products.map((p) => p.currency))];
    if (currencies.length > 1) {
      throw new DomainError('unprocessable', `the items are priced in different currencies (${currencies.join(', ')}); place one order per currency`, {
        field: 'items',
        currencies,
      });
    }
    const short = products.filter((p) => p.stock < lines.get(p.sku)!);
    throw conflict(
      `not enough stock: ${short.map((p) => `SKU ${p.sku} has ${p.stock} left, ${lines.get(p.sku)} requested`).join('; ')}; order fewer or try again later`,
      { field: 'items', skus: short.map((p) => p.sku), available: Object.fromEntries(short.map((p) => [p.sku, p.stock])) },
    );
  }

  private async find(sql: Sql, viewer: Viewer, id: string, forUpdate = false): Promise<OrderRow> {
    const own = viewer.role !== 'admin';
    const [row] = await sql<OrderRow>(
      `select ${ORDER_COLUMNS} from orders o where o.id = $1${own ? ' and o.user_id = $2' : ''}${forUpdate ? ' for update of o' : ''}`,
      own ? [id, viewer.userId] : [id],
    );
    if (!row) throw notFound(`no order ${id}`, { order: id });
    return row;
  }

  private view(row: OrderRow): OrderView {
    return {
      id: row.id,
      userId: row.user_id,
      status: row.status,
      currency: row.currency,
      total: row.total,
      paymentMethod: row.payment_method,
      items: row.items ?? [],
      payment: row.payment,
      refundedAmount: row.refunded_amount,
      dispute: row.dispute && { ...row.dispute, createdAt: new Date(row.dispute.createdAt).toISOString() },
      createdAt: row.created_at.toISOString(),
      updatedAt: row.updated_at.toISOString(),
    };
  }
}
