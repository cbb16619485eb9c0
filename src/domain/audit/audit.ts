import type { Ctx } from '../shared/context.js';
import { AuditEntry } from './audit.entity.js';

/**
 * Records an audit row in the caller's unit of work, so it commits (or rolls back) with the write it
 * describes. Call it inside the transaction that makes the change.
 */
export function audit(ctx: Ctx, action: string, target: string, details: Record<string, unknown> = {}): AuditEntry {
  return ctx.em.create(AuditEntry, { actor: ctx.actor, action, target, details, traceId: ctx.traceId });
}
