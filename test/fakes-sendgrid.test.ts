import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { Client } from '@sendgrid/client';
import { MailService } from '@sendgrid/mail';
import { FAKE_SENDGRID_API_KEY, startFakeSendGrid, validateMailSend, type FakeSendGrid } from './fakes/sendgrid.js';

// The fake's own tests, through the real @sendgrid/mail and @sendgrid/client as svc will use them.

type SendGridClient = InstanceType<typeof Client>;

interface Setup {
  fake: FakeSendGrid;
  client: SendGridClient;
  mail: InstanceType<typeof MailService>;
}

/** A Client on the fake (setApiKey first: it resets the base URL to api.sendgrid.com) and a MailService on it. */
function clientFor(url: string, apiKey = FAKE_SENDGRID_API_KEY): SendGridClient {
  const client = new Client();
  client.setApiKey(apiKey);
  client.setDefaultRequest('baseUrl', url);
  return client;
}

async function setup(t: TestContext): Promise<Setup> {
  const fake = await startFakeSendGrid();
  t.after(() => fake.close());
  const client = clientFor(fake.url);
  const mail = new MailService();
  mail.setClient(client);
  return { fake, client, mail };
}

const receipt = {
  to: 'ada@example.com',
  from: { email: 'orders@svc.example', name: 'svc' },
  subject: 'Your order ord_1',
  text: 'Thank you for your order.',
  html: '<p>Thank you for your order.</p>',
  customArgs: { order_id: 'ord_1' },
};

test('a message sent through @sendgrid/mail is accepted with 202 and an X-Message-Id, and kept as sent', async (t) => {
  const { fake, mail } = await setup(t);
  const [res] = await mail.send(receipt);
  assert.equal(res.statusCode, 202);
  const messageId = res.headers['x-message-id'];
  assert.match(String(messageId), /^[\w-]{22}$/);
  assert.equal(fake.messages.length, 1);
  const [sent] = fake.messages;
  assert.equal(sent!.messageId, messageId);
  assert.equal(sent!.apiKey, FAKE_SENDGRID_API_KEY);
  assert.deepEqual(sent!.recipients, ['ada@example.com']);
  // The SDK sends the v3 shape: snake_case, content text/plain before text/html.
  assert.deepEqual(sent!.body.personalizations, [{ to: [{ email: 'ada@example.com' }] }]);
  assert.deepEqual(sent!.body.content, [
    { type: 'text/plain', value: 'Thank you for your order.' },
    { type: 'text/html', value: '<p>Thank you for your order.</p>' },
  ]);
  assert.deepEqual(sent!.body.custom_args, { order_id: 'ord_1' });
});

test('SendGrid has no idempotency: the same message sent twice is two messages', async (t) => {
  const { fake, mail } = await setup(t);
  await mail.send(receipt);
  await mail.send(receipt);
  assert.equal(fake.messagesTo('ADA@example.com').length, 2);
});

test('a dynamic template needs no subject or content', async (t) => {
  const { fake, mail } = await setup(t);
  const [res] = await mail.send({
    to: 'ada@example.com',
    from: 'orders@svc.example',
    templateId: 'd-0123456789abcdef0123456789abcdef',
    dynamicTemplateData: { order: 'ord_1' },
  });
  assert.equal(res.statusCode, 202);
  assert.deepEqual(fake.messages[0]!.body.personalizations[0].dynamic_template_data, { order: 'ord_1' });
});

test('sandbox mode validates without sending: 200, nothing kept', async (t) => {
  const { fake, mail } = await setup(t);
  const [res] = await mail.send({ ...receipt, mailSettings: { sandboxMode: { enable: true } } });
  assert.equal(res.statusCode, 200);
  assert.equal(fake.messages.length, 0);
});

test('a wrong API key is a 401 with SendGrid error body', async (t) => {
  const { fake } = await setup(t);
  const mail = new MailService();
  mail.setClient(clientFor(fake.url, 'SG.wrong.key'));
  const err = await mail.send(receipt).then(
    () => assert.fail('expected a 401'),
    (e: unknown) => e as { code: number; response: { body: unknown } },
  );
  assert.equal(err.code, 401);
  assert.deepEqual(err.response.body, { errors: [{ message: 'The provided authorization grant is invalid, expired, or revoked', field: null, help: null }] });
  assert.equal(fake.messages.length, 0);
});

