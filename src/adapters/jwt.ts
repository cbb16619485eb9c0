import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { SignJWT, jwtVerify, decodeProtectedHeader, exportJWK, generateKeyPair, importJWK, type JWK, type CryptoKey } from 'jose';
import type { Logger } from 'pino';
import { ConfigError, type Config } from '../config.js';
import { DomainError } from '../domain/shared/errors.js';
import type { UserRole } from '../domain/users/user.entity.js';

const ALGORITHMS = ['EdDSA', 'RS256'] as const;
type Alg = (typeof ALGORITHMS)[number];

interface SigningKey {
  kid: string;
  alg: Alg;
  privateKey: CryptoKey;
  publicKey: CryptoKey;
}

export interface AccessClaims {
  sub: string;
  role: UserRole;
}

/** The claims of a verified access token. */
export interface VerifiedAccess extends AccessClaims {
  jti: string;
  exp: number;
}

const unauthorized = (reason: string) => new DomainError('unauthorized', reason);

/** Generates a new signing key as a private JWK with kid, alg and use (for a JWKS file). */
export async function generateSigningJwk(alg: Alg = 'EdDSA'): Promise<JWK> {
  const { privateKey } = await generateKeyPair(alg, { extractable: true, ...(alg === 'EdDSA' ? { crv: 'Ed25519' } : { modulusLength: 2048 }) });
  const jwk = await exportJWK(privateKey);
  return { ...jwk, kid: `${new Date().toISOString().slice(0, 10)}-${randomBytes(4).toString('hex')}`, alg, use: 'sig' };
}

async function importKeySet(jwks: unknown, source: string): Promise<SigningKey[]> {
  const keys = (jwks as { keys?: unknown })?.keys;
  if (!Array.isArray(keys) || keys.length === 0) {
    throw new ConfigError('JWT_KEYS_FILE', 'env', `JWT_KEYS_FILE: ${source} must be a JSON Web Key Set: {"keys": [ ... ]} with at least one key`);
  }
  const out: SigningKey[] = [];
  for (const [i, jwk] of (keys as JWK[]).entries()) {
    const where = `${source} keys[${i}]`;
    if (!jwk.kid) throw new ConfigError('JWT_KEYS_FILE', 'env', `JWT_KEYS_FILE: ${where} has no kid`);
    if (!ALGORITHMS.includes(jwk.alg as Alg)) {
      throw new ConfigError('JWT_KEYS_FILE', 'env', `JWT_KEYS_FILE: ${where} has alg ${jwk.alg ?? '(none)'}; expected one of ${ALGORITHMS.join(', ')}`);
    }
    if (!jwk.d) throw new ConfigError('JWT_KEYS_FILE', 'env', `JWT_KEYS_FILE: ${where} is a public key; svc needs the private key to sign`);
    const { d: _d, p: _p, q: _q, dp: _dp, dq: _dq, qi: _qi, ...pub } = jwk;
    try {
      out.push({
        kid: jwk.kid,
        alg: jwk.alg as Alg,
        privateKey: (await importJWK(jwk, jwk.alg)) as CryptoKey,
        publicKey: (await importJWK(pub, jwk.alg)) as CryptoKey,
      });
    } catch (err) {
      throw new ConfigError('JWT_KEYS_FILE', 'env', `JWT_KEYS_FILE: ${where} is not a usable ${jwk.alg} key: ${(err as Error).message}`);
    }
  }
  if (new Set(out.map((k) => k.kid)).size !== out.length)
    throw new ConfigError('JWT_KEYS_FILE', 'env', `JWT_KEYS_FILE: ${source} has two keys with the same kid`);
  return out;
}

/**
 * The token signing keys: JWT_KEYS_FILE when set; in the embedded mode, a key generated into the data
 * folder once and reused. On PostgreSQL the file is required: instances behind a load balancer must
 * share their keys, and svc never makes up a secret an operator did not provide.
 */
