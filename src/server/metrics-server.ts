import { createServer, type Server } from 'node:http';
import type { Logger } from 'pino';
import { listenSmall } from '../listen.js';

export interface MetricsServer {
  /** http://host:port/metrics as bound (port 0 resolved). */
  url: string;
  close(): Promise<void>;
}

/**
 * svc serve's Prometheus endpoint on a listener of its own (METRICS_HOST:METRICS_PORT), apart from the
 * API: never behind the load balancer, not subject to the API's hooks, and answering while the API is
 * saturated. Plain node:http. GET (or HEAD) /metrics answers the text format; another path is a 404,
 * another method a 405, each saying what is served.
 */
export async function startMetricsServer(options: {
  host: string;
  port: number;
  logger: Logger;
  scrape: () => Promise<{ contentType: string; body: string }>;
}): Promise<MetricsServer> {
  const server: Server = createServer((request, response) => {
    const path = (request.url ?? '/').split('?')[0];
    const refuse = (status: number, text: string, headers: Record<string, string> = {}) => {
      response.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store', ...headers });
      response.end(`${text}\n`);
    };
    if (path !== '/metrics') return refuse(404, 'not found: this port serves GET /metrics only (the API is on its own port)');
    if (request.method !== 'GET' && request.method !== 'HEAD') return refuse(405, 'method not allowed: GET /metrics', { allow: 'GET, HEAD' });
    options.scrape().then(
      ({ contentType, body }) => {
        response.writeHead(200, { 'content-type': contentType, 'cache-control': 'no-store' });
        response.end(request.method === 'HEAD' ? undefined : body);
      },
      (err: unknown) => {
        options.logger.error({ err }, 'metrics: the scrape failed');
        refuse(500, 'the metrics could not be collected (see the log)');
      },
    );
  });
  // Prometheus keeps its connection alive between scrapes: do not let it hold close() up.
  server.keepAliveTimeout = 5_000;
  const listening = await listenSmall(server, options.port, options.host);
  return { url: `${listening.baseUrl}/metrics`, close: listening.close };
}
