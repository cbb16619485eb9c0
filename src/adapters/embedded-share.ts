import { createServer, type Server, type Socket } from 'node:net';
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { PGlite } from '@electric-sql/pglite';
import type { PGLiteSocketHandler, PGLiteSocketHandlerOptions } from '@electric-sql/pglite-socket';
import type { PgliteConnection } from '@mikro-orm/pglite';
import type { AbstractSqlConnection } from '@mikro-orm/sql';
import type { Orm } from './database.js';

/** The file in the data folder that tells other svc processes how to reach a serving process's database. */
export const SHARE_FILE = 'serve.json';
// pg finds a server socket as <dir>/.s.PGSQL.<port>; the port only names the file.
const SOCKET_PORT = 5432;
const SOCKET_NAME = `.s.PGSQL.${SOCKET_PORT}`;
// sun_path holds 108 bytes on Linux (104 on macOS); longer data-folder paths get a socket in tmpdir.
const MAX_SOCKET_PATH = 100;
/**
 * How long a client may hold the database between two of its messages (inside a transaction or an
 * unfinished extended-protocol cycle) before it is disconnected and its transaction rolled back. The
 * API waits while a client holds the database, so a stuck terminal must not stop it for long.
 */
export const SHARE_IDLE_TIMEOUT_MS = 10_000;

/** What serve.json says: the serving process and where its socket is. */
export interface ShareInfo {
  pid: number;
  /** The folder holding the socket (pg's `host` for a unix socket). */
  socketDir: string;
  /** The port that names the socket file (.s.PGSQL.<port>). */
  port: number;
  /** The API's address, for the operator. */
  url?: string;
  startedAt: string;
}

export interface EmbeddedShare {
  /** Path of the unix socket other svc processes connect to. */
  socket: string;
  /** Disconnects clients (rolling back what they left open), removes the socket and serve.json. */
  close(): Promise<void>;
}

/**
 * serve.json of the process holding the data folder, when that process is alive (`pid` is the lock's
 * holder) and its socket exists; undefined otherwise (a process that serves nothing, or a stale file).
 */
export function readShare(dataDir: string, pid: number): ShareInfo | undefined {
  try {
    const info = JSON.parse(readFileSync(join(dataDir, SHARE_FILE), 'utf8')) as ShareInfo;
    if (info.pid !== pid || typeof info.socketDir !== 'string' || !Number.isInteger(info.port)) return undefined;
    return existsSync(join(info.socketDir, `.s.PGSQL.${info.port}`)) ? info : undefined;
  } catch {
    return undefined;
  }
}

// PostgreSQL frontend message types that end a request cycle: Sync (extended protocol) and Query
// (simple protocol). The startup packet has no type byte: its first byte is the length's high byte, 0.
const SYNC = 0x53;
const QUERY = 0x51;
const TERMINATE = 0x58;
const endsCycle = (message: Uint8Array) => message[0] === SYNC || message[0] === QUERY || message[0] === 0;

const SYNC_MESSAGE = new Uint8Array([SYNC, 0, 0, 0, 4]);
function simpleQuery(sql: string): Uint8Array {
  const text = Buffer.from(`${sql}\0`, 'utf8');
  const out = Buffer.alloc(5 + text.length);
  out[0] = QUERY;
  out.writeInt32BE(4 + text.length, 1);
  text.copy(out, 5);
  return out;
}

interface Item {
  handlerId: number;
  /** A protocol message, or null for "this client is gone: end what it left open". */
  message: Uint8Array | null;
  onData(data: Uint8Array): void;
  resolve(bytes: number): void;
  reject(err: Error): void;
}

/**
 * Serialises every client of the one PGlite session, in whole request cycles and whole transactions.
 *
 * pglite-socket's own queue lets another client's message (or the API's own query) run between the
 * Parse and the Sync of a client's extended-protocol cycle, or inside its open transaction: the two
 * would then share a transaction or clobber each other's unnamed statement. Here the client whose
 * message runs first owns the session until a cycle ends outside a transaction block; while it owns
 * it, it also holds the ORM's one connection (kysely's connection lock), so the API's own queries and
 * transactions wait for it, and it waits for theirs.
 */
