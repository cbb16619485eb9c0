import type { FastifyPluginAsync } from 'fastify';
import { ORDER_STATUSES } from '../../domain/orders/order.entity.js';
import { PAYMENT_STATUSES } from '../../domain/payments/payment.entity.js';
import { MAX_ORDER_LINES, MAX_QUANTITY, PAYMENT_METHOD_PATTERN, type OrderView } from '../../domain/orders/orders.service.js';
import { IDEMPOTENCY_KEY_PATTERN, IDEMPOTENCY_TTL_HOURS } from '../../domain/idempotency/idempotency.js';
import { actorOf } from '../../domain/auth/principal.js';
import { receiptLink } from '../../domain/files/receipts.js';
import { CURRENCY_PATTERN } from '../../domain/shared/money.js';
import { DomainError } from '../../domain/shared/errors.js';
import { authorize, BEARER, principalOf } from '../auth.js';
import { errorResponses, idParamsSchema, pageQuery, pageSchema, type ApiVersion, type IdParams } from '../versions.js';

/** The brief's Order plus its currency; money (total, unit prices) per version. */
export function orderSchema(version: ApiVersion) {
  const item = {
    type: 'object',
    required: ['productId', 'sku', 'name', 'unitPrice', 'quantity'],
    additionalProperties: false,
    properties: {
      productId: { type: 'string' },
      sku: { type: 'string' },
      name: { type: 'string', description: 'The product name when ordered' },
      unitPrice: { ...version.moneySchema, description: 'The price charged per unit (the catalog price when ordered)' },
      quantity: { type: 'integer' },
    },
  };
  const properties = {
    id: { type: 'string', description: 'ord_ followed by a ULID' },
    userId: { type: 'string' },
    items: { type: 'array', items: item },
    total: { ...version.moneySchema, description: 'Sum of unit price × quantity over the items' },
    paymentMethod: {
      type: ['string', 'null'],
      description: 'The payment method the order is paid with (a Stripe PaymentMethod id); null on orders placed before it was required',
    },
    currency: { type: 'string', pattern: CURRENCY_PATTERN, description: 'ISO 4217 code' },
    status: { type: 'string', enum: [...ORDER_STATUSES] },
    payment: {
      type: ['object', 'null'],
      description: 'The payment: the succeeded attempt if there is one, else the latest; null before the first attempt',
      required: ['status', 'amount', 'provider', 'reference', 'failureCode', 'failureReason'],
      additionalProperties: false,
      properties: {
        status: {
          type: 'string',
          enum: [...PAYMENT_STATUSES],
          description: "pending: being charged; succeeded; declined; unknown: the provider's answer was lost and another attempt follows",
        },
        amount: { ...version.moneySchema, description: 'The amount charged (or being charged)' },
        provider: { type: 'string', description: 'stripe, or simulated on the embedded default' },
        reference: { type: ['string', 'null'], description: "The provider's id of the payment (a Stripe PaymentIntent, pi_…)" },
        failureCode: { type: ['string', 'null'], description: "Why it was declined, as the provider's code (card_declined, authentication_required …)" },
        failureReason: { type: ['string', 'null'], description: "Why it was declined, in the provider's words" },
      },
    },
    refundedAmount: { ...version.moneySchema, description: 'How much of the total has been refunded (all of it when the status is refunded)' },
    dispute: {
      type: ['object', 'null'],
      description: 'The latest cardholder dispute (chargeback) of the payment, as Stripe reported it; null when there is none',
      required: ['id', 'reason', 'status', 'amount', 'createdAt'],
      additionalProperties: false,
      properties: {
        id: { type: 'string', description: "Stripe's dispute id (dp_…)" },
        reason: { type: 'string', description: "Stripe's reason: fraudulent, product_not_received …" },
        status: { type: 'string', description: "Stripe's status: needs_response, under_review, won, lost …" },
        amount: { ...version.moneySchema, description: 'The disputed amount' },
        createdAt: { type: 'string', format: 'date-time' },
      },
    },
    createdAt: { type: 'string', format: 'date-time' },
    updatedAt: { type: 'string', format: 'date-time' },
  };
  return { type: 'object', required: Object.keys(properties), additionalProperties: false, properties };
}

