import { defineEntity, p } from '@mikro-orm/core';

/**
 * The first response to a request sent with an Idempotency-Key, per principal. Written in the same
 * transaction as the effect, so a key either has its effect and its response, or neither.
 */
export const IdempotencyRecordSchema = defineEntity({
  name: 'IdempotencyRecord',
  tableName: 'idempotency_keys',
  properties: {
    principal: p.string().length(60).primary(),
    key: p.string().length(255).primary(),
    // SHA-256 of method, route and body: the same key with another request is refused.
    requestHash: p.string().length(64),
    statusCode: p.integer(),
    responseBody: p.json<unknown>(),
    createdAt: p.datetime().onCreate(() => new Date()),
    expiresAt: p.datetime().index('idempotency_keys_expires_at_index'),
  },
});

export class IdempotencyRecord extends IdempotencyRecordSchema.class {}
IdempotencyRecordSchema.setClass(IdempotencyRecord);
