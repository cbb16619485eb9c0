import pg from 'pg';
import type { Logger } from 'pino';

/** The PostgreSQL channel svc's processes signal new outbox rows on. */
export const OUTBOX_CHANNEL = 'svc_outbox';

/** Signals sent at most this often: a burst of writes costs one NOTIFY per window, and a relay pass picks up all of them. */
const MIN_SPACING_MS = 20;
/** Waits before listening again after the listening connection failed: 1 s, doubling, at most 30 s. */
const RECONNECT_MS = { base: 1_000, max: 30_000 };

/** A listener started by `OutboxSignal.listen`. */
export interface OutboxListener {
  close(): Promise<void>;
}

/**
 * New outbox rows as a hint between processes on PostgreSQL (NOTIFY / LISTEN): svc serve signals
 * after a write that committed events, and the outbox relays of svc worker, which otherwise learn of
 * new rows by polling, relay at once. Only a hint: a signal lost (the listening connection down, a
 * process restarting) costs at most one poll interval, and polling stays the guarantee. Never on
 * the embedded database, where the relay runs in the process that writes and is told directly.
 */
export class OutboxSignal {
  private sending = false;
  private again = false;
  private lastSentMs = 0;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly options: {
      /** The database's connection string: each listener holds a connection of its own. */
      url: string;
      /** Runs one statement on the process's pool (the NOTIFY). */
      run: (text: string, params: unknown[]) => Promise<unknown>;
      logger: Logger;
    },
  ) {}

  /**
   * New outbox rows have committed: tells the listening relays, coalesced (one NOTIFY in flight at a
   * time, at most one per MIN_SPACING_MS; the calls meanwhile are folded into the next). Never throws.
   */
  notify(): void {
    if (this.closed) return;
    if (this.sending || this.timer) {
      this.again = true;
      return;
    }
    const waitMs = this.lastSentMs + MIN_SPACING_MS - Date.now();
    if (waitMs > 0) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.send();
      }, waitMs);
      this.timer.unref();
      return;
    }
    this.send();
  }

  private send(): void {
    if (this.closed) return;
    this.sending = true;
    this.again = false;
    this.lastSentMs = Date.now();
    this.options
      .run('select pg_notify($1, $2)', [OUTBOX_CHANNEL, ''])
      .catch((err: unknown) => this.options.logger.debug({ err }, 'could not signal new outbox rows (the relays find them at their next poll)'))
      .finally(() => {
        this.sending = false;
        if (this.again) this.notify();
      });
  }

  /**
   * Calls `onSignal` for each signal, on a connection of its own, until closed. A dropped connection
   * is opened again (after 1 s, doubling up to 30 s); meanwhile the relay polls as before.
   */
  listen(onSignal: () => void): OutboxListener {
    const { logger } = this.options;
    let client: pg.Client | undefined;
    let retry: NodeJS.Timeout | undefined;
    let failures = 0;
    let stopped = false;
    const connect = async () => {
      retry = undefined;
      if (stopped) return;
      const c = new pg.Client({ connectionString: this.options.url, application_name: 'svc outbox listener' });
      client = c;
      c.on('notification', (n) => {
        if (n.channel === OUTBOX_CHANNEL) onSignal();
      });
      c.on('error', (err) => dropped(c, err));
      try {
        await c.connect();
        await c.query(`listen ${OUTBOX_CHANNEL}`);
        failures = 0;
        // Rows may have committed while nobody listened.
        onSignal();
      } catch (err) {
        dropped(c, err);
      }
    };
    const dropped = (c: pg.Client, err: unknown) => {
      if (client !== c) return;
      client = undefined;
      c.end().catch(() => undefined);
      if (stopped) return;
      const delayMs = Math.min(RECONNECT_MS.max, RECONNECT_MS.base * 2 ** failures++);
      logger.warn({ err, retryInMs: delayMs }, 'the outbox listener lost its database connection; the relay polls until it is back');
      retry = setTimeout(() => void connect(), delayMs);
      retry.unref();
    };
    void connect();
    return {
      close: async () => {
        stopped = true;
        clearTimeout(retry);
        const c = client;
        client = undefined;
        await c?.end().catch(() => undefined);
      },
    };
  }

  /** Stops signalling (a pending coalesced signal is dropped). */
  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}
