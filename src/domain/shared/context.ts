import type { SqlEntityManager } from '@mikro-orm/sql';
import type { CursorCodec } from './pagination.js';

/** Who is acting and where: passed first to every service method. */
export interface Ctx {
  /** `cli:<os user>` for operators, `usr_…` for API users, `key_…` for API keys. */
  actor: string;
  /** W3C trace id of the request or command, written into logs and audit rows. */
  traceId: string;
  /** An EntityManager forked for this request, message or command. */
  em: SqlEntityManager;
  /** The deployment's cursor codec (its key is read from the database once per process). */
  cursors(): Promise<CursorCodec>;
}
