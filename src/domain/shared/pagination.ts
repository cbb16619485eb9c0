import { invalid } from './errors.js';

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

/** An opaque cursor: base64url of the last row's (createdAt, id). */
export function encodeCursor(key: Keyset): string {
  return Buffer.from(JSON.stringify([key.createdAt.toISOString(), key.id])).toString('base64url');
}

/** Reads a cursor made by encodeCursor; anything else (tampered, truncated) is invalid input. */
export function decodeCursor(cursor: string, field = 'cursor'): Keyset {
  const bad = () => invalid('the cursor is not one this service issued; start again without it', { field });
  if (!/^[A-Za-z0-9_-]{1,200}$/.test(cursor)) throw bad();
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    throw bad();
  }
  if (!Array.isArray(parsed) || parsed.length !== 2 || typeof parsed[0] !== 'string' || typeof parsed[1] !== 'string') throw bad();
  const createdAt = new Date(parsed[0]);
  if (Number.isNaN(createdAt.getTime()) || createdAt.toISOString() !== parsed[0] || !/^[a-z]{3}_[0-9A-Z]{26}$/.test(parsed[1])) throw bad();
  return { createdAt, id: parsed[1] };
}

/**
 * Keyset condition for rows strictly after the cursor in (createdAt, id) descending order: newest
 * first, stable while rows are inserted concurrently.
 */
export function afterCursor(key: Keyset) {
  return { $or: [{ createdAt: { $lt: key.createdAt } }, { createdAt: key.createdAt, id: { $lt: key.id } }] };
}

/** Cuts a fetched `limit + 1` rows into a page. */
export function toPage<R extends Keyset, T>(rows: R[], limit: number, map: (row: R) => T): Page<T> {
  const hasMore = rows.length > limit;
  const kept = hasMore ? rows.slice(0, limit) : rows;
  const last = kept.at(-1);
  return { data: kept.map(map), pagination: { cursor: hasMore && last ? encodeCursor(last) : null, hasMore } };
}
