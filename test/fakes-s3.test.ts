import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { Readable } from 'node:stream';
import { GetObjectCommand, HeadObjectCommand, PutObjectCommand, S3Client, S3ServiceException } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { startFakeS3, type FakeS3 } from './fakes/s3.js';

// The harness's own tests: @aws-sdk/client-s3 and the presigner against s3rver, as svc stores receipts.

async function setup(t: TestContext): Promise<FakeS3> {
  const s3 = await startFakeS3();
  t.after(() => s3.close());
  return s3;
}

const receiptPdf = Buffer.concat([Buffer.from('%PDF-1.7\n'), Buffer.alloc(64 * 1024, 7), Buffer.from('\n%%EOF\n')]);

async function failure(promise: Promise<unknown>): Promise<S3ServiceException> {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof S3ServiceException, String(e));
    return e;
  }
  assert.fail('expected the call to fail');
}

test('a receipt put with server-side encryption is stored and read back byte for byte', async (t) => {
  const s3 = await setup(t);
  const client = s3.client();
  const key = 'receipts/2026/ord_1.pdf';
  const put = await client.send(
    new PutObjectCommand({
      Bucket: s3.bucket,
      Key: key,
      Body: receiptPdf,
      ContentType: 'application/pdf',
      ServerSideEncryption: 'AES256',
      Metadata: { 'order-id': 'ord_1' },
    }),
  );
  assert.equal(put.$metadata.httpStatusCode, 200);
  assert.match(put.ETag ?? '', /^"[0-9a-f]{32}"$/);
  // s3rver accepts the SSE header without storing or echoing it: assert what the client sent.
  const sent = s3.requests.find((r) => r.method === 'PUT' && r.path === `/${s3.bucket}/${key}`);
  assert.equal(sent?.headers['x-amz-server-side-encryption'], 'AES256');

  const got = await client.send(new GetObjectCommand({ Bucket: s3.bucket, Key: key }));
  assert.equal(got.ContentType, 'application/pdf');
  assert.deepEqual(got.Metadata, { 'order-id': 'ord_1' });
  assert.ok(Buffer.from(await got.Body!.transformToByteArray()).equals(receiptPdf));
  const head = await client.send(new HeadObjectCommand({ Bucket: s3.bucket, Key: key }));
  assert.equal(head.ContentLength, receiptPdf.length);
});

test('a streamed body round-trips with the harness config; the SDK default (aws-chunked with a trailing checksum) would corrupt it', async (t) => {
  const s3 = await setup(t);
  await s3.client().send(new PutObjectCommand({ Bucket: s3.bucket, Key: 'stream.pdf', Body: Readable.from([receiptPdf]), ContentLength: receiptPdf.length }));
  const got = await s3.client().send(new GetObjectCommand({ Bucket: s3.bucket, Key: 'stream.pdf' }));
  assert.ok(Buffer.from(await got.Body!.transformToByteArray()).equals(receiptPdf));

  const defaults = new S3Client({ ...s3.clientConfig, requestChecksumCalculation: undefined, responseChecksumValidation: undefined });
  t.after(() => defaults.destroy());
  await defaults.send(new PutObjectCommand({ Bucket: s3.bucket, Key: 'chunked.pdf', Body: Readable.from([receiptPdf]), ContentLength: receiptPdf.length }));
  const stored = await s3.client().send(new GetObjectCommand({ Bucket: s3.bucket, Key: 'chunked.pdf' }));
  const bytes = Buffer.from(await stored.Body!.transformToByteArray());
  assert.ok(!bytes.equals(receiptPdf), 'if this passes, s3rver or the SDK changed: the WHEN_REQUIRED setting may no longer be needed');
  assert.match(bytes.subarray(0, 8).toString(), /^[0-9a-f]+\r\n/, 'the chunk framing is stored as data');
});

test('a presigned GET URL downloads the object; an expired one is refused', async (t) => {
  const s3 = await setup(t);
  const client = s3.client();
  await client.send(
    new PutObjectCommand({ Bucket: s3.bucket, Key: 'r.pdf', Body: receiptPdf, ContentType: 'application/pdf', ServerSideEncryption: 'AES256' }),
  );
  const url = await getSignedUrl(
    client,
    new GetObjectCommand({ Bucket: s3.bucket, Key: 'r.pdf', ResponseContentDisposition: 'attachment; filename="receipt.pdf"' }),
    { expiresIn: 300 },
  );
  assert.ok(url.startsWith(`${s3.url}/${s3.bucket}/r.pdf?`));
  assert.match(url, /X-Amz-Expires=300/);
  const res = await fetch(url);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-disposition'), 'attachment; filename="receipt.pdf"');
  assert.ok(Buffer.from(await res.arrayBuffer()).equals(receiptPdf));

  const expired = await getSignedUrl(client, new GetObjectCommand({ Bucket: s3.bucket, Key: 'r.pdf' }), {
    expiresIn: 60,
    signingDate: new Date(Date.now() - 3_600_000),
  });
  const refused = await fetch(expired);
  assert.equal(refused.status, 403);
  assert.match(await refused.text(), /<Code>AccessDenied<\/Code><Message>Request has expired/);
});

test('missing objects, missing buckets and unknown access keys are S3 errors', async (t) => {
  const s3 = await setup(t);
  const client = s3.client();
  const noKey = await failure(client.send(new GetObjectCommand({ Bucket: s3.bucket, Key: 'nope.pdf' })));
  assert.equal(noKey.name, 'NoSuchKey');
  assert.equal(noKey.$metadata.httpStatusCode, 404);
  const noBucket = await failure(client.send(new GetObjectCommand({ Bucket: 'other-bucket', Key: 'x' })));
  assert.equal(noBucket.name, 'NoSuchBucket');

  const stranger = new S3Client({ ...s3.clientConfig, credentials: { accessKeyId: 'AKIASTRANGER', secretAccessKey: 'x' } });
  t.after(() => stranger.destroy());
  const denied = await failure(stranger.send(new GetObjectCommand({ Bucket: s3.bucket, Key: 'x' })));
  assert.equal(denied.name, 'InvalidAccessKeyId');
  assert.equal(denied.$metadata.httpStatusCode, 403);
});

test('close() removes the temporary folder', async () => {
  const s3 = await startFakeS3({ bucket: 'receipts' });
  await s3.client().send(new PutObjectCommand({ Bucket: 'receipts', Key: 'a', Body: 'x' }));
  assert.ok(existsSync(s3.directory));
  await s3.close();
  assert.ok(!existsSync(s3.directory));
});
