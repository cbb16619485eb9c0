import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect, createServer, type AddressInfo } from 'node:net';
import { once } from 'node:events';
import { Agent, request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { svc, svcServe, tempDir, type ServeProcess } from './helpers/cli.js';
import { emptyDatabase, migratedDataDir, migratedDatabase } from './helpers/db.js';
import { jwksFile, postgresServeEnv } from './helpers/server.js';

const PASSWORD = 'correct horse battery staple';

function post(url: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
}

async function register(serve: ServeProcess, email: string): Promise<{ id: string; email: string }> {
  const res = await post(`${serve.url}/api/v1/auth/register`, { email, password: PASSWORD, name: email.split('@')[0] });
  assert.equal(res.status, 201, await res.clone().text());
  return (await res.json()) as { id: string; email: string };
}

/**
 * One request through node:http: by default on a connection of its own (no pool that could send it
 * on a socket the server is closing). Resolves to its status, headers and parsed body; rejects with
 * the socket's error.
 */
function request(
  url: string,
  method = 'GET',
  body?: unknown,
  agent: Agent | false = false,
): Promise<{ status: number; body: any; headers: IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = httpRequest(url, { method, agent, headers: payload ? { 'content-type': 'application/json' } : {} }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: text ? JSON.parse(text) : undefined }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(payload);
  });
}

/** Resolves to the error code (ECONNREFUSED …) when a new connection to url fails, or undefined when it is answered. */
async function connectionError(url: string): Promise<string | undefined> {
  try {
    await request(`${url}/health/live`);
    return undefined;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? String(err);
  }
}

