import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import pg from 'pg';
import { testServer, jwksFile } from './helpers/server.js';
import { migratedDatabase, query, sessionOn } from './helpers/db.js';
import { svc, svcServe, tempDir } from './helpers/cli.js';
import { assertProblem, type Json } from './helpers/http.js';
import { translateDatabaseError } from '../src/adapters/database.js';
import { DomainError } from '../src/domain/shared/errors.js';
import { newId } from '../src/domain/shared/ids.js';

// PostgreSQL's own words: the constraint, the index expression, the detail. None may reach a client.
const DATABASE_WORDS = /Key \(|lower\(|_unique|_foreign|_check|constraint|duplicate key|not present in table|violates|refers to something/;

/**
 * Resolves once another session waits for a lock `holder` holds: the racing statement has reached
 * the row and is queued behind it. PostgreSQL has no notification for that, so ask it (from another
 * session: within the holder's transaction, pg_stat_activity would not change).
 */
async function untilSomeoneWaitsFor(url: string, holder: pg.Client): Promise<void> {
  const { rows } = await holder.query<{ pid: number }>('select pg_backend_pid() as pid');
  const deadline = Date.now() + 30_000;
  for (;;) {
    const [row] = await query<{ n: number }>(url, 'select count(*)::int as n from pg_stat_activity where $1 = any(pg_blocking_pids(pid))', [rows[0]!.pid]);
    if (row!.n > 0) return;
    if (Date.now() > deadline) throw new Error('no session came to wait for the lock');
    await delay(10);
  }
}

const now = () => new Date().toISOString();

test('a user deleted while their order is placed gets 404 naming the user in the domain words; nothing is ordered or taken from stock', async (t) => {
  const ts = await testServer(t);
  const admin = await ts.user({ email: 'admin@example.com', role: 'admin' });
  const alice = await ts.user({ email: 'alice@example.com' });
  const product = await ts.server.inject({
    method: 'POST',
    url: '/api/v2/products',
    headers: await ts.auth(admin),
    payload: { sku: 'TEA-1', name: 'Tea', price: { amount: 450, currency: 'USD' }, stock: 5 },
  });
  assert.equal(product.statusCode, 201, product.body);

  // Hold the product's row: the order statement passes authentication, then waits for it ...
  const locker = await sessionOn(t, ts.databaseUrl!);
  await locker.query('begin');
  await locker.query("select id from products where sku = 'TEA-1' for update");
  const ordering = fetch(`${ts.url}/api/v1/orders`, {
    method: 'POST',
    headers: { ...(await ts.auth(alice)), 'content-type': 'application/json' },
    body: JSON.stringify({ paymentMethod: 'pm_card_visa', items: [{ sku: 'TEA-1', quantity: 2 }] }),
  });
  await untilSomeoneWaitsFor(ts.databaseUrl!, locker);
  // ... while an admin deletes her account (she has no orders yet), then the product is released.
  const deleted = await ts.server.inject({ method: 'DELETE', url: `/api/v1/users/${alice.id}`, headers: await ts.auth(admin) });
  assert.equal(deleted.statusCode, 204, deleted.body);
  await locker.query('commit');

  const res = await ordering;
  const text = await res.text();
  assertProblem({ status: res.status, type: res.headers.get('content-type'), body: JSON.parse(text) }, 404, 'not_found', undefined, 'userId');
  assert.equal(JSON.parse(text).detail, `user ${alice.id} no longer exists; the order was not placed`);
  assert.doesNotMatch(text, DATABASE_WORDS);
  const [row] = await query<{ stock: number; orders: number }>(
    ts.databaseUrl!,
    "select stock, (select count(*)::int from orders) as orders from products where sku = 'TEA-1'",
  );
  assert.deepEqual(row, { stock: 5, orders: 0 });
});

test(
  'a SKU taken by a concurrent writer answers 409 naming the SKU; the request log has PostgreSQL detail under the trace id, the body never does',
  { timeout: 120_000 },
  async (t) => {
    const dir = tempDir(t);
    const url = await migratedDatabase(t);
    const keys = await jwksFile(t);
    const env = { DATABASE_URL: url, JWT_KEYS_FILE: keys, SVC_DATA_DIR: join(dir, 'data') };
    const password = 'correct horse battery staple';
    const created = await svc(['users', 'create', '--email', 'admin@example.com', '--name', 'Admin', '--role', 'admin', '--password-stdin'], {
      env,
      input: password,
    });
    assert.equal(created.code, 0, created.stderr);
    const serve = await svcServe(t, ['--port', '0'], { env: { ...env, LOG_LEVEL: 'info' } });
    const login = await fetch(`${serve.url}/api/v1/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: 'admin@example.com', password }),
    });
    const { accessToken } = (await login.json()) as { accessToken: string };

    // Another writer has inserted TEA-1 and not committed: the service's own check cannot see it,
    // and its insert waits on the unique index until that writer commits.
    const other = await sessionOn(t, url);
    await other.query('begin');
    await other.query(
      "insert into products (id, sku, name, price, currency, stock, active, created_at, updated_at) values ($1, 'TEA-1', 'Tea', 450, 'USD', 1, true, $2, $2)",
      [newId('prd'), now()],
    );
    const traceId = randomBytes(16).toString('hex');
    const creating = fetch(`${serve.url}/api/v2/products`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${accessToken}`,
        'content-type': 'application/json',
        traceparent: `00-${traceId}-${randomBytes(8).toString('hex')}-01`,
      },
      body: JSON.stringify({ sku: 'TEA-1', name: 'Green tea', price: { amount: 500, currency: 'USD' }, stock: 3 }),
    });
    await untilSomeoneWaitsFor(url, other);
    await other.query('commit');

    const res = await creating;
    const text = await res.text();
    assertProblem({ status: res.status, type: res.headers.get('content-type'), body: JSON.parse(text) }, 409, 'conflict', undefined, 'sku');
    assert.equal(JSON.parse(text).detail, 'a product with SKU TEA-1 already exists; change that one or pick another SKU');
    assert.doesNotMatch(text, DATABASE_WORDS);

    serve.child.kill('SIGTERM');
    assert.equal((await serve.exited).code, 0);
    const lines = serve
      .stderr()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Json)
      .filter((l) => l.traceId === traceId);
    const refused = lines.find((l) => l.msg === 'the database refused the change');
    assert.ok(refused, serve.stderr());
    assert.equal(refused.err.message, 'a product with SKU TEA-1 already exists; change that one or pick another SKU');
    assert.equal(refused.err.cause.code, '23505');
    assert.equal(refused.err.cause.constraint, 'products_sku_unique');
    assert.equal(refused.err.cause.detail, 'Key (sku)=(TEA-1) already exists.');
    assert.ok(lines.some((l) => l.msg === 'request' && l.status === 409));
  },
);