class SessionQueue {
  private readonly queue: Item[] = [];
  private owner: number | null = null;
  private releaseLease?: () => void;
  private running = false;
  private idleTimer?: NodeJS.Timeout;

  constructor(
    private readonly pglite: PGlite,
    /** Takes the ORM's connection; resolves to the function that gives it back. */
    private readonly lease: () => Promise<() => void>,
    private readonly onIdleOwner: (handlerId: number) => void,
    private readonly idleMs: number,
    /** After a client's cycle or transaction ended (it may have written): svc serve's L1 cache is emptied. */
    private readonly onClientWork?: () => void,
  ) {}

  enqueue(handlerId: number, message: Uint8Array, onData: (data: Uint8Array) => void): Promise<number> {
    return new Promise((resolve, reject) => {
      this.queue.push({ handlerId, message, onData, resolve, reject });
      void this.pump();
    });
  }

  clearQueueForHandler(handlerId: number): void {
    for (let i = this.queue.length - 1; i >= 0; i--) {
      const item = this.queue[i]!;
      if (item.handlerId === handlerId && item.message) {
        this.queue.splice(i, 1);
        item.reject(new Error('client disconnected'));
      }
    }
  }

  /** Called when a client goes: if it owns the session, its open cycle and transaction are ended. */
  async clearTransactionIfNeeded(handlerId: number): Promise<void> {
    if (this.owner !== handlerId) return;
    await new Promise<number>((resolve, reject) => {
      this.queue.push({ handlerId, message: null, onData: () => undefined, resolve, reject });
      void this.pump();
    });
  }

  private next(): Item | undefined {
    const i = this.owner === null ? 0 : this.queue.findIndex((q) => q.handlerId === this.owner);
    return i < 0 || i >= this.queue.length ? undefined : this.queue.splice(i, 1)[0];
  }

  private async pump(): Promise<void> {
    if (this.running) return;
    this.running = true;
    clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    try {
      for (let item = this.next(); item; item = this.next()) {
        if (this.owner === null) {
          this.owner = item.handlerId;
          try {
            this.releaseLease = await this.lease();
          } catch (err) {
            this.owner = null;
            item.reject(err as Error);
            continue;
          }
        }
        if (!item.message || item.message[0] === TERMINATE) {
          await this.endSession();
          item.resolve(0);
          continue;
        }
        let bytes = 0;
        try {
          const message = item.message;
          await this.pglite.runExclusive(() =>
            this.pglite.execProtocolRawStream(message, {
              onRawData: (data) => {
                bytes += data.length;
                item.onData(data);
              },
            }),
          );
        } catch (err) {
          await this.endSession();
          item.reject(err as Error);
          continue;
        }
        if (endsCycle(item.message) && !this.pglite.isInTransaction()) this.release();
        item.resolve(bytes);
      }
    } finally {
      this.running = false;
    }
    if (this.owner !== null) {
      const owner = this.owner;
      const timer = setTimeout(
        // Decided after the event loop's poll phase: after a stall longer than idleMs (a busy
        // process), timers run before the sockets are read, and the owner's next message may be
        // waiting unread. A message read meanwhile has run pump(), which cleared or replaced this timer.
        () =>
          setImmediate(() => {
            if (this.idleTimer === timer && this.owner === owner && !this.running) this.onIdleOwner(owner);
          }),
        this.idleMs,
      );
      timer.unref();
      this.idleTimer = timer;
    }
  }

  /** Ends whatever the owner left open (a half-sent cycle, a transaction) and releases the session. */
  private async endSession(): Promise<void> {
    const discard = { onRawData: () => undefined };
    try {
      await this.pglite.runExclusive(async () => {
        await this.pglite.execProtocolRawStream(SYNC_MESSAGE, discard);
        if (this.pglite.isInTransaction()) await this.pglite.execProtocolRawStream(simpleQuery('ROLLBACK'), discard);
      });
    } finally {
      this.release();
    }
  }

