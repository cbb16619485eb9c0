import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { EventMessage } from '../domain/events/events.js';
import type { EventPublisher } from '../domain/events/publisher.js';
import type { ConsumerSpec, ConsumerTransport, Delivery, Subscription } from '../domain/events/transport.js';
import type { ContextInput, Ctx } from '../domain/shared/context.js';
import { newId } from '../domain/shared/ids.js';
import type { Sql } from '../domain/shared/sql.js';
import type { QueueDepth } from '../domain/shared/metrics.js';

export interface DatabaseQueueOptions {
  /** Runs a statement outside any transaction (the App's pool). */
  sql: Sql;
  /** A context for a publish called without a transaction. */
  context: (input: ContextInput) => Ctx;
  logger: Logger;
  /** How often each subscription looks for due deliveries when nothing woke it (default 500 ms). */
  pollIntervalMs?: number;
  /**
   * How long a taken delivery stays leased to its subscription (default 30 s), renewed every third of
   * it while the handler works: a process that dies holding deliveries gives them up that long after.
   */
  leaseMs?: number;
  /**
   * Leases of one delivery without a settled attempt in between (its process died each time) before it
   * is parked as dead (default 5, as RabbitMQ's x-delivery-limit): a message that kills its consumer
   * cannot loop forever.
   */
  deliveryLimit?: number;
  /**
   * No other process uses this database (the embedded one, held by this process): leases found at
   * start were left by a process that died, and are released at once rather than when they expire.
   */
  soleUser?: boolean;
}

interface DeliveryRow {
  id: string;
  message_id: string;
  body: string;
  attempts: number;
  deferrals: number;
  first_deferred_at: Date | string | null;
  unsettled: number;
}

// One row per message and consumer listening to its type; a delivery already there (the same event
// published twice) is left as it is.
const INSERT = `insert into event_deliveries (id, consumer, message_id, body, status, attempts, unsettled, available_at, created_at)
  select d.id, d.consumer, d.message_id, d.body, 'pending', 0, 0, now(), now()
  from unnest($1::text[], $2::text[], $3::text[], $4::text[]) as d(id, consumer, message_id, body)
  on conflict (consumer, message_id) do nothing`;

// Takes up to $2 due deliveries of a consumer: rows another claim is taking are skipped, never waited
// for; a leased row is not due until its lease expires (available_at is the lease's expiry).
const CLAIM = `with due as (
    select id from event_deliveries
    where consumer = $1 and status = 'pending' and available_at <= now()
    order by available_at, id limit $2 for update skip locked)
  update event_deliveries d set lease_owner = $3, available_at = now() + $4::float8 * interval '1 millisecond', unsettled = d.unsettled + 1
  from due where d.id = due.id
  returning d.id, d.message_id, d.body, d.attempts, d.deferrals, d.first_deferred_at, d.unsettled`;

const RENEW = `update event_deliveries set available_at = now() + $3::float8 * interval '1 millisecond'
  where lease_owner = $1 and id = any($2::text[]) and status = 'pending'`;

// Each settles a delivery only while its lease is still this subscription's: a lease that expired and
// was taken by another process is that process's to settle (the inbox absorbs the second handling).
const ACK = `delete from event_deliveries where id = $1 and lease_owner = $2 returning id`;
const RETRY = `update event_deliveries set attempts = attempts + 1, unsettled = 0, last_error = $3, lease_owner = null,
  first_failed_at = coalesce(first_failed_at, now()), available_at = now() + $4::float8 * interval '1 millisecond'
  where id = $1 and lease_owner = $2 returning id`;
// A wait for a provider that is down: not a failed attempt.
const DEFER = `update event_deliveries set deferrals = deferrals + 1, unsettled = 0, last_error = $3, lease_owner = null,
  first_deferred_at = coalesce(first_deferred_at, now()), available_at = now() + $4::float8 * interval '1 millisecond'
  where id = $1 and lease_owner = $2 returning id`;
const DEAD = `update event_deliveries set status = 'dead', attempts = attempts + 1, unsettled = 0, last_error = $3, lease_owner = null,
  first_failed_at = coalesce(first_failed_at, now()), dead_at = now()
  where id = $1 and lease_owner = $2 returning id`;

