import { Redis } from 'ioredis';
import type { Logger } from '../logger.js';
import type { Tracing } from '../domain/shared/tracing.js';
import { maskUrl } from '../config.js';

/** How long one Redis command may take before it fails (the caller then degrades): a request never waits on Redis longer. */
export const REDIS_COMMAND_TIMEOUT_MS = 250;

export interface RedisConnectionOptions {
  logger: Logger;
  /** First part of every key (REDIS_PREFIX). */
  prefix: string;
  /** Per-command timeout (default REDIS_COMMAND_TIMEOUT_MS). */
  commandTimeoutMs?: number;
  /** A client span per command sent inside a span (a request's, a delivery's), when tracing is on. */
  tracing?: Tracing;
}

/**
 * svc's one Redis connection (REDIS_URL), for the shared rate limits and the cache. Redis is a
 * cache and a counter store here, never a source of truth, so it is built to degrade, never to
 * hold a request up: commands are not queued while the connection is down (they fail at once,
 * and the callers fall back), each command has a short timeout, and the connection is retried
 * forever with a capped backoff. Going down logs one warning, coming back one info line.
 */
export class RedisConnection {
  readonly client: Redis;
  readonly prefix: string;
  private up = false;
  /** Whether the outage has been announced (and its end not yet). */
  private warned = false;
  private readonly shown: string;
  private closing = false;
  /** Whether the socket holds this turn of the event loop's writes until its end (coalesceWrites). */
  private corked = false;
  /** Whether the connection itself was lost in the current outage (not only commands timing out on it). */
  private dropped = false;
  private readonly reconnected = new Set<(dropped: boolean) => void>();

  private constructor(
    url: string,
    private readonly options: RedisConnectionOptions,
  ) {
    this.prefix = options.prefix;
    const shown = maskUrl(url);
    this.shown = shown;
    this.client = new Redis(url, {
      // Fail fast while disconnected instead of queueing until Redis is back (a request would hang).
      enableOfflineQueue: false,
      // A command in flight when the connection drops fails rather than being resent after a reconnect.
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      commandTimeout: options.commandTimeoutMs ?? REDIS_COMMAND_TIMEOUT_MS,
      connectTimeout: 2_000,
      // Reconnect forever: 100 ms, 200 ms … capped at 5 s.
      retryStrategy: (times) => Math.min(times * 100, 5_000),
      lazyConnect: true,
      connectionName: `svc:${process.pid}`,
    });
    this.client.on('ready', () => {
      this.up = true;
      this.recovered();
    });
    if (options.tracing?.enabled) traceCommands(this.client, options.tracing);
    this.coalesceWrites();
    this.client.on('error', (err: Error) => this.down(err));
    this.client.on('close', () => this.down());
  }

  /**
   * Connects to REDIS_URL. An unreachable Redis does not stop svc: it starts with a warning naming
   * REDIS_URL (per-process rate limits, reads from the database) and connects when Redis is back.
   */
  static async connect(url: string, options: RedisConnectionOptions): Promise<RedisConnection> {
    const connection = new RedisConnection(url, options);
    try {
      await connection.client.connect();
    } catch {
      // Logged by the error handler (once); ioredis keeps retrying.
    }
    return connection;
  }

  private down(err?: Error): void {
    this.up = false;
    this.dropped = true;
    this.failed(err);
  }

  /**
   * A command failed (a timeout, the connection lost under it): the caller has degraded. Said once
   * per outage, whether the connection dropped or Redis stopped answering while connected.
   */
  failed(err?: Error): void {
    if (this.closing || this.warned) return;
    this.warned = true;
    this.options.logger.warn(
      { redis: this.shown, err: err ? { message: err.message, code: (err as NodeJS.ErrnoException).code } : undefined },
      'Redis (REDIS_URL) is unreachable: rate limits are per process, the cache is bypassed (reads go to the database) and lists read the primary rather than a replica until it is back',
    );
  }

  /** A command succeeded: ends an announced outage (when the connection never dropped, no ready event would). */
  succeeded(): void {
    if (this.warned && this.up) this.recovered();
  }

  private recovered(): void {
    if (!this.warned) return;
    this.warned = false;
    const dropped = this.dropped;
    this.dropped = false;
    this.options.logger.info({ redis: this.shown }, 'Redis (REDIS_URL) is reachable again: rate limits are shared and the cache is used again');
    for (const fn of this.reconnected) fn(dropped);
  }

  /** Whether commands can be sent now (connected and ready). */
  available(): boolean {
    return this.up && this.client.status === 'ready';
  }

  /** 'ok' or 'unreachable', for metrics and `svc serve`'s logs. */
  state(): 'ok' | 'unreachable' {
    return this.available() ? 'ok' : 'unreachable';
  }

  /**
   * Calls `fn` each time Redis answers again after an outage: `dropped` when the connection was lost
   * (Redis may have restarted), not when only commands timed out on a connection that stayed up (a
   * busy Redis, or this process too busy to read the answers in time).
   */
  onReconnect(fn: (dropped: boolean) => void): void {
    this.reconnected.add(fn);
  }

  /**
   * Every command sent in a turn of the event loop goes out in one write once the turn's I/O
   * callbacks have run: the first command of a turn corks the socket and a setImmediate uncorks it.
   * Under load the requests read in one turn each send a command or two (the cache's version check,
   * read-your-writes, the rate limit), and one write (one system call, one wake-up of Redis) then
   * carries them all; a lone command waits for the end of its turn only. Nothing changes for the
   * commands themselves: each keeps its own reply, timeout and error, and their replies are read as
   * they arrive. ioredis's enableAutoPipelining also batches a turn's commands, but into a pipeline
   * whose replies are handed out only once all of them are in, and with one pipeline in flight at a
   * time: a turn's commands would wait for the previous turn's slowest reply.
   */
  private coalesceWrites(): void {
    const send = this.client.sendCommand.bind(this.client);
    this.client.sendCommand = (command, stream) => {
      this.cork();
      return send(command, stream);
    };
  }

  private cork(): void {
    const socket = this.client.stream as Redis['stream'] | undefined;
    if (this.corked || !socket || socket.writableCorked) return;
    this.corked = true;
    socket.cork();
    setImmediate(() => {
      this.corked = false;
      socket.uncork();
    });
  }

  /** A key under REDIS_PREFIX. */
  key(...parts: string[]): string {
    return `${this.prefix}:${parts.join(':')}`;
  }

  async close(): Promise<void> {
    this.closing = true;
    try {
      await this.client.quit();
    } catch {
      this.client.disconnect();
    }
  }
}

/**
 * Every command ioredis sends (plain, or a script by its sha) becomes a client span `redis <command>`
 * when a span is active; none outside one. Its arguments (keys, cached values) are not recorded.
 */
function traceCommands(client: Redis, tracing: Tracing): void {
  const send = client.sendCommand.bind(client);
  client.sendCommand = (command, stream) => {
    if (tracing.activeTraceparent() === undefined) return send(command, stream);
    const name = command.name.toUpperCase();
    const span = tracing.start(`redis ${name}`, { kind: 'client', attributes: { 'db.system.name': 'redis', 'db.operation.name': name } });
    command.promise.then(
      () => span.end(),
      (err: unknown) => span.end(err),
    );
    return send(command, stream);
  };
}
