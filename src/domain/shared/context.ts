import { randomBytes } from 'node:crypto';
import type { SqlEntityManager } from '@mikro-orm/sql';
import type { CursorCodec } from './pagination.js';
import { sqlOn, type Sql } from './sql.js';

/** Who is acting and where: passed first to every service method. */
export interface Ctx {
  /** `cli:<os user>` for operators, `usr_…` for API users, `key_…` for API keys. */
  actor: string;
  /** W3C trace id of the request or command, written into logs and audit rows. */
  traceId: string;
  /**
   * W3C trace context of this request, command or message (`00-<traceId>-<spanId>-01`), carried by
   * the events it causes so the trace continues in the worker.
   */
  readonly traceparent?: string;
  /**
   * An EntityManager of its own for this request, message or command, forked on first use (a fork
   * costs several objects; a request answered by plain statements never needs one). Inside
   * `transaction`, the transaction's EntityManager: what it has changed is flushed before commit.
   */
  readonly em: SqlEntityManager;
  /**
   * Runs a statement (`$1`, `$2` … parameters; see sql.ts `query`): on the pool outside a
   * transaction, in the transaction inside `transaction`.
   */
  sql: Sql;
  /**
   * Runs a read that tolerates replication lag (a list, the catalog): on a read replica when
   * DATABASE_REPLICA_URLS is set and this context's actor has not written recently (read your own
   * writes), otherwise exactly as `sql`. Inside a transaction it is the transaction's `sql`.
   */
  laggingSql: Sql;
  /**
   * Where `laggingSql` reads now: 'read' (a replica) or 'write' (the primary), for the ORM's
   * `connectionType`. Asynchronous: with REDIS_URL, a write through another instance is looked up there.
   */
  readConnection(): Promise<'read' | 'write'>;
  /** Whether this context is bound to a transaction (the `tx` that `transaction` passes). */
  readonly inTransaction: boolean;
  /**
   * Runs `fn` as one unit of work in one transaction: everything done through the `tx` it is given
   * (`tx.sql`, `tx.em`, `audit(tx, …)`, `emit(tx, …)`) commits together when `fn` resolves (after
   * the EntityManager's changes are flushed), or not at all when it throws. Called on a context that
   * is already in a transaction, `fn` joins it. Never use the outer context inside `fn`: PGlite has
   * one connection, held by the transaction, so a statement outside it would wait forever.
   */
  transaction<T>(fn: (tx: Ctx) => Promise<T>): Promise<T>;
  /** The deployment's cursor codec (its key is read from the database once per process). */
  cursors(): Promise<CursorCodec>;
  /**
   * Says that this unit of work changed what cached reads of these versions show (see cache.ts
   * `versions`). Inside `transaction` they are invalidated once it has committed, before
   * `transaction` resolves (so before the response); outside one, now. Every write to orders,
   * products, payments or disputes calls it.
   */
  changed(...versions: string[]): Promise<void>;
}

export interface ContextInput {
  actor: string;
  traceId?: string;
  /** The caller's span, when there is one; by default a new span of `traceId`. */
  traceparent?: string;
}

/** What every context of a process shares: how to fork an EntityManager, the pool's runner, the cursor codec. */
export interface ContextDeps {
  fork: () => SqlEntityManager;
  sql: Sql;
  /** The runner on a read replica, when there are replicas. */
  replicaSql?: Sql;
  /** Whether `actor` may read from a replica now (it has not written within the read-your-writes window). Never throws. */
  mayReadReplica?: (actor: string) => boolean | Promise<boolean>;
  cursors: () => Promise<CursorCodec>;
  /**
   * Invalidates cached reads: never throws in svc serve and svc worker (an invalidation that could
   * not reach Redis is owed, see TwoLevelCache); in a command with REDIS_URL it throws `unavailable`
   * when Redis could not be told (the change has committed; see command-invalidation.ts).
   */
  invalidate: (versions: readonly string[]) => Promise<void>;
  /** The active span's traceparent when tracing is on: what events carry then (see Tracing). */
  activeTraceparent?: () => string | undefined;
}

/** A context for one unit of work (a request, a command, a message), outside any transaction until `transaction`. */
export function createContext(deps: ContextDeps, input: ContextInput): Ctx {
  const traceId = input.traceId ?? randomBytes(16).toString('hex');
  let em: SqlEntityManager | undefined;
  let traceparent = input.traceparent;
  const ctx: Ctx = {
    actor: input.actor,
    traceId,
    // With tracing on, the span active now (the request's, the delivery's), so the trace continues
    // through what it causes. Otherwise made when first needed (an event is emitted): most requests never need one.
    get traceparent() {
      return deps.activeTraceparent?.() ?? (traceparent ??= `00-${traceId}-${randomBytes(8).toString('hex')}-01`);
    },
    get em() {
      return (em ??= deps.fork());
    },
    sql: deps.sql,
    readConnection: async () => (deps.replicaSql && (await deps.mayReadReplica?.(ctx.actor)) ? 'read' : 'write'),
    laggingSql: async (text, values) => ((await ctx.readConnection()) === 'read' ? deps.replicaSql! : deps.sql)(text, values),
    inTransaction: false,
    cursors: deps.cursors,
    transaction: async (fn) => {
      const changed: string[] = [];
      const result = await ctx.em.transactional((trx) => fn(transactionContext(ctx, trx, changed)));
      // Committed: the cached copies of what it changed go before anyone is told it is done.
      if (changed.length > 0) await deps.invalidate(changed);
      return result;
    },
    changed: (...versions) => deps.invalidate(versions),
  };
  return ctx;
}

function transactionContext(outer: Ctx, em: SqlEntityManager, changed: string[]): Ctx {
  const tx: Ctx = {
    actor: outer.actor,
    traceId: outer.traceId,
    // Read when an event is written (the span active then), not when the transaction began.
    get traceparent() {
      return outer.traceparent;
    },
    em,
    sql: sqlOn(em),
    laggingSql: sqlOn(em),
    readConnection: () => Promise.resolve('write'),
    inTransaction: true,
    cursors: () => outer.cursors(),
    transaction: (fn) => fn(tx),
    changed: (...versions) => {
      changed.push(...versions);
      return Promise.resolve();
    },
  };
  return tx;
}

/** Throws unless `ctx` is in a transaction: for writes that must commit with the change they belong to. */
export function requireTransaction(ctx: Ctx, what: string): void {
  if (!ctx.inTransaction) {
    throw new Error(`${what} must be written in the transaction of the change it belongs to: call it with the tx of ctx.transaction(async (tx) => …)`);
  }
}
