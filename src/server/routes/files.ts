import type { FastifyPluginAsync } from 'fastify';
import type { LocalFileStore } from '../../adapters/local-file-store.js';

/**
 * `GET /files/<key>?expires=…&signature=…`: downloads a file of the local file store through a link
 * it signed (the embedded default's stand-in for an S3 presigned URL). The signature is the
 * credential: no bearer token. A tampered or expired link is a 403, an unknown file or a key that
 * is not one (`../` included) a 404, both as problem+json.
 */
export const fileRoutes =
  (files: LocalFileStore): FastifyPluginAsync =>
  async (server) => {
    server.get<{ Params: { '*': string }; Querystring: { expires?: string; signature?: string } }>('/files/*', {
      schema: {
        // Not part of the API: the links come from the API (a receipt's url), never built by clients.
        hide: true,
        querystring: { type: 'object', properties: { expires: { type: 'string' }, signature: { type: 'string' } } },
      },
      handler: async (request, reply) => {
        const file = await files.open(request.params['*'], request.query);
        return reply
          .type(file.contentType)
          .header('content-length', file.size)
          .header('cache-control', 'private, no-store')
          .header('x-content-type-options', 'nosniff')
          .send(file.stream);
      },
    });
  };
