import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import pg from 'pg';
import type { Migration } from '@mikro-orm/migrations';
import type { Transaction } from '@mikro-orm/core';
import { Migrator } from '@mikro-orm/migrations';
import type { AbstractSqlDriver, SqlEntityManager } from '@mikro-orm/sql';
import { DomainError, invalid } from '../domain/shared/errors.js';
import { translateDatabaseError, type Database } from './database.js';
import { MIGRATIONS_DIR } from '../paths.js';
import { migrations as compiledMigrations } from '../../migrations/index.js';

export interface MigrationStatus {
  applied: { name: string; executedAt: string }[];
  pending: { name: string }[];
}

export interface MigrationRun {
  direction: 'up' | 'down';
  /** Migrations applied (up) or reverted (down), in the order they ran. */
  migrations: string[];
  dryRun: boolean;
  /** With --dry-run: the SQL each migration would run. */
  sql?: { name: string; statements: string[] }[];
}

export interface SchemaCheck {
  inSync: boolean;
  /** SQL that would bring the database to the entities; empty when in sync. */
  difference: string[];
}

// One key for every svc migrate against one database: the two 32-bit halves of "svc-migr".
const LOCK_KEY: [number, number] = [0x7376632d, 0x6d696772];

type MigrationClass = new (driver: AbstractSqlDriver, config: unknown) => Migration;

/** Schema migrations: status, apply, revert, create, and the entity-versus-database check. */
export class Migrations {
  constructor(
    private readonly db: Database,
    private readonly logger: Logger,
  ) {}

  private get migrator(): Migrator {
    return this.db.orm.migrator as Migrator;
  }

  /** Applied migrations with their times, and pending ones, oldest first. */
  async status(): Promise<MigrationStatus> {
    return this.guard(async () => {
      const executed = await this.migrator.getExecuted();
      const pending = await this.migrator.getPending();
      return {
        applied: executed.map((m) => ({ name: m.name, executedAt: new Date(m.executed_at).toISOString() })),
        pending: pending.map((m) => ({ name: m.name })),
      };
    });
  }

  /**
   * Makes the schema current before the domain is used. On the embedded default (this process's own
   * PGlite) pending migrations are applied and announced once, as svc serve does; on PostgreSQL, or
   * on the database of a running svc serve (which applied its own), pending migrations are a
   * conflict that says to run `svc migrate`, unless `apply` is set (svc serve --migrate). Returns the
   * migrations applied.
   */
  async prepareSchema(options: { apply?: boolean; orElse?: string } = {}): Promise<string[]> {
    const pending = await this.guard(() => this.pendingNames());
    if (pending.length === 0) return [];
    if (!options.apply && (this.db.kind !== 'embedded' || this.db.via)) {
      throw new DomainError(
        'conflict',
        `${pending.length} migration(s) are pending (${pending.join(', ')}); run \`svc migrate\` first${options.orElse ? `, or ${options.orElse}` : ''}`,
        { pending },
      );
    }
    const applied = (await this.up()).migrations;
    this.logger.info({ migrations: applied }, `applied ${applied.length} pending migration(s) to ${this.db.location}`);
    return applied;
  }

  /**
   * Names of the migrations of this build that the database has not applied, in one query (run before
   * every command that uses the domain). Unlike the migrator's status it creates nothing: a database
   * without the migrations table has applied none.
   */
  private async pendingNames(): Promise<string[]> {
    let rows: { name: string }[];
    try {
      rows = (await this.db.orm.em.getConnection().execute('select name from mikro_orm_migrations', [], 'all')) as { name: string }[];
    } catch (err) {
      if ((err as { code?: string }).code !== '42P01') throw err;
      rows = [];
    }
    // The migrator records names without an extension; older records may carry one.
    const applied = new Set(rows.map((r) => r.name.replace(/\.[jt]s$/, '')));
    return compiledMigrations.map((m) => m.name).filter((name) => !applied.has(name));
  }

