import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import { DomainError } from '../../domain/shared/errors.js';
import { USER_ROLES, USER_STATUSES } from '../../domain/users/user.entity.js';
import type { UserView } from '../../domain/users/users.service.js';
import { authorize, BEARER, principalOf } from '../auth.js';
import { errorResponses, idParamsSchema, pageQuery, pageSchema, type ApiVersion, type IdParams } from '../versions.js';

/** The user as a version shows it: v1 is the brief's {id, email, name, role, createdAt, updatedAt}; v2 adds status. */
export function userSchema(version: ApiVersion) {
  const properties: Record<string, unknown> = {
    id: { type: 'string', description: 'usr_ followed by a ULID' },
    email: { type: 'string' },
    name: { type: 'string' },
    role: { type: 'string', enum: [...USER_ROLES] },
    ...(version.name === 'v2' ? { status: { type: 'string', enum: [...USER_STATUSES] } } : {}),
    createdAt: { type: 'string', format: 'date-time' },
    updatedAt: { type: 'string', format: 'date-time' },
  };
  return { type: 'object', required: Object.keys(properties), additionalProperties: false, properties };
}

/** Maps a user to the version's shape (the response schema would drop `status` in v1 anyway; this says so). */
export function userBody(version: ApiVersion, u: UserView) {
  const { status, ...v1 } = u;
  return version.name === 'v1' ? v1 : { ...v1, status };
}

const idParams = idParamsSchema('usr', 'User');

const actingUser = (request: FastifyRequest) => principalOf(request).userId;

/** GET /users/me for everyone; list, get, update and delete for admins. */
export const usersRoutes =
  (version: ApiVersion): FastifyPluginAsync =>
  async (server) => {
    const user = userSchema(version);

    server.get('/users/me', {
      schema: {
        tags: ['users'],
        summary: 'The authenticated user',
        security: BEARER,
        querystring: { type: 'object', additionalProperties: false, properties: {} },
        response: { 200: { ...user, description: 'The signed-in user' }, ...errorResponses(400, 401) },
      },
      preValidation: authorize({ permission: 'read' }),
      handler: async (request) => {
        try {
          return userBody(version, await server.svc.app.users.get(request.ctx, actingUser(request)));
        } catch (err) {
          // A valid token for an account deleted since it was issued.
          if (err instanceof DomainError && err.code === 'not_found')
            throw new DomainError('unauthorized', 'the user of this token no longer exists; log in again');
          throw err;
        }
      },
    });

    server.get<{ Querystring: { role?: string; status?: string; search?: string; limit: number; cursor?: string } }>('/users', {
      schema: {
        tags: ['users'],
        summary: 'Users, newest first, a cursor page at a time (admin)',
        security: BEARER,
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            role: { type: 'string', enum: [...USER_ROLES] },
            status: { type: 'string', enum: [...USER_STATUSES] },
            search: { type: 'string', minLength: 1, maxLength: 100, description: 'Part of the email or name, any letter case' },
            ...pageQuery,
          },
        },
        response: { 200: { ...pageSchema(user), description: 'A page of users, newest first' }, ...errorResponses(400, 401, 403) },
      },
      preValidation: authorize({ permission: 'read', adminOnly: true }),
      handler: async (request) => {
        const { role, status, search, limit, cursor } = request.query;
        const page = await server.svc.app.users.list(request.ctx, { role, status, search, limit, cursor });
        return { data: page.data.map((u) => userBody(version, u)), pagination: page.pagination };
      },
    });

    server.get<{ Params: IdParams }>('/users/:id', {
      schema: {
        tags: ['users'],
        summary: 'One user (admin)',
        security: BEARER,
        params: idParams,
        response: { 200: { ...user, description: 'The user' }, ...errorResponses(400, 401, 403, 404) },
      },
      preValidation: authorize({ permission: 'read', adminOnly: true }),
      handler: async (request) => userBody(version, await server.svc.app.users.get(request.ctx, request.params.id)),
    });

    server.patch<{ Params: IdParams; Body: { name?: string; role?: string; status?: string } }>('/users/:id', {
      schema: {
        tags: ['users'],
        summary: "Change a user's name, role or status (admin; audited)",
        description: 'Only name, role and status can change; any other property is rejected. An admin cannot change their own role or disable themselves.',
        security: BEARER,
        params: idParams,
        body: {
          type: 'object',
          additionalProperties: false,
          minProperties: 1,
          properties: {
            name: { type: 'string', minLength: 1, maxLength: 200 },
            role: { type: 'string', enum: [...USER_ROLES] },
            status: { type: 'string', enum: [...USER_STATUSES] },
          },
        },
        response: { 200: { ...user, description: 'The user as changed' }, ...errorResponses(400, 401, 403, 404, 409) },
      },
      preValidation: authorize({ permission: 'write', adminOnly: true }),
      handler: async (request) => {
        // A new role or status applies on every instance before this answer (UsersService moves the user's version).
        const changed = await server.svc.app.users.update(request.ctx, request.params.id, { ...request.body, actingUserId: actingUser(request) });
        return userBody(version, changed);
      },
    });

    server.delete<{ Params: IdParams }>('/users/:id', {
      schema: {
        tags: ['users'],
        summary: 'Delete a user who has no orders (admin; audited)',
        description: 'A user with orders answers 409: disable them instead (PATCH status "disabled"). An admin cannot delete themselves.',
        security: BEARER,
        params: idParams,
        response: { 204: { type: 'null', description: 'Deleted' }, ...errorResponses(400, 401, 403, 404, 409) },
      },
      preValidation: authorize({ permission: 'delete', adminOnly: true }),
      handler: async (request, reply) => {
        await server.svc.app.users.delete(request.ctx, request.params.id, { actingUserId: actingUser(request) });
        return reply.code(204).send();
      },
    });
  };
