import { randomBytes } from 'node:crypto';
import { sql } from '@mikro-orm/core';
import type { SqlEntityManager } from '@mikro-orm/sql';
import type { Ctx } from '../shared/context.js';
import { DomainError } from '../shared/errors.js';
import { newId } from '../shared/ids.js';
import { audit } from '../audit/audit.js';
import type { PasswordHasher } from '../users/password.js';
import { User, type UserRole } from '../users/user.entity.js';
import type { UsersService, UserView } from '../users/users.service.js';
import { RefreshToken } from './auth.entities.js';
import { sha256 } from './authenticator.js';
import { clearAttempts, countAttempt, throttleKey, uncountAttempt } from './login-throttle.js';

/** Issues access tokens (implemented by the JWT adapter). */
export interface AccessTokenIssuer {
  sign(claims: { sub: string; role: UserRole }): Promise<string>;
  readonly ttlSeconds: number;
}

/** What login and refresh answer, exactly as clients depend on it. */
export interface TokenPair {
  accessToken: string;
  refreshToken: string;
  tokenType: 'Bearer';
  /** Seconds until the access token expires. */
  expiresIn: number;
}

// `rt_` + 32 random bytes in base64url: recognisable in logs and secret scanners, never stored as is.
const REFRESH_TOKEN = /^rt_[A-Za-z0-9_-]{43}$/;

const unauthorized = (message: string) => new DomainError('unauthorized', message);
const INVALID_LOGIN = 'invalid email or password';
const LOG_IN_AGAIN = 'log in again with your email and password';

interface ConsumedRow {
  id: string;
  user_id: string;
  family_id: string;
}

/** Registration, password login and the refresh-token sessions that follow it. */
export class AuthService {
  constructor(
    private readonly users: UsersService,
    private readonly passwords: PasswordHasher,
    private readonly tokens: AccessTokenIssuer,
    private readonly options: { refreshTtlSeconds: number; now?: () => Date },
  ) {}

  private now(): Date {
    return this.options.now?.() ?? new Date();
  }

  /** Creates an account with the user role for someone signing up themselves. */
  async register(ctx: Ctx, input: { email: string; password: string; name: string }): Promise<UserView> {
    return this.users.signUp(ctx, { email: input.email, name: input.name, password: input.password });
  }

  /** Checks an email and password and opens a session: an access token and the first refresh token of a new family. */
  async login(ctx: Ctx, input: { email: string; password: string }): Promise<TokenPair> {
    // Counted before the password is checked, in one statement: a burst of any size gets at most the
    // throttle's limit checked, and a locked email tells a guesser nothing, even about the right password.
    const throttle = throttleKey(input.email);
    await countAttempt(ctx.sql, throttle, this.now());
    const user = await ctx.em.findOne(User, { [sql`lower(email)`]: input.email.trim().toLowerCase() }, { populate: ['passwordHash'] });
    let ok: boolean;
    try {
      // Unknown emails are checked against the decoy, so a login takes as long whether or not the email exists.
      ok = await this.passwords.verify(input.password, user?.passwordHash ?? this.passwords.decoy);
    } catch (err) {
      // Turned away unchecked (too many password hashes in progress: 503): the attempt is given back,
      // so a flood elsewhere does not use up this email's attempts.
      if (err instanceof DomainError && err.code === 'unavailable') await uncountAttempt(ctx.sql, throttle);
      throw err;
    }
    if (!user || !user.passwordHash || !ok) throw unauthorized(INVALID_LOGIN);
    await clearAttempts(ctx.sql, throttle);
    // Said only after the right password, so it tells nobody else that the account exists.
    if (user.status !== 'active') throw new DomainError('forbidden', 'this account is disabled; ask an administrator to enable it');
    return ctx.transaction(async (tx) => this.issue(tx.em, user, newId('fam')));
  }

  /**
   * Rotates a refresh token: the presented one is used up atomically and the next one of its family
   * is issued. Presenting a token that was already used means it was copied: the whole family is revoked.
   */
  async refresh(ctx: Ctx, input: { refreshToken: string }): Promise<TokenPair> {
    if (!REFRESH_TOKEN.test(input.refreshToken)) throw unauthorized(`the refresh token is not valid; ${LOG_IN_AGAIN}`);
    const hash = sha256(input.refreshToken);
    const now = new Date();
    const outcome = await ctx.transaction(async (tx) => {
      // One statement decides which of several concurrent presentations wins: the row lock makes the
      // others re-check `used_at is null` after the winner commits, and find nothing to update.
      const [row] = await tx.sql<ConsumedRow>(
        `update refresh_tokens set used_at = $1 where token_hash = $2 and used_at is null and revoked_at is null and expires_at > $1 returning id, user_id, family_id`,
        [now, hash],
      );
      if (!row) return { error: await this.rejectUnusable(tx, hash, now) };
      const user = await tx.em.findOne(User, { id: row.user_id });
      if (!user || user.status !== 'active') {
        await this.revokeFamily(tx.em, row.family_id, now);
        return { error: unauthorized('this account is disabled; ask an administrator to enable it') };
      }
      return { pair: await this.issue(tx.em, user, row.family_id) };
    });
    // The revocation above commits before the error is answered: a reused token must kill its family.
    if (outcome.error) throw outcome.error;
    return outcome.pair;
  }

  /** Ends the session a refresh token belongs to (its whole family); an unknown or revoked token is fine too. */
  async logout(ctx: Ctx, input: { refreshToken: string }): Promise<void> {
    if (!REFRESH_TOKEN.test(input.refreshToken)) return;
    await ctx.transaction(async (tx) => {
      const token = await tx.em.findOne(RefreshToken, { tokenHash: sha256(input.refreshToken) }, { fields: ['id', 'familyId'] });
      if (token) await this.revokeFamily(tx.em, token.familyId, new Date());
    });
  }

  private async issue(em: SqlEntityManager, user: User, familyId: string): Promise<TokenPair> {
    const refreshToken = `rt_${randomBytes(32).toString('base64url')}`;
    em.create(RefreshToken, {
      user: user.id,
      familyId,
      tokenHash: sha256(refreshToken),
      expiresAt: new Date(Date.now() + this.options.refreshTtlSeconds * 1000),
    });
    await em.flush();
    const accessToken = await this.tokens.sign({ sub: user.id, role: user.role });
    return { accessToken, refreshToken, tokenType: 'Bearer', expiresIn: this.tokens.ttlSeconds };
  }

  // Why a token the atomic update did not take is unusable; a used one revokes its family (reuse).
  private async rejectUnusable(tx: Ctx, hash: string, now: Date): Promise<DomainError> {
    const token = await tx.em.findOne(RefreshToken, { tokenHash: hash });
    if (!token) return unauthorized(`the refresh token is not valid; ${LOG_IN_AGAIN}`);
    if (token.revokedAt) return unauthorized(`the refresh token has been revoked; ${LOG_IN_AGAIN}`);
    if (token.usedAt) {
      const revoked = await this.revokeFamily(tx.em, token.familyId, now);
      await audit(tx, 'refresh-token.reused', token.user.id, { familyId: token.familyId, tokenId: token.id, revoked });
      return unauthorized(`the refresh token was already used, so every token of its session has been revoked; ${LOG_IN_AGAIN}`);
    }
    return unauthorized(`the refresh token has expired; ${LOG_IN_AGAIN}`);
  }

  private async revokeFamily(em: SqlEntityManager, familyId: string, now: Date): Promise<number> {
    return em.nativeUpdate(RefreshToken, { familyId, revokedAt: null }, { revokedAt: now });
  }
}
