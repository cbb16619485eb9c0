import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { testServer, type TestServer } from './helpers/server.js';
import { assertProblem, type Json } from './helpers/http.js';
import type { UserView } from '../src/domain/users/users.service.js';

// Input an attacker would send rather than a client: each is refused with a 400 that names what was
// wrong, and changes nothing.

interface Reply {
  status: number;
  type: string | undefined;
  body: Json;
}

async function setup(
  t: TestContext,
  embedded: boolean,
): Promise<{ ts: TestServer; admin: UserView; call: (method: 'GET' | 'POST' | 'PATCH', path: string, body?: unknown) => Promise<Reply> }> {
  const ts = await testServer(t, { embedded });
  const admin = await ts.user({ email: 'admin@example.com', role: 'admin' });
  const call = async (method: 'GET' | 'POST' | 'PATCH', path: string, body?: unknown): Promise<Reply> => {
    const res = await ts.server.inject({
      method,
      url: `/api/v1${path}`,
      headers: await ts.auth(admin),
      ...(body === undefined ? {} : { payload: body as object }),
    });
    return { status: res.statusCode, type: res.headers['content-type'], body: (res.body ? res.json() : undefined) as Json };
  };
  return { ts, admin, call };
}

for (const embedded of [false, true]) {
  const where = embedded ? 'embedded' : 'PostgreSQL';

  test(`a name with a control character (NUL, a terminal escape sequence) is a 400 naming the field, and nothing is stored (${where})`, async (t) => {
    const { admin, call } = await setup(t, embedded);
    // NUL: PostgreSQL cannot store it (text, jsonb). ESC: `svc users list` would send it to an operator's terminal.
    for (const name of ['Tea\u0000', '\u001b[2J\u001b]0;owned\u0007Tea', 'Tea\u009b31m']) {
      const created = await call('POST', '/products', { sku: 'TEA-1', name, price: 4.5, currency: 'USD', stock: 1 });
      assertProblem(created, 400, 'invalid', /control character/, 'name');
      const registered = await call('POST', '/auth/register', { email: 'eve@example.com', password: 'correct horse battery', name });
      assertProblem(registered, 400, 'invalid', /control character/, 'name');
      const renamed = await call('PATCH', `/users/${admin.id}`, { name });
      assertProblem(renamed, 400, 'invalid', /control character/, 'name');
    }
    assert.deepEqual((await call('GET', '/products')).body.data, []);
    const users = (await call('GET', '/users')).body.data as Json[];
    assert.deepEqual(
      users.map((u) => [u.email, u.name]),
      [['admin@example.com', 'admin']],
    );
    // Letters of any script, emoji and the characters HTML escapes are names like any other.
    const fine = await call('POST', '/products', { sku: 'TEA-2', name: 'Thé 🍵 <b>&</b> 茶', price: 4.5, currency: 'USD', stock: 1 });
    assert.equal(fine.status, 201, JSON.stringify(fine.body));
    assert.equal(fine.body.name, 'Thé 🍵 <b>&</b> 茶');
  });

  test(`an order's SKU with a control character is a 400 naming the field, not a 500, and orders nothing (${where})`, async (t) => {
    const { call } = await setup(t, embedded);
    const created = await call('POST', '/products', { sku: 'TEA-1', name: 'Tea', price: 4.5, currency: 'USD', stock: 5 });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    for (const sku of ['TEA-1\u0000', '\u001b[2JTEA-1', 'TEA\u009b1']) {
      const ordered = await call('POST', '/orders', {
        paymentMethod: 'pm_card_visa',
        items: [
          { sku: 'TEA-1', quantity: 1 },
          { sku, quantity: 1 },
        ],
      });
      assertProblem(ordered, 400, 'invalid', /^items\[1\]\.sku must not contain a control character \(U\+00(00|1B|9B) at position \d\)$/, 'items[1].sku');
    }
    assert.deepEqual((await call('GET', '/orders')).body.data, []);
    assert.equal((await call('GET', `/products/${created.body.id}`)).body.stock, 5);
  });

  test(`a user search with a NUL character is a 400 naming the field, not a 500 (${where})`, async (t) => {
    const { ts, admin } = await setup(t, embedded);
    for (const search of ['%00', 'ad%00min']) {
      const res = await ts.server.inject({ method: 'GET', url: `/api/v1/users?search=${search}`, headers: await ts.auth(admin) });
      assertProblem({ status: res.statusCode, type: res.headers['content-type'], body: res.json() }, 400, 'invalid', /control character/, 'search');
    }
  });
}

