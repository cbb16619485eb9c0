import type { FastifyReply, FastifyRequest, preValidationAsyncHookHandler } from 'fastify';
import { DomainError } from '../domain/shared/errors.js';
import { actorOf, can, type Permission, type Principal } from '../domain/auth/principal.js';

declare module 'fastify' {
  interface FastifyRequest {
    principal?: Principal;
  }
}

export interface AccessRule {
  /** What the route does, in the brief's RBAC terms. */
  permission: Permission;
  /** Admin-only routes answer 403 to everyone else. */
  adminOnly?: boolean;
}

/** The principal of an authenticated request (routes behind `authorize` always have one). */
export function principalOf(request: FastifyRequest): Principal {
  if (!request.principal) throw new DomainError('unauthorized', 'not authenticated');
  return request.principal;
}

/**
 * A route's preValidation hook: authenticates the bearer credential, then checks the role's
 * permission: 401 without a valid credential, 403 when the role may not do this. It runs before
 * validation, so a caller without the right role learns nothing about the route's schema (403
 * before 400) and every RBAC cell answers the same whatever the body.
 */
export function authorize(rule: AccessRule): preValidationAsyncHookHandler {
  return async function (this: unknown, request: FastifyRequest, _reply: FastifyReply) {
    const app = request.server.svc;
    const principal = await app.authenticator.authenticate(request.ctx, request.headers.authorization);
    request.principal = principal;
    request.ctx.actor = actorOf(principal);
    if (rule.adminOnly && principal.role !== 'admin') throw new DomainError('forbidden', 'this route is for admins only');
    if (!can(principal, rule.permission)) throw new DomainError('forbidden', `the ${principal.role} role may not ${rule.permission} here`);
  };
}

/** OpenAPI security requirement for routes behind `authorize`. */
export const BEARER = [{ bearerAuth: [] }];
