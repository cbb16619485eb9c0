import type { Sql } from '../shared/sql.js';
import type { UserRole, UserStatus } from '../users/user.entity.js';

/** A user's role and status as they are now (an access token only says what they were when it was issued). */
export interface Standing {
  role: UserRole;
  status: UserStatus;
}

// Bounds the memory of a process that sees many users: the oldest entry goes first.
const MAX_ENTRIES = 10_000;

/**
 * Current role and status of users, read from the database and kept for a few seconds, so that
 * disabling a user or changing their role takes effect on every replica within that time, without
 * a read on every request. `forget` makes a change made by this process take effect at once here.
 */
export class UserStandings {
  readonly #cache = new Map<string, { readAt: number; standing: Promise<Standing | undefined> }>();

  constructor(
    private readonly ttlMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** The user's standing, or undefined when the user no longer exists. */
  get(sql: Sql, userId: string): Promise<Standing | undefined> {
    if (this.ttlMs === 0) return read(sql, userId);
    const now = this.now();
    const hit = this.#cache.get(userId);
    if (hit && now - hit.readAt < this.ttlMs) return hit.standing;
    // Requests for the same user share one read; a failed read is not kept.
    const standing = read(sql, userId);
    this.#cache.delete(userId);
    this.#cache.set(userId, { readAt: now, standing });
    if (this.#cache.size > MAX_ENTRIES) this.#cache.delete(this.#cache.keys().next().value!);
    standing.catch(() => {
      if (this.#cache.get(userId)?.standing === standing) this.#cache.delete(userId);
    });
    return standing;
  }

  forget(userId: string): void {
    this.#cache.delete(userId);
  }
}

async function read(sql: Sql, userId: string): Promise<Standing | undefined> {
  const [row] = await sql<Standing>('select role, status from users where id = $1', [userId]);
  return row;
}
