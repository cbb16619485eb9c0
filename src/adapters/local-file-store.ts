import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { constants } from 'node:fs';
import { access, mkdir, open, readFile } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { join } from 'node:path';
import type { FileStore, StoredFile } from '../domain/files/file-store.js';
import { DomainError } from '../domain/shared/errors.js';
import { createFileExclusive, writeFileAtomic } from './atomic-file.js';

// A key is up to 8 segments of letters, digits, dots, hyphens and underscores, none starting with a
// dot: no `..`, no hidden or temporary file, no absolute path, nothing that leaves the folder.
const SEGMENT = '[A-Za-z0-9][A-Za-z0-9._-]{0,127}';
const KEY = new RegExp(`^${SEGMENT}(?:/${SEGMENT}){0,7}$`);
const CONTENT_TYPE = /^[\w.+-]+\/[\w.+-]+(?:\s*;\s*[\w.+-]+=[\w.+-]+)*$/;

/** Whether a string is a key the local file store accepts (and so a path inside its folder). */
export function isFileKey(key: string): boolean {
  return key.length <= 512 && KEY.test(key);
}

interface FileMeta {
  contentType: string;
  size: number;
  sha256: string;
}

/** A stored file opened for a download: its bytes as a stream, their length and type. */
export interface OpenedFile {
  stream: Readable;
  size: number;
  contentType: string;
}

/**
 * The file store of the embedded default: each file under `<data folder>/files/<key>` (written
 * atomically; its content type, size and SHA-256 beside it under `files-meta/`), handed out as
 * links to svc serve's `GET /files/<key>?expires=…&signature=…`, signed with HMAC-SHA256 under a
 * key generated into the data folder on first use (`file-links.key`, never a built-in secret). The
 * files are not encrypted at rest (they sit in the data folder, mode 0600, like the database).
 */
export class LocalFileStore implements FileStore {
  readonly name = 'local';
  private secret?: Promise<Buffer>;

  constructor(
    private readonly options: {
      /** The data folder. */
      dataDir: string;
      /** The base URL of svc serve as clients reach it (PUBLIC_URL, or the bound address); undefined before it listens. */
      publicUrl: () => string | undefined;
      /** Milliseconds since the epoch (tests move it). */
      now?: () => number;
    },
  ) {}

  /** The folder the files are in. */
  get dir(): string {
    return join(this.options.dataDir, 'files');
  }

  /** Writes the file (replacing one under the same key) and its metadata. */
  async put(key: string, body: Buffer, options: { contentType: string }): Promise<StoredFile> {
    this.assertKey(key);
    if (!CONTENT_TYPE.test(options.contentType)) throw new DomainError('invalid', `content type ${JSON.stringify(options.contentType)} is not a media type`);
    const meta: FileMeta = { contentType: options.contentType, size: body.length, sha256: createHash('sha256').update(body).digest('hex') };
    await writeFileAtomic(join(this.dir, key), body);
    await writeFileAtomic(this.metaPath(key), JSON.stringify(meta));
    return { key, size: meta.size, sha256: meta.sha256 };
  }

  /** A link to svc serve that downloads the file until it expires (whole seconds). */
  async signedUrl(key: string, expiresInSeconds: number): Promise<{ url: string; expiresAt: Date }> {
    this.assertKey(key);
    const base = this.options.publicUrl();
    if (!base) throw new DomainError('unavailable', 'the local file store has no address to link to: set PUBLIC_URL (or ask svc serve, which knows its own)');
    const expires = Math.floor(this.now() / 1000) + Math.max(1, Math.ceil(expiresInSeconds));
    const signature = await this.sign(key, expires);
    const path = key.split('/').map(encodeURIComponent).join('/');
    return { url: `${base}/files/${path}?expires=${expires}&signature=${signature}`, expiresAt: new Date(expires * 1000) };
  }

  /** 'ok' when the folder can be written, else why not. */
  async check(): Promise<string> {
    try {
      await mkdir(this.dir, { recursive: true, mode: 0o700 });
      await access(this.dir, constants.W_OK);
      return 'ok';
    } catch (err) {
      return `cannot write ${this.dir}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`;
    }
  }

  /**
   * Opens a file for a signed link's download: the key must be a key, the signature the store's for
   * that key and expiry, the expiry not past, and the file there. Refusals are domain errors
   * (`not_found`, `forbidden`) whose messages say which check failed.
   */
  async open(key: string, query: { expires?: string; signature?: string }): Promise<OpenedFile> {
    if (!isFileKey(key)) throw new DomainError('not_found', `${JSON.stringify(key)} is not a file key`);
    const expires = query.expires && /^\d{1,12}$/.test(query.expires) ? Number(query.expires) : undefined;
    if (expires === undefined || !query.signature)
      throw new DomainError('forbidden', 'the link is not signed: it needs its expires and signature parameters, as it was handed out');
    const expected = Buffer.from(await this.sign(key, expires));
    const given = Buffer.from(query.signature);
    if (given.length !== expected.length || !timingSafeEqual(given, expected))
      throw new DomainError('forbidden', 'the link signature does not match: use the link exactly as it was handed out');
    if (expires * 1000 <= this.now()) {
      throw new DomainError('forbidden', `the link expired at ${new Date(expires * 1000).toISOString()}; ask for a new one`);
    }
    let meta: FileMeta;
    try {
      meta = JSON.parse(await readFile(this.metaPath(key), 'utf8')) as FileMeta;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new DomainError('not_found', `no file ${key}`);
      throw err;
    }
    let handle;
    try {
      handle = await open(join(this.dir, key), 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new DomainError('not_found', `no file ${key}`);
      throw err;
    }
    try {
      // The size of the bytes this handle reads, even if the file is replaced meanwhile (rename keeps them).
      const { size } = await handle.stat();
      return { stream: handle.createReadStream(), size, contentType: meta.contentType };
    } catch (err) {
      await handle.close();
      throw err;
    }
  }

  private assertKey(key: string): void {
    if (!isFileKey(key)) {
      throw new DomainError(
        'invalid',
        `file key ${JSON.stringify(key)} must be up to 8 /-separated parts of letters, digits, '.', '-' and '_', none starting with '.'`,
      );
    }
  }

  private metaPath(key: string): string {
    return join(this.options.dataDir, 'files-meta', `${key}.json`);
  }

  private now(): number {
    return this.options.now?.() ?? Date.now();
  }

  private async sign(key: string, expires: number): Promise<string> {
    const secret = await this.linkSecret();
    return createHmac('sha256', secret).update(`${key}\n${expires}`).digest('base64url');
  }

  // Generated into the data folder on first use: every process on the folder (svc serve, svc worker)
  // signs and checks with the same key, and a restart keeps links valid until they expire.
  private linkSecret(): Promise<Buffer> {
    this.secret ??= (async () => {
      const file = join(this.options.dataDir, 'file-links.key');
      await createFileExclusive(file, `${randomBytes(32).toString('hex')}\n`);
      const hex = (await readFile(file, 'utf8')).trim();
      if (!/^[\da-f]{64}$/.test(hex)) throw new DomainError('internal', `${file} does not hold a 32-byte hex key; delete it to have a new one generated`);
      return Buffer.from(hex, 'hex');
    })().catch((err: unknown) => {
      this.secret = undefined;
      throw err;
    });
    return this.secret;
  }
}
