import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { testServer, type TestServer } from './helpers/server.js';
import { query } from './helpers/db.js';
import { assertProblem, type Json } from './helpers/http.js';
import type { UserView } from '../src/domain/users/users.service.js';

interface Reply {
  status: number;
  type: string | undefined;
  body: Json;
}

interface Setup {
  ts: TestServer;
  admin: UserView;
  user: UserView;
  guest: UserView;
  /** An API call through fastify.inject as a user (or anonymously), v1 unless said otherwise. */
  call: (user: UserView | null, method: 'GET' | 'POST' | 'PATCH', path: string, options?: { body?: unknown; version?: 'v1' | 'v2' }) => Promise<Reply>;
}

async function setup(t: TestContext, options: { embedded?: boolean; env?: Record<string, string> } = {}): Promise<Setup> {
  const ts = await testServer(t, options);
  const admin = await ts.user({ email: 'admin@example.com', role: 'admin' });
  const user = await ts.user({ email: 'user@example.com' });
  const guest = await ts.user({ email: 'guest@example.com', role: 'guest' });
  const call: Setup['call'] = async (who, method, path, { body, version = 'v1' } = {}) => {
    const res = await ts.server.inject({
      method,
      url: `/api/${version}${path}`,
      headers: who ? await ts.auth(who) : {},
      ...(body === undefined ? {} : { payload: body as object }),
    });
    return { status: res.statusCode, type: res.headers['content-type'], body: (res.body ? res.json() : undefined) as Json };
  };
  return { ts, admin, user, guest, call };
}

const strip = ({ id: _id, ...rest }: Json) => rest;

for (const embedded of [false, true]) {
  test(`admins manage the catalog and everyone authenticated reads it (${embedded ? 'embedded' : 'PostgreSQL'})`, async (t) => {
    const { admin, user, call } = await setup(t, { embedded });

    const v1 = await call(admin, 'POST', '/products', { body: { sku: 'MUG-1', name: 'Mug', price: 12.5, currency: 'USD', stock: 40 } });
    assert.equal(v1.status, 201, JSON.stringify(v1.body));
    assert.match(v1.body.id, /^prd_[0-9A-Z]{26}$/);
    assert.deepEqual(strip(v1.body), { sku: 'MUG-1', name: 'Mug', price: 12.5, currency: 'USD', stock: 40, active: true });
    const v2 = await call(admin, 'POST', '/products', { version: 'v2', body: { sku: 'TEA-1', name: 'Tea', price: { amount: 450, currency: 'EUR' } } });
    assert.equal(v2.status, 201, JSON.stringify(v2.body));
    assert.deepEqual(strip(v2.body), { sku: 'TEA-1', name: 'Tea', price: { amount: 450, currency: 'EUR' }, currency: 'EUR', stock: 0, active: true });

    const listed = await call(user, 'GET', '/products');
    assert.equal(listed.status, 200);
    assert.deepEqual(listed.body, { data: [{ ...v2.body, price: 4.5 }, v1.body], pagination: { cursor: null, hasMore: false } });
    const got = await call(user, 'GET', `/products/${v1.body.id}`, { version: 'v2' });
    assert.deepEqual(got.body.price, { amount: 1250, currency: 'USD' });

    const patched = await call(admin, 'PATCH', `/products/${v1.body.id}`, { body: { name: 'Big mug', price: 14, stock: 35 } });
    assert.equal(patched.status, 200, JSON.stringify(patched.body));
    assert.deepEqual(strip(patched.body), { sku: 'MUG-1', name: 'Big mug', price: 14, currency: 'USD', stock: 35, active: true });

    const off = await call(admin, 'POST', `/products/${v1.body.id}/deactivate`);
    assert.equal(off.status, 200);
    assert.equal(off.body.active, false);
    assert.deepEqual(
      (await call(user, 'GET', '/products')).body.data.map((p: Json) => p.sku),
      ['TEA-1'],
    );
    assertProblem(await call(user, 'GET', `/products/${v1.body.id}`), 404, 'not_found');
    assert.equal((await call(admin, 'GET', `/products/${v1.body.id}`)).body.active, false);
    const back = await call(admin, 'PATCH', `/products/${v1.body.id}`, { body: { active: true } });
    assert.equal(back.body.active, true);
    assert.equal((await call(user, 'GET', `/products/${v1.body.id}`)).status, 200);
  });
}

