import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { S3FileStore, type S3FileStoreOptions } from '../src/adapters/s3-file-store.js';
import { DomainError } from '../src/domain/shared/errors.js';
import { createLoggerTo } from '../src/logger.js';
import { S3RVER_CREDENTIALS, startFakeS3, type FakeS3 } from './fakes/s3.js';

// S3FileStore through @aws-sdk/client-s3 against s3rver: what put sends and returns, presigned URLs,
// and the messages an operator sees when the bucket or the server is not there.

const silent = createLoggerTo('silent', new Writable());

async function setup(t: TestContext): Promise<{ s3: FakeS3; store: (options?: Partial<S3FileStoreOptions>) => S3FileStore }> {
  const s3 = await startFakeS3({ bucket: 'receipts' });
  t.after(() => s3.close());
  return {
    s3,
    store: (options = {}) => {
      const store = new S3FileStore({
        bucket: s3.bucket,
        endpoint: s3.url,
        region: 'us-east-1',
        forcePathStyle: true,
        credentials: S3RVER_CREDENTIALS,
        logger: silent,
        ...options,
      });
      t.after(() => store.close());
      return store;
    },
  };
}

const pdf = Buffer.concat([Buffer.from('%PDF-1.7\n'), Buffer.alloc(32 * 1024, 9), Buffer.from('\n%%EOF\n')]);

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

test('put stores the bytes with SSE-S3 and the content type, and returns their size and SHA-256', async (t) => {
  const { s3, store } = await setup(t);
  const stored = await store().put('receipts/ord_1.pdf', pdf, { contentType: 'application/pdf' });
  const sha256 = createHash('sha256').update(pdf).digest('hex');
  assert.deepEqual(stored, { key: 'receipts/ord_1.pdf', size: pdf.length, sha256 });

  const sent = s3.requests.find((r) => r.method === 'PUT' && r.path === '/receipts/receipts/ord_1.pdf');
  assert.equal(sent?.headers['x-amz-server-side-encryption'], 'AES256');
  assert.equal(sent?.headers['content-type'], 'application/pdf');
  assert.equal(sent?.headers['x-amz-checksum-sha256'], createHash('sha256').update(pdf).digest('base64'));
  assert.equal(sent?.headers['content-encoding'], undefined, 'a plain body, not aws-chunked');

  const got = await s3.client().send(new GetObjectCommand({ Bucket: s3.bucket, Key: 'receipts/ord_1.pdf' }));
  assert.ok(Buffer.from(await got.Body!.transformToByteArray()).equals(pdf));
  assert.equal(got.ContentType, 'application/pdf');
  assert.deepEqual(got.Metadata, { sha256 });

  // Same key, same bytes: storing again is harmless (a retried receipt job).
  assert.deepEqual(await store().put('receipts/ord_1.pdf', pdf, { contentType: 'application/pdf' }), stored);
});

test('a presigned URL downloads the bytes until it expires', async (t) => {
  const { store } = await setup(t);
  const files = store();
  await files.put('r.pdf', pdf, { contentType: 'application/pdf' });
  const before = Date.now();
  const { url, expiresAt } = await files.signedUrl('r.pdf', 300);
  assert.match(url, /X-Amz-Expires=300/);
  assert.ok(Math.abs(expiresAt.getTime() - (before + 300_000)) < 2_000, expiresAt.toISOString());
  const res = await fetch(url);
  assert.equal(res.status, 200);
  assert.ok(Buffer.from(await res.arrayBuffer()).equals(pdf));

  // A URL signed an hour ago for 60 s: the clock is moved for the signing only.
  t.mock.timers.enable({ apis: ['Date'], now: Date.now() - 3_600_000 });
  const old = await files.signedUrl('r.pdf', 60);
  t.mock.timers.reset();
  assert.ok(old.expiresAt.getTime() < Date.now());
  const refused = await fetch(old.url);
  assert.equal(refused.status, 403);
  assert.match(await refused.text(), /Request has expired/);

  await assert.rejects(files.signedUrl('r.pdf', 0), (e: unknown) => e instanceof DomainError && e.code === 'invalid');
  await assert.rejects(files.signedUrl('r.pdf', 8 * 24 * 3600), (e: unknown) => e instanceof DomainError && e.code === 'invalid');
});

test('check() is ok for the bucket, and names S3_BUCKET when it is missing and S3_ENDPOINT when S3 cannot be reached', async (t) => {
  const { store } = await setup(t);
  assert.equal(await store().check(), 'ok');
  const missing = await store({ bucket: 'no-such-bucket' }).check();
  assert.match(missing, /the bucket "no-such-bucket" does not exist on S3 at http:\/\/127\.0\.0\.1:\d+ \(S3_ENDPOINT\); check S3_BUCKET/);
  const denied = await store({ credentials: { accessKeyId: 'AKIASTRANGER', secretAccessKey: 'x' } }).check();
  assert.match(denied, /refused access to the bucket "receipts".*check AWS_ACCESS_KEY_ID/);

  const port = await closedPort();
  const down = await store({ endpoint: `http://127.0.0.1:${port}` }).check();
  assert.match(down, new RegExp(`cannot reach S3 at http://127\\.0\\.0\\.1:${port} \\(S3_ENDPOINT\\): ECONNREFUSED`));
});

test('put to a missing bucket or an unreachable server is unavailable, naming the setting', async (t) => {
  const { store } = await setup(t);
  await assert.rejects(
    store({ bucket: 'no-such-bucket' }).put('a.pdf', pdf, { contentType: 'application/pdf' }),
    (e: unknown) => e instanceof DomainError && e.code === 'unavailable' && /check S3_BUCKET/.test(e.message) && e.details.service === 's3',
  );
  const port = await closedPort();
  await assert.rejects(
    store({ endpoint: `http://127.0.0.1:${port}` }).put('a.pdf', pdf, { contentType: 'application/pdf' }),
    (e: unknown) => e instanceof DomainError && e.code === 'unavailable' && /cannot reach S3 at .*S3_ENDPOINT/.test(e.message),
  );
});
