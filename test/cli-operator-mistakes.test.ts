import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { svc, tempDir } from './helpers/cli.js';
import { migratedDatabase, query, PG_ADMIN_URL, urlFor } from './helpers/db.js';

// Mistakes an operator makes at 3 a.m.: each gets an exit code and a sentence that says what is wrong,
// and changes nothing.

test('a DATABASE_URL naming a database that does not exist exits 6 naming it, and creates no database', async (t) => {
  const name = `svc_t_typo_${randomBytes(4).toString('hex')}`;
  t.after(() => query(PG_ADMIN_URL, `drop database if exists "${name}"`));
  for (const args of [
    ['migrate', 'status', '--json'],
    ['users', 'list', '--json'],
  ]) {
    const res = await svc(args, { env: { DATABASE_URL: urlFor(name) } });
    assert.equal(res.code, 6, res.stdout + res.stderr);
    assert.match(res.json().error.message, new RegExp(`database "${name}" does not exist.*DATABASE_URL`));
  }
  assert.deepEqual(await query(PG_ADMIN_URL, 'select datname from pg_database where datname = $1', [name]), []);
});

test('an SVC_DATA_DIR that is a file, or inside one, exits 78 naming SVC_DATA_DIR', async (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'not-a-folder');
  writeFileSync(file, 'x');
  for (const dataDir of [file, join(file, 'data')]) {
    const res = await svc(['users', 'list', '--json'], { env: { SVC_DATA_DIR: dataDir } });
    assert.equal(res.code, 78, res.stdout + res.stderr);
    assert.equal(res.json().error.details.key, 'SVC_DATA_DIR');
    assert.match(res.json().error.message, /SVC_DATA_DIR=.*not-a-folder.* is not a folder/);
  }
  assert.equal(readFileSync(file, 'utf8'), 'x');
});

test('an SVC_DATA_DIR that cannot be created exits 78 naming SVC_DATA_DIR and why, and never hangs', async () => {
  // /sys refuses new folders even to root (EPERM); /proc answers ENOENT, where Node's recursive mkdir never returns.
  for (const [dataDir, why] of [
    ['/sys/svc-data', /cannot be created \(permission denied\)/],
    ['/proc/svc-data/inner', /cannot be created \(ENOENT\)/],
  ] as const) {
    for (const args of [
      ['users', 'list', '--json'],
      ['migrate', 'status', '--json'],
    ]) {
      const res = await svc(args, { env: { SVC_DATA_DIR: dataDir } });
      assert.equal(res.code, 78, res.stdout + res.stderr);
      assert.equal(res.json().error.details.key, 'SVC_DATA_DIR');
      assert.match(res.json().error.message, new RegExp(`^SVC_DATA_DIR=${dataDir} `));
      assert.match(res.json().error.message, why);
    }
  }
});

// oclif takes SVC_DATA_DIR for its own data folder and, by default, loads "user" and "link" plugins
// listed in a package.json there: whoever could write that file would run code in every svc command.
test('a package.json in SVC_DATA_DIR that links an oclif plugin runs nothing', async (t) => {
  const dir = tempDir(t);
  const dataDir = join(dir, 'data');
  const plugin = join(dir, 'plugin');
  const marker = join(dir, 'plugin-ran');
  mkdirSync(dataDir);
  mkdirSync(plugin);
  writeFileSync(
    join(dataDir, 'package.json'),
    JSON.stringify({ private: true, oclif: { schema: 1, plugins: [{ type: 'link', name: 'evil', root: plugin }] } }),
  );
  writeFileSync(join(plugin, 'package.json'), JSON.stringify({ name: 'evil', version: '1.0.0', type: 'module', oclif: { hooks: { init: './hook.js' } } }));
  writeFileSync(
    join(plugin, 'hook.js'),
    `import { writeFileSync } from 'node:fs';\nexport default async function () { writeFileSync(${JSON.stringify(marker)}, 'ran'); }\n`,
  );

  const res = await svc(['--version'], { env: { SVC_DATA_DIR: dataDir } });
  assert.equal(res.code, 0, res.stderr);
  assert.equal(existsSync(marker), false, 'the linked plugin ran');
  assert.doesNotMatch(res.stderr, /evil/);
});

