import pg from 'pg';

// Per connection (each holds its plans in the server's memory); texts beyond this run unnamed.
const MAX_NAMED_STATEMENTS = 200;

// SQLSTATEs after which a named statement cannot be used again on its connection: the prepared
// statement is gone (26000), or a schema change altered its result type (0A000).
const STALE_STATEMENT = new Set(['26000', '0A000']);

/**
 * A pg client that names every parameterized statement after its text, so that PostgreSQL parses
 * and plans it once per connection rather than on every execution: for svc's hot statements
 * (domain/shared/sql.ts) that is most of the server's work. Statements without parameters (all of
 * MikroORM's: it inlines them) pass through unchanged.
 */
class Preparing extends pg.Client {
  readonly #names = new Map<string, string>();
  #counter = 0;

  // pg's query() has many overloads; only (text, values) and (text, values, callback) are rewritten
  // (pg-pool's own query() passes a callback).
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- only any is assignable to the return types of all of pg's overloads
  override query(config: unknown, values?: unknown, callback?: unknown): any {
    const call = super.query.bind(this) as (...args: unknown[]) => Promise<unknown>;
    if (typeof config !== 'string' || !Array.isArray(values) || values.length === 0 || (callback !== undefined && typeof callback !== 'function')) {
      return call(config, values, callback);
    }
    let name = this.#names.get(config);
    if (name === undefined && this.#names.size < MAX_NAMED_STATEMENTS) {
      name = `svc_${++this.#counter}`;
      this.#names.set(config, name);
    }
    if (name === undefined) return call(config, values, callback);
    // The next execution prepares the text again under a new name; this one fails as it would have.
    const forgetIfStale = (err: unknown) => {
      if (STALE_STATEMENT.has((err as { code?: string } | null)?.code ?? '')) this.#names.delete(config);
    };
    if (typeof callback === 'function') {
      return call({ name, text: config, values }, (err: unknown, result: unknown) => {
        forgetIfStale(err);
        (callback as (err: unknown, result: unknown) => void)(err, result);
      });
    }
    return call({ name, text: config, values }).catch((err: unknown) => {
      forgetIfStale(err);
      throw err;
    });
  }
}

/** pg.Client as the pool uses it (query keeps its overloads). */
export const PreparingClient: typeof pg.Client = Preparing;
