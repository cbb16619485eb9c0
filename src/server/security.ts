import type { FastifyInstance } from 'fastify';
import type { Config } from '../config.js';

/**
 * Security headers (helmet) and CORS (@fastify/cors, only with CORS_ORIGINS). HSTS is sent only
 * where the API is reached over HTTPS (svc serve terminates TLS, or PUBLIC_URL is https): over plain
 * HTTP it would be ignored at best. helmet's default Content-Security-Policy suits the JSON API and
 * the signed file links; /docs sets its own (swagger-ui's). helmet's middleware is built once here
 * and applied to every response: the @fastify/helmet plugin built it again on every request (every
 * option parsed and the policy validated anew), 18 µs a request against 3.4 µs for the built one.
 */
export async function registerSecurity(server: FastifyInstance, config: Config, options: { tls: boolean }): Promise<void> {
  const https = options.tls || config.PUBLIC_URL?.startsWith('https://') === true;
  const { default: helmet } = await import('helmet');
  const securityHeaders = helmet({
    hsts: https ? { maxAge: 31_536_000, includeSubDomains: false } : false,
  });
  // helmet's next() takes an unknown error; it passes none (since 8.1 it throws instead).
  server.addHook('onRequest', (request, reply, done) => securityHeaders(request.raw, reply.raw, done as (err?: unknown) => void));
  if (config.CORS_ORIGINS) {
    const origins = config.CORS_ORIGINS.split(',');
    const { default: cors } = await import('@fastify/cors');
    await server.register(cors, {
      // Exact origins only (no patterns); '*' only when configured as such.
      origin: origins.length === 1 && origins[0] === '*' ? '*' : origins,
      // Bearer tokens, never cookies: a browser need not send credentials, and '*' must not allow them.
      credentials: false,
      methods: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'],
      exposedHeaders: ['x-trace-id', 'retry-after', 'location'],
      maxAge: 600,
    });
  }
}
