import type { FastifyPluginAsync } from 'fastify';
import { MAX_PRICE, MAX_STOCK, SKU_PATTERN, type PriceInput, type ProductView } from '../../domain/catalog/products.service.js';
import { CURRENCY_PATTERN } from '../../domain/shared/money.js';
import { authorize, BEARER, principalOf } from '../auth.js';
import { errorResponses, idParamsSchema, pageQuery, pageSchema, type ApiVersion, type IdParams } from '../versions.js';

/** A product as a version shows it: `{id, sku, name, price, currency, stock, active}`, price per version. */
export function productSchema(version: ApiVersion) {
  const properties = {
    id: { type: 'string', description: 'prd_ followed by a ULID' },
    sku: { type: 'string' },
    name: { type: 'string' },
    price: version.moneySchema,
    currency: { type: 'string', pattern: CURRENCY_PATTERN, description: 'ISO 4217 code' },
    stock: { type: 'integer', description: 'Units available to order' },
    active: { type: 'boolean', description: 'On sale; inactive products are visible to admins only' },
  };
  return { type: 'object', required: Object.keys(properties), additionalProperties: false, properties };
}

export const productBody = (version: ApiVersion, p: ProductView) => ({ ...p, price: version.money(p.price, p.currency) });

/**
 * A price in a request, in the same shape the version answers with: v1 a decimal number of major
 * units (beside `currency`), v2 `{amount, currency}` in integer minor units.
 */
function priceInputSchema(version: ApiVersion) {
  return version.name === 'v1'
    ? { type: 'number', minimum: 0, maximum: MAX_PRICE, description: 'Decimal amount in major units of the currency (49.5 = 49.50)' }
    : {
        type: 'object',
        additionalProperties: false,
        required: ['amount', 'currency'],
        properties: {
          amount: { type: 'integer', minimum: 0, maximum: MAX_PRICE, description: 'Integer minor units (4950 = 49.50 USD)' },
          currency: { type: 'string', pattern: CURRENCY_PATTERN, description: 'ISO 4217 code' },
        },
      };
}

type VersionPrice = number | { amount: number; currency: string };

/** Turns a request price into the domain's input; v1 numbers are major units of `currency` (or of the product's). */
const toPriceInput = (price: VersionPrice, currency?: string): PriceInput =>
  typeof price === 'number' ? { major: price, ...(currency ? { currency } : {}) } : price;

const idParams = idParamsSchema('prd', 'Product');

interface CreateBody {
  sku: string;
  name: string;
  price: VersionPrice;
  currency?: string;
  stock?: number;
  active?: boolean;
}

/** The catalog: list and get for everyone authenticated; create, update and deactivate for admins. */
export const productRoutes =
  (version: ApiVersion): FastifyPluginAsync =>
  async (server) => {
    const product = productSchema(version);
    const products = () => server.svc.app.products;
    const common = { tags: ['products'], security: BEARER };
    const stock = { type: 'integer', minimum: 0, maximum: MAX_STOCK, description: 'Units available to order' };

    server.get<{ Querystring: { active?: boolean; limit: number; cursor?: string } }>('/products', {
      schema: {
        ...common,
        summary: 'Products, newest first, a cursor page at a time',
        description: 'Everyone authenticated sees active products; admins see all and may filter by `active`.',
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: { active: { type: 'boolean', description: 'Admins only: true for products on sale, false for deactivated ones' }, ...pageQuery },
        },
        response: { 200: { ...pageSchema(product), description: 'A page of products, newest first' }, ...errorResponses(400, 401, 403) },
      },
      preValidation: authorize({ permission: 'read' }),
      handler: async (request) => {
        const { active, limit, cursor } = request.query;
        const page = await products().list(request.ctx, { viewer: principalOf(request), active, limit, cursor });
        return { data: page.data.map((p) => productBody(version, p)), pagination: page.pagination };
      },
    });

    server.get<{ Params: IdParams }>('/products/:id', {
      schema: {
        ...common,
        summary: 'One product (inactive ones are found by admins only)',
        params: idParams,
        response: { 200: { ...product, description: 'The product' }, ...errorResponses(400, 401, 404) },
      },
      preValidation: authorize({ permission: 'read' }),
      handler: async (request) => productBody(version, await products().get(request.ctx, { viewer: principalOf(request), id: request.params.id })),
    });

    const createProperties: Record<string, unknown> = {
      sku: { type: 'string', pattern: SKU_PATTERN, maxLength: 64, description: 'Unique stock-keeping unit' },
      name: { type: 'string', minLength: 1, maxLength: 200 },
      price: priceInputSchema(version),
      ...(version.name === 'v1' ? { currency: { type: 'string', pattern: CURRENCY_PATTERN, description: 'ISO 4217 code, capitals' } } : {}),
      stock: { ...stock, default: 0 },
      active: { type: 'boolean', default: true },
    };
    server.post<{ Body: CreateBody }>('/products', {
      schema: {
        ...common,
        summary: 'Add a product (admin; audited)',
        description: 'A taken SKU answers 409.',
        body: {
          type: 'object',
          additionalProperties: false,
          required: version.name === 'v1' ? ['sku', 'name', 'price', 'currency'] : ['sku', 'name', 'price'],
          properties: createProperties,
        },
        response: { 201: { ...product, description: 'The new product' }, ...errorResponses(400, 401, 403, 409) },
      },
      preValidation: authorize({ permission: 'write', adminOnly: true }),
      handler: async (request, reply) => {
        const { price, currency, ...rest } = request.body;
        const created = await products().create(request.ctx, { ...rest, price: toPriceInput(price, currency) });
        return reply.code(201).send(productBody(version, created));
      },
    });

    server.patch<{ Params: IdParams; Body: { name?: string; price?: VersionPrice; stock?: number; active?: boolean } }>('/products/:id', {
      schema: {
        ...common,
        summary: "Change a product's name, price, stock or active flag (admin; audited)",
        description:
          "Only these four can change; any other property is rejected. A price is in the product's currency (v2: a different currency answers 422). Stock is set, not added to.",
        params: idParams,
        body: {
          type: 'object',
          additionalProperties: false,
          minProperties: 1,
          properties: { name: { type: 'string', minLength: 1, maxLength: 200 }, price: priceInputSchema(version), stock, active: { type: 'boolean' } },
        },
        response: { 200: { ...product, description: 'The product as changed' }, ...errorResponses(400, 401, 403, 404, 422) },
      },
      preValidation: authorize({ permission: 'write', adminOnly: true }),
      handler: async (request) => {
        const { price, ...rest } = request.body;
        const updated = await products().update(request.ctx, request.params.id, { ...rest, ...(price === undefined ? {} : { price: toPriceInput(price) }) });
        return productBody(version, updated);
      },
    });

    server.post<{ Params: IdParams }>('/products/:id/deactivate', {
      schema: {
        ...common,
        summary: 'Take a product off sale (admin; audited)',
        description:
          'It can no longer be ordered and is hidden from non-admins; orders that have it keep it. Deactivating an inactive product changes nothing.',
        params: idParams,
        response: { 200: { ...product, description: 'The product, now inactive' }, ...errorResponses(400, 401, 403, 404) },
      },
      preValidation: authorize({ permission: 'write', adminOnly: true }),
      handler: async (request) => productBody(version, await products().deactivate(request.ctx, request.params.id)),
    });
  };
