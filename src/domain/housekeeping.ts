import type { SqlEntityManager } from '@mikro-orm/sql';
import { withoutStatementTimeout } from './shared/sql.js';

/** Rows deleted by one housekeeping pass. */
export interface Purged {
  idempotencyKeys: number;
  refreshTokens: number;
  loginThrottles: number;
}

// Rows per statement: short statements keep locks and WAL bursts small on a busy table.
export const BATCH = 5_000;

/**
 * Deletes what can no longer be used: idempotency keys past their 24 hours, refresh-token
 * families whose every token has expired (a live family keeps its used tokens, so presenting an old
 * one is still recognised as reuse), and login-attempt counts that have decayed to zero.
 * Safe to run from every replica at once.
 */
export async function purgeExpired(em: SqlEntityManager, now = new Date()): Promise<Purged> {
  const idempotencyKeys = await inBatches(
    em,
    `delete from idempotency_keys where (principal, key) in
       (select principal, key from idempotency_keys where expires_at <= $1 limit ${BATCH} for update skip locked)`,
    [now],
  );
  const refreshTokens = await inBatches(
    em,
    `delete from refresh_tokens where family_id in
       (select family_id from refresh_tokens group by family_id having max(expires_at) <= $1 limit ${BATCH})`,
    [now],
  );
  // A count is spent once it has decayed to zero: the row then means what no row means.
  const loginThrottles = await inBatches(
    em,
    `delete from login_throttles where key in
       (select key from login_throttles where drained_at <= $1 limit ${BATCH} for update skip locked)`,
    [now],
  );
  return { idempotencyKeys, refreshTokens, loginThrottles };
}

/**
 * Runs a delete again and again (each batch in its own transaction) until it deletes nothing; the rows
 * it deleted. A batch runs without the service's statement timeout (DATABASE_STATEMENT_TIMEOUT_MS, meant
 * for the API's queries): a first pass over a backlog may find its rows slowly, and giving up would only
 * leave the backlog to grow.
 */
export async function inBatches(em: SqlEntityManager, statement: string, params: unknown[]): Promise<number> {
  let total = 0;
  for (;;) {
    const [{ deleted }] = (await withoutStatementTimeout(em, (sql) =>
      sql<{ deleted: number }>(`with d as (${statement} returning 1) select count(*) as deleted from d`, params),
    )) as [{ deleted: number }];
    total += deleted;
    if (deleted === 0) return total;
  }
}