test('products on PostgreSQL: audit, validation, access rules, visibility and pages', async (t) => {
  const { ts, admin, user, guest, call } = await setup(t);
  const db = ts.databaseUrl!;

  const mug = (await call(admin, 'POST', '/products', { body: { sku: 'MUG-1', name: 'Mug', price: 12.5, currency: 'USD', stock: 40 } })).body;

  await t.test('every admin write is audited with the admin as actor, in the same transaction as the write', async () => {
    await call(admin, 'PATCH', `/products/${mug.id}`, { body: { price: 13, stock: 40 } });
    await call(admin, 'PATCH', `/products/${mug.id}`, { body: { stock: 40 } }); // no change, no row
    await call(admin, 'POST', `/products/${mug.id}/deactivate`);
    await call(admin, 'POST', `/products/${mug.id}/deactivate`); // already inactive, no row
    await call(admin, 'PATCH', `/products/${mug.id}`, { body: { active: true } });
    const rows = await query(db, 'select actor, action, details from audit_log where target = $1 order by created_at, id', [mug.id]);
    assert.deepEqual(rows, [
      { actor: admin.id, action: 'product.created', details: { sku: 'MUG-1', name: 'Mug', price: 1250, currency: 'USD', stock: 40, active: true } },
      { actor: admin.id, action: 'product.updated', details: { sku: 'MUG-1', changes: { price: { from: 1250, to: 1300 } } } },
      { actor: admin.id, action: 'product.deactivated', details: { sku: 'MUG-1' } },
      { actor: admin.id, action: 'product.updated', details: { sku: 'MUG-1', changes: { active: { from: false, to: true } } } },
    ]);
  });

  await t.test('a taken SKU answers 409 naming it, and nothing is written', async () => {
    const res = await call(admin, 'POST', '/products', { version: 'v2', body: { sku: 'MUG-1', name: 'Other mug', price: { amount: 100, currency: 'USD' } } });
    assertProblem(res, 409, 'conflict', new RegExp(`SKU MUG-1 already exists \\(${mug.id}\\)`), 'sku');
    assert.deepEqual(await query(db, "select count(*)::int as n from products where sku = 'MUG-1'"), [{ n: 1 }]);
  });

  await t.test('product input is validated and the problem names the field', async () => {
    const base = { sku: 'NEW-1', name: 'New', price: 1, currency: 'USD' };
    const cases: [Json, string, 'v1' | 'v2'][] = [
      [{ ...base, currency: 'usd' }, 'currency', 'v1'],
      [{ ...base, currency: 'DOLLARS' }, 'currency', 'v1'],
      [{ ...base, stock: -1 }, 'stock', 'v1'],
      [{ ...base, stock: 2.5 }, 'stock', 'v1'],
      [{ ...base, price: -1 }, 'price', 'v1'],
      [{ ...base, price: 1.005 }, 'price', 'v1'],
      [{ ...base, price: '1.00' }, 'price', 'v1'],
      [{ ...base, sku: 'has space' }, 'sku', 'v1'],
      [{ ...base, sku: '' }, 'sku', 'v1'],
      [{ ...base, name: '' }, 'name', 'v1'],
      [{ ...base, name: 'n'.repeat(201) }, 'name', 'v1'],
      [{ sku: 'NEW-1', name: 'New', price: 1 }, 'currency', 'v1'],
      [{ ...base, id: 'prd_01ARZ3NDEKTSV4RRFFQ69G5FAV' }, 'id', 'v1'],
      [{ ...base, createdAt: '2020-01-01T00:00:00Z' }, 'createdAt', 'v1'],
      [{ sku: 'NEW-1', name: 'New', price: { amount: 1.5, currency: 'USD' } }, 'price.amount', 'v2'],
      [{ sku: 'NEW-1', name: 'New', price: { amount: 100 } }, 'price.currency', 'v2'],
      [{ sku: 'NEW-1', name: 'New', price: 100 }, 'price', 'v2'],
      [{ sku: 'NEW-1', name: 'New', price: { amount: 100, currency: 'USD' }, currency: 'USD' }, 'currency', 'v2'],
    ];
    for (const [body, field, version] of cases) {
      const res = await call(admin, 'POST', '/products', { body, version });
      assertProblem(res, 400, 'invalid', undefined, field);
    }
    assert.deepEqual(await query(db, "select count(*)::int as n from products where sku = 'NEW-1'"), [{ n: 0 }]);

    for (const body of [{}, { sku: 'MUG-2' }, { currency: 'EUR' }, { id: 'prd_01ARZ3NDEKTSV4RRFFQ69G5FAV' }, { stock: -5 }, { price: 0.001 }]) {
      const res = await call(admin, 'PATCH', `/products/${mug.id}`, { body });
      assertProblem(res, 400, 'invalid');
    }
    const other = await call(admin, 'PATCH', `/products/${mug.id}`, { version: 'v2', body: { price: { amount: 900, currency: 'EUR' } } });
    assertProblem(other, 422, 'unprocessable', /priced in USD; its currency cannot change/, 'price');
    const [row] = await query(db, 'select sku, price::int, currency, stock from products where id = $1', [mug.id]);
    assert.deepEqual(row, { sku: 'MUG-1', price: 1300, currency: 'USD', stock: 40 });
  });

  await t.test('write routes answer 403 to users and guests, every route 401 without a token', async () => {
    const create = { sku: 'X-1', name: 'X', price: 1, currency: 'USD' };
    for (const who of [user, guest]) {
      assertProblem(await call(who, 'POST', '/products', { body: create }), 403, 'forbidden', /admins only/);
      assertProblem(await call(who, 'PATCH', `/products/${mug.id}`, { body: { price: 0 } }), 403, 'forbidden');
      assertProblem(await call(who, 'POST', `/products/${mug.id}/deactivate`), 403, 'forbidden');
      assert.equal((await call(who, 'GET', '/products')).status, 200);
      assert.equal((await call(who, 'GET', `/products/${mug.id}`)).status, 200);
    }
    for (const [method, path] of [
      ['GET', '/products'],
      ['GET', `/products/${mug.id}`],
      ['POST', '/products'],
      ['PATCH', `/products/${mug.id}`],
      ['POST', `/products/${mug.id}/deactivate`],
    ] as const) {
      assertProblem(await call(null, method, path, method === 'GET' ? {} : { body: create }), 401, 'unauthorized');
    }
    const [row] = await query(db, 'select price::int, active from products where id = $1', [mug.id]);
    assert.deepEqual(row, { price: 1300, active: true });
  });

  await t.test('inactive products are hidden from non-admins; admins filter by active', async () => {
    const old = (await call(admin, 'POST', '/products', { body: { sku: 'OLD-1', name: 'Old', price: 1, currency: 'USD' } })).body;
    await call(admin, 'POST', `/products/${old.id}/deactivate`);
    assert.deepEqual(
      (await call(user, 'GET', '/products')).body.data.map((p: Json) => p.sku),
      ['MUG-1'],
    );
    assert.deepEqual(
      (await call(user, 'GET', '/products?active=true')).body.data.map((p: Json) => p.sku),
      ['MUG-1'],
    );
    assertProblem(await call(user, 'GET', '/products?active=false'), 403, 'forbidden', /only admins may list inactive products/);
    assertProblem(await call(guest, 'GET', `/products/${old.id}`), 404, 'not_found', new RegExp(`no product ${old.id}`));
    assert.deepEqual(
      (await call(admin, 'GET', '/products')).body.data.map((p: Json) => p.sku),
      ['OLD-1', 'MUG-1'],
    );
    assert.deepEqual(
      (await call(admin, 'GET', '/products?active=false')).body.data.map((p: Json) => p.sku),
      ['OLD-1'],
    );
    assert.deepEqual(
      (await call(admin, 'GET', '/products?active=true')).body.data.map((p: Json) => p.sku),
      ['MUG-1'],
    );
  });

  await t.test('unknown and malformed product ids answer 404 and 400', async () => {
    const missing = 'prd_01ARZ3NDEKTSV4RRFFQ69G5FAV';
    assertProblem(await call(user, 'GET', `/products/${missing}`), 404, 'not_found');
    assertProblem(await call(admin, 'PATCH', `/products/${missing}`, { body: { stock: 1 } }), 404, 'not_found');
    assertProblem(await call(admin, 'POST', `/products/${missing}/deactivate`), 404, 'not_found');
    assertProblem(await call(user, 'GET', '/products/mug'), 400, 'invalid', undefined, 'id');
    assertProblem(await call(user, 'GET', '/products?limit=0'), 400, 'invalid', undefined, 'limit');
    assertProblem(await call(user, 'GET', '/products?sku=MUG-1'), 400, 'invalid', undefined, 'sku');
  });

  await t.test('product pages walk the catalog once, newest first; a tampered cursor is 400 naming cursor', async () => {
    for (let i = 0; i < 7; i++) await call(admin, 'POST', '/products', { body: { sku: `PAGE-${i}`, name: `Page ${i}`, price: 1, currency: 'USD' } });
    const all = (await call(user, 'GET', '/products?limit=100')).body.data.map((p: Json) => p.sku);
    assert.equal(all.length, 8);
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const page: Reply = await call(user, 'GET', `/products?limit=3${cursor ? `&cursor=${cursor}` : ''}`);
      assert.equal(page.status, 200);
      seen.push(...page.body.data.map((p: Json) => p.sku));
      cursor = page.body.pagination.cursor;
    } while (cursor);
    assert.deepEqual(seen, all);
    const good: string = (await call(user, 'GET', '/products?limit=1')).body.pagination.cursor;
    for (const bad of [good.slice(0, -3), 'eyJ0b3RhbCI6MH0', '!!']) {
      assertProblem(await call(user, 'GET', `/products?cursor=${encodeURIComponent(bad)}`), 400, 'invalid', /cursor/, 'cursor');
    }
  });
});

