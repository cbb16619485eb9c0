import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { GetObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { LocalFileStore } from '../src/adapters/local-file-store.js';
import { LocalMailer } from '../src/adapters/local-mailer.js';
import { S3FileStore } from '../src/adapters/s3-file-store.js';
import { SendGridMailer } from '../src/adapters/sendgrid-mailer.js';
import { SimulatedPayments } from '../src/adapters/simulated-payments.js';
import type { App } from '../src/app.js';
import type { EventMessage, EventType } from '../src/domain/events/events.js';
import type { FileStore } from '../src/domain/files/file-store.js';
import type { Mailer } from '../src/domain/notifications/mailer.js';
import { newId } from '../src/domain/shared/ids.js';
import { createLoggerTo } from '../src/logger.js';
import { ConsumerRunner, type ConsumerDefinition, type Outcome } from '../src/worker/consumer.js';
import { mailConsumer } from '../src/worker/consumers/mail.js';
import { paymentsConsumer } from '../src/worker/consumers/payments.js';
import { receiptsConsumer } from '../src/worker/consumers/receipts.js';
import { tempDir } from './helpers/cli.js';
import { query } from './helpers/db.js';
import { appFor, rabbitFor, silent } from './helpers/rabbit.js';
import { S3RVER_CREDENTIALS, startFakeS3, type FakeS3 } from './fakes/s3.js';
import { FAKE_SENDGRID_API_KEY, startFakeSendGrid, type FakeSendGrid } from './fakes/sendgrid.js';

// The receipts and mail consumers on order.completed / order.failed, through the real runner on
// RabbitMQ: with S3 (s3rver) and SendGrid (the fake behind the real SDK), and with the embedded
// stand-ins (files and .eml files in a data folder).

const PUBLIC_URL = 'https://shop.example.com';

interface World {
  app: App;
  db: string;
  userId: string;
  email: string;
  sku: string;
  dir: string;
}

async function world(t: TestContext, name = 'Ada Lovelace'): Promise<World> {
  const { app, db } = await appFor(t);
  const userId = newId('usr');
  const email = `${userId.toLowerCase()}@example.com`;
  const sku = `TEA-${userId.slice(-6)}`;
  await query(db, `insert into users (id, email, name, role, status, created_at, updated_at) values ($1, $2, $3, 'user', 'active', now(), now())`, [
    userId,
    email,
    name,
  ]);
  await query(
    db,
    `insert into products (id, sku, name, price, currency, stock, active, created_at, updated_at) values ($1, $2, 'Green tea', 450, 'USD', 10, true, now(), now())`,
    [newId('prd'), sku],
  );
  return { app, db, userId, email, sku, dir: tempDir(t) };
}

/** Places an order for 2 teas and pays it with the simulated provider; returns its order.completed or order.failed message. */
async function decidedOrder(w: World, paymentMethod: string): Promise<EventMessage> {
  const ctx = w.app.context({ actor: 'cli:test' });
  const placed = await w.app.orders.create(ctx, { userId: w.userId, items: [{ sku: w.sku, quantity: 2 }], paymentMethod });
  const orderId = placed.order.id;
  const payments = new SimulatedPayments(join(w.dir, 'payments'));
  const created: EventMessage = { id: newId('evt'), type: 'order.created', aggregateId: orderId, payload: {}, occurredAt: new Date().toISOString() };
  await ctx.transaction((tx) => paymentsConsumer({ payments }).handle(tx, created));
  const [row] = await query<{ id: string; type: EventType; payload: Record<string, unknown>; created_at: Date }>(
    w.db,
    `select id, type, payload, created_at from outbox_events where aggregate_id = $1 and type in ('order.completed', 'order.failed')`,
    [orderId],
  );
  return { id: row!.id, type: row!.type, aggregateId: orderId, payload: row!.payload, occurredAt: row!.created_at.toISOString() };
}

/** Runs consumers on RabbitMQ (this test's own prefix, tiny retry delays); `done(n)` waits for n deliveries settled for good. */
async function run(t: TestContext, w: World, definitions: ConsumerDefinition[]) {
  const rabbit = await rabbitFor(t);
  const outcomes: Outcome[] = [];
  const waiters: { n: number; resolve: () => void }[] = [];
  const settledForGood = () => outcomes.filter((o) => o !== 'retry').length;
  for (const definition of definitions) {
    const runner = new ConsumerRunner(definition, {
      transport: rabbit,
      context: (input) => w.app.context(input),
      logger: silent,
      prefetch: 4,
      retryDelaysMs: [20, 50, 100],
    });
    runner.onSettled = (outcome) => {
      outcomes.push(outcome);
      for (const waiter of waiters.filter((x) => settledForGood() >= x.n)) waiter.resolve();
    };
    await runner.start();
    t.after(() => runner.stop());
  }
  return {
    outcomes,
    publish: (messages: EventMessage[]) => rabbit.publish(messages),
    done: (n: number) => (settledForGood() >= n ? Promise.resolve() : new Promise<void>((resolve) => waiters.push({ n, resolve }))),
  };
}

interface FileRow {
  kind: string;
  key: string;
  content_type: string;
  size: number;
  sha256: string;
}

const fileRows = (w: World, orderId: string) =>
  query<FileRow>(w.db, 'select kind, key, content_type, size, sha256 from files where order_id = $1', [orderId]).then((rows) =>
    rows.map((r) => ({ ...r, size: Number(r.size) })),
  );

/** One sent email as a test reads it. */
interface SentMail {
  to: string;
  subject: string;
  text: string;
  html: string;
  reference: string;
}

/** Where the emails and files go: S3 + SendGrid (fakes), or the local stand-ins. */
interface Outside {
  files: FileStore;
  mailer: Mailer;
  /** The stored bytes under a key. */
  read(key: string): Promise<Buffer>;
  /** Every key stored. */
  keys(): Promise<string[]>;
  mails(): Promise<SentMail[]>;
}

async function s3AndSendGrid(t: TestContext): Promise<Outside & { s3: FakeS3; sendgrid: FakeSendGrid }> {
  const s3 = await startFakeS3();
  const sendgrid = await startFakeSendGrid();
  const files = new S3FileStore({
    bucket: s3.bucket,
    endpoint: s3.url,
    region: 'us-east-1',
    forcePathStyle: true,
    logger: silent,
    credentials: S3RVER_CREDENTIALS,
  });
  const mailer = new SendGridMailer({ apiKey: FAKE_SENDGRID_API_KEY, apiUrl: sendgrid.url, from: 'Shop <orders@example.com>', logger: silent });
  t.after(async () => {
    files.close();
    mailer.close();
    await sendgrid.close();
    await s3.close();
  });
  const client = s3.client();
  return {
    s3,
    sendgrid,
    files,
    mailer,
    async read(key) {
      const object = await client.send(new GetObjectCommand({ Bucket: s3.bucket, Key: key }));
      return Buffer.from(await object.Body!.transformToByteArray());
    },
    async keys() {
      const listed = await client.send(new ListObjectsV2Command({ Bucket: s3.bucket }));
      return (listed.Contents ?? []).map((o) => o.Key!);
    },
    mails: () =>
      Promise.resolve(
        sendgrid.messages.map((m) => ({
          to: m.body.personalizations[0].to[0].email as string,
          subject: m.body.subject as string,
          text: (m.body.content as { type: string; value: string }[]).find((c) => c.type === 'text/plain')!.value,
          html: (m.body.content as { type: string; value: string }[]).find((c) => c.type === 'text/html')!.value,
          reference: m.body.custom_args.reference as string,
        })),
      ),
  };
}

/** Quoted-printable (RFC 2045) back to text. */
const unQuote = (body: string) =>
  Buffer.from(
    body.replace(/=\r\n/g, '').replace(/=([0-9A-F]{2})/g, (_m, hex: string) => String.fromCharCode(parseInt(hex, 16))),
    'latin1',
  ).toString('utf8');

function local(w: World): Outside {
  const dataDir = join(w.dir, 'data');
  const files = new LocalFileStore({ dataDir, publicUrl: () => PUBLIC_URL });
  const mailer = new LocalMailer(join(dataDir, 'mail'), 'svc <no-reply@localhost>');
  return {
    files,
    mailer,
    read: (key) => readFile(join(dataDir, 'files', key)),
    keys: async () => (await readdir(join(dataDir, 'files'), { recursive: true, withFileTypes: true })).filter((e) => e.isFile()).map((e) => e.name),
    async mails() {
      let names: string[];
      try {
        names = (await readdir(mailer.dir)).filter((n) => n.endsWith('.eml')).sort();
      } catch {
        return [];
      }
      return Promise.all(
        names.map(async (name) => {
          const eml = await readFile(join(mailer.dir, name), 'utf8');
          const header = (h: string) => new RegExp(`^${h}: (.*)$`, 'm').exec(eml)?.[1] ?? '';
          const parts = eml.split(/^--=_svc_\w+/m);
          const body = (type: string) =>
            unQuote(
              parts
                .find((p) => p.includes(`Content-Type: ${type}`))!
                .split('\r\n\r\n')
                .slice(1)
                .join('\r\n\r\n'),
            );
          return { to: header('To'), subject: header('Subject'), text: body('text/plain'), html: body('text/html'), reference: header('X-Svc-Reference') };
        }),
      );
    },
  };
}

const consumersOn = (outside: Pick<Outside, 'files' | 'mailer'>, logger = silent) => [
  receiptsConsumer({ files: outside.files, logger }),
  mailConsumer({ mailer: outside.mailer, logger, publicUrl: () => PUBLIC_URL }),
];

for (const kind of ['S3 and SendGrid', 'local files and .eml files'] as const) {
  test(`${kind}: a completed order delivered twice gets one PDF receipt and one confirmation with the receipt link; a failed one a failure email and no receipt`, async (t) => {
    const w = await world(t);
    const cloud = kind === 'S3 and SendGrid' ? await s3AndSendGrid(t) : undefined;
    const outside = cloud ?? local(w);
    const completed = await decidedOrder(w, 'pm_card_visa');
    const failed = await decidedOrder(w, 'pm_card_chargeDeclined');
    assert.equal(completed.type, 'order.completed');
    assert.equal(failed.type, 'order.failed');
    const r = await run(t, w, consumersOn(outside));
    // receipts gets order.completed twice; mail gets both events, the completed one twice.
    await r.publish([completed, completed, failed]);
    await r.done(5);
    assert.deepEqual(r.outcomes.toSorted(), ['duplicate', 'duplicate', 'processed', 'processed', 'processed']);

    // One receipt: the files row describes the stored bytes, which are a PDF.
    const orderId = completed.aggregateId;
    const rows = await fileRows(w, orderId);
    assert.equal(rows.length, 1);
    const row = rows[0]!;
    assert.deepEqual([row.kind, row.key, row.content_type], ['receipt', `receipts/${orderId}.pdf`, 'application/pdf']);
    const pdf = await outside.read(row.key);
    assert.equal(pdf.subarray(0, 5).toString('latin1'), '%PDF-');
    assert.match(pdf.subarray(-8).toString('latin1'), /%%EOF\s*$/);
    assert.equal(row.size, pdf.length);
    assert.equal(row.sha256, createHash('sha256').update(pdf).digest('hex'));
    assert.deepEqual(await outside.keys(), kind === 'S3 and SendGrid' ? [row.key] : [`${orderId}.pdf`]);
    assert.deepEqual(await fileRows(w, failed.aggregateId), []);

    // One email per event, to the order's user.
    const mails = await outside.mails();
    assert.equal(mails.length, 2, JSON.stringify(mails.map((m) => m.subject)));
    const confirmation = mails.find((m) => m.reference === `order-confirmation-${orderId}`)!;
    const failure = mails.find((m) => m.reference === `payment-failed-${failed.aggregateId}`)!;
    for (const mail of [confirmation, failure]) assert.match(mail.to, new RegExp(w.email.replace(/[.]/g, '\\.')));
    assert.equal(confirmation.subject, `Your order ${orderId} is confirmed`);
    const link = `${PUBLIC_URL}/api/v1/orders/${orderId}/receipt`;
    assert.ok(confirmation.text.includes(`Your receipt (PDF): ${link}`), confirmation.text);
    assert.ok(confirmation.html.includes(`<a href="${link}">`), confirmation.html);
    assert.ok(confirmation.text.includes('- 2 x Green tea (' + w.sku + ') at 4.50 USD: 9.00 USD'), confirmation.text);
    assert.ok(confirmation.text.includes('Total: 9.00 USD'));
    assert.equal(failure.subject, `The payment for your order ${failed.aggregateId} failed`);
    assert.match(failure.text, /your card was declined by its issuer\. Please use another card/);
    assert.doesNotMatch(failure.text, /card_declined/);
    assert.match(failure.html, /your card was declined by its issuer/);

    if (cloud) {
      // Uploaded with server-side encryption (s3rver does not keep the header; the request had it).
      // The two deliveries arrive at once, and a receipt is stored before its transaction: both may
      // upload (the same bytes under the same key, one object, as the keys above show); one records it.
      const puts = cloud.s3.requests.filter((q) => q.method === 'PUT' && q.path === `/${cloud.s3.bucket}/${row.key}`);
      assert.ok(puts.length === 1 || puts.length === 2, `${puts.length} uploads`);
      for (const put of puts) assert.equal(put.headers['x-amz-server-side-encryption'], 'AES256');
      assert.equal(cloud.sendgrid.messagesTo(w.email).length, 2);
    }
  });
}

test('a crash between the upload and the commit: the retry overwrites the same object and records one file row', async (t) => {
  const w = await world(t);
  const outside = await s3AndSendGrid(t);
  let crashes = 1;
  // The upload succeeds, then the transaction fails before it commits (as a crash or a lost connection would).
  const crashingFiles: FileStore = {
    name: 's3',
    check: () => outside.files.check(),
    signedUrl: (...args) => outside.files.signedUrl(...args),
    async put(...args) {
      const stored = await outside.files.put(...args);
      if (crashes-- > 0) throw new Error('the process died after the upload');
      return stored;
    },
  };
  const completed = await decidedOrder(w, 'pm_card_visa');
  const r = await run(t, w, [receiptsConsumer({ files: crashingFiles, logger: silent })]);
  await r.publish([completed]);
  await r.done(1);
  assert.deepEqual(r.outcomes, ['retry', 'processed']);
  const key = `receipts/${completed.aggregateId}.pdf`;
  assert.deepEqual(await outside.keys(), [key]);
  const puts = outside.s3.requests.filter((q) => q.method === 'PUT' && q.path.endsWith(key));
  assert.equal(puts.length, 2);
  const rows = await fileRows(w, completed.aggregateId);
  assert.equal(rows.length, 1);
  const pdf = await outside.read(key);
  assert.equal(rows[0]!.sha256, createHash('sha256').update(pdf).digest('hex'));
  assert.equal(rows[0]!.size, pdf.length);
});

test('while the store takes its time with an upload, svc holds no transaction: no session idle in transaction; the receipt is then recorded once', async (t) => {
  const w = await world(t);
  const outside = await s3AndSendGrid(t);
  let arrived!: () => void;
  const uploading = new Promise<void>((resolve) => (arrived = resolve));
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  // A slow S3 (the client waits up to 15 s a request): the upload answers once the test lets it.
  const slowFiles: FileStore = {
    name: 's3',
    check: () => outside.files.check(),
    signedUrl: (...args) => outside.files.signedUrl(...args),
    async put(...args) {
      arrived();
      await released;
      return outside.files.put(...args);
    },
  };
  const completed = await decidedOrder(w, 'pm_card_visa');
  const r = await run(t, w, [receiptsConsumer({ files: slowFiles, logger: silent })]);
  await r.publish([completed]);
  await uploading;
  try {
    assert.deepEqual(
      await query(w.db, `select pid from pg_stat_activity where datname = current_database() and state like 'idle in transaction%'`),
      [],
      'no transaction open while the receipt is being stored',
    );
  } finally {
    release();
  }
  await r.done(1);
  assert.deepEqual(r.outcomes, ['processed']);
  assert.equal((await fileRows(w, completed.aggregateId)).length, 1);
});

test("a customer's name is data, not markup: <script> is escaped in the HTML body, kept as text in the text body; the log masks the recipient", async (t) => {
  const name = '<script>alert("pwned")</script> & Co';
  const w = await world(t, name);
  const outside = local(w);
  const lines: string[] = [];
  const logger = createLoggerTo(
    'info',
    new Writable({
      write(chunk: Buffer, _enc, callback) {
        lines.push(chunk.toString('utf8'));
        callback();
      },
    }),
  );
  const completed = await decidedOrder(w, 'pm_card_visa');
  const failed = await decidedOrder(w, 'pm_card_authenticationRequired');
  const mail = mailConsumer({ mailer: outside.mailer, logger, publicUrl: () => PUBLIC_URL });
  for (const message of [completed, failed]) await w.app.context({ actor: 'worker:mail' }).transaction((tx) => mail.handle(tx, message));

  const mails = await outside.mails();
  assert.equal(mails.length, 2);
  for (const m of mails) {
    assert.ok(!m.html.includes('<script>'), m.html);
    assert.ok(m.html.includes('Hello &lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt; &amp; Co,'), m.html);
    assert.ok(m.text.includes(`Hello ${name},`), m.text);
  }
  assert.match(mails.find((m) => m.reference.startsWith('payment-failed'))!.text, /your bank asked you to confirm the payment \(3-D Secure\)/);

  const logged = lines.join('');
  assert.match(logged, /"msg":"email sent"/);
  assert.ok(!logged.includes(w.email), logged);
  assert.match(logged, /"to":"u\*\*\*@e\*\*\*\.com"/);
});

test('a crash between the send and the commit: the retry sends again with the same reference (SendGrid: a duplicate to spot; .eml: one file)', async (t) => {
  const w = await world(t);
  const cloud = await s3AndSendGrid(t);
  const files = local(w);
  const completed = await decidedOrder(w, 'pm_card_visa');
  // Each mailer accepts the email, then the transaction fails before it commits (once).
  const crashingOnce = (mailer: Mailer): Mailer => {
    let crashes = 1;
    return {
      name: mailer.name,
      async send(message) {
        const sent = await mailer.send(message);
        if (crashes-- > 0) throw new Error('the process died after the send');
        return sent;
      },
    };
  };
  const r = await run(t, w, [
    mailConsumer({ mailer: crashingOnce(cloud.mailer), logger: silent, publicUrl: () => PUBLIC_URL }),
    { ...mailConsumer({ mailer: crashingOnce(files.mailer), logger: silent, publicUrl: () => PUBLIC_URL }), name: 'mail-local' },
  ]);
  await r.publish([completed]);
  await r.done(2);
  assert.deepEqual(r.outcomes.toSorted(), ['processed', 'processed', 'retry', 'retry']);
  const reference = `order-confirmation-${completed.aggregateId}`;
  // At-least-once: SendGrid got it twice, under one reference; the local stand-in kept one file.
  assert.deepEqual(
    (await cloud.mails()).map((m) => m.reference),
    [reference, reference],
  );
  assert.deepEqual(
    (await files.mails()).map((m) => m.reference),
    [reference],
  );
});

test('an order.completed or order.failed published to the exchange for an order not in that state (forged, or replayed by hand) sends no email and makes no receipt', async (t) => {
  const w = await world(t);
  const outside = local(w);
  const ctx = w.app.context({ actor: 'cli:test' });
  const pending = (await w.app.orders.create(ctx, { userId: w.userId, items: [{ sku: w.sku, quantity: 1 }], paymentMethod: 'pm_card_visa' })).order.id;
  const paid = await decidedOrder(w, 'pm_card_visa');
  const declined = await decidedOrder(w, 'pm_card_chargeDeclined');
  const forged = (type: EventType, orderId: string, payload: Record<string, unknown> = {}): EventMessage => ({
    id: newId('evt'),
    type,
    aggregateId: orderId,
    payload,
    occurredAt: new Date().toISOString(),
  });
  const r = await run(t, w, consumersOn(outside));
  await r.publish([
    // "Your order is confirmed" for an order nobody paid, and for one whose payment was declined.
    forged('order.completed', pending),
    forged('order.completed', declined.aggregateId),
    // "Your payment failed" for an order that is paid, and for one still waiting for its payment.
    forged('order.failed', paid.aggregateId, { reason: 'card_declined' }),
    forged('order.failed', pending, { reason: 'card_declined' }),
  ]);
  // receipts gets the two order.completed, mail all four.
  await r.done(6);
  assert.deepEqual(await outside.mails(), []);
  assert.deepEqual(await fileRows(w, pending), []);
  assert.deepEqual(await fileRows(w, declined.aggregateId), []);
});
