import { createHash } from 'node:crypto';
import type { SqlEntityManager } from '@mikro-orm/sql';
import { DomainError } from '../shared/errors.js';
import { select } from '../shared/sql.js';

/**
 * Brute-force protection for password login, per email (existing or not, so it reveals nothing):
 * after `maxFailures` wrong passwords within `windowSeconds`, the email is locked for
 * `lockSeconds`, doubling with each further failure up to `maxLockSeconds`. A locked email gets
 * 429 even with the right password; a successful login clears the count. Kept in PostgreSQL, so
 * every replica behind the load balancer sees the same count.
 */
export const LOGIN_THROTTLE = { maxFailures: 5, windowSeconds: 15 * 60, lockSeconds: 60, maxLockSeconds: 15 * 60 } as const;

/** The row key for an email: a SHA-256 of its lower-cased form, so mistyped emails are not stored. */
export const throttleKey = (email: string) => createHash('sha256').update(email.trim().toLowerCase()).digest('hex');

/** Refuses a login attempt for a locked email with 429 and the seconds to wait. */
export async function assertNotLocked(em: SqlEntityManager, key: string, now: Date): Promise<void> {
  const [row] = await select<{ locked_until: Date | string }>(em, 'select locked_until from login_throttles where key = $1 and locked_until > $2', [key, now]);
  if (!row) return;
  const until = new Date(row.locked_until);
  const seconds = Math.max(1, Math.ceil((until.getTime() - now.getTime()) / 1000));
  throw new DomainError('rate_limited', `too many failed logins for this email; try again in ${seconds} s`, { retryAfterSeconds: seconds });
}

/** Counts a failed login (atomically, whatever runs concurrently) and locks the email once the count reaches the limit. */
export async function recordFailure(em: SqlEntityManager, key: string, now: Date): Promise<{ failures: number; lockedUntil: Date | null }> {
  const { maxFailures, windowSeconds, lockSeconds, maxLockSeconds } = LOGIN_THROTTLE;
  const windowStart = new Date(now.getTime() - windowSeconds * 1000);
  // $5: the count after this failure (a window that has passed starts again at 1).
  const [row] = await select<{ failures: number; locked_until: Date | string | null }>(
    em,
    `insert into login_throttles as t (key, failures, window_started_at, locked_until)
     values ($1, 1, $2, case when 1 >= $4::int then $2::timestamptz + make_interval(secs => $5::int) end)
     on conflict (key) do update set
       failures = case when t.window_started_at <= $3 then 1 else t.failures + 1 end,
       window_started_at = case when t.window_started_at <= $3 then $2 else t.window_started_at end,
       locked_until = case
         when (case when t.window_started_at <= $3 then 1 else t.failures + 1 end) >= $4::int
         then $2::timestamptz + make_interval(secs => least($6::int,
           $5::int * power(2, (case when t.window_started_at <= $3 then 1 else t.failures + 1 end) - $4::int))::int)
       end
     returning failures, locked_until`,
    [key, now, windowStart, maxFailures, lockSeconds, maxLockSeconds],
  );
  return { failures: row!.failures, lockedUntil: row!.locked_until === null ? null : new Date(row!.locked_until) };
}

/** Forgets the failures of an email after a successful login. */
export async function clearFailures(em: SqlEntityManager, key: string): Promise<void> {
  await select(em, 'delete from login_throttles where key = $1', [key]);
}
