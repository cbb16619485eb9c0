import type { SqlEntityManager } from '@mikro-orm/sql';
import { CompiledQuery, type Transaction } from 'kysely';
import pg from 'pg';

/**
 * Runs a statement whose parameters travel apart from its text (`$1`, `$2` …, where em.execute
 * inlines them) on the EntityManager's connection, or its transaction, and returns its rows. A
 * fixed text lets the PostgreSQL adapter prepare the statement once per connection
 * (adapters/prepared-statements.ts): for svc's hot statements, parsing and planning cost the server
 * more than running them. Keep the text to a bounded set of variants (values, never interpolated
 * data, go in parameters).
 */
export async function query<T>(em: SqlEntityManager, text: string, values: unknown[], type: 'read' | 'write' = 'write'): Promise<T[]> {
  const trx = em.getTransactionContext<Transaction<object>>();
  if (!trx && type === 'read') {
    // A read replica (MikroORM's `replicas`): only on PostgreSQL, always through its pool.
    const pool = await poolOf(em, 'read');
    if (pool) return (await pool.query(text, values)).rows as T[];
  }
  if (!trx) {
    // Outside a transaction on PostgreSQL: straight to the pool (its clients, type parsers and
    // prepared statements are the ORM's own), without the query-builder layers in between, a
    // measurable share of the CPU of the API's hottest reads (README, Benchmarks).
    const pool = await poolOf(em);
    if (pool) return (await pool.query(text, values)).rows as T[];
  }
  return (await (trx ?? em.getKysely()).executeQuery<T>(CompiledQuery.raw(text, values))).rows;
}

/** A statement runner: `query` bound to an EntityManager (its transaction, if any) or to the pool. */
export type Sql = <T>(text: string, values: unknown[]) => Promise<T[]>;

export const sqlOn =
  (em: SqlEntityManager, type: 'read' | 'write' = 'write'): Sql =>
  (text, values) =>
    query(em, text, values, type);

/**
 * Runs `fn` in a transaction of its own with no statement timeout (DATABASE_STATEMENT_TIMEOUT_MS bounds
 * the API's queries; housekeeping may run longer): on PostgreSQL on a connection of the pool, with
 * `set local statement_timeout = 0`, committed when `fn` resolves. node-postgres' own client, not the
 * ORM's transaction: a connection lost mid-way fails the pass (it is tried again at the next one)
 * instead of leaving it waiting. The embedded database has no statement timeout: `fn` runs as usual.
 */
export async function withoutStatementTimeout<T>(em: SqlEntityManager, fn: (sql: Sql) => Promise<T>): Promise<T> {
  const pool = await poolOf(em);
  if (!pool) return fn(sqlOn(em));
  const client = await pool.connect();
  let failed: Error | undefined;
  try {
    await client.query('begin');
    await client.query('set local statement_timeout = 0');
    const result = await fn(async <R>(text: string, values: unknown[]) => (await client.query(text, values)).rows as R[]);
    await client.query('commit');
    return result;
  } catch (err) {
    failed = err as Error;
    await client.query('rollback').catch(() => undefined);
    throw err;
  } finally {
    // A client whose transaction failed is dropped from the pool rather than reused.
    client.release(failed);
  }
}

// Per connection: the node-postgres pool behind it, or null where there is none (PGlite).
const pools = new WeakMap<object, Promise<pg.Pool | null>>();

function poolOf(em: SqlEntityManager, type: 'read' | 'write' = 'write'): Promise<pg.Pool | null> {
  const connection = em.getConnection(type);
  let pool = pools.get(connection);
  if (!pool) {
    pool = connection.getNativeClient().then(
      (native) => (native instanceof pg.Pool ? native : null),
      () => {
        // Not connected (the database is down, say): this statement takes the usual path and fails
        // there as it always has; the next one asks again.
        pools.delete(connection);
        return null;
      },
    );
    pools.set(connection, pool);
  }
  return pool;
}

/** The parameters of a statement being built: `add` keeps a value and returns its placeholder ($1, $2 …). */
export class Params {
  readonly values: unknown[] = [];

  add(value: unknown): string {
    return `$${this.values.push(value)}`;
  }
}
