import type { Server } from 'node:http';

/** A small HTTP listener that is up: its base URL, and a close() that ends kept-alive connections too. */
export interface SmallListener {
  baseUrl: string;
  close: () => Promise<void>;
}

/**
 * Starts a small HTTP listener (svc serve's /metrics, svc worker's health port) on `host:port` (0
 * picks a free port): a scraper or a probe keeping its connection alive never holds close() up.
 */
export async function listenSmall(server: Server, port: number, host: string): Promise<SmallListener> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address();
  const bound = typeof address === 'object' && address ? address.port : port;
  return {
    baseUrl: `http://${host.includes(':') ? `[${host}]` : host}:${bound}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