const RELEASE_ALL = `update event_deliveries set lease_owner = null, available_at = now() where lease_owner is not null and status = 'pending'`;

// An error is kept whole in the row, up to this many characters.
const DEPTHS = `select consumer, case when status = 'dead' then 'dead' when available_at > now() then 'retrying' else 'ready' end as state,
  count(*)::int as messages from event_deliveries where lease_owner is null group by 1, 2`;
const MAX_ERROR_LENGTH = 4_000;

/**
 * The in-process event transport of deployments without RabbitMQ (the embedded default): the
 * database is the queue (`event_deliveries`), the outbox relay its publisher, the consumer runner its
 * consumer, with RabbitMQ's rules: one delivery per consumer listening to the event's type, at most
 * `prefetch` in flight per consumer, each retry waiting its delay in the table, a dead letter kept
 * with its last error, and every attempt recorded in the database so that a restart resumes.
 *
 * Publishing is transactional: the relay hands its transaction and the deliveries are written in
 * it (see EventPublisher.transactional). A delivery is taken by leasing it in one statement
 * (`for update skip locked`, so two processes never take one delivery), handled, then deleted (ack),
 * put back with its delay (retry) or parked (dead letter). Works on PGlite (one connection: no
 * statement here runs inside another's transaction) and on PostgreSQL with any number of processes.
 */
export class DatabaseQueue implements EventPublisher, ConsumerTransport {
  readonly kind = 'in-process';
  readonly transactional = true;
  readonly pollIntervalMs: number;
  readonly leaseMs: number;
  readonly deliveryLimit: number;
  private readonly logger: Logger;
  private readonly routes = new Map<string, ConsumerSpec>();
  private readonly subscriptions = new Set<QueueSubscription>();
  private released: Promise<void> | undefined;
  private closed = false;

  constructor(private readonly options: DatabaseQueueOptions) {
    this.pollIntervalMs = options.pollIntervalMs ?? 500;
    this.leaseMs = options.leaseMs ?? 30_000;
    this.deliveryLimit = options.deliveryLimit ?? 5;
    this.logger = options.logger.child({ component: 'in-process-events' });
  }

  /** Routes the consumer's event types to it from now on (the table needs nothing declared). */
  declare(spec: ConsumerSpec): Promise<void> {
    this.routes.set(spec.name, spec);
    return Promise.resolve();
  }

  /**
   * Writes one delivery per message and declared consumer of its type, in `tx` (the relay's
   * transaction) or in a transaction of its own. Never call it without `tx` inside a transaction:
   * on PGlite that transaction holds the only connection.
   */
  async publish(messages: readonly EventMessage[], tx?: Ctx): Promise<void> {
    if (!tx) return this.options.context({ actor: 'worker:relay' }).transaction((own) => this.publish(messages, own));
    // No consumer declared yet would route every event to nobody: the events would be lost.
    if (this.routes.size === 0) throw new Error('no consumer is declared on the in-process transport yet; declare them before the relay starts');
    const ids: string[] = [];
    const consumers: string[] = [];
    const messageIds: string[] = [];
    const bodies: string[] = [];
    for (const message of messages) {
      const body = JSON.stringify(message);
      for (const spec of this.routes.values()) {
        if (!spec.events.includes(message.type)) continue;
        ids.push(newId('dlv'));
        consumers.push(spec.name);
        messageIds.push(message.id);
        bodies.push(body);
      }
    }
    if (ids.length > 0) await tx.sql(INSERT, [ids, consumers, messageIds, bodies]);
  }

  /** The relay's transaction committed: the subscriptions look for the new deliveries now. */
  committed(): void {
    for (const subscription of this.subscriptions) subscription.wake();
  }

