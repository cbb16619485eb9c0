import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Config } from '../config.js';
import { DomainError } from '../domain/shared/errors.js';
import type { RateLimitDecision, RateLimiter, RateLimitRule } from '../domain/shared/rate-limit.js';
import type { CounterMetric, Metrics } from '../domain/shared/metrics.js';

// Load balancers' probes, Prometheus' scrapes and Stripe's signed webhook deliveries (from Stripe's
// own addresses, retried by Stripe) are never limited.
const EXEMPT = /^(\/health\/|\/metrics$|\/api\/v\d+\/webhooks\/stripe$)/;
// Credential routes: a password guesser's or a sign-up spammer's, limited tighter per address.
const AUTH = /^\/api\/v\d+\/auth\/(login|register|refresh)$/;

declare module 'fastify' {
  interface FastifyRequest {
    /** The rate-limit decisions of this request so far, for its RateLimit headers. */
    rateLimits?: RateLimitDecision[];
  }
}

/** Whether the rate limits count requests to this route (its template: /api/v2/orders/:id). */
export function isRateLimited(route: string): boolean {
  return !EXEMPT.test(route);
}

/** The headers of a 429 as OpenAPI documents them (RateLimit fields are present when a limit counted the request). */
export const RATE_LIMIT_HEADERS = {
  'Retry-After': { type: 'integer', minimum: 0, description: 'Seconds until the request may be sent again' },
  'RateLimit-Policy': {
    type: 'string',
    description: 'The limits this request was counted against (draft-ietf-httpapi-ratelimit-headers): `"ip";q=100;w=60`, `"api-key";q=1000;w=3600`',
  },
  RateLimit: { type: 'string', description: 'What is left of each of those limits and in how many seconds it resets: `"ip";r=0;t=37`' },
} as const;

/** The limits of a configuration (a limit of 0 is off). */
export function rateLimitRules(config: Config): { ip?: RateLimitRule; auth?: RateLimitRule; apiKey?: RateLimitRule } {
  return {
    ip: config.RATE_LIMIT_IP_PER_MINUTE > 0 ? { name: 'ip', limit: config.RATE_LIMIT_IP_PER_MINUTE, windowMs: 60_000 } : undefined,
    auth: config.RATE_LIMIT_AUTH_IP_PER_MINUTE > 0 ? { name: 'auth', limit: config.RATE_LIMIT_AUTH_IP_PER_MINUTE, windowMs: 60_000 } : undefined,
    apiKey: config.RATE_LIMIT_API_KEY_PER_HOUR > 0 ? { name: 'api-key', limit: config.RATE_LIMIT_API_KEY_PER_HOUR, windowMs: 3_600_000 } : undefined,
  };
}

/**
 * The IETF RateLimit-Policy and RateLimit fields (draft-ietf-httpapi-ratelimit-headers): one item
 * per limit this request was counted against, e.g. `"ip";q=100;w=60` and `"ip";r=42;t=37`.
 */
interface Limits {
  limiter: RateLimiter;
  now: () => number;
  rejected: CounterMetric<'limit'>;
}

// Each rule's RateLimit-Policy item, built once: it never changes.
const policies = new WeakMap<RateLimitRule, string>();

function policy(rule: RateLimitRule): string {
  let item = policies.get(rule);
  if (item === undefined) policies.set(rule, (item = `"${rule.name}";q=${rule.limit};w=${rule.windowMs / 1000}`));
  return item;
}

function setHeaders(reply: FastifyReply, decisions: RateLimitDecision[]): void {
  // Most requests are counted against one limit: no array to map and join then.
  if (decisions.length === 1) {
    const d = decisions[0]!;
    reply.header('ratelimit-policy', policy(d.rule));
    reply.header('ratelimit', `"${d.rule.name}";r=${d.remaining};t=${d.resetSeconds}`);
    return;
  }
  reply.header('ratelimit-policy', decisions.map((d) => policy(d.rule)).join(', '));
  reply.header('ratelimit', decisions.map((d) => `"${d.rule.name}";r=${d.remaining};t=${d.resetSeconds}`).join(', '));
}

async function check(request: FastifyRequest, reply: FastifyReply, limits: Limits, rule: RateLimitRule, id: string, who: string) {
  const decision = await limits.limiter.consume(rule, id, limits.now());
  (request.rateLimits ??= []).push(decision);
  setHeaders(reply, request.rateLimits);
  if (!decision.allowed) {
    limits.rejected.inc({ limit: rule.name });
    const per = rule.windowMs === 60_000 ? 'minute' : 'hour';
    throw new DomainError('rate_limited', `too many requests from ${who}: at most ${rule.limit} per ${per}; retry in ${decision.resetSeconds} s`, {
      retryAfterSeconds: decision.resetSeconds,
    });
  }
}

/**
 * Registers the rate limits on the server: per client address on every route but the exempt ones
 * (tighter on the credential routes), then per API key once a request is authenticated by one. The
 * client address is the socket's, or X-Forwarded-For's from TRUSTED_PROXIES (fastify's trustProxy).
 * A refused request answers 429 problem+json with Retry-After; every counted one carries the
 * RateLimit headers.
 */
export function registerRateLimits(server: FastifyInstance, options: { config: Config; limiter: RateLimiter; now: () => number; metrics: Metrics }): void {
  const { ip, auth, apiKey } = rateLimitRules(options.config);
  const limits: Limits = {
    limiter: options.limiter,
    now: options.now,
    rejected: options.metrics.counter({
      name: 'svc_rate_limit_rejections_total',
      help: 'Requests refused with 429 by a rate limit (ip, auth, api-key)',
      labelNames: ['limit'],
    }),
  };
  if (ip || auth) {
    server.addHook('onRequest', async (request, reply) => {
      const route = request.routeOptions.url ?? '';
      if (EXEMPT.test(route)) return;
      const rule = AUTH.test(route) ? (auth ?? ip) : ip;
      if (rule) await check(request, reply, limits, rule, request.ip, `this address (${request.ip})`);
    });
  }
  if (apiKey) {
    // After authentication (each route's preValidation): only a valid key is counted, so nobody can
    // use up another client's quota by sending its key id with a wrong secret.
    server.addHook('preHandler', async (request, reply) => {
      const principal = request.principal;
      if (principal?.kind !== 'api_key' || !principal.keyId) return;
      await check(request, reply, limits, apiKey, principal.keyId, `API key ${principal.keyId}`);
    });
  }
}
