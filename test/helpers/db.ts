import { createHash, randomBytes } from 'node:crypto';
import { cpSync, existsSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import pg from 'pg';
import { loadConfig } from '../../src/config.js';
import { createApp } from '../../src/app.js';
import { createLogger } from '../../src/logger.js';
import { MIGRATIONS_DIR as migrationsDir } from '../../src/paths.js';
import { ROOT } from './cli.js';

/** The PostgreSQL server tests run against (CI and development machines have one on 127.0.0.1). */
export const PG_ADMIN_URL = process.env.TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

export function urlFor(database: string): string {
  const url = new URL(PG_ADMIN_URL);
  url.pathname = `/${database}`;
  return url.toString();
}

async function admin<T>(fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: PG_ADMIN_URL });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

function migrationsHash(): string {
  const h = createHash('sha256');
  for (const f of readdirSync(migrationsDir).sort()) {
    if (/\.(ts|js)$/.test(f)) h.update(f).update(readFileSync(join(migrationsDir, f)));
  }
  return h.digest('hex').slice(0, 12);
}

let template: Promise<string> | undefined;

/**
 * A template database built once by running the real migrations, named by a hash of the migration
 * files so a changed migration gets a new template. Built under an advisory lock (test files run in
 * parallel processes) and renamed into place only when complete.
 */
export function templateDatabase(): Promise<string> {
  template ??= admin(async (client) => {
    const name = `svc_tpl_${migrationsHash()}`;
    await client.query('select pg_advisory_lock(4242, 1)');
    try {
      const exists = await client.query('select 1 from pg_database where datname = $1', [name]);
      if (exists.rowCount) return name;
      const building = `${name}_build_${randomBytes(3).toString('hex')}`;
      await client.query(`create database "${building}"`);
      const config = loadConfig({ DATABASE_URL: urlFor(building), LOG_LEVEL: 'silent' });
      const app = await createApp(config, { logger: createLogger('silent') });
      try {
        await app.migrations.up();
      } finally {
        await app.close();
      }
      await client.query(`alter database "${building}" rename to "${name}"`);
      return name;
    } finally {
      await client.query('select pg_advisory_unlock(4242, 1)');
    }
  });
  return template;
}

/** Creates an empty database (no migrations applied) dropped when the test ends. */
export async function emptyDatabase(t: TestContext, prefix = 'svc_t'): Promise<string> {
  const name = `${prefix}_${randomBytes(6).toString('hex')}`;
  await admin((c) => c.query(`create database "${name}"`));
  t.after(() => dropDatabase(name));
  return urlFor(name);
}

/** A database of this test's own, cloned from the migrated template; dropped when the test ends. */
export async function migratedDatabase(t: TestContext): Promise<string> {
  const { url, drop } = await newMigratedDatabase();
  t.after(drop);
  return url;
}

/** A database cloned from the migrated template, and how to drop it: for a caller that must drop it after its own teardown. */
export async function newMigratedDatabase(): Promise<{ url: string; drop: () => Promise<unknown> }> {
  const tpl = await templateDatabase();
  const name = `svc_t_${randomBytes(6).toString('hex')}`;
  await admin((c) => c.query(`create database "${name}" template "${tpl}"`));
  return { url: urlFor(name), drop: () => dropDatabase(name) };
}

export function dropDatabase(name: string): Promise<unknown> {
  return admin((c) => c.query(`drop database if exists "${name}" with (force)`));
}

/** Runs one query against a test database, for assertions on what was (not) written. */
export async function query<R extends pg.QueryResultRow = Record<string, unknown>>(url: string, text: string, params: unknown[] = []): Promise<R[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<R>(text, params)).rows;
  } finally {
    await client.end();
  }
}

/** A second session on a test database (to hold locks, order a race); closed when the test ends. */
export async function sessionOn(t: { after(fn: () => Promise<unknown>): void }, url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  // The test's database is dropped (with force) when the test ends, perhaps before this closes.
  client.on('error', () => {});
  t.after(() => client.end());
  return client;
}

let embeddedTemplate: Promise<string> | undefined;

/**
 * A migrated embedded data folder (PGlite), built once per migration files and PGlite version in the
 * OS's temporary folder and shared by the test processes: built under a name of its own, then
 * renamed into place (atomic), so a process sees a complete template or none.
 */
function embeddedTemplateDir(): Promise<string> {
  embeddedTemplate ??= (async () => {
    const pglite = (JSON.parse(readFileSync(join(ROOT, 'node_modules/@electric-sql/pglite/package.json'), 'utf8')) as { version: string }).version;
    const dir = join(tmpdir(), `svc-embedded-tpl-${migrationsHash()}-${pglite}`);
    if (existsSync(join(dir, 'pgdata', 'PG_VERSION'))) return dir;
    const building = `${dir}.build-${randomBytes(3).toString('hex')}`;
    const config = loadConfig({ SVC_DATA_DIR: building, LOG_LEVEL: 'silent' });
    const app = await createApp(config, { logger: createLogger('silent') });
    try {
      await app.migrations.up();
    } finally {
      await app.close();
    }
    try {
      renameSync(building, dir);
    } catch {
      // Another test process put its template in place first: the same migrations, the same database.
      rmSync(building, { recursive: true, force: true });
    }
    return dir;
  })();
  return embeddedTemplate;
}

/**
 * An embedded data folder of this test's own (inside `dir`) holding a migrated database: a copy of
 * the template's. A fresh folder would initialise PGlite and apply every migration, 5 to 6 s of CPU
 * each time; the tests of first use itself start from an empty folder instead.
 */
export async function migratedDataDir(dir: string): Promise<string> {
  const dataDir = join(dir, 'data');
  cpSync(join(await embeddedTemplateDir(), 'pgdata'), join(dataDir, 'pgdata'), { recursive: true });
  return dataDir;
}
