import { requireTransaction, type Ctx } from '../shared/context.js';
import { newId } from '../shared/ids.js';
import type { EventType } from './events.js';

/** The columns of an outbox row as `emit` and the statements that write their own (order creation) fill them. */
export const OUTBOX_INSERT = 'insert into outbox_events (id, type, aggregate_id, payload, traceparent, status, attempts, available_at, created_at)';

/**
 * Writes an event to the outbox now, in the caller's transaction, so it is published if and only if
 * the change it announces commits (the relay publishes pending rows). Outside a transaction it
 * throws. Returns the event's id (`evt_…`), the message id consumers de-duplicate by.
 */
export async function emit(ctx: Ctx, type: EventType, aggregateId: string, payload: Record<string, unknown>): Promise<string> {
  requireTransaction(ctx, `the ${type} event`);
  const id = newId('evt');
  const now = new Date();
  await ctx.sql(`${OUTBOX_INSERT} values ($1, $2, $3, $4::jsonb, $5, 'pending', 0, $6, $6)`, [
    id,
    type,
    aggregateId,
    JSON.stringify(payload),
    ctx.traceparent ?? null,
    now,
  ]);
  return id;
}
