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

const PROBLEM_DESCRIPTIONS: Record<number, string> = {
  400: 'Invalid input: the problem names the field',
  401: 'No valid credential',
  403: 'The role may not do this',
  404: 'Not found (or not yours)',
  409: 'Conflicts with the current state',
  413: 'Body too large',
  415: 'Unsupported content type',
  422: 'Understood but cannot be processed',
  429: 'Too many attempts: wait for the Retry-After seconds',
  503: 'A dependency is unavailable; try again',
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
