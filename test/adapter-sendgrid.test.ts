import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { parseAddress, REFERENCE_HEADER, SendGridMailer, type SendGridMailerOptions } from '../src/adapters/sendgrid-mailer.js';
import { MailUnavailable, type MailMessage } from '../src/domain/notifications/mailer.js';
import { DomainError } from '../src/domain/shared/errors.js';
import { createLoggerTo } from '../src/logger.js';
import { FAKE_SENDGRID_API_KEY, startFakeSendGrid, type FakeSendGrid } from './fakes/sendgrid.js';
import { rejection } from './helpers/assertions.js';

// SendGridMailer through @sendgrid/mail against the SendGrid fake: what is sent, how each answer
// maps to the error model, and the breaker.

type Json = Record<string, any>;

interface Setup {
  fake: FakeSendGrid;
  mailer: SendGridMailer;
  raw: () => string;
  logs: () => Json[];
}

async function setup(t: TestContext, options: Partial<SendGridMailerOptions> = {}): Promise<Setup> {
  const fake = await startFakeSendGrid();
  const chunks: string[] = [];
  const sink = new Writable({ write: (chunk: Buffer, _enc, done) => (chunks.push(chunk.toString()), done()) });
  const mailer = new SendGridMailer({
    apiKey: FAKE_SENDGRID_API_KEY,
    apiUrl: fake.url,
    from: 'svc shop <orders@svc.example>',
    logger: createLoggerTo('debug', sink),
    ...options,
  });
  t.after(async () => {
    mailer.close();
    await fake.close();
  });
  return { fake, mailer, raw: () => chunks.join(''), logs: () => chunks.map((c) => JSON.parse(c) as Json) };
}

function message(overrides: Partial<MailMessage> = {}): MailMessage {
  return {
    to: { email: 'ada@example.com', name: 'Ada Lovelace' },
    subject: 'Your order ord_1',
    text: 'Thank you for your order.',
    html: '<p>Thank you for your order.</p>',
    category: 'order-confirmation',
    reference: 'mail:order.completed:ord_1',
    ...overrides,
  };
}

async function unavailable(promise: Promise<unknown>): Promise<MailUnavailable> {
  const err = await rejection(promise);
  assert.ok(err instanceof MailUnavailable, `${err.name}: ${err.message}`);
  assert.equal(err.code, 'unavailable');
  return err;
}

async function invalid(promise: Promise<unknown>): Promise<DomainError> {
  const err = await rejection(promise);
  assert.ok(err instanceof DomainError && !(err instanceof MailUnavailable), `${err.name}: ${err.message}`);
  assert.equal(err.code, 'invalid');
  return err;
}

test('a mail is accepted with 202 and its X-Message-Id, sent to SENDGRID_API_URL with the from, category and reference', async (t) => {
  const { fake, mailer } = await setup(t);
  const { messageId } = await mailer.send(message());
  assert.equal(fake.messages.length, 1, 'the base URL survived setApiKey: the mail reached the fake');
  const [sent] = fake.messages;
  assert.equal(messageId, sent!.messageId);
  assert.equal(sent!.apiKey, FAKE_SENDGRID_API_KEY);
  assert.deepEqual(sent!.body.from, { email: 'orders@svc.example', name: 'svc shop' });
  assert.deepEqual(sent!.body.personalizations, [{ to: [{ email: 'ada@example.com', name: 'Ada Lovelace' }] }]);
  assert.deepEqual(sent!.body.categories, ['order-confirmation']);
  assert.deepEqual(sent!.body.custom_args, { reference: 'mail:order.completed:ord_1' });
  assert.deepEqual(sent!.body.headers, { [REFERENCE_HEADER]: 'mail:order.completed:ord_1' });
  assert.deepEqual(
    sent!.body.content.map((c: Json) => c.type),
    ['text/plain', 'text/html'],
  );
});

test('MAIL_FROM is an address or "Name <address>"; anything else is refused naming the key', () => {
  assert.deepEqual(parseAddress('orders@svc.example'), { email: 'orders@svc.example' });
  assert.deepEqual(parseAddress(' svc shop <orders@svc.example> '), { email: 'orders@svc.example', name: 'svc shop' });
  assert.deepEqual(parseAddress('"Shop, Inc." <orders@svc.example>'), { email: 'orders@svc.example', name: 'Shop, Inc.' });
  assert.deepEqual(parseAddress('<orders@svc.example>'), { email: 'orders@svc.example' });
  for (const bad of ['orders', 'Shop <orders>', 'Shop orders@svc.example', '']) {
    assert.throws(
      () => parseAddress(bad),
      (e: unknown) => e instanceof DomainError && e.code === 'invalid' && /MAIL_FROM/.test(e.message),
      bad,
    );
  }
});

test('a key that is not a SendGrid key is refused at construction, naming SENDGRID_API_KEY', () => {
  assert.throws(
    () => new SendGridMailer({ apiKey: 'not-a-key', from: 'o@svc.example', logger: createLoggerTo('silent', new Writable()) }),
    (e: unknown) => e instanceof DomainError && e.code === 'invalid' && /SENDGRID_API_KEY/.test(e.message) && !e.message.includes('not-a-key'),
  );
});

