import type { Logger } from 'pino';
import type { Tracing } from '../domain/shared/tracing.js';
import { EVENT_TYPES, type EventMessage, type EventType } from '../domain/events/events.js';
import type { ConsumerSpec, ConsumerTransport, Delivery, Subscription } from '../domain/events/transport.js';
import type { Ctx } from '../domain/shared/context.js';
import { DomainError } from '../domain/shared/errors.js';
// The worker's error edge, as src/server/errors.ts is the API's: the one place that reads PostgreSQL's error codes.
import { translateDatabaseError } from '../adapters/database.js';
import { inTransaction } from './transaction.js';

/** A consumer of events: what it listens to and what it does with one. */
export interface ConsumerDefinition {
  /** Lower-case, `a-z0-9-` (`payments`): names its queues and its inbox rows. */
  name: string;
  events: readonly EventType[];
  /**
   * Does the consumer's work for one event, in the transaction that also records the message as
   * processed (ctx.em is that transaction's): both commit or neither does. Throw to retry later;
   * throw a PermanentFailure (or a DomainError `invalid`/`unprocessable`) when retrying cannot help.
   * Return a CommitAndWait when the work done so far must commit although the message must be
   * handled again later (see CommitAndWait).
   */
  handle(ctx: Ctx, message: EventMessage, first?: FirstRows, prepared?: unknown): Promise<void | CommitAndWait>;
  /** Events the handler may emit (in its transaction): after such a message commits, the runner calls `emitted`. */
  emits?: readonly EventType[];
  /**
   * The handler's first statement, which the runner sends with the inbox insert in one round trip
   * (a consumer transaction is mostly round trips) and whose rows it hands to `handle` as `first`.
   * Its text uses `$1`… for its values and may refer to `inbox`, a row set with one row when the
   * message is new and none for a duplicate. It runs for a duplicate too (one statement, one
   * snapshot): a statement that writes must do so only `where exists (select 1 from inbox)`.
   * `prepared` is what `prepare` resolved (undefined when the handler runs without the runner).
   * Undefined: no statement of its own this time (the inbox insert alone).
   */
  first?(message: EventMessage, prepared?: unknown): FirstStatement | undefined;
  /**
   * Runs before the transaction, committed on its own (one statement, no transaction around it):
   * what must be durable before the handler calls a provider, should the process die before the
   * handler's transaction commits (the payments consumer's: the order `processing` with its first
   * key, so no cancellation can put its stock back while the charge may be at Stripe). It runs for
   * every delivery, redeliveries and duplicates included: it must change nothing a second time.
   * What it resolves is handed to `first` and `handle` as `prepared` (the payments consumer's: the
   * outcome of the charge it sent with no transaction open, whose key that statement had committed;
   * the receipts consumer's: the receipt it rendered and stored, which the transaction records).
   */
  prepare?(ctx: Ctx, message: EventMessage): Promise<unknown>;
}

/** A consumer's first statement (see ConsumerDefinition.first). */
export interface FirstStatement {
  /**
   * Common table expressions (`name as (…), …`) that `text` reads, placed beside `inbox` at the
   * statement's top level, where PostgreSQL wants a data-modifying one (an update, an insert with
   * `returning`); they may refer to `inbox`, and the same rule about writing applies to them.
   */
  with?: string;
  text: string;
  values: unknown[];
}

/** The rows of a consumer's first statement. */
export type FirstRows = Record<string, unknown>[];

/**
 * The rows of the consumer's first statement: those the runner handed over, or (the handler called
 * without the runner, by a test or a replay tool) the statement run now, as for a new message.
 */
export async function firstRows(tx: Ctx, consumer: ConsumerDefinition, message: EventMessage, first: FirstRows | undefined): Promise<FirstRows> {
  if (first) return first;
  const statement = consumer.first?.(message);
  if (!statement) return [];
  return tx.sql(`with inbox as (select true as new)${statement.with ? `, ${statement.with}` : ''} ${statement.text}`, statement.values);
}

/** Checks a consumer definition once, where it is written. */
export function defineConsumer(definition: ConsumerDefinition): ConsumerDefinition {
  if (!/^[a-z][a-z0-9-]{0,59}$/.test(definition.name)) throw new Error(`consumer name ${JSON.stringify(definition.name)}: lower-case a-z, 0-9 and -`);
  if (definition.events.length === 0) throw new Error(`consumer ${definition.name} listens to no event`);
  return definition;
}

