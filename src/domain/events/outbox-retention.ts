import type { SqlEntityManager } from '@mikro-orm/sql';
import { BATCH, inBatches } from '../housekeeping.js';

/**
 * Deletes published outbox rows older than `before` (they were kept for replay); pending rows are
 * never touched. Safe from every replica at once: a row another pass is deleting is skipped.
 */
export async function purgePublishedEvents(em: SqlEntityManager, before: Date): Promise<number> {
  return inBatches(
    em,
    `delete from outbox_events where id in
       (select id from outbox_events where status = 'published' and published_at <= $1 limit ${BATCH} for update skip locked)`,
    [before],
  );
}
