import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { createApp } from '../src/app.js';
import { loadConfig, ConfigError } from '../src/config.js';
import { capturedLogs } from './helpers/logs.js';
import { startServer } from '../src/server/serve.js';
import { LocalFileStore } from '../src/adapters/local-file-store.js';
import type { PaymentProvider } from '../src/domain/payments/payment-provider.js';
import type { Mailer } from '../src/domain/notifications/mailer.js';
import type { FileStore } from '../src/domain/files/file-store.js';
import { migratedDatabase } from './helpers/db.js';
import { svc, tempDir } from './helpers/cli.js';
import { testServer, jwksFile } from './helpers/server.js';
import { AMQP_URL, testPrefix } from './helpers/rabbit.js';
import amqp from 'amqplib';

const fakePayments: PaymentProvider = {
  name: 'fake-payments',
  charge: () => Promise.resolve({ status: 'succeeded', reference: 'pi_fake', amount: 1, currency: 'USD' }),
  findCharge: () => Promise.resolve(undefined),
  refund: () => Promise.resolve({ status: 'succeeded', reference: 're_fake', amount: 1 }),
};
const fakeMailer: Mailer = { name: 'fake-mailer', send: () => Promise.resolve({ messageId: '<fake@test>' }) };
const fakeFiles: FileStore = {
  name: 'fake-files',
  put: (key, body) => Promise.resolve({ key, size: body.length, sha256: '' }),
  signedUrl: () => Promise.resolve({ url: 'http://fake/x', expiresAt: new Date() }),
  check: () => Promise.resolve('ok'),
};

test('with nothing configured createApp chooses the embedded stand-ins; overrides replace each port', async (t) => {
  const dataDir = join(tempDir(t), 'data');
  const config = loadConfig({ DATABASE_URL: await migratedDatabase(t), SVC_DATA_DIR: dataDir, LOG_LEVEL: 'silent' });
  const app = await createApp(config);
  t.after(() => app.close());
  assert.deepEqual([app.payments.name, app.mailer.name, app.files.name], ['simulated', 'local', 'local']);
  assert.equal(app.localFiles, app.files);
  assert.equal(app.publisher, undefined);

  const { logger } = capturedLogs('info');
  const replaced = await createApp(config, { logger, payments: fakePayments, mailer: fakeMailer, files: fakeFiles });
  t.after(() => replaced.close());
  assert.equal(replaced.logger, logger);
  assert.equal(replaced.payments, fakePayments);
  assert.equal(replaced.mailer, fakeMailer);
  assert.equal(replaced.files, fakeFiles);
  assert.equal(replaced.localFiles, undefined, 'no local links to serve when files are elsewhere');
});

test('a command never reads the signing keys; svc serve reads them at start-up and stops there when they are missing', async (t) => {
  const dir = tempDir(t);
  const config = loadConfig({ DATABASE_URL: await migratedDatabase(t), SVC_DATA_DIR: join(dir, 'data'), LOG_LEVEL: 'silent', PORT: '0' });
  // On PostgreSQL without JWT_KEYS_FILE: fine for a command that signs nothing …
  const app = await createApp(config);
  t.after(() => app.close());
  const users = await app.users.list(app.context({ actor: 'cli:test' }), { limit: 5 });
  assert.deepEqual(users.data, []);
  // … and the error names the key once something needs a token.
  await assert.rejects(app.tokens.sign({ sub: 'usr_x', role: 'user' }), (err: unknown) => err instanceof ConfigError && err.key === 'JWT_KEYS_FILE');
  await assert.rejects(startServer(config), (err: unknown) => err instanceof ConfigError && err.key === 'JWT_KEYS_FILE');
});

