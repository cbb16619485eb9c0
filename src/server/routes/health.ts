import type { FastifyPluginAsync } from 'fastify';
import { errorResponses } from '../versions.js';

/** Liveness (the process answers) and readiness (its dependencies answer), for the load balancer. */
export const healthRoutes: FastifyPluginAsync = async (server) => {
  server.get('/health/live', {
    schema: {
      tags: ['health'],
      summary: 'The process is up',
      response: { 200: { description: 'Alive', type: 'object', properties: { status: { type: 'string', enum: ['ok'] } } } },
    },
    handler: async () => ({ status: 'ok' as const }),
  });

  server.get('/health/ready', {
    schema: {
      tags: ['health'],
      summary: 'Every dependency answers; 503 names the one that does not',
      response: {
        200: {
          description: 'Ready: every check says ok',
          type: 'object',
          properties: { status: { type: 'string', enum: ['ok'] }, checks: { type: 'object', additionalProperties: { type: 'string' } } },
        },
        503: { ...errorResponses(503)[503], description: 'Not ready: the problem names the dependencies that do not answer' },
      },
    },
    handler: async (request, reply) => {
      const checks = await server.svc.readiness();
      const failed = Object.entries(checks).filter(([, v]) => v !== 'ok');
      if (failed.length === 0) return { status: 'ok' as const, checks };
      return reply
        .code(503 as 200)
        .type('application/problem+json')
        .send({
          type: 'urn:svc:problem:unavailable',
          title: 'Service Unavailable',
          status: 503,
          code: 'unavailable',
          detail: `not ready: ${failed.map(([k, v]) => `${k} (${v})`).join(', ')}`,
          traceId: request.traceId,
        });
    },
  });
};
