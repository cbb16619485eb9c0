import { defineEntity, p } from '@mikro-orm/core';
import { newId } from '../shared/ids.js';

/** One row per write made by an operator or admin, written in the same transaction as the write. */
export const AuditEntrySchema = defineEntity({
  name: 'AuditEntry',
  tableName: 'audit_log',
  properties: {
    id: p
      .string()
      .primary()
      .length(30)
      .onCreate(() => newId('aud')),
    // `cli:<os user>`, `usr_…`, or `key_…`
    actor: p.string().length(120),
    // `noun.past-verb`, such as `user.created`
    action: p.string().length(80),
    target: p.string().length(120),
    details: p.json<Record<string, unknown>>().default('{}'),
    traceId: p.string().length(64).nullable(),
    createdAt: p.datetime().onCreate(() => new Date()),
  },
  indexes: [
    { name: 'audit_log_target_created_at_index', properties: ['target', 'createdAt'] },
    { name: 'audit_log_created_at_index', properties: ['createdAt'] },
  ],
});

export class AuditEntry extends AuditEntrySchema.class {}
AuditEntrySchema.setClass(AuditEntry);
