import type { SqlEntityManager } from '@mikro-orm/sql';
import { BATCH, inBatches } from '../housekeeping.js';

/**
 * Deletes the consumers' inbox rows (processed_messages) recorded before `before`: a message that
 * old is no longer expected again. Safe from every replica at once: a row another pass is deleting
 * is skipped.
 */
export async function purgeProcessedMessages(em: SqlEntityManager, before: Date): Promise<number> {
  return inBatches(
    em,
    `delete from processed_messages where (consumer, message_id) in
       (select consumer, message_id from processed_messages where processed_at <= $1 limit ${BATCH} for update skip locked)`,
    [before],
  );
}
