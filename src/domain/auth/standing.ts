import { versions, type Cache } from '../shared/cache.js';
import type { Sql } from '../shared/sql.js';
import type { UserRole, UserStatus } from '../users/user.entity.js';

/** A user's role and status as they are now (an access token only says what they were when it was issued). */
export interface Standing {
  role: UserRole;
  status: UserStatus;
}

/**
 * Current role and status of users, kept in the versioned cache under the user's version
 * (`versions.user`), which every change to a user's role or status moves once it has committed
 * (UsersService, through the API or a command): with REDIS_URL a change applies on every instance
 * before it is acknowledged, at the cost of the cache's version check (one call of the turn's
 * batched Redis script), not of a database read. A copy is never served once it is `ttlMs` old,
 * whatever its version, which bounds how stale a standing can be if an invalidation never arrives
 * (a command that could not reach Redis), and while Redis is unreachable a copy younger than that
 * is served (see TwoLevelCache).
 */
export class UserStandings {
  constructor(
    private readonly cache: Cache,
    private readonly ttlMs: number,
  ) {}

  /** The user's standing, or undefined when the user no longer exists. */
  get(sql: Sql, userId: string): Promise<Standing | undefined> {
    if (this.ttlMs === 0) return read(sql, userId);
    return this.cache.get('users', versions.user(userId), `standing:${userId}`, () => read(sql, userId), { maxAgeMs: this.ttlMs });
  }
}

async function read(sql: Sql, userId: string): Promise<Standing | undefined> {
  const [row] = await sql<Standing>('select role, status from users where id = $1', [userId]);
  return row;
}
