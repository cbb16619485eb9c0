import { mkdirSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { MikroORM, Options } from '@mikro-orm/core';
import type { SqlEntityManager } from '@mikro-orm/sql';
import { Migrator } from '@mikro-orm/migrations';
import type { Config } from '../config.js';
import { entities } from '../domain/entities.js';
import { DomainError } from '../domain/shared/errors.js';
import { acquireDirLock, type DirLock } from './dir-lock.js';
import { PreparingClient } from './prepared-statements.js';
import { readShare, type ShareInfo } from './embedded-share.js';
import { MIGRATIONS_DIR } from '../paths.js';
import { migrations } from '../../migrations/index.js';


export type Orm = MikroORM;
export type EntityManager = SqlEntityManager;

export interface Database {
  orm: Orm;
  /** 'postgresql' with DATABASE_URL, 'embedded' (PGlite in the data folder) without. */
  kind: 'postgresql' | 'embedded';
  /** Where the data lives, for messages: a masked URL or a folder. */
  location: string;
  /** Embedded mode through a serving process's socket: that process and its socket. */
  via?: { pid: number; socket: string };
  close(): Promise<void>;
}

export interface OpenOptions {
  /**
   * Refuse to use an embedded database that another process serves (svc serve itself), instead of
   * connecting through its socket.
   */
  exclusive?: boolean;
}

function baseOptions(config: Config, logger: Logger): Partial<Options> {
  return {
    entities,
    extensions: [Migrator],
    migrations: {
      // The list is compiled in (migrations/index.ts); the folder is where `migrate create` writes.
      migrationsList: migrations,
      path: MIGRATIONS_DIR,
      tableName: 'mikro_orm_migrations',
      transactional: true,
      allOrNothing: true,
      // Snapshots would be written into the migrations folder on every run; production folders are read-only.
      snapshot: false,
      emit: 'ts',
      silent: true,
    },
    // Entities are discovered from their definitions; no reflection, no source parsing at start-up.
    discovery: { warnWhenNoEntities: true },
    // MikroORM's own logger stays off; queries can be traced with LOG_LEVEL=trace.
    debug: config.LOG_LEVEL === 'trace',
    logger: (message: string) => logger.trace({ orm: true }, message),
    // A second EntityManager must be forked explicitly (per request, per message, per command).
    allowGlobalContext: false,
    forceUtcTimezone: true,
  };
}

/**
 * Opens the system of record: PostgreSQL when DATABASE_URL is set, otherwise the embedded PGlite
 * database in SVC_DATA_DIR (created on first use and announced once on stderr).
 */
export async function openDatabase(config: Config, logger: Logger, options: OpenOptions = {}): Promise<Database> {
  if (config.DATABASE_URL) {
    const { MikroORM } = await import('@mikro-orm/postgresql');
    const orm = await MikroORM.init({
      ...baseOptions(config, logger),
      clientUrl: config.DATABASE_URL,
      pool: { min: 0, max: config.DATABASE_POOL_MAX, idleTimeoutMillis: 10_000 },
      driverOptions: {
        statement_timeout: config.DATABASE_STATEMENT_TIMEOUT_MS || undefined,
        application_name: 'svc',
        connectionTimeoutMillis: 5_000,
        Client: PreparingClient,
      },
      // Connect lazily: a command that fails validation never touches the database.
      connect: false,
    } as Options);
    const location = maskedDatabaseUrl(config.DATABASE_URL);
    return { orm, kind: 'postgresql', location, close: () => orm.close(true) };
  }

  const dataDir = config.dataDir;
  const firstUse = !existsSync(join(dataDir, 'pgdata'));
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  let lock: DirLock;
  try {
    lock = acquireDirLock(join(dataDir, 'pglite.lock'));
  } catch (err) {
    // Held by a live process: when that is svc serve, it publishes a socket to reach the database through.
    const pid = err instanceof DomainError && typeof err.details.pid === 'number' ? err.details.pid : undefined;
    const share = typeof pid === 'number' ? readShare(dataDir, pid) : undefined;
    if (!share) throw err;
    if (options.exclusive) {
      throw new DomainError(
        'unavailable',
        `the embedded database in ${dataDir} is served by svc serve (pid ${pid}${share.url ? `, ${share.url}` : ''}); stop it first, or use another SVC_DATA_DIR`,
        { pid },
      );
    }
    return openThroughServe(config, logger, share);
  }
  try {
    const { MikroORM } = await import('@mikro-orm/pglite');
    const orm = await MikroORM.init({
      ...baseOptions(config, logger),
      dbName: 'postgres',
      // Named-database mode: the cluster lives in pgdata/, dbName picks the database inside it.
      // PostgreSQL's default 128 MB of shared buffers lives in PGlite's WASM memory (RSS of the
      // process); the data files sit in the OS page cache anyway, so a small pool costs little.
      driverOptions: { dataDir: join(dataDir, 'pgdata'), postgresqlconf: ['shared_buffers=16MB'] },
      pool: { min: 1, max: 1 },
    } as Options);
    // Announced when the folder is created; later runs mention it only at debug level.
    logger[firstUse ? 'info' : 'debug'](
      { database: 'embedded', dataDir },
      `${firstUse ? 'created' : 'using'} the embedded database (PGlite) in ${dataDir}; set DATABASE_URL to use a PostgreSQL server`,
    );
    return {
      orm,
      kind: 'embedded',
      location: dataDir,
      async close() {
        try {
          await orm.close(true);
        } finally {
          lock.release();
        }
      },
    };
  } catch (err) {
    lock.release();
    throw err;
  }
}

/**
 * The embedded database of a running `svc serve`, through its unix socket: the PostgreSQL driver with
 * one connection (the server serialises its clients on PGlite's one session anyway).
 */
async function openThroughServe(config: Config, logger: Logger, share: ShareInfo): Promise<Database> {
  const { MikroORM } = await import('@mikro-orm/postgresql');
  const socket = join(share.socketDir, `.s.PGSQL.${share.port}`);
  const orm = await MikroORM.init({
    ...baseOptions(config, logger),
    // pg reaches a unix socket as host=<folder>, port naming the file .s.PGSQL.<port>.
    host: share.socketDir,
    port: share.port,
    user: 'postgres',
    dbName: 'postgres',
    pool: { min: 0, max: 1, idleTimeoutMillis: 1_000 },
    // No statement_timeout or application_name: startup parameters would change the one session
    // every client (and the API) shares.
    driverOptions: { connectionTimeoutMillis: 5_000 },
    connect: false,
  } as Options);
  logger.info(
    { database: 'embedded', dataDir: config.dataDir, servedBy: share.pid, socket },
    `the embedded database in ${config.dataDir} is served by svc serve (pid ${share.pid}); using it through ${socket}`,
  );
  return {
    orm,
    kind: 'embedded',
    location: `${config.dataDir} (through svc serve, pid ${share.pid})`,
    via: { pid: share.pid, socket },
    close: () => orm.close(true),
  };
}

function maskedDatabaseUrl(url: string): string {
  const u = new URL(url);
  if (u.password) u.password = '****';
  return u.toString();
}

/** PostgreSQL SQLSTATEs svc turns into domain errors; everything else stays an internal error. */
const PG_CODES: Record<string, (err: PgError) => DomainError> = {
  '23505': (e) => new DomainError('conflict', `already exists: ${e.detail ?? e.constraint ?? 'unique constraint'}`, { constraint: e.constraint }, { cause: e }),
  '23503': (e) => new DomainError('invalid', `refers to something that does not exist: ${e.detail ?? e.constraint ?? ''}`.trim(), { constraint: e.constraint }, { cause: e }),
  '23514': (e) => new DomainError('invalid', `violates ${e.constraint ?? 'a check constraint'}`, { constraint: e.constraint }, { cause: e }),
  '40001': (e) => new DomainError('retryable', 'the database could not serialize this change with a concurrent one; try again', {}, { cause: e }),
  '40P01': (e) => new DomainError('retryable', 'the database aborted this change to break a deadlock; try again', {}, { cause: e }),
  '57014': (e) => new DomainError('unavailable', 'the database query took too long and was cancelled', {}, { cause: e }),
  '55P03': (e) => new DomainError('retryable', 'a row is locked by another change; try again', {}, { cause: e }),
};

interface PgError extends Error {
  code?: string;
  detail?: string;
  constraint?: string;
}

const CONNECT_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'ETIMEDOUT', 'EHOSTUNREACH', 'ECONNRESET', '28P01', '28000', '3D000', '57P03']);

/**
 * The one place where database errors become domain errors: unique violation is a conflict, a foreign
 * key or check violation is invalid input, serialization failures are retryable, an unreachable server
 * is unavailable. Anything else is returned unchanged (and becomes an internal error at the edge).
 */
export function translateDatabaseError(err: unknown): unknown {
  if (err instanceof DomainError || !(err instanceof Error)) return err;
  const pg = findPgError(err);
  if (!pg?.code) return err;
  const map = PG_CODES[pg.code];
  if (map) return map(pg);
  if (CONNECT_CODES.has(pg.code)) {
    return new DomainError('unavailable', `cannot reach the database: ${pg.message}. Check DATABASE_URL and that PostgreSQL is running`, {}, { cause: err });
  }
  return err;
}

function findPgError(err: Error): PgError | undefined {
  let current: unknown = err;
  for (let depth = 0; current instanceof Error && depth < 5; depth++) {
    const code = (current as PgError).code;
    if (typeof code === 'string' && (code in PG_CODES || CONNECT_CODES.has(code))) return current;
    current = (current as { cause?: unknown }).cause ?? (current as { previous?: unknown }).previous;
  }
  return undefined;
}
