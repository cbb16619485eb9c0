import type { SqlEntityManager } from '@mikro-orm/sql';
import { CompiledQuery } from 'kysely';

/**
 * Runs a statement whose parameters travel apart from its text (`$1`, `$2` …, where em.execute
 * inlines them) on the EntityManager's connection, or its transaction, and returns its rows. A
 * fixed text lets the PostgreSQL adapter prepare the statement once per connection
 * (adapters/prepared-statements.ts): for svc's hot statements, parsing and planning cost the server
 * more than running them. Keep the text to a bounded set of variants (values, never interpolated
 * data, go in parameters).
 */
export async function query<T>(em: SqlEntityManager, text: string, values: unknown[]): Promise<T[]> {
  return (await em.getKysely().executeQuery<T>(CompiledQuery.raw(text, values))).rows;
}

/** The parameters of a statement being built: `add` keeps a value and returns its placeholder ($1, $2 …). */
export class Params {
  readonly values: unknown[] = [];

  add(value: unknown): string {
    return `$${this.values.push(value)}`;
  }
}

/** A timestamp column of a raw row: node-postgres gives a Date, PGlite through the socket may give text. */
export function rowDate(em: SqlEntityManager, value: Date | string): Date {
  return value instanceof Date ? value : (em.getPlatform().parseDate(value) as Date);
}
