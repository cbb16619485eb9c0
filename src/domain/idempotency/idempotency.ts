import { createHash } from 'node:crypto';
import type { Params, Sql } from '../shared/sql.js';
import { DomainError, invalid } from '../shared/errors.js';

/** How long a key is remembered; after that the same key is a new request. */
export const IDEMPOTENCY_TTL_HOURS = 24;

/** 1 to 255 visible ASCII characters (no spaces or control characters). */
export const IDEMPOTENCY_KEY_PATTERN = '^[\\x21-\\x7E]{1,255}$';
const KEY = new RegExp(IDEMPOTENCY_KEY_PATTERN);

/** A request made with an Idempotency-Key: who sent it, the key, and a hash of what was asked. */
export interface IdempotentRequest {
  principal: string;
  key: string;
  requestHash: string;
}

/** The first response to a key, replayed to every repeat. */
export interface StoredResponse<T = unknown> {
  statusCode: number;
  body: T;
}

/** Checks an Idempotency-Key header value. */
export function checkIdempotencyKey(raw: string): string {
  if (!KEY.test(raw)) throw invalid('the Idempotency-Key must be 1 to 255 visible ASCII characters (no spaces), such as a UUID', { field: 'Idempotency-Key' });
  return raw;
}

/** SHA-256 of what the request asks for (operation and canonical body), so another request under the same key is recognised. */
export function requestHash(operation: string, body: unknown): string {
  return createHash('sha256').update(operation).update('\n').update(JSON.stringify(body)).digest('hex');
}

/**
 * The statement that claims a key (its values added to `params`), as a CTE to run first in the statement that makes the effect
 * (gate every write on `exists (select 1 from <cte>)`), so the claim and the effect commit together.
 * It stores the response the effect will have. It yields one row when the key was new or expired
 * and is now this request's, none when the key is taken: then `replay` reads the first response.
 *
 * On PostgreSQL a concurrent claim of the same key waits on the primary key until the first
 * statement commits, then finds the key taken. An expired row is overwritten by the same upsert.
 * PGlite runs one statement at a time, so the same holds there. When the effect turns out to be
 * impossible after the claim (the statement commits the claim alone), the caller `release`s it.
 */
export function claimStatement(request: IdempotentRequest, response: StoredResponse, params: Params): string {
  const p = (value: unknown) => params.add(value);
  return `insert into idempotency_keys (principal, key, request_hash, status_code, response_body, created_at, expires_at)
      values (${p(request.principal)}, ${p(request.key)}, ${p(request.requestHash)}, ${p(response.statusCode)}, ${p(JSON.stringify(response.body))}::jsonb,
              now(), now() + make_interval(hours => ${IDEMPOTENCY_TTL_HOURS}))
      on conflict (principal, key) do update
        set request_hash = excluded.request_hash, status_code = excluded.status_code, response_body = excluded.response_body,
            created_at = excluded.created_at, expires_at = excluded.expires_at
        where idempotency_keys.expires_at <= now()
      returning 1 as claimed`;
}

/**
 * The first response to a key whose claim found it taken (run as a new statement, so it sees the
 * row a concurrent first request committed). Another request under the same key is unprocessable.
 */
export async function replay(sql: Sql, request: IdempotentRequest): Promise<StoredResponse> {
  const [stored] = await sql<{ request_hash: string; status_code: number; response_body: unknown }>(
    'select request_hash, status_code, response_body from idempotency_keys where principal = $1 and key = $2',
    [request.principal, request.key],
  );
  // Gone between the two statements (released or cleaned up): the client may simply retry.
  if (!stored) throw new DomainError('retryable', `the Idempotency-Key ${request.key} was released while this request was in flight; send it again`);
  if (stored.request_hash !== request.requestHash) {
    throw new DomainError('unprocessable', `the Idempotency-Key ${request.key} was already used with a different request; use a new key for a new request`, {
      field: 'Idempotency-Key',
    });
  }
  return { statusCode: stored.status_code, body: stored.response_body };
}

/** Gives a key back when the claim committed without its effect (a failed attempt stores nothing, so it may be retried). */
export async function release(sql: Sql, request: IdempotentRequest, response: StoredResponse): Promise<void> {
  // Only if it still holds this attempt's response: never a later claim of the same key.
  await sql('delete from idempotency_keys where principal = $1 and key = $2 and response_body = $3::jsonb', [
    request.principal,
    request.key,
    JSON.stringify(response.body),
  ]);
}
