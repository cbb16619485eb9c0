import type { SqlEntityManager } from '@mikro-orm/sql';

/** Rows deleted by one housekeeping pass. */
export interface Purged {
  idempotencyKeys: number;
  refreshTokens: number;
  loginThrottles: number;
}

// Rows per statement: short statements keep locks and WAL bursts small on a busy table.
const BATCH = 5_000;

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
       (select principal, key from idempotency_keys where expires_at <= ? limit ${BATCH} for update skip locked)`,
    [now],
  );
  const refreshTokens = await inBatches(
    em,
    `delete from refresh_tokens where family_id in
       (select family_id from refresh_tokens group by family_id having max(expires_at) <= ? limit ${BATCH})`,
    [now],
  );
  // A count is spent once it has decayed to zero: the row then means what no row means.
  const loginThrottles = await inBatches(
    em,
    `delete from login_throttles where key in
       (select key from login_throttles where drained_at <= ? limit ${BATCH} for update skip locked)`,
    [now],
  );
  return { idempotencyKeys, refreshTokens, loginThrottles };
}

async function inBatches(em: SqlEntityManager, sql: string, params: unknown[]): Promise<number> {
  let total = 0;
  for (;;) {
    const result = await em.execute<{ affectedRows: number }>(sql, params, 'run');
    total += result.affectedRows;
    if (result.affectedRows === 0) return total;
  }
}
