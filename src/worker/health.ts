import { createServer, type Server } from 'node:http';
import type { Logger } from 'pino';

export interface HealthServer {
  /** http://host:port as bound (port 0 resolved). */
  url: string;
  close(): Promise<void>;
}

/**
 * The worker's health endpoints on a small port of their own, for orchestrators (plain node:http: the
 * worker has no HTTP API). `/health/live`: 200 while the process answers. `/health/ready`: 200 when
 * every check says 'ok', else 503 naming the failing dependencies. JSON bodies.
 */
export async function startHealthServer(options: {
  host: string;
  port: number;
  logger: Logger;
  checks: () => Promise<Record<string, string>>;
}): Promise<HealthServer> {
  const server: Server = createServer((request, response) => {
    const send = (status: number, body: unknown) => {
      response.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      response.end(JSON.stringify(body));
    };
    const path = (request.url ?? '/').split('?')[0];
    if (request.method !== 'GET' && request.method !== 'HEAD') return send(405, { status: 'error', detail: 'only GET' });
    if (path === '/health/live') return send(200, { status: 'ok' });
    if (path !== '/health/ready') return send(404, { status: 'error', detail: 'not found: /health/live and /health/ready only' });
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
  });
  // Orchestrators' probes keep connections alive: do not let them hold close() up.
  server.keepAliveTimeout = 1_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : options.port;
  const host = options.host.includes(':') ? `[${options.host}]` : options.host;
  return {
    url: `http://${host}:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
