import { isRateLimited, RATE_LIMIT_HEADERS } from './rate-limits.js';
import { toMajor } from '../domain/shared/money.js';

/**
 * What differs between API versions: only how money is shown. v1 (the brief's shapes) uses a
 * decimal number of major units beside a currency; v2 uses {amount: minor units, currency}.
 */
export interface ApiVersion {
  name: 'v1' | 'v2';
  prefix: string;
  /** JSON schema of a money value in responses. */
  moneySchema: Record<string, unknown>;
  money(amount: number, currency: string): number | { amount: number; currency: string };
}

export const V1: ApiVersion = {
  name: 'v1',
  prefix: '/api/v1',
  moneySchema: { type: 'number', description: 'Decimal amount in major units of the currency (49.5 = 49.50)' },
  money: (amount, currency) => toMajor(amount, currency),
};

export const V2: ApiVersion = {
  name: 'v2',
  prefix: '/api/v2',
  moneySchema: {
    type: 'object',
    description: 'Amount in integer minor units of the currency (4950 USD = 49.50 USD)',
    required: ['amount', 'currency'],
    properties: { amount: { type: 'integer' }, currency: { type: 'string', pattern: '^[A-Z]{3}$' } },
  },
  money: (amount, currency) => ({ amount, currency }),
};

/** Standard error responses for a route's schema, so OpenAPI lists them. */
export function errorResponses(...statuses: number[]) {
  return Object.fromEntries(
    statuses.map((s) => [s, { description: PROBLEM_DESCRIPTIONS[s] ?? 'Problem', content: { 'application/problem+json': { schema: { $ref: 'Problem#' } } } }]),
  );
}

/** A 503's header: svc says when to try again (a busy pool or bulkhead says when it expects room; otherwise 1 s). */
const RETRY_AFTER_HEADER = { 'Retry-After': { type: 'integer', minimum: 0, description: 'Seconds to wait before trying again' } } as const;

const { 'Retry-After': _retryAfter, ...COUNTED_HEADERS } = RATE_LIMIT_HEADERS;

/** A documented response with the RateLimit-Policy and RateLimit fields (a JSON schema or a response object, both take `headers`). */
function withCountedHeaders(response: unknown): unknown {
  if (typeof response !== 'object' || response === null) return response;
  const own = (response as { headers?: Record<string, unknown> }).headers;
  return { ...response, headers: { ...own, ...COUNTED_HEADERS } };
}

/**
 * The refusals that can answer any route, whatever its handler does, added to its documented
 * responses: 429 on every route the rate limits count (with Retry-After and the RateLimit fields),
 * and 503 with Retry-After on every API route (a statement over DATABASE_STATEMENT_TIMEOUT_MS, no
 * free database connection in time, a busy part of svc). Health routes, /metrics and the Stripe
 * webhook are not rate-limited; /health/ready's 503 (a dependency down) is its own, without Retry-After.
 */
export function withRefusals(url: string, response: Record<string, unknown>): Record<string, unknown> {
  const problem = (status: number, headers: Record<string, unknown>) => {
    const own = response[status] as { description?: string } | undefined;
    return { ...errorResponses(status)[status], ...(own?.description ? { description: own.description } : {}), headers };
  };
  const limited = isRateLimited(url);
  // A counted request carries the RateLimit fields whatever it answers (with the limits on).
  const counted = limited ? Object.fromEntries(Object.entries(response).map(([status, r]) => [status, withCountedHeaders(r)])) : response;
  return {
    ...counted,
    ...(limited ? { 429: problem(429, RATE_LIMIT_HEADERS) } : {}),
    ...(/^\/api\/v\d+\//.test(url) ? { 503: problem(503, limited ? { ...RETRY_AFTER_HEADER, ...COUNTED_HEADERS } : RETRY_AFTER_HEADER) } : {}),
  };
}

const PROBLEM_DESCRIPTIONS: Record<number, string> = {
  400: 'Invalid input: the problem names the field',
  401: 'No valid credential',
  403: 'The role may not do this',
  404: 'Not found (or not yours)',
  409: 'Conflicts with the current state',
  413: 'Body too large',
  415: 'Unsupported content type',
  422: 'Understood but cannot be processed',
  429: 'Too many requests: a rate limit (named in RateLimit-Policy) is used up; retry after Retry-After seconds',
  503: 'Busy or a dependency is unavailable (a statement timeout, no free database connection): retry after Retry-After seconds',
};

/** The brief's page envelope around an item schema. */
export function pageSchema(item: Record<string, unknown>) {
  return {
    type: 'object',
    required: ['data', 'pagination'],
    properties: {
      data: { type: 'array', items: item },
      pagination: {
        type: 'object',
        required: ['cursor', 'hasMore'],
        properties: { cursor: { type: ['string', 'null'] }, hasMore: { type: 'boolean' } },
      },
    },
  };
}

/** The path parameters of a route on one resource: `id`, an id with the resource's prefix (`ord`, `prd`, `usr`). */
export function idParamsSchema(prefix: string, noun: string) {
  return {
    type: 'object',
    required: ['id'],
    additionalProperties: false,
    properties: { id: { type: 'string', pattern: `^${prefix}_[0-9A-HJKMNP-TV-Z]{26}$`, description: `${noun} id (${prefix}_…)` } },
  } as const;
}

export interface IdParams {
  id: string;
}

/** Query parameters of every list route: page size (at most 100) and the opaque cursor. */
export const pageQuery = {
  limit: { type: 'integer', minimum: 1, maximum: 100, default: 20, description: 'Items per page' },
  cursor: { type: 'string', maxLength: 200, description: 'The pagination.cursor of the previous page' },
} as const;
