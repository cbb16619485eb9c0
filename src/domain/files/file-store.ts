/** The file store port: S3 in production, a folder in the data folder on the embedded default. */
export interface FileStore {
  /** 's3' or 'local', for logs. */
  readonly name: string;
  /** Stores a file under a key (overwriting is idempotent: same key, same bytes), encrypted at rest. */
  put(key: string, body: Buffer, options: { contentType: string }): Promise<StoredFile>;
  /** A short-lived URL that lets whoever holds it download the file. */
  signedUrl(key: string, expiresInSeconds: number): Promise<{ url: string; expiresAt: Date }>;
  /** 'ok', or what is wrong (for /health/ready). */
  check(): Promise<string>;
}

export interface StoredFile {
  key: string;
  size: number;
  /** Hex SHA-256 of the bytes. */
  sha256: string;
}
