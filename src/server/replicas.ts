import type { FastifyInstance } from 'fastify';
import type { App } from '../app.js';

const READS = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * Read your own writes (DATABASE_REPLICA_URLS): an authenticated request that may have written (any
 * method but GET, HEAD, OPTIONS) sends its caller's later lag-tolerant reads to the primary for
 * DATABASE_REPLICA_READ_YOUR_WRITES_MS. Recorded before the answer goes out (onSend; in Redis too
 * with REDIS_URL), so the caller's next request, once it has the answer, already reads the primary,
 * whichever instance it reaches.
 */
export function registerReadYourWrites(server: FastifyInstance, app: App): void {
  if (!app.config.DATABASE_REPLICA_URLS) return;
  server.addHook('onSend', async (request, _reply, payload) => {
    if (request.principal && !READS.has(request.method)) await app.wrote(request.ctx.actor);
    return payload;
  });
}
