import { LockMode } from '@mikro-orm/core';
import type { SqlEntityManager } from '@mikro-orm/sql';
import type { Ctx } from '../shared/context.js';
import { conflict, DomainError, invalid, notFound } from '../shared/errors.js';
import { keysetPage, pageLimit, type Page } from '../shared/pagination.js';
import { CURRENCY_PATTERN, toMinor } from '../shared/money.js';
import { Params } from '../shared/sql.js';
import { checkName } from '../shared/text.js';
import { audit } from '../audit/audit.js';
import type { Viewer } from '../auth/principal.js';
import { Product } from './product.entity.js';
import { NoCache, versions, type Cache } from '../shared/cache.js';

/** A product as clients see it; the price is integer minor units of `currency`. */
export interface ProductView {
  id: string;
  sku: string;
  name: string;
  price: number;
  currency: string;
  stock: number;
  active: boolean;
}

/**
 * A price as a client gives it: integer minor units with a currency (v2), or a decimal number of
 * major units (v1) in the given currency, or in the product's own currency on update.
 */
export type PriceInput = { amount: number; currency: string } | { major: number; currency?: string };

export interface CreateProductInput {
  sku: string;
  name: string;
  price: PriceInput;
  stock?: number;
  active?: boolean;
}

export interface UpdateProductInput {
  name?: string;
  price?: PriceInput;
  stock?: number;
  active?: boolean;
}

export interface ListProductsInput {
  viewer: Viewer;
  active?: boolean;
  limit?: number;
  cursor?: string;
}

// Totals of 100 lines of 1,000 units stay below 2^53 (integers exact in JSON and JavaScript).
export const MAX_PRICE = 10_000_000_000;
export const MAX_STOCK = 1_000_000_000;
export const SKU_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$';
const SKU = new RegExp(SKU_PATTERN);
const CURRENCY = new RegExp(CURRENCY_PATTERN);

/** A product as clients see it, from an entity or a raw row. */
export const toProductView = (p: ProductView): ProductView => ({
  id: p.id,
  sku: p.sku,
  name: p.name,
  price: p.price,
  currency: p.currency,
  stock: p.stock,
  active: p.active,
});

/** A products row as the list reads it. */
type ProductRow = ProductView & { created_at: Date };

/** The columns a product read shows (the list adds created_at for its cursor). */
const PRODUCT_SELECT = 'select p.id, p.sku, p.name, p.price, p.currency, p.stock, p.active from products p';

function checkSku(raw: string): string {
  if (!SKU.test(raw))
    throw invalid(`"${raw}" is not a SKU: use 1 to 64 letters, digits, dots, dashes or underscores, starting with a letter or digit`, { field: 'sku' });
  return raw;
}

function checkCurrency(raw: string): string {
  if (!CURRENCY.test(raw)) throw invalid(`"${raw}" is not an ISO 4217 currency code; use three capital letters such as USD`, { field: 'currency' });
  return raw;
}

function checkStock(raw: number): number {
  if (!Number.isInteger(raw) || raw < 0 || raw > MAX_STOCK) throw invalid(`the stock must be an integer from 0 to ${MAX_STOCK}`, { field: 'stock' });
  return raw;
}

/** Resolves a price input to minor units, in `fixedCurrency` when the product already has one. */
function resolvePrice(input: PriceInput, fixedCurrency?: string): { amount: number; currency: string } {
  const currency = checkCurrency(input.currency ?? fixedCurrency ?? '');
  if (fixedCurrency && currency !== fixedCurrency) {
    throw new DomainError('unprocessable', `the product is priced in ${fixedCurrency}; its currency cannot change (create a new product for ${currency})`, {
      field: 'price',
    });
  }
  const amount = 'amount' in input ? input.amount : toMinor(input.major, currency);
  if (amount === undefined) throw invalid(`the price has more decimals than ${currency} allows`, { field: 'price' });
  if (!Number.isInteger(amount) || amount < 0 || amount > MAX_PRICE) {
    throw invalid(`the price must be from 0 to ${MAX_PRICE} minor units of ${currency}`, { field: 'price' });
  }
  return { amount, currency };
}

/** The product catalog: everyone authenticated reads active products, admins manage them (audited). */
export class ProductsService {
  /** `cache`: where product reads are cached (never stale after a write; see cache.ts). */
  constructor(private readonly cache: Cache = new NoCache()) {}