// Names are checked since the API refused control characters, but rows written before (or by hand)
// still reach an operator's terminal through the tables: they are shown escaped, never sent raw.
test('svc users list and show print control characters of stored names escaped, never raw to the terminal', async (t) => {
  const db = await migratedDatabase(t);
  await query(db, "insert into users (id, email, name, created_at, updated_at) values ('usr_01JD3X0000000000000000000', 'eve@example.com', $1, now(), now())", [
    'Eve\u001b[2J\u001b]0;owned\u0007\u009b',
  ]);
  for (const args of [
    ['users', 'list'],
    ['users', 'show', 'eve@example.com'],
  ]) {
    const res = await svc(args, { env: { DATABASE_URL: db } });
    assert.equal(res.code, 0, res.stderr);
    assert.doesNotMatch(res.stdout.replaceAll('\n', ''), /\p{Cc}/u);
    assert.match(res.stdout, /Eve\\u001b\[2J\\u001b\]0;owned\\u0007\\u009b/);
  }
  // --json is JSON: the name as stored, escaped by JSON itself.
  const json = await svc(['users', 'show', 'eve@example.com', '--json'], { env: { DATABASE_URL: db } });
  assert.equal(json.json().name, 'Eve\u001b[2J\u001b]0;owned\u0007\u009b');
});

test('error messages that quote what was typed show its control characters escaped; SVC_ACTOR refuses them (exit 78)', async (t) => {
  const db = await migratedDatabase(t);
  const typed = 'nobody\u001b]0;owned\u0007@example.com';
  const show = await svc(['users', 'show', typed], { env: { DATABASE_URL: db } });
  assert.equal(show.code, 3, show.stderr);
  assert.doesNotMatch(show.stderr.replaceAll('\n', ''), /\p{Cc}/u);
  assert.match(show.stderr, /nobody\\u001b\]0;owned\\u0007@example\.com/);

  const actor = await svc(['users', 'create', '--email', 'ada@example.com', '--name', 'Ada'], { env: { DATABASE_URL: db, SVC_ACTOR: 'cli:\u001b[31mroot' } });
  assert.equal(actor.code, 78, actor.stderr);
  assert.match(actor.stderr, /SVC_ACTOR.*invalid.*control characters/);
  assert.doesNotMatch(actor.stderr.replaceAll('\n', ''), /\p{Cc}/u);
  assert.deepEqual(await query(db, 'select id from users'), [], 'nothing written');
});

test('a command that does not exist exits 2: with --json, the refusal is the JSON document every command prints on stdout', async () => {
  const json = await svc(['nosuch', '--json']);
  assert.equal(json.code, 2, json.stderr);
  assert.deepEqual(json.json(), { error: { code: 'invalid', message: 'command nosuch not found: see svc --help for the commands', exitCode: 2 } });
  const human = await svc(['users', 'nosuch']);
  assert.equal(human.code, 2);
  assert.equal(human.stdout, '');
  assert.match(human.stderr, /command users:nosuch not found/);
});

test('a missing argument is named with what it is, on one line, and nothing runs', async (t) => {
  const db = await migratedDatabase(t);
  const one = await svc(['users', 'show'], { env: { DATABASE_URL: db } });
  assert.equal(one.code, 2, one.stderr);
  assert.equal(one.stderr, 'Error: Missing 1 required arg: user (User id (usr_…) or email address)\nSee more help with --help\n');
  const two = await svc(['users', 'set-role', '--json'], { env: { DATABASE_URL: db } });
  assert.equal(two.code, 2, two.stderr);
  assert.deepEqual(two.json(), {
    error: {
      code: 'invalid',
      message: 'Missing 2 required args: user (User id (usr_…) or email address), role ((admin|user|guest) The new role)',
      exitCode: 2,
    },
  });
});

test('a topic with --json prints its help as JSON (its commands with their summaries, its subtopics), exit 0', async () => {
  const users = await svc(['users', '--json']);
  assert.equal(users.code, 0, users.stderr);
  const help = users.json();
  assert.equal(help.topic, 'users');
  assert.match(help.description, /user accounts/);
  assert.deepEqual(
    help.commands.map((c: { command: string }) => c.command),
    ['svc users create', 'svc users disable', 'svc users enable', 'svc users list', 'svc users set-role', 'svc users show'],
  );
  assert.ok(help.commands.every((c: { summary: string }) => c.summary.length > 0));
  assert.deepEqual(help.topics, [{ topic: 'users api-keys', description: 'API keys for API clients: create (the secret is shown once), list, revoke.' }]);
  const root = await svc(['--json']);
  assert.equal(root.code, 0, root.stderr);
  assert.deepEqual(
    root.json().topics.map((t: { topic: string }) => t.topic),
    ['migrate', 'users', 'keys'],
  );
  assert.ok(root.json().commands.some((c: { command: string }) => c.command === 'svc serve'));
});
