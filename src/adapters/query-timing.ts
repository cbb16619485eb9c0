import { AsyncResource } from 'node:async_hooks';
import { performance } from 'node:perf_hooks';
import type pg from 'pg';

/**
 * Told of each statement: its text and the seconds from sent to answered (or failed). One that reads
 * the caller's async context (tracing: the active span) says so with `readsContext`; the others
 * (metrics) are called without restoring it, which costs an AsyncResource per statement.
 */
export interface QueryObserver {
  (text: string, seconds: number): void;
  readsContext?: boolean;
}

/**
 * A pg.Client class (for the pool's `Client` option) whose statements are timed: every statement
 * of the process goes through a pool client, whether it comes from MikroORM, from Kysely inside a
 * transaction, or from domain/shared/sql.ts straight to the pool. Wraps `Base` (pg.Client, or the
 * preparing client). Submittables (cursors, streams) pass through untimed.
 */
export function timedClient(Base: typeof pg.Client, observe: QueryObserver): typeof pg.Client {
  // Called with the client as `this` (query.call below), as super.query would be.
  // eslint-disable-next-line @typescript-eslint/unbound-method
  const query = Base.prototype.query as (this: pg.Client, ...args: unknown[]) => unknown;
  const { readsContext } = observe;
  class Timed extends Base {
    // pg's query() has many overloads: (text | config, values?, callback?) are timed, promise or callback.
    // eslint-disable-next-line @typescript-eslint/no-explicit-any -- only any is assignable to the return types of all of pg's overloads
    override query(config: unknown, values?: unknown, callback?: unknown): any {
      const text =
        typeof config === 'string' ? config : typeof (config as { text?: unknown } | null)?.text === 'string' ? (config as { text: string }).text : undefined;
      if (text === undefined || typeof (config as { submit?: unknown }).submit === 'function') return query.call(this, config, values, callback);
      const started = performance.now();
      const done = () => observe(text, (performance.now() - started) / 1000);
      // The callback may come second (query(config, callback)).
      const cb = typeof callback === 'function' ? callback : typeof values === 'function' ? values : undefined;
      if (cb) {
        const answered = (err: unknown, result: unknown) => {
          done();
          (cb as (err: unknown, result: unknown) => void)(err, result);
        };
        // Bound to the caller's async context when the observer reads it (tracing: the active span):
        // a callback comes back in the socket's. (A promise's handlers keep the caller's already.)
        const timed = readsContext ? AsyncResource.bind(answered) : answered;
        return cb === callback ? query.call(this, config, values, timed) : query.call(this, config, timed);
      }
      return (query.call(this, config, values) as Promise<unknown>).then(
        (result) => {
          done();
          return result;
        },
        (err: unknown) => {
          done();
          throw err;
        },
      );
    }
  }
  return Timed;
}
