import type { SqlEntityManager } from '@mikro-orm/sql';

// Rows per statement, as in housekeeping.ts: short statements, small lock and WAL bursts.
const BATCH = 5_000;

/**
 * Deletes published outbox rows older than `before` (they were kept for replay); pending rows are
 * never touched. Safe from every replica at once: a row another pass is deleting is skipped.
 */
export async function purgePublishedEvents(em: SqlEntityManager, before: Date): Promise<number> {
  let total = 0;
  for (;;) {
    const result = await em.execute<{ affectedRows: number }>(
      `delete from outbox_events where id in
         (select id from outbox_events where status = 'published' and published_at <= ? limit ${BATCH} for update skip locked)`,
      [before],
      'run',
    );
    total += result.affectedRows;
    if (result.affectedRows === 0) return total;
  }
}