// Each test has its own data folder or database and svc serve processes, and some mostly wait (one
// for the shared database's idle limit): two run at once.
describe('svc serve', { concurrency: 2 }, () => {
  test(
    'svc serve on the embedded default migrates its folder, answers, and shares its database with other svc commands while it runs',
    { timeout: 180_000 },
    async (t) => {
      const dataDir = join(tempDir(t), 'data');
      const env = { SVC_DATA_DIR: dataDir, SVC_ACTOR: 'cli:ops' };
      const serve = await svcServe(t, ['--port', '0'], { env: { ...env, LOG_LEVEL: 'info' } });

      const ready = await fetch(`${serve.url}/health/ready`);
      assert.equal(ready.status, 200);
      assert.deepEqual(await ready.json(), { status: 'ok', checks: { database: 'ok' } });
      assert.match(serve.stderr(), /applied \d+ pending migration/);
      const published = JSON.parse(readFileSync(join(dataDir, 'serve.json'), 'utf8'));
      assert.equal(published.pid, serve.child.pid);
      assert.equal(published.url, serve.url);

      let adaId = '';
      await t.test('a user created in a second terminal can log in through the API, and one registered through the API is listed there', async () => {
        const created = await svc(['users', 'create', '--email', 'ada@example.com', '--name', 'Ada', '--role', 'admin', '--password-stdin', '--json'], {
          env: { ...env, LOG_LEVEL: 'info' },
          input: `${PASSWORD}\n`,
        });
        assert.equal(created.code, 0, created.stderr);
        assert.match(created.stderr, new RegExp(`served by svc serve \\(pid ${serve.child.pid}\\); using it through .*\\.s\\.PGSQL\\.5432`));
        adaId = created.json().id;

        const login = await post(`${serve.url}/api/v1/auth/login`, { email: 'ada@example.com', password: PASSWORD });
        assert.equal(login.status, 200);
        const { accessToken } = (await login.json()) as { accessToken: string };
        const me = await fetch(`${serve.url}/api/v1/users/me`, { headers: { authorization: `Bearer ${accessToken}` } });
        assert.equal(((await me.json()) as { id: string }).id, adaId);

        const grace = await register(serve, 'grace@example.com');
        const list = await svc(['users', 'list', '--json'], { env });
        assert.equal(list.code, 0, list.stderr);
        assert.deepEqual(
          list.json().data.map((u: { id: string; email: string }) => [u.id, u.email]),
          [
            [grace.id, 'grace@example.com'],
            [adaId, 'ada@example.com'],
          ],
        );
        const status = await svc(['migrate', 'status', '--json'], { env });
        assert.equal(status.code, 0, status.stderr);
        assert.deepEqual(status.json().pending, []);
        assert.ok(status.json().applied.length >= 1);
      });

      await t.test('commands in other processes and API requests run at the same time without blocking each other', async () => {
        let stop = false;
        const registered: string[] = [];
        const load = Array.from({ length: 6 }, async (_, w) => {
          for (let i = 0; !stop; i++) registered.push((await register(serve, `load-${w}-${i}@example.com`)).email);
        });
        const cli = await Promise.all([
          svc(['users', 'create', '--email', 'cli-1@example.com', '--name', 'One', '--json'], { env }),
          svc(['users', 'create', '--email', 'cli-2@example.com', '--name', 'Two', '--password-stdin', '--json'], { env, input: PASSWORD }),
          svc(['users', 'list', '--limit', '100', '--json'], { env }),
          svc(['users', 'set-role', 'grace@example.com', 'guest', '--json'], { env }),
          svc(['migrate', 'status', '--json'], { env }),
        ]);
        stop = true;
        await Promise.all(load);
        for (const res of cli) assert.equal(res.code, 0, res.stderr);
        assert.ok(registered.length > 0);

        const everyone = await svc(['users', 'list', '--limit', '100', '--json'], { env });
        const emails = new Set(everyone.json().data.map((u: { email: string }) => u.email));
        for (const email of [...registered, 'cli-1@example.com', 'cli-2@example.com', 'ada@example.com', 'grace@example.com'])
          assert.ok(emails.has(email), email);
        const cli2 = await post(`${serve.url}/api/v1/auth/login`, { email: 'cli-2@example.com', password: PASSWORD });
        assert.equal(cli2.status, 200);
      });

      await t.test(
        "svc users disable in a second terminal refuses the user's next request at once (no Redis: svc serve sees the command's writes)",
        async () => {
          const mia = await register(serve, 'mia@example.com');
          const login = await post(`${serve.url}/api/v1/auth/login`, { email: mia.email, password: PASSWORD });
          const authorization = `Bearer ${((await login.json()) as { accessToken: string }).accessToken}`;
          const orders = async () => (await fetch(`${serve.url}/api/v1/orders`, { headers: { authorization } })).status;
          assert.equal(await orders(), 200);
          const disabled = await svc(['users', 'disable', mia.email], { env });
          assert.equal(disabled.code, 0, disabled.stderr);
          assert.equal(await orders(), 401);
          const enabled = await svc(['users', 'enable', mia.email], { env });
          assert.equal(enabled.code, 0, enabled.stderr);
          assert.equal(await orders(), 200);
        },
      );

      await t.test('a second svc serve on the same folder is refused, naming the one that serves it', async () => {
        const second = await svc(['serve', '--port', '0', '--json'], { env });
        assert.equal(second.code, 6);
        assert.match(second.json().error.message, new RegExp(`served by svc serve \\(pid ${serve.child.pid}, ${serve.url}\\)`));
      });

      await t.test('after SIGTERM the folder is released: the lock, socket and serve.json are gone and commands open it directly', async () => {
        serve.child.kill('SIGTERM');
        assert.deepEqual(await serve.exited, { code: 0, signal: null });
        assert.equal(existsSync(join(dataDir, 'pglite.lock')), false);
        assert.equal(existsSync(join(dataDir, 'serve.json')), false);
        assert.equal(existsSync(join(dataDir, '.s.PGSQL.5432')), false);
        const list = await svc(['users', 'list', '--limit', '100', '--json'], { env: { ...env, LOG_LEVEL: 'info' } });
        assert.equal(list.code, 0, list.stderr);
        assert.doesNotMatch(list.stderr, /served by svc serve/);
        assert.ok(list.json().data.some((u: { id: string }) => u.id === adaId));
      });
    },
  );

  test(
    'a client holding the shared database idle inside a transaction is disconnected and rolled back, and the API goes on',
    { timeout: 180_000 },
    async (t) => {
      const dataDir = await migratedDataDir(tempDir(t));
      const serve = await svcServe(t, ['--port', '0'], { env: { SVC_DATA_DIR: dataDir } });
      // Each request below on a connection of its own (request()), never on a pooled one from an earlier test.
      assert.equal((await request(`${serve.url}/health/ready`)).status, 200, 'the API answers before the transaction');
      const { default: pg } = await import('pg');
      const client = new pg.Client({ host: dataDir, port: 5432, user: 'postgres', database: 'postgres' });
      await client.connect();
      t.after(() => client.end().catch(() => undefined));
      client.on('error', () => undefined);
      // The transaction opens and writes in one message, so that the client is idle inside it from its
      // first answer on: sent as two, a busy machine could delay the second past the server's idle limit,
      // and the server would then cut the client off with the insert unread (ECONNRESET).
      await client.query(
        `begin; insert into users (id, email, name, role, status, created_at, updated_at) values ('usr_idle', 'idle@example.com', 'Idle', 'user', 'active', now(), now())`,
      );
      const started = Date.now();
      // The API waits for the open transaction, then answers once the idle client is cut off.
      const ready = await request(`${serve.url}/health/ready`);
      assert.equal(ready.status, 200);
      assert.ok(Date.now() - started >= 5_000, 'the API waited for the transaction');
      await assert.rejects(client.query('commit'));
      await serve.waitForStderr(/a client of the shared embedded database held it idle for too long; disconnecting it/);
      const list = await svc(['users', 'list', '--json'], { env: { SVC_DATA_DIR: dataDir } });
      assert.equal(list.code, 0, `${list.stdout}\n${list.stderr}`);
      assert.deepEqual(list.json().data, []);
    },
  );

  for (const embedded of [true, false]) {
    test(
      `SIGTERM lets in-flight requests finish, refuses new connections and exits 0 (${embedded ? 'embedded' : 'PostgreSQL'})`,
      { timeout: 120_000 },
      async (t) => {
        const dataDir = embedded ? await migratedDataDir(tempDir(t)) : join(tempDir(t), 'data');
        const env = embedded ? { SVC_DATA_DIR: dataDir } : { SVC_DATA_DIR: dataDir, ...(await postgresServeEnv(t)) };
        // Room for all 50 logins below in the password-hash queue (16 by default): they must pile up, not
        // get 503. Two hashes at a time take 50 of them a few seconds, many more on a busy machine: the
        // shutdown may wait for them all (its bound is another test's subject).
        const serve = await svcServe(t, ['--port', '0'], { env: { ...env, LOG_LEVEL: 'info', PASSWORD_HASH_QUEUE: '64', SHUTDOWN_TIMEOUT_MS: '100000' } });
        await register(serve, 'ada@example.com');

        // The client keeps 50 connections alive, as a load balancer does; they are opened (and accepted
        // by the server) first, so every login below is sent on a connection the server holds.
        const agent = new Agent({ keepAlive: true, maxSockets: 50 });
        t.after(() => agent.destroy());
        const warm = await Promise.all(Array.from({ length: 50 }, () => request(`${serve.url}/health/live`, 'GET', undefined, agent)));
        assert.ok(warm.every((r) => r.status === 200));
        // Each wrong-password login costs an argon2 hash, so 50 of them queue up in the server (for 50
        // emails: the login throttle lets 5 attempts at one email be checked).
        const inFlight = Array.from({ length: 50 }, async (_, i) => {
          const res = await request(`${serve.url}/api/v1/auth/login`, 'POST', { email: `ada-${i}@example.com`, password: 'not the password' }, agent);
          return { ...res, at: Date.now() };
        });
        // A connection opened before the shutdown whose request is sent only after it started (as when
        // the request is on the wire but the server has not read it yet).
        const early = connect(Number(new URL(serve.url).port), '127.0.0.1');
        await once(early, 'connect');
        const first = await Promise.race(inFlight);
        assert.equal(first.status, 401);
        serve.child.kill('SIGTERM');
        await serve.waitForStderr(/SIGTERM: stopping/);
        // The listener closes as the shutdown starts; from then on a new connection is refused.
        let refusedAt: number | undefined;
        for (let i = 0; i < 200 && refusedAt === undefined; i++) {
          if ((await connectionError(serve.url)) === 'ECONNREFUSED') refusedAt = Date.now();
        }

        let earlyAnswer = '';
        early.setEncoding('utf8').on('data', (d: string) => (earlyAnswer += d));
        early.write('GET /health/live HTTP/1.1\r\nHost: svc\r\n\r\n');
        await once(early, 'end');
        assert.match(earlyAnswer, /^HTTP\/1\.1 200 OK\r\n/);
        assert.match(earlyAnswer, /\r\nconnection: close\r\n/i);
        assert.match(earlyAnswer, /\{"status":"ok"\}$/);

        const results = await Promise.all(inFlight);
        for (const r of results) {
          assert.equal(r.status, 401);
          assert.equal(r.body.status, 401);
        }
        assert.ok(refusedAt, 'new connections were refused');
        const later = results.filter((r) => r.at > refusedAt);
        assert.ok(later.length >= 5, `requests answered after new connections were refused: ${later.length}`);
        // Those answers close their connection, so the process does not wait for idle keep-alive sockets.
        for (const r of later) assert.equal(r.headers.connection, 'close');
        assert.deepEqual(await serve.exited, { code: 0, signal: null });
        assert.equal(await connectionError(serve.url), 'ECONNREFUSED');
        assert.match(serve.stderr(), /"drained":true/);
        if (embedded) {
          assert.equal(existsSync(join(dataDir, 'pglite.lock')), false);
          assert.equal(existsSync(join(dataDir, 'serve.json')), false);
        }
      },
    );
  }

  test('on PostgreSQL svc serve refuses to start while migrations are pending, and applies them with --migrate', { timeout: 60_000 }, async (t) => {
    const env = { DATABASE_URL: await emptyDatabase(t), JWT_KEYS_FILE: await jwksFile(t) };
    const refused = await svc(['serve', '--port', '0'], { env });
    assert.equal(refused.code, 4);
    assert.match(refused.stderr, /migration\(s\) are pending .*run `svc migrate` first, or start with --migrate/);

    const serve = await svcServe(t, ['--port', '0', '--migrate'], { env: { ...env, LOG_LEVEL: 'info' } });
    assert.match(serve.stderr(), /applied \d+ pending migration/);
    const ready = await fetch(`${serve.url}/health/ready`);
    assert.equal(ready.status, 200);
    serve.child.kill('SIGTERM');
    assert.equal((await serve.exited).code, 0);
    const status = await svc(['migrate', 'status', '--json'], { env });
    assert.deepEqual(status.json().pending, []);
  });

  test('on PostgreSQL svc serve without JWT_KEYS_FILE exits 78 naming the key', { timeout: 60_000 }, async (t) => {
    const res = await svc(['serve', '--port', '0', '--json'], { env: { DATABASE_URL: await migratedDatabase(t) } });
    assert.equal(res.code, 78);
    assert.equal(res.json().error.details.key, 'JWT_KEYS_FILE');
    assert.match(res.json().error.message, /JWT_KEYS_FILE is required with DATABASE_URL/);
  });

  test(
    'svc serve on an address it cannot bind (a port taken, a host not of this machine) exits 6 naming the flag, not 1 with a stack nor "cannot reach the database"',
    { timeout: 60_000 },
    async (t) => {
      const env = { ...(await postgresServeEnv(t)), METRICS_PORT: 'off' };
      const taken = createServer();
      t.after(() => taken.close());
      taken.listen(0, '127.0.0.1');
      await once(taken, 'listening');
      const { port } = taken.address() as AddressInfo;

      const inUse = await svc(['serve', '--port', String(port), '--json'], { env });
      assert.equal(inUse.code, 6, `${inUse.stdout}\n${inUse.stderr}`);
      assert.equal(inUse.json().error.code, 'unavailable');
      assert.match(
        inUse.json().error.message,
        new RegExp(`^cannot listen on 127\\.0\\.0\\.1:${port} \\(EADDRINUSE\\): .*choose another --port \\(PORT; 0 picks a free one\\)$`),
      );

      for (const host of ['nosuchhost.invalid', '192.0.2.1']) {
        const res = await svc(['serve', '--host', host, '--port', '0', '--json'], { env });
        assert.equal(res.code, 6, `${res.stdout}\n${res.stderr}`);
        assert.match(
          res.json().error.message,
          new RegExp(
            `^cannot listen on ${host.replaceAll('.', '\\.')}:0 \\(E\\w+\\): ${host.replaceAll('.', '\\.')} is not an address of this machine: set --host \\(HOST\\)`,
          ),
        );
        assert.doesNotMatch(res.json().error.message, /database/);
      }
      // On a terminal: one line, no stack.
      const plain = await svc(['serve', '--port', String(port)], { env });
      assert.equal(plain.code, 6);
      assert.match(plain.stderr, /^Error: cannot listen on 127\.0\.0\.1:\d+ \(EADDRINUSE\)/m);
      assert.doesNotMatch(plain.stderr, /at Server\.setupListenHandle/);
    },
  );
});
