import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { createWriteStream, readFileSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { join } from 'node:path';
import { BIN, ROOT, tempDir } from './helpers/cli.js';

// bin/run.js restarts a command on the embedded database in place with --liftoff-only (a cheaper
// WebAssembly compiler for PGlite); a command on PostgreSQL loads no WebAssembly and must not pay for
// the restart. What shows it is the process's command line, as `ps` prints it: the same pid, with
// the flag or without. It is read while svc waits to read a secret file (STRIPE_SECRET_KEY_FILE) that
// is a named pipe: by then svc is loading its configuration, past any restart.

/** The command line of `svc users list` (as /proc shows it) while it loads its configuration, and its exit code. */
async function commandLineWhileLoadingConfig(t: TestContext, env: Record<string, string>): Promise<{ args: string[]; code: number | null; stderr: string }> {
  const dir = tempDir(t);
  const fifo = join(dir, 'stripe-key');
  execFileSync('mkfifo', [fifo]);
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(DATABASE_URL|DATABASE_URL_FILE|SVC_CONFIG|NODE_OPTIONS)$/.test(k)));
  const child = spawn(process.execPath, [BIN, 'users', 'list'], {
    cwd: ROOT,
    env: { ...inherited, SVC_DATA_DIR: join(dir, 'data'), STRIPE_SECRET_KEY_FILE: fifo, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
  const exited = once(child, 'exit');
  t.after(() => child.kill('SIGKILL'));
  // Opening a named pipe for writing completes when svc opens it to read.
  const writer = createWriteStream(fifo);
  await once(writer, 'open');
  const args = readFileSync(`/proc/${child.pid}/cmdline`, 'utf8').split('\0').slice(0, -1);
  // A value that is not a Stripe key: svc stops there (exit 78), before it opens a database.
  writer.end('not-a-stripe-key');
  const [code] = (await exited) as [number | null];
  return { args, code, stderr };
}

test('svc restarts with --liftoff-only on the embedded database only: not when DATABASE_URL comes from the environment or from the SVC_CONFIG file', async (t) => {
  const url = 'postgres://postgres@127.0.0.1:5432/svc_never_opened';
  const dir = tempDir(t);
  const config = join(dir, 'svc.json');
  writeFileSync(config, JSON.stringify({ DATABASE_URL: url }));
  const noDatabase = join(dir, 'other.json');
  writeFileSync(noDatabase, JSON.stringify({ LOG_LEVEL: 'warn' }));

  const cases: [string, Record<string, string>, boolean][] = [
    ['embedded', {}, true],
    ['embedded, SVC_CONFIG without DATABASE_URL', { SVC_CONFIG: noDatabase }, true],
    ['DATABASE_URL in the environment', { DATABASE_URL: url }, false],
    ['DATABASE_URL in the SVC_CONFIG file', { SVC_CONFIG: config }, false],
  ];
  for (const [what, env, restarted] of cases) {
    const { args, code, stderr } = await commandLineWhileLoadingConfig(t, env);
    assert.equal(code, 78, `${what}: ${stderr}`);
    assert.match(stderr, /STRIPE_SECRET_KEY/, what);
    assert.deepEqual(args.slice(-3), [BIN, 'users', 'list'], `${what}: ${args.join(' ')}`);
    assert.equal(args.includes('--liftoff-only'), restarted, `${what}: ${args.join(' ')}`);
  }
});