/** A failure that retrying cannot fix: the message goes to the dead-letter queue at once. */
export class PermanentFailure extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'PermanentFailure';
  }
}

/**
 * A service the consumer needs is unavailable (down, unreachable, its circuit breaker open, rate
 * limiting): not the message's fault. The runner defers the message: it waits in the retry queues
 * as long as the outage lasts, without counting as a failed attempt (see ConsumerRunner).
 */
export class ProviderUnavailable extends Error {
  /** The service (`stripe`, `sendgrid`, `s3`), for logs. */
  readonly service: string;
  /** How long the service asked to wait (a Retry-After, the breaker's reset time), if it said. */
  readonly retryAfterMs: number | undefined;

  constructor(service: string, message: string, options?: ErrorOptions & { retryAfterMs?: number }) {
    super(message, options);
    this.name = 'ProviderUnavailable';
    this.service = service;
    this.retryAfterMs = options?.retryAfterMs;
  }
}

/**
 * What a handler returns when the message must be handled again later (its `reason`, as if thrown:
 * a ProviderUnavailable defers it, another error retries it or dead-letters it) but what it wrote
 * must not roll back: the runner commits the transaction without the message's inbox row (so the
 * message is handled again), then settles the message by the reason. The payments consumer's cases:
 * a charge whose outcome is unknown (a timeout, a lost answer, a stored 500 that Stripe's search
 * cannot explain yet) may have taken the customer's money, so the order must stay `processing`
 * with the attempt's key stored, never back to `pending`, where a cancellation would put its stock
 * back and the retry find nothing to pay; and a charge the provider surely did not make, after
 * which the order goes back to `pending`, cancellable while the message waits.
 */
export class CommitAndWait {
  constructor(readonly reason: unknown) {}
}

const INBOX_INSERT = 'insert into processed_messages (consumer, message_id, processed_at)';

/** 24 h: how long a message may keep waiting for an unavailable provider before it is dead-lettered. */
export const DEFAULT_MAX_DEFERRAL_MS = 24 * 3_600_000;

/** 1 s, 10 s, 1 min, 10 min: the default waits before each retry; after the last, the dead-letter queue. */
export const DEFAULT_RETRY_DELAYS_MS: readonly number[] = [1_000, 10_000, 60_000, 600_000];

export interface ConsumerRunnerOptions {
  transport: ConsumerTransport;
  /** A context per message (the App's `context`), with an EntityManager of its own. */
  context: (input: { actor: string; traceId?: string }) => Ctx;
  logger: Logger;
  /** Messages handled at once (and unacknowledged at most): `svc worker --concurrency`. */
  prefetch: number;
  retryDelaysMs?: readonly number[];
  /** How long a message may be deferred (its provider unavailable) before it is dead-lettered (default 24 h). */
  maxDeferralMs?: number;
  /** A message of a consumer that `emits` events has committed: the outbox may have new rows (wakes the relay). */
  emitted?: () => void;
  /** A consumer span per message, continuing its traceparent (when tracing is on). */
  tracing?: Tracing;
}

/** What happened to one delivery (for logs and tests). */
export type Outcome = 'processed' | 'duplicate' | 'retry' | 'deferred' | 'dead-letter' | 'unsettled';

/**
 * Runs one consumer on a transport: each message parsed and validated (a malformed one goes to the
 * dead-letter queue at once), handled in a transaction that records its id in the inbox
 * (`processed_messages`), acknowledged only after that commit; a message already in the inbox is
 * acknowledged without running the handler again. A failed message is put in the wait queue of its
 * next retry (confirmed, then acknowledged), and after the last one in the dead-letter queue.
 *
 * A handler that throws ProviderUnavailable (Stripe's circuit open, SendGrid or S3 unreachable)
 * defers its message instead: it waits in the same wait queues, without counting as a failed
 * attempt, so an outage longer than the whole retry ladder fails no order and parks nothing. Each
 * deferral waits the next step of the ladder (the last one repeating) or what the provider asked
 * for, whichever is longer, and logs a warning with how long the message has been waiting; a
 * message still deferred after `maxDeferralMs` (24 h) is dead-lettered, so a message that can never
 * succeed does not circle for ever.
 */
