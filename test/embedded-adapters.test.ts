import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { SimulatedPayments } from '../src/adapters/simulated-payments.js';
import { LocalMailer } from '../src/adapters/local-mailer.js';
import { LocalFileStore, isFileKey } from '../src/adapters/local-file-store.js';
import { DomainError } from '../src/domain/shared/errors.js';
import type { MailMessage } from '../src/domain/notifications/mailer.js';
import { tempDir } from './helpers/cli.js';
import { parseEml } from './helpers/eml.js';

const charge = (orderId: string, paymentMethod: string, idempotencyKey = `${orderId}:1`) => ({
  orderId,
  amount: 4950,
  currency: 'USD',
  paymentMethod,
  idempotencyKey,
});

test('the simulated provider answers like Stripe test payment methods', async (t) => {
  const payments = new SimulatedPayments(join(tempDir(t), 'payments'));
  const visa = await payments.charge(charge('ord_visa', 'pm_card_visa'));
  assert.equal(visa.status, 'succeeded');
  assert.match(visa.status === 'succeeded' ? visa.reference : '', /^pi_sim_[\da-f]{24}$/);
  assert.deepEqual({ ...visa, reference: 'x' }, { status: 'succeeded', reference: 'x', amount: 4950, currency: 'USD' });

  const declines: [string, string][] = [
    ['pm_card_chargeDeclined', 'card_declined'],
    ['pm_card_authenticationRequired', 'authentication_required'],
    ['pm_card_insufficientFunds', 'insufficient_funds'],
    ['pm_card_chargeDeclinedExpiredCard', 'expired_card'],
    // Stripe answers an unknown payment method with resource_missing: the charge cannot happen.
    ['pm_no_such_method', 'resource_missing'],
  ];
  for (const [method, code] of declines) {
    const outcome = await payments.charge(charge(`ord_${code}`, method));
    assert.equal(outcome.status, 'declined', method);
    assert.equal(outcome.status === 'declined' && outcome.code, code, method);
    assert.ok(outcome.status === 'declined' && outcome.reason.length > 10, method);
  }
  assert.equal(await payments.findCharge('ord_card_declined'), undefined, 'a declined order has no payment');
});

test('the simulated provider is idempotent by key, across a restart, and refuses a key reused with other parameters', async (t) => {
  const dir = join(tempDir(t), 'payments');
  const first = new SimulatedPayments(dir);
  const [a, b] = await Promise.all([first.charge(charge('ord_1', 'pm_card_visa', 'k1')), first.charge(charge('ord_1', 'pm_card_visa', 'k1'))]);
  assert.deepEqual(a, b);

  // A new process on the same data folder: the same key gives the same answer, the order's payment is found.
  const restarted = new SimulatedPayments(dir);
  assert.deepEqual(await restarted.charge(charge('ord_1', 'pm_card_visa', 'k1')), a);
  assert.deepEqual(await restarted.findCharge('ord_1'), a);
  assert.equal(await restarted.findCharge('ord_2'), undefined);

  // The first outcome of a key stands, even when the card would now be declined.
  const reused = await restarted.charge({ ...charge('ord_1', 'pm_card_visa', 'k1'), amount: 100 }).catch((err: unknown) => err);
  assert.ok(reused instanceof DomainError && reused.code === 'conflict', String(reused));
});

test('simulated refunds never take more than the payment and answer a repeated key the same', async (t) => {
  const payments = new SimulatedPayments(join(tempDir(t), 'payments'));
  const paid = await payments.charge(charge('ord_r', 'pm_card_visa'));
  assert.equal(paid.status, 'succeeded');
  const reference = paid.status === 'succeeded' ? paid.reference : '';
  const part = await payments.refund({ paymentReference: reference, amount: 4000, idempotencyKey: 'r1' });
  assert.equal(part.status, 'succeeded');
  assert.deepEqual(await payments.refund({ paymentReference: reference, amount: 4000, idempotencyKey: 'r1' }), part);
  const tooMuch = await payments.refund({ paymentReference: reference, amount: 1000, idempotencyKey: 'r2' });
  assert.equal(tooMuch.status, 'failed');
  assert.equal((await payments.refund({ paymentReference: reference, amount: 950, idempotencyKey: 'r3' })).status, 'succeeded');
  assert.equal((await payments.refund({ paymentReference: 'pi_unknown', amount: 1, idempotencyKey: 'r4' })).status, 'failed');
});

