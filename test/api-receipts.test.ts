import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import type { EventMessage } from '../src/domain/events/events.js';
import { newId } from '../src/domain/shared/ids.js';
import type { UserView } from '../src/domain/users/users.service.js';
import { paymentsConsumer } from '../src/worker/consumers/payments.js';
import { receiptsConsumer } from '../src/worker/consumers/receipts.js';
import { silent } from './helpers/rabbit.js';
import { testServer, type TestServer } from './helpers/server.js';
import { assertProblem, type Json } from './helpers/http.js';
import { S3RVER_CREDENTIALS, startFakeS3 } from './fakes/s3.js';

// GET /api/{v1,v2}/orders/{id}/receipt: a short-lived link to the order's PDF receipt for its owner
// or an admin, 404 for anyone else and while there is none.

interface Setup {
  ts: TestServer;
  admin: UserView;
  alice: UserView;
  bob: UserView;
  get(user: UserView, path: string, version?: 'v1' | 'v2'): Promise<{ status: number; type: string | null; body: Json }>;
  /** An order of alice's for 2 teas, paid with `paymentMethod` (simulated) and, when paid, given its receipt by the receipts consumer. */
  order(paymentMethod: string, options?: { receipt?: boolean }): Promise<string>;
}

async function setup(t: TestContext, options: { embedded?: boolean; env?: Record<string, string> } = {}): Promise<Setup> {
  const ts = await testServer(t, options);
  const [admin, alice, bob] = await Promise.all([
    ts.user({ email: 'admin@example.com', role: 'admin' }),
    ts.user({ email: 'alice@example.com' }),
    ts.user({ email: 'bob@example.com' }),
  ]);
  const ctx = ts.app.context({ actor: 'cli:test' });
  await ts.app.products.create(ctx, { sku: 'TEA-1', name: 'Green tea', price: { amount: 450, currency: 'USD' }, stock: 50 });
  return {
    ts,
    admin,
    alice,
    bob,
    async get(user, path, version = 'v1') {
      const res = await fetch(`${ts.url}/api/${version}${path}`, { headers: await ts.auth(user) });
      return { status: res.status, type: res.headers.get('content-type'), body: (await res.json()) as Json };
    },
    async order(paymentMethod, { receipt = true } = {}) {
      const placed = await ts.app.orders.create(ctx, { userId: alice.id, items: [{ sku: 'TEA-1', quantity: 2 }], paymentMethod });
      const orderId = placed.order.id;
      const message = (type: EventMessage['type']): EventMessage => ({
        id: newId('evt'),
        type,
        aggregateId: orderId,
        payload: {},
        occurredAt: new Date().toISOString(),
      });
      await ctx.transaction((tx) => paymentsConsumer({ payments: ts.app.payments }).handle(tx, message('order.created')));
      if (receipt) await ctx.transaction((tx) => receiptsConsumer({ files: ts.app.files, logger: silent }).handle(tx, message('order.completed')));
      return orderId;
    },
  };
}

/** Downloads a receipt link and checks it is the stored PDF (its SHA-256 as the files table has it). */
async function assertDownloadsReceipt(s: Setup, url: string, orderId: string): Promise<void> {
  const res = await fetch(url);
  assert.equal(res.status, 200, url);
  const bytes = Buffer.from(await res.arrayBuffer());
  assert.equal(bytes.subarray(0, 5).toString('latin1'), '%PDF-');
  const [row] = await s.ts.app.context({ actor: 'cli:test' }).sql<{ sha256: string }>('select sha256 from files where order_id = $1', [orderId]);
  assert.equal(createHash('sha256').update(bytes).digest('hex'), row!.sha256);
}