export class ConsumerRunner {
  readonly spec: ConsumerSpec;
  private subscription: Subscription | undefined;
  private readonly inFlight = new Set<Promise<void>>();
  private readonly logger: Logger;
  /** Called after each delivery is settled (or could not be): a hook for metrics and tests. */
  onSettled?: (outcome: Outcome, delivery: Delivery) => void;

  constructor(
    readonly consumer: ConsumerDefinition,
    private readonly options: ConsumerRunnerOptions,
  ) {
    this.spec = { name: consumer.name, events: consumer.events, retryDelaysMs: options.retryDelaysMs ?? DEFAULT_RETRY_DELAYS_MS };
    this.logger = options.logger.child({ consumer: consumer.name });
  }

  /** Declares the consumer's queues and starts consuming. */
  async start(): Promise<void> {
    this.subscription = await this.options.transport.subscribe(this.spec, { prefetch: this.options.prefetch }, (delivery) => this.track(delivery));
  }

  /** Messages being handled now. */
  get busy(): number {
    return this.inFlight.size;
  }

  /** Graceful stop: no new messages, the ones in flight finished and acknowledged, then the channel closed. */
  async stop(): Promise<void> {
    const subscription = this.subscription;
    this.subscription = undefined;
    if (!subscription) return;
    await subscription.cancel();
    while (this.inFlight.size) await Promise.allSettled([...this.inFlight]);
    await subscription.close();
  }

  private track(delivery: Delivery): Promise<void> {
    const work = this.process(delivery).then(
      (outcome) => this.onSettled?.(outcome, delivery),
      (err: unknown) => {
        // Settling failed (the connection dropped, say): the message was not acknowledged, so the
        // broker delivers it again; the inbox absorbs it if its work had committed.
        this.logger.warn({ err, messageId: delivery.messageId }, 'could not settle a message; it will be delivered again');
        this.onSettled?.('unsettled', delivery);
      },
    );
    this.inFlight.add(work);
    void work.finally(() => this.inFlight.delete(work));
    return work;
  }

  /** Handles one delivery and settles it: ack, retry or dead-letter. */
  private async process(delivery: Delivery): Promise<Outcome> {
    let message: EventMessage;
    try {
      message = parseEnvelope(delivery.body, this.consumer.events);
    } catch (err) {
      const reason = `malformed message: ${(err as Error).message}`;
      this.logger.warn({ messageId: delivery.messageId }, `${reason}; moved to the dead-letter queue`);
      await delivery.deadLetter(reason);
      return 'dead-letter';
    }
    // With tracing on, a consumer span continues the message's trace; its statements and provider calls are its children.
    const tracing = this.options.tracing;
    if (tracing?.enabled) {
      const span = tracing.start(`${this.consumer.name} process ${message.type}`, {
        kind: 'consumer',
        parent: message.traceparent,
        attributes: { 'messaging.operation.type': 'process', 'messaging.message.id': message.id, 'messaging.consumer.group.name': this.consumer.name },
      });
      try {
        const outcome = await span.run(() => this.handle(delivery, message));
        span.setAttributes({ 'svc.outcome': outcome });
        span.end(outcome === 'dead-letter' ? new Error('dead-lettered') : undefined);
        return outcome;
      } catch (err) {
        span.end(err);
        throw err;
      }
    }
    return this.handle(delivery, message);
  }

