import { DomainError } from '../shared/errors.js';
import type { Sql } from '../shared/sql.js';
import { sha256 } from './authenticator.js';

/**
 * Brute-force protection for password login, per email (existing or not, so it reveals nothing), as
 * a decaying count of attempts (the generic cell rate algorithm): each attempt adds one before its
 * password is checked, the count decays by one every `decaySeconds`, and an attempt that finds the
 * count at `burst` is refused unchecked: 429 with the seconds until one will be allowed, even with
 * the right password. A successful login clears the count. Whatever an attacker does, one email
 * gets `burst` attempts at once, then one per `decaySeconds`: at most 8 in any hour, 4 an hour after
 * the first five. Kept in PostgreSQL (one row per email hash), so every replica shares the count.
 */
export const LOGIN_THROTTLE = { burst: 5, decaySeconds: 15 * 60 } as const;

/** The row key for an email: a SHA-256 of its lower-cased form, so mistyped emails are not stored. */
export const throttleKey = (email: string) => sha256(email.trim().toLowerCase());

/**
 * Counts a login attempt before its password is checked, or refuses it (429 with Retry-After) when
 * the count is at the limit. One statement decides, so of any number of concurrent attempts at most
 * as many as the count allows get through. A refused attempt is not counted.
 */
export async function countAttempt(sql: Sql, key: string, now: Date): Promise<void> {
  const { burst, decaySeconds } = LOGIN_THROTTLE;
  // The row holds when the count will have decayed to zero (drained_at). An attempt adds one decay
  // period to it (from now, if that is later) and is allowed while the count before it is at most
  // burst - 1: while drained_at is at most burst - 1 periods ahead. The row lock taken by the upsert
  // makes concurrent attempts for one email take their turn, each seeing the others' counts.
  const counted = await sql(
    `insert into login_throttles as t (key, drained_at) values ($1, $2::timestamptz + $3 * interval '1 second')
     on conflict (key) do update set drained_at = greatest(t.drained_at, $2::timestamptz) + $3 * interval '1 second'
       where t.drained_at <= $2::timestamptz + $4 * interval '1 second'
     returning key`,
    [key, now, decaySeconds, (burst - 1) * decaySeconds],
  );
  if (counted.length > 0) return;
  // Refused (the statement changed nothing): the next attempt is allowed once the count is below the limit.
  const [row] = await sql<{ drained_at: Date }>('select drained_at from login_throttles where key = $1', [key]);
  const wait = row ? row.drained_at.getTime() - (burst - 1) * decaySeconds * 1000 - now.getTime() : 0;
  const seconds = Math.max(1, Math.ceil(wait / 1000));
  throw new DomainError('rate_limited', `too many failed logins for this email; try again in ${seconds} s`, { retryAfterSeconds: seconds });
}

/** Takes back an attempt that was counted but never checked (the server turned it away), so it costs the email nothing. */
export async function uncountAttempt(sql: Sql, key: string): Promise<void> {
  await sql(`update login_throttles set drained_at = drained_at - $2 * interval '1 second' where key = $1`, [key, LOGIN_THROTTLE.decaySeconds]);
}

/** Forgets the attempts of an email after a successful login. */
export async function clearAttempts(sql: Sql, key: string): Promise<void> {
  await sql('delete from login_throttles where key = $1', [key]);
}
