import { createServer, type Server } from 'node:http';
import type { Logger } from 'pino';
import { listenSmall } from '../listen.js';

export interface HealthServer {
  /** http://host:port as bound (port 0 resolved). */
  url: string;
  close(): Promise<void>;
}

/**
 * The worker's health endpoints on a small port of their own, for orchestrators (plain node:http: the
 * worker has no HTTP API). `/health/live`: 200 while the process answers. `/health/ready`: 200 when
 * every check says 'ok', else 503 naming the failing dependencies. JSON bodies. `/metrics` (when
 * given): the worker's Prometheus metrics; the worker has no other port, and this one is for operators
 * and orchestrators only (never behind a load balancer).
 */
export async function startHealthServer(options: {
  host: string;
  port: number;
  logger: Logger;
  checks: () => Promise<Record<string, string>>;
  /** The Prometheus text of `/metrics` on this port; without it `/metrics` is a 404 (METRICS_PORT=off). */
  metrics?: () => Promise<{ contentType: string; body: string }>;
}): Promise<HealthServer> {
  const server: Server = createServer((request, response) => {
    const send = (status: number, body: unknown) => {
      response.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      response.end(JSON.stringify(body));
    };
    const path = (request.url ?? '/').split('?')[0];
    if (request.method !== 'GET' && request.method !== 'HEAD') return send(405, { status: 'error', detail: 'only GET' });
    if (path === '/health/live') return send(200, { status: 'ok' });
    if (path === '/metrics' && options.metrics) return scrape(options.metrics);
    if (path !== '/health/ready') {
      return send(404, { status: 'error', detail: `not found: /health/live, /health/ready${options.metrics ? ' and /metrics' : ''} only` });
    }
    options.checks().then(
      (checks) => {
        const failed = Object.entries(checks).filter(([, v]) => v !== 'ok');
        if (failed.length === 0) return send(200, { status: 'ok', checks });
        send(503, { status: 'unavailable', detail: `not ready: ${failed.map(([k, v]) => `${k} (${v})`).join(', ')}`, checks });
      },
      (err: unknown) => {
        options.logger.warn({ err }, 'readiness check failed');
        send(503, { status: 'unavailable', detail: 'not ready: the readiness check failed' });
      },
    );
    function scrape(metrics: NonNullable<typeof options.metrics>) {
      metrics().then(
        ({ contentType, body }) => {
          response.writeHead(200, { 'content-type': contentType, 'cache-control': 'no-store' });
          response.end(request.method === 'HEAD' ? undefined : body);
        },
        (err: unknown) => {
          options.logger.error({ err }, 'metrics: the scrape failed');
          send(500, { status: 'error', detail: 'the metrics could not be collected (see the log)' });
        },
      );
    }
  });
  // Orchestrators' probes keep connections alive: do not let them hold close() up.
  server.keepAliveTimeout = 1_000;
  const listening = await listenSmall(server, options.port, options.host);
  return { url: `${listening.baseUrl}`, close: listening.close };
}
