import { AsyncResource } from 'node:async_hooks';
import { Redis } from 'ioredis';
import type { Logger } from '../logger.js';
import type { Tracing } from '../domain/shared/tracing.js';
import { maskUrl } from '../config.js';

/** How long one Redis command may take before it fails (the caller then degrades): a request never waits on Redis longer. */
export const REDIS_COMMAND_TIMEOUT_MS = 250;

/**
 * A Lua script whose calls made in one turn of the event loop run in Redis as one call: KEYS and
 * ARGV hold every call's keys and arguments one after the other (`encode`), and the script answers
 * one flat array from which `decode` takes each call's result, in order.
 */
export interface BatchedScript<In, Out> {
  /** The command's name on the client (ioredis defineCommand). */
  name: string;
  lua: string;
  encode(calls: readonly In[]): { keys: string[]; args: (string | number)[] };
  decode(reply: unknown[], calls: readonly In[]): Out[];
}

interface PendingCall<In, Out> {
  input: In;
  resolve(out: Out): void;
  reject(err: unknown): void;
}

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
  /** The socket holding this turn of the event loop's writes until its end (coalesceWrites), if any. */
  private corked: Redis['stream'] | undefined;
  /** Whether the end of this turn is scheduled (endTurn). */
  private turnEnding = false;
  /** Batched scripts with calls waiting for the end of this turn. */
  private flushes: (() => void)[] = [];
  /** The end of a turn runs outside any request's span: a batch's command belongs to no one request. */
  private readonly outside = new AsyncResource('svc.redis.turn');
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
      "Redis (REDIS_URL) is unreachable: rate limits are per process, the cache is bypassed (reads go to the database, except users' role and status: copies younger than USER_STANDING_TTL_SECONDS are used) and lists read the primary rather than a replica until it is back",
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
   * A script whose calls in one turn of the event loop go to Redis as one command (see
   * BatchedScript), each caller still getting its own result, or the command's error. Under load a
   * turn reads several requests, each with its cache read or rate limit: one command for all of
   * them is one script run for Redis (which every instance shares) instead of one per request, and
   * one command and reply for this process to encode and parse. A call waits for nothing more than
   * the end of its turn, as every command's write does (coalesceWrites). With tracing on, each call
   * is its own client span, a child of its caller's.
   */
  batched<In, Out>(script: BatchedScript<In, Out>): (input: In) => Promise<Out> {
    this.client.defineCommand(script.name, { lua: script.lua });
    const send = (this.client as unknown as Record<string, (...args: (string | number)[]) => Promise<unknown[]>>)[script.name]!.bind(this.client);
    let pending: PendingCall<In, Out>[] = [];
    const flush = () => {
      const calls = pending;
      pending = [];
      const inputs = calls.map((c) => c.input);
      const { keys, args } = script.encode(inputs);
      send(keys.length, ...keys, ...args).then(
        (reply) => {
          let outs: Out[];
          try {
            outs = script.decode(reply, inputs);
          } catch (err) {
            for (const c of calls) c.reject(err);
            return;
          }
          calls.forEach((c, i) => c.resolve(outs[i]!));
        },
        (err: unknown) => {
          for (const c of calls) c.reject(err);
        },
      );
    };
    const tracing = this.options.tracing?.enabled ? this.options.tracing : undefined;
    return (input) => {
      const result = new Promise<Out>((resolve, reject) => {
        if (pending.length === 0) {
          this.flushes.push(flush);
          this.endTurnSoon();
        }
        pending.push({ input, resolve, reject });
      });
      if (tracing && tracing.activeTraceparent() !== undefined) traceCommand(tracing, 'EVALSHA', result);
      return result;
    };
  }

  private endTurnSoon(): void {
    if (this.turnEnding) return;
    this.turnEnding = true;
    setImmediate(() => this.outside.runInAsyncScope(this.endTurn));
  }

  /** The end of a turn: the batches' commands are sent, then the turn's writes go out (one write). */
  private readonly endTurn = () => {
    const flushes = this.flushes;
    this.flushes = [];
    for (const flush of flushes) flush();
    this.turnEnding = false;
    const socket = this.corked;
    this.corked = undefined;
    socket?.uncork();
  };

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
    this.corked = socket;
    socket.cork();
    this.endTurnSoon();
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
    traceCommand(tracing, command.name.toUpperCase(), command.promise);
    return send(command, stream);
  };
}

/** A client span `redis <NAME>`, a child of the active one, ended when the command's reply (or error) comes. */
function traceCommand(tracing: Tracing, name: string, reply: Promise<unknown>): void {
  const span = tracing.start(`redis ${name}`, { kind: 'client', attributes: { 'db.system.name': 'redis', 'db.operation.name': name } });
  reply.then(
    () => span.end(),
    (err: unknown) => span.end(err),
  );
}
