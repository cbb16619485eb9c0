import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { testServer, type TestServer } from './helpers/server.js';
import { query } from './helpers/db.js';
import { assertProblem, type Json } from './helpers/http.js';
import type { UserView } from '../src/domain/users/users.service.js';

interface Reply {
  status: number;
  type: string | null;
  body: Json;
  headers: Headers;
}

interface Setup {
  ts: TestServer;
  admin: UserView;
  alice: UserView;
  bob: UserView;
  guest: UserView;
  /** An API call over real HTTP as a user (or anonymously), v1 unless said otherwise. */
  call: (
    user: UserView | null,
    method: string,
    path: string,
    options?: { body?: unknown; headers?: Record<string, string>; version?: 'v1' | 'v2' },
  ) => Promise<Reply>;
  /** A product created by the admin through the API (v2: integer minor units); returns it in v2 shape. */
  product: (sku: string, price: number, stock: number, currency?: string) => Promise<Json>;
  /** The stock of a product as the admin reads it through the API. */
  stock: (productId: string) => Promise<number>;
}

async function setup(t: TestContext, options: { embedded?: boolean } = {}): Promise<Setup> {
  const ts = await testServer(t, options);
  const [admin, alice, bob, guest] = await Promise.all([
    ts.user({ email: 'admin@example.com', role: 'admin' }),
    ts.user({ email: 'alice@example.com' }),
    ts.user({ email: 'bob@example.com' }),
    ts.user({ email: 'guest@example.com', role: 'guest' }),
  ]);
  const tokens = new Map<string, string>();
  for (const u of [admin, alice, bob, guest]) tokens.set(u.id, await ts.token(u));
  const call: Setup['call'] = async (user, method, path, { body, headers = {}, version = 'v1' } = {}) => {
    const res = await fetch(`${ts.url}/api/${version}${path}`, {
      method,
      headers: {
        ...(user ? { authorization: `Bearer ${tokens.get(user.id) ?? (await ts.token(user))}` } : {}),
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        ...headers,
      },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, type: res.headers.get('content-type'), body: text ? JSON.parse(text) : undefined, headers: res.headers };
  };
  const product: Setup['product'] = async (sku, price, stock, currency = 'USD') => {
    const res = await call(admin, 'POST', '/products', { version: 'v2', body: { sku, name: `Product ${sku}`, price: { amount: price, currency }, stock } });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    return res.body;
  };
  const stock: Setup['stock'] = async (productId) => {
    const res = await call(admin, 'GET', `/products/${productId}`);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body.stock;
  };
  return { ts, admin, alice, bob, guest, call, product, stock };
}

const count = async (db: string, sql: string, params: unknown[] = []) => Number((await query<{ n: string }>(db, sql, params))[0]!.n);

for (const embedded of [false, true]) {
  test(`a user orders at catalog prices, reads the order back and cancels it, which puts the stock back (${embedded ? 'embedded' : 'PostgreSQL'})`, async (t) => {
    const { alice, call, product, stock } = await setup(t, { embedded });
    const pen = await product('PEN-1', 250, 10);
    const pad = await product('PAD-1', 1999, 5);

    const created = await call(alice, 'POST', '/orders', {
      body: {
        paymentMethod: 'pm_card_visa',
        items: [
          { sku: 'PEN-1', quantity: 4 },
          { sku: 'PAD-1', quantity: 1 },
        ],
      },
    });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const order = created.body;
    assert.match(order.id, /^ord_[0-9A-Z]{26}$/);
    assert.deepEqual(
      { ...order, id: undefined, createdAt: undefined, updatedAt: undefined },
      {
        id: undefined,
        userId: alice.id,
        items: [
          { productId: pen.id, sku: 'PEN-1', name: 'Product PEN-1', unitPrice: 2.5, quantity: 4 },
          { productId: pad.id, sku: 'PAD-1', name: 'Product PAD-1', unitPrice: 19.99, quantity: 1 },
        ],
        total: 29.99,
        currency: 'USD',
        paymentMethod: 'pm_card_visa',
        status: 'pending',
        // Not charged yet: no payment, nothing refunded, no dispute.
        payment: null,
        refundedAmount: 0,
        dispute: null,
        createdAt: undefined,
        updatedAt: undefined,
      },
    );
    assert.equal(await stock(pen.id), 6);
    assert.equal(await stock(pad.id), 4);

    const read = await call(alice, 'GET', `/orders/${order.id}`);
    assert.equal(read.status, 200);
    assert.deepEqual(read.body, order);
    const list = await call(alice, 'GET', '/orders');
    assert.deepEqual(list.body, { data: [order], pagination: { cursor: null, hasMore: false } });

    const cancelled = await call(alice, 'POST', `/orders/${order.id}/cancel`);
    assert.equal(cancelled.status, 200, JSON.stringify(cancelled.body));
    assert.equal(cancelled.body.status, 'cancelled');
    assert.deepEqual(cancelled.body.items, order.items);
    assert.equal(await stock(pen.id), 10);
    assert.equal(await stock(pad.id), 5);

    const again = await call(alice, 'POST', `/orders/${order.id}/cancel`);
    assertProblem(again, 409, 'conflict', /is cancelled; only a pending order can be cancelled/);
    assert.equal(await stock(pen.id), 10);

    // Idempotency works the same on the embedded database's one connection.
    const key = { 'idempotency-key': 'embedded-or-not-1' };
    const first = await call(alice, 'POST', '/orders', { headers: key, body: { paymentMethod: 'pm_card_visa', items: [{ sku: 'PEN-1', quantity: 1 }] } });
    const repeat = await call(alice, 'POST', '/orders', { headers: key, body: { paymentMethod: 'pm_card_visa', items: [{ sku: 'PEN-1', quantity: 1 }] } });
    assert.equal(first.status, 201);
    assert.equal(repeat.status, 201);
    assert.deepEqual(repeat.body, first.body);
    assert.equal(await stock(pen.id), 9);
  });
}

test('orders on PostgreSQL: validation, errors and access rules', async (t) => {
  const s = await setup(t);
  const { ts, admin, alice, bob, guest, call, product, stock } = s;
  const db = ts.databaseUrl!;
  const pen = await product('PEN-1', 250, 10);
  const pad = await product('PAD-1', 1999, 5);
  const yen = await product('TEA-JP', 1200, 5, 'JPY');
  await product('DATES-KW', 1250, 5, 'KWD');

  await t.test('money is a decimal of major units in v1 and {amount, currency} in v2, for every currency', async () => {
    const usd = await call(alice, 'POST', '/orders', { version: 'v2', body: { paymentMethod: 'pm_card_visa', items: [{ sku: 'PEN-1', quantity: 2 }] } });
    assert.equal(usd.status, 201);
    assert.deepEqual(usd.body.total, { amount: 500, currency: 'USD' });
    assert.deepEqual(usd.body.items[0].unitPrice, { amount: 250, currency: 'USD' });
    const v1 = await call(alice, 'GET', `/orders/${usd.body.id}`);
    assert.equal(v1.body.total, 5);
    assert.equal(v1.body.items[0].unitPrice, 2.5);

    const jpy = await call(alice, 'POST', '/orders', { body: { paymentMethod: 'pm_card_visa', items: [{ sku: 'TEA-JP', quantity: 2 }] } });
    assert.equal(jpy.body.total, 2400);
    assert.equal(jpy.body.currency, 'JPY');
    const kw = await call(alice, 'POST', '/orders', { body: { paymentMethod: 'pm_card_visa', items: [{ sku: 'DATES-KW', quantity: 1 }] } });
    assert.equal(kw.body.total, 1.25);
    const kw2 = await call(alice, 'GET', `/orders/${kw.body.id}`, { version: 'v2' });
    assert.deepEqual(kw2.body.total, { amount: 1250, currency: 'KWD' });
    for (const o of [usd, jpy, kw]) assert.equal((await call(alice, 'POST', `/orders/${o.body.id}/cancel`)).status, 200);
  });

  await t.test('the client cannot set prices, totals or status: unknown properties are rejected and nothing is created', async () => {
    const before = await count(db, 'select count(*) as n from orders');
    const cases: [unknown, string][] = [
      [{ status: 'completed', total: 0 }, 'status'],
      [{ paymentMethod: 'pm_card_visa', items: [{ sku: 'PEN-1', quantity: 1 }], status: 'completed', total: 0 }, 'status'],
      [{ paymentMethod: 'pm_card_visa', items: [{ sku: 'PEN-1', quantity: 1 }], userId: bob.id }, 'userId'],
      [{ paymentMethod: 'pm_card_visa', items: [{ sku: 'PEN-1', quantity: 1, unitPrice: 0 }] }, 'items[0].unitPrice'],
      [{ paymentMethod: 'pm_card_visa', items: [{ sku: 'PEN-1', quantity: 1, price: { amount: 1, currency: 'USD' } }] }, 'items[0].price'],
    ];
    for (const [body, field] of cases) {
      const res = await call(alice, 'POST', '/orders', { body });
      assertProblem(res, 400, 'invalid');
      assert.ok(
        res.body.errors.some((e: Json) => e.field === field && /not an accepted property/.test(e.message)),
        JSON.stringify(res.body),
      );
    }
    assert.equal(await count(db, 'select count(*) as n from orders'), before);
    assert.equal(await stock(pen.id), 10);
  });

  await t.test('order bodies are bounded: 1 to 100 items, integer quantities from 1 to 1,000', async () => {
    const tooMany = Array.from({ length: 101 }, (_, i) => ({ sku: `SKU-${i}`, quantity: 1 }));
    const cases: [unknown, string][] = [
      [{}, 'items'],
      [{ paymentMethod: 'pm_card_visa', items: [] }, 'items'],
      [{ paymentMethod: 'pm_card_visa', items: tooMany }, 'items'],
      [{ paymentMethod: 'pm_card_visa', items: [{ sku: 'PEN-1', quantity: 0 }] }, 'items[0].quantity'],
      [{ paymentMethod: 'pm_card_visa', items: [{ sku: 'PEN-1', quantity: -1 }] }, 'items[0].quantity'],
      [{ paymentMethod: 'pm_card_visa', items: [{ sku: 'PEN-1', quantity: 1001 }] }, 'items[0].quantity'],
      [{ paymentMethod: 'pm_card_visa', items: [{ sku: 'PEN-1', quantity: 1.5 }] }, 'items[0].quantity'],
      [{ paymentMethod: 'pm_card_visa', items: [{ sku: 'PEN-1', quantity: '5' }] }, 'items[0].quantity'],
      [{ paymentMethod: 'pm_card_visa', items: [{ sku: '', quantity: 1 }] }, 'items[0].sku'],
      [{ paymentMethod: 'pm_card_visa', items: [{ quantity: 1 }] }, 'items[0].sku'],
      [{ paymentMethod: 'pm_card_visa', items: [{ sku: 'x'.repeat(65), quantity: 1 }] }, 'items[0].sku'],
    ];
    for (const [body, field] of cases) assertProblem(await call(alice, 'POST', '/orders', { body }), 400, 'invalid', undefined, field);
    assertProblem(await call(alice, 'POST', '/orders', { body: 'not json' }), 400, 'invalid');
    assert.equal(await count(db, "select count(*) as n from orders where status = 'pending'"), 0);
  });

  await t.test('paymentMethod is required in v1 and v2, and must be a payment method id such as pm_card_visa', async () => {
    const items = [{ sku: 'PEN-1', quantity: 1 }];
    for (const version of ['v1', 'v2'] as const) {
      assertProblem(await call(alice, 'POST', '/orders', { version, body: { items } }), 400, 'invalid', /^paymentMethod is required$/, 'paymentMethod');
      for (const paymentMethod of ['card_visa', 'pm_', 'pm_card visa', `pm_${'x'.repeat(101)}`, 42, null]) {
        assertProblem(await call(alice, 'POST', '/orders', { version, body: { items, paymentMethod } }), 400, 'invalid', /^paymentMethod /, 'paymentMethod');
      }
    }
    assert.equal(await count(db, "select count(*) as n from orders where status = 'pending'"), 0);
    const placed = await call(alice, 'POST', '/orders', { version: 'v2', body: { items, paymentMethod: 'pm_1Q0PsIJvEtkwdCNYzH5Qbq7F' } });
    assert.equal(placed.status, 201, JSON.stringify(placed.body));
    assert.equal(placed.body.paymentMethod, 'pm_1Q0PsIJvEtkwdCNYzH5Qbq7F');
    assert.equal((await call(alice, 'GET', `/orders/${placed.body.id}`)).body.paymentMethod, 'pm_1Q0PsIJvEtkwdCNYzH5Qbq7F');
    const [row] = await query<{ payment_method: string }>(db, 'select payment_method from orders where id = $1', [placed.body.id]);
    assert.equal(row!.payment_method, 'pm_1Q0PsIJvEtkwdCNYzH5Qbq7F');
    assert.equal((await call(alice, 'POST', `/orders/${placed.body.id}/cancel`)).status, 200);
  });

  await t.test('a body over the size limit answers 413 and creates nothing', async () => {
    const items = Array.from({ length: 100 }, () => ({ sku: 'PEN-1'.padEnd(64, '-'), quantity: 1 }));
    const body = JSON.stringify({ items, padding: 'x'.repeat(70 * 1024) });
    const res = await call(alice, 'POST', '/orders', { body });
    assertProblem(res, 413, 'too_large');
    assert.equal(await count(db, "select count(*) as n from orders where status = 'pending'"), 0);
  });

  await t.test('an unknown or inactive SKU, or items in two currencies, answer 422 naming them, and nothing is reserved', async () => {
    const old = await product('OLD-1', 100, 5);
    assert.equal((await call(admin, 'POST', `/products/${old.id}/deactivate`)).status, 200);
    const unknown = await call(alice, 'POST', '/orders', {
      body: {
        paymentMethod: 'pm_card_visa',
        items: [
          { sku: 'PEN-1', quantity: 1 },
          { sku: 'NOPE-9', quantity: 1 },
        ],
      },
    });
    assertProblem(unknown, 422, 'unprocessable', /no product on sale with SKU NOPE-9/, 'items');
    const inactive = await call(alice, 'POST', '/orders', {
      body: {
        paymentMethod: 'pm_card_visa',
        items: [
          { sku: 'OLD-1', quantity: 1 },
          { sku: 'PEN-1', quantity: 1 },
        ],
      },
    });
    assertProblem(inactive, 422, 'unprocessable', /SKU OLD-1/);
    const mixed = await call(alice, 'POST', '/orders', {
      body: {
        paymentMethod: 'pm_card_visa',
        items: [
          { sku: 'PEN-1', quantity: 1 },
          { sku: 'TEA-JP', quantity: 1 },
        ],
      },
    });
    assertProblem(mixed, 422, 'unprocessable', /different currencies \((JPY, USD|USD, JPY)\)/);
    assert.equal(await stock(pen.id), 10);
    assert.equal(await stock(yen.id), 5);
    assert.equal(await stock(old.id), 5);
  });

  await t.test('a SKU short of stock answers 409 naming it and what is left, and no other line is reserved', async () => {
    const res = await call(alice, 'POST', '/orders', {
      body: {
        paymentMethod: 'pm_card_visa',
        items: [
          { sku: 'PEN-1', quantity: 3 },
          { sku: 'PAD-1', quantity: 6 },
        ],
      },
    });
    assertProblem(res, 409, 'conflict', /SKU PAD-1 has 5 left, 6 requested/, 'items');
    assert.doesNotMatch(res.body.detail, /PEN-1/);
    assert.equal(await stock(pen.id), 10);
    assert.equal(await stock(pad.id), 5);
  });

  await t.test('a SKU listed twice is one line with the quantities added', async () => {
    const res = await call(alice, 'POST', '/orders', {
      body: {
        paymentMethod: 'pm_card_visa',
        items: [
          { sku: 'PEN-1', quantity: 2 },
          { sku: 'PAD-1', quantity: 1 },
          { sku: 'PEN-1', quantity: 3 },
        ],
      },
    });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    assert.deepEqual(
      res.body.items.map((i: Json) => [i.sku, i.quantity]),
      [
        ['PEN-1', 5],
        ['PAD-1', 1],
      ],
    );
    assert.equal(res.body.total, 32.49);
    assert.equal(await stock(pen.id), 5);
    assert.equal((await call(alice, 'POST', `/orders/${res.body.id}/cancel`)).status, 200);
    assert.equal(await stock(pen.id), 10);
  });

  await t.test('prices come from the catalog at order time; later price changes do not touch placed orders', async () => {
    const placed = await call(bob, 'POST', '/orders', { body: { paymentMethod: 'pm_card_visa', items: [{ sku: 'PAD-1', quantity: 1 }] } });
    assert.equal(placed.body.total, 19.99);
    assert.equal((await call(admin, 'PATCH', `/products/${pad.id}`, { body: { price: 24.5, name: 'Notepad' } })).status, 200);
    const later = await call(bob, 'POST', '/orders', { body: { paymentMethod: 'pm_card_visa', items: [{ sku: 'PAD-1', quantity: 1 }] } });
    assert.deepEqual([later.body.total, later.body.items[0].name], [24.5, 'Notepad']);
    const first = await call(bob, 'GET', `/orders/${placed.body.id}`);
    assert.deepEqual([first.body.total, first.body.items[0].unitPrice, first.body.items[0].name], [19.99, 19.99, 'Product PAD-1']);
    for (const o of [placed, later]) await call(bob, 'POST', `/orders/${o.body.id}/cancel`);
  });

  await t.test('guests read their own orders but may not order or cancel; without a token every route is 401', async () => {
    assertProblem(await call(guest, 'POST', '/orders', { body: { paymentMethod: 'pm_card_visa', items: [{ sku: 'PEN-1', quantity: 1 }] } }), 403, 'forbidden');
    assertProblem(await call(guest, 'POST', '/orders', { body: { status: 'completed', total: 0 } }), 403, 'forbidden');
    const list = await call(guest, 'GET', '/orders');
    assert.equal(list.status, 200);
    assert.deepEqual(list.body.data, []);
    const order = await call(alice, 'POST', '/orders', { body: { paymentMethod: 'pm_card_visa', items: [{ sku: 'PEN-1', quantity: 1 }] } });
    assertProblem(await call(guest, 'POST', `/orders/${order.body.id}/cancel`), 403, 'forbidden');
    for (const [method, path] of [
      ['POST', '/orders'],
      ['GET', '/orders'],
      ['GET', `/orders/${order.body.id}`],
      ['POST', `/orders/${order.body.id}/cancel`],
    ] as const) {
      assertProblem(
        await call(
          null,
          method,
          path,
          method === 'POST' && path === '/orders' ? { body: { paymentMethod: 'pm_card_visa', items: [{ sku: 'PEN-1', quantity: 1 }] } } : {},
        ),
        401,
        'unauthorized',
      );
    }
    assert.equal((await call(alice, 'POST', `/orders/${order.body.id}/cancel`)).status, 200);
  });

  await t.test("another user's order answers 404 to read and cancel, exactly like one that does not exist; admins see and cancel any", async () => {
    const order = await call(alice, 'POST', '/orders', { body: { paymentMethod: 'pm_card_visa', items: [{ sku: 'PEN-1', quantity: 2 }] } });
    const missing = 'ord_01ARZ3NDEKTSV4RRFFQ69G5FAV';
    const foreign = await call(bob, 'GET', `/orders/${order.body.id}`);
    const absent = await call(bob, 'GET', `/orders/${missing}`);
    assertProblem(foreign, 404, 'not_found', new RegExp(`no order ${order.body.id}`));
    assertProblem(absent, 404, 'not_found', new RegExp(`no order ${missing}`));
    assertProblem(await call(bob, 'POST', `/orders/${order.body.id}/cancel`), 404, 'not_found');
    assertProblem(await call(guest, 'GET', `/orders/${order.body.id}`), 404, 'not_found');
    assert.ok(!(await call(bob, 'GET', '/orders')).body.data.some((o: Json) => o.userId !== bob.id));
    assert.equal(await stock(pen.id), 8);

    assertProblem(await call(bob, 'GET', '/orders/not-an-order-id'), 400, 'invalid', undefined, 'id');

    const seen = await call(admin, 'GET', `/orders/${order.body.id}`);
    assert.deepEqual(seen.body, order.body);
    const cancelled = await call(admin, 'POST', `/orders/${order.body.id}/cancel`);
    assert.equal(cancelled.body.status, 'cancelled');
    assert.equal(await stock(pen.id), 10);
    const audit = await query(db, 'select actor, action, details from audit_log where target = $1', [order.body.id]);
    assert.deepEqual(audit, [{ actor: admin.id, action: 'order.cancelled', details: { userId: alice.id, from: 'pending' } }]);
  });

  await t.test('an order that is no longer pending cannot be cancelled: 409 with its status, stock untouched', async () => {
    const order = await call(alice, 'POST', '/orders', { body: { paymentMethod: 'pm_card_visa', items: [{ sku: 'PEN-1', quantity: 1 }] } });
    await query(db, "update orders set status = 'completed' where id = $1", [order.body.id]);
    assertProblem(await call(alice, 'POST', `/orders/${order.body.id}/cancel`), 409, 'conflict', /is completed; only a pending order/);
    assert.equal(await stock(pen.id), 9);
    await query(db, "update orders set status = 'pending' where id = $1", [order.body.id]);
    await call(alice, 'POST', `/orders/${order.body.id}/cancel`);
  });

  await t.test('concurrent cancels of one order: one succeeds, the others get 409, and the stock comes back once', async () => {
    const order = await call(alice, 'POST', '/orders', {
      body: {
        paymentMethod: 'pm_card_visa',
        items: [
          { sku: 'PEN-1', quantity: 3 },
          { sku: 'PAD-1', quantity: 2 },
        ],
      },
    });
    assert.equal(order.status, 201, JSON.stringify(order.body));
    const replies = await Promise.all(Array.from({ length: 10 }, () => call(alice, 'POST', `/orders/${order.body.id}/cancel`)));
    assert.equal(replies.filter((r) => r.status === 200).length, 1);
    for (const r of replies.filter((x) => x.status !== 200)) assertProblem(r, 409, 'conflict', /is cancelled/);
    assert.equal(await stock(pen.id), 10);
    assert.equal(await stock(pad.id), 5);
  });

  await t.test('users list only their own orders; admins list everyone’s and filter by status, user and creation time', async () => {
    await query(db, 'delete from order_items; delete from orders');
    const a1 = (await call(alice, 'POST', '/orders', { body: { paymentMethod: 'pm_card_visa', items: [{ sku: 'PEN-1', quantity: 1 }] } })).body;
    const b1 = (await call(bob, 'POST', '/orders', { body: { paymentMethod: 'pm_card_visa', items: [{ sku: 'PEN-1', quantity: 1 }] } })).body;
    const a2 = (await call(alice, 'POST', '/orders', { body: { paymentMethod: 'pm_card_visa', items: [{ sku: 'PAD-1', quantity: 1 }] } })).body;
    await call(alice, 'POST', `/orders/${a2.id}/cancel`);

    const own = await call(alice, 'GET', '/orders');
    assert.deepEqual(
      own.body.data.map((o: Json) => o.id),
      [a2.id, a1.id],
    );
    assert.deepEqual(
      (await call(bob, 'GET', '/orders')).body.data.map((o: Json) => o.id),
      [b1.id],
    );
    assert.deepEqual((await call(alice, 'GET', `/orders?userId=${alice.id}`)).body.data.length, 2);
    assertProblem(await call(alice, 'GET', `/orders?userId=${bob.id}`), 403, 'forbidden', /only admins/, 'userId');
    assert.deepEqual(
      (await call(alice, 'GET', '/orders?status=cancelled')).body.data.map((o: Json) => o.id),
      [a2.id],
    );

    const all = await call(admin, 'GET', '/orders');
    assert.deepEqual(
      all.body.data.map((o: Json) => o.id),
      [a2.id, b1.id, a1.id],
    );
    assert.deepEqual(
      (await call(admin, 'GET', `/orders?userId=${bob.id}`)).body.data.map((o: Json) => o.id),
      [b1.id],
    );
    assert.deepEqual(
      (await call(admin, 'GET', '/orders?status=pending')).body.data.map((o: Json) => o.id),
      [b1.id, a1.id],
    );
    assert.deepEqual(
      (await call(admin, 'GET', `/orders?status=pending&userId=${alice.id}`)).body.data.map((o: Json) => o.id),
      [a1.id],
    );
    // createdFrom is inclusive, createdTo exclusive.
    const range = `createdFrom=${encodeURIComponent(b1.createdAt)}&createdTo=${encodeURIComponent(a2.createdAt)}`;
    const inRange = [a2, b1, a1].filter((o) => o.createdAt >= b1.createdAt && o.createdAt < a2.createdAt).map((o) => o.id);
    assert.ok(inRange.includes(b1.id) || b1.createdAt === a2.createdAt);
    assert.deepEqual(
      (await call(admin, 'GET', `/orders?${range}`)).body.data.map((o: Json) => o.id),
      inRange,
    );
    assert.deepEqual((await call(admin, 'GET', `/orders?createdFrom=${encodeURIComponent(new Date(Date.now() + 60_000).toISOString())}`)).body.data, []);

    assertProblem(await call(admin, 'GET', '/orders?status=shipped'), 400, 'invalid', undefined, 'status');
    assertProblem(await call(admin, 'GET', '/orders?createdFrom=yesterday'), 400, 'invalid', undefined, 'createdFrom');
    assertProblem(await call(admin, 'GET', '/orders?userId=alice'), 400, 'invalid', undefined, 'userId');
    assertProblem(await call(admin, 'GET', '/orders?limit=101'), 400, 'invalid', undefined, 'limit');
    assertProblem(await call(admin, 'GET', '/orders?total=0'), 400, 'invalid', undefined, 'total');
  });
});

test('order pages walk every order once, newest first, while new orders arrive between pages; a tampered cursor is 400', async (t) => {
  const { ts, alice, call, product } = await setup(t);
  await product('PEN-1', 100, 1000);
  const order = async () =>
    (await call(alice, 'POST', '/orders', { body: { paymentMethod: 'pm_card_visa', items: [{ sku: 'PEN-1', quantity: 1 }] } })).body.id as string;
  const existing: string[] = [];
  for (let i = 0; i < 12; i++) existing.push(await order());

  const seen: string[] = [];
  let cursor: string | null = null;
  let pages = 0;
  do {
    const page: Reply = await call(alice, 'GET', `/orders?limit=5${cursor ? `&cursor=${cursor}` : ''}`);
    assert.equal(page.status, 200);
    seen.push(...page.body.data.map((o: Json) => o.id));
    cursor = page.body.pagination.cursor;
    assert.equal(page.body.pagination.hasMore, cursor !== null);
    pages++;
    // Newer orders land before the cursor: they never show up on later pages, nothing is skipped.
    await order();
    await order();
  } while (cursor);
  assert.equal(pages, 3);
  assert.deepEqual(seen, [...existing].reverse());
  assert.equal(Number((await query<{ n: string }>(ts.databaseUrl!, 'select count(*) as n from orders'))[0]!.n), 18);

  const first = await call(alice, 'GET', '/orders?limit=2');
  const good: string = first.body.pagination.cursor;
  const forged = Buffer.from(JSON.stringify(['2026-01-01T00:00:00.000Z', "ord_x' or '1'='1"])).toString('base64url');
  // Well-formed and pointing at a real order, but not signed by this service: refused too.
  const moved = `${Buffer.from(JSON.stringify(['2030-01-01T00:00:00.000Z', first.body.data[0].id])).toString('base64url')}.${good.split('.')[1]}`;
  for (const bad of [good.slice(0, -2), good.slice(4), forged, moved, 'bm90IGEgY3Vyc29y', '%%%', 'x'.repeat(201)]) {
    assertProblem(await call(alice, 'GET', `/orders?cursor=${encodeURIComponent(bad)}`), 400, 'invalid', /cursor/, 'cursor');
  }
});

test('a cursor continues only the list and the filters it came from: given to another list (users, products) or with other filters it is 400 saying so', async (t) => {
  const { admin, alice, bob, call, product } = await setup(t);
  await product('PEN-1', 100, 1000);
  await product('PAD-1', 100, 1000);
  const ids: string[] = [];
  for (let i = 0; i < 3; i++) {
    const res = await call(alice, 'POST', '/orders', { body: { paymentMethod: 'pm_card_visa', items: [{ sku: 'PEN-1', quantity: 1 }] } });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    ids.push(res.body.id);
  }
  const cursorOf = async (user: UserView, path: string, version: 'v1' | 'v2' = 'v1'): Promise<string> => {
    const res = await call(user, 'GET', path, { version });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.pagination.hasMore, true);
    return res.body.pagination.cursor;
  };
  const orders = await cursorOf(alice, '/orders?limit=1', 'v2');
  // v1 and v2 list the same orders in the same order (only money is shown differently): one list.
  const next = await call(alice, 'GET', `/orders?limit=1&cursor=${orders}`, { version: 'v1' });
  assert.equal(next.status, 200, JSON.stringify(next.body));
  assert.deepEqual(
    next.body.data.map((o: Json) => o.id),
    [ids[1]],
  );

  const anotherList = /^the cursor belongs to another list \((orders|products|users)\)/;
  for (const version of ['v1', 'v2'] as const) {
    assertProblem(await call(admin, 'GET', `/users?cursor=${orders}`, { version }), 400, 'invalid', anotherList, 'cursor');
    assertProblem(await call(alice, 'GET', `/products?cursor=${orders}`, { version }), 400, 'invalid', anotherList, 'cursor');
  }
  const products = await cursorOf(alice, '/products?limit=1');
  const users = await cursorOf(admin, '/users?limit=1');
  for (const cursor of [products, users]) {
    assertProblem(await call(alice, 'GET', `/orders?cursor=${cursor}`), 400, 'invalid', anotherList, 'cursor');
  }
  assertProblem(await call(admin, 'GET', `/products?cursor=${users}`), 400, 'invalid', /another list \(users\)/, 'cursor');

  // The same list with other filters: the cursor's position would skip or repeat rows there.
  const otherFilters = /^the cursor was made with other filters/;
  assertProblem(await call(alice, 'GET', `/orders?status=failed&cursor=${orders}`), 400, 'invalid', otherFilters, 'cursor');
  assertProblem(await call(alice, 'GET', `/orders?createdFrom=2020-01-01T00:00:00Z&cursor=${orders}`), 400, 'invalid', otherFilters, 'cursor');
  // Alice's orders are another list of orders than Bob's or than everyone's (an admin's).
  assertProblem(await call(bob, 'GET', `/orders?cursor=${orders}`), 400, 'invalid', otherFilters, 'cursor');
  assertProblem(await call(admin, 'GET', `/orders?cursor=${orders}`), 400, 'invalid', otherFilters, 'cursor');
  assert.equal((await call(admin, 'GET', `/orders?userId=${alice.id}&limit=1&cursor=${orders}`)).status, 200);
  assertProblem(await call(admin, 'GET', `/users?role=admin&cursor=${users}`), 400, 'invalid', otherFilters, 'cursor');
  assertProblem(await call(admin, 'GET', `/products?active=false&cursor=${products}`), 400, 'invalid', otherFilters, 'cursor');
});

