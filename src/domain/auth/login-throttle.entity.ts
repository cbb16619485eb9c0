import { defineEntity, p } from '@mikro-orm/core';

/**
 * Login attempts per email as a decaying count: `drainedAt` is when the count will have decayed to
 * zero, so the count now is (drainedAt - now) / LOGIN_THROTTLE.decaySeconds (login-throttle.ts).
 * Keyed by a SHA-256 of the lower-cased email, so the emails people mistype (or attackers try) are
 * not stored.
 */
export const LoginThrottleSchema = defineEntity({
  name: 'LoginThrottle',
  tableName: 'login_throttles',
  properties: {
    key: p.string().length(64).primary(),
    drainedAt: p.datetime(),
  },
});

export class LoginThrottle extends LoginThrottleSchema.class {}
LoginThrottleSchema.setClass(LoginThrottle);
