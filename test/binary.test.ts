import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { svc, tempDir } from './helpers/cli.js';

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
