import type { IncomingMessage, Server as HttpServer, ServerResponse } from 'node:http';
import { Server as NetServer, type Socket } from 'node:net';
import { Server as TlsServer } from 'node:tls';

/**
 * How long connections without a request in progress are kept at shutdown. Their next request may
 * already be on the wire, unread because the event loop was busy (PGlite runs on it): closing the
 * socket then would reset a request the client sent before the shutdown. Requests that arrive in
 * this time are answered, with `Connection: close`. A kept-alive connection gets a moment; a new
 * one, whose client may still be sending its first request, longer (Go's http.Server.Shutdown gives
 * new connections 5 s for the same reason).
 */
const KEPT_ALIVE_GRACE_MS = 250;
const NEW_CONNECTION_GRACE_MS = 2_000;

interface SocketState {
  /** Requests on this socket whose response has not finished. */
  active: number;
  /** Requests answered on it (0: a new connection). */
  served: number;
}

export interface Drainer {
  /**
   * Stops accepting connections at once; answers every request already received, or arriving on an
   * open connection within its grace, with `Connection: close`; then closes idle connections.
   * Resolves when no connection is left: true if that happened within timeoutMs (after which the
   * rest are closed).
   */
  drain(timeoutMs: number): Promise<boolean>;
}

/** Tracks an HTTP server's connections so that a shutdown can drain them (see Drainer). */
export function trackConnections(http: HttpServer): Drainer {
  const sockets = new Map<Socket, SocketState>();
  const responses = new Set<ServerResponse>();
  let draining = false;
  let onEmpty: (() => void) | undefined;

  // Over TLS a request's socket is the TLS socket over the TCP one: track that.
  http.on(http instanceof TlsServer ? 'secureConnection' : 'connection', (socket: Socket) => {
    sockets.set(socket, { active: 0, served: 0 });
    socket.once('close', () => {
      sockets.delete(socket);
      if (draining && sockets.size === 0) onEmpty?.();
    });
  });
  http.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const state = sockets.get(req.socket);
    if (!state) return;
    state.active++;
    responses.add(res);
    if (draining) res.setHeader('connection', 'close');
    res.once('close', () => {
      responses.delete(res);
      state.active--;
      state.served++;
      // A response whose headers went out before the shutdown kept its connection alive: end it now.
      if (draining && state.active === 0 && !req.socket.destroyed) req.socket.end();
    });
  });

  return {
    async drain(timeoutMs) {
      draining = true;
      // net.Server's close, not http.Server's: the latter also drops every connection without a
      // request in progress at once, including new ones whose request has not been read yet.
      NetServer.prototype.close.call(http);
      for (const res of responses) if (!res.headersSent) res.setHeader('connection', 'close');
      if (sockets.size === 0) return true;
      let timedOut = false;
      const closeIdle = (keptAliveOnly: boolean) => () => {
        for (const [socket, state] of sockets) if (state.active === 0 && (state.served > 0 || !keptAliveOnly)) socket.destroy();
      };
      const graces = [
        setTimeout(closeIdle(true), Math.min(KEPT_ALIVE_GRACE_MS, timeoutMs)),
        setTimeout(closeIdle(false), Math.min(NEW_CONNECTION_GRACE_MS, timeoutMs)),
      ];
      const deadline = setTimeout(() => {
        timedOut = true;
        for (const socket of sockets.keys()) socket.destroy();
      }, timeoutMs);
      await new Promise<void>((resolve) => {
        onEmpty = resolve;
        if (sockets.size === 0) resolve();
      });
      for (const timer of [...graces, deadline]) clearTimeout(timer);
      return !timedOut;
    },
  };
}