test('bad bodies are a 400 listing every error with its field and help link', async (t) => {
  const { fake, client } = await setup(t);
  const err = await client
    .request({
      method: 'POST',
      url: '/v3/mail/send',
      body: { personalizations: [{ to: [{ email: 'not-an-address' }] }], from: { email: 'orders@svc.example' }, content: [{ type: 'text/html', value: '' }] },
    })
    .then(
      () => assert.fail('expected a 400'),
      (e: unknown) => e as { code: number; response: { body: { errors: Array<{ message: string; field: string; help: string }> } } },
    );
  assert.equal(err.code, 400);
  assert.deepEqual(
    err.response.body.errors.map((e: { field: string }) => e.field),
    ['personalizations.0.to.0.email', 'subject', 'content.0.value'],
  );
  assert.match(err.response.body.errors[0]!.help, /^http:\/\/sendgrid\.com\/docs\/API_Reference\/Web_API_v3\/Mail\/errors\.html#message\./);
  assert.equal(fake.messages.length, 0);
});

test('the validation follows the documented rules', () => {
  const ok = {
    personalizations: [{ to: [{ email: 'a@example.com' }] }],
    from: { email: 'o@example.com' },
    subject: 's',
    content: [{ type: 'text/plain', value: 'x' }],
  };
  assert.deepEqual(validateMailSend(ok), []);
  const fields = (body: unknown) => validateMailSend(body).map((e) => e.field);
  assert.deepEqual(fields({ ...ok, personalizations: [] }), ['personalizations']);
  assert.deepEqual(fields({ ...ok, personalizations: [{ cc: [{ email: 'a@example.com' }] }] }), ['personalizations.0.to']);
  assert.deepEqual(fields({ ...ok, personalizations: [{ to: [{ email: 'a@example.com' }], cc: [{ email: 'A@example.com' }] }] }), ['personalizations.0']);
  assert.deepEqual(fields({ ...ok, from: undefined }), ['from.email']);
  assert.deepEqual(fields({ ...ok, subject: undefined, personalizations: [{ to: [{ email: 'a@example.com' }], subject: 'per recipient' }] }), []);
  assert.deepEqual(fields({ ...ok, content: undefined }), ['content']);
  assert.deepEqual(
    fields({
      ...ok,
      content: [
        { type: 'text/html', value: 'h' },
        { type: 'text/plain', value: 'p' },
      ],
    }),
    ['content'],
  );
  assert.deepEqual(fields({ ...ok, template_id: 'welcome' }), ['template_id']);
  assert.deepEqual(fields({ ...ok, attachments: [{ content: 'not base64!', filename: 'r.pdf' }] }), ['attachments.0.content']);
  assert.deepEqual(
    fields({ ...ok, attachments: [{ content: Buffer.from('%PDF-1.7').toString('base64'), filename: 'receipt.pdf', type: 'application/pdf' }] }),
    [],
  );
  const many = Array.from({ length: 1001 }, (_, i) => ({ email: `r${i}@example.com` }));
  assert.deepEqual(fields({ ...ok, personalizations: [{ to: many }] }), ['personalizations']);
});

test('a 429 carries the rate-limit headers; a 5xx can hide an accepted message', async (t) => {
  const { fake, mail } = await setup(t);
  fake.rateLimitNext({ resetInSeconds: 30 });
  const limited = await mail.send(receipt).then(
    () => assert.fail('expected a 429'),
    (e: unknown) => e as { code: number; response: { headers: Record<string, string> } },
  );
  assert.equal(limited.code, 429);
  assert.equal(limited.response.headers['x-ratelimit-remaining'], '0');
  assert.ok(Number(limited.response.headers['x-ratelimit-reset']) > Date.now() / 1000);

  fake.failNext({ status: 503, accepted: true });
  const failed = await mail.send(receipt).then(
    () => assert.fail('expected a 503'),
    (e: unknown) => e as { code: number },
  );
  assert.equal(failed.code, 503);
  assert.equal(fake.messages.length, 1, 'accepted although the answer was a 503');
  assert.deepEqual(fake.statuses, [429, 503]);
});

test('a send that times out after SendGrid accepted it is still delivered', async (t) => {
  const { fake, mail } = await setup(t);
  mail.setTimeout(100);
  fake.delayNext({ ms: 5_000 });
  const err = await mail.send(receipt).then(
    () => assert.fail('expected a timeout'),
    (e: unknown) => e as { code: string },
  );
  assert.equal(err.code, 'ECONNABORTED');
  assert.equal(fake.messages.length, 1);
});

/** Where a Client would send a mail (its typings say `baseUrl`, but createRequest hands axios `baseURL`). */
function baseUrlOf(client: SendGridClient): string | undefined {
  return (client.createRequest({ method: 'POST', url: '/v3/mail/send' }) as { baseURL?: string }).baseURL;
}

test('setApiKey resets the base URL to api.sendgrid.com: set it first, and never call mail.setApiKey after setClient', () => {
  const client = new Client();
  client.setDefaultRequest('baseUrl', 'http://127.0.0.1:1');
  client.setApiKey(FAKE_SENDGRID_API_KEY);
  assert.equal(baseUrlOf(client), 'https://api.sendgrid.com/');

  const ours = clientFor('http://127.0.0.1:1');
  assert.equal(baseUrlOf(ours), 'http://127.0.0.1:1');
  const mail = new MailService();
  mail.setClient(ours);
  mail.setApiKey(FAKE_SENDGRID_API_KEY);
  assert.equal(baseUrlOf(ours), 'https://api.sendgrid.com/');
});
