import { spawn } from 'node:child_process';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import amqp from 'amqplib';
import { RabbitMq } from '../../src/adapters/rabbitmq.js';
import { createApp, type App } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { DEFAULT_RETRY_DELAYS_MS } from '../../src/worker/consumer.js';
import { startWorker, type RunningWorker, type WorkerOptions } from '../../src/worker/worker.js';
import { FAKE_SENDGRID_API_KEY, startFakeSendGrid, type FakeSendGrid } from '../fakes/sendgrid.js';
import { FAKE_STRIPE_SECRET_KEY, startFakeStripe, type FakeStripe } from '../fakes/stripe.js';
import { longRunningArgs, ROOT, tempDir } from './cli.js';
import { migratedDatabase, query } from './db.js';
import { AMQP_URL, silent, testPrefix, waitFor } from './rabbit.js';

export interface WorkerProcess {
  /** The health endpoints' base URL, from the "worker started" log line. */
  healthUrl: string;
  pid: number;
  kill(signal: NodeJS.Signals): void;
  stdout(): string;
  stderr(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves when stderr has a line matching pattern (already printed or still to come). */
  waitForStderr(pattern: RegExp): Promise<void>;
}

/**
 * Starts `svc worker ARGS` (the built binary, LOG_LEVEL info) and resolves once it logs "worker
 * started"; rejects with its output when it exits first. Killed (SIGKILL) when the test ends if it
 * still runs. A key of `env` set to undefined is left out (not inherited from this process).
 */
export function svcWorker(t: TestContext, args: string[], env: Record<string, string | undefined>): Promise<WorkerProcess> {
  const childEnv: Record<string, string> = {};
  for (const [k, v] of Object.entries({ ...process.env, SVC_DATA_DIR: join(tempDir(t), 'data'), ...env, LOG_LEVEL: 'info' }))
    if (v !== undefined) childEnv[k] = v;
  const child = spawn(process.execPath, longRunningArgs({}, ['worker', ...args]), { cwd: ROOT, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  const watchers: { pattern: RegExp; resolve: () => void }[] = [];
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal })),
  );
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return new Promise((resolve, reject) => {
    let started = false;
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
      for (const w of [...watchers]) {
        if (w.pattern.test(stderr)) {
          watchers.splice(watchers.indexOf(w), 1);
          w.resolve();
        }
      }
      const m = started ? null : /"msg":"worker started[^"]*health on (http:\/\/[^"\s]+)"/.exec(stderr);
      if (!m) return;
      started = true;
      resolve({
        healthUrl: m[1]!,
        pid: child.pid!,
        kill: (s) => child.kill(s),
        stdout: () => stdout,
        stderr: () => stderr,
        exited,
        waitForStderr: (pattern) =>
          pattern.test(stderr) ? Promise.resolve() : new Promise<void>((resolveWait) => watchers.push({ pattern, resolve: resolveWait })),
      });
    });
    child.on('error', reject);
    void exited.then(({ code, signal }) => reject(new Error(`svc worker exited (${code ?? signal}) before starting:\n${stdout}\n${stderr}`)));
  });
}

/**
 * Deletes what svc worker declared on a test's prefix when the test ends: its consumers' queues (with
 * the default retry delays, or those given) and the exchange.
 */
export function removeExchangeAfter(t: TestContext, prefix: string, retryDelaysMs: readonly number[] = DEFAULT_RETRY_DELAYS_MS): void {
  t.after(async () => {
    const rabbit = await RabbitMq.connect(AMQP_URL, { logger: silent, prefix });
    const conn = await amqp.connect(AMQP_URL);
    try {
      const ch = await conn.createChannel();
      // Deleting a queue that was never declared succeeds.
      for (const name of ['payments', 'receipts', 'mail']) {
        const q = rabbit.queues({ name, retryDelaysMs });
        for (const queue of [q.work, q.dead, ...q.retries.map((r) => r.queue)]) await ch.deleteQueue(queue);
      }
      await ch.deleteExchange(`${prefix}.events`);
    } finally {
      await conn.close();
      await rabbit.close();
    }
  });
}

export interface Shop {
  db: string;
  prefix: string;
  app: App;
  fake: FakeStripe;
  mail: FakeSendGrid;
  /**
   * The environment of a worker on this shop's database, broker prefix (AMQP_URL undefined with the
   * database transport), Stripe and SendGrid fakes and data folder (receipts).
   */
  env: Record<string, string | undefined>;
  /** Places `count` orders of one tea each (paid with pm_card_visa), `parallel` at a time; their ids. */
  place(count: number, parallel?: number): Promise<string[]>;
  /**
   * Starts svc worker in this process (startWorker) on the shop, with the shop's retry delays; stopped
   * when the test ends, before the fake, the database and the queues go.
   */
  worker(options?: Partial<WorkerOptions>, env?: Record<string, string>): Promise<RunningWorker>;
}

/**
 * A database with a customer and a product, a RabbitMQ prefix, Stripe and SendGrid fakes and a data
 * folder (receipts on local disk) of the test's own:
 * for svc worker processes (`env`) or workers in this process (`worker()`). Short `retryDelaysMs`
 * are for the workers in this process (a process uses the default ones). `transport: 'database'`
 * leaves AMQP_URL out of the environment: the workers use the in-process queue (event_deliveries).
 */