  /** Applies every pending migration in one transaction, holding the migration lock. */
  async up(options: { dryRun?: boolean; waitMs?: number; onWait?: (holder: string) => void } = {}): Promise<MigrationRun> {
    return this.guard(async () => {
      if (options.dryRun) {
        const pending = (await this.migrator.getPending()).map((m) => m.name);
        return { direction: 'up', migrations: pending, dryRun: true, sql: await this.sqlOf(pending, 'up') };
      }
      return this.withLock(options, async () => {
        const ran = await this.unbounded((inTransaction) => this.migrator.up(inTransaction));
        return { direction: 'up', migrations: ran.map((m) => m.name), dryRun: false };
      });
    });
  }

  /** Reverts the last applied migration, or every one applied after `to` (which stays applied). */
  async down(options: { to?: string; dryRun?: boolean; waitMs?: number; onWait?: (holder: string) => void } = {}): Promise<MigrationRun> {
    return this.guard(async () => {
      const plan = async () => {
        const executed = (await this.migrator.getExecuted()).map((m) => m.name);
        if (executed.length === 0) return [];
        if (options.to === undefined) return [executed.at(-1)!];
        const idx = executed.indexOf(options.to);
        if (idx < 0) {
          throw invalid(`--to ${options.to} is not an applied migration; applied: ${executed.join(', ')}`, { flag: 'to' });
        }
        return executed.slice(idx + 1).reverse();
      };
      if (options.dryRun) {
        const names = await plan();
        return { direction: 'down', migrations: names, dryRun: true, sql: await this.sqlOf(names, 'down') };
      }
      return this.withLock(options, async () => {
        const names = await plan();
        if (names.length === 0) return { direction: 'down', migrations: [], dryRun: false };
        const ran = await this.unbounded((inTransaction) => this.migrator.down({ migrations: names, ...inTransaction }));
        return { direction: 'down', migrations: ran.map((m) => m.name), dryRun: false };
      });
    });
  }

  /**
   * Compares the entities with the database's actual schema. Not in sync means a migration is
   * missing (or one was not applied): the difference is the SQL that would close the gap.
   */
  async check(): Promise<SchemaCheck> {
    return this.guard(async () => {
      const sql = await this.db.orm.schema.getUpdateSchemaSQL({ wrap: false, safe: false, dropTables: true });
      const difference = sql
        .split('\n')
        .map((line) => line.trim())
        .filter((line) => line.length > 0 && !line.startsWith('--'))
        // The migrations table is ours to keep, not the entities'.
        .filter((line) => !/mikro_orm_migrations/.test(line));
      return { inSync: difference.length === 0, difference };
    });
  }

  /** Writes a new migration with the SQL that brings the database to the entities (for developers). */
  async create(name: string, options: { blank?: boolean } = {}): Promise<{ file: string; statements: string[] }> {
    if (!/^[a-z0-9][a-z0-9_-]{0,79}$/i.test(name)) {
      throw invalid(`migration name "${name}" must be 1 to 80 letters, digits, - or _`, { arg: 'name' });
    }
    return this.guard(async () => {
      const result = await this.migrator.create(MIGRATIONS_DIR, options.blank ?? false, false, name.replaceAll('-', '_'));
      if (!result.fileName) {
        throw new DomainError('conflict', 'the entities and the database already agree: nothing to migrate (use --blank for a hand-written migration)');
      }
      writeMigrationIndex();
      return { file: join(MIGRATIONS_DIR, result.fileName), statements: result.diff.up };
    });
  }

  private async sqlOf(names: string[], method: 'up' | 'down'): Promise<{ name: string; statements: string[] }[]> {
    const driver = this.db.orm.em.getDriver() as AbstractSqlDriver;
    const out: { name: string; statements: string[] }[] = [];
    for (const name of names) {
      const entry = compiledMigrations.find((m) => m.name === name);
      if (!entry) throw new DomainError('internal', `migration ${name} is applied but not part of this build`);
      const migration = new (entry.class as unknown as MigrationClass)(driver, this.db.orm.config);
      await migration[method]();
      out.push({ name, statements: migration.getQueries().map((q) => (typeof q === 'string' ? q : 'sql' in q ? q.sql : q.toString())) });
    }
    return out;
  }

