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

/**
 * What to do about an address that could not be bound, by the error's code: another process on the
 * port, a port this user may not take, or a host that is not this machine's. `port` and `host` name
 * the settings that choose them (`--port (PORT)`, `--health-port`, `HOST`).
 */
export function listenFix(err: unknown, settings: { host: string; hostName: string; portName: string }): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'EADDRINUSE') {
    const free = settings.portName.endsWith(')') ? settings.portName.replace(/\)$/, '; 0 picks a free one)') : `${settings.portName} (0 picks a free one)`;
    return `another process listens there: stop it, or choose another ${free}`;
  }
  if (code === 'EACCES') return `this user may not listen on that port: choose another ${settings.portName}, 1024 or above`;
  return `${settings.host} is not an address of this machine: set ${settings.hostName} to one of its addresses, such as 127.0.0.1 or 0.0.0.0`;
}