export async function shop(t: TestContext, options: { retryDelaysMs?: readonly number[]; transport?: 'rabbitmq' | 'database' } = {}): Promise<Shop> {
  const workers: RunningWorker[] = [];
  t.after(() => Promise.all(workers.map((w) => w.stop())));
  const db = await migratedDatabase(t);
  const prefix = testPrefix();
  const rabbitmq = options.transport !== 'database';
  if (rabbitmq) removeExchangeAfter(t, prefix, options.retryDelaysMs);
  const fake = await startFakeStripe();
  t.after(() => fake.close());
  const mail = await startFakeSendGrid();
  t.after(() => mail.close());
  const app = await createApp(loadConfig({ DATABASE_URL: db, LOG_LEVEL: 'silent' }), { logger: silent });
  t.after(() => app.close());
  const ctx = app.context({ actor: 'cli:test' });
  const ada = await app.users.create(ctx, { email: 'ada@example.com', name: 'Ada' });
  await app.products.create(ctx, { sku: 'TEA-1', name: 'Tea', price: { amount: 450, currency: 'USD' }, stock: 10_000 });
  const placeOne = async () =>
    (await app.orders.create(app.context({ actor: ada.id }), { userId: ada.id, items: [{ sku: 'TEA-1', quantity: 1 }], paymentMethod: 'pm_card_visa' })).order
      .id;
  const shopEnv = {
    DATABASE_URL: db,
    ...(rabbitmq ? { AMQP_URL, AMQP_PREFIX: prefix } : { AMQP_URL: undefined }),
    STRIPE_SECRET_KEY: FAKE_STRIPE_SECRET_KEY,
    STRIPE_API_URL: fake.url,
    SENDGRID_API_KEY: FAKE_SENDGRID_API_KEY,
    SENDGRID_API_URL: mail.url,
    MAIL_FROM: 'Shop <orders@shop.example>',
    PUBLIC_URL: 'https://shop.example',
    SVC_DATA_DIR: join(tempDir(t), 'data'),
  };
  return {
    db,
    prefix,
    app,
    fake,
    mail,
    env: shopEnv,
    async place(count, parallel = 8) {
      const ids: string[] = [];
      for (let i = 0; i < count; i += parallel) ids.push(...(await Promise.all(Array.from({ length: Math.min(parallel, count - i) }, placeOne))));
      return ids;
    },
    async worker(workerOptions = {}, env = {}) {
      const config = loadConfig({ ...shopEnv, LOG_LEVEL: 'silent', ...env });
      const worker = await startWorker(config, {
        concurrency: 10,
        relay: true,
        healthPort: 0,
        ...(options.retryDelaysMs ? { retryDelaysMs: options.retryDelaysMs } : {}),
        ...workerOptions,
        overrides: { logger: silent, ...workerOptions.overrides },
      });
      workers.push(worker);
      return worker;
    },
  };
}

export const statusCounts = async (db: string) =>
  Object.fromEntries(
    (await query<{ status: string; n: number }>(db, 'select status, count(*)::int as n from orders group by status')).map((r) => [r.status, r.n]),
  ) as Record<string, number | undefined>;

/**
 * Every order completed, paid exactly once at Stripe and in the payments table, announced once, with
 * one receipt and one confirmation email (waits up to 30 s for the receipts and emails, which follow
 * the payment).
 */
export async function assertDoneOnce(s: Shop, orderIds: string[]): Promise<void> {
  assert.deepEqual(await statusCounts(s.db), { completed: orderIds.length });
  for (const id of orderIds) assert.equal(s.fake.chargesForOrder(id).length, 1, `one successful charge at Stripe for ${id}`);
  const payments = await query<{ order_id: string; n: number }>(
    s.db,
    `select order_id, count(*)::int as n from payments where status = 'succeeded' group by order_id having count(*) = 1`,
  );
  assert.equal(payments.length, orderIds.length, 'one succeeded payment row per order');
  const announced = await query<{ n: number }>(s.db, `select count(distinct aggregate_id)::int as n from outbox_events where type = 'order.completed'`);
  const events = await query<{ n: number }>(s.db, `select count(*)::int as n from outbox_events where type = 'order.completed'`);
  assert.deepEqual([announced[0]!.n, events[0]!.n], [orderIds.length, orderIds.length], 'one order.completed per order');

  const receipts = async () => (await query<{ order_id: string }>(s.db, 'select order_id from files')).map((r) => r.order_id);
  const emails = () => s.mail.messages.map((m) => /order-confirmation-(ord_[0-9A-Za-z]+)/.exec(JSON.stringify(m.body))?.[1]);
  await waitFor(async () => (await receipts()).length >= orderIds.length && emails().length >= orderIds.length, 30_000, 'a receipt and an email per order');
  assert.deepEqual((await receipts()).sort(), orderIds.toSorted(), 'one receipt per order');
  assert.deepEqual(emails().sort(), orderIds.toSorted(), 'one confirmation email per order');
}