test('a configured service is never replaced by its embedded stand-in', async (t) => {
  const config = loadConfig({
    DATABASE_URL: await migratedDatabase(t),
    SVC_DATA_DIR: join(tempDir(t), 'data'),
    LOG_LEVEL: 'silent',
    STRIPE_SECRET_KEY: 'sk_test_svcfake00000000000000000000',
    SENDGRID_API_KEY: 'SG.svcfake00000000000000.000000000000',
    MAIL_FROM: 'Shop <orders@shop.example>',
    S3_BUCKET: 'svc-receipts',
  });
  const app = await createApp(config);
  t.after(() => app.close());
  assert.deepEqual([app.payments.name, app.mailer.name, app.files.name], ['stripe', 'sendgrid', 's3']);
  assert.equal(app.localFiles, undefined);
});

test('svc serve announces each embedded stand-in once, with the variable that switches it; a command announces none', async (t) => {
  const dir = tempDir(t);
  const { logger, lines } = capturedLogs('info');
  const keys = await jwksFile(t);
  const env = {
    DATABASE_URL: await migratedDatabase(t),
    JWT_KEYS_FILE: keys,
    SVC_DATA_DIR: join(dir, 'data'),
    PORT: '0',
    HOST: '127.0.0.1',
    LOG_LEVEL: 'info',
  };
  const running = await startServer(loadConfig(env), { overrides: { logger } });
  t.after(() => running.stop());
  const announced = lines.filter((l) => l.embedded);
  assert.deepEqual(announced.map((l) => l.embedded).sort(), ['files', 'mailer', 'payments']);
  const byPort = Object.fromEntries(announced.map((l) => [l.embedded as string, l.msg as string]));
  assert.match(byPort.payments!, /payments are simulated .*pm_card_visa.*set STRIPE_SECRET_KEY to use Stripe/);
  assert.match(byPort.mailer!, /written as \.eml files to .*mail; set SENDGRID_API_KEY/);
  assert.match(byPort.files!, /files are stored in .*files .*set S3_BUCKET/);
  assert.ok(announced.every((l) => l.level === 'info'));
  await running.stop();

  const list = await svc(['users', 'list'], { env });
  assert.equal(list.code, 0, list.stderr);
  assert.doesNotMatch(list.stderr, /simulated|\.eml|S3_BUCKET/);
});

