import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { svc, tempDir, BIN } from './helpers/cli.js';

test('with no DATABASE_URL, svc migrates and manages users in an embedded database in SVC_DATA_DIR', async (t) => {
  const dataDir = join(tempDir(t), 'data');
  const env = { SVC_DATA_DIR: dataDir, LOG_LEVEL: 'info', SVC_ACTOR: 'cli:ops' };

  await t.test('the first command creates the data folder and says so on stderr', async () => {
    const res = await svc(['migrate', '--json'], { env });
    assert.equal(res.code, 0, res.stderr);
    assert.ok(res.json().migrations.length >= 1);
    assert.ok(existsSync(join(dataDir, 'pgdata')));
    assert.match(res.stderr, /created the embedded database \(PGlite\) in .*data; set DATABASE_URL/);
    const again = await svc(['migrate', '--json'], { env });
    assert.deepEqual(again.json().migrations, []);
    assert.doesNotMatch(again.stderr, /created the embedded database/);
  });

  await t.test('users commands work there, and the data persists between processes', async () => {
    const created = await svc(['users', 'create', '--email', 'ada@example.com', '--name', 'Ada', '--role', 'admin', '--json'], { env });
    assert.equal(created.code, 0, created.stderr);
    const list = await svc(['users', 'list', '--json'], { env });
    assert.deepEqual(
      list.json().data.map((u: { email: string }) => u.email),
      ['ada@example.com'],
    );
    const dup = await svc(['users', 'create', '--email', 'Ada@Example.COM', '--name', 'Twin'], { env });
    assert.equal(dup.code, 4);
    assert.match(dup.stderr, /already exists/);
    const role = await svc(['users', 'set-role', 'ada@example.com', 'user', '--json'], { env });
    assert.equal(role.json().role, 'user');
    const status = await svc(['migrate', 'status', '--json'], { env });
    assert.deepEqual(status.json().pending, []);
    const check = await svc(['migrate', 'check'], { env });
    assert.equal(check.code, 0, check.stdout + check.stderr);
  });

  await t.test('the same migrations revert and re-apply there', async () => {
    const down = await svc(['migrate', 'down', '--json'], { env });
    assert.equal(down.code, 0, down.stderr);
    assert.equal(down.json().migrations.length, 1);
    const up = await svc(['migrate', '--json'], { env });
    assert.deepEqual(up.json().migrations, down.json().migrations);
  });

  await t.test('emails are masked in the logs', async () => {
    const res = await svc(['users', 'create', '--email', 'grace.hopper@example.com', '--name', 'Grace'], { env: { ...env, LOG_LEVEL: 'trace' } });
    assert.equal(res.code, 0, res.stderr);
    assert.ok(res.stderr.length > 0);
    assert.doesNotMatch(res.stderr, /grace\.hopper@example\.com/);
  });

  await t.test('a second process cannot open the folder while one holds it; a lock left by a dead process is taken over', async () => {
    const lock = join(dataDir, 'pglite.lock');
    const holder = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)']);
    t.after(() => holder.kill());
    writeFileSync(lock, `${holder.pid}\n`);
    const busy = await svc(['users', 'list', '--json'], { env });
    assert.equal(busy.code, 6);
    assert.match(busy.json().error.message, new RegExp(`in use by another svc process \\(pid ${holder.pid}\\)`));
    assert.equal(readFileSync(lock, 'utf8').trim(), String(holder.pid));

    holder.kill();
    await new Promise((resolve) => holder.once('exit', resolve));
    const taken = await svc(['users', 'list', '--json'], { env });
    assert.equal(taken.code, 0, taken.stderr);
    assert.equal(existsSync(lock), false);
  });

  await t.test('10 svc users list started at once: on a stale lock one at a time opens the folder, the others name it; on a live lock none does', async () => {
    const lock = join(dataDir, 'pglite.lock');
    const dead = spawn(process.execPath, ['-e', '0']);
    await new Promise((resolve) => dead.once('exit', resolve));
    writeFileSync(lock, `${dead.pid}\n`);
    const runs = await Promise.all(Array.from({ length: 10 }, () => svc(['users', 'list', '--json'], { env })));
    const opened = runs.filter((r) => r.code === 0);
    assert.ok(opened.length >= 1, runs.map((r) => r.stderr).join('\n'));
    for (const r of opened)
      assert.deepEqual(
        r.json().data.map((u: { email: string }) => u.email),
        ['grace.hopper@example.com', 'ada@example.com'],
      );
    // A refused one names a process that held the folder at the time: one of the runs that opened it.
    const owners = new Set(opened.map((r) => r.pid));
    for (const r of runs.filter((r) => r.code !== 0)) {
      assert.equal(r.code, 6, r.stderr);
      const holder = Number(/in use by another svc process \(pid (\d+)\)/.exec(r.json().error.message)?.[1]);
      assert.ok(owners.has(holder), `refused naming pid ${holder}, which is not one of the runs that opened the folder (${[...owners].join(', ')})`);
    }
    assert.equal(existsSync(lock), false);
    const check = await svc(['migrate', 'check'], { env });
    assert.equal(check.code, 0, check.stdout + check.stderr);

    const holder = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)']);
    t.after(() => holder.kill());
    writeFileSync(lock, `${holder.pid}\n`);
    const refused = await Promise.all(Array.from({ length: 10 }, () => svc(['users', 'list', '--json'], { env })));
    for (const r of refused) {
      assert.equal(r.code, 6, r.stderr);
      assert.match(r.json().error.message, new RegExp(`in use by another svc process \\(pid ${holder.pid}\\)`));
    }
    assert.equal(readFileSync(lock, 'utf8').trim(), String(holder.pid));
    holder.kill();
  });

  assert.ok(BIN);
});
