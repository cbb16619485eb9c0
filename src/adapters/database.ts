import { accessSync, constants, existsSync, mkdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Logger } from 'pino';
import type { MikroORM, Options } from '@mikro-orm/core';
import { createPostgreSqlTypeParsers, type SqlEntityManager } from '@mikro-orm/sql';
import { Migrator } from '@mikro-orm/migrations';
import pg from 'pg';
import postgresDate from 'postgres-date';
import { ConfigError, type Config } from '../config.js';
import { entities } from '../domain/entities.js';
import { DomainError, type ErrorCode } from '../domain/shared/errors.js';
import { acquireDirLock, type DirLock } from './dir-lock.js';
import { PreparingClient } from './prepared-statements.js';
import { timedClient, type QueryObserver } from './query-timing.js';
import { returnedWhenLost } from './lost-connections.js';
import { readShare, shareEmbeddedDatabase, type EmbeddedShare, type ShareInfo } from './embedded-share.js';
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
  /**
   * Embedded and held by this process: lets other svc processes use it through a unix socket in the
   * data folder (announced in serve.json with the API's url) until the share is closed.
   */
  share?(url: string, options?: { onClientWork?: () => void }): Promise<EmbeddedShare>;
  close(): Promise<void>;
}

export interface OpenOptions {
  /**
   * Refuse to use an embedded database that another process serves (svc serve itself), instead of
   * connecting through its socket.
   */
  exclusive?: boolean;
  /** Told the duration of each PostgreSQL statement (metrics); not on the embedded database. */
  observeQuery?: QueryObserver;
}

// PostgreSQL type oids (pg_type.oid) of the columns whose JavaScript type svc fixes.
const OID = { int8: 20, numeric: 1700, json: 114, jsonb: 3802, timestamptz: 1184, timestamptzArray: 1185, textArray: 1009 } as const;

// A CommonJS module whose function is its export (its typings declare an ES default export).
const parseTimestamp = postgresDate as unknown as (text: string) => Date | number | null;

/**
 * How svc reads column values, the same on node-postgres and PGlite (which differ by default:
 * node-postgres gives int8 and numeric as strings, PGlite int8 as a number, and MikroORM keeps
 * timestamps as text on both), so services see numbers, Dates and parsed JSON whichever driver ran
 * the statement, on the pool, in a transaction, or through embedded svc serve's socket.
 *
 * - int8 and numeric are numbers. svc's int8 columns are money in minor units (at most
 *   MAX_PRICE × 100 lines × 1,000 units, below 2^53) and counts; numeric only comes from sums of
 *   them. A value beyond 2^53 (or a fraction a double cannot hold) would lose digits, so int8
 *   refuses one outside the safe integers instead of rounding it silently (the statement fails).
 * - timestamptz is a Date (PostgreSQL's text form read by the parser node-postgres itself uses);
 *   MikroORM hydrates entities from a Date as from text. `date`, `timestamp` and `interval` stay
 *   text, as MikroORM has them.
 * - json and jsonb are parsed.
 */
function rowParsers(): Record<number, (text: string) => unknown> {
  // An array literal's elements as text, parsed by pg's own text[] parser.
  // (pg's typings list only scalar type ids.)
  const parserOf = pg.types.getTypeParser as unknown as (oid: number, format: 'text') => (text: string) => string[];
  const textArray = parserOf(OID.textArray, 'text');
  const timestamptz = (text: string): Date => {
    const parsed = parseTimestamp(text);
    if (!(parsed instanceof Date)) throw new RangeError(`not a timestamp with time zone: ${text}`);
    return parsed;
  };
  return {
    ...createPostgreSqlTypeParsers(textArray),
    [OID.int8]: (text) => {
      const n = Number(text);
      if (!Number.isSafeInteger(n)) throw new RangeError(`the int8 value ${text} is beyond 2^53 and cannot be read as a number without losing digits`);
      return n;
    },
    [OID.numeric]: (text) => Number(text),
    [OID.timestamptz]: timestamptz,
    [OID.timestamptzArray]: (text) => textArray(text).map(timestamptz),
    [OID.json]: (text) => JSON.parse(text) as unknown,
    [OID.jsonb]: (text) => JSON.parse(text) as unknown,
  };
}

