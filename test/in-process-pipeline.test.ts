import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { createApp, type App } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { createLoggerTo } from '../src/logger.js';
import { startServer } from '../src/server/serve.js';
import { longRunningArgs, ROOT, svc, svcServe, tempDir, type ServeProcess } from './helpers/cli.js';
import { migratedDataDir, migratedDatabase, query } from './helpers/db.js';
import { parseEml } from './helpers/eml.js';
import { silent, waitFor } from './helpers/rabbit.js';
import { FAKE_STRIPE_SECRET_KEY, startFakeStripe } from './fakes/stripe.js';

// The embedded default as a user meets it: `svc serve` (the built binary) on a fresh data folder,
// nothing else running, and orders paid and decided in-process (npm run build first).

const PASSWORD = 'correct horse battery staple';
// The customer's name is data, not markup: the HTML email must escape it.
const CUSTOMER = 'Ada "<b>Lovelace</b>" & Co';

interface Shop {
  /** An API call with the user's token (v1 unless said otherwise). */
  call(method: string, path: string, body?: unknown, version?: 'v1' | 'v2'): Promise<{ status: number; body: any }>;
  order(paymentMethod: string, quantity?: number): Promise<string>;
  /** The order's status once it is decided (neither pending nor processing), polled through the API. */
  decided(orderId: string, timeoutMs?: number): Promise<string>;
  status(orderId: string): Promise<string>;
}

