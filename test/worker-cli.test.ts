import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createServer, type AddressInfo } from 'node:net';
import { once } from 'node:events';
import { svc, tempDir } from './helpers/cli.js';
import { dropDatabase, emptyDatabase, migratedDatabase, query } from './helpers/db.js';
import { AMQP_URL, insertOutbox, rabbitProxy, silent, testPrefix, waitFor } from './helpers/rabbit.js';
import { removeExchangeAfter, svcWorker } from './helpers/worker.js';
import { loadConfig } from '../src/config.js';
import { createApp } from '../src/app.js';

// svc worker as a user runs it: the built binary (npm run build first), a separate process.

/** A closed port on loopback: RabbitMQ "unreachable". */
const CLOSED_AMQP_URL = 'amqp://guest:guest@127.0.0.1:1';

function processGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return false;
  } catch {
    return true;
  }
}

// Each test has its own database, broker prefix and svc worker processes, which mostly wait (for a
// start-up, a broker, a poll): three run at once.
describe('svc worker', { concurrency: 3 }, () => {
  test('svc worker --help lists its flags, with examples', async () => {
    const res = await svc(['worker', '--help']);
    assert.equal(res.code, 0, res.stderr);
    for (const flag of ['--concurrency', '--queues', '--[no-]relay', '--health-port', '--json'])
      assert.ok(res.stdout.includes(flag), `no ${flag} in:\n${res.stdout}`);
    assert.match(res.stdout, /EXAMPLES[\s\S]*svc worker --queues/);
  });

  test('RabbitMQ unreachable at start: exit 6 naming RabbitMQ and AMQP_URL', async (t) => {
    const res = await svc(['worker', '--health-port', '0'], {
      env: { DATABASE_URL: await migratedDatabase(t), AMQP_URL: CLOSED_AMQP_URL, SVC_DATA_DIR: join(tempDir(t), 'data') },
    });
    assert.equal(res.code, 6, res.stderr);
    assert.match(res.stderr, /RabbitMQ is unreachable.*AMQP_URL/);
  });

  test('PostgreSQL unreachable at start: exit 6 naming DATABASE_URL', async (t) => {
    const res = await svc(['worker', '--health-port', '0'], {
      env: { DATABASE_URL: 'postgres://svc@127.0.0.1:1/svc', AMQP_URL, SVC_DATA_DIR: join(tempDir(t), 'data') },
    });
    assert.equal(res.code, 6, res.stderr);
    assert.match(res.stderr, /DATABASE_URL/);
  });

  test('a --health-port taken or a HOST not of this machine: exit 6 naming what to change', async (t) => {
    const taken = createServer();
    t.after(() => taken.close());
    taken.listen(0, '127.0.0.1');
    await once(taken, 'listening');
    const { port } = taken.address() as AddressInfo;
    const env = { DATABASE_URL: await migratedDatabase(t), AMQP_URL, AMQP_PREFIX: testPrefix(), SVC_DATA_DIR: join(tempDir(t), 'data') };
    removeExchangeAfter(t, env.AMQP_PREFIX);
    const inUse = await svc(['worker', '--health-port', String(port), '--json'], { env });
    assert.equal(inUse.code, 6, inUse.stderr);
    assert.match(
      inUse.json().error.message,
      new RegExp(
        `^cannot listen on 127\\.0\\.0\\.1:${port} for the health endpoints \\(EADDRINUSE\\): .*choose another --health-port \\(0 picks a free one\\)$`,
      ),
    );
    const elsewhere = await svc(['worker', '--health-port', '0', '--json'], { env: { ...env, HOST: 'nosuchhost.invalid' } });
    assert.equal(elsewhere.code, 6, elsewhere.stderr);
    assert.match(elsewhere.json().error.message, /\(E\w+\): nosuchhost\.invalid is not an address of this machine: set HOST to one of its addresses/);
    assert.doesNotMatch(elsewhere.json().error.message, /--health-port/);
  });

  test('pending migrations on PostgreSQL: exit 4', async (t) => {
    const prefix = testPrefix();
    removeExchangeAfter(t, prefix);
    const res = await svc(['worker', '--health-port', '0'], {
      env: { DATABASE_URL: await emptyDatabase(t), AMQP_URL, AMQP_PREFIX: prefix, SVC_DATA_DIR: join(tempDir(t), 'data') },
    });
    assert.equal(res.code, 4, res.stderr);
    assert.match(res.stderr, /pending.*svc migrate/);
  });

  test('--queues with an unknown consumer: exit 2 listing the known ones', async (t) => {
    const prefix = testPrefix();
    removeExchangeAfter(t, prefix);
    const res = await svc(['worker', '--queues', 'nope', '--health-port', '0'], {
      env: { DATABASE_URL: await migratedDatabase(t), AMQP_URL, AMQP_PREFIX: prefix },
    });
    assert.equal(res.code, 2, res.stderr);
    assert.match(res.stderr, /unknown consumer\(s\) nope; the known ones are/);
    // Checked before any service is looked at: a wrong name is exit 2 whatever else is wrong.
    const unreachable = await svc(['worker', '--queues', 'payments,nope', '--json'], {
      env: { DATABASE_URL: 'postgres://svc@127.0.0.1:1/svc', AMQP_URL: CLOSED_AMQP_URL, SVC_DATA_DIR: join(tempDir(t), 'data') },
    });
    assert.equal(unreachable.code, 2, unreachable.stderr);
    assert.deepEqual(unreachable.json<{ error: { details: unknown } }>().error.details, { unknown: ['nope'], known: ['payments', 'receipts', 'mail'] });
  });

  test('svc worker relays the outbox to RabbitMQ, answers /health/ready, and stops on SIGTERM with exit 0', { timeout: 60_000 }, async (t) => {
    const db = await migratedDatabase(t);
    const prefix = testPrefix();
    removeExchangeAfter(t, prefix);
    const worker = await svcWorker(t, ['--health-port', '0', '--json'], { DATABASE_URL: db, AMQP_URL, AMQP_PREFIX: prefix });
    assert.match(worker.stderr(), /relay on/);

    const live = await fetch(`${worker.healthUrl}/health/live`);
    assert.equal(live.status, 200);
    assert.deepEqual(await live.json(), { status: 'ok' });
    const ready = await fetch(`${worker.healthUrl}/health/ready`);
    assert.equal(ready.status, 200);
    assert.deepEqual(await ready.json(), { status: 'ok', checks: { database: 'ok', rabbitmq: 'ok' } });

    const [id] = await insertOutbox(db, 1);
    const status = async () => (await query<{ status: string }>(db, 'select status from outbox_events where id = $1', [id]))[0]?.status;
    await waitFor(async () => (await status()) === 'published', 15_000, 'the outbox row to be published');

    worker.kill('SIGTERM');
    assert.deepEqual(await worker.exited, { code: 0, signal: null });
    assert.deepEqual(JSON.parse(worker.stdout()), { stopped: 'SIGTERM', drained: true });
    assert.match(worker.stderr(), /SIGTERM: stopping/);
    assert.ok(processGone(worker.pid));
    await assert.rejects(fetch(`${worker.healthUrl}/health/live`));
  });

  test(
    'svc worker --no-relay leaves the outbox alone; /health/ready answers 503 naming RabbitMQ, then the database, when they go',
    { timeout: 60_000 },
    async (t) => {
      const db = await migratedDatabase(t);
      const prefix = testPrefix();
      removeExchangeAfter(t, prefix);
      const broker = await rabbitProxy(t);
      const worker = await svcWorker(t, ['--health-port', '0', '--no-relay'], { DATABASE_URL: db, AMQP_URL: broker.url, AMQP_PREFIX: prefix });
      assert.match(worker.stderr(), /relay off/);
      const [id] = await insertOutbox(db, 1);
      const readiness = async () => {
        const res = await fetch(`${worker.healthUrl}/health/ready`);
        return { status: res.status, body: (await res.json()) as { status: string; detail?: string; checks?: Record<string, string> } };
      };
      assert.equal((await readiness()).status, 200);

      await broker.down();
      await waitFor(async () => (await readiness()).status === 503, 10_000, '/health/ready to answer 503');
      const down = await readiness();
      assert.match(down.body.detail!, /^not ready: rabbitmq \(RabbitMQ at .* is not connected/);
      assert.equal(down.body.checks!.database, 'ok');
      await broker.up();
      await waitFor(async () => (await readiness()).status === 200, 15_000, 'RabbitMQ to be back');

      // By now a relay would have published it (it polls every second, and RabbitMQ came back).
      assert.equal((await query<{ status: string }>(db, 'select status from outbox_events where id = $1', [id]))[0]?.status, 'pending');

      await dropDatabase(new URL(db).pathname.slice(1));
      await waitFor(async () => (await readiness()).status === 503, 10_000, '/health/ready to answer 503');
      assert.match((await readiness()).body.detail!, /^not ready: database \(unreachable\)/);

      worker.kill('SIGINT');
      assert.deepEqual(await worker.exited, { code: 0, signal: null });
    },
  );

  test(
    'orders placed while svc worker runs are paid: a good card completes its order with a receipt and a confirmation email, a declined one fails it with a failure email and its stock goes back',
    { timeout: 90_000 },
    async (t) => {
      const db = await migratedDatabase(t);
      const prefix = testPrefix();
      removeExchangeAfter(t, prefix);
      const app = await createApp(loadConfig({ DATABASE_URL: db, LOG_LEVEL: 'silent' }), { logger: silent });
      t.after(() => app.close());
      const ctx = app.context({ actor: 'cli:test' });
      const ada = await app.users.create(ctx, { email: 'ada@example.com', name: 'Ada' });
      await app.products.create(ctx, { sku: 'TEA-1', name: 'Tea', price: { amount: 450, currency: 'USD' }, stock: 10 });

      const dataDir = join(tempDir(t), 'data');
      const worker = await svcWorker(t, ['--health-port', '0'], {
        DATABASE_URL: db,
        AMQP_URL,
        AMQP_PREFIX: prefix,
        SVC_DATA_DIR: dataDir,
        PUBLIC_URL: 'https://shop.example.com',
      });
      assert.match(worker.stderr(), /consumers payments, receipts, mail/);
      const place = async (paymentMethod: string) =>
        (await app.orders.create(app.context({ actor: ada.id }), { userId: ada.id, items: [{ sku: 'TEA-1', quantity: 2 }], paymentMethod })).order.id;
      const paid = await place('pm_card_visa');
      const declined = await place('pm_card_chargeDeclined');

      const statusOf = async (id: string) => (await query<{ status: string }>(db, 'select status from orders where id = $1', [id]))[0]?.status;
      await waitFor(async () => (await statusOf(paid)) === 'completed' && (await statusOf(declined)) === 'failed', 30_000, 'both orders to be decided');
      const payments = await query<{ order_id: string; status: string; amount: number; failure_code: string | null }>(
        db,
        'select order_id, status, amount, failure_code from payments order by order_id',
      );
      assert.deepEqual(
        payments.map((p) => [p.order_id, p.status, Number(p.amount), p.failure_code]).sort(),
        [
          [paid, 'succeeded', 900, null],
          [declined, 'declined', 900, 'card_declined'],
        ].sort(),
      );
      // The declined order's two teas are back on the shelf; the paid one's are sold.
      assert.deepEqual(await query(db, "select stock from products where sku = 'TEA-1'"), [{ stock: 8 }]);
      const events = await query<{ type: string; aggregate_id: string }>(
        db,
        "select type, aggregate_id from outbox_events where type in ('order.completed', 'order.failed')",
      );
      assert.deepEqual(events.map((e) => `${e.type} ${e.aggregate_id}`).sort(), [`order.completed ${paid}`, `order.failed ${declined}`].sort());

      // The paid order's receipt in the local file store, recorded with its size; one email per order as .eml files.
      await waitFor(async () => (await query(db, 'select 1 from files where order_id = $1', [paid])).length === 1, 30_000, 'the receipt');
      const [file] = await query<{ key: string; size: string }>(db, 'select key, size from files');
      const pdf = readFileSync(join(dataDir, 'files', file!.key));
      assert.equal(pdf.subarray(0, 5).toString('latin1'), '%PDF-');
      assert.equal(pdf.length, Number(file!.size));
      const mails = () => (existsSync(join(dataDir, 'mail')) ? readdirSync(join(dataDir, 'mail')).filter((f) => f.endsWith('.eml')) : []);
      await waitFor(() => mails().length === 2, 30_000, 'two emails');
      assert.deepEqual(mails().sort(), [`order-confirmation-${paid}.eml`, `payment-failed-${declined}.eml`].sort());
      assert.match(readFileSync(join(dataDir, 'mail', `order-confirmation-${paid}.eml`), 'utf8'), /^To: Ada <ada@example\.com>$/m);

      worker.kill('SIGTERM');
      assert.deepEqual(await worker.exited, { code: 0, signal: null });
    },
  );
});