test('svc users create racing another writer for the same email (another letter case) says the email is taken, as it does without a race (an operator may see the account)', async (t) => {
  const url = await migratedDatabase(t);
  const other = await sessionOn(t, url);
  await other.query('begin');
  const winner = newId('usr');
  await other.query(
    "insert into users (id, email, name, role, status, created_at, updated_at) values ($1, 'ada@example.com', 'Ada', 'user', 'active', $2, $2)",
    [winner, now()],
  );
  const creating = svc(['users', 'create', '--email', 'ADA@Example.com', '--name', 'Ada', '--json'], { env: { DATABASE_URL: url } });
  await untilSomeoneWaitsFor(url, other);
  await other.query('commit');

  const res = await creating;
  assert.equal(res.code, 4, res.stderr);
  const { error } = res.json<{ error: { code: string; message: string; exitCode: number; details: Json } }>();
  assert.deepEqual(error, {
    code: 'conflict',
    message: `a user with email ADA@Example.com already exists (${winner})`,
    exitCode: 4,
    details: { field: 'email', userId: winner },
  });
  assert.doesNotMatch(res.stdout + res.stderr, DATABASE_WORDS);
});

test('svc users api-keys create for a user deleted meanwhile says the user no longer exists (exit 3), and creates nothing', async (t) => {
  const url = await migratedDatabase(t);
  const env = { DATABASE_URL: url };
  const created = await svc(['users', 'create', '--email', 'bob@example.com', '--name', 'Bob', '--json'], { env });
  assert.equal(created.code, 0, created.stderr);
  const bob = created.json<{ id: string }>();

  // Hold Bob's row: the key's insert finds him, then waits to check its reference to him ...
  const other = await sessionOn(t, url);
  await other.query('begin');
  await other.query('select id from users where id = $1 for update', [bob.id]);
  const creating = svc(['users', 'api-keys', 'create', 'bob@example.com', '--name', 'ci'], { env });
  await untilSomeoneWaitsFor(url, other);
  // ... while he is deleted.
  await other.query('delete from users where id = $1', [bob.id]);
  await other.query('commit');

  const res = await creating;
  assert.equal(res.code, 3, res.stderr);
  assert.equal(res.stderr.trim(), `Error: user ${bob.id} no longer exists; no API key was created`);
  assert.doesNotMatch(res.stderr, DATABASE_WORDS);
  assert.deepEqual(await query(url, 'select id from api_keys'), []);
});

