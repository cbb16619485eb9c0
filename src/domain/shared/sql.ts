import type { SqlEntityManager } from '@mikro-orm/sql';
import { CompiledQuery } from 'kysely';

/**
 * Runs a statement whose parameters travel apart from its text (`$1`, `$2` …, where em.execute
 * inlines them) on the EntityManager's connection, or its transaction. A fixed text lets the
 * PostgreSQL adapter prepare the statement once per connection (adapters/prepared-statements.ts):
 * for svc's hot reads, parsing and planning cost the server more than running them. Keep the text
 * to a bounded set of variants (values, never interpolated data, go in parameters).
 */
export async function select<T>(em: SqlEntityManager, text: string, values: unknown[]): Promise<T[]> {
  return (await em.getKysely().executeQuery<T>(CompiledQuery.raw(text, values))).rows;
}
