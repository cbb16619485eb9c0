import type { SqlEntityManager } from '@mikro-orm/sql';
import { DomainError } from '../shared/errors.js';
import { query, rowDate } from '../shared/sql.js';
import { sha256 } from './authenticator.js';

/**
 * Brute-force protection for password login, per email (existing or not, so it reveals nothing):
 * after `maxFailures` wrong passwords within `windowSeconds`, the email is locked for
 * `lockSeconds` from the last failure, doubling with each further failure up to `maxLockSeconds`.
 * A locked email gets 429 even with the right password; a successful login clears the count. Kept
 * in PostgreSQL, so every replica behind the load balancer sees the same count.
 */
export const LOGIN_THROTTLE = { maxFailures: 5, windowSeconds: 15 * 60, lockSeconds: 60, maxLockSeconds: 15 * 60 } as const;

/** The row key for an email: a SHA-256 of its lower-cased form, so mistyped emails are not stored. */
export const throttleKey = (email: string) => sha256(email.trim().toLowerCase());

/** When the lock earned by `failures` failures, the last at `lastFailedAt`, ends (no later than it if there is none). */
function lockEnd(failures: number, lastFailedAt: Date): Date {
  const { maxFailures, lockSeconds, maxLockSeconds } = LOGIN_THROTTLE;
  if (failures < maxFailures) return lastFailedAt;
  const seconds = Math.min(maxLockSeconds, lockSeconds * 2 ** (failures - maxFailures));
  return new Date(lastFailedAt.getTime() + seconds * 1000);
}

/**
 * Refuses a login attempt for a locked email with 429 and the seconds to wait; otherwise says
 * whether failures are on record (so a successful login clears them only then).
 */
export async function assertNotLocked(em: SqlEntityManager, key: string, now: Date): Promise<boolean> {
  const [row] = await query<{ failures: number; last_failed_at: Date | string }>(em, 'select failures, last_failed_at from login_throttles where key = $1', [key]);
  if (!row) return false;
  const wait = lockEnd(row.failures, rowDate(row.last_failed_at)).getTime() - now.getTime();
  if (wait <= 0) return true;
  const seconds = Math.ceil(wait / 1000);
  throw new DomainError('rate_limited', `too many failed logins for this email; try again in ${seconds} s`, { retryAfterSeconds: seconds });
}

/** Counts a failed login, atomically whatever runs concurrently; a window that has passed starts again at 1. */
export async function recordFailure(em: SqlEntityManager, key: string, now: Date): Promise<void> {
  const windowStart = new Date(now.getTime() - LOGIN_THROTTLE.windowSeconds * 1000);
  await query(
    em,
    `insert into login_throttles as t (key, failures, window_started_at, last_failed_at) values ($1, 1, $2, $2)
     on conflict (key) do update set
       failures = case when t.window_started_at <= $3 then 1 else t.failures + 1 end,
       window_started_at = case when t.window_started_at <= $3 then $2 else t.window_started_at end,
       last_failed_at = $2`,
    [key, now, windowStart],
  );
}

/** Forgets the failures of an email after a successful login. */
export async function clearFailures(em: SqlEntityManager, key: string): Promise<void> {
  await query(em, 'delete from login_throttles where key = $1', [key]);
}