for (const embedded of [false, true]) {
  test(`${embedded ? 'embedded' : 'PostgreSQL'}, local files: the owner and an admin get a signed link that downloads the receipt on v1 and v2; another user gets 404`, async (t) => {
    const s = await setup(t, { embedded });
    const orderId = await s.order('pm_card_visa');
    for (const version of ['v1', 'v2'] as const) {
      for (const user of [s.alice, s.admin]) {
        const before = Date.now();
        const res = await s.get(user, `/orders/${orderId}/receipt`, version);
        assert.equal(res.status, 200, JSON.stringify(res.body));
        assert.deepEqual(Object.keys(res.body).sort(), ['expiresAt', 'url']);
        assert.ok(res.body.url.startsWith(`${s.ts.url}/files/receipts/${orderId}.pdf?expires=`), res.body.url);
        // RECEIPT_URL_TTL_SECONDS (300 by default), in whole seconds.
        const ttl = (Date.parse(res.body.expiresAt) - before) / 1000;
        assert.ok(ttl > 298 && ttl <= 301, `expires in ${ttl} s`);
        await assertDownloadsReceipt(s, res.body.url, orderId);
      }
      assertProblem(await s.get(s.bob, `/orders/${orderId}/receipt`, version), 404, 'not_found', new RegExp(`^no order ${orderId}$`));
    }
  });
}

test('404 with a clear detail while the receipt is not made yet, and for an order that will have none', async (t) => {
  const s = await setup(t);
  const paidNoReceiptYet = await s.order('pm_card_visa', { receipt: false });
  const pending = (
    await s.ts.app.orders.create(s.ts.app.context({ actor: 'cli:test' }), {
      userId: s.alice.id,
      items: [{ sku: 'TEA-1', quantity: 1 }],
      paymentMethod: 'pm_card_visa',
    })
  ).order.id;
  const failed = await s.order('pm_card_chargeDeclined');
  for (const version of ['v1', 'v2'] as const) {
    for (const user of [s.alice, s.admin]) {
      assertProblem(
        await s.get(user, `/orders/${paidNoReceiptYet}/receipt`, version),
        404,
        'not_found',
        new RegExp(`^the receipt for order ${paidNoReceiptYet} is not made yet: it is being made; try again in a moment$`),
      );
      assertProblem(
        await s.get(user, `/orders/${pending}/receipt`, version),
        404,
        'not_found',
        new RegExp(`^the receipt for order ${pending} is not made yet: it is made once the order is paid$`),
      );
      assertProblem(
        await s.get(user, `/orders/${failed}/receipt`, version),
        404,
        'not_found',
        new RegExp(`^order ${failed} has no receipt: it is failed, and only a paid order gets one$`),
      );
    }
    // Another user learns nothing, not even whether there is a receipt.
    for (const id of [paidNoReceiptYet, pending]) assertProblem(await s.get(s.bob, `/orders/${id}/receipt`, version), 404, 'not_found', /^no order /);
    assertProblem(await s.get(s.alice, '/orders/ord_01ARZ3NDEKTSV4RRFFQ69G5FAV/receipt', version), 404, 'not_found', /^no order /);
    assertProblem(await s.get(s.alice, '/orders/nope/receipt', version), 400, 'invalid');
  }
  const anonymous = await fetch(`${s.ts.url}/api/v1/orders/${pending}/receipt`);
  assert.equal(anonymous.status, 401);
});

test('with S3_BUCKET the link is a presigned S3 URL that downloads the receipt', async (t) => {
  const s3 = await startFakeS3();
  t.after(() => s3.close());
  // The AWS SDK reads its credentials from the environment itself (svc does not).
  process.env.AWS_ACCESS_KEY_ID = S3RVER_CREDENTIALS.accessKeyId;
  process.env.AWS_SECRET_ACCESS_KEY = S3RVER_CREDENTIALS.secretAccessKey;
  const s = await setup(t, { env: { S3_BUCKET: s3.bucket, S3_ENDPOINT: s3.url, S3_FORCE_PATH_STYLE: 'true' } });
  const orderId = await s.order('pm_card_visa');
  const res = await s.get(s.alice, `/orders/${orderId}/receipt`, 'v2');
  assert.equal(res.status, 200, JSON.stringify(res.body));
  const url = new URL(res.body.url);
  assert.equal(url.origin + url.pathname, `${s3.url}/${s3.bucket}/receipts/${orderId}.pdf`);
  assert.equal(url.searchParams.get('X-Amz-Expires'), '300');
  await assertDownloadsReceipt(s, res.body.url, orderId);
});