  /**
   * Runs `fn` holding the migration lock. On PostgreSQL that is a session advisory lock on a dedicated
   * connection, so two `svc migrate` never apply at once: the second waits (saying so) and then finds
   * nothing pending. The embedded database is already exclusive to this process.
   */
  private async withLock<T>(options: { waitMs?: number; onWait?: (holder: string) => void }, fn: () => Promise<T>): Promise<T> {
    if (this.db.kind === 'embedded') return fn();
    const url = this.db.orm.config.get('clientUrl')!;
    const client = new pg.Client({ connectionString: url, application_name: 'svc migrate', connectionTimeoutMillis: 5_000 });
    await client.connect();
    try {
      const got = await client.query<{ ok: boolean }>('select pg_try_advisory_lock($1, $2) as ok', LOCK_KEY);
      if (!got.rows[0]?.ok) {
        const holder = await client.query<{ pid: number; application_name: string; since: Date }>(
          `select a.pid, a.application_name, a.backend_start as since from pg_locks l join pg_stat_activity a on a.pid = l.pid
            where l.locktype = 'advisory' and l.classid = $1 and l.objid = $2 and l.granted limit 1`,
          LOCK_KEY,
        );
        const h = holder.rows[0];
        const who = h ? `backend pid ${h.pid} (${h.application_name || 'unknown'})` : 'another session';
        options.onWait?.(who);
        this.logger.warn({ holder: who }, `another migration holds the lock (${who}); waiting for it to finish`);
        const waitMs = options.waitMs ?? 300_000;
        await client.query(`set lock_timeout = ${Math.max(1, Math.floor(waitMs))}`);
        try {
          await client.query('select pg_advisory_lock($1, $2)', LOCK_KEY);
        } catch (err) {
          if ((err as { code?: string }).code === '55P03') {
            throw new DomainError('unavailable', `another migration (${who}) still holds the lock after ${Math.round(waitMs / 1000)} s; try again later`);
          }
          throw err;
        }
      }
      return await fn();
    } finally {
      // Closing the session releases the advisory lock even if the unlock below is never reached.
      await client.end().catch(() => undefined);
    }
  }

  /**
   * Runs the migrator in one transaction of its own with no statement timeout: DATABASE_STATEMENT_TIMEOUT_MS
   * bounds the API's queries, while a migration (an index built on a large table, a backfill) may
   * legitimately run for minutes. `set local` ends with the transaction, so the pooled connection
   * goes back with the service's timeout.
   */
  private async unbounded<T>(fn: (inTransaction: { transaction?: Transaction<object> }) => Promise<T>): Promise<T> {
    // The embedded database has no statement timeout, and one connection: the migrator would wait for
    // it outside this transaction (its storage checks), forever.
    if (this.db.kind === 'embedded') return fn({});
    return (this.db.orm.em.fork() as SqlEntityManager).transactional(async (em) => {
      await em.execute('set local statement_timeout = 0');
      return fn({ transaction: em.getTransactionContext<Transaction<object>>()! });
    });
  }

  private async guard<T>(fn: () => Promise<T>): Promise<T> {
    try {
      // The migrator creates a database that is not there: a typo in DATABASE_URL must fail here
      // (3D000, exit 6 naming the database), not leave a new empty database behind.
      await this.db.orm.em.getConnection().execute('select 1');
      return await fn();
    } catch (err) {
      throw translateDatabaseError(err);
    }
  }
}

/** Rewrites migrations/index.ts to list every migration file in the folder, oldest first. */
export function writeMigrationIndex(dir = MIGRATIONS_DIR): void {
  const names = readdirSync(dir)
    .filter((f) => /^Migration\d{14}.*\.ts$/.test(f))
    .map((f) => f.replace(/\.ts$/, ''))
    .sort();
  const imports = names.map((n) => `import { ${n} } from './${n}.js';`).join('\n');
  const entries = names.map((n) => `  { name: '${n}', class: ${n} },`).join('\n');
  writeFileSync(
    join(dir, 'index.ts'),
    `// Generated by \`svc migrate create\`: every migration, oldest first. Listing them (instead of\n` +
      `// reading the folder at run time) lets the build bundle them with the binary.\n${imports}\n\nexport const migrations = [\n${entries}\n];\n`,
  );
}