export const orderBody = (version: ApiVersion, o: OrderView) => ({
  ...o,
  total: version.money(o.total, o.currency),
  items: o.items.map((i) => ({ ...i, unitPrice: version.money(i.unitPrice, o.currency) })),
  payment: o.payment && {
    status: o.payment.status,
    amount: version.money(o.payment.amount, o.payment.currency),
    provider: o.payment.provider,
    reference: o.payment.reference,
    failureCode: o.payment.failureCode,
    failureReason: o.payment.failureReason,
  },
  refundedAmount: version.money(o.refundedAmount, o.currency),
  dispute: o.dispute && {
    id: o.dispute.id,
    reason: o.dispute.reason,
    status: o.dispute.status,
    amount: version.money(o.dispute.amount, o.dispute.currency),
    createdAt: o.dispute.createdAt,
  },
});

const idParams = idParamsSchema('ord', 'Order');

interface ListQuery {
  status?: string;
  userId?: string;
  createdFrom?: string;
  createdTo?: string;
  limit: number;
  cursor?: string;
}

/** Orders: place one (idempotent with a key), list and read your own (admins: all), cancel a pending one. */
export const orderRoutes =
  (version: ApiVersion): FastifyPluginAsync =>
  async (server) => {
    const order = orderSchema(version);
    const orders = () => server.svc.app.orders;
    const common = { tags: ['orders'], security: BEARER };

    server.post<{ Body: { items: { sku: string; quantity: number }[]; paymentMethod: string }; Headers: { 'idempotency-key'?: string } }>('/orders', {
      schema: {
        ...common,
        summary: 'Place an order at catalog prices, reserving its stock',
        description:
          'Prices come from the catalog and the total is computed; the client sends only SKUs and quantities. Stock is reserved for ' +
          'all items or none: a SKU without enough stock answers 409 naming it and how many are left; an unknown or inactive SKU, ' +
          'or items in different currencies, answer 422. A SKU listed twice is one line with the quantities added. With an ' +
          `Idempotency-Key, repeating the same request (same body, same credential) within ${IDEMPOTENCY_TTL_HOURS} hours returns the ` +
          'first response (header Idempotent-Replayed: true) instead of ordering again; the same key with another body answers 422. ' +
          'paymentMethod (required) is the Stripe PaymentMethod the order is charged to, such as pm_card_visa.',
        headers: {
          type: 'object',
          properties: {
            'idempotency-key': {
              type: 'string',
              pattern: IDEMPOTENCY_KEY_PATTERN,
              description: `Makes retries safe: 1 to 255 visible ASCII characters (a UUID, say), remembered for ${IDEMPOTENCY_TTL_HOURS} hours`,
            },
          },
        },
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['items', 'paymentMethod'],
          properties: {
            paymentMethod: {
              type: 'string',
              pattern: PAYMENT_METHOD_PATTERN,
              description: 'The Stripe PaymentMethod id to charge, such as pm_card_visa (test mode) or pm_1Q0PsIJvEtkwdCNY…',
              examples: ['pm_card_visa'],
            },
            items: {
              type: 'array',
              minItems: 1,
              maxItems: MAX_ORDER_LINES,
              items: {
                type: 'object',
                additionalProperties: false,
                required: ['sku', 'quantity'],
                properties: {
                  sku: { type: 'string', minLength: 1, maxLength: 64 },
                  quantity: { type: 'integer', minimum: 1, maximum: MAX_QUANTITY },
                },
              },
            },
          },
        },
        response: {
          201: { ...order, description: 'The order (or, for a repeated Idempotency-Key, the first response to it)' },
          ...errorResponses(400, 401, 403, 409, 413, 422, 503),
        },
      },
      preValidation: authorize({ permission: 'write' }),
      handler: async (request, reply) => {
        const principal = principalOf(request);
        const key = request.headers['idempotency-key'];
        const result = await orders().create(request.ctx, {
          userId: principal.userId,
          items: request.body.items,
          paymentMethod: request.body.paymentMethod,
          ...(key === undefined ? {} : { idempotency: { key, principal: actorOf(principal) } }),
        });
        if (result.replayed) reply.header('idempotent-replayed', 'true');
        return reply.code(result.statusCode).send(orderBody(version, result.order));
      },
    });

    server.get<{ Querystring: ListQuery }>('/orders', {
      schema: {
        ...common,
        summary: "Orders, newest first, a cursor page at a time: your own, or (admin) anyone's",
        description: "Admins may filter by userId; a non-admin asking for another user's orders gets 403. createdFrom is inclusive, createdTo exclusive.",
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            status: { type: 'string', enum: [...ORDER_STATUSES] },
            userId: { type: 'string', pattern: '^usr_[0-9A-HJKMNP-TV-Z]{26}$', description: 'Admins only: orders of this user' },
            createdFrom: { type: 'string', format: 'date-time', description: 'Orders created at or after this instant' },
            createdTo: { type: 'string', format: 'date-time', description: 'Orders created before this instant' },
            ...pageQuery,
          },
        },
        response: { 200: { ...pageSchema(order), description: 'A page of orders, newest first' }, ...errorResponses(400, 401, 403) },
      },
      preValidation: authorize({ permission: 'read' }),
      handler: async (request) => {
        const { status, userId, createdFrom, createdTo, limit, cursor } = request.query;
        const page = await orders().list(request.ctx, {
          viewer: principalOf(request),
          status,
          userId,
          createdFrom: createdFrom === undefined ? undefined : new Date(createdFrom),
          createdTo: createdTo === undefined ? undefined : new Date(createdTo),
          limit,
          cursor,
        });
        return { data: page.data.map((o) => orderBody(version, o)), pagination: page.pagination };
      },
    });

    server.get<{ Params: IdParams }>('/orders/:id', {
      schema: {
        ...common,
        summary: "One order with its items (another user's order answers 404)",
        params: idParams,
        response: { 200: { ...order, description: 'The order with its items' }, ...errorResponses(400, 401, 404) },
      },
      preValidation: authorize({ permission: 'read' }),
      handler: async (request) => orderBody(version, await orders().get(request.ctx, { viewer: principalOf(request), id: request.params.id })),
    });

    server.get<{ Params: IdParams }>('/orders/:id/receipt', {
      schema: {
        ...common,
        summary: "A short-lived download link to the order's PDF receipt",
        description:
          'The owner of the order or an admin gets a link that downloads the receipt until expiresAt (RECEIPT_URL_TTL_SECONDS): an S3 ' +
          'presigned URL, or a signed /files/… link of svc serve when files are stored locally. Ask again for a new one once it ' +
          "expired. Another user's order answers 404, and so does an order whose receipt is not made yet (it is made after the " +
          'payment) or that will have none (failed, cancelled), with a detail saying which.',
        params: idParams,
        response: {
          200: {
            type: 'object',
            required: ['url', 'expiresAt'],
            additionalProperties: false,
            description: 'The download link and when it stops working',
            properties: {
              url: { type: 'string', format: 'uri', description: 'Downloads the receipt (application/pdf) without a credential until expiresAt' },
              expiresAt: { type: 'string', format: 'date-time' },
            },
          },
          ...errorResponses(400, 401, 404, 503),
        },
      },
      preValidation: authorize({ permission: 'read' }),
      handler: async (request) => {
        const { app } = server.svc;
        const link = await receiptLink(request.ctx, {
          files: app.files,
          viewer: principalOf(request),
          orderId: request.params.id,
          ttlSeconds: app.config.RECEIPT_URL_TTL_SECONDS,
        });
        return { url: link.url, expiresAt: link.expiresAt.toISOString() };
      },
    });

    server.post<{ Params: IdParams }>('/orders/:id/cancel', {
      schema: {
        ...common,
        summary: 'Cancel a pending order, putting its stock back',
        description:
          'Any other status answers 409 with the current one, processing included: its payment has begun (also while a charge ' +
          "whose outcome is unknown waits for Stripe), so only the payment's outcome ends it. Another user's order answers 404.",
        params: idParams,
        response: { 200: { ...order, description: 'The cancelled order; its stock is back on sale' }, ...errorResponses(400, 401, 403, 404, 409) },
      },
      preValidation: authorize({ permission: 'write' }),
      handler: async (request) => {
        // It takes no body: a client that sends one (a reason, a refund flag) learns that nothing read it.
        const body: unknown = request.body;
        if (body !== undefined && !(typeof body === 'object' && body !== null && Object.keys(body).length === 0)) {
          throw new DomainError('invalid', 'this route takes no body (an empty JSON object at most): nothing in it would be read', { field: 'body' });
        }
        return orderBody(version, await orders().cancel(request.ctx, { viewer: principalOf(request), id: request.params.id }));
      },
    });
  };