test('the local mailer writes one RFC 5322 .eml per message: headers, text and HTML parts, rewritten on a repeat', async (t) => {
  const dir = join(tempDir(t), 'mail');
  const mailer = new LocalMailer(dir, 'Shop <orders@shop.example>', () => new Date('2026-05-05T14:03:00Z'));
  const html = '<p>Hello Ada &lt;script&gt;alert(1)&lt;/script&gt;, your order <b>ord_1</b> of 49,50 € is paid.</p>';
  const message: MailMessage = {
    to: { email: 'ada@example.com', name: 'Ada "Countess" Lovelace' },
    subject: 'Your order ord_1 — confirmed\r\nBcc: everyone@example.com',
    text: `Hello Ada,\n\nyour order ord_1 of 49,50 € is paid.\n${'A long line. '.repeat(20)}\n`,
    html,
    category: 'order-confirmation',
    reference: 'evt_01J0000000000000000000000:order-confirmation',
  };
  const { messageId } = await mailer.send(message);
  await mailer.send(message);

  const files = readdirSync(dir);
  assert.equal(files.length, 1, `one file for one reference: ${files.join(', ')}`);
  assert.match(files[0]!, /^evt_01J0000000000000000000000-order-confirmation-[\da-f]{12}\.eml$/);
  const { headers, parts } = parseEml(readFileSync(join(dir, files[0]!), 'utf8'));
  assert.equal(headers.from, 'Shop <orders@shop.example>');
  assert.equal(headers.to, '"Ada \\"Countess\\" Lovelace" <ada@example.com>');
  // The line break in the subject is flattened: it cannot start a header of its own.
  assert.equal(headers.subject, 'Your order ord_1 — confirmed Bcc: everyone@example.com');
  assert.equal(headers.bcc, undefined);
  assert.equal(headers.date, 'Tue, 05 May 2026 14:03:00 +0000');
  assert.equal(headers['message-id'], messageId);
  assert.match(messageId, /^<[\da-f]{32}@shop\.example>$/);
  assert.equal(headers['mime-version'], '1.0');
  assert.equal(headers['x-svc-reference'], message.reference);
  assert.equal(headers['x-svc-category'], 'order-confirmation');
  assert.deepEqual(
    parts.map((p) => p.type),
    ['text/plain', 'text/html'],
  );
  assert.equal(parts[0]!.body, message.text);
  assert.equal(parts[1]!.body, html, 'the HTML arrives as written, its escaped data still escaped');

  // Another reference, another file.
  await mailer.send({ ...message, reference: 'plain-reference' });
  assert.deepEqual(readdirSync(dir).sort(), [files[0]!, 'plain-reference.eml'].sort());
});

test('the local file store writes files atomically with size and SHA-256, and signs links that expire', async (t) => {
  const dataDir = join(tempDir(t), 'data');
  let now = Date.parse('2026-05-05T14:00:00Z');
  const store = new LocalFileStore({ dataDir, publicUrl: () => 'http://files.test', now: () => now });
  const body = Buffer.from('%PDF-1.7 receipt');
  const stored = await store.put('receipts/ord_1.pdf', body, { contentType: 'application/pdf' });
  assert.deepEqual(stored, { key: 'receipts/ord_1.pdf', size: body.length, sha256: createHash('sha256').update(body).digest('hex') });
  assert.deepEqual(readFileSync(join(dataDir, 'files', 'receipts', 'ord_1.pdf')), body);
  assert.deepEqual(readdirSync(join(dataDir, 'files', 'receipts')), ['ord_1.pdf'], 'no temporary file left');
  assert.equal(statSync(join(dataDir, 'file-links.key'), { throwIfNoEntry: false }), undefined, 'the link key is made when a link is');
  assert.equal(await store.check(), 'ok');

  const { url, expiresAt } = await store.signedUrl('receipts/ord_1.pdf', 300);
  assert.equal(expiresAt.toISOString(), '2026-05-05T14:05:00.000Z');
  const parsed = new URL(url);
  assert.equal(`${parsed.origin}${parsed.pathname}`, 'http://files.test/files/receipts/ord_1.pdf');
  assert.equal(statSync(join(dataDir, 'file-links.key')).mode & 0o777, 0o600);
  const query = { expires: parsed.searchParams.get('expires')!, signature: parsed.searchParams.get('signature')! };
  const opened = await store.open('receipts/ord_1.pdf', query);
  assert.equal(opened.contentType, 'application/pdf');
  assert.equal(opened.size, body.length);
  opened.stream.destroy();

  const refused = async (key: string, q: { expires?: string; signature?: string }) => {
    const err = await store.open(key, q).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(err instanceof DomainError, `${key} ${JSON.stringify(q)} was served`);
    return `${err.code}: ${err.message}`;
  };
  assert.match(await refused('receipts/ord_2.pdf', query), /^forbidden: the link signature does not match/);
  assert.match(await refused('receipts/ord_1.pdf', { ...query, expires: String(Number(query.expires) + 60) }), /^forbidden: the link signature/);
  assert.match(await refused('receipts/ord_1.pdf', {}), /^forbidden: the link is not signed/);
  now += 301_000;
  assert.match(await refused('receipts/ord_1.pdf', query), /^forbidden: the link expired at 2026-05-05T14:05:00\.000Z/);

  for (const key of ['../file-links.key', 'a/../../x', '/etc/passwd', '.hidden', 'a//b', 'a\\b', '']) {
    assert.equal(isFileKey(key), false, key);
    await assert.rejects(store.put(key, body, { contentType: 'text/plain' }), /must be up to 8/);
  }
  await assert.rejects(store.put('x.txt', body, { contentType: 'text/plain\r\nset-cookie: a=b' }), /is not a media type/);
});
