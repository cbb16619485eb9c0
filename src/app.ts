import { randomBytes } from 'node:crypto';
import type { Config } from './config.js';
import { createLogger, type Logger } from './logger.js';
import { openDatabase, type Database } from './adapters/database.js';
import { Migrations } from './adapters/migrations.js';
import { UsersService } from './domain/users/users.service.js';
import type { Ctx } from './domain/shared/context.js';

export interface AppOverrides {
  logger?: Logger;
}

/** Everything svc runs on, built once from validated config. */
export interface App {
  config: Config;
  logger: Logger;
  db: Database;
  migrations: Migrations;
  users: UsersService;
  /** A context for one unit of work (a command, a request, a message) with its own EntityManager. */
  context(input: { actor: string; traceId?: string }): Ctx;
  close(): Promise<void>;
}

/** The composition root: serve, worker, every command and every test start here. */
export async function createApp(config: Config, overrides: AppOverrides = {}): Promise<App> {
  const logger = overrides.logger ?? createLogger(config.LOG_LEVEL);
  const db = await openDatabase(config, logger);
  const migrations = new Migrations(db, logger);
  const users = new UsersService();
  let closed = false;
  return {
    config,
    logger,
    db,
    migrations,
    users,
    context: ({ actor, traceId }) => ({
      actor,
      traceId: traceId ?? randomBytes(16).toString('hex'),
      em: db.orm.em.fork({ clear: true }) as Ctx['em'],
    }),
    async close() {
      if (closed) return;
      closed = true;
      await db.close();
    },
  };
}
