// A user's role and status on several `svc serve` instances (one PostgreSQL, one Redis): a change
// through either instance's API or through `svc users` applies on every instance by the time it is
// acknowledged, not USER_STANDING_TTL_SECONDS later; Redis unreachable degrades, never errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { jwksFile } from './helpers/server.js';
import { createApp } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { createLogger } from '../src/logger.js';
import { migratedDatabase, query } from './helpers/db.js';
import { svc, svcServe, tempDir, type ServeProcess } from './helpers/cli.js';
import { REDIS_URL, redisPrefix, redisProxy } from './helpers/redis.js';

test("two svc serve on one database and Redis: a user's new role or status applies on both once acknowledged", async (t) => {
  const dir = tempDir(t);
  // The instances reach Redis through a proxy the last part cuts; svc users reaches it directly.
  const proxy = await redisProxy(t);
  const prefix = redisPrefix(t);
  const base = { DATABASE_URL: await migratedDatabase(t), REDIS_PREFIX: prefix };
  const env = { ...base, JWT_KEYS_FILE: await jwksFile(t), SVC_DATA_DIR: join(dir, 'data'), REDIS_URL: proxy.url, LOG_LEVEL: 'info' };
  const cliEnv = { ...base, REDIS_URL, SVC_ACTOR: 'cli:alice' };
  const app = await createApp(loadConfig(env), { logger: createLogger('silent') });
  t.after(() => app.close());
  const newUser = async (email: string, role: 'admin' | 'user') => {
    const user = await app.users.create(app.context({ actor: 'cli:test' }), { email, name: email.split('@')[0]!, role });
    return { ...user, authorization: `Bearer ${await app.tokens.sign({ sub: user.id, role: user.role })}` };
  };
  const root = await newUser('root@example.com', 'admin');

  const a = await svcServe(t, ['--port', '0'], { env });
  const b = await svcServe(t, ['--port', '0'], { env });
  const call = (server: ServeProcess, as: { authorization: string }, method: string, path: string, body?: unknown) =>
    fetch(`${server.url}/api/v2${path}`, {
      method,
      headers: { authorization: as.authorization, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
  /** The status of the user's `GET /users/me` on each instance. */
  const me = async (as: { authorization: string }) => Promise.all([a, b].map(async (s) => (await call(s, as, 'GET', '/users/me')).status));
  /** The status of the admin-only `GET /users` on each instance. */
  const adminList = async (as: { authorization: string }) => Promise.all([a, b].map(async (s) => (await call(s, as, 'GET', '/users')).status));
  const patch = async (server: ServeProcess, id: string, body: unknown) => {
    const res = await call(server, root, 'PATCH', `/users/${id}`, body);
    assert.equal(res.status, 200, await res.text());
  };

  await t.test("a user disabled through A's API is refused by the very next request on B, and let back in at once", async () => {
    const ada = await newUser('ada@example.com', 'user');
    // Both instances have read (and cached) her standing.
    assert.deepEqual(await me(ada), [200, 200]);
    await patch(a, ada.id, { status: 'disabled' });
    const refused = await call(b, ada, 'GET', '/users/me');
    assert.equal(refused.status, 401);
    assert.match(((await refused.json()) as { detail: string }).detail, /the user is disabled/);
    assert.equal((await call(a, ada, 'GET', '/users/me')).status, 401);
    await patch(b, ada.id, { status: 'active' });
    assert.deepEqual(await me(ada), [200, 200]);
  });

  await t.test("an admin demoted to user through A's API loses the admin routes at once on B", async () => {
    const grace = await newUser('grace@example.com', 'admin');
    assert.deepEqual(await adminList(grace), [200, 200]);
    await patch(a, grace.id, { role: 'user' });
    const refused = await call(b, grace, 'GET', '/users');
    assert.equal(refused.status, 403);
    assert.equal(((await (await call(b, grace, 'GET', '/users/me')).json()) as { role: string }).role, 'user');
    assert.deepEqual(await adminList(grace), [403, 403]);
  });

  await t.test("a user deleted through B's API is refused at once on A", async () => {
    const ida = await newUser('ida@example.com', 'user');
    // Her orders (none): a route that reads nothing of the user but what authentication does.
    const orders = async () => Promise.all([a, b].map(async (s) => (await call(s, ida, 'GET', '/orders')).status));
    assert.deepEqual(await orders(), [200, 200]);
    assert.equal((await call(b, root, 'DELETE', `/users/${ida.id}`)).status, 204);
    const refused = await call(a, ida, 'GET', '/orders');
    assert.equal(refused.status, 401);
    assert.match(((await refused.json()) as { detail: string }).detail, /user no longer exists/);
  });

  await t.test('svc users disable, enable and set-role (separate processes) apply on both instances by the time they exit', async () => {
    const linus = await newUser('linus@example.com', 'admin');
    assert.deepEqual(await me(linus), [200, 200]);
    assert.deepEqual(await adminList(linus), [200, 200]);

    const disabled = await svc(['users', 'disable', linus.email], { env: cliEnv });
    assert.equal(disabled.code, 0, disabled.stderr);
    assert.deepEqual(await me(linus), [401, 401]);

    const enabled = await svc(['users', 'enable', linus.id, '--json'], { env: cliEnv });
    assert.equal(enabled.code, 0, enabled.stderr);
    assert.equal(enabled.json().status, 'active');
    assert.deepEqual(await me(linus), [200, 200]);

    const demoted = await svc(['users', 'set-role', linus.email, 'user'], { env: cliEnv });
    assert.equal(demoted.code, 0, demoted.stderr);
    assert.deepEqual(await adminList(linus), [403, 403]);
  });

  await t.test('svc users disable that cannot reach Redis saves the change, exits 6 saying the instances were not told; run again, it tells them', async () => {
    const mary = await newUser('mary@example.com', 'user');
    assert.deepEqual(await me(mary), [200, 200]);
    const unreachable = await redisProxy(t);
    await unreachable.down();

    const res = await svc(['users', 'disable', mary.email], { env: { ...cliEnv, REDIS_URL: unreachable.url } });
    assert.equal(res.code, 6, res.stderr);
    assert.match(res.stderr, /the change is saved, but Redis \(REDIS_URL redis:\/\/127\.0\.0\.1:\d+\/?\) did not answer/);
    assert.match(res.stderr, /instances were not told: they apply it within USER_STANDING_TTL_SECONDS \(5 s\) instead of at once/);
    assert.match(res.stderr, /Run the same command again once Redis answers/);
    const [row] = await query<{ status: string }>(base.DATABASE_URL, 'select status from users where id = $1', [mary.id]);
    assert.equal(row!.status, 'disabled', 'the change itself is saved');
    const json = await svc(['users', 'enable', mary.email, '--json'], { env: { ...cliEnv, REDIS_URL: unreachable.url } });
    assert.equal(json.code, 6);
    assert.equal(json.json().error.code, 'unavailable');
    assert.equal(json.json().error.details.redis, 'unreachable');

    // Disabled again (it was re-enabled just above): a run that changes nothing still tells the instances.
    await query(base.DATABASE_URL, "update users set status = 'disabled' where id = $1", [mary.id]);
    const again = await svc(['users', 'disable', mary.email], { env: cliEnv });
    assert.equal(again.code, 0, again.stderr);
    assert.deepEqual(await me(mary), [401, 401]);
  });

  await t.test('with Redis unreachable both instances keep serving (no error), and a change applies at once on the instance that made it', async () => {
    const nora = await newUser('nora@example.com', 'user');
    assert.deepEqual(await me(nora), [200, 200]);
    await proxy.down();
    await Promise.all([a, b].map((s) => s.waitForStderr(/Redis \(REDIS_URL\) is unreachable/)));
    assert.deepEqual(await me(root), [200, 200]);
    await patch(a, nora.id, { status: 'disabled' });
    assert.equal((await call(a, nora, 'GET', '/users/me')).status, 401);

    // Back: B's copy of before the outage is stale (the epoch moved), whatever its age.
    await proxy.up();
    await Promise.all([a, b].map((s) => s.waitForStderr(/Redis \(REDIS_URL\) is reachable again/)));
    assert.deepEqual(await me(nora), [401, 401]);
    assert.deepEqual(await me(root), [200, 200]);
  });
});