test('a product read by id is one prepared statement on the pool, as the list is, and answers as the list shows it', async (t) => {
  // One connection: the statements prepared while serving are those of this session.
  const { ts, admin, user, call } = await setup(t, { env: { DATABASE_POOL_MAX: '1' } });
  const created = (
    await call(admin, 'POST', '/products', { version: 'v2', body: { sku: 'BIG-1', name: 'Big', price: { amount: 9_999_999_999, currency: 'JPY' }, stock: 3 } })
  ).body;
  const got = await call(user, 'GET', `/products/${created.id}`, { version: 'v2' });
  assert.equal(got.status, 200);
  assert.deepEqual(got.body, created);
  assert.deepEqual(got.body, (await call(user, 'GET', '/products', { version: 'v2' })).body.data[0]);
  assertProblem(await call(user, 'GET', '/products/prd_01ARZ3NDEKTSV4RRFFQ69G5FAV'), 404, 'not_found');
  const prepared = (await ts.app.db.orm.em.getConnection().execute('select statement from pg_prepared_statements', [], 'all')) as { statement: string }[];
  assert.ok(
    prepared.some((p) => /from products p where p\.id = \$1$/.test(p.statement)),
    `a prepared product read among ${JSON.stringify(prepared.map((p) => p.statement))}`,
  );
});
