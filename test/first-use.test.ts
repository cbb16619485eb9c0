import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, ROOT, svc, tempDir } from './helpers/cli.js';
import { emptyDatabase, query } from './helpers/db.js';

const APPLIED = /applied \d+ pending migration\(s\) to /;

test('on a fresh embedded data folder the first command that uses the domain applies the migrations itself, saying so once', async (t) => {
  const dataDir = join(tempDir(t), 'data');
  const env = { SVC_DATA_DIR: dataDir, LOG_LEVEL: 'info', SVC_ACTOR: 'cli:ops' };

  // svc migrate status does what it says: it reports, and applies nothing.
  const before = await svc(['migrate', 'status', '--json'], { env });
  assert.equal(before.code, 0, before.stderr);
  assert.deepEqual(before.json().applied, []);
  const migrations = before.json().pending.map((m: { name: string }) => m.name);
  assert.ok(migrations.length >= 1);

  const list = await svc(['users', 'list', '--json'], { env });
  assert.equal(list.code, 0, list.stderr);
  assert.deepEqual(list.json().data, []);
  const announced = list.stderr.split('\n').filter((l) => APPLIED.test(l));
  assert.equal(announced.length, 1, list.stderr);
  assert.deepEqual(JSON.parse(announced[0]!).migrations, migrations);

  const created = await svc(['users', 'create', '--email', 'ada@example.com', '--name', 'Ada', '--json'], { env });
  assert.equal(created.code, 0, created.stderr);
  assert.doesNotMatch(created.stderr, APPLIED);
  const after = await svc(['migrate', 'status', '--json'], { env });
  assert.deepEqual(after.json().pending, []);
});

test('on PostgreSQL a command that finds migrations pending exits 4, says to run svc migrate, and changes nothing', async (t) => {
  const url = await emptyDatabase(t);
  const env = { DATABASE_URL: url };
  for (const args of [
    ['users', 'list'],
    ['users', 'create', '--email', 'ada@example.com', '--name', 'Ada'],
  ]) {
    const res = await svc([...args, '--json'], { env });
    assert.equal(res.code, 4, res.stderr);
    assert.equal(res.json().error.code, 'conflict');
    assert.match(res.json().error.message, /^\d+ migration\(s\) are pending \(Migration\d+_initial, .*\); run `svc migrate` first$/);
  }
  assert.deepEqual(await query(url, "select to_regclass('mikro_orm_migrations')::text as t"), [{ t: null }]);

  assert.equal((await svc(['migrate'], { env })).code, 0);
  const list = await svc(['users', 'list', '--json'], { env });
  assert.equal(list.code, 0, list.stderr);
});

/** Runs `svc ARGS` with a terminal for its stdin, stdout and stderr (script(1) gives it a pty); resolves to its exit code and what the terminal showed. */
function svcOnTerminal(args: string[], env: Record<string, string>): Promise<{ code: number | null; screen: string }> {
  const quote = (s: string) => `'${s.replaceAll("'", "'\\''")}'`;
  const command = [process.execPath, BIN, ...args].map(quote).join(' ');
  const child = spawn('script', ['--quiet', '--return', '--command', command, '/dev/null'], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let screen = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (screen += d));
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, screen: screen.replaceAll('\r\n', '\n') }));
  });
}

test('an unexpected error is one readable line on a terminal; the JSON log line with the stack comes with LOG_LEVEL=debug or when stderr is not a terminal', async (t) => {
  const dataDir = join(tempDir(t), 'data');
  // Something no code path expects: the lock file is a folder.
  mkdirSync(join(dataDir, 'pglite.lock'), { recursive: true });
  const env = { SVC_DATA_DIR: dataDir, LOG_LEVEL: 'info' };

  const terminal = await svcOnTerminal(['users', 'list'], env);
  assert.equal(terminal.code, 1);
  assert.equal(
    terminal.screen,
    'Error: EISDIR: illegal operation on a directory, read (an unexpected error; run it again with LOG_LEVEL=debug for the details)\n',
  );

  const debug = await svcOnTerminal(['users', 'list'], { ...env, LOG_LEVEL: 'debug' });
  assert.equal(debug.code, 1);
  const logged = debug.screen
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l));
  assert.ok(
    logged.some((l) => l.level === 'error' && /^Error: EISDIR.*\n\s+at /.test(l.err?.stack)),
    debug.screen,
  );

  const piped = await svc(['users', 'list'], { env });
  assert.equal(piped.code, 1);
  const lines = piped.stderr.trim().split('\n');
  assert.match(JSON.parse(lines[0]!).err.stack, /^Error: EISDIR.*\n\s+at /);
  assert.equal(lines.at(-1), 'Error: EISDIR: illegal operation on a directory, read');
});