test('a 400 is invalid and names the fields; a 401 is not attempted (the configuration, not the message) and names SENDGRID_API_KEY without showing it', async (t) => {
  const { fake, mailer } = await setup(t);
  const bad = await invalid(mailer.send(message({ to: { email: 'not-an-address' } })));
  assert.match(bad.message, /personalizations\.0\.to\.0\.email/);
  assert.deepEqual(bad.details.fields, ['personalizations.0.to.0.email']);

  const { mailer: wrongKey } = await setup(t, { apiKey: 'SG.wrong.key-that-is-secret' });
  const auth = await unavailable(wrongKey.send(message()));
  assert.deepEqual([auth.details.outcome, auth.details.reason], ['not_attempted', 'auth']);
  assert.match(auth.message, /SENDGRID_API_KEY/);
  assert.ok(!auth.message.includes('key-that-is-secret'));
  assert.equal(fake.messages.length, 0);
  // A refused key is not SendGrid failing: it never opens the breaker.
  for (let i = 0; i < 10; i++) await unavailable(wrongKey.send(message()));
  assert.equal(wrongKey.breaker.state, 'closed');
});

test('a 429 is not attempted, with the seconds until the window resets', async (t) => {
  const { fake, mailer } = await setup(t);
  fake.rateLimitNext({ resetInSeconds: 30 });
  const err = await unavailable(mailer.send(message()));
  assert.deepEqual([err.details.outcome, err.details.reason], ['not_attempted', 'rate_limited']);
  assert.ok(err.details.retryAfterSeconds! >= 29 && err.details.retryAfterSeconds! <= 31, String(err.details.retryAfterSeconds));
  assert.equal(fake.messages.length, 0);
});

test('a 5xx or a timeout is an unknown outcome: SendGrid may have accepted the mail', async (t) => {
  const { fake, mailer } = await setup(t, { timeoutMs: 1_000 });
  fake.failNext({ status: 503, accepted: true });
  const failed = await unavailable(mailer.send(message()));
  assert.deepEqual([failed.details.outcome, failed.details.reason], ['unknown', 'provider_error']);
  assert.equal(fake.messages.length, 1, 'accepted although the answer was a 503');

  fake.delayNext({ ms: 10_000 });
  const slow = await unavailable(mailer.send(message()));
  assert.deepEqual([slow.details.outcome, slow.details.reason], ['unknown', 'timeout']);
  assert.equal(fake.messages.length, 2);
});

test('a refused connection is not attempted', async (t) => {
  const closed = createServer();
  closed.listen(0, '127.0.0.1');
  await once(closed, 'listening');
  const { port } = closed.address() as AddressInfo;
  await new Promise((resolve) => closed.close(resolve));
  const { mailer } = await setup(t, { apiUrl: `http://127.0.0.1:${port}` });
  const err = await unavailable(mailer.send(message()));
  assert.deepEqual([err.details.outcome, err.details.reason], ['not_attempted', 'connection_refused']);
});

test('a redirect is not followed: the message is not sent again where it points, and the error names SENDGRID_API_URL', async (t) => {
  const { fake } = await setup(t);
  // A wrong SENDGRID_API_URL: a server that redirects every request, keeping the method and body (307), to the fake.
  const redirecting = createServer((req, res) => {
    res.writeHead(307, { location: `${fake.url}${req.url ?? '/'}` });
    res.end();
  });
  redirecting.listen(0, '127.0.0.1');
  await once(redirecting, 'listening');
  t.after(() => new Promise((resolve) => redirecting.close(resolve)));
  const { mailer } = await setup(t, { apiUrl: `http://127.0.0.1:${(redirecting.address() as AddressInfo).port}` });
  const err = await invalid(mailer.send(message()));
  assert.match(err.message, /307.*SENDGRID_API_URL/);
  assert.equal(fake.messages.length, 0);
});

test('the breaker opens on 5xx, refuses at once without reaching SendGrid, then closes; 400s do not open it', async (t) => {
  const { fake, mailer, logs } = await setup(t, { breaker: { volumeThreshold: 2, resetTimeoutMs: 1_000 } });
  for (let i = 0; i < 3; i++) await invalid(mailer.send(message({ to: { email: 'nope' } })));
  assert.equal(mailer.breaker.state, 'closed');

  // The refused messages count as calls that went well: 3 failures of 6 are not more than 50 %.
  fake.failNext({ status: 500, times: 4 });
  for (let i = 0; i < 3; i++) await unavailable(mailer.send(message()));
  assert.equal(mailer.breaker.state, 'closed');
  await unavailable(mailer.send(message()));
  assert.equal(mailer.breaker.state, 'open');
  const answered = fake.statuses.length;
  const refused = await unavailable(mailer.send(message()));
  assert.deepEqual([refused.details.outcome, refused.details.reason], ['not_attempted', 'circuit_open']);
  assert.equal(fake.statuses.length, answered, 'nothing reached SendGrid while open');

  await once(mailer.breaker.circuit, 'halfOpen');
  const closed = once(mailer.breaker.circuit, 'close');
  await mailer.send(message());
  await closed;
  assert.equal(mailer.breaker.state, 'closed');
  assert.deepEqual(
    logs()
      .filter((l) => l.provider === 'sendgrid' && /circuit/.test(l.msg as string))
      .map((l) => l.level),
    ['warn', 'info', 'info'],
  );
});

test('the recipient is masked in the log line of a sent mail', async (t) => {
  const { mailer, raw, logs } = await setup(t);
  const { messageId } = await mailer.send(message());
  const line = logs().find((l) => l.msg === 'mail accepted');
  assert.equal(line?.messageId, messageId);
  assert.equal(line?.to, 'a***@e***.com');
  assert.ok(!raw().includes('ada@example.com'));
});
