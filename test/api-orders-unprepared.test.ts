// The orders API tests again with DATABASE_PREPARED_STATEMENTS off, as svc runs behind a PgBouncer in
// transaction pooling mode (test/helpers/server.ts passes the setting on to every test server).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { testServer, type TestServer } from './helpers/server.js';

process.env.DATABASE_PREPARED_STATEMENTS = 'false';
await import('./api-orders.test.js');

/** Serves an order read and a product list (prepared statements when on), then lists the statements prepared on the server. */
async function preparedAfterRequests(ts: TestServer): Promise<string[]> {
  const admin = await ts.user({ email: 'admin@example.com', role: 'admin' });
  const auth = await ts.auth(admin);
  const product = await fetch(`${ts.url}/api/v2/products`, {
    method: 'POST',
    headers: { ...auth, 'content-type': 'application/json' },
    body: JSON.stringify({ sku: 'TEA-1', name: 'Tea', price: { amount: 450, currency: 'USD' }, stock: 10 }),
  });
  assert.equal(product.status, 201);
  const order = await fetch(`${ts.url}/api/v1/orders`, {
    method: 'POST',
    headers: { ...auth, 'content-type': 'application/json' },
    body: JSON.stringify({ paymentMethod: 'pm_card_visa', items: [{ sku: 'TEA-1', quantity: 2 }] }),
  });
  assert.equal(order.status, 201);
  const { id } = (await order.json()) as { id: string };
  assert.equal((await fetch(`${ts.url}/api/v1/orders/${id}`, { headers: auth })).status, 200);
  assert.equal((await fetch(`${ts.url}/api/v1/products?limit=5`, { headers: auth })).status, 200);
  // One connection in the pool: this query runs in the session that served the requests.
  const rows = (await ts.app.db.orm.em.getConnection().execute('select name from pg_prepared_statements', [], 'all')) as { name: string }[];
  return rows.map((r) => r.name);
}

test('with DATABASE_PREPARED_STATEMENTS off no statement is prepared on the server; on (the default) they are', async (t) => {
  const off = await testServer(t, { env: { DATABASE_POOL_MAX: '1' } });
  assert.equal(off.config.DATABASE_PREPARED_STATEMENTS, false);
  assert.deepEqual(await preparedAfterRequests(off), []);

  const on = await testServer(t, { env: { DATABASE_POOL_MAX: '1', DATABASE_PREPARED_STATEMENTS: 'true' } });
  assert.ok((await preparedAfterRequests(on)).length >= 2);
});
