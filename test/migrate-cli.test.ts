import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { emptyDatabase, query } from './helpers/db.js';
import { svc, tempDir } from './helpers/cli.js';
import { writeMigrationIndex } from '../src/adapters/migrations.js';
import { MIGRATIONS_DIR as migrationsDir } from '../src/paths.js';

const MIGRATIONS = readdirSync(migrationsDir)
  .filter((f) => /^Migration.*\.ts$/.test(f))
  .map((f) => f.replace(/\.ts$/, ''))
  .sort();

const tables = async (url: string) =>
  (await query<{ tablename: string }>(url, "select tablename from pg_tables where schemaname = 'public' order by tablename")).map((r) => r.tablename);
// Every table.column of the schema: what any migration changes.
const columns = async (url: string) =>
  (
    await query<{ c: string }>(url, "select table_name || '.' || column_name as c from information_schema.columns where table_schema = 'public' order by 1")
  ).map((r) => r.c);
// The columns and the indexes: what a migration changes (the last one may add only indexes).
const schema = async (url: string) =>
  (await columns(url)).concat(
    (await query<{ indexname: string }>(url, "select indexname from pg_indexes where schemaname = 'public' order by 1")).map((r) => r.indexname),
  );

test('svc migrate on a new PostgreSQL database', async (t) => {
  const url = await emptyDatabase(t);
  const env = { DATABASE_URL: url };

  await t.test('status lists every migration as pending', async () => {
    const res = await svc(['migrate', 'status', '--json'], { env });
    assert.equal(res.code, 0, res.stderr);
    assert.deepEqual(res.json(), { applied: [], pending: MIGRATIONS.map((name) => ({ name })) });
  });

  await t.test('--dry-run prints the SQL and changes nothing', async () => {
    const res = await svc(['migrate', '--dry-run'], { env });
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, /create table "users"/);
    assert.match(res.stdout, /nothing was changed/);
    const json = await svc(['migrate', '--dry-run', '--json'], { env });
    assert.equal(json.json().dryRun, true);
    assert.deepEqual(json.json().migrations, MIGRATIONS);
    assert.ok(json.json().sql[0].statements.some((s: string) => s.includes('create table "orders"')));
    assert.deepEqual(
      (await tables(url)).filter((n) => n !== 'mikro_orm_migrations'),
      [],
    );
  });

  await t.test('migrate applies them; status shows when; a second run has nothing to do', async () => {
    const res = await svc(['migrate'], { env });
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, new RegExp(`applied ${MIGRATIONS[0]}`));
    for (const table of ['audit_log', 'mikro_orm_migrations', 'order_items', 'orders', 'products', 'users']) {
      assert.ok((await tables(url)).includes(table), table);
    }

    const status = (await svc(['migrate', 'status', '--json'], { env })).json();
    assert.deepEqual(
      status.applied.map((m: { name: string }) => m.name),
      MIGRATIONS,
    );
    assert.ok(Date.now() - Date.parse(status.applied[0].executedAt) < 60_000);
    assert.deepEqual(status.pending, []);

    const again = await svc(['migrate', '--json'], { env });
    assert.deepEqual(again.json(), { direction: 'up', migrations: [], dryRun: false });
  });

  await t.test('check exits 0 when entities and schema agree, and 8 with the difference when they do not', async () => {
    const ok = await svc(['migrate', 'check'], { env });
    assert.equal(ok.code, 0, ok.stdout + ok.stderr);
    assert.match(ok.stdout, /matches the entities/);

    await query(url, 'alter table users add column nickname text');
    const drift = await svc(['migrate', 'check', '--json'], { env });
    assert.equal(drift.code, 8);
    assert.equal(drift.json().inSync, false);
    assert.ok(
      drift.json().difference.some((s: string) => /nickname/.test(s)),
      drift.stdout,
    );
    const human = await svc(['migrate', 'check'], { env });
    assert.equal(human.code, 8);
    assert.match(human.stdout, /differs from the entities[\s\S]*nickname/);
    await query(url, 'alter table users drop column nickname');
  });

  await t.test('create with nothing to migrate exits 4, says so and writes no file', async () => {
    const before = readdirSync(migrationsDir);
    const res = await svc(['migrate', 'create', 'nothing-changed'], { env });
    assert.equal(res.code, 4);
    assert.match(res.stderr, /already agree: nothing to migrate/);
    assert.deepEqual(readdirSync(migrationsDir), before);
    const badName = await svc(['migrate', 'create', 'no spaces please'], { env });
    assert.equal(badName.code, 2);
  });

  await t.test('down reverts the last migration; --to a name that was never applied exits 2 and changes nothing', async () => {
    const bad = await svc(['migrate', 'down', '--to', 'Migration00000000000000_nope'], { env });
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /not an applied migration/);

    const dry = await svc(['migrate', 'down', '--dry-run', '--json'], { env });
    assert.equal(dry.code, 0, dry.stderr);
    assert.deepEqual(dry.json().migrations, [MIGRATIONS.at(-1)]);
    assert.match(JSON.stringify(dry.json().sql), /drop (table|column|index)/);
    const before = await schema(url);

    assert.deepEqual(await schema(url), before);

    const down = await svc(['migrate', 'down', '--json'], { env });
    assert.equal(down.code, 0, down.stderr);
    assert.notDeepEqual(await schema(url), before);
    assert.deepEqual(down.json().migrations, [MIGRATIONS.at(-1)]);
    const status = (await svc(['migrate', 'status', '--json'], { env })).json();
    assert.deepEqual(
      status.pending.map((m: { name: string }) => m.name),
      [MIGRATIONS.at(-1)],
    );

    const up = await svc(['migrate'], { env });
    assert.equal(up.code, 0, up.stderr);

    // --to NAME reverts everything applied after NAME; NAME stays applied.
    const to = await svc(['migrate', 'down', '--to', MIGRATIONS[0]!, '--json'], { env });
    assert.equal(to.code, 0, to.stderr);
    assert.deepEqual(to.json().migrations, MIGRATIONS.slice(1).reverse());
    const after = (await svc(['migrate', 'status', '--json'], { env })).json();
    assert.deepEqual(
      after.applied.map((m: { name: string }) => m.name),
      [MIGRATIONS[0]],
    );
    assert.equal((await svc(['migrate'], { env })).code, 0);
  });
});

