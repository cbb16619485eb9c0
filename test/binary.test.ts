import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { constants } from 'node:os';
import { execFileSync, spawnSync } from 'node:child_process';
import { connect } from 'node:net';
import { once } from 'node:events';
import { svc, svcServe, tempDir, type ServeProcess } from './helpers/cli.js';
import { postgresServeEnv } from './helpers/server.js';

// The machine's own node: 20 on this image, so it exercises the Node 24 guard in bin/run.js.
const SYSTEM_NODE = '/usr/bin/node';

function systemNode(): string {
  assert.ok(existsSync(SYSTEM_NODE), `these tests need the machine's older node at ${SYSTEM_NODE}`);
  const major = Number(execFileSync(SYSTEM_NODE, ['-p', 'process.versions.node.split(".")[0]']).toString().trim());
  assert.ok(major < 24, `${SYSTEM_NODE} is Node ${major}; these tests need one older than 24`);
  return SYSTEM_NODE;
}

test('svc --version names the binary and runs on Node 24', async () => {
  const res = await svc(['--version']);
  assert.equal(res.code, 0, res.stderr);
  assert.match(res.stdout, /^svc\/\d+\.\d+\.\d+ linux-\w+ node-v24\./);
});

test('svc --help lists the commands that exist, with their summaries', async () => {
  const res = await svc(['--help']);
  assert.equal(res.code, 0, res.stderr);
  for (const topic of ['config', 'migrate', 'users']) assert.match(res.stdout, new RegExp(`\\n  ${topic}\\s+\\S`));
  const users = await svc(['users', '--help']);
  for (const cmd of ['create', 'list', 'show', 'set-role', 'disable', 'enable']) assert.match(users.stdout, new RegExp(`users ${cmd}\\s`));
  const list = await svc(['users', 'list', '--help']);
  assert.match(list.stdout, /EXAMPLES/);
  assert.match(list.stdout, /--json/);
});

test('an unknown command exits non-zero and says so', async () => {
  const res = await svc(['frobnicate']);
  assert.notEqual(res.code, 0);
  assert.match(res.stderr, /frobnicate/);
});

test('started by an older node, svc re-executes itself with the pinned Node 24', async () => {
  const res = await svc(['--version'], { node: systemNode() });
  assert.equal(res.code, 0, res.stderr);
  assert.match(res.stdout, /node-v24\./);
});

test('started by an older node with no pinned node installed, svc refuses with a message that says what to do', (t) => {
  const dir = tempDir(t);
  mkdirSync(join(dir, 'bin'));
  copyFileSync(new URL('../bin/run.js', import.meta.url), join(dir, 'bin', 'run.js'));
  const res = spawnSync(systemNode(), [join(dir, 'bin', 'run.js'), '--version'], { encoding: 'utf8' });
  assert.equal(res.status, 1);
  assert.equal(res.stdout, '');
  assert.match(res.stderr, /needs Node\.js 24\.x, but was started by v\d+.*\n.*npx svc/);
});

/** Environment for `svc serve` on a migrated PostgreSQL database of this test's own (it starts faster than the embedded one). */
async function serveEnv(t: TestContext): Promise<Record<string, string>> {
  return { ...(await postgresServeEnv(t)), LOG_LEVEL: 'info' };
}

/**
 * svc serve started by the older node: bin/run.js waits while the pinned Node 24 runs the server in
 * a child process. Resolves to both, the server's pid read from its "listening on" log line.
 */
