import type { Ctx } from '../domain/shared/context.js';

/**
 * The worker's one transaction boundary: runs `fn` in a transaction on the context's
 * EntityManager and hands it a context whose `em` is the transaction's, so every statement the
 * consumer or the relay runs through it (`query(tx.em, …)`, the ORM's flush) commits or rolls back
 * together. When the domain's `ctx.transaction(fn)` lands, this body becomes `ctx.transaction(fn)`.
 */
export function inTransaction<T>(ctx: Ctx, fn: (tx: Ctx) => Promise<T>): Promise<T> {
  return ctx.em.transactional((em) =>
    fn({
      actor: ctx.actor,
      traceId: ctx.traceId,
      em,
      sql: ctx.sql,
      cursors: () => ctx.cursors(),
    }),
  );
}
