import type { Ctx } from '../domain/shared/context.js';

/**
 * The worker's one transaction boundary: runs `fn` in a transaction (the domain's
 * `ctx.transaction`), so every statement the consumer or the relay runs through the context it is
 * handed (`tx.sql`, `tx.em` and its flush, `audit`, `emit`) commits or rolls back together.
 */
export function inTransaction<T>(ctx: Ctx, fn: (tx: Ctx) => Promise<T>): Promise<T> {
  return ctx.transaction(fn);
}