export async function loadSigningKeys(config: Config, logger: Logger): Promise<SigningKey[]> {
  if (config.JWT_KEYS_FILE) {
    let raw: string;
    try {
      raw = readFileSync(config.JWT_KEYS_FILE, 'utf8');
    } catch (err) {
      throw new ConfigError(
        'JWT_KEYS_FILE',
        config.sources.JWT_KEYS_FILE,
        `JWT_KEYS_FILE: cannot read ${config.JWT_KEYS_FILE}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
      );
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(raw);
    } catch {
      throw new ConfigError('JWT_KEYS_FILE', config.sources.JWT_KEYS_FILE, `JWT_KEYS_FILE: ${config.JWT_KEYS_FILE} is not valid JSON`);
    }
    return importKeySet(parsed, config.JWT_KEYS_FILE);
  }
  if (config.DATABASE_URL) {
    throw new ConfigError(
      'JWT_KEYS_FILE',
      'default',
      'JWT_KEYS_FILE is required with DATABASE_URL (every instance must sign with the same keys); create one with `svc keys generate --out jwks.json`',
    );
  }
  const file = join(config.dataDir, 'jwt-keys.json');
  if (!existsSync(file)) {
    writeFileSync(file, `${JSON.stringify({ keys: [await generateSigningJwk()] }, null, 2)}\n`, { mode: 0o600, flag: 'wx' });
    logger.info({ file }, `generated a token signing key into ${file} (embedded mode); set JWT_KEYS_FILE to use your own`);
  }
  return importKeySet(JSON.parse(readFileSync(file, 'utf8')), file);
}

// Access tokens whose verification is remembered (see AccessTokens.verify); about 0.5 KiB each.
const VERIFIED_CACHE_SIZE = 10_000;

/**
 * Signs and verifies access tokens with a key set: the first key signs, every key verifies (rotation).
 * The keys may be given as a loader, run on first use (and again after a failure): every App has
 * token services, but only the processes that sign or verify tokens read the keys.
 */
export class AccessTokens {
  private keySet?: { signing: SigningKey; byKid: Map<string, SigningKey> };
  private loading?: Promise<{ signing: SigningKey; byKid: Map<string, SigningKey> }>;
  private readonly verified = new Map<string, VerifiedAccess>();
  /** Signatures being checked now, by token: the requests a client sends at once with a new token share one check. */
  private readonly verifying = new Map<string, Promise<VerifiedAccess>>();
  private readonly loadKeys: () => Promise<SigningKey[]>;

  constructor(
    keys: SigningKey[] | (() => Promise<SigningKey[]>),
    private readonly options: { issuer: string; audience: string; ttlSeconds: number },
  ) {
    this.loadKeys = Array.isArray(keys) ? () => Promise.resolve(keys) : keys;
    if (Array.isArray(keys)) this.keySet = AccessTokens.index(keys);
  }

  private static index(keys: SigningKey[]) {
    return { signing: keys[0]!, byKid: new Map(keys.map((k) => [k.kid, k])) };
  }

  /** Reads the keys now (svc serve does at start-up, so a missing or bad key set stops it there). */
  async load(): Promise<void> {
    await this.keys();
  }

  private async keys(): Promise<{ signing: SigningKey; byKid: Map<string, SigningKey> }> {
    if (this.keySet) return this.keySet;
    this.loading ??= this.loadKeys().then(
      (keys) => (this.keySet = AccessTokens.index(keys)),
      (err: unknown) => {
        this.loading = undefined;
        throw err;
      },
    );
    return this.loading;
  }

  get ttlSeconds(): number {
    return this.options.ttlSeconds;
  }

  /** Issues a short-lived access token for a user. */
  async sign(claims: AccessClaims): Promise<string> {
    const key = (this.keySet ?? (await this.keys())).signing;
    return new SignJWT({ role: claims.role })
      .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'JWT' })
      .setSubject(claims.sub)
      .setIssuer(this.options.issuer)
      .setAudience(this.options.audience)
      .setIssuedAt()
      .setExpirationTime(`${this.options.ttlSeconds}s`)
      .setJti(randomBytes(12).toString('base64url'))
      .sign(key.privateKey);
  }

  /**
   * Verifies an access token: known kid, the algorithm of that key (so `none` or a swapped algorithm
   * fails), signature, issuer, audience and expiry. Any failure is `unauthorized` with the reason.
   */
  async verify(token: string): Promise<VerifiedAccess> {
    // Checking a signature costs as much CPU as the rest of a typical request, and a client sends the
    // same token with every request until it expires: a token verified once is remembered, by its
    // exact text, until its exp (the keys cannot change while the process runs).
    const known = this.verified.get(token);
    if (known) {
      if (known.exp > Date.now() / 1000) return { ...known };
      this.verified.delete(token);
    }
    let checking = this.verifying.get(token);
    if (!checking) {
      checking = this.verifySignature(token).finally(() => this.verifying.delete(token));
      this.verifying.set(token, checking);
    }
    const claims = await checking;
    if (!this.verified.has(token)) {
      if (this.verified.size >= VERIFIED_CACHE_SIZE) this.verified.delete(this.verified.keys().next().value!);
      this.verified.set(token, claims);
    }
    return { ...claims };
  }

  private async verifySignature(token: string): Promise<VerifiedAccess> {
    let header: ReturnType<typeof decodeProtectedHeader>;
    try {
      header = decodeProtectedHeader(token);
    } catch {
      throw unauthorized('the access token is malformed');
    }
    const { byKid } = this.keySet ?? (await this.keys());
    const key = header.kid ? byKid.get(header.kid) : undefined;
    if (!key) throw unauthorized('the access token was signed with an unknown key');
    if (header.alg !== key.alg) throw unauthorized(`the access token's algorithm ${header.alg ?? '(none)'} is not accepted`);
    try {
      const { payload } = await jwtVerify(token, key.publicKey, {
        algorithms: [key.alg],
        issuer: this.options.issuer,
        audience: this.options.audience,
        requiredClaims: ['sub', 'exp', 'iat', 'jti'],
      });
      if (typeof payload.role !== 'string') throw unauthorized('the access token has no role');
      return { sub: payload.sub!, role: payload.role as UserRole, jti: payload.jti!, exp: payload.exp! };
    } catch (err) {
      if (err instanceof DomainError) throw err;
      const code = (err as { code?: string }).code;
      if (code === 'ERR_JWT_EXPIRED') throw unauthorized('the access token has expired; refresh it');
      if (code === 'ERR_JWT_CLAIM_VALIDATION_FAILED')
        throw unauthorized(`the access token is not for this service (${(err as { claim?: string }).claim} claim)`);
      throw unauthorized('the access token is not valid');
    }
  }
}
