import type { SqlEntityManager } from '@mikro-orm/sql';

/** Who is acting and where: passed first to every service method. */
export interface Ctx {
  /** `cli:<os user>` for operators, `usr_…` for API users, `key_…` for API keys. */
  actor: string;
  /** W3C trace id of the request or command, written into logs and audit rows. */
  traceId: string;
  /** An EntityManager forked for this request, message or command. */
  em: SqlEntityManager;
}
