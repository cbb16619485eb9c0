import { defineEntity, p } from '@mikro-orm/core';

/**
 * Failed logins per email within a window, and when the last one was (the lock they earned follows
 * from both). Keyed by a SHA-256 of the lower-cased email, so the emails people mistype (or
 * attackers try) are not stored.
 */
export const LoginThrottleSchema = defineEntity({
  name: 'LoginThrottle',
  tableName: 'login_throttles',
  properties: {
    key: p.string().length(64).primary(),
    failures: p.integer(),
    windowStartedAt: p.datetime(),
    lastFailedAt: p.datetime(),
  },
});

export class LoginThrottle extends LoginThrottleSchema.class {}
LoginThrottleSchema.setClass(LoginThrottle);