  /** Takes the consumer's due deliveries, at most `prefetch` unsettled at a time. */
  async subscribe(spec: ConsumerSpec, options: { prefetch: number }, onDelivery: (delivery: Delivery) => Promise<void>): Promise<Subscription> {
    if (this.closed) throw new Error('the in-process transport is closed');
    await this.declare(spec);
    if (this.options.soleUser) {
      await (this.released ??= this.releaseOrphanedLeases().catch((err: unknown) => {
        this.released = undefined; // asked again by the next subscribe
        throw err;
      }));
    }
    const subscription = new QueueSubscription(this, spec, options.prefetch, onDelivery, this.logger.child({ consumer: spec.name }));
    this.subscriptions.add(subscription);
    subscription.start();
    return {
      cancel: () => subscription.cancel(),
      close: async () => {
        await subscription.close();
        this.subscriptions.delete(subscription);
      },
    };
  }

  /**
   * The deliveries waiting for each declared consumer, by state: ready (due), retrying (waiting out a
   * retry delay) and dead; those being handled now (leased) are not counted, as RabbitMQ does not
   * count unacknowledged messages.
   */
  async queueDepths(): Promise<QueueDepth[]> {
    const rows = await this.run<{ consumer: string; state: QueueDepth['state']; messages: number }>(DEPTHS, []);
    const depths = new Map<string, QueueDepth>();
    for (const consumer of this.routes.keys()) {
      for (const state of ['ready', 'retrying', 'dead'] as const) depths.set(`${consumer} ${state}`, { consumer, state, messages: 0 });
    }
    // Rows of a consumer no longer declared here still count (they wait for a process that runs it).
    for (const row of rows) depths.set(`${row.consumer} ${row.state}`, row);
    return [...depths.values()];
  }

  check(): Promise<string> {
    return Promise.resolve(this.closed ? 'the in-process transport is closed' : 'ok');
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const subscription of this.subscriptions) await subscription.close();
    this.subscriptions.clear();
  }

  /** Runs a statement outside any transaction. */
  run<T>(text: string, values: unknown[]): Promise<T[]> {
    return this.options.sql<T>(text, values);
  }

  private async releaseOrphanedLeases(): Promise<void> {
    const rows = await this.run<{ id: string }>(`${RELEASE_ALL} returning id`, []);
    if (rows.length > 0) this.logger.info({ deliveries: rows.length }, `took back ${rows.length} event delivery(ies) left in flight by a process that stopped`);
  }
}

/** One consumer's subscription: a loop that leases due deliveries while it has room, woken by new work and settles. */
class QueueSubscription {
  // Identifies this subscription's leases (a process can run several; pid for whoever reads the table).
  private readonly token = `${process.pid}:${randomBytes(8).toString('hex')}`;
  private readonly held = new Set<string>();
  private running: Promise<void> | undefined;
  private stopping = false;
  private woken = false;
  private wakeSleeper: (() => void) | undefined;
  private renewTimer: NodeJS.Timeout | undefined;
  private renewing = false;
  private dueTimer: { at: number; timer: NodeJS.Timeout } | undefined;

  constructor(
    private readonly queue: DatabaseQueue,
    private readonly spec: ConsumerSpec,
    private readonly prefetch: number,
    private readonly onDelivery: (delivery: Delivery) => Promise<void>,
    private readonly logger: Logger,
  ) {}

  start(): void {
    this.running = this.loop();
    this.renewTimer = setInterval(() => void this.renew(), Math.max(10, Math.floor(this.queue.leaseMs / 3)));
    this.renewTimer.unref();
  }

  /** There may be work: look now rather than at the next poll. */
  wake(): void {
    this.woken = true;
    this.wakeSleeper?.();
  }

  /** No new deliveries; the ones handed out can still be settled (their leases are renewed until close). */
  async cancel(): Promise<void> {
    this.stopping = true;
    this.wake();
    await this.running;
  }

  async close(): Promise<void> {
    await this.cancel();
    clearInterval(this.renewTimer);
    if (this.dueTimer) clearTimeout(this.dueTimer.timer);
    this.dueTimer = undefined;
  }

