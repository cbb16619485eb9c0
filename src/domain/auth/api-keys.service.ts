import { randomBytes } from 'node:crypto';
import { LockMode } from '@mikro-orm/core';
import type { Ctx } from '../shared/context.js';
import { invalid, notFound } from '../shared/errors.js';
import { refuseControlCharacters } from '../shared/text.js';
import { isId } from '../shared/ids.js';
import { audit } from '../audit/audit.js';
import type { UsersService } from '../users/users.service.js';
import { ApiKey } from './auth.entities.js';
import { sha256 } from './authenticator.js';

/** An API key as operators see it: never the secret, nor its hash. */
export interface ApiKeyView {
  id: string;
  name: string;
  userId: string;
  status: 'active' | 'revoked';
  createdAt: string;
  lastUsedAt: string | null;
  revokedAt: string | null;
}

/** A key just created: the only time its secret exists outside the client that receives it. */
export interface CreatedApiKey {
  id: string;
  name: string;
  userId: string;
  /** `svc_<key id>_<secret>`, the bearer credential. */
  secret: string;
  createdAt: string;
}

const toView = (k: ApiKey): ApiKeyView => ({
  id: k.id,
  name: k.name,
  userId: k.user.id,
  status: k.revokedAt ? 'revoked' : 'active',
  createdAt: k.createdAt.toISOString(),
  lastUsedAt: k.lastUsedAt?.toISOString() ?? null,
  revokedAt: k.revokedAt?.toISOString() ?? null,
});

function checkKeyId(raw: string): string {
  const id = raw.trim();
  if (isId('key', id)) return id;
  // A whole secret pasted by mistake: name its id, never echo the secret into a terminal or log.
  const secret = /^svc_(key_[0-9A-HJKMNP-TV-Z]{26})_/.exec(id);
  if (secret) throw invalid(`that is an API key's secret, not its id; its id is ${secret[1]}`, { field: 'keyId' });
  const shown = id.length > 40 ? `${id.slice(0, 40)}…` : id;
  throw invalid(`"${shown}" is not an API key id (expected key_ followed by 26 characters, as \`svc users api-keys list\` shows)`, { field: 'keyId' });
}

/** API keys for API clients: a key acts as its user, with that user's role. */
export class ApiKeysService {
  constructor(private readonly users: UsersService) {}

  /** Creates a key for a user and returns its secret, which is shown this once; only a SHA-256 of it is stored. */
  async create(ctx: Ctx, input: { user: string; name?: string }): Promise<CreatedApiKey> {
    const name = (input.name ?? 'default').trim();
    if (name.length < 1 || name.length > 100) throw invalid('the key name must be 1 to 100 characters', { field: 'name' });
    // `svc users api-keys list` shows it to an operator.
    refuseControlCharacters(name, 'name');
    const user = await this.users.get(ctx, input.user);
    // 32 random bytes: 43 characters of base64url, the form the authenticator accepts.
    const secret = randomBytes(32).toString('base64url');
    return ctx.transaction(async (tx) => {
      const key = tx.em.create(ApiKey, { user: user.id, name, secretHash: sha256(secret) });
      await audit(tx, 'api-key.created', key.id, { userId: user.id, name });
      return { id: key.id, name, userId: user.id, secret: `svc_${key.id}_${secret}`, createdAt: key.createdAt.toISOString() };
    });
  }

  /** Lists keys, newest first: all of them, or one user's. */
  async list(ctx: Ctx, input: { user?: string } = {}): Promise<ApiKeyView[]> {
    const userId = input.user === undefined ? undefined : (await this.users.get(ctx, input.user)).id;
    const keys = await ctx.em.find(ApiKey, userId ? { user: userId } : {}, { orderBy: { createdAt: 'desc', id: 'desc' } });
    return keys.map(toView);
  }

  /** Revokes a key so it no longer authenticates; revoking a revoked key changes nothing. */
  async revoke(ctx: Ctx, keyIdInput: string): Promise<ApiKeyView> {
    const keyId = checkKeyId(keyIdInput);
    return ctx.transaction(async (tx) => {
      const key = await tx.em.findOne(ApiKey, { id: keyId }, { lockMode: LockMode.PESSIMISTIC_WRITE });
      if (!key) throw notFound(`no API key with id ${keyId}`, { keyId });
      if (!key.revokedAt) {
        key.revokedAt = new Date();
        await audit(tx, 'api-key.revoked', key.id, { userId: key.user.id, name: key.name });
      }
      return toView(key);
    });
  }
}
