import { test } from 'node:test';
import assert from 'node:assert/strict';
import { testServer, type TestServer } from './helpers/server.js';
import { query } from './helpers/db.js';
import type { UserView } from '../src/domain/users/users.service.js';

type Json = Record<string, any>;
type Method = 'GET' | 'POST' | 'PATCH' | 'DELETE';

async function call(ts: TestServer, method: Method, url: string, options: { body?: unknown; headers?: Record<string, string> } = {}) {
  const res = await ts.server.inject({ method, url, payload: options.body as object, headers: options.headers });
  return { status: res.statusCode, body: (res.body ? res.json() : undefined) as Json };
}

const row = async (db: string, id: string) =>
  (await query<Json>(db, 'select id, email, name, role, status, password_hash, updated_at from users where id = $1', [id]))[0];

test('the users API on PostgreSQL', async (t) => {
  const ts = await testServer(t);
  const db = ts.databaseUrl!;
  const admin = await ts.user({ email: 'admin@example.com', role: 'admin', name: 'Admin' });
  const alice = await ts.user({ email: 'alice@example.com', role: 'user', name: 'Alice' });
  const gus = await ts.user({ email: 'gus@example.com', role: 'guest', name: 'Gus' });
  const as = {
    admin: await ts.auth(admin),
    user: await ts.auth(alice),
    guest: await ts.auth(gus),
    anonymous: {} as Record<string, string>,
  };

  await t.test('every RBAC cell: me for every role, the rest for admins only, 401 without a credential', async () => {
    type Cell = { admin: number; user: number; guest: number; anonymous: number };
    const victim = async () => (await ts.user({ email: `victim-${Math.random().toString(36).slice(2)}@example.com` })).id;
    const routes: { name: string; method: Method; url: (id: string) => string; body?: Json; expect: Cell }[] = [
      { name: 'GET /users/me', method: 'GET', url: () => '/users/me', expect: { admin: 200, user: 200, guest: 200, anonymous: 401 } },
      { name: 'GET /users', method: 'GET', url: () => '/users', expect: { admin: 200, user: 403, guest: 403, anonymous: 401 } },
      { name: 'GET /users/{id}', method: 'GET', url: (id) => `/users/${id}`, expect: { admin: 200, user: 403, guest: 403, anonymous: 401 } },
      {
        name: 'PATCH /users/{id}',
        method: 'PATCH',
        url: (id) => `/users/${id}`,
        body: { name: 'Renamed' },
        expect: { admin: 200, user: 403, guest: 403, anonymous: 401 },
      },
      { name: 'DELETE /users/{id}', method: 'DELETE', url: (id) => `/users/${id}`, expect: { admin: 204, user: 403, guest: 403, anonymous: 401 } },
    ];
    for (const prefix of ['/api/v1', '/api/v2']) {
      for (const route of routes) {
        for (const role of ['user', 'guest', 'anonymous', 'admin'] as const) {
          const id = await victim();
          const res = await call(ts, route.method, `${prefix}${route.url(id)}`, { body: route.body, headers: as[role] });
          assert.equal(res.status, route.expect[role], `${role} ${route.method} ${prefix}${route.url(id)}: ${JSON.stringify(res.body)}`);
          if (res.status >= 400) assert.equal(res.body.code, { 401: 'unauthorized', 403: 'forbidden' }[res.status as 401 | 403]);
          if (role !== 'admin') {
            const after = await row(db, id);
            assert.ok(after, `${role} could not delete the user`);
            assert.notEqual(after.name, 'Renamed', `${role} could not rename the user`);
          }
        }
      }
    }
  });

  await t.test("v1 shows the brief's user shape, v2 adds status; no internal column ever leaks", async () => {
    const v1 = await call(ts, 'GET', '/api/v1/users/me', { headers: as.user });
    assert.deepEqual(v1.body, { id: alice.id, email: alice.email, name: 'Alice', role: 'user', createdAt: alice.createdAt, updatedAt: alice.updatedAt });
    const v2 = await call(ts, 'GET', `/api/v2/users/${alice.id}`, { headers: as.admin });
    assert.deepEqual(v2.body, { ...v1.body, status: 'active' });
    const list = await call(ts, 'GET', '/api/v1/users?limit=100', { headers: as.admin });
    for (const u of list.body.data) assert.deepEqual(Object.keys(u).sort(), ['createdAt', 'email', 'id', 'name', 'role', 'updatedAt']);
  });

  await t.test('BOLA: a user or guest cannot read or change another user through any route', async () => {
    const before = await row(db, admin.id);
    for (const who of [as.user, as.guest]) {
      for (const [method, url, body] of [
        ['GET', `/api/v1/users/${admin.id}`],
        ['GET', `/api/v2/users/${admin.id}`],
        ['PATCH', `/api/v1/users/${admin.id}`, { role: 'guest' }],
        ['DELETE', `/api/v1/users/${admin.id}`],
        ['GET', `/api/v1/users?search=admin`],
      ] as [Method, string, Json?][]) {
        const res = await call(ts, method, url, { body, headers: who });
        assert.equal(res.status, 403, `${method} ${url}`);
        assert.ok(!JSON.stringify(res.body).includes('admin@example.com'), `${method} ${url} leaked the other user`);
      }
      // Their own profile is all /users/me ever shows, whatever is appended.
      const me = await call(ts, 'GET', `/api/v1/users/me?id=${admin.id}`, { headers: who });
      assert.equal(me.status, 400);
    }
    assert.deepEqual(await row(db, admin.id), before);
  });

  await t.test('an admin gets, updates (audited, with the admin as actor) and lists users', async () => {
    const got = await call(ts, 'GET', `/api/v2/users/${alice.id}`, { headers: as.admin });
    assert.equal(got.status, 200);
    assert.equal(got.body.email, 'alice@example.com');

    const patched = await call(ts, 'PATCH', `/api/v2/users/${alice.id}`, { headers: as.admin, body: { name: 'Alice L.', role: 'guest', status: 'disabled' } });
    assert.equal(patched.status, 200);
    assert.deepEqual(
      { name: patched.body.name, role: patched.body.role, status: patched.body.status },
      { name: 'Alice L.', role: 'guest', status: 'disabled' },
    );
    const audit = await query<{ actor: string; action: string }>(db, 'select actor, action from audit_log where target = $1 and action <> $2 order by action', [
      alice.id,
      'user.created',
    ]);
    assert.deepEqual(audit, [
      { actor: admin.id, action: 'user.disabled' },
      { actor: admin.id, action: 'user.renamed' },
      { actor: admin.id, action: 'user.role-changed' },
    ]);

    // The same values again change nothing and audit nothing.
    const again = await call(ts, 'PATCH', `/api/v1/users/${alice.id}`, { headers: as.admin, body: { role: 'guest', status: 'disabled' } });
    assert.equal(again.status, 200);
    const [{ n }] = (await query<{ n: string }>(db, 'select count(*) as n from audit_log where target = $1', [alice.id])) as [{ n: string }];
    assert.equal(Number(n), 4);
    const restored = await call(ts, 'PATCH', `/api/v1/users/${alice.id}`, { headers: as.admin, body: { name: 'Alice', role: 'user', status: 'active' } });
    assert.equal(restored.status, 200);

    const missing = await call(ts, 'GET', '/api/v1/users/usr_00000000000000000000000000', { headers: as.admin });
    assert.equal(missing.status, 404);
    const badId = await call(ts, 'GET', '/api/v1/users/alice@example.com', { headers: as.admin });
    assert.equal(badId.status, 400);
    assert.equal(badId.body.field, 'id');
    assert.equal((await call(ts, 'PATCH', '/api/v1/users/usr_00000000000000000000000000', { headers: as.admin, body: { name: 'X' } })).status, 404);
    assert.equal((await call(ts, 'DELETE', '/api/v1/users/usr_00000000000000000000000000', { headers: as.admin })).status, 404);
  });

  await t.test('an admin acting through an API key is recorded as that key', async () => {
    const key = await ts.app.apiKeys.create(ts.app.context({ actor: 'cli:test' }), { user: admin.id, name: 'ops' });
    const res = await call(ts, 'PATCH', `/api/v1/users/${gus.id}`, { headers: { authorization: `Bearer ${key.secret}` }, body: { name: 'Gus G.' } });
    assert.equal(res.status, 200);
    const [audit] = await query<{ actor: string }>(db, "select actor from audit_log where target = $1 and action = 'user.renamed'", [gus.id]);
    assert.equal(audit!.actor, key.id);
  });

  await t.test('mass assignment: PATCH with passwordHash, id, email or createdAt is 400 and changes nothing', async () => {
    const before = await row(db, alice.id);
    for (const body of [
      { passwordHash: '$argon2id$v=19$m=19456,t=2,p=1$AAAA$BBBB' },
      { id: 'usr_00000000000000000000000000' },
      { name: 'Mallory', email: 'mallory@example.com' },
      { role: 'admin', createdAt: '2000-01-01T00:00:00.000Z' },
      {},
      { role: 'root' },
      { status: 'deleted' },
      { name: '' },
      { name: 'x'.repeat(201) },
    ]) {
      const res = await call(ts, 'PATCH', `/api/v1/users/${alice.id}`, { headers: as.admin, body });
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.equal(res.body.code, 'invalid');
    }
    const extra = await call(ts, 'PATCH', `/api/v1/users/${alice.id}`, { headers: as.admin, body: { passwordHash: 'x' } });
    assert.equal(extra.body.field, 'passwordHash');
    assert.deepEqual(await row(db, alice.id), before);
  });

  await t.test('mass assignment: register with role admin is 400 and creates nobody', async () => {
    const res = await call(ts, 'POST', '/api/v1/auth/register', {
      body: { email: 'eve@example.com', password: 'correct horse battery', name: 'Eve', role: 'admin' },
    });
    assert.equal(res.status, 400);
    assert.equal(res.body.field, 'role');
    assert.deepEqual(await query(db, "select role from users where email = 'eve@example.com'"), []);
    const ok = await call(ts, 'POST', '/api/v1/auth/register', { body: { email: 'eve@example.com', password: 'correct horse battery', name: 'Eve' } });
    assert.equal(ok.body.role, 'user');
  });

  await t.test('an admin cannot change their own role, disable or delete themselves (409)', async () => {
    const demote = await call(ts, 'PATCH', `/api/v1/users/${admin.id}`, { headers: as.admin, body: { role: 'user' } });
    assert.equal(demote.status, 409);
    assert.match(demote.body.detail, /cannot change your own role/);
    const disable = await call(ts, 'PATCH', `/api/v1/users/${admin.id}`, { headers: as.admin, body: { status: 'disabled' } });
    assert.equal(disable.status, 409);
    assert.match(disable.body.detail, /cannot disable your own account/);
    const del = await call(ts, 'DELETE', `/api/v1/users/${admin.id}`, { headers: as.admin });
    assert.equal(del.status, 409);
    assert.match(del.body.detail, /cannot delete your own account/);
    const rename = await call(ts, 'PATCH', `/api/v1/users/${admin.id}`, { headers: as.admin, body: { name: 'Root', role: 'admin' } });
    assert.equal(rename.status, 200);
    assert.equal((await row(db, admin.id))!.role, 'admin');
  });

  await t.test('deleting a user with orders is 409 saying to disable instead; without orders it is 204, audited, and gone', async () => {
    const buyer = await ts.user({ email: 'buyer@example.com' });
    await query(
      db,
      "insert into orders (id, user_id, status, currency, total, refunded_amount, created_at, updated_at) values ('ord_00000000000000000000000001', $1, 'completed', 'USD', 100, 0, now(), now())",
      [buyer.id],
    );
    const refused = await call(ts, 'DELETE', `/api/v1/users/${buyer.id}`, { headers: as.admin });
    assert.equal(refused.status, 409);
    assert.match(refused.body.detail, /has 1 order\(s\).*disable the account instead/);
    assert.ok(await row(db, buyer.id));

    const leaver = await ts.user({ email: 'leaver@example.com', password: 'correct horse battery' });
    await ts.app.apiKeys.create(ts.app.context({ actor: 'cli:test' }), { user: leaver.id });
    const token = await ts.auth(leaver);
    const res = await ts.server.inject({ method: 'DELETE', url: `/api/v2/users/${leaver.id}`, headers: as.admin });
    assert.equal(res.statusCode, 204);
    assert.equal(res.body, '');
    assert.equal(await row(db, leaver.id), undefined);
    assert.deepEqual(await query(db, 'select id from api_keys where user_id = $1', [leaver.id]), []);
    const [audit] = await query<{ actor: string }>(db, "select actor from audit_log where action = 'user.deleted' and target = $1", [leaver.id]);
    assert.equal(audit!.actor, admin.id);
    assert.equal((await call(ts, 'GET', `/api/v1/users/${leaver.id}`, { headers: as.admin })).status, 404);
    // Their still-unexpired access token no longer finds a profile.
    const me = await call(ts, 'GET', '/api/v1/users/me', { headers: token });
    assert.equal(me.status, 401);
    assert.match(me.body.detail, /no longer exists/);
  });

  await t.test('listing filters by role, status and search, and a tampered cursor is 400 naming cursor', async () => {
    await call(ts, 'PATCH', `/api/v1/users/${gus.id}`, { headers: as.admin, body: { status: 'disabled' } });
    const guests = await call(ts, 'GET', '/api/v2/users?role=guest', { headers: as.admin });
    assert.ok(guests.body.data.length > 0);
    assert.ok(guests.body.data.every((u: UserView) => u.role === 'guest'));
    const disabled = await call(ts, 'GET', '/api/v2/users?status=disabled', { headers: as.admin });
    assert.deepEqual(
      disabled.body.data.map((u: UserView) => u.id),
      [gus.id],
    );
    const search = await call(ts, 'GET', '/api/v1/users?search=ALICE', { headers: as.admin });
    assert.deepEqual(
      search.body.data.map((u: UserView) => u.id),
      [alice.id],
    );
    const noMatch = await call(ts, 'GET', '/api/v1/users?search=%25', { headers: as.admin });
    assert.deepEqual(noMatch.body, { data: [], pagination: { cursor: null, hasMore: false } });

    const first = await call(ts, 'GET', '/api/v1/users?limit=2', { headers: as.admin });
    const cursor = first.body.pagination.cursor as string;
    const [payload, mac] = cursor.split('.') as [string, string];
    const decoded = JSON.parse(Buffer.from(payload, 'base64url').toString());
    const resign = (value: unknown) => `${Buffer.from(JSON.stringify(value)).toString('base64url')}.${mac}`;
    for (const bad of [
      `${cursor.slice(0, -2)}xx`,
      payload,
      resign([decoded[0], "usr_' or 1=1 --"]),
      resign(['yesterday', decoded[1]]),
      // well-formed, pointing at a real user, but not signed by this service
      resign(['2030-01-01T00:00:00.000Z', decoded[1]]),
      'not a cursor!',
    ]) {
      const res = await call(ts, 'GET', `/api/v1/users?cursor=${encodeURIComponent(bad)}`, { headers: as.admin });
      assert.equal(res.status, 400, bad);
      assert.equal(res.body.field, 'cursor');
    }
    for (const [q, field] of [
      ['limit=0', 'limit'],
      ['limit=101', 'limit'],
      ['role=root', 'role'],
      ['status=gone', 'status'],
      ['colour=red', 'colour'],
    ]) {
      const res = await call(ts, 'GET', `/api/v1/users?${q}`, { headers: as.admin });
      assert.equal(res.status, 400, q);
      assert.equal(res.body.field, field, q);
    }
  });

  await t.test('walking the pages visits every user once, newest first, while users are added', async () => {
    for (let i = 0; i < 12; i++) await ts.user({ email: `walker${i}@example.com` });
    const all = (await query<{ id: string }>(db, 'select id from users order by created_at desc, id desc')).map((r) => r.id);
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const res = await call(ts, 'GET', `/api/v2/users?limit=7${cursor ? `&cursor=${cursor}` : ''}`, { headers: as.admin });
      assert.equal(res.status, 200);
      seen.push(...res.body.data.map((u: UserView) => u.id));
      cursor = res.body.pagination.cursor;
      assert.equal(res.body.pagination.hasMore, cursor !== null);
      // A user created mid-walk is newer than the cursor: it does not shift the pages being walked.
      if (pages++ === 0) await ts.user({ email: 'latecomer@example.com' });
    } while (cursor);
    assert.deepEqual(seen, all);
    assert.ok(pages >= 3);
  });
});

test('GET /users/me and an admin list on the embedded default', async (t) => {
  const ts = await testServer(t, { embedded: true });
  const admin = await ts.user({ email: 'root@example.com', role: 'admin' });
  const user = await ts.user({ email: 'u@example.com' });
  const me = await call(ts, 'GET', '/api/v1/users/me', { headers: await ts.auth(user) });
  assert.equal(me.body.id, user.id);
  assert.equal((await call(ts, 'GET', '/api/v1/users', { headers: await ts.auth(user) })).status, 403);
  const list = await call(ts, 'GET', '/api/v1/users?limit=1', { headers: await ts.auth(admin) });
  assert.equal(list.body.data.length, 1);
  assert.equal(list.body.pagination.hasMore, true);
  const next = await call(ts, 'GET', `/api/v1/users?limit=1&cursor=${list.body.pagination.cursor}`, { headers: await ts.auth(admin) });
  assert.deepEqual(
    [...list.body.data, ...next.body.data].map((u: UserView) => u.id),
    [user.id, admin.id],
  );
});
