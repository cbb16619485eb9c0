/**
 * A real S3-protocol server for tests: s3rver (https://github.com/jamhall/s3rver) on 127.0.0.1, a free
 * port, a temporary folder and one bucket, with the S3Client configuration that works against it:
 *
 *   const s3 = await startFakeS3();
 *   t.after(() => s3.close());
 *   const client = s3.client();                 // or new S3Client(s3.clientConfig), destroyed by you
 *
 * s3rver is served through our own loopback server so that close() ends keep-alive connections at
 * once and every request's headers are recorded: s3rver accepts `x-amz-server-side-encryption` but
 * neither stores nor echoes it, so a test asserts the header the code sent (see README.md for the
 * other gaps: no SigV4 signature check, among them).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';
import S3rver from 's3rver';
import { listenOnLoopback } from './http-server.js';

/** s3rver's built-in account (`S3RVER` / `S3RVER`). */
export const S3RVER_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };

export interface S3RequestLog {
  method: string;
  /** Path-style: /<bucket>/<key> */
  path: string;
  query: URLSearchParams;
  headers: Record<string, string | string[] | undefined>;
}

export interface FakeS3 {
  url: string;
  port: number;
  /** The bucket created at start. */
  bucket: string;
  /** Where s3rver keeps the objects (removed by close()). */
  directory: string;
  /** For `new S3Client(...)` against this server. */
  clientConfig: S3ClientConfig;
  /** An S3Client on this server, destroyed by close(). */
  client(): S3Client;
  /** Every request s3rver received, in order. */
  readonly requests: readonly S3RequestLog[];
  close(): Promise<void>;
}

export interface FakeS3Options {
  /** Bucket to create (default `svc-test`). */
  bucket?: string;
}

export async function startFakeS3(options: FakeS3Options = {}): Promise<FakeS3> {
  const bucket = options.bucket ?? 'svc-test';
  const directory = mkdtempSync(join(tmpdir(), 'svc-s3rver-'));
  const s3rver = new S3rver({ silent: true, directory, configureBuckets: [{ name: bucket, configs: [] }] });
  await s3rver.configureBuckets();
  const handler = s3rver.callback();
  const requests: S3RequestLog[] = [];
  const server = await listenOnLoopback((req, res) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    requests.push({ method: req.method ?? 'GET', path: decodeURIComponent(url.pathname), query: url.searchParams, headers: { ...req.headers } });
    handler(req, res);
  });
  const clientConfig: S3ClientConfig = {
    endpoint: server.url,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: S3RVER_CREDENTIALS,
    // Since 2025 the SDK adds CRC checksums by default and sends a streaming body aws-chunked with a
    // trailing checksum; s3rver stores that framing as the object's bytes. WHEN_REQUIRED is the SDK's
    // earlier behaviour (and valid against AWS): plain bodies, checksums only where an API needs one.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  };
  const clients: S3Client[] = [];
  return {
    url: server.url,
    port: server.port,
    bucket,
    directory,
    clientConfig,
    client() {
      const client = new S3Client(clientConfig);
      clients.push(client);
      return client;
    },
    get requests() {
      return requests;
    },
    async close() {
      for (const client of clients) client.destroy();
      await server.close();
      rmSync(directory, { recursive: true, force: true });
    },
  };
}
