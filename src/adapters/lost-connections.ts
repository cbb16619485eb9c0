import type pg from 'pg';

type Release = (err?: Error | boolean) => void;

/**
 * A pg.Client class (for the pool's `Client` option) that goes back to its pool by itself when
 * PostgreSQL drops its connection while it is lent (a restart, a failover, pg_terminate_backend).
 *
 * Why: Kysely, under MikroORM's transactions, releases a connection only after its BEGIN, COMMIT or
 * ROLLBACK succeeded (kysely-org/kysely#1990). On a dropped connection they fail, the client is never
 * released, and each such drop takes one connection out of the pool for good: after
 * DATABASE_POOL_MAX of them every request waits for a connection that never comes, and the pool can
 * no longer be closed (svc stops hang). Released with the error, the pool discards the dead client
 * and opens a new one when asked. A release by its borrower after that is a no-op, as is any second
 * release (pg-pool would throw).
 */
export function returnedWhenLost(Base: typeof pg.Client): typeof pg.Client {
  class ReturnedWhenLost extends Base {
    private lent: Release | undefined;

    constructor(...args: ConstructorParameters<typeof pg.Client>) {
      super(...args);
      this.on('end', () => this.lent?.(new Error('the connection to PostgreSQL was lost')));
    }

    // pg-pool sets `release` on each client it lends, and calls it to take the client back.
    get release(): Release | undefined {
      return this.lent;
    }

    set release(release: Release | undefined) {
      if (!release) {
        this.lent = undefined;
        return;
      }
      let released = false;
      this.lent = (err) => {
        if (released) return;
        released = true;
        release(err);
      };
    }
  }
  return ReturnedWhenLost;
}
