import type { FastifyReply, FastifyRequest, preHandlerAsyncHookHandler } from 'fastify';
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
 * A preHandler that authenticates the bearer credential, then checks the role's permission: 401
 * without a valid credential, 403 when the role may not do this.
 */
export function authorize(rule: AccessRule): preHandlerAsyncHookHandler {
  return async function (this: unknown, request: FastifyRequest, _reply: FastifyReply) {
    const app = request.server.svc;
    const principal = await app.authenticator.authenticate(request.ctx, request.headers.authorization);
    request.principal = principal;
    // Route-level hooks run after the global preHandler that would otherwise set the actor.
    request.ctx.actor = actorOf(principal);
    if (rule.adminOnly && principal.role !== 'admin') throw new DomainError('forbidden', 'this route is for admins only');
    if (!can(principal, rule.permission)) throw new DomainError('forbidden', `the ${principal.role} role may not ${rule.permission} here`);
  };
}

/** OpenAPI security requirement for routes behind `authorize`. */
export const BEARER = [{ bearerAuth: [] }];
