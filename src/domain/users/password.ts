import { argon2, randomBytes, timingSafeEqual } from 'node:crypto';
import { promisify } from 'node:util';
import { Bulkhead, type BulkheadStats } from '../shared/bulkhead.js';

const argon2Async = promisify(argon2);

// OWASP Password Storage Cheat Sheet, argon2id: 19 MiB of memory, 2 iterations, parallelism 1.
const PARAMS = { memory: 19_456, passes: 2, parallelism: 1, tagLength: 32 } as const;

const b64 = (buf: Buffer) => buf.toString('base64').replace(/=+$/, '');

const toPhc = (nonce: Buffer, hash: Buffer) => `$argon2id$v=19$m=${PARAMS.memory},t=${PARAMS.passes},p=${PARAMS.parallelism}$${b64(nonce)}$${b64(hash)}`;

/**
 * Hashes a password with argon2id into a PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`). Not
 * bounded: services hash through a PasswordHasher.
 */
export async function hashPassword(password: string): Promise<string> {
  const nonce = randomBytes(16);
  const hash = await argon2Async('argon2id', { message: password, nonce, ...PARAMS });
  return toPhc(nonce, hash);
}

/**
 * Checks a password against a PHC string made by hashPassword (with whatever parameters it
 * recorded). Not bounded: services verify through a PasswordHasher.
 */
export async function verifyPassword(password: string, phc: string): Promise<boolean> {
  const m = /^\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$/.exec(phc);
  if (!m) return false;
  const expected = Buffer.from(m[5]!, 'base64');
  const actual = await argon2Async('argon2id', {
    message: password,
    nonce: Buffer.from(m[4]!, 'base64'),
    memory: Number(m[1]),
    passes: Number(m[2]),
    parallelism: Number(m[3]),
    tagLength: expected.length,
  });
  return actual.length === expected.length && timingSafeEqual(actual, expected);
}

/** What a password must be: a clear message for anything else. */
export function passwordProblem(password: string): string | undefined {
  if (password.length < 12) return 'the password must be at least 12 characters long';
  if (password.length > 256) return 'the password must be at most 256 characters long';
  return undefined;
}

/**
 * Password hashing for a whole process, bounded. An argon2id hash at the parameters above takes
 * 19 MiB and about 0.1 s of a core on libuv's thread pool (4 threads, shared with file system and DNS
 * work), so at most `concurrency` hashes run at once and at most `queue` more wait; a hash beyond
 * that is refused with `unavailable` (503 with Retry-After) instead of joining an unbounded backlog.
 */
export class PasswordHasher {
  private readonly bulkhead: Bulkhead;
  /**
   * A PHC string with the parameters of real hashes and random bytes for a hash: verifying any
   * password against it costs what a real verification costs and fails. Logins for emails without a
   * password are checked against it, so they take as long as the others.
   */
  readonly decoy = toPhc(randomBytes(16), randomBytes(PARAMS.tagLength));

  constructor(limits: { concurrency: number; queue: number }) {
    this.bulkhead = new Bulkhead('password hashes', limits);
  }

  /** Hashes a new password (see hashPassword), in turn. */
  hash(password: string): Promise<string> {
    return this.bulkhead.run(() => hashPassword(password));
  }

  /** Checks a password against a stored hash (see verifyPassword), in turn. */
  verify(password: string, phcString: string): Promise<boolean> {
    return this.bulkhead.run(() => verifyPassword(password, phcString));
  }

  /** Hashes running and waiting now, and done or refused so far. */
  stats(): BulkheadStats {
    return this.bulkhead.stats();
  }
}