  private release(): void {
    this.owner = null;
    const release = this.releaseLease;
    this.releaseLease = undefined;
    this.onClientWork?.();
    release?.();
  }
}

/**
 * Lets other svc processes use this process's embedded database while it runs: a PostgreSQL
 * protocol server (pglite-socket) on a unix socket in the data folder, announced in serve.json.
 * Clients are serialised with the API's own queries (see SessionQueue). The socket is only as
 * private as the data folder (0700), so it needs no password.
 */
export async function shareEmbeddedDatabase(
  orm: Orm,
  dataDir: string,
  logger: Logger,
  info: { url?: string; onClientWork?: () => void } = {},
): Promise<EmbeddedShare> {
  // Loaded here, not at the top: every command reads serve.json through this module, only serve shares.
  const { PGLiteSocketHandler } = await import('@electric-sql/pglite-socket');
  const connection = orm.em.getDriver().getConnection() as unknown as PgliteConnection & AbstractSqlConnection;
  const pglite = await connection.getNativeClient();
  const kysely = connection.getClient();

  let socketDir = dataDir;
  let ownDir = false;
  if (join(dataDir, SOCKET_NAME).length > MAX_SOCKET_PATH) {
    socketDir = mkdtempSync(join(tmpdir(), 'svc-'));
    ownDir = true;
  }
  const socket = join(socketDir, SOCKET_NAME);
  // We hold the data folder's lock, so a socket left here is from a process that died.
  rmSync(socket, { force: true });

  const handlers = new Map<number, PGLiteSocketHandler>();
  const queue = new SessionQueue(
    pglite,
    () =>
      new Promise((leased, failed) => {
        kysely
          .connection()
          .execute(() => new Promise<void>((release) => leased(release)))
          .catch(failed);
      }),
    (handlerId) => {
      logger.warn({ handlerId, idleMs: SHARE_IDLE_TIMEOUT_MS }, 'a client of the shared embedded database held it idle for too long; disconnecting it');
      void handlers.get(handlerId)?.detach(true);
    },
    SHARE_IDLE_TIMEOUT_MS,
    info.onClientWork,
  );

  const server: Server = createServer((conn: Socket) => {
    const handler = new PGLiteSocketHandler({
      queryQueue: queue as unknown as PGLiteSocketHandlerOptions['queryQueue'],
      closeOnDetach: true,
    });
    handlers.set(handler.handlerId, handler);
    handler.addEventListener('close', () => handlers.delete(handler.handlerId));
    handler.addEventListener('error', () => handlers.delete(handler.handlerId));
    handler.attach(conn).catch((err: unknown) => {
      logger.warn({ err }, 'could not attach a client of the shared embedded database');
      conn.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socket, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (err) => logger.error({ err }, 'the shared embedded database socket failed'));

  const share: ShareInfo = { pid: process.pid, socketDir, port: SOCKET_PORT, url: info.url, startedAt: new Date().toISOString() };
  const file = join(dataDir, SHARE_FILE);
  writeFileSync(`${file}.tmp`, `${JSON.stringify(share, null, 2)}\n`, { mode: 0o600 });
  renameSync(`${file}.tmp`, file);
  logger.info({ socket }, `other svc commands can use the embedded database while this runs (through ${socket})`);

  let closed = false;
  return {
    socket,
    async close() {
      if (closed) return;
      closed = true;
      try {
        unlinkSync(file);
      } catch {
        // already gone
      }
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
      await Promise.all([...handlers.values()].map((h) => h.detach(true)));
      handlers.clear();
      await stopped;
      rmSync(socket, { force: true });
      if (ownDir) rmSync(socketDir, { recursive: true, force: true });
    },
  };
}