  private async loop(): Promise<void> {
    let failures = 0;
    while (!this.stopping) {
      this.woken = false;
      const room = this.prefetch - this.held.size;
      let full = false;
      if (room > 0) {
        let rows: DeliveryRow[];
        try {
          rows = await this.queue.run<DeliveryRow>(CLAIM, [this.spec.name, room, this.token, this.queue.leaseMs]);
          failures = 0;
        } catch (err) {
          failures++;
          this.logger.warn({ err }, 'could not take event deliveries from the database; trying again');
          await this.sleep(Math.min(30_000, this.queue.pollIntervalMs * 2 ** failures));
          continue;
        }
        for (const row of rows) this.dispatch(row);
        full = rows.length === room;
      }
      // A full batch: there may be more due at once (taken as soon as there is room).
      if (!full) await this.sleep(this.queue.pollIntervalMs);
    }
  }

  private dispatch(row: DeliveryRow): void {
    // Our own lease came back to us (a renewal was late): that delivery is still being handled here.
    if (this.held.has(row.id)) return;
    if (row.unsettled > this.queue.deliveryLimit) {
      const reason = `delivered ${row.unsettled - 1} times without being settled (the process handling it stopped each time)`;
      this.logger.error({ messageId: row.message_id }, `${reason}; parked as dead`);
      this.settle(DEAD, [row.id, this.token, reason]).catch((err: unknown) =>
        this.logger.warn({ err, messageId: row.message_id }, 'could not park a delivery'),
      );
      return;
    }
    this.held.add(row.id);
    const delivery: Delivery = {
      body: Buffer.from(row.body, 'utf8'),
      messageId: row.message_id,
      attempts: row.attempts,
      deferrals: row.deferrals,
      firstDeferredAt: row.first_deferred_at === null ? undefined : new Date(row.first_deferred_at),
      ack: () => this.settle(ACK, [row.id, this.token]),
      retry: async (delayMs, error) => {
        await this.settle(RETRY, [row.id, this.token, clip(error), delayMs]);
        this.wakeIn(delayMs);
      },
      defer: async (delayMs, reason) => {
        await this.settle(DEFER, [row.id, this.token, clip(reason), delayMs]);
        this.wakeIn(delayMs);
      },
      deadLetter: (reason) => this.settle(DEAD, [row.id, this.token, clip(reason)]),
    };
    this.onDelivery(delivery)
      .catch((err: unknown) => this.logger.error({ err, messageId: row.message_id }, 'a delivery was not settled; it is taken again when its lease expires'))
      .finally(() => {
        this.held.delete(row.id);
        this.wake();
      });
  }

  private async settle(text: string, values: unknown[]): Promise<void> {
    const rows = await this.queue.run<{ id: string }>(text, values);
    if (rows.length === 0) {
      throw new Error(`the lease on event delivery ${String(values[0])} was lost (it expired and another subscription took it over)`);
    }
  }

  // Keeps the leases of the deliveries in flight from expiring while their handlers work.
  private async renew(): Promise<void> {
    if (this.held.size === 0 || this.renewing) return;
    this.renewing = true;
    try {
      await this.queue.run(RENEW, [this.token, [...this.held], this.queue.leaseMs]);
    } catch (err) {
      this.logger.warn({ err }, 'could not renew the leases of the event deliveries in flight');
    } finally {
      this.renewing = false;
    }
  }

  // A retry is due in `ms`: wake then, if that is before the next poll anyway.
  private wakeIn(ms: number): void {
    const at = Date.now() + ms;
    if (this.stopping || (this.dueTimer && this.dueTimer.at <= at)) return;
    if (this.dueTimer) clearTimeout(this.dueTimer.timer);
    const timer = setTimeout(() => {
      this.dueTimer = undefined;
      this.wake();
    }, ms + 5);
    timer.unref();
    this.dueTimer = { at, timer };
  }

  // Waits `ms`, or less when woken (new work, a settle, a due retry, stop).
  private async sleep(ms: number): Promise<void> {
    if (this.stopping || this.woken) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wakeSleeper = done;
    });
    this.wakeSleeper = undefined;
  }
}

function clip(text: string): string {
  return text.length > MAX_ERROR_LENGTH ? `${text.slice(0, MAX_ERROR_LENGTH)}…` : text;
}
