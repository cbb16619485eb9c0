import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, tempDir } from './helpers/cli.js';

const CONTENDERS = 10;
const ROUNDS = 40;

interface Contender {
  pid: number;
  /** Sends a command line and resolves to the answer. */
  ask(line: 'take' | 'release'): Promise<string>;
}

/** Starts a process that contends for the lock at `path` (test/helpers/lock-contender.ts). */
async function contender(t: TestContext, path: string): Promise<Contender> {
  const child: ChildProcessWithoutNullStreams = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'test/helpers/lock-contender.ts'), path], { cwd: ROOT });
  t.after(() => child.kill());
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const ask = async (line: string) => {
    child.stdin.write(`${line}\n`);
    const next = await lines.next();
    assert.ok(!next.done, `contender ${child.pid} ended: ${stderr}`);
    return next.value;
  };
  // Loaded and listening once it answers a no-op release.
  assert.equal(await ask('release'), 'released');
  return { pid: child.pid!, ask };
}

/** A pid no process has any more: a process that has exited. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '0']);
  await once(child, 'exit');
  return child.pid!;
}

/**
 * Every contender tries to take the lock at the same moment; exactly one may own it, and every other
 * one must be refused naming the owner's pid.
 */
async function race(contenders: Contender[], expectedHolder?: number): Promise<Contender | undefined> {
  const answers = await Promise.all(contenders.map((c) => c.ask('take')));
  const owners = contenders.filter((_, i) => answers[i] === 'owner');
  if (expectedHolder !== undefined) {
    assert.equal(owners.length, 0, `the lock of live pid ${expectedHolder} was taken: ${answers.join(' | ')}`);
  } else {
    assert.equal(owners.length, 1, `owners: ${owners.map((o) => o.pid).join(', ') || 'none'}; answers: ${answers.join(' | ')}`);
  }
  const holder = expectedHolder ?? owners[0]!.pid;
  for (const [i, answer] of answers.entries()) {
    if (answer === 'owner') continue;
    assert.match(answer, new RegExp(`^refused ${holder} .*in use by another svc process \\(pid ${holder}\\)`), `contender ${contenders[i]!.pid}`);
  }
  return owners[0];
}

test(`${CONTENDERS} processes taking the same lock at once: never two owners, and every refused one names the holder`, { timeout: 240_000 }, async (t) => {
  const dir = tempDir(t);
  const lock = join(dir, 'pglite.lock');
  const contenders = await Promise.all(Array.from({ length: CONTENDERS }, () => contender(t, lock)));

  await t.test('on a free lock', async () => {
    for (let round = 0; round < ROUNDS; round++) {
      const owner = await race(contenders);
      assert.equal(readFileSync(lock, 'utf8').trim(), String(owner!.pid));
      assert.equal(await owner!.ask('release'), 'released');
      assert.equal(existsSync(lock), false);
    }
  });

  await t.test('on a lock left by a process that died (taken over by exactly one)', async () => {
    const dead = await deadPid();
    for (let round = 0; round < ROUNDS; round++) {
      writeFileSync(lock, `${dead}\n`);
      const owner = await race(contenders);
      assert.equal(readFileSync(lock, 'utf8').trim(), String(owner!.pid));
      assert.equal(await owner!.ask('release'), 'released');
    }
    assert.deepEqual(readdirSync(dir), [], 'no temporary or takeover files are left behind');
  });

  await t.test('on a stale lock whose takeover was begun by a process that died too', async () => {
    const [dead, deadTaker] = [await deadPid(), await deadPid()];
    for (let round = 0; round < ROUNDS / 4; round++) {
      writeFileSync(lock, `${dead}\n`);
      writeFileSync(`${lock}.takeover-${dead}`, `${deadTaker}\n`);
      const owner = await race(contenders);
      assert.equal(readFileSync(lock, 'utf8').trim(), String(owner!.pid));
      assert.equal(await owner!.ask('release'), 'released');
      assert.deepEqual(readdirSync(dir), []);
    }
  });

  await t.test('on a lock held by a live process (taken by none)', async () => {
    const holder = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)']);
    t.after(() => holder.kill());
    writeFileSync(lock, `${holder.pid}\n`);
    for (let round = 0; round < 5; round++) await race(contenders, holder.pid);
    assert.equal(readFileSync(lock, 'utf8').trim(), String(holder.pid));
  });
});