/** GET through node:http with the path sent exactly as given (fetch would resolve `..`). */
function rawGet(url: string, path: string): Promise<{ status: number; type: string | undefined; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const { hostname, port } = new URL(url);
    const req = httpRequest({ hostname, port, path, method: 'GET', agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, type: res.headers['content-type'], body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

test('a signed link to a local file downloads it through svc serve; tampered, expired or climbing links do not', async (t) => {
  const ts = await testServer(t);
  const body = Buffer.from('%PDF-1.7 a receipt');
  await ts.app.files.put('receipts/ord_1.pdf', body, { contentType: 'application/pdf' });
  const { url } = await ts.app.files.signedUrl('receipts/ord_1.pdf', 300);
  assert.ok(url.startsWith(`${ts.url}/files/receipts/ord_1.pdf?expires=`), url);

  const ok = await fetch(url);
  assert.equal(ok.status, 200);
  assert.equal(ok.headers.get('content-type'), 'application/pdf');
  assert.equal(ok.headers.get('content-length'), String(body.length));
  assert.deepEqual(Buffer.from(await ok.arrayBuffer()), body);

  const problem = async (target: string, status: number, detail: RegExp) => {
    const res = await fetch(target);
    assert.equal(res.status, status, target);
    assert.equal(res.headers.get('content-type'), 'application/problem+json; charset=utf-8');
    const doc = (await res.json()) as { detail: string; code: string };
    assert.match(doc.detail, detail, target);
  };
  const signed = new URL(url);
  const tampered = new URL(url);
  tampered.searchParams.set('signature', `${signed.searchParams.get('signature')!.slice(0, -2)}AA`);
  await problem(tampered.toString(), 403, /signature does not match/);
  const later = new URL(url);
  later.searchParams.set('expires', String(Number(signed.searchParams.get('expires')) + 3600));
  await problem(later.toString(), 403, /signature does not match/);
  await problem(url.replace('ord_1.pdf', 'ord_2.pdf'), 403, /signature does not match/);
  await problem(`${ts.url}/files/receipts/ord_1.pdf`, 403, /not signed/);

  // Signed by the same store an hour ago (its key is in the data folder), so expired now.
  const past = new LocalFileStore({ dataDir: ts.config.dataDir, publicUrl: () => ts.url, now: () => Date.now() - 3_600_000 });
  await problem((await past.signedUrl('receipts/ord_1.pdf', 300)).url, 403, /the link expired at/);
  // A signed link to a file that is not there (any more).
  await problem((await ts.app.files.signedUrl('receipts/ord_9.pdf', 300)).url, 404, /no file receipts\/ord_9\.pdf/);

  const query = signed.search;
  for (const path of ['/files/../file-links.key', '/files/receipts/../../file-links.key', '/files/%2e%2e/file-links.key', '/files/..%2ffile-links.key']) {
    const res = await rawGet(ts.url, `${path}${query}`);
    assert.equal(res.status, 404, path);
    assert.doesNotMatch(res.body.toString(), /^[\da-f]{64}\s*$/, `${path} served the key`);
  }
});

test("role 'worker' with AMQP_URL gets RabbitMQ as its publisher and transport (closed with the App); other roles never connect", async (t) => {
  const db = await migratedDatabase(t);
  const prefix = testPrefix();
  const config = loadConfig({ DATABASE_URL: db, AMQP_URL, AMQP_PREFIX: prefix, SVC_DATA_DIR: join(tempDir(t), 'data'), LOG_LEVEL: 'silent' });
  const worker = await createApp(config, { role: 'worker', logger: capturedLogs('info').logger });
  t.after(async () => {
    const conn = await amqp.connect(AMQP_URL);
    await (await conn.createChannel()).deleteExchange(`${prefix}.events`);
    await conn.close();
  });
  assert.equal(worker.publisher?.kind, 'rabbitmq');
  assert.equal(worker.transport, worker.publisher);
  assert.equal(await worker.publisher.check(), 'ok');
  await worker.close();
  assert.match(await worker.publisher.check(), /not connected/);

  const command = await createApp(config, { logger: capturedLogs('info').logger });
  t.after(() => command.close());
  assert.equal(command.publisher, undefined);
  assert.equal(command.transport, undefined);

  await assert.rejects(
    createApp({ ...config, AMQP_URL: 'amqp://guest:guest@127.0.0.1:1' }, { role: 'worker', logger: capturedLogs('info').logger }),
    (err: Error & { code?: string }) => err.code === 'unavailable' && /RabbitMQ is unreachable .*AMQP_URL/.test(err.message),
  );
});

test('publicUrl: PUBLIC_URL, else the address svc serve listens on, else http://HOST:PORT with a warning once', async (t) => {
  const db = await migratedDatabase(t);
  const base = { DATABASE_URL: db, SVC_DATA_DIR: join(tempDir(t), 'data'), LOG_LEVEL: 'info' };
  const configured = await createApp(loadConfig({ ...base, PUBLIC_URL: 'https://shop.example.com' }), { logger: capturedLogs('info').logger });
  t.after(() => configured.close());
  configured.listening('http://127.0.0.1:4321');
  assert.equal(configured.publicUrl(), 'https://shop.example.com');

  const { logger, lines } = capturedLogs('info');
  const guessed = await createApp(loadConfig({ ...base, HOST: '0.0.0.0', PORT: '8080' }), { logger });
  t.after(() => guessed.close());
  assert.equal(guessed.publicUrl(), 'http://127.0.0.1:8080');
  assert.equal(guessed.publicUrl(), 'http://127.0.0.1:8080');
  assert.deepEqual(
    lines.filter((l) => /PUBLIC_URL is not set/.test(String(l.msg))).map((l) => l.level),
    ['warn'],
  );
  guessed.listening('http://127.0.0.1:4321');
  assert.equal(guessed.publicUrl(), 'http://127.0.0.1:4321');
});
