import { test } from 'node:test';
import assert from 'node:assert/strict';
import { testServer } from './helpers/server.js';
import { query } from './helpers/db.js';
import { assertProblem, type Json } from './helpers/http.js';

// What a client or an attacker meets from outside, found by probing svc serve as one: each answer
// is a problem document that says what was wrong, and what the API answers is what it stored.

test('a name that is not valid Unicode (a lone surrogate, "\\ud800" in JSON) is a 400 naming the field, not a 500, and changes nothing', async (t) => {
  const ts = await testServer(t);
  const db = ts.databaseUrl!;
  const admin = await ts.user({ email: 'admin@example.com', role: 'admin', name: 'Admin' });
  const headers = { ...(await ts.auth(admin)), 'content-type': 'application/json' };
  const send = async (method: 'POST' | 'PATCH', url: string, raw: string) => {
    const res = await ts.server.inject({ method, url: `/api/v1${url}`, headers, payload: raw });
    return { status: res.statusCode, type: res.headers['content-type'], body: res.json<Json>() };
  };
  // JSON.stringify writes a lone surrogate as the escape "\ud800"; JSON.parse gives it back as one.
  for (const name of ['Tea\ud800', '\udfffTea']) {
    const product = await send('POST', '/products', JSON.stringify({ sku: 'TEA-1', name, price: 4.5, currency: 'USD', stock: 1 }));
    assertProblem(product, 400, 'invalid', /^the name is not valid Unicode \(a lone surrogate U\+D[8F]\w\w at position \d\)$/, 'name');
    const renamed = await send('PATCH', `/users/${admin.id}`, JSON.stringify({ name }));
    assertProblem(renamed, 400, 'invalid', /not valid Unicode/, 'name');
    const registered = await send('POST', '/auth/register', JSON.stringify({ email: 'eve@example.com', password: 'correct horse battery', name }));
    assertProblem(registered, 400, 'invalid', /not valid Unicode/, 'name');
  }
  assert.deepEqual(await query(db, 'select sku from products'), []);
  assert.deepEqual(await query(db, 'select email, name from users order by email'), [{ email: 'admin@example.com', name: 'Admin' }]);
  assert.deepEqual(await query(db, 'select action from audit_log'), [{ action: 'user.created' }], 'only the admin made for the test');
  // A character outside the BMP is a surrogate pair, not a lone one: a name like any other.
  const fine = await send('POST', '/products', JSON.stringify({ sku: 'TEA-2', name: 'Tea 🍵', price: 4.5, currency: 'USD', stock: 1 }));
  assert.equal(fine.status, 201, JSON.stringify(fine.body));
  assert.equal(fine.body.name, 'Tea 🍵');
});

test("a URL fastify's router refuses (a broken percent-encoding, an overlong id) is a problem+json 400 or 414 with a trace id", async (t) => {
  const ts = await testServer(t);
  const admin = await ts.user({ email: 'admin@example.com', role: 'admin' });
  const get = async (url: string) => {
    const res = await fetch(ts.url + url, { headers: await ts.auth(admin) });
    return { status: res.status, type: res.headers.get('content-type'), body: (await res.json()) as Json, traceHeader: res.headers.get('x-trace-id') };
  };
  for (const url of ['/api/v1/users/%ff', '/api/v1/products/prd_%c0%af', '/api/v2/orders/%e2%82']) {
    const res = await get(url);
    assertProblem(res, 400, 'invalid', /^the URL is not valid: a percent-encoded part of its path is not UTF-8/);
    assert.match(res.body.traceId, /^[\da-f]{32}$/);
    assert.equal(res.traceHeader, res.body.traceId);
  }
  const long = await get(`/api/v1/orders/${'a'.repeat(500)}`);
  assertProblem(long, 414, 'invalid', /too long/);
  assert.equal(long.body.title, 'URI Too Long');
  assert.doesNotMatch(JSON.stringify(long.body), /aaaaaaaaaa/, 'the refusal does not echo the path back');
});

