import type { FastifyPluginAsync } from 'fastify';
import { errorResponses, type ApiVersion } from '../versions.js';
import { userBody, userSchema } from './users.js';

const email = { type: 'string', format: 'email', maxLength: 254 } as const;
const refreshTokenBody = {
  type: 'object',
  required: ['refreshToken'],
  additionalProperties: false,
  properties: { refreshToken: { type: 'string', minLength: 1, maxLength: 200, description: 'rt_… from /auth/login or /auth/refresh' } },
} as const;

const tokenPair = {
  type: 'object',
  required: ['accessToken', 'refreshToken', 'tokenType', 'expiresIn'],
  additionalProperties: false,
  properties: {
    accessToken: { type: 'string', description: 'JWT for Authorization: Bearer' },
    refreshToken: { type: 'string', description: 'Single use: /auth/refresh answers the next one' },
    tokenType: { type: 'string', enum: ['Bearer'] },
    expiresIn: { type: 'integer', description: 'Seconds until the access token expires' },
  },
} as const;

/** Public routes: sign up, log in, rotate the refresh token, log out. */
export const authRoutes =
  (version: ApiVersion): FastifyPluginAsync =>
  async (server) => {
    server.post<{ Body: { email: string; password: string; name: string } }>('/auth/register', {
      schema: {
        tags: ['auth'],
        summary: 'Create an account (role user)',
        body: {
          type: 'object',
          required: ['email', 'password', 'name'],
          additionalProperties: false,
          properties: {
            email,
            password: { type: 'string', minLength: 12, maxLength: 256 },
            name: { type: 'string', minLength: 1, maxLength: 200 },
          },
        },
        response: { 201: { ...userSchema(version), description: 'The new account (role user)' }, ...errorResponses(400, 409, 503) },
      },
      handler: async (request, reply) => {
        const user = await server.svc.auth.register(request.ctx, request.body);
        return reply.code(201).send(userBody(version, user));
      },
    });

    server.post<{ Body: { email: string; password: string } }>('/auth/login', {
      schema: {
        tags: ['auth'],
        summary: 'Exchange an email and password for an access token and a refresh token',
        body: {
          type: 'object',
          required: ['email', 'password'],
          additionalProperties: false,
          // Any password length is accepted here: a wrong one is 401, like every other wrong password.
          properties: { email, password: { type: 'string', minLength: 1, maxLength: 256 } },
        },
        response: {
          200: { ...tokenPair, description: 'An access token and a refresh token' },
          ...errorResponses(400, 401, 403, 503),
          429: { ...errorResponses(429)[429], description: 'Too many failed logins for this email, or a rate limit used up: retry after Retry-After seconds' },
        },
      },
      handler: async (request) => server.svc.auth.login(request.ctx, request.body),
    });

    server.post<{ Body: { refreshToken: string } }>('/auth/refresh', {
      schema: {
        tags: ['auth'],
        summary: 'Rotate a refresh token: answers new tokens; reusing a used refresh token revokes its whole session',
        body: refreshTokenBody,
        response: { 200: { ...tokenPair, description: 'A new token pair; the refresh token sent is spent' }, ...errorResponses(400, 401) },
      },
      handler: async (request) => server.svc.auth.refresh(request.ctx, request.body),
    });

    server.post<{ Body: { refreshToken: string } }>('/auth/logout', {
      schema: {
        tags: ['auth'],
        summary: 'End the session of a refresh token (idempotent)',
        body: refreshTokenBody,
        response: { 204: { type: 'null', description: 'The session is over (or was already)' }, ...errorResponses(400) },
      },
      handler: async (request, reply) => {
        await server.svc.auth.logout(request.ctx, request.body);
        return reply.code(204).send();
      },
    });
  };
