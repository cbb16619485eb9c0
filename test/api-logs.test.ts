import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { svcServe, tempDir } from './helpers/cli.js';
import { migratedDatabase } from './helpers/db.js';
import { jwksFile } from './helpers/server.js';
import { createLoggerTo } from '../src/logger.js';
import { DomainError } from '../src/domain/shared/errors.js';

const EMAIL = 'leak.check@example.com';
const PASSWORD = 'correct horse battery staple';

interface RequestLine {
  msg: string;
  level: string;
  method: string;
  route: string;
  status: number;
  durationMs: number;
  traceId: string;
  actor?: string;
}

const traceparent = (traceId: string) => `00-${traceId}-${randomBytes(8).toString('hex')}-01`;

test('svc serve writes one JSON line per request on stderr, with the incoming trace id and no email in clear', { timeout: 60_000 }, async (t) => {
  const dir = tempDir(t);
  const keys = await jwksFile(t);
  const serve = await svcServe(t, ['--port', '0'], {
    env: { DATABASE_URL: await migratedDatabase(t), JWT_KEYS_FILE: keys, SVC_DATA_DIR: join(dir, 'data'), LOG_LEVEL: 'info' },
  });

  // Each request carries a trace id of its own, to find its line.
  const sent: { traceId: string; method: string; route: string; status: number }[] = [];
  async function send(method: string, path: string, route: string, init: { body?: unknown; token?: string } = {}): Promise<Response> {
    const traceId = randomBytes(16).toString('hex');
    const headers: Record<string, string> = { traceparent: traceparent(traceId) };
    if (init.body !== undefined) headers['content-type'] = 'application/json';
    if (init.token) headers.authorization = `Bearer ${init.token}`;
    const res = await fetch(`${serve.url}${path}`, { method, headers, body: init.body === undefined ? undefined : JSON.stringify(init.body) });
    assert.equal(res.headers.get('x-trace-id'), traceId);
    await res.arrayBuffer();
    sent.push({ traceId, method, route, status: res.status });
    return res;
  }

  assert.equal((await send('GET', '/health/live', '/health/live')).status, 200);
  assert.equal(
    (await send('POST', '/api/v1/auth/register', '/api/v1/auth/register', { body: { email: EMAIL, password: PASSWORD, name: 'Leak' } })).status,
    201,
  );
  assert.equal(
    (await send('POST', '/api/v1/auth/register', '/api/v1/auth/register', { body: { email: EMAIL, password: PASSWORD, name: 'Again' } })).status,
    409,
  );
  assert.equal((await send('POST', '/api/v1/auth/login', '/api/v1/auth/login', { body: { email: EMAIL, password: 'not the password' } })).status, 401);
  assert.equal(
    (await send('POST', '/api/v2/auth/register', '/api/v2/auth/register', { body: { email: EMAIL, password: PASSWORD, name: 'X', role: 'admin' } })).status,
    400,
  );
  const login = await fetch(`${serve.url}/api/v1/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: EMAIL, password: PASSWORD }),
  });
  const { accessToken } = (await login.json()) as { accessToken: string };
  assert.equal((await send('GET', '/api/v1/users/me', '/api/v1/users/me', { token: accessToken })).status, 200);
  assert.equal((await send('GET', `/api/v1/no-such-route?email=${EMAIL}`, 'unmatched')).status, 404);

  serve.child.kill('SIGTERM');
  assert.equal((await serve.exited).code, 0);
  const lines = serve
    .stderr()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as RequestLine);
  const requestLines = lines.filter((l) => l.msg === 'request');

  for (const req of sent) {
    const mine = requestLines.filter((l) => l.traceId === req.traceId);
    assert.equal(mine.length, 1, `one line for ${req.method} ${req.route} (${req.traceId})`);
    const line = mine[0]!;
    assert.equal(line.level, 'info');
    assert.deepEqual({ method: line.method, route: line.route, status: line.status }, { method: req.method, route: req.route, status: req.status });
    assert.equal(typeof line.durationMs, 'number');
    assert.ok(line.durationMs >= 0 && line.durationMs < 10_000);
  }
  // A request without traceparent gets a generated trace id (the login above).
  const generated = requestLines.filter((l) => !sent.some((s) => s.traceId === l.traceId));
  assert.equal(generated.length, 1);
  assert.match(generated[0]!.traceId, /^[\da-f]{32}$/);
  // The authenticated request names its actor: the user id, not the email.
  const me = requestLines.find((l) => l.traceId === sent.find((s) => s.route === '/api/v1/users/me')!.traceId)!;
  assert.match(me.actor ?? '', /^usr_/);

  assert.ok(!serve.stderr().includes(EMAIL), 'the email never appears in clear');
  assert.ok(!serve.stderr().includes(PASSWORD), 'nor the password');
  assert.ok(!serve.stderr().includes(accessToken), 'nor the token');
});

test('an email inside a logged error (message, details or cause) is masked', () => {
  let out = '';
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      out += chunk.toString();
      done();
    },
  });
  const logger = createLoggerTo('info', stream);
  const cause = new Error(`duplicate key value violates unique constraint: Key (lower(email))=(${EMAIL}) already exists`);
  logger.error({ err: new DomainError('conflict', `already exists: ${EMAIL}`, { email: EMAIL }, { cause }) }, 'request failed');
  const line = JSON.parse(out) as { err: { message: string; type: string; stack: string } };
  assert.equal(line.err.type, 'DomainError');
  assert.match(line.err.message, /already exists: l\*\*\*@e\*\*\*\.com/);
  assert.ok(!out.includes(EMAIL), out);
});