async function api(url: string, method: string, path: string, body: unknown, token?: string, version = 'v1') {
  const res = await fetch(`${url}/api/${version}${path}`, {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined };
}

async function login(url: string, email: string): Promise<string> {
  const res = await api(url, 'POST', '/auth/login', { email, password: PASSWORD });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body.accessToken as string;
}

/**
 * An admin (created with `svc users create` in a second terminal, through svc serve's socket), a
 * product with stock, and a customer registered and logged in through the API.
 */
async function openShop(serve: ServeProcess, env: Record<string, string | undefined>): Promise<Shop & { productId: string }> {
  const admin = await svc(['users', 'create', '--email', 'admin@example.com', '--name', 'Admin', '--role', 'admin', '--password-stdin', '--json'], {
    env,
    input: `${PASSWORD}\n`,
  });
  assert.equal(admin.code, 0, admin.stderr);
  const adminToken = await login(serve.url, 'admin@example.com');
  const product = await api(
    serve.url,
    'POST',
    '/products',
    { sku: 'MUG-1', name: 'Mug', price: { amount: 1250, currency: 'USD' }, stock: 100 },
    adminToken,
    'v2',
  );
  assert.equal(product.status, 201, JSON.stringify(product.body));
  const registered = await api(serve.url, 'POST', '/auth/register', { email: 'ada@example.com', password: PASSWORD, name: CUSTOMER });
  assert.equal(registered.status, 201, JSON.stringify(registered.body));
  return { ...shopAt(serve.url, await login(serve.url, 'ada@example.com')), productId: product.body.id as string };
}

function shopAt(url: string, token: string): Shop {
  const shop: Shop = {
    call: (method, path, body, version = 'v1') => api(url, method, path, body, token, version),
    async order(paymentMethod, quantity = 1) {
      const res = await shop.call('POST', '/orders', { paymentMethod, items: [{ sku: 'MUG-1', quantity }] });
      assert.equal(res.status, 201, JSON.stringify(res.body));
      return res.body.id as string;
    },
    async status(orderId) {
      const res = await shop.call('GET', `/orders/${orderId}`);
      assert.equal(res.status, 200, JSON.stringify(res.body));
      return res.body.status as string;
    },
    async decided(orderId, timeoutMs = 30_000) {
      let status = '';
      await waitFor(async () => !['pending', 'processing'].includes((status = await shop.status(orderId))), timeoutMs, `order ${orderId} to be decided`);
      return status;
    },
  };
  return shop;
}

async function stopServe(serve: ServeProcess): Promise<void> {
  serve.child.kill('SIGTERM');
  const { code } = await serve.exited;
  assert.equal(code, 0, serve.stderr());
}

/** The payment rows of the stopped data folder, per order: how many attempts succeeded (and the App open on it, closed when the test ends). */
async function paymentsIn(t: TestContext, dataDir: string): Promise<{ payments: Map<string, { succeeded: number; declined: number }>; app: App }> {
  const app = await createApp(loadConfig({ SVC_DATA_DIR: dataDir, LOG_LEVEL: 'silent' }), { logger: silent });
  t.after(() => app.close());
  const rows = await app.context({ actor: 'cli:test' }).sql<{ order_id: string; succeeded: number; declined: number }>(
    `select order_id, count(*) filter (where status = 'succeeded')::int as succeeded, count(*) filter (where status = 'declined')::int as declined
       from payments group by order_id`,
    [],
  );
  return { payments: new Map(rows.map((r) => [r.order_id, { succeeded: r.succeeded, declined: r.declined }])), app };
}

interface WorkerProcess {
  child: ChildProcess;
  stderr(): string;
  /** The message ids the payments consumer has processed (the runner logs each at debug level). */
  processed(): string[];
  /** SIGTERM, then its exit code must be 0. */
  stop(): Promise<void>;
}

/** Starts `svc worker` (no AMQP_URL: the in-process pipeline) and resolves once it has started; killed when the test ends. */
async function startWorker(t: TestContext, env: Record<string, string>): Promise<WorkerProcess> {
  const child = spawn(process.execPath, longRunningArgs({}, ['worker', '--health-port', '0']), {
    cwd: ROOT,
    env: { ...withoutServices(), ...env, LOG_LEVEL: 'debug' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  child.stdout.resume();
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  await waitFor(() => /"msg":"worker started/.test(stderr) || child.exitCode !== null, 60_000, 'svc worker to start');
  assert.equal(child.exitCode, null, stderr);
  return {
    child,
    stderr: () => stderr,
    processed: () =>
      logLines(stderr)
        .filter((l) => l.consumer === 'payments' && l.msg === 'processed')
        .map((l) => l.messageId!),
    async stop() {
      child.kill('SIGTERM');
      assert.equal(await exited, 0, stderr);
    },
  };
}

/** This process's environment without the settings that would switch svc off the embedded default. */
function withoutServices(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const key of ['AMQP_URL', 'DATABASE_URL', 'STRIPE_SECRET_KEY', 'STRIPE_API_URL']) delete env[key];
  return env;
}

const logLines = (stderr: string) =>
  stderr
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as { msg: string; consumer?: string; messageId?: string });

// Each test has its own data folder or database, fakes and svc processes, and some mostly wait (one
// for the retry ladder's 10 s step): two run at once.
describe('the in-process pipeline', { concurrency: 2 }, () => {
  test(
    'on a fresh data folder, svc serve alone takes an order to completed (pm_card_visa) with a confirmation email and a receipt to download, and a declined card to failed with a payment-failure email, in-process',
    { timeout: 180_000 },
    async (t) => {
      const dataDir = join(tempDir(t), 'data');
      const env = { SVC_DATA_DIR: dataDir, AMQP_URL: undefined };
      const serve = await svcServe(t, ['--port', '0', '--host', '127.0.0.1'], { env: { ...env, LOG_LEVEL: 'info' } });
      const shop = await openShop(serve, env);

      const paid = await shop.order('pm_card_visa', 2);
      const declined = await shop.order('pm_card_chargeDeclined', 3);
      assert.equal(await shop.decided(paid), 'completed');
      assert.equal(await shop.decided(declined), 'failed');
      // The declined order's stock went back: 100 - 2.
      const product = await shop.call('GET', `/products/${shop.productId}`);
      assert.equal(product.body.stock, 98, JSON.stringify(product.body));

      const announced = logLines(serve.stderr()).filter((l) => l.msg.startsWith('events dispatched in-process (no AMQP_URL)'));
      assert.equal(announced.length, 1, serve.stderr());

      // The emails: .eml files under <data>/mail/ (no SENDGRID_API_KEY), one per decided order.
      const mailDir = join(dataDir, 'mail');
      const confirmationFile = `order-confirmation-${paid}.eml`;
      const failureFile = `payment-failed-${declined}.eml`;
      await waitFor(() => existsSync(join(mailDir, confirmationFile)) && existsSync(join(mailDir, failureFile)), 30_000, 'the two emails');
      assert.deepEqual(readdirSync(mailDir).sort(), [confirmationFile, failureFile]);
      const confirmation = parseEml(readFileSync(join(mailDir, confirmationFile), 'utf8'));
      assert.equal(confirmation.headers.subject, `Your order ${paid} is confirmed`);
      assert.equal(confirmation.headers.to, `"Ada \\"<b>Lovelace</b>\\" & Co" <ada@example.com>`);
      const html = confirmation.parts.find((p) => p.type === 'text/html')!.body;
      assert.ok(html.includes('Ada &quot;&lt;b&gt;Lovelace&lt;/b&gt;&quot; &amp; Co'), html);
      assert.ok(!html.includes('<b>Lovelace'), html);
      const text = confirmation.parts.find((p) => p.type === 'text/plain')!.body;
      assert.ok(text.includes(`Hello ${CUSTOMER},`), text);
      // The receipt link is the API's route on the address svc serve listens on (no PUBLIC_URL set).
      assert.ok(text.includes(`Your receipt (PDF): ${serve.url}/api/v1/orders/${paid}/receipt`), text);
      const failure = parseEml(readFileSync(join(mailDir, failureFile), 'utf8'));
      assert.equal(failure.headers.subject, `The payment for your order ${declined} failed`);
      assert.match(failure.headers.to!, /<ada@example\.com>$/);
      assert.match(failure.parts.find((p) => p.type === 'text/plain')!.body, /your card was declined by its issuer/);

      // The receipt: the API hands out a link on svc serve, which downloads the PDF; the declined order has none.
      let receipt = await shop.call('GET', `/orders/${paid}/receipt`);
      await waitFor(async () => (receipt = await shop.call('GET', `/orders/${paid}/receipt`)).status === 200, 30_000, 'the receipt');
      const { url, expiresAt } = receipt.body as { url: string; expiresAt: string };
      assert.ok(url.startsWith(`${serve.url}/`), url);
      assert.ok(Date.parse(expiresAt) > Date.now(), expiresAt);
      const download = await fetch(url);
      assert.equal(download.status, 200);
      assert.equal(download.headers.get('content-type'), 'application/pdf');
      const pdf = Buffer.from(await download.arrayBuffer());
      assert.equal(pdf.subarray(0, 5).toString('latin1'), '%PDF-');
      assert.equal((await shop.call('GET', `/orders/${declined}/receipt`)).status, 404);

      await stopServe(serve);
      const { payments, app } = await paymentsIn(t, dataDir);
      assert.deepEqual(payments.get(paid), { succeeded: 1, declined: 0 });
      assert.deepEqual(payments.get(declined), { succeeded: 0, declined: 1 });
      const files = await app
        .context({ actor: 'cli:test' })
        .sql<{ order_id: string; size: number; sha256: string }>(`select order_id, size, sha256 from files where kind = 'receipt'`, []);
      assert.deepEqual(files, [{ order_id: paid, size: pdf.length, sha256: createHash('sha256').update(pdf).digest('hex') }]);
    },
  );

  test(
    'svc serve killed (SIGKILL) while payments wait for their retry: started again on the same folder, every order is decided once, with one charge each',
    { timeout: 240_000 },
    async (t) => {
      const stripe = await startFakeStripe();
      t.after(() => stripe.close());
      const dataDir = await migratedDataDir(tempDir(t));
      const env = { SVC_DATA_DIR: dataDir, STRIPE_SECRET_KEY: FAKE_STRIPE_SECRET_KEY, STRIPE_API_URL: stripe.url };
      const first = await svcServe(t, ['--port', '0', '--host', '127.0.0.1'], { env });
      const shop = await openShop(first, env);
      // Stripe rate-limits the first two attempts of each charge (nothing done, the same key reusable):
      // each order's delivery then waits 1 s, then 10 s in the table for its third attempt.
      const ORDERS = 4;
      stripe.rateLimitNext({ route: 'POST /v1/payment_intents', times: 2 * ORDERS });
      const orders: string[] = [];
      for (let i = 0; i < ORDERS; i++) orders.push(await shop.order(i === ORDERS - 1 ? 'pm_card_chargeDeclined' : 'pm_card_visa'));
      const limited = () => stripe.requests.filter((r) => r.route === 'POST /v1/payment_intents' && r.status === 429).length;
      await waitFor(() => limited() === 2 * ORDERS, 60_000, 'two rate-limited attempts per order');
      for (const id of orders) assert.equal(await shop.status(id), 'pending', 'nothing decided before the kill');

      first.child.kill('SIGKILL');
      await first.exited;
      const second = await svcServe(t, ['--port', '0', '--host', '127.0.0.1'], { env });
      const again = shopAt(second.url, await login(second.url, 'ada@example.com'));
      const statuses = [];
      for (const id of orders) statuses.push(await again.decided(id, 60_000));
      assert.deepEqual(statuses, ['completed', 'completed', 'completed', 'failed']);
      for (const [i, id] of orders.entries()) {
        assert.equal(stripe.chargesForOrder(id).length, i === ORDERS - 1 ? 0 : 1, `one successful charge for ${id}`);
      }
      await stopServe(second);
      const { payments } = await paymentsIn(t, dataDir);
      for (const [i, id] of orders.entries()) {
        assert.deepEqual(payments.get(id), i === ORDERS - 1 ? { succeeded: 0, declined: 1 } : { succeeded: 1, declined: 0 }, id);
      }
    },
  );

  test(
    'SIGTERM while a charge is in flight: svc serve stops taking requests, lets the charge finish and be recorded, then exits 0',
    { timeout: 180_000 },
    async (t) => {
      const stripe = await startFakeStripe();
      t.after(() => stripe.close());
      const dataDir = await migratedDataDir(tempDir(t));
      const env = { SVC_DATA_DIR: dataDir, STRIPE_SECRET_KEY: FAKE_STRIPE_SECRET_KEY, STRIPE_API_URL: stripe.url };
      const serve = await svcServe(t, ['--port', '0', '--host', '127.0.0.1'], { env });
      const shop = await openShop(serve, env);
      const held = stripe.holdNext({ route: 'POST /v1/payment_intents' });
      const order = await shop.order('pm_card_visa');
      await held.arrived;
      serve.child.kill('SIGTERM');
      // The API is closed (new connections refused) while the charge is still held.
      await waitFor(
        () =>
          fetch(`${serve.url}/health/live`).then(
            () => false,
            () => true,
          ),
        30_000,
        'the listener to close',
      );
      assert.equal(serve.child.exitCode, null, 'still running: the delivery in flight is not finished');
      held.release();
      const { code } = await serve.exited;
      assert.equal(code, 0, serve.stderr());
      assert.equal(stripe.chargesForOrder(order).length, 1);
      const app = await createApp(loadConfig({ SVC_DATA_DIR: dataDir, LOG_LEVEL: 'silent' }), { logger: silent });
      t.after(() => app.close());
      const sql = app.context({ actor: 'cli:test' }).sql;
      assert.deepEqual(await sql('select status from orders where id = $1', [order]), [{ status: 'completed' }]);
      assert.deepEqual(await sql(`select consumer from event_deliveries where consumer = 'payments'`, []), [], 'acknowledged before the exit');
    },
  );

  test(
    'svc worker without AMQP_URL runs the in-process pipeline on an embedded folder of its own, and refuses one svc serve holds (exit 6)',
    { timeout: 180_000 },
    async (t) => {
      const dataDir = await migratedDataDir(tempDir(t));
      // Orders placed while nothing dispatched events (svc serve not running): they wait in the outbox.
      const orders = await (async () => {
        const app = await createApp(loadConfig({ SVC_DATA_DIR: dataDir, LOG_LEVEL: 'silent' }), { logger: silent });
        try {
          await app.migrations.prepareSchema({ orElse: 'migrate' });
          const ctx = app.context({ actor: 'cli:test' });
          const user = await app.users.create(ctx, { email: 'ada@example.com', name: 'Ada', role: 'user' });
          await app.products.create(ctx, { sku: 'MUG-1', name: 'Mug', price: { amount: 1250, currency: 'USD' }, stock: 10 });
          const placed = [];
          for (const paymentMethod of ['pm_card_visa', 'pm_card_authenticationRequired']) {
            placed.push((await app.orders.create(ctx, { userId: user.id, paymentMethod, items: [{ sku: 'MUG-1', quantity: 1 }] })).order.id);
          }
          return placed;
        } finally {
          await app.close();
        }
      })();
      const worker = await startWorker(t, { SVC_DATA_DIR: dataDir });
      assert.match(worker.stderr(), /events dispatched in-process \(no AMQP_URL\)/);
      await waitFor(() => worker.processed().length >= orders.length || worker.child.exitCode !== null, 60_000, 'both orders paid or failed');
      assert.equal(worker.processed().length, orders.length, worker.stderr());
      // The worker holds the folder: read it after it stopped.
      await worker.stop();
      const app = await createApp(loadConfig({ SVC_DATA_DIR: dataDir, LOG_LEVEL: 'silent' }), { logger: silent });
      try {
        const rows = await app.context({ actor: 'cli:test' }).sql<{ id: string; status: string }>('select id, status from orders', []);
        assert.deepEqual(
          orders.map((id) => rows.find((r) => r.id === id)?.status),
          ['completed', 'failed'],
        );
      } finally {
        await app.close();
      }

      const serve = await svcServe(t, ['--port', '0', '--host', '127.0.0.1'], { env: { SVC_DATA_DIR: dataDir } });
      const refused = await svc(['worker', '--health-port', '0'], { env: { SVC_DATA_DIR: dataDir, AMQP_URL: undefined } });
      assert.equal(refused.code, 6, refused.stderr);
      assert.match(refused.stderr, new RegExp(`svc serve \\(pid ${serve.child.pid}\\) .*already dispatches its events in-process`));
      await stopServe(serve);
    },
  );

  test('two svc worker without AMQP_URL on one PostgreSQL database share the orders: each is paid once', { timeout: 180_000 }, async (t) => {
    const db = await migratedDatabase(t);
    // One folder for the stand-ins (simulated payments, mail, files) of both workers, as on one host.
    const env = { DATABASE_URL: db, SVC_DATA_DIR: join(tempDir(t), 'data') };
    const app = await createApp(loadConfig({ ...env, LOG_LEVEL: 'silent' }), { logger: silent });
    t.after(() => app.close());
    const ctx = app.context({ actor: 'cli:test' });
    const ada = await app.users.create(ctx, { email: 'ada@example.com', name: 'Ada' });
    await app.products.create(ctx, { sku: 'TEA-1', name: 'Tea', price: { amount: 450, currency: 'USD' }, stock: 100 });
    const workers = [await startWorker(t, env), await startWorker(t, env)];
    const orders: string[] = [];
    for (let i = 0; i < 20; i++) {
      const paymentMethod = i % 4 === 3 ? 'pm_card_chargeDeclined' : 'pm_card_visa';
      orders.push(
        (await app.orders.create(app.context({ actor: ada.id }), { userId: ada.id, items: [{ sku: 'TEA-1', quantity: 1 }], paymentMethod })).order.id,
      );
    }
    const undecided = async () => (await query<{ n: number }>(db, `select count(*)::int as n from orders where status in ('pending', 'processing')`))[0]!.n;
    await waitFor(async () => (await undecided()) === 0, 60_000, 'every order decided');
    // A worker logs a message processed after its commit decided the order and it was acknowledged.
    await waitFor(() => workers.flatMap((w) => w.processed()).length >= orders.length, 30_000, 'every payment logged as processed');
    const processed = workers.flatMap((w) => w.processed());
    assert.equal(processed.length, orders.length, 'each order.created processed once, by one of the workers');
    assert.equal(new Set(processed).size, orders.length);
    const payments = await query<{ order_id: string; n: number }>(db, `select order_id, count(*)::int as n from payments group by order_id`);
    assert.equal(payments.length, orders.length);
    assert.ok(
      payments.every((p) => p.n === 1),
      'one payment attempt per order',
    );
    assert.deepEqual(await query(db, `select count(*)::int as n from event_deliveries where consumer = 'payments'`), [{ n: 0 }]);
    await Promise.all(workers.map((w) => w.stop()));
  });

  test(
    'svc serve bound to every interface (HOST=0.0.0.0) hands out links on 127.0.0.1, and warns once that PUBLIC_URL is not set',
    { timeout: 120_000 },
    async (t) => {
      let out = '';
      const logger = createLoggerTo(
        'warn',
        new Writable({
          write(chunk: Buffer, _enc, done) {
            out += chunk.toString();
            done();
          },
        }),
      );
      const running = await startServer(loadConfig({ SVC_DATA_DIR: await migratedDataDir(tempDir(t)), HOST: '0.0.0.0', PORT: '0', LOG_LEVEL: 'warn' }), {
        overrides: { logger },
      });
      t.after(() => running.stop());
      const port = new URL(running.url).port;
      assert.equal(running.app.publicUrl(), `http://127.0.0.1:${port}`);
      const { url } = await running.app.files.signedUrl('receipts/ord_x.pdf', 60);
      assert.ok(url.startsWith(`http://127.0.0.1:${port}/`), url);
      const warnings = logLines(out).filter((l) => l.msg.startsWith('PUBLIC_URL is not set and HOST=0.0.0.0'));
      assert.equal(warnings.length, 1, out);
      await running.stop();
    },
  );
});