/** The row parsers as node-postgres takes them: per pool (its `types`), never pg's global ones. */
function pgTypes(): pg.CustomTypesConfig {
  const types = new pg.TypeOverrides();
  for (const [oid, parse] of Object.entries(rowParsers())) types.setTypeParser(Number(oid), 'text', parse);
  return types;
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
        // Replaces the TypeOverrides MikroORM builds (they are in rowParsers, with svc's own).
        types: pgTypes(),
        // Behind a transaction-pooling PgBouncer a statement prepared on one server connection is
        // not there for the next transaction: plain pg.Client then sends every statement unnamed.
        ...clientClass(config.DATABASE_PREPARED_STATEMENTS ? PreparingClient : undefined, options.observeQuery),
      },
      // Read replicas take the primary's options (pool, statement timeout, type parsers) with their own
      // URL. Every read goes to the primary unless asked for the 'read' connection (Ctx.laggingSql).
      ...(config.DATABASE_REPLICA_URLS
        ? { replicas: config.DATABASE_REPLICA_URLS.split(',').map((url, i) => ({ name: `replica-${i + 1}`, clientUrl: url })), preferReadReplicas: false }
        : {}),
      // Connect lazily: a command that fails validation never touches the database.
      connect: false,
      // MikroORM would create a database that is not there: a typo in DATABASE_URL must be an error
      // (exit 6 naming it), not a new empty database that then reports every migration pending.
      ensureDatabase: false,
    } as Options);
    const location = maskedDatabaseUrl(config.DATABASE_URL);
    return { orm, kind: 'postgresql', location, close: () => orm.close(true) };
  }

  const dataDir = config.dataDir;
  const firstUse = !existsSync(join(dataDir, 'pgdata'));
  makeDataDir(config, dataDir);
  let lock: DirLock;
  try {
    lock = await acquireDirLock(join(dataDir, 'pglite.lock'));
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
      // `parsers` are laid over MikroORM's own (@mikro-orm/pglite spreads them last).
      driverOptions: { dataDir: join(dataDir, 'pgdata'), postgresqlconf: ['shared_buffers=16MB'], parsers: rowParsers() },
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
      share: (url, options) => shareEmbeddedDatabase(orm, dataDir, logger, { url, ...options }),
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
    driverOptions: { connectionTimeoutMillis: 5_000, types: pgTypes() },
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

/** The pool's `Client` option: pg's own, or the preparing one, maybe timed; given back to the pool when its connection is lost. */
function clientClass(preparing: typeof pg.Client | undefined, observe: QueryObserver | undefined): { Client: typeof pg.Client } {
  const base = preparing ?? pg.Client;
  return { Client: returnedWhenLost(observe ? timedClient(base, observe) : base) };
}

function maskedDatabaseUrl(url: string): string {
  const u = new URL(url);
  if (u.password) u.password = '****';
  return u.toString();
}

/** PostgreSQL SQLSTATEs svc turns into domain errors; everything else stays an internal error. */
const PG_CODES: Record<string, (err: PgError) => DomainError> = {
  '23505': (e) => violation(e, UNIQUE, uniqueViolation),
  '23503': (e) => (stillReferenced(e) ? violation(e, REFERENCED, stillReferencedViolation) : violation(e, MISSING, missingViolation)),
  '23514': (e) => violation(e, CHECKS, checkViolation),
  '23502': (e) => refused(e, 'invalid', e.column ? `${fieldName(e.column)} is required` : 'a required value is missing', fieldName(e.column)),
  '40001': (e) => new DomainError('retryable', 'the database could not serialize this change with a concurrent one; try again', {}, { cause: e }),
  '40P01': (e) => new DomainError('retryable', 'the database aborted this change to break a deadlock; try again', {}, { cause: e }),
  // statement_timeout (DATABASE_STATEMENT_TIMEOUT_MS) cancelled the statement: the database is busy
  // or a row is held too long; the client may say so and try again shortly.
  '57014': (e) =>
    new DomainError(
      'unavailable',
      'the database query took too long and was cancelled',
      { clientDetail: 'the database did not answer in time (statement timeout); try again shortly' },
      { cause: e },
    ),
  '55P03': (e) => new DomainError('retryable', 'a row is locked by another change; try again', {}, { cause: e }),
};

interface PgError extends Error {
  code?: string;
  detail?: string;
  constraint?: string;
  table?: string;
  column?: string;
}

/**
 * A violated constraint as the domain says it. PostgreSQL's own message and detail name the index
 * expression (`Key (lower(email))=(…)`), the table and the constraint: they stay in the log, as
 * the error's cause, and never reach a client or a terminal.
 */
type Explain = (key: ViolatedKey, err: PgError) => DomainError;

/** What PostgreSQL's detail says about the key, when it says it (`Key (sku)=(TEA-1) already exists.`). */
interface ViolatedKey {
  /** The key's columns, when the key is plain columns (not an expression): `['sku']`. */
  columns?: string[];
  /** The offending value, as PostgreSQL shows it (an expression index shows its result: the email lower-cased). */
  value?: string;
  /** A foreign key's referenced table, when a row refers to one that is not there. */
  missingFrom?: string;
  /** A foreign key's referring table, when a deleted row is still referred to. */
  referencedFrom?: string;
}

const DETAIL = /^Key \((.+?)\)=\((.*)\) (?:already exists|is not present in table "([^"]+)"|is still referenced from table "([^"]+)")\.$/s;

function violatedKey(detail: string | undefined): ViolatedKey {
  const m = detail === undefined ? null : DETAIL.exec(detail);
  if (!m) return {};
  const columns = /^[a-z_][a-z0-9_]*(, [a-z_][a-z0-9_]*)*$/.test(m[1]!) ? m[1]!.split(', ') : undefined;
  return { columns, value: m[2], missingFrom: m[3], referencedFrom: m[4] };
}

/** A column as the domain names it: `user_id` is `userId`. */
function fieldName(column: string | undefined): string | undefined {
  return column?.replace(/_([a-z0-9])/g, (_m, c: string) => c.toUpperCase());
}

// What one row of each table is called in messages.
const NOUNS: Record<string, string> = {
  users: 'user',
  products: 'product',
  orders: 'order',
  order_items: 'order line',
  api_keys: 'API key',
  refresh_tokens: 'refresh token',
  idempotency_keys: 'idempotency key',
  audit_log: 'audit entry',
  app_secrets: 'application secret',
  login_throttles: 'login throttle',
};
const noun = (table: string | undefined) => (table && NOUNS[table]) ?? 'record';
/** "a user", "an order", "an API key". */
const aNoun = (table: string | undefined) => `${/^[aeioAEIO]/.test(noun(table)) ? 'an' : 'a'} ${noun(table)}`;
/** "user usr_…", or "the user" when PostgreSQL did not say which. */
const named = (table: string | undefined, value: string | undefined) => (value ? `${noun(table)} ${value}` : `the ${noun(table)}`);

function refused(err: PgError, code: ErrorCode, message: string, field?: string, details: Record<string, unknown> = {}): DomainError {
  // The cause is PostgreSQL's error (the driver's, or the MikroORM exception that copies its fields):
  // the log gets its code, constraint and detail from it. (PGlite's also carries the statement and
  // its parameters; the logger redacts `params`.)
  return new DomainError(code, message, { ...(field ? { field } : {}), ...details }, { cause: err });
}

function violation(err: PgError, known: Record<string, Explain>, generic: Explain): DomainError {
  const key = violatedKey(err.detail);
  return (known[err.constraint ?? ''] ?? generic)(key, err);
}

// Unique constraints and indexes (migrations/): the field they guard, in the words of the services'
// own checks. These answer a race the services' checks cannot see (two writers at once).
const UNIQUE: Record<string, Explain> = {
  // The message names the email the caller gave, never the account that holds it.
  users_email_lower_unique: (k, e) => refused(e, 'conflict', `${k.value ? `email ${k.value}` : 'this email'} is already taken`, 'email'),
  products_sku_unique: (k, e) =>
    refused(e, 'conflict', `a product with ${k.value ? `SKU ${k.value}` : 'this SKU'} already exists; change that one or pick another SKU`, 'sku'),
};

const uniqueViolation: Explain = (k, e) => {
  const fields = k.columns?.map((c) => fieldName(c)!);
  const what = fields ? `this ${fields.join(' and ')}` : 'these values';
  return refused(e, 'conflict', `${aNoun(e.table)} with ${what} already exists`, fields?.length === 1 ? fields[0] : undefined);
};

/**
 * Whether a foreign key violation is a delete of a row still referred to, rather than a write that
 * refers to a row not there: the detail says which; without one, the constraint is named after the
 * referring table (MikroORM's `<table>_<column>_foreign`) and the error names the table written to.
 */
function stillReferenced(err: PgError): boolean {
  const key = violatedKey(err.detail);
  if (key.referencedFrom || key.missingFrom) return key.referencedFrom !== undefined;
  return !!err.table && !err.constraint?.startsWith(`${err.table}_`);
}

// A row referred to was deleted between the service's read and its write (a user deleted while
// they order): say what is gone.
const MISSING: Record<string, Explain> = {
  orders_user_id_foreign: (k, e) =>
    refused(e, 'not_found', `${named('users', k.value)} no longer exists; the order was not placed`, 'userId', { userId: k.value }),
  api_keys_user_id_foreign: (k, e) =>
    refused(e, 'not_found', `${named('users', k.value)} no longer exists; no API key was created`, 'userId', { userId: k.value }),
  refresh_tokens_user_id_foreign: (k, e) =>
    refused(e, 'not_found', `${named('users', k.value)} no longer exists; sign-in is not possible`, 'userId', { userId: k.value }),
  order_items_product_id_foreign: (k, e) =>
    refused(e, 'unprocessable', `${named('products', k.value)} no longer exists; remove that item`, 'items', { productId: k.value }),
  order_items_order_id_foreign: (k, e) => refused(e, 'not_found', `${named('orders', k.value)} no longer exists`, 'orderId', { orderId: k.value }),
};

// A row was deleted while another still refers to it (the service counted none a moment before).
const REFERENCED: Record<string, Explain> = {
  orders_user_id_foreign: (k, e) =>
    refused(e, 'conflict', `${named('users', k.value)} has orders and cannot be deleted; disable the account instead (status "disabled")`, undefined, {
      userId: k.value,
    }),
  order_items_product_id_foreign: (k, e) =>
    refused(e, 'conflict', `${named('products', k.value)} is on orders and cannot be deleted; deactivate it instead`, undefined, { productId: k.value }),
};

const missingViolation: Explain = (k, e) => {
  const field = k.columns?.length === 1 ? fieldName(k.columns[0]) : undefined;
  return refused(e, 'not_found', `${named(k.missingFrom, k.value)} does not exist (or no longer does)`, field);
};

const stillReferencedViolation: Explain = (k, e) =>
  refused(
    e,
    'conflict',
    `${named(e.table, k.value)} is still referred to by ${k.referencedFrom ? `${noun(k.referencedFrom)}s` : 'other records'} and cannot be deleted`,
  );

// Check constraints: the services validate first, so these are a last line of defence.
const CHECKS: Record<string, Explain> = {
  products_price_check: (_k, e) => refused(e, 'invalid', 'the price must be 0 or more', 'price'),
  products_stock_check: (_k, e) => refused(e, 'conflict', 'the stock cannot go below 0', 'stock'),
  users_role_check: (_k, e) => refused(e, 'invalid', 'the role must be one of admin, user, guest', 'role'),
  users_status_check: (_k, e) => refused(e, 'invalid', 'the status must be active or disabled', 'status'),
  orders_total_check: (_k, e) => refused(e, 'invalid', 'the order total cannot be negative', 'total'),
  orders_refunded_amount_check: (_k, e) => refused(e, 'conflict', "the refunds would exceed the order's total", 'amount'),
  orders_status_check: (_k, e) =>
    refused(e, 'invalid', 'the order status must be one of pending, processing, completed, failed, cancelled, refunded', 'status'),
  order_items_unit_price_check: (_k, e) => refused(e, 'invalid', 'the unit price must be 0 or more', 'items'),
  order_items_quantity_check: (_k, e) => refused(e, 'invalid', 'a quantity must be 1 or more', 'items'),
};

// MikroORM names a check `<table>_<column>_check`; the column is the field.
const checkViolation: Explain = (_k, e) => {
  const column =
    e.table && e.constraint?.startsWith(`${e.table}_`) && e.constraint.endsWith('_check')
      ? e.constraint.slice(e.table.length + 1, -'_check'.length)
      : undefined;
  const field = fieldName(column);
  return refused(e, 'invalid', `${field ?? 'a value'} is outside what ${aNoun(e.table)} allows`, field);
};

const CONNECT_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'ETIMEDOUT', 'EHOSTUNREACH', 'ECONNRESET', '28P01', '28000', '3D000', '57P03']);
// The session ended under the statement: PostgreSQL shut down or restarted (57P01, 57P02), a failover,
// an operator's pg_terminate_backend, a broken connection (class 08).
const LOST_CODES = new Set(['57P01', '57P02', '08000', '08003', '08006', 'EPIPE']);
// node-postgres says so only in its message when the socket closed under a query, or is used after that.
const LOST_MESSAGES = new Set([
  'Connection terminated unexpectedly',
  'Connection terminated',
  'Client has encountered a connection error and is not queryable',
  'Client was closed and is not queryable',
]);

