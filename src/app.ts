import type { Config } from './config.js';
import { createLogger, type Logger } from './logger.js';
import { openDatabase, type Database } from './adapters/database.js';
import { Migrations } from './adapters/migrations.js';
import { UsersService } from './domain/users/users.service.js';
import { PasswordHasher } from './domain/users/password.js';
import { ApiKeysService } from './domain/auth/api-keys.service.js';
import { ProductsService } from './domain/catalog/products.service.js';
import { OrdersService } from './domain/orders/orders.service.js';
import { createContext, type ContextInput, type Ctx } from './domain/shared/context.js';
import { sqlOn } from './domain/shared/sql.js';
import { CursorCodec } from './domain/shared/pagination.js';
import { AppSecret } from './domain/shared/app-secret.entity.js';
import { DomainError } from './domain/shared/errors.js';

export interface AppOverrides {
  logger?: Logger;
  /** Own the embedded database (svc serve): never use it through another process's socket. */
  exclusiveDatabase?: boolean;
}

/** Everything svc runs on, built once from validated config. */
export interface App {
  config: Config;
  logger: Logger;
  db: Database;
  migrations: Migrations;
  users: UsersService;
  /** The process's password hashing, bounded (PASSWORD_HASH_CONCURRENCY, PASSWORD_HASH_QUEUE). */
  passwords: PasswordHasher;
  products: ProductsService;
  orders: OrdersService;
  apiKeys: ApiKeysService;
  /** A context for one unit of work (a command, a request, a message) with its own EntityManager. */
  context(input: ContextInput): Ctx;
  close(): Promise<void>;
}

/** The composition root: serve, worker, every command and every test start here. */
export async function createApp(config: Config, overrides: AppOverrides = {}): Promise<App> {
  const logger = overrides.logger ?? createLogger(config.LOG_LEVEL);
  const db = await openDatabase(config, logger, { exclusive: overrides.exclusiveDatabase });
  const migrations = new Migrations(db, logger);
  const passwords = new PasswordHasher({ concurrency: config.PASSWORD_HASH_CONCURRENCY, queue: config.PASSWORD_HASH_QUEUE });
  const users = new UsersService(passwords);
  const apiKeys = new ApiKeysService(users);
  let closed = false;
  // Read once, on first use: commands that never page never touch it. Read on a fresh fork outside
  // any transaction (PGlite has a single connection).
  let cursorCodec: Promise<CursorCodec> | undefined;
  const cursors = () =>
    (cursorCodec ??= loadCursorCodec(db).catch((err: unknown) => {
      cursorCodec = undefined;
      throw err;
    }));
  // Plain statements run on the root EntityManager's connection: never inside a transaction.
  const sql = sqlOn(db.orm.em as Ctx['em']);
  const contextDeps = { fork: () => db.orm.em.fork({ clear: true }) as Ctx['em'], sql, cursors };
  return {
    config,
    logger,
    db,
    migrations,
    users,
    passwords,
    products: new ProductsService(),
    orders: new OrdersService(),
    apiKeys,
    context: (input) => createContext(contextDeps, input),
    async close() {
      if (closed) return;
      closed = true;
      await db.close();
    },
  };
}

async function loadCursorCodec(db: Database): Promise<CursorCodec> {
  const secret = await db.orm.em.fork().findOne(AppSecret, { name: 'cursor' }, { fields: ['value'] });
  if (!secret) throw new DomainError('unavailable', 'the database has no cursor key: run `svc migrate`');
  return new CursorCodec(Buffer.from(secret.value, 'utf8'));
}