test('on the embedded database (PGlite) a constraint error is translated the same way, with its detail kept as the cause', async (t) => {
  const ts = await testServer(t, { embedded: true });
  const ctx = ts.app.context({ actor: 'cli:test' });
  await ts.app.products.create(ctx, { sku: 'TEA-1', name: 'Tea', price: { amount: 450, currency: 'USD' } });
  // A second writer that skipped the service's check (as a concurrent one effectively does).
  const err = await ctx.em
    .execute(
      "insert into products (id, sku, name, price, currency, stock, active, created_at, updated_at) values (?, 'TEA-1', 'Tea', 1, 'USD', 0, true, now(), now())",
      [newId('prd')],
    )
    .then(
      () => assert.fail('the duplicate SKU was accepted'),
      (e: unknown) => e,
    );
  const translated = translateDatabaseError(err);
  assert.ok(translated instanceof DomainError, String(err));
  assert.equal(translated.code, 'conflict');
  assert.equal(translated.message, 'a product with SKU TEA-1 already exists; change that one or pick another SKU');
  assert.deepEqual(translated.details, { field: 'sku' });
  assert.equal((translated.cause as { detail?: string }).detail, 'Key (sku)=(TEA-1) already exists.');
});

test('constraints without a message of their own still answer in words naming the field, never PostgreSQL', () => {
  const pgError = (fields: Record<string, string>) => Object.assign(new Error('database said no'), fields);
  const cases: [Record<string, string>, string, string, string | undefined][] = [
    [
      { code: '23505', constraint: 'refresh_tokens_token_hash_unique', table: 'refresh_tokens', detail: 'Key (token_hash)=(ab12) already exists.' },
      'conflict',
      'a refresh token with this tokenHash already exists',
      'tokenHash',
    ],
    [
      { code: '23503', constraint: 'orders_user_id_foreign', table: 'users', detail: 'Key (id)=(usr_1) is still referenced from table "orders".' },
      'conflict',
      'user usr_1 has orders and cannot be deleted; disable the account instead (status "disabled")',
      undefined,
    ],
    [
      {
        code: '23503',
        constraint: 'order_items_product_id_foreign',
        table: 'order_items',
        detail: 'Key (product_id)=(prd_1) is not present in table "products".',
      },
      'unprocessable',
      'product prd_1 no longer exists; remove that item',
      'items',
    ],
    [
      { code: '23503', constraint: 'widgets_owner_id_foreign', table: 'widgets', detail: 'Key (owner_id)=(usr_2) is not present in table "users".' },
      'not_found',
      'user usr_2 does not exist (or no longer does)',
      'ownerId',
    ],
    [
      { code: '23514', constraint: 'order_items_quantity_check', table: 'order_items', detail: 'Failing row contains (itm_1, 0).' },
      'invalid',
      'a quantity must be 1 or more',
      'items',
    ],
    [
      { code: '23514', constraint: 'widgets_size_check', table: 'widgets', detail: 'Failing row contains (1).' },
      'invalid',
      'size is outside what a record allows',
      'size',
    ],
    [{ code: '23502', table: 'orders', column: 'user_id', detail: 'Failing row contains (ord_1, null).' }, 'invalid', 'userId is required', 'userId'],
    [
      { code: '23505', constraint: 'order_items_pkey', table: 'order_items', detail: 'Key (id)=(itm_1) already exists.' },
      'conflict',
      'an order line with this id already exists',
      'id',
    ],
  ];
  for (const [fields, code, message, field] of cases) {
    const translated = translateDatabaseError(pgError(fields));
    assert.ok(translated instanceof DomainError, fields.constraint);
    assert.deepEqual({ code: translated.code, message: translated.message, field: translated.details.field }, { code, message, field });
    assert.doesNotMatch(translated.message, DATABASE_WORDS);
  }
});
