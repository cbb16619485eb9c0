import { createHash } from 'node:crypto';
import { GetObjectCommand, HeadBucketCommand, PutObjectCommand, S3Client, S3ServiceException, type S3ClientConfig } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import type { Logger } from 'pino';
import { DomainError } from '../domain/shared/errors.js';
import type { FileStore, StoredFile } from '../domain/files/file-store.js';

export interface S3FileStoreOptions {
  /** S3_BUCKET. */
  bucket: string;
  /** S3_ENDPOINT: an S3-compatible server instead of AWS (MinIO, s3rver …). */
  endpoint?: string;
  /** S3_REGION. */
  region: string;
  /** S3_FORCE_PATH_STYLE: `endpoint/bucket/key` instead of `bucket.endpoint/key` (most S3-compatible servers). */
  forcePathStyle: boolean;
  logger: Logger;
  /** Default: the SDK's chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, profiles, instance roles). */
  credentials?: S3ClientConfig['credentials'];
  /** How long to wait for a connection, and for a silent socket (default 3 s and 15 s). */
  connectionTimeoutMs?: number;
  requestTimeoutMs?: number;
}

/** SigV4 presigned URLs live at most 7 days. */
const MAX_EXPIRY_SECONDS = 7 * 24 * 3600;

/** Files on S3 (or an S3-compatible server), encrypted at rest with S3-managed keys (SSE-S3). */
export class S3FileStore implements FileStore {
  readonly name = 's3';
  private readonly client: S3Client;
  private readonly bucket: string;
  private readonly where: string;
  private readonly logger: Logger;

  constructor(options: S3FileStoreOptions) {
    this.bucket = options.bucket;
    this.where = options.endpoint ? `S3 at ${options.endpoint} (S3_ENDPOINT)` : `S3 in ${options.region} (S3_REGION)`;
    this.logger = options.logger;
    this.client = new S3Client({
      region: options.region,
      forcePathStyle: options.forcePathStyle,
      ...(options.endpoint ? { endpoint: options.endpoint } : {}),
      ...(options.credentials ? { credentials: options.credentials } : {}),
      // Since 2025 the SDK adds a CRC32 checksum to every upload and sends streamed bodies
      // aws-chunked with a trailing checksum, which several S3-compatible servers store as the
      // object's bytes. WHEN_REQUIRED is valid on AWS too; put() sends its own SHA-256 instead.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      requestHandler: { connectionTimeout: options.connectionTimeoutMs ?? 3_000, requestTimeout: options.requestTimeoutMs ?? 15_000 },
      // Resolve each command's middleware stack once rather than at every request (cloning and
      // sorting some thirty middleware, about 5 % of an upload's CPU in a profile). The SDK's own
      // switch: right when nothing adds middleware to a command or the client after the first
      // request, as here (getSignedUrl resolves its own stack); the requests then share one handler
      // context, which holds what is the same for all of them (one bucket, one endpoint, one signer).
      cacheMiddleware: true,
    });
  }

  /** Stores the bytes under the key with SSE-S3, their SHA-256 checked by S3 on arrival. */
  async put(key: string, body: Buffer, options: { contentType: string }): Promise<StoredFile> {
    const digest = createHash('sha256').update(body).digest();
    const sha256 = digest.toString('hex');
    try {
      await this.client.send(
        new PutObjectCommand({
          Bucket: this.bucket,
          Key: key,
          Body: body,
          ContentLength: body.length,
          ContentType: options.contentType,
          ServerSideEncryption: 'AES256',
          // S3 refuses the upload if the bytes it got do not have this digest.
          ChecksumSHA256: digest.toString('base64'),
          Metadata: { sha256 },
        }),
      );
    } catch (err) {
      throw this.failure(err, `store ${key}`);
    }
    this.logger.debug({ store: 's3', bucket: this.bucket, key, size: body.length }, 'file stored');
    return { key, size: body.length, sha256 };
  }

  /** A presigned GET URL valid for `expiresInSeconds` (1 s to 7 days). */
  async signedUrl(key: string, expiresInSeconds: number): Promise<{ url: string; expiresAt: Date }> {
    if (!Number.isInteger(expiresInSeconds) || expiresInSeconds < 1 || expiresInSeconds > MAX_EXPIRY_SECONDS) {
      throw new DomainError('invalid', `a presigned S3 URL lives 1 to ${MAX_EXPIRY_SECONDS} seconds, not ${expiresInSeconds}`);
    }
    const signedAt = new Date();
    try {
      const url = await getSignedUrl(this.client, new GetObjectCommand({ Bucket: this.bucket, Key: key }), {
        expiresIn: expiresInSeconds,
        signingDate: signedAt,
      });
      // SigV4 counts from X-Amz-Date, which has whole seconds.
      return { url, expiresAt: new Date(Math.floor(signedAt.getTime() / 1000) * 1000 + expiresInSeconds * 1000) };
    } catch (err) {
      throw this.failure(err, `sign a URL for ${key}`);
    }
  }

  /** 'ok' when the bucket is there and ours; otherwise what is wrong and which setting to look at. */
  async check(): Promise<string> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
      return 'ok';
    } catch (err) {
      return this.failure(err, 'reach the bucket').message;
    }
  }

  /** Destroys the client's connections. */
  close(): void {
    this.client.destroy();
  }

  /** A failed S3 call as an `unavailable` DomainError naming the service and the setting to check. */
  private failure(err: unknown, what: string): DomainError {
    const details = { service: 's3', bucket: this.bucket };
    if (err instanceof S3ServiceException) {
      const status = err.$metadata.httpStatusCode;
      if (err.name === 'NoSuchBucket' || err.name === 'NotFound' || (status === 404 && what === 'reach the bucket')) {
        return new DomainError('unavailable', `cannot ${what}: the bucket "${this.bucket}" does not exist on ${this.where}; check S3_BUCKET`, details, {
          cause: err,
        });
      }
      if (status === 403 || err.name === 'InvalidAccessKeyId' || err.name === 'SignatureDoesNotMatch' || err.name === 'AccessDenied') {
        return new DomainError(
          'unavailable',
          `cannot ${what}: ${this.where} refused access to the bucket "${this.bucket}" (${err.name}); check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket's policy`,
          details,
          { cause: err },
        );
      }
      return new DomainError(
        'unavailable',
        `cannot ${what}: ${this.where} answered ${status ?? ''} ${err.name}: ${err.message}`.replace(/\s+/g, ' '),
        details,
        {
          cause: err,
        },
      );
    }
    if (err instanceof Error && err.name === 'CredentialsProviderError') {
      return new DomainError('unavailable', `cannot ${what}: no AWS credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY`, details, { cause: err });
    }
    const code = typeof err === 'object' && err !== null ? (err as { code?: unknown }).code : undefined;
    const reason = typeof code === 'string' ? code : err instanceof Error ? err.message : String(err);
    return new DomainError('unavailable', `cannot ${what}: cannot reach ${this.where}: ${reason}`, details, { cause: err });
  }
}
