import type { SqlEntityManager } from '@mikro-orm/sql';
import { BATCH, inBatches } from '../housekeeping.js';

/**
 * Deletes the Stripe webhook inbox rows (stripe_events) received before `before`: Stripe stops
 * redelivering an event after 3 days, so an id that old is not expected again. Safe from every
 * replica at once: a row another pass is deleting is skipped.
 */
export async function purgeStripeEvents(em: SqlEntityManager, before: Date): Promise<number> {
  return inBatches(
    em,
    `delete from stripe_events where id in
       (select id from stripe_events where received_at <= $1 limit ${BATCH} for update skip locked)`,
    [before],
  );
}
