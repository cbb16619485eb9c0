import { requireTransaction, type Ctx } from '../shared/context.js';
import { newId } from '../shared/ids.js';

/**
 * Writes an audit row now, in the caller's transaction, so it commits (or rolls back) with the
 * change it describes. Outside a transaction it throws (an audit row must never commit alone).
 */
export async function audit(ctx: Ctx, action: string, target: string, details: Record<string, unknown> = {}): Promise<void> {
  requireTransaction(ctx, `the audit row ${action}`);
  await ctx.sql(`insert into audit_log (id, actor, action, target, details, trace_id, created_at) values ($1, $2, $3, $4, $5::jsonb, $6, $7)`, [
    newId('aud'),
    ctx.actor,
    action,
    target,
    JSON.stringify(details),
    ctx.traceId,
    new Date(),
  ]);
}