test('two svc migrate started at once apply the migrations exactly once', async (t) => {
  const url = await emptyDatabase(t);
  const env = { DATABASE_URL: url };
  const [a, b] = await Promise.all([svc(['migrate', '--json'], { env }), svc(['migrate', '--json'], { env })]);
  assert.equal(a.code, 0, a.stderr);
  assert.equal(b.code, 0, b.stderr);
  const applied = [...a.json().migrations, ...b.json().migrations];
  assert.deepEqual(applied.sort(), MIGRATIONS);
  const rows = await query<{ n: string }>(url, 'select count(*) as n from mikro_orm_migrations');
  assert.equal(Number(rows[0]!.n), MIGRATIONS.length);
});

test('a migration that fails exits non-zero and leaves the schema as it was', async (t) => {
  const url = await emptyDatabase(t);
  // A table in the way makes the initial migration fail part-way through, after it created others.
  await query(url, 'create table products (id int primary key)');
  const res = await svc(['migrate'], { env: { DATABASE_URL: url } });
  assert.notEqual(res.code, 0);
  assert.match(res.stderr, /products/);
  assert.deepEqual(
    (await tables(url)).filter((n) => n !== 'mikro_orm_migrations'),
    ['products'],
  );
  const executed = await query(url, "select * from pg_tables where tablename = 'mikro_orm_migrations'");
  if (executed.length) assert.deepEqual(await query(url, 'select * from mikro_orm_migrations'), []);
});

test('a DATABASE_URL that does not parse fails at start-up naming the key, before touching anything', async () => {
  const res = await svc(['migrate', '--json'], { env: { DATABASE_URL: 'mysql://root@localhost/db' } });
  assert.equal(res.code, 78);
  assert.equal(res.json().error.code, 'config');
  assert.match(res.json().error.message, /DATABASE_URL=.* is invalid: expected a PostgreSQL URL/);
});

test('an unreachable PostgreSQL is reported as unavailable, naming DATABASE_URL', async () => {
  const res = await svc(['migrate', 'status'], { env: { DATABASE_URL: 'postgres://postgres@127.0.0.1:1/nope' } });
  assert.equal(res.code, 6, res.stderr);
  assert.match(res.stderr, /cannot reach the database.*DATABASE_URL/);
});

test('the migration index lists every migration file, oldest first', (t) => {
  const dir = tempDir(t);
  for (const f of ['Migration20270101000000_b.ts', 'Migration20260101000000_a.ts', 'index.ts', 'notes.md']) writeFileSync(join(dir, f), '');
  writeMigrationIndex(dir);
  const index = readFileSync(join(dir, 'index.ts'), 'utf8');
  assert.match(index, /import \{ Migration20260101000000_a \} from '\.\/Migration20260101000000_a\.js';\nimport \{ Migration20270101000000_b \}/);
  assert.match(index, /\{ name: 'Migration20260101000000_a', class: Migration20260101000000_a \},\n {2}\{ name: 'Migration20270101000000_b'/);
  // The committed index is exactly what the generator writes for the committed migrations.
  const committed = tempDir(t);
  for (const f of readdirSync(migrationsDir)) writeFileSync(join(committed, f), '');
  writeMigrationIndex(committed);
  assert.equal(readFileSync(join(migrationsDir, 'index.ts'), 'utf8'), readFileSync(join(committed, 'index.ts'), 'utf8'));
});