// What node's HTTP parser refuses never reaches a route: it is answered as a problem too, not as fastify's own JSON.
test('a request that is not valid HTTP (a control character in a header, headers too large) is a problem+json 400 or 431', async (t) => {
  const ts = await testServer(t);
  const { port } = new URL(ts.url);
  const raw = (request: string) =>
    new Promise<string>((resolve, reject) => {
      const socket = connect(Number(port), '127.0.0.1', () => socket.end(request));
      let answer = '';
      socket.setEncoding('utf8');
      socket.on('data', (chunk: string) => (answer += chunk));
      socket.on('close', () => resolve(answer));
      socket.on('error', reject);
    });
  const parse = (answer: string) => {
    const [head = '', body = ''] = answer.split('\r\n\r\n');
    return { status: Number(head.split(' ')[1]), type: /content-type: (.*)/i.exec(head)?.[1], body: JSON.parse(body) as Json };
  };

  const badHeader = parse(await raw('GET /health/live HTTP/1.1\r\nHost: x\r\nX-Evil: a\u0001b\r\n\r\n'));
  assertProblem(badHeader, 400, 'invalid', /not valid HTTP/);
  assert.match(badHeader.body.traceId, /^[\da-f]{32}$/);
  const huge = parse(await raw(`GET /health/live HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`));
  assertProblem(huge, 431, 'invalid', /headers are too large/);
  assert.equal(huge.body.title, 'Request Header Fields Too Large');
});

test('a body that is not application/json (text/plain, a form) is a 415 saying what to send, and places no order', async (t) => {
  const { ts, admin, call } = await setup(t, false);
  assert.equal((await call('POST', '/products', { sku: 'TEA-1', name: 'Tea', price: 4.5, currency: 'USD', stock: 5 })).status, 201);
  const order = JSON.stringify({ items: [{ sku: 'TEA-1', quantity: 1 }], paymentMethod: 'pm_card_visa' });
  for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'application/xml']) {
    const res = await ts.server.inject({ method: 'POST', url: '/api/v1/orders', headers: { ...(await ts.auth(admin)), 'content-type': type }, payload: order });
    assertProblem({ status: res.statusCode, type: res.headers['content-type'], body: res.json() }, 415, 'invalid', new RegExp(`${type}.*application/json`));
  }
  assert.deepEqual((await call('GET', '/orders')).body.data, []);
});

test('a POST without the body its route needs is a 400 saying a JSON body is required, not "body must be object"', async (t) => {
  const { ts, admin } = await setup(t, false);
  for (const [url, headers] of [
    ['/api/v1/auth/logout', {}],
    ['/api/v1/products', await ts.auth(admin)],
  ] as const) {
    const res = await ts.server.inject({ method: 'POST', url, headers });
    assertProblem({ status: res.statusCode, type: res.headers['content-type'], body: res.json() }, 400, 'invalid', /a JSON body is required/, 'body');
  }
});

test('a cancel sent with a body (a reason, a refund flag) is a 400 saying the route takes none, and cancels nothing; without one, or with {}, it cancels', async (t) => {
  const { call } = await setup(t, false);
  assert.equal((await call('POST', '/products', { sku: 'TEA-1', name: 'Tea', price: 4.5, currency: 'USD', stock: 5 })).status, 201);
  const place = async () => (await call('POST', '/orders', { items: [{ sku: 'TEA-1', quantity: 1 }], paymentMethod: 'pm_card_visa' })).body.id as string;
  const first = await place();
  for (const body of [{ reason: 'changed my mind' }, { refund: true }, ['x']]) {
    const refused = await call('POST', `/orders/${first}/cancel`, body);
    assertProblem(refused, 400, 'invalid', /takes no body/, 'body');
  }
  assert.equal((await call('GET', `/orders/${first}`)).body.status, 'pending');
  assert.equal((await call('POST', `/orders/${first}/cancel`)).body.status, 'cancelled');
  assert.equal((await call('POST', `/orders/${await place()}/cancel`, {})).body.status, 'cancelled');
});

test('a JSON body with a __proto__ key (prototype poisoning) is a 400 that says so and places nothing; broken JSON is still "not valid JSON"', async (t) => {
  const { ts, admin, call } = await setup(t, false);
  const post = async (payload: string) => {
    const res = await ts.server.inject({
      method: 'POST',
      url: '/api/v1/products',
      headers: { ...(await ts.auth(admin)), 'content-type': 'application/json' },
      payload,
    });
    return { status: res.statusCode, type: res.headers['content-type'], body: res.json<Json>() };
  };
  for (const poisoned of [
    '{"sku": "TEA-1", "name": "Tea", "price": 4.5, "currency": "USD", "stock": 1, "__proto__": {"admin": true}}',
    '{"sku": "TEA-1", "name": "Tea", "price": 4.5, "currency": "USD", "stock": 1, "constructor": {"prototype": {"admin": true}}}',
  ]) {
    assertProblem(await post(poisoned), 400, 'invalid', /__proto__ key or a constructor\.prototype/);
  }
  assertProblem(await post('{"sku": "TEA-1",'), 400, 'invalid', /not valid JSON/);
  assert.deepEqual((await call('GET', '/products')).body.data, []);
});