  /** Lists products newest first, one cursor page at a time; only admins see (or filter by) inactive ones. */
  async list(ctx: Ctx, input: ListProductsInput): Promise<Page<ProductView>> {
    const limit = pageLimit(input.limit);
    const admin = input.viewer.role === 'admin';
    if (!admin && input.active === false) throw new DomainError('forbidden', 'only admins may list inactive products; leave out active=false');
    // One raw statement instead of a query builder and 21 hydrated entities: the list is the
    // catalog's hot read, and a page is only shown, never changed.
    const active = admin ? input.active : true;
    // Any change to any product (its stock included) makes every cached page stale. A page is loaded
    // from the primary: cached under the current version, a replica's lagging copy would outlive the
    // write that made it stale (replicas serve the lists that are not cached: orders).
    const entry = `products:list:${String(active)}:${limit}:${input.cursor ?? ''}`;
    return this.cache.get('products', versions.products, entry, () => {
      const where: string[] = [];
      const params = new Params();
      if (active !== undefined) where.push(`p.active = ${params.add(active)}`);
      return keysetPage<ProductRow, ProductView>(
        ctx,
        {
          from: 'select p.id, p.sku, p.name, p.price, p.currency, p.stock, p.active, p.created_at from products p',
          alias: 'p',
          where,
          params,
          limit,
          scope: { list: 'products', filters: { active } },
          cursor: input.cursor,
          primary: true,
        },
        toProductView,
      );
    });
  }

  /** One product by id; an inactive product is not found for anyone but admins. */
  async get(ctx: Ctx, input: { viewer: Viewer; id: string }): Promise<ProductView> {
    const key = versions.product(input.id);
    // Cached as it is (inactive ones too, and "none" as null); who may see it is decided per request.
    // Read from the primary, as the cached list pages are.
    // One prepared statement on the pool, as the list is: no EntityManager fork, no query builder, no
    // hydrated entity for a read that is only shown (README, Benchmarks).
    const product = await this.cache.get('products', key, key, async () => {
      const [row] = await ctx.sql<ProductView>(`${PRODUCT_SELECT} where p.id = $1`, [input.id]);
      return row ? toProductView(row) : null;
    });
    if (!product || (!product.active && input.viewer.role !== 'admin')) throw notFound(`no product ${input.id}`, { product: input.id });
    return product;
  }

  /** Adds a product to the catalog; a taken SKU is a conflict naming it. */
  async create(ctx: Ctx, input: CreateProductInput): Promise<ProductView> {
    const sku = checkSku(input.sku);
    const name = checkName(input.name);
    const price = resolvePrice(input.price);
    const stock = checkStock(input.stock ?? 0);
    const active = input.active ?? true;
    return ctx.transaction(async (tx) => {
      const taken = await tx.em.findOne(Product, { sku }, { fields: ['id'] });
      if (taken)
        throw conflict(`a product with SKU ${sku} already exists (${taken.id}); change that one or pick another SKU`, { field: 'sku', productId: taken.id });
      const product = tx.em.create(Product, { sku, name, price: price.amount, currency: price.currency, stock, active });
      await audit(tx, 'product.created', product.id, { sku, name, price: price.amount, currency: price.currency, stock, active });
      await tx.changed(versions.product(product.id), versions.products);
      return toProductView(product);
    });
  }

  /** Changes a product's name, price, stock or active flag; a change to nothing is not recorded. */
  async update(ctx: Ctx, id: string, input: UpdateProductInput): Promise<ProductView> {
    return ctx.transaction(async (tx) => {
      const product = await this.lock(tx.em, id);
      const next = {
        name: input.name === undefined ? product.name : checkName(input.name),
        price: input.price === undefined ? product.price : resolvePrice(input.price, product.currency).amount,
        stock: input.stock === undefined ? product.stock : checkStock(input.stock),
        active: input.active ?? product.active,
      };
      const changes: Record<string, { from: unknown; to: unknown }> = {};
      for (const key of ['name', 'price', 'stock', 'active'] as const) {
        if (next[key] !== product[key]) changes[key] = { from: product[key], to: next[key] };
      }
      if (Object.keys(changes).length > 0) {
        Object.assign(product, next);
        await audit(tx, 'product.updated', product.id, { sku: product.sku, changes });
        await tx.changed(versions.product(product.id), versions.products);
      }
      return toProductView(product);
    });
  }

  /** Takes a product off sale: it disappears for non-admins and cannot be ordered; existing orders keep it. */
  async deactivate(ctx: Ctx, id: string): Promise<ProductView> {
    return ctx.transaction(async (tx) => {
      const product = await this.lock(tx.em, id);
      if (product.active) {
        product.active = false;
        await audit(tx, 'product.deactivated', product.id, { sku: product.sku });
        await tx.changed(versions.product(product.id), versions.products);
      }
      return toProductView(product);
    });
  }

  private async lock(em: SqlEntityManager, id: string): Promise<Product> {
    const product = await em.findOne(Product, { id }, { lockMode: LockMode.PESSIMISTIC_WRITE });
    if (!product) throw notFound(`no product ${id}`, { product: id });
    return product;
  }
}