async function reexecutedServe(t: TestContext, env: Record<string, string> = {}): Promise<{ serve: ServeProcess; serverPid: number }> {
  const serve = await svcServe(t, ['--port', '0'], { node: systemNode(), env: { ...(await serveEnv(t)), ...env } });
  await serve.waitForStderr(/"msg":"listening on/);
  const listening = serve
    .stderr()
    .split('\n')
    .find((l) => l.includes('"msg":"listening on'))!;
  const serverPid = JSON.parse(listening).pid as number;
  assert.notEqual(serverPid, serve.child.pid, 'the server runs in a child process of bin/run.js');
  t.after(() => {
    if (isRunning(serverPid)) process.kill(serverPid, 'SIGKILL');
  });
  return { serve, serverPid };
}

/** The state letter of a process (R, S, Z …) in /proc, or 'gone'. */
function processState(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[0]!;
  } catch {
    return 'gone';
  }
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test(
  'started by an older node, svc serve gets the SIGTERM sent to bin/run.js, stops cleanly, and bin/run.js exits with its code',
  { timeout: 120_000 },
  async (t) => {
    const { serve, serverPid } = await reexecutedServe(t);
    assert.equal((await fetch(`${serve.url}/health/live`)).status, 200);
    serve.child.kill('SIGTERM');
    assert.deepEqual(await serve.exited, { code: 0, signal: null });
    assert.match(serve.stderr(), /"signal":"SIGTERM","msg":"SIGTERM: stopping"/);
    assert.match(serve.stderr(), /"drained":true/);
    assert.equal(isRunning(serverPid), false, 'the server is gone');
  },
);

test(
  'started by an older node, a second SIGINT while svc serve stops (Ctrl-C on a terminal reaches it directly and again through bin/run.js) does not cut the shutdown short',
  { timeout: 120_000 },
  async (t) => {
    const { serve, serverPid } = await reexecutedServe(t, { SHUTDOWN_TIMEOUT_MS: '120000' });
    // A request whose body is still arriving keeps the shutdown waiting (it drains in-flight
    // requests) until this test ends it: the second signal surely lands while svc is stopping.
    const inFlight = connect(Number(new URL(serve.url).port), '127.0.0.1');
    inFlight.on('error', () => undefined);
    t.after(() => inFlight.destroy());
    await once(inFlight, 'connect');
    inFlight.write('POST /api/v1/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n{');
    process.kill(serverPid, 'SIGINT');
    await serve.waitForStderr(/"msg":"SIGINT: stopping"/);
    serve.child.kill('SIGINT');
    await serve.waitForStderr(/"msg":"SIGINT: already stopping"/);
    assert.equal(isRunning(serverPid), true, 'the second SIGINT did not stop the server halfway through its shutdown');
    inFlight.destroy();
    assert.deepEqual(await serve.exited, { code: 0, signal: null });
    assert.match(serve.stderr(), /"msg":"stopped"/);
    assert.equal(isRunning(serverPid), false, 'the server is gone');
  },
);

test('started by an older node, when svc dies of a signal bin/run.js exits with 128 + its number', { timeout: 120_000 }, async (t) => {
  const { serve, serverPid } = await reexecutedServe(t);
  process.kill(serverPid, 'SIGKILL');
  assert.deepEqual(await serve.exited, { code: 128 + constants.signals.SIGKILL, signal: null });
});

test(
  'started by an older node, when bin/run.js is killed with SIGKILL (it cannot pass that on) svc serve stops as on SIGTERM instead of running on orphaned',
  { timeout: 120_000 },
  async (t) => {
    const { serve, serverPid } = await reexecutedServe(t);
    // The server inherited bin/run.js's stderr: the pipe closes when the server is gone too.
    const serverGone = once(serve.child.stderr!, 'close');
    serve.child.kill('SIGKILL');
    assert.deepEqual(await serve.exited, { code: null, signal: 'SIGKILL' });
    await serverGone;
    // Its stderr closes as it exits; it is not our child, so its end is read from /proc: gone, or
    // a zombie until whoever adopted it reaps it. (No event says so: poll briefly.)
    for (let i = 0; i < 200 && !['gone', 'Z'].includes(processState(serverPid)); i++) await new Promise((resolve) => setTimeout(resolve, 50));
    assert.ok(['gone', 'Z'].includes(processState(serverPid)), `the orphaned server is gone (state ${processState(serverPid)})`);
    assert.match(serve.stderr(), /"signal":"SIGTERM","msg":"SIGTERM: stopping"/);
    assert.match(serve.stderr(), /"msg":"stopped"/);
  },
);
