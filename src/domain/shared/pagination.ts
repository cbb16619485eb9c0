import { createHash, createHmac, createSecretKey, timingSafeEqual, type KeyObject } from 'node:crypto';
import type { Ctx } from './context.js';
import { invalid } from './errors.js';
import type { Params } from './sql.js';

/** The brief's page shape: `{"data": [...], "pagination": {"cursor": "...", "hasMore": true}}`. */
export interface Page<T> {
  data: T[];
  pagination: { cursor: string | null; hasMore: boolean };
}

export interface Keyset {
  createdAt: Date;
  id: string;
}

export const MAX_PAGE_SIZE = 100;

/** A list's page size: `limit`, or 20 when not given; anything but an integer from 1 to 100 is invalid input. */
export function pageLimit(limit: number | undefined): number {
  const size = limit ?? 20;
  if (!Number.isInteger(size) || size < 1 || size > MAX_PAGE_SIZE) throw invalid(`the limit must be an integer from 1 to ${MAX_PAGE_SIZE}`, { field: 'limit' });
  return size;
}

/** A filter value a list was asked for; undefined is the filter not given. */
export type FilterValue = string | number | boolean | Date | undefined;

/**
 * The list a cursor continues: its name (the same for the API's v1 and v2 and the CLI, which list
 * the same rows in the same order) and the filters its first page was asked with, as the list
 * applied them (a non-admin's orders are filtered by their own id whether or not they said so).
 */
export interface CursorScope {
  list: string;
  filters?: Record<string, FilterValue>;
}

/** A short digest of a list's filters: a cursor carries it, so a cursor reused with other filters is told apart. */
function filtersDigest(filters: Record<string, FilterValue> = {}): string {
  const given = Object.entries(filters)
    .filter((e): e is [string, Exclude<FilterValue, undefined>] => e[1] !== undefined)
    .map(([k, v]) => [k, v instanceof Date ? v.toISOString() : v] as const)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return createHash('sha256').update(JSON.stringify(given)).digest('base64url').slice(0, 11);
}

/**
 * Opaque, signed cursors: base64url of the list they belong to, a digest of its filters and the last
 * row's (createdAt, id), then an HMAC of it, so a cursor that was edited, truncated or made up is
 * refused rather than silently moving the page, and so is one taken to another list or to other
 * filters (its position would mean nothing there, or skip rows).
 */
export class CursorCodec {
  // Imported once: an HMAC keyed with a raw Buffer imports the key again on every cursor.
  private readonly key: KeyObject;

  constructor(key: Buffer) {
    this.key = createSecretKey(key);
  }

  /** The cursor that continues `scope` after this row. */
  encode(row: Keyset, scope: CursorScope): string {
    const payload = Buffer.from(JSON.stringify([scope.list, filtersDigest(scope.filters), row.createdAt.toISOString(), row.id])).toString('base64url');
    return `${payload}.${this.mac(payload)}`;
  }

  /** Reads a cursor this service issued for `scope`; anything else is invalid input naming `field`. */
  decode(cursor: string, scope: CursorScope, field = 'cursor'): Keyset {
    const bad = () => invalid('the cursor is not one this service issued; start again without it', { field });
    const m = /^([A-Za-z0-9_-]{1,200})\.([A-Za-z0-9_-]{22})$/.exec(cursor);
    if (!m) throw bad();
    const [, payload, mac] = m as unknown as [string, string, string];
    const expected = Buffer.from(this.mac(payload));
    if (!timingSafeEqual(Buffer.from(mac), expected)) throw bad();
    let parsed: unknown;
    try {
      parsed = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
    } catch {
      throw bad();
    }
    // A cursor of the earlier form (position only, before cursors named their list) is refused too.
    if (!Array.isArray(parsed) || parsed.length !== 4 || !parsed.every((p) => typeof p === 'string')) throw bad();
    const [list, digest, at, id] = parsed as [string, string, string, string];
    // Signed by this service, so the list it names is one of svc's own names, safe to show.
    if (list !== scope.list) {
      throw invalid(`the cursor belongs to another list (${list}), not to the ${scope.list} list; start this list again without it`, { field });
    }
    if (digest !== filtersDigest(scope.filters)) {
      throw invalid('the cursor was made with other filters; ask with the filters of the page it came from, or start again without it', { field });
    }
    const createdAt = new Date(at);
    if (Number.isNaN(createdAt.getTime()) || !/^[a-z]{3}_[0-9A-Z]{26}$/.test(id)) throw bad();
    return { createdAt, id };
  }

  private mac(payload: string): string {
    return createHmac('sha256', this.key).update(payload).digest('base64url').slice(0, 22);
  }
}

/**
 * Keyset condition for rows strictly after the cursor in (createdAt, id) descending order: newest
 * first, stable while rows are inserted concurrently.
 */
export function afterCursor(key: Keyset) {
  return { $or: [{ createdAt: { $lt: key.createdAt } }, { createdAt: key.createdAt, id: { $lt: key.id } }] };
}

/** The same condition in raw SQL, on the `created_at` and `id` columns of `alias`. */
export function afterCursorSql(alias: string, key: Keyset, params: Params): string {
  return `(${alias}.created_at, ${alias}.id) < (${params.add(key.createdAt)}, ${params.add(key.id)})`;
}

/** Cuts a fetched `limit + 1` rows into a page of `scope`; `keyOf` gives a row's (createdAt, id) for the cursor. */
export function toPage<R, T>(rows: R[], limit: number, map: (row: R) => T, cursors: CursorCodec, scope: CursorScope, keyOf: (row: R) => Keyset): Page<T> {
  const hasMore = rows.length > limit;
  const kept = hasMore ? rows.slice(0, limit) : rows;
  const last = kept.at(-1);
  return { data: kept.map(map), pagination: { cursor: hasMore && last ? cursors.encode(keyOf(last), scope) : null, hasMore } };
}

/**
 * One page of a raw list statement, newest first: `from` is the statement's select and from clause
 * (the table under `alias`, whose rows have `id` and `created_at`), `where` its conditions with
 * their values in `params`; the cursor's condition and the keyset order and limit are added here.
 * `scope` names the list and the filters its cursors are bound to.
 */
export async function keysetPage<R extends { id: string; created_at: Date }, T>(
  ctx: Ctx,
  statement: { from: string; alias: string; where: string[]; params: Params; limit: number; scope: CursorScope; cursor?: string; primary?: boolean },
  map: (row: R) => T,
): Promise<Page<T>> {
  const { from, alias, where, params, limit, scope } = statement;
  const cursors = await ctx.cursors();
  if (statement.cursor !== undefined) where.push(afterCursorSql(alias, cursors.decode(statement.cursor, scope), params));
  // The limit stays in the text: a prepared statement with a parameter for it would be planned
  // for an unknown page size.
  // A page of a list tolerates replication lag: a replica reads it, unless the caller wrote just now,
  // or the page is loaded into a shared cache (`primary`), which must never hold what a replica lags behind.
  const rows = await (statement.primary ? ctx.sql : ctx.laggingSql)<R>(
    `${from} ${where.length ? `where ${where.join(' and ')}` : ''} order by ${alias}.created_at desc, ${alias}.id desc limit ${limit + 1}`,
    params.values,
  );
  return toPage(rows, limit, map, cursors, scope, (row) => ({ id: row.id, createdAt: row.created_at }));
}
