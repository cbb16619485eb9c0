import { defineEntity, p } from '@mikro-orm/core';
import { newId } from '../shared/ids.js';
import { User } from '../users/user.entity.js';

/**
 * A refresh token, stored only as its SHA-256. Tokens rotate: each use marks the row used and issues
 * the next token of the same family; presenting a used token again revokes the whole family.
 */
export const RefreshTokenSchema = defineEntity({
  name: 'RefreshToken',
  tableName: 'refresh_tokens',
  properties: {
    id: p
      .string()
      .primary()
      .length(30)
      .onCreate(() => newId('rtk')),
    user: () => p.manyToOne(User).ref().deleteRule('cascade').index('refresh_tokens_user_id_index'),
    familyId: p.string().length(30).index('refresh_tokens_family_id_index'),
    tokenHash: p.string().length(64).unique('refresh_tokens_token_hash_unique'),
    expiresAt: p.datetime(),
    usedAt: p.datetime().nullable(),
    revokedAt: p.datetime().nullable(),
    createdAt: p.datetime().onCreate(() => new Date()),
  },
});

export class RefreshToken extends RefreshTokenSchema.class {}
RefreshTokenSchema.setClass(RefreshToken);

/** An API key for API clients: the secret is shown once; only its SHA-256 is stored. */
export const ApiKeySchema = defineEntity({
  name: 'ApiKey',
  tableName: 'api_keys',
  properties: {
    id: p
      .string()
      .primary()
      .length(30)
      .onCreate(() => newId('key')),
    user: () => p.manyToOne(User).ref().deleteRule('cascade').index('api_keys_user_id_index'),
    name: p.string().length(100),
    secretHash: p.string().length(64),
    createdAt: p.datetime().onCreate(() => new Date()),
    lastUsedAt: p.datetime().nullable(),
    revokedAt: p.datetime().nullable(),
  },
});

export class ApiKey extends ApiKeySchema.class {}
ApiKeySchema.setClass(ApiKey);
