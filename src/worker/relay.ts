import type { Logger } from 'pino';
import type { EventMessage, EventType } from '../domain/events/events.js';
import type { EventPublisher } from '../domain/events/publisher.js';
import type { Ctx } from '../domain/shared/context.js';

import { inTransaction } from './transaction.js';

export interface RelayOptions {
  publisher: EventPublisher;
  /** A context per batch (the App's `context`), with an EntityManager of its own. */
  context: (input: { actor: string; traceId?: string }) => Ctx;
  logger: Logger;
  /** Rows claimed and published per transaction (default 100). */
  batchSize?: number;
  /** How often to look for rows when nobody called notify() (default 1 s). */
  pollIntervalMs?: number;
  /**
   * After a failed publish: the rows wait `baseMs` × 2^attempts (at most `maxMs`) before a relay
   * tries them again, and this relay pauses as long before its next batch (defaults 1 s and 60 s).
   */
  backoff?: { baseMs: number; maxMs: number };
  /** Told what each pass did (metrics). */
  onPass?: (pass: RelayPass) => void;
}

/** What one pass did. */
export interface RelayPass {
  published: number;
  /** Rows whose publish failed (they stay pending, with attempts + 1 and the error). */
  failed: number;
}

interface OutboxRow {
  id: string;
  type: string;
  aggregate_id: string;
  payload: Record<string, unknown>;
  traceparent: string | null;
  created_at: Date;
}

// Claims a batch: rows another relay holds are skipped (never waited for, never published twice).
// A status column and row locks, never a "last id seen" cursor: a transaction that commits after a
// later one would have its rows skipped by a cursor.
const CLAIM = `select id, type, aggregate_id, payload, traceparent, created_at from outbox_events
  where status = 'pending' and available_at <= now() order by created_at, id limit $1 for update skip locked`;
const MARK_PUBLISHED = `update outbox_events set status = 'published', published_at = now(), last_error = null where id = any($1::text[])`;
const MARK_FAILED = `update outbox_events set attempts = attempts + 1, last_error = $2,
  available_at = now() + least($4::float8, $3::float8 * power(2, attempts)) * interval '1 millisecond' where id = any($1::text[])`;

/**
 * The outbox relay: publishes pending outbox rows (confirmed by the broker) and marks them
 * published, batch by batch, each in one transaction holding the rows' locks. Any number of relays
 * can run at once.
 *
 * Delivery is at least once, by design: a relay that crashes (or loses the database) after the
 * broker confirmed a batch but before its transaction committed leaves the rows pending, and they
 * are published again. Consumers de-duplicate by message id (the inbox), so that costs nothing.
 */
export class OutboxRelay {
  private readonly batchSize: number;
  private readonly pollIntervalMs: number;
  private readonly backoff: { baseMs: number; maxMs: number };
  private readonly logger: Logger;
  private running: Promise<void> | undefined;
  private stopping = false;
  private woken = false;
  private wake: (() => void) | undefined;
  private failures = 0;

  constructor(private readonly options: RelayOptions) {
    this.batchSize = options.batchSize ?? 100;
    this.pollIntervalMs = options.pollIntervalMs ?? 1_000;
    this.backoff = options.backoff ?? { baseMs: 1_000, maxMs: 60_000 };
    this.logger = options.logger.child({ component: 'relay' });
  }

  /** Publishes one batch of due rows; resolves with what it did. */
  async relayOnce(): Promise<RelayPass> {
    const { publisher } = this.options;
    const ctx = this.options.context({ actor: 'worker:relay' });
    const pass = await inTransaction(ctx, async (tx) => {
      const rows = await tx.sql<OutboxRow>(CLAIM, [this.batchSize]);
      if (rows.length === 0) return { published: 0, failed: 0 };
      const ids = rows.map((r) => r.id);
      if (publisher.transactional) {
        // The deliveries are written in this transaction: they commit with the rows marked
        // published, or neither does (a failure here rolls the whole batch back; the loop backs off).
        await publisher.publish(rows.map(toMessage), tx);
        await tx.sql(MARK_PUBLISHED, [ids]);
        return { published: rows.length, failed: 0 };
      }
      try {
        await publisher.publish(rows.map(toMessage));
      } catch (err) {
        const error = err instanceof Error ? err.message : String(err);
        await tx.sql(MARK_FAILED, [ids, error, this.backoff.baseMs, this.backoff.maxMs]);
        this.logger.warn({ err, rows: rows.length }, `could not publish ${rows.length} event(s); they stay pending and are retried`);
        return { published: 0, failed: rows.length };
      }
      await tx.sql(MARK_PUBLISHED, [ids]);
      return { published: rows.length, failed: 0 };
    });
    if (pass.published > 0) publisher.committed?.();
    this.options.onPass?.(pass);
    return pass;
  }

  /** Starts relaying in the background until stop(). */
  start(): void {
    if (this.running) return;
    this.stopping = false;
    this.running = this.loop();
  }

  /** There is new work (called by the API after an outbox row committed): relay now rather than at the next poll. */
  notify(): void {
    this.woken = true;
    this.wake?.();
  }

  /** Graceful stop: the batch in progress is finished (published and marked, or marked failed), then it stops. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.wake?.();
    await this.running;
    this.running = undefined;
  }

  private async loop(): Promise<void> {
    while (!this.stopping) {
      this.woken = false;
      let pass: RelayPass;
      try {
        pass = await this.relayOnce();
      } catch (err) {
        // The database is unreachable, say: nothing was marked; back off and try again.
        this.logger.error({ err }, 'the outbox relay could not read or mark outbox rows');
        pass = { published: 0, failed: 1 };
      }
      if (pass.failed > 0) {
        this.failures++;
        await this.sleep(Math.min(this.backoff.maxMs, this.backoff.baseMs * 2 ** (this.failures - 1)), false);
      } else {
        this.failures = 0;
        // A full batch: there may be more at once.
        if (pass.published < this.batchSize) await this.sleep(this.pollIntervalMs, true);
      }
    }
  }

  // Waits `ms`, or less when stopped, or (if `wakeable`) when notify() was called meanwhile.
  private async sleep(ms: number, wakeable: boolean): Promise<void> {
    if (this.stopping || (wakeable && this.woken)) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wake = () => {
        if (this.stopping || wakeable) done();
      };
    });
    this.wake = undefined;
  }
}

function toMessage(row: OutboxRow): EventMessage {
  return {
    id: row.id,
    type: row.type as EventType,
    aggregateId: row.aggregate_id,
    // jsonb arrives parsed from node-postgres; other drivers may give its text.
    payload: row.payload,
    occurredAt: row.created_at.toISOString(),
    ...(row.traceparent ? { traceparent: row.traceparent } : {}),
  };
}