test('1,000 concurrent orders over HTTP for 10 units: exactly 10 succeed, the rest get 409 naming the SKU, stock ends at 0', async (t) => {
  const { ts, call, product } = await setup(t);
  const db = ts.databaseUrl!;
  const widget = await product('WIDGET-10', 999, 10);
  const buyers = await Promise.all(Array.from({ length: 20 }, (_, i) => ts.user({ email: `buyer${i}@example.com` })));
  const tokens = await Promise.all(buyers.map((b) => ts.token(b)));

  const results = await Promise.all(
    Array.from({ length: 1000 }, async (_, i) => {
      const res = await fetch(`${ts.url}/api/v1/orders`, {
        method: 'POST',
        headers: { authorization: `Bearer ${tokens[i % tokens.length]}`, 'content-type': 'application/json' },
        body: JSON.stringify({ paymentMethod: 'pm_card_visa', items: [{ sku: 'WIDGET-10', quantity: 1 }] }),
      });
      return { status: res.status, body: (await res.json()) as Json };
    }),
  );

  const created = results.filter((r) => r.status === 201);
  const refused = results.filter((r) => r.status === 409);
  assert.equal(created.length, 10, JSON.stringify(results.filter((r) => r.status !== 201 && r.status !== 409).slice(0, 3)));
  assert.equal(refused.length, 990);
  for (const r of refused) assert.match(r.body.detail, /SKU WIDGET-10 has 0 left, 1 requested/);
  assert.equal(new Set(created.map((r) => r.body.id)).size, 10);

  const [row] = await query<{ stock: number }>(db, 'select stock from products where id = $1', [widget.id]);
  assert.equal(row!.stock, 0);
  const [sold] = await query<{ orders: string; units: string }>(
    db,
    "select count(distinct o.id) as orders, sum(i.quantity) as units from orders o join order_items i on i.order_id = o.id where i.sku = 'WIDGET-10'",
  );
  assert.deepEqual(sold, { orders: '10', units: '10' });
  assert.equal((await call(null, 'GET', '/products')).status, 401);
});