/**
 * The one place where database errors become domain errors, in the domain's words: a unique
 * violation is a conflict naming the field, a foreign key violation says what is gone (or still in
 * use), a check or not-null violation is invalid input naming the field, serialization failures are
 * retryable, an unreachable server is unavailable. PostgreSQL's error stays the cause (for the log).
 * Anything else is returned unchanged (and becomes an internal error at the edge).
 */
export function translateDatabaseError(err: unknown): unknown {
  if (err instanceof DomainError || !(err instanceof Error)) return err;
  if (poolExhausted(err)) {
    return new DomainError(
      'unavailable',
      'every database connection of this process is busy (DATABASE_POOL_MAX) and none came free in time',
      { clientDetail: 'the service is busy; try again shortly' },
      { cause: err },
    );
  }
  const lost = lostConnection(err);
  if (lost) {
    return new DomainError(
      'unavailable',
      `lost the connection to the database (${lost.message}): PostgreSQL restarted, failed over or ended the session`,
      {},
      { cause: err },
    );
  }
  const pg = findPgError(err);
  if (!pg?.code) return err;
  const map = PG_CODES[pg.code];
  if (map) return map(pg);
  if (CONNECT_CODES.has(pg.code)) {
    return new DomainError('unavailable', `cannot reach the database: ${pg.message}. Check DATABASE_URL and that PostgreSQL is running`, {}, { cause: err });
  }
  return err;
}

