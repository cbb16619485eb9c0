import { createServer, connect as tcpConnect, type Server, type Socket } from 'node:net';
import type { TestContext } from 'node:test';

export interface TcpProxy {
  /** The loopback port it listens on (the same after down and up). */
  port: number;
  /** Cuts every connection through it and stops listening: the service behind it is gone. */
  down: () => Promise<void>;
  /** Listens again on the same port: the service is back. */
  up: () => Promise<void>;
  /** Holds the service's answers back on every connection, which stays open: a service too slow to answer. */
  stall: () => void;
  /** Delivers the answers held back, and those that follow. */
  resume: () => void;
}

/**
 * A TCP proxy on a free loopback port in front of host:port, which a test can take down and bring
 * back: a shared service (RabbitMQ, Redis) going away and returning without stopping it for the
 * other tests.
 */
export async function tcpProxy(t: TestContext, host: string, targetPort: number): Promise<TcpProxy> {
  const sockets = new Set<Socket>();
  /** Each open connection's service side and client side, for stall and resume. */
  const pairs = new Map<Socket, Socket>();
  let stalled = false;
  let server: Server | undefined;
  let port = 0;
  const up = () =>
    new Promise<void>((resolve, reject) => {
      const s = createServer((client) => {
        const upstream = tcpConnect(targetPort, host);
        for (const sock of [client, upstream]) {
          sockets.add(sock);
          sock.on('close', () => sockets.delete(sock));
          sock.on('error', () => {});
        }
        client.pipe(upstream);
        if (!stalled) upstream.pipe(client);
        pairs.set(upstream, client);
        upstream.on('close', () => pairs.delete(upstream));
        client.on('close', () => upstream.destroy());
        upstream.on('close', () => client.destroy());
      });
      s.once('error', reject);
      s.listen(port, '127.0.0.1', () => {
        port = (s.address() as { port: number }).port;
        proxy.port = port;
        server = s;
        resolve();
      });
    });
  const down = async () => {
    const s = server;
    server = undefined;
    for (const sock of sockets) sock.destroy();
    if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
  };
  const stall = () => {
    stalled = true;
    for (const upstream of pairs.keys()) upstream.unpipe();
  };
  const resume = () => {
    stalled = false;
    for (const [upstream, client] of pairs) upstream.pipe(client);
  };
  const proxy: TcpProxy = { port, down, up, stall, resume };
  await up();
  t.after(down);
  return proxy;
}