test('concurrent orders naming the same SKUs in opposite orders never deadlock, and every unit sold is accounted for', async (t) => {
  const { ts, alice, product } = await setup(t);
  const db = ts.databaseUrl!;
  await product('AAA-1', 100, 150);
  await product('ZZZ-1', 100, 150);
  const token = await ts.token(alice);
  const results = await Promise.all(
    Array.from({ length: 200 }, async (_, i) => {
      const items =
        i % 2
          ? [
              { sku: 'ZZZ-1', quantity: 1 },
              { sku: 'AAA-1', quantity: 1 },
            ]
          : [
              { sku: 'AAA-1', quantity: 1 },
              { sku: 'ZZZ-1', quantity: 1 },
            ];
      const res = await fetch(`${ts.url}/api/v1/orders`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ paymentMethod: 'pm_card_visa', items }),
      });
      return res.status;
    }),
  );
  assert.deepEqual([...new Set(results)].sort(), [201, 409]);
  assert.equal(results.filter((s) => s === 201).length, 150);
  const rows = await query<{ sku: string; stock: number; sold: string }>(
    db,
    'select p.sku, p.stock, (select coalesce(sum(quantity), 0) from order_items i where i.product_id = p.id) as sold from products p order by p.sku',
  );
  assert.deepEqual(rows, [
    { sku: 'AAA-1', stock: 0, sold: '150' },
    { sku: 'ZZZ-1', stock: 0, sold: '150' },
  ]);
});