/** The error (or one of its causes) that says the connection was lost under the statement, if one does. */
function lostConnection(err: Error): Error | undefined {
  let current: unknown = err;
  for (let depth = 0; current instanceof Error && depth < 5; depth++) {
    const code = (current as PgError).code;
    if ((typeof code === 'string' && LOST_CODES.has(code)) || LOST_MESSAGES.has(current.message)) return current;
    current = (current as { cause?: unknown }).cause ?? (current as { previous?: unknown }).previous;
  }
  return undefined;
}

/**
 * node-postgres' pool gave up waiting for a free connection (connectionTimeoutMillis): all
 * DATABASE_POOL_MAX of them are busy. It says so only in its message.
 */
function poolExhausted(err: Error): boolean {
  let current: unknown = err;
  for (let depth = 0; current instanceof Error && depth < 5; depth++) {
    if (current.message === 'timeout exceeded when trying to connect') return true;
    current = (current as { cause?: unknown }).cause ?? (current as { previous?: unknown }).previous;
  }
  return false;
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

/**
 * Creates the data folder (and the folders above it that are missing, each 0700), or refuses the
 * setting with a ConfigError saying why: a file in the way, no permission, a read-only or special
 * file system, or a folder svc cannot write in. One level at a time: Node's recursive mkdir never
 * returns on some special file systems (`/proc/...`), where each level's own answer is an error.
 */
function makeDataDir(config: Config, dataDir: string): void {
  const refuse = (why: string) =>
    new ConfigError('SVC_DATA_DIR', config.sources.SVC_DATA_DIR, `SVC_DATA_DIR=${dataDir} ${why}; point it at a folder, or at a path where one can be created`);
  const make = (dir: string): void => {
    try {
      mkdirSync(dir, { mode: 0o700 });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') {
        if (!statSync(dir).isDirectory()) throw refuse('is not a folder (a file is in the way)');
        return;
      }
      if (code === 'ENOTDIR') throw refuse('is not a folder (a file is in the way)');
      if (code === 'ENOENT' && dirname(dir) !== dir && !existsSync(dirname(dir))) {
        make(dirname(dir));
        return make(dir);
      }
      throw refuse(
        `cannot be created (${code === 'EACCES' || code === 'EPERM' ? 'permission denied' : code === 'EROFS' ? 'a read-only file system' : (code ?? 'failed')})`,
      );
    }
  };
  make(dataDir);
  try {
    accessSync(dataDir, constants.W_OK | constants.X_OK);
  } catch {
    throw refuse('is a folder svc cannot write in (permission denied)');
  }
}
