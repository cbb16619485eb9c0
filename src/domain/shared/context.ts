import type { SqlEntityManager } from '@mikro-orm/sql';
import type { CursorCodec } from './pagination.js';
import type { Sql } from './sql.js';

/** Who is acting and where: passed first to every service method. */
export interface Ctx {
  /** `cli:<os user>` for operators, `usr_…` for API users, `key_…` for API keys. */
  actor: string;
  /** W3C trace id of the request or command, written into logs and audit rows. */
  traceId: string;
  /**
   * An EntityManager of its own for this request, message or command, forked on first use (a fork
   * costs several objects; a request answered by plain statements never needs one).
   */
  readonly em: SqlEntityManager;
  /** Runs a statement on the pool, outside any transaction (see sql.ts `query`): for plain reads. */
  sql: Sql;
  /** The deployment's cursor codec (its key is read from the database once per process). */
  cursors(): Promise<CursorCodec>;
}