test('a change to a user (PATCH /users/{id}, svc users set-role, disable, enable) answers with the updatedAt the database stored', async (t) => {
  const ts = await testServer(t);
  const db = ts.databaseUrl!;
  const admin = await ts.user({ email: 'admin@example.com', role: 'admin' });
  const alice = await ts.user({ email: 'alice@example.com', name: 'Alice' });
  const stored = async () => (await query<{ updated_at: Date }>(db, 'select updated_at from users where id = $1', [alice.id]))[0]!.updated_at.toISOString();
  const ctx = () => ts.app.context({ actor: 'cli:test' });
  // Each change must land on a later millisecond than the last, or a stale view could not be told apart.
  const tick = async () => {
    const last = await stored();
    while (new Date().toISOString() <= last) await new Promise((resolve) => setImmediate(resolve));
  };

  await tick();
  const patched = await ts.server.inject({ method: 'PATCH', url: `/api/v1/users/${alice.id}`, headers: await ts.auth(admin), payload: { name: 'Alice B' } });
  assert.equal(patched.statusCode, 200, patched.body);
  assert.notEqual(patched.json<Json>().updatedAt, alice.updatedAt);
  assert.equal(patched.json<Json>().updatedAt, await stored());

  for (const change of [
    () => ts.app.users.setRole(ctx(), alice.id, 'guest'),
    () => ts.app.users.setStatus(ctx(), 'alice@example.com', 'disabled'),
    () => ts.app.users.setStatus(ctx(), alice.id, 'active'),
  ]) {
    await tick();
    const before = await stored();
    const view = await change();
    assert.notEqual(view.updatedAt, before);
    assert.equal(view.updatedAt, await stored());
  }
});

test('an order list filtered by an instant outside years 1 to 9999 (0000-01-01T00:00:00Z) is a 400 naming the filter, not a 500 (embedded)', async (t) => {
  const ts = await testServer(t, { embedded: true });
  const admin = await ts.user({ email: 'admin@example.com', role: 'admin' });
  const list = async (q: string) => {
    const res = await ts.server.inject({ method: 'GET', url: `/api/v1/orders?${q}`, headers: await ts.auth(admin) });
    return { status: res.statusCode, type: res.headers['content-type'], body: res.json<Json>() };
  };
  for (const [field, at] of [
    ['createdFrom', '0000-01-01T00:00:00Z'],
    ['createdTo', '0001-01-01T00:00:00%2B01:00'],
    ['createdTo', '9999-12-31T23:59:59-23:59'],
  ]) {
    assertProblem(await list(`${field}=${at}`), 400, 'invalid', new RegExp(`^${field} must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z$`), field);
  }
  const edges = await list('createdFrom=0001-01-01T00:00:00Z&createdTo=9999-12-31T23:59:59Z');
  assert.equal(edges.status, 200, JSON.stringify(edges.body));
  assert.deepEqual(edges.body.data, []);
});

test('a traceparent the W3C spec calls invalid (an all-zero trace or parent id, version ff) is ignored: each request gets a trace id of its own', async (t) => {
  const ts = await testServer(t);
  const traceOf = async (traceparent: string) =>
    (await ts.server.inject({ method: 'GET', url: '/health/live', headers: { traceparent } })).headers['x-trace-id'] as string;
  const valid = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
  assert.equal(await traceOf(valid), '4bf92f3577b34da6a3ce929d0e0e4736');
  for (const invalid of [
    `00-${'0'.repeat(32)}-00f067aa0ba902b7-01`,
    '00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01',
    'ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
  ]) {
    const [first, second] = [await traceOf(invalid), await traceOf(invalid)];
    assert.match(first, /^[\da-f]{32}$/);
    assert.notEqual(first, second, `${invalid} was ignored: two requests, two trace ids`);
    assert.notEqual(first, '0'.repeat(32));
  }
});