  private async handle(delivery: Delivery, message: EventMessage): Promise<Outcome> {
    const log = this.logger.child({ messageId: message.id, type: message.type, attempt: delivery.attempts + 1 });
    const ctx = this.options.context({ actor: `worker:${this.consumer.name}`, traceId: traceIdOf(message.traceparent) });
    let outcome: 'processed' | 'duplicate' | CommitAndWait;
    try {
      const prepared = await this.consumer.prepare?.(ctx, message);
      outcome = await inTransaction(ctx, async (tx) => {
        // The inbox row first (alone, or with the handler's first statement), so that a second
        // delivery of the same message running at the same time (another worker) waits on this row
        // and then finds it, or takes over if this transaction rolls back.
        const first = this.consumer.first?.(message, prepared);
        if (!first) {
          const recorded = await tx.sql<{ message_id: string }>(`${INBOX_INSERT} values ($1, $2, now()) on conflict do nothing returning message_id`, [
            this.consumer.name,
            message.id,
          ]);
          if (recorded.length === 0) return 'duplicate';
          return this.handled(tx, message, await this.consumer.handle(tx, message, undefined, prepared));
        }
        // The inbox insert and the handler's first statement in one round trip: no row at all is a
        // duplicate; otherwise one row per row of the first statement (svc_first set), or one without.
        const n = first.values.length;
        const rows = await tx.sql<Record<string, unknown>>(
          `with inbox as (${INBOX_INSERT} values ($${n + 1}, $${n + 2}, now()) on conflict do nothing returning message_id),${first.with ? ` ${first.with},` : ''}
           first as (${first.text})
           select inbox.message_id as svc_inbox, f.* from inbox left join (select true as svc_first, first.* from first) f on true`,
          [...first.values, this.consumer.name, message.id],
        );
        if (rows.length === 0) return 'duplicate';
        const found = rows.filter((r) => r.svc_first === true).map(({ svc_inbox: _inbox, svc_first: _first, ...row }) => row);
        return this.handled(tx, message, await this.consumer.handle(tx, message, found, prepared));
      });
    } catch (err) {
      return this.failed(delivery, err, log);
    }
    // Committed, the inbox row left out: the message is settled as if its reason had been thrown.
    if (outcome instanceof CommitAndWait) return this.failed(delivery, outcome.reason, log);
    if (outcome === 'processed' && this.consumer.emits?.length) this.options.emitted?.();
    await delivery.ack();
    if (outcome === 'duplicate') log.info('already processed; acknowledged without effect');
    else log.debug('processed');
    return outcome;
  }

  /** 'processed', or a CommitAndWait with the message's inbox row taken out again (the transaction commits without it). */
  private async handled(tx: Ctx, message: EventMessage, result: void | CommitAndWait): Promise<'processed' | CommitAndWait> {
    if (!(result instanceof CommitAndWait)) return 'processed';
    await tx.sql('delete from processed_messages where consumer = $1 and message_id = $2', [this.consumer.name, message.id]);
    return result;
  }

  private async failed(delivery: Delivery, err: unknown, log: Logger): Promise<Outcome> {
    const error = describe(err);
    const delays = this.spec.retryDelaysMs;
    if (err instanceof ProviderUnavailable && delays.length > 0) return this.deferred(delivery, err, error, log);
    // The database unreachable or its connection lost under the message (a restart, a failover): not
    // the message's fault either, so it waits as for a provider rather than use up its retries.
    const database = databaseUnavailable(err);
    if (database && delays.length > 0) return this.deferred(delivery, database, describe(database), log);
    if (isPermanent(err)) {
      log.warn({ err }, `failed for good; moved to the dead-letter queue`);
      await delivery.deadLetter(error);
      return 'dead-letter';
    }
    if (delivery.attempts < delays.length) {
      const delayMs = delays[delivery.attempts]!;
      log.warn({ err }, `failed; retrying in ${delayMs} ms`);
      await delivery.retry(delayMs, error);
      return 'retry';
    }
    log.error({ err }, `failed ${delivery.attempts + 1} times; moved to the dead-letter queue`);
    await delivery.deadLetter(error);
    return 'dead-letter';
  }

  private async deferred(delivery: Delivery, err: ProviderUnavailable, error: string, log: Logger): Promise<Outcome> {
    const now = Date.now();
    const since = delivery.firstDeferredAt ?? new Date(now);
    const waitedMs = Math.max(0, now - since.getTime());
    const context = { service: err.service, deferrals: delivery.deferrals, waitingSince: since.toISOString(), waitedMs, error };
    const maxMs = this.options.maxDeferralMs ?? DEFAULT_MAX_DEFERRAL_MS;
    if (waitedMs >= maxMs) {
      const reason = `${error} (still unavailable after waiting ${duration(waitedMs)} since ${since.toISOString()}, ${delivery.deferrals} deferrals)`;
      log.error(
        context,
        `${err.service} unavailable for ${duration(waitedMs)}, longer than the ${duration(maxMs)} a message may wait; moved to the dead-letter queue`,
      );
      await delivery.deadLetter(reason);
      return 'dead-letter';
    }
    const delayMs = deferralDelay(this.spec.retryDelaysMs, delivery.deferrals, err.retryAfterMs);
    log.warn(
      context,
      `${err.service} unavailable; the message waits ${delayMs} ms for it (not counted as a failed attempt), waiting for ${duration(waitedMs)} so far`,
    );
    await delivery.defer(delayMs, error);
    return 'deferred';
  }
}