test('Idempotency-Key: repeats return the first response, concurrent ones included; another body is 422; keys expire', async (t) => {
  const { ts, alice, bob, admin, call, product, stock } = await setup(t);
  const db = ts.databaseUrl!;
  const pen = await product('PEN-1', 250, 100);
  const body = { paymentMethod: 'pm_card_visa', items: [{ sku: 'PEN-1', quantity: 2 }] };

  await t.test('20 concurrent identical requests with one key create one order, and all get the same 201 response', async () => {
    const headers = { 'idempotency-key': 'order-2026-11-25-0001' };
    const replies = await Promise.all(Array.from({ length: 20 }, () => call(alice, 'POST', '/orders', { headers, body })));
    for (const r of replies) {
      assert.equal(r.status, 201, JSON.stringify(r.body));
      assert.deepEqual(r.body, replies[0]!.body);
    }
    assert.equal(replies.filter((r) => r.headers.get('idempotent-replayed') === 'true').length, 19);
    assert.equal(await count(db, 'select count(*) as n from orders'), 1);
    assert.equal(await stock(pen.id), 98);

    // The same key through v2 replays the same order in v2's money shape.
    const v2 = await call(alice, 'POST', '/orders', { version: 'v2', headers, body });
    assert.equal(v2.status, 201);
    assert.equal(v2.body.id, replies[0]!.body.id);
    assert.deepEqual(v2.body.total, { amount: 500, currency: 'USD' });
  });

  await t.test('the same key with a different body answers 422 and orders nothing', async () => {
    const headers = { 'idempotency-key': 'order-2026-11-25-0001' };
    const res = await call(alice, 'POST', '/orders', { headers, body: { paymentMethod: 'pm_card_visa', items: [{ sku: 'PEN-1', quantity: 3 }] } });
    assertProblem(res, 422, 'unprocessable', /already used with a different request/, 'Idempotency-Key');
    // Another payment method is another request too.
    const otherCard = await call(alice, 'POST', '/orders', { headers, body: { ...body, paymentMethod: 'pm_card_mastercard' } });
    assertProblem(otherCard, 422, 'unprocessable', /already used with a different request/, 'Idempotency-Key');
    assert.equal(await count(db, 'select count(*) as n from orders'), 1);
    assert.equal(await stock(pen.id), 98);
  });

  await t.test("a key is the caller's own: another user sending the same key places their own order", async () => {
    const res = await call(bob, 'POST', '/orders', { headers: { 'idempotency-key': 'order-2026-11-25-0001' }, body });
    assert.equal(res.status, 201);
    assert.equal(res.body.userId, bob.id);
    assert.equal(res.headers.get('idempotent-replayed'), null);
    assert.equal(await count(db, 'select count(*) as n from orders'), 2);
  });

  await t.test('an expired key is treated as new', async () => {
    const headers = { 'idempotency-key': 'order-2026-11-25-0001' };
    const before = await call(alice, 'POST', '/orders', { headers, body });
    await query(db, "update idempotency_keys set expires_at = now() - interval '1 second' where key = $1", ['order-2026-11-25-0001']);
    const after = await call(alice, 'POST', '/orders', { headers, body: { paymentMethod: 'pm_card_visa', items: [{ sku: 'PEN-1', quantity: 3 }] } });
    assert.equal(after.status, 201, JSON.stringify(after.body));
    assert.notEqual(after.body.id, before.body.id);
    assert.equal(after.headers.get('idempotent-replayed'), null);
    const again = await call(alice, 'POST', '/orders', { headers, body: { paymentMethod: 'pm_card_visa', items: [{ sku: 'PEN-1', quantity: 3 }] } });
    assert.equal(again.body.id, after.body.id);
    const [row] = await query<{ hours: number }>(
      db,
      "select round(extract(epoch from expires_at - created_at) / 3600) as hours from idempotency_keys where key = 'order-2026-11-25-0001' and principal = $1",
      [alice.id],
    );
    assert.equal(Number(row!.hours), 24);
  });

  await t.test('a failed attempt stores nothing: the same key succeeds once the stock is back', async () => {
    const headers = { 'idempotency-key': 'retry-after-restock' };
    const big = { paymentMethod: 'pm_card_visa', items: [{ sku: 'PEN-1', quantity: 500 }] };
    assertProblem(await call(alice, 'POST', '/orders', { headers, body: big }), 409, 'conflict', /SKU PEN-1 has \d+ left, 500 requested/);
    assert.equal(await count(db, "select count(*) as n from idempotency_keys where key = 'retry-after-restock'"), 0);
    assert.equal((await call(admin, 'PATCH', `/products/${pen.id}`, { body: { stock: 1000 } })).status, 200);
    const ok = await call(alice, 'POST', '/orders', { headers, body: big });
    assert.equal(ok.status, 201, JSON.stringify(ok.body));
    assert.equal(await stock(pen.id), 500);
  });

  await t.test('a claim left behind by a failed attempt is cleared by the next request with the key', async () => {
    // As if the process had died between a failed attempt (its claim committed, no order) and giving the key back.
    const sameRequest = (
      await query<{ request_hash: string }>(db, "select request_hash from idempotency_keys where key = 'order-2026-11-25-0001' and principal = $1", [bob.id])
    )[0]!;
    await query(
      db,
      "insert into idempotency_keys (principal, key, request_hash, status_code, response_body, created_at, expires_at) values ($1, 'orphan', $2, 201, $3, now(), now() + interval '1 day')",
      [alice.id, sameRequest.request_hash, JSON.stringify({ orderId: 'ord_01ARZ3NDEKTSV4RRFFQ69G5FAV' })],
    );
    const healed = await call(alice, 'POST', '/orders', { headers: { 'idempotency-key': 'orphan' }, body });
    assert.equal(healed.status, 201, JSON.stringify(healed.body));
    assert.equal(healed.headers.get('idempotent-replayed'), null);
  });

  await t.test('a malformed key answers 400 naming the header', async () => {
    const before = await count(db, 'select count(*) as n from orders');
    for (const key of ['', 'has space', 'x'.repeat(256), 'tab\there', 'caf\u00e9']) {
      assertProblem(await call(alice, 'POST', '/orders', { headers: { 'idempotency-key': key }, body }), 400, 'invalid', undefined, 'idempotency-key');
    }
    assert.equal(await count(db, 'select count(*) as n from orders'), before);
  });
});
