import { defineEntity, p } from '@mikro-orm/core';
import { newId } from '../shared/ids.js';

export const USER_ROLES = ['admin', 'user', 'guest'] as const;
export type UserRole = (typeof USER_ROLES)[number];
export const USER_STATUSES = ['active', 'disabled'] as const;
export type UserStatus = (typeof USER_STATUSES)[number];

export const UserSchema = defineEntity({
  name: 'User',
  tableName: 'users',
  properties: {
    id: p
      .string()
      .primary()
      .length(30)
      .onCreate(() => newId('usr')),
    // Stored as entered (trimmed); uniqueness ignores case through the lower(email) index below.
    email: p.string().length(254),
    name: p.string().length(200),
    role: p.enum(USER_ROLES).default('user'),
    // argon2id PHC string; null for accounts that cannot log in with a password (yet).
    passwordHash: p.string().length(255).nullable().hidden().lazy(),
    status: p.enum(USER_STATUSES).default('active'),
    createdAt: p.datetime().onCreate(() => new Date()),
    updatedAt: p
      .datetime()
      .onCreate(() => new Date())
      .onUpdate(() => new Date()),
  },
  uniques: [{ name: 'users_email_lower_unique', expression: 'create unique index "users_email_lower_unique" on "users" (lower("email"))' }],
  // The users list's order (newest first), alone and under its role and status filters (svc users list, GET /users).
  indexes: [
    { name: 'users_created_at_id_index', properties: ['createdAt', 'id'] },
    { name: 'users_role_created_at_id_index', properties: ['role', 'createdAt', 'id'] },
    { name: 'users_status_created_at_id_index', properties: ['status', 'createdAt', 'id'] },
  ],
});

export class User extends UserSchema.class {}
UserSchema.setClass(User);