/**
 * The wait of a deferral: the ladder's step for the deferrals so far (the last one repeating), or
 * the shortest delay that covers what the provider asked for, whichever is longer. Always one of
 * the delays (RabbitMQ has a wait queue for each, and none other).
 */
export function deferralDelay(delays: readonly number[], deferrals: number, retryAfterMs: number | undefined): number {
  const step = delays[Math.min(deferrals, delays.length - 1)]!;
  if (retryAfterMs === undefined || retryAfterMs <= step) return step;
  return delays.find((d) => d >= retryAfterMs) ?? delays.at(-1)!;
}

/** `850 ms`, `42 s`, `12 min`, `3.5 h`: a wait in words for the logs. */
function duration(ms: number): string {
  if (ms < 1_000) return `${ms} ms`;
  if (ms < 120_000) return `${Math.round(ms / 1_000)} s`;
  if (ms < 7_200_000) return `${Math.round(ms / 60_000)} min`;
  return `${Math.round(ms / 360_000) / 10} h`;
}

const PERMANENT_CODES = new Set(['invalid', 'unprocessable']);

/** A ProviderUnavailable for the database when the error says it cannot be reached or its connection was lost. */
function databaseUnavailable(err: unknown): ProviderUnavailable | undefined {
  if (err instanceof DomainError) return undefined;
  const translated = translateDatabaseError(err);
  if (!(translated instanceof DomainError) || translated.code !== 'unavailable') return undefined;
  return new ProviderUnavailable('database', translated.message, { cause: err });
}

function isPermanent(err: unknown): boolean {
  return err instanceof PermanentFailure || (err instanceof DomainError && PERMANENT_CODES.has(err.code));
}

function describe(err: unknown): string {
  if (err instanceof DomainError) return `${err.code}: ${err.message}`;
  if (err instanceof Error) return `${err.name}: ${err.message}`;
  return String(err);
}

const TRACEPARENT = /^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$/;

/** The trace id of a W3C traceparent, so the message's logs join the request's trace. */
function traceIdOf(traceparent: string | undefined): string | undefined {
  return traceparent ? TRACEPARENT.exec(traceparent)?.[1] : undefined;
}

const ID = /^[A-Za-z0-9_-]+$/;

/** The event envelope in a message body, checked field by field; throws saying what is wrong. */
export function parseEnvelope(body: Buffer, accepted: readonly EventType[]): EventMessage {
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch {
    throw new Error('the body is not JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error('the body is not a JSON object');
  const m = value as Record<string, unknown>;
  const text = (key: string, max: number) => {
    const v = m[key];
    if (typeof v !== 'string' || v.length === 0 || v.length > max) throw new Error(`${key} is missing or not a string of 1 to ${max} characters`);
    return v;
  };
  // svc's ids (`evt_…`, `ord_…`) are letters, digits and `_` (`-` allowed): anything else was not made by svc, and a
  // NUL, which PostgreSQL cannot store, would fail every attempt rather than this check once.
  const anId = (key: string) => {
    const v = text(key, 64);
    if (!ID.test(v)) throw new Error(`${key} is not an id (letters, digits, _ and -)`);
    return v;
  };
  const id = anId('id');
  const type = text('type', 80);
  if (!(EVENT_TYPES as readonly string[]).includes(type)) throw new Error(`type ${type} is not an event svc knows`);
  if (!(accepted as readonly string[]).includes(type)) throw new Error(`type ${type} is not one this consumer listens to`);
  const aggregateId = anId('aggregateId');
  const occurredAt = text('occurredAt', 40);
  if (Number.isNaN(Date.parse(occurredAt))) throw new Error('occurredAt is not a timestamp');
  const payload = m.payload;
  if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) throw new Error('payload is not an object');
  const traceparent = m.traceparent;
  if (traceparent !== undefined && traceparent !== null && typeof traceparent !== 'string') throw new Error('traceparent is not a string');
  return {
    id,
    type: type as EventType,
    aggregateId,
    payload: payload as Record<string, unknown>,
    occurredAt,
    ...(typeof traceparent === 'string' ? { traceparent } : {}),
  };
}
