import { createHash, timingSafeEqual } from 'node:crypto';
import type { Ctx } from '../shared/context.js';
import { DomainError } from '../shared/errors.js';
import type { Sql } from '../shared/sql.js';
import type { UserRole, UserStatus } from '../users/user.entity.js';
import type { Principal } from './principal.js';
import type { UserStandings } from './standing.js';

/** Verifies access tokens (implemented by the JWT adapter). */
export interface AccessTokenVerifier {
  verify(token: string): Promise<{ sub: string; role: UserRole }>;
}

// `svc_<key id>_<secret>`: the id finds the row, the secret is compared with its stored hash.
const API_KEY = /^svc_(key_[0-9A-HJKMNP-TV-Z]{26})_([A-Za-z0-9_-]{43})$/;

const LAST_USED_PRECISION_MS = 60_000;

export const sha256 = (value: string) => createHash('sha256').update(value).digest('hex');

const unauthorized = (reason: string) => new DomainError('unauthorized', reason);

/** An API key with its user's role and status, as authentication reads it. */
interface KeyRow {
  id: string;
  secret_hash: string;
  last_used_at: Date | null;
  revoked_at: Date | null;
  user_id: string;
  role: UserRole;
  status: UserStatus;
}

// One prepared statement on the pool for a key and its user (the ORM's unit of work would fork an
// EntityManager, build the query and hydrate two entities on every request made with a key).
const KEY_WITH_USER = `select k.id, k.secret_hash, k.last_used_at, k.revoked_at, u.id as user_id, u.role, u.status
  from api_keys k join users u on u.id = k.user_id where k.id = $1`;

/** Turns a bearer credential (an access token or an API key) into the principal it stands for. */
export class Authenticator {
  /** `standings`: users' current role and status (cached; see UserStandings). */
  constructor(
    private readonly tokens: AccessTokenVerifier,
    readonly standings: UserStandings,
  ) {}

  /** Authenticates `Authorization: Bearer …`; anything missing, malformed, expired or revoked is unauthorized. */
  async authenticate(ctx: Ctx, authorization: string | undefined): Promise<Principal> {
    if (!authorization) throw unauthorized('this route needs a bearer token: Authorization: Bearer <access token or API key>');
    const match = /^Bearer\s+(\S+)$/i.exec(authorization.trim());
    if (!match) throw unauthorized('the Authorization header must be "Bearer <token>"');
    const credential = match[1]!;
    if (credential.startsWith('svc_')) return this.apiKey(ctx.sql, credential);
    const claims = await this.tokens.verify(credential);
    // The token says who the user was when it was issued; their role and status are what they are now.
    const standing = await this.standings.get(ctx.sql, claims.sub);
    if (!standing) throw unauthorized("the access token's user no longer exists");
    if (standing.status !== 'active') throw unauthorized('the user is disabled');
    return { kind: 'user', userId: claims.sub, role: standing.role };
  }

  private async apiKey(sql: Sql, credential: string): Promise<Principal> {
    const m = API_KEY.exec(credential);
    if (!m) throw unauthorized('the API key is malformed');
    const [key] = await sql<KeyRow>(KEY_WITH_USER, [m[1]!]);
    const expected = Buffer.from(key?.secret_hash ?? '0'.repeat(64), 'hex');
    const matches = timingSafeEqual(Buffer.from(sha256(m[2]!), 'hex'), expected);
    if (!key || !matches) throw unauthorized('the API key is not valid');
    if (key.revoked_at) throw unauthorized('the API key has been revoked');
    if (key.status !== 'active') throw unauthorized("the API key's user is disabled");
    await this.touch(sql, key);
    return { kind: 'api_key', userId: key.user_id, role: key.role, keyId: key.id };
  }

  // last_used_at is for operators deciding which keys are dead, so minute precision is plenty:
  // writing it at most once a minute keeps a busy key from turning every read into a write.
  private async touch(sql: Sql, key: KeyRow): Promise<void> {
    const now = new Date();
    if (key.last_used_at && now.getTime() - key.last_used_at.getTime() < LAST_USED_PRECISION_MS) return;
    const stale = new Date(now.getTime() - LAST_USED_PRECISION_MS);
    await sql('update api_keys set last_used_at = $2 where id = $1 and (last_used_at is null or last_used_at < $3)', [key.id, now, stale]);
  }
}
