import { once } from 'node:events';
import { connect, type Channel, type ChannelModel, type ConfirmChannel, type ConsumeMessage, type Options, type RecoveringChannelModel } from 'amqplib';
import type { Logger } from 'pino';
import type { EventMessage } from '../domain/events/events.js';
import type { EventPublisher } from '../domain/events/publisher.js';
import type { ConsumerSpec, ConsumerTransport, Delivery, Subscription } from '../domain/events/transport.js';
import { DomainError } from '../domain/shared/errors.js';
import type { QueueDepth } from '../domain/shared/metrics.js';

export interface RabbitMqOptions {
  logger: Logger;
  /** First part of every exchange and queue name: `svc` (the default), or a random one per test. */
  prefix?: string;
  /**
   * Deliveries of one message from a work queue before the broker dead-letters it (quorum queue
   * `x-delivery-limit`): a message that crashes its consumer every time goes to the dead-letter
   * queue instead of blocking the queue. The runner itself settles every message it sees; only
   * deliveries cut short (a crash, a lost connection) count towards it.
   */
  deliveryLimit?: number;
  /**
   * Wait for the first connection (the default; the start-up error then names AMQP_URL), or return at
   * once and connect in the background (publishes fail until connected).
   */
  waitForConnect?: boolean;
  /** Attempts after the first failed one before start-up gives up (default 2); once connected it never gives up. */
  startupRetries?: number;
  /** Reconnection backoff after the connection drops: from `initialMs`, doubling (with 20 % jitter) up to `maxMs`. */
  reconnect?: { initialMs: number; maxMs: number };
  /** How long publish waits for the broker's confirms before it rejects (default 30 s). */
  confirmTimeoutMs?: number;
}

/** The names of a consumer's queues. */
export interface ConsumerQueues {
  work: string;
  dead: string;
  /** The wait queue of each retry delay, in the order of the spec's retryDelaysMs. */
  retries: { delayMs: number; queue: string }[];
}

// Quorum queues (replicated across a cluster). Dead-lettering from them is at-least-once (the
// broker keeps a message until the target queue confirmed it), which RabbitMQ 3.10 allows only with
// `x-overflow: reject-publish`.
const QUORUM = { 'x-queue-type': 'quorum' };
const SAFE_DEAD_LETTERING = { 'x-dead-letter-strategy': 'at-least-once', 'x-overflow': 'reject-publish' };

// Headers this adapter writes on retried and dead-lettered messages.
export const HEADER = {
  attempts: 'x-svc-attempts',
  lastError: 'x-svc-last-error',
  firstFailedAt: 'x-svc-first-failed-at',
  deferrals: 'x-svc-deferrals',
  firstDeferredAt: 'x-svc-first-deferred-at',
  deadAt: 'x-svc-dead-at',
  consumer: 'x-svc-consumer',
} as const;
// Headers the broker writes when it dead-letters or redelivers; not copied onto a message we republish.
const BROKER_HEADERS = /^x-(death|first-death-|last-death-|delivery-count)/;
// A header table is at most 64 KiB on the wire (amqplib refuses more): an error message is cut short.
const MAX_ERROR_LENGTH = 2_000;

/**
 * RabbitMQ: one connection (re-established with backoff when it drops) carrying the outbox relay's
 * publisher (EventPublisher, with publisher confirms) and the consumers' queues (ConsumerTransport).
 *
 * Topology, declared by the code: a durable topic exchange `<prefix>.events`, where events are
 * published with their type as routing key; per consumer a quorum queue `<prefix>.<consumer>` bound
 * by the consumer's event types, one wait queue per retry delay `<prefix>.<consumer>.retry.<delay>`
 * (a message TTL, then dead-lettered through the default exchange to the work queue by name, so a
 * retried message comes back to its own consumer only, never to the others bound to the event) and
 * a dead-letter queue `<prefix>.<consumer>.dead` that keeps the message, its headers and the last error.
 */
export class RabbitMq implements EventPublisher, ConsumerTransport {
  readonly kind = 'rabbitmq';
  readonly exchange: string;
  private readonly prefix: string;
  private readonly deliveryLimit: number;
  private readonly confirmTimeoutMs: number;
  private readonly logger: Logger;
  private readonly location: string;
  private connection!: RecoveringChannelModel;
  /** The live connection and its confirm channel (publishes, retries, dead letters); null while disconnected. */
  private live: { model: ChannelModel; confirm: ConfirmChannel } | null = null;
  /** The last connection set up, until it closes. */
  private model: ChannelModel | null = null;
  private lastError = 'not connected yet';
  private readonly declared = new Map<string, ConsumerSpec>();
  private readonly subscriptions = new Set<RabbitSubscription>();
  private closing = false;

  private constructor(url: string, options: RabbitMqOptions) {
    this.prefix = options.prefix ?? 'svc';
    this.exchange = `${this.prefix}.events`;
    this.deliveryLimit = options.deliveryLimit ?? 5;
    this.confirmTimeoutMs = options.confirmTimeoutMs ?? 30_000;
    this.logger = options.logger.child({ component: 'rabbitmq' });
    this.location = maskedUrl(url);
  }

  /** Connects to RabbitMQ at `url` (AMQP_URL) and declares the exchange. */
  static async connect(url: string, options: RabbitMqOptions): Promise<RabbitMq> {
    const rabbit = new RabbitMq(url, options);
    const reconnect = options.reconnect ?? { initialMs: 500, maxMs: 30_000 };
    const waitForConnect = options.waitForConnect ?? true;
    let connection: RecoveringChannelModel;
    try {
      connection = await connect(url, {
        clientProperties: { connection_name: `svc pid ${process.pid}` },
        recovery: {
          initialDelay: reconnect.initialMs,
          maxDelay: reconnect.maxMs,
          factor: 2,
          jitter: 0.2,
          maxRetries: Infinity,
          // Fail the start fast (a wrong AMQP_URL is an error to show), never give up once connected.
          initialMaxRetries: waitForConnect ? (options.startupRetries ?? 2) : Infinity,
          waitForConnect,
          setup: (model: ChannelModel) => rabbit.setup(model),
        },
      });
    } catch (err) {
      throw new DomainError(
        'unavailable',
        `RabbitMQ is unreachable at ${rabbit.location} (${errorText(err)}): check AMQP_URL and that the broker is running`,
        { service: 'rabbitmq' },
        { cause: err },
      );
    }
    rabbit.connection = connection;
    connection.on('connect', (model: ChannelModel) => rabbit.connected(model));
    connection.on('disconnect', (err: Error) => {
      rabbit.live = null;
      rabbit.lastError = errorText(err);
      rabbit.logger.warn({ err }, `lost the connection to RabbitMQ at ${rabbit.location}; reconnecting`);
    });
    connection.on('connect-failed', (err: Error) => {
      rabbit.lastError = errorText(err);
    });
    connection.on('reconnect-scheduled', ({ attempt, delay }: { attempt: number; delay: number }) => {
      rabbit.logger.info({ attempt, delayMs: delay }, `reconnecting to RabbitMQ at ${rabbit.location} in ${delay} ms (attempt ${attempt})`);
    });
    connection.on('error', (err: Error) => rabbit.logger.warn({ err }, 'RabbitMQ connection error'));
    return rabbit;
  }

  /** The queue names of a consumer. */
  queues(spec: Pick<ConsumerSpec, 'name' | 'retryDelaysMs'>): ConsumerQueues {
    const work = `${this.prefix}.${spec.name}`;
    return {
      work,
      dead: `${work}.dead`,
      retries: spec.retryDelaysMs.map((delayMs) => ({ delayMs, queue: `${work}.retry.${durationLabel(delayMs)}` })),
    };
  }

  // Runs on every (re)connection, before the connection is handed out: the exchange and every
  // consumer's queues (durable, so normally already there; a broker that lost them gets them back),
  // and the confirm channel.
  private async setup(model: ChannelModel): Promise<void> {
    model.on('error', () => {}); // reported through the recovering connection's 'disconnect'
    coalesceWrites(model);
    this.model = model;
    model.once('close', () => {
      if (this.model === model) this.model = null;
    });
    const confirm = await model.createConfirmChannel();
    await confirm.assertExchange(this.exchange, 'topic', { durable: true });
    for (const spec of this.declared.values()) await this.declareOn(confirm, spec);
    confirm.on('error', (err: Error) => this.logger.warn({ err }, 'RabbitMQ publishing channel error'));
    confirm.on('close', () => this.channelLost(model, 'the publishing channel closed'));
    this.live = { model, confirm };
  }

  private connected(model: ChannelModel): void {
    this.lastError = '';
    this.logger.info(`connected to RabbitMQ at ${this.location}`);
    for (const subscription of this.subscriptions) {
      subscription.start(model).catch((err: unknown) => {
        this.logger.error({ err }, `could not resume consuming ${subscription.queues.work}; reconnecting`);
        this.channelLost(model, `consuming ${subscription.queues.work} failed`);
      });
    }
  }

  /**
   * A channel closed while its connection is up (the broker closes a channel on a protocol error):
   * the simplest complete recovery is a new connection, which re-runs setup and every subscription.
   */
  channelLost(model: ChannelModel, why: string): void {
    if (this.closing || this.live?.model !== model) return;
    this.logger.warn(`${why}; reconnecting to RabbitMQ`);
    this.live = null;
    this.lastError = why;
    model.close().catch(() => {});
  }

  private async declareOn(channel: Channel, spec: ConsumerSpec): Promise<void> {
    const q = this.queues(spec);
    await channel.assertQueue(q.dead, { durable: true, arguments: { ...QUORUM } });
    await channel.assertQueue(q.work, {
      durable: true,
      arguments: {
        ...QUORUM,
        ...SAFE_DEAD_LETTERING,
        'x-dead-letter-exchange': '',
        'x-dead-letter-routing-key': q.dead,
        'x-delivery-limit': this.deliveryLimit,
      },
    });
    for (const { delayMs, queue } of q.retries) {
      await channel.assertQueue(queue, {
        durable: true,
        arguments: {
          ...QUORUM,
          ...SAFE_DEAD_LETTERING,
          'x-message-ttl': delayMs,
          // Through the default exchange by the work queue's name: back to this consumer only.
          'x-dead-letter-exchange': '',
          'x-dead-letter-routing-key': q.work,
        },
      });
    }
    for (const event of spec.events) await channel.bindQueue(q.work, this.exchange, event);
  }

  /** Declares a consumer's queues and bindings now (and again on every reconnection). */
  async declare(spec: ConsumerSpec): Promise<void> {
    this.declared.set(spec.name, spec);
    // A channel of its own (the recovering connection waits for a connection if there is none now):
    // a queue declared before with other arguments closes the channel it was declared on.
    const channel = await this.connection.createChannel();
    channel.on('error', () => {});
    try {
      await this.declareOn(channel, spec);
    } catch (err) {
      throw new DomainError(
        'unavailable',
        `could not declare the RabbitMQ queues of consumer ${spec.name} (${errorText(err)}); a queue that exists with other arguments ` +
          `(another delivery limit, say) must be deleted first, once it is empty`,
        { service: 'rabbitmq', consumer: spec.name },
        { cause: err },
      );
    } finally {
      await channel.close().catch(() => {});
    }
  }

  /**
   * Publishes events to the exchange (routing key: the event type), persistent, and resolves once the
   * broker has confirmed every one; rejects on a nack, a closed channel, a lost connection, or no
   * confirm within confirmTimeoutMs.
   */
  async publish(messages: readonly EventMessage[]): Promise<void> {
    await this.publishConfirmed(
      messages.map((m) => ({
        exchange: this.exchange,
        routingKey: m.type,
        content: Buffer.from(JSON.stringify(m)),
        options: {
          persistent: true,
          messageId: m.id,
          type: m.type,
          timestamp: Math.floor(Date.parse(m.occurredAt) / 1000),
          contentType: 'application/json',
          appId: 'svc',
          headers: m.traceparent ? { traceparent: m.traceparent } : {},
        },
      })),
    );
  }

  /** Publishes on the confirm channel; resolves when every message is confirmed. */
  async publishConfirmed(items: { exchange: string; routingKey: string; content: Buffer; options: Options.Publish }[]): Promise<void> {
    const live = this.live;
    if (!live) throw this.unavailable();
    const { confirm } = live;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(
        () =>
          reject(new DomainError('unavailable', `RabbitMQ at ${this.location} did not confirm ${items.length} message(s) within ${this.confirmTimeoutMs} ms`)),
        this.confirmTimeoutMs,
      );
    });
    try {
      const confirms: Promise<void>[] = [];
      for (const item of items) {
        let ready = true;
        confirms.push(
          new Promise<void>((resolve, reject) => {
            try {
              ready = confirm.publish(item.exchange, item.routingKey, item.content, item.options, (err: unknown) =>
                err ? reject(err instanceof Error ? err : new Error('RabbitMQ refused the message (nack)')) : resolve(),
              );
            } catch (err) {
              // A closed channel throws at once.
              reject(err instanceof Error ? err : new Error(String(err)));
            }
          }),
        );
        // The channel's buffer is full: wait until it drains (or the channel closes) before writing more.
        if (!ready) await Promise.race([once(confirm, 'drain'), once(confirm, 'close'), timeout]);
      }
      await Promise.race([Promise.all(confirms), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Consumes the consumer's work queue with manual acks, at most `prefetch` unacknowledged messages at a time. */
  async subscribe(spec: ConsumerSpec, options: { prefetch: number }, onDelivery: (delivery: Delivery) => Promise<void>): Promise<Subscription> {
    await this.declare(spec);
    const subscription = new RabbitSubscription(this, spec, options.prefetch, onDelivery, this.logger);
    this.subscriptions.add(subscription);
    const live = this.live;
    if (live) await subscription.start(live.model);
    return {
      cancel: async () => {
        this.subscriptions.delete(subscription);
        await subscription.cancel();
      },
      close: () => subscription.close(),
    };
  }

  /** 'ok', or why RabbitMQ cannot be used now (for /health/ready). */
  /**
   * The messages in each declared consumer's queues (work, retry waits, dead letters), from the
   * broker's counts (checkQueue), on a channel of its own (a missing queue closes the channel it was
   * checked on). Rejects while disconnected.
   */
  async queueDepths(): Promise<QueueDepth[]> {
    const model = this.live?.model;
    if (!model) throw new Error(`RabbitMQ at ${this.location} is not connected`);
    const channel = await model.createChannel();
    channel.on('error', () => {}); // the rejected checkQueue says it
    try {
      const depths: QueueDepth[] = [];
      for (const spec of this.declared.values()) {
        const q = this.queues(spec);
        const count = async (queue: string) => (await channel.checkQueue(queue)).messageCount;
        let retrying = 0;
        for (const { queue } of q.retries) retrying += await count(queue);
        depths.push(
          { consumer: spec.name, state: 'ready', messages: await count(q.work) },
          { consumer: spec.name, state: 'retrying', messages: retrying },
          { consumer: spec.name, state: 'dead', messages: await count(q.dead) },
        );
      }
      return depths;
    } finally {
      await channel.close().catch(() => {});
    }
  }

  check(): Promise<string> {
    return Promise.resolve(this.live ? 'ok' : `RabbitMQ at ${this.location} is not connected (${this.lastError || 'connecting'})`);
  }

  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    for (const subscription of this.subscriptions) await subscription.close();
    this.subscriptions.clear();
    const model = this.model;
    this.live = null;
    // amqplib waits for the broker's CloseOk, which never comes when the socket dies meanwhile (its
    // 'close' event does): whichever is first, and at most 5 s, so a shutdown during an outage ends.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.connection.close(),
      ...(model ? [new Promise<void>((resolve) => model.once('close', () => resolve()))] : []),
      new Promise<void>((resolve) => (timer = setTimeout(resolve, 5_000))),
    ]);
    clearTimeout(timer);
  }

  private unavailable(): DomainError {
    return new DomainError('unavailable', `RabbitMQ at ${this.location} is not connected (${this.lastError || 'connecting'}); check AMQP_URL and the broker`, {
      service: 'rabbitmq',
    });
  }

  /** Republishes a delivered message to one of the consumer's queues with extra headers, confirmed. */
  async republish(msg: ConsumeMessage, queue: string, headers: Record<string, unknown>): Promise<void> {
    const kept = Object.fromEntries(Object.entries(msg.properties.headers ?? {}).filter(([key]) => !BROKER_HEADERS.test(key)));
    const p = msg.properties;
    await this.publishConfirmed([
      {
        exchange: '',
        routingKey: queue,
        content: msg.content,
        options: {
          persistent: true,
          messageId: p.messageId as string | undefined,
          type: p.type as string | undefined,
          timestamp: p.timestamp as number | undefined,
          contentType: p.contentType as string | undefined,
          appId: p.appId as string | undefined,
          headers: { ...kept, ...headers },
        },
      },
    ]);
  }
}

/** One consumer's subscription; started again on every new connection until cancelled. */
class RabbitSubscription {
  readonly queues: ConsumerQueues;
  private current: { channel: Channel; consumerTag: string } | null = null;
  private startedOn: ChannelModel | null = null;
  private starting: Promise<void> = Promise.resolve();
  private cancelled = false;

  constructor(
    private readonly rabbit: RabbitMq,
    private readonly spec: ConsumerSpec,
    private readonly prefetch: number,
    private readonly onDelivery: (delivery: Delivery) => Promise<void>,
    private readonly logger: Logger,
  ) {
    this.queues = rabbit.queues(spec);
  }

  /** Consumes on a channel of this connection (once per connection, however often it is asked). */
  start(model: ChannelModel): Promise<void> {
    if (this.cancelled) return Promise.resolve();
    if (this.startedOn !== model) {
      this.startedOn = model;
      this.starting = this.open(model);
    }
    return this.starting;
  }

  private async open(model: ChannelModel): Promise<void> {
    const channel = await model.createChannel();
    channel.on('error', (err: Error) => this.logger.warn({ err, queue: this.queues.work }, 'RabbitMQ consuming channel error'));
    channel.on('close', () => {
      if (this.current?.channel !== channel) return;
      this.current = null;
      if (!this.cancelled) this.rabbit.channelLost(model, `the channel consuming ${this.queues.work} closed`);
    });
    await channel.prefetch(this.prefetch);
    const { consumerTag } = await channel.consume(
      this.queues.work,
      (msg) => {
        // null: the broker cancelled the consumer (the queue was deleted).
        if (msg === null) {
          this.rabbit.channelLost(model, `RabbitMQ cancelled the consumer of ${this.queues.work}`);
          return;
        }
        this.onDelivery(this.delivery(channel, msg)).catch((err: unknown) =>
          // The runner settles every delivery and does not throw; if it ever does, the message stays
          // unacknowledged and comes back when the channel closes (counted by x-delivery-limit).
          this.logger.error({ err, queue: this.queues.work }, 'a delivery was not settled'),
        );
      },
      { noAck: false },
    );
    this.current = { channel, consumerTag };
  }

  private delivery(channel: Channel, msg: ConsumeMessage): Delivery {
    const headers: Record<string, unknown> = msg.properties.headers ?? {};
    const attempts = Number(headers[HEADER.attempts] ?? 0) || 0;
    const firstFailedAt = headers[HEADER.firstFailedAt];
    const deferrals = Number(headers[HEADER.deferrals] ?? 0) || 0;
    const deferredAt = headers[HEADER.firstDeferredAt];
    const firstDeferredAt = typeof deferredAt === 'string' && !Number.isNaN(Date.parse(deferredAt)) ? new Date(deferredAt) : undefined;
    const lastError = (error: string) => (error.length > MAX_ERROR_LENGTH ? `${error.slice(0, MAX_ERROR_LENGTH)}…` : error);
    const failureHeaders = (error: string) => ({
      [HEADER.attempts]: attempts + 1,
      [HEADER.lastError]: lastError(error),
      [HEADER.firstFailedAt]: typeof firstFailedAt === 'string' ? firstFailedAt : new Date().toISOString(),
      [HEADER.consumer]: this.spec.name,
    });
    const waitQueue = (delayMs: number) => {
      const wait = this.queues.retries.find((r) => r.delayMs === delayMs);
      if (!wait) throw new Error(`consumer ${this.spec.name} has no wait queue for ${delayMs} ms`);
      return wait.queue;
    };
    return {
      body: msg.content,
      messageId: typeof msg.properties.messageId === 'string' ? msg.properties.messageId : undefined,
      attempts,
      deferrals,
      firstDeferredAt,
      ack: () => {
        // Throws when the channel closed meanwhile: the message is then redelivered (and found in the inbox).
        channel.ack(msg);
        return Promise.resolve();
      },
      retry: async (delayMs, error) => {
        // Confirmed into the wait queue first, then acknowledged: a crash in between leaves a
        // duplicate (absorbed by the inbox), never a loss.
        await this.rabbit.republish(msg, waitQueue(delayMs), failureHeaders(error));
        channel.ack(msg);
      },
      // The same wait queues, the attempts header left as it is (kept from the delivered message).
      defer: async (delayMs, reason) => {
        await this.rabbit.republish(msg, waitQueue(delayMs), {
          [HEADER.deferrals]: deferrals + 1,
          [HEADER.firstDeferredAt]: (firstDeferredAt ?? new Date()).toISOString(),
          [HEADER.lastError]: lastError(reason),
          [HEADER.consumer]: this.spec.name,
        });
        channel.ack(msg);
      },
      deadLetter: async (reason) => {
        await this.rabbit.republish(msg, this.queues.dead, { ...failureHeaders(reason), [HEADER.deadAt]: new Date().toISOString() });
        channel.ack(msg);
      },
    };
  }

  /** Stops new deliveries; deliveries in flight can still be acknowledged on the open channel. */
  async cancel(): Promise<void> {
    this.cancelled = true;
    const current = this.current;
    if (current) await current.channel.cancel(current.consumerTag).catch(() => {});
  }

  async close(): Promise<void> {
    this.cancelled = true;
    const current = this.current;
    this.current = null;
    if (current) await current.channel.close().catch(() => {});
  }
}

/** What coalesceWrites reaches inside amqplib 2's connection (its socket and the multiplexer writing to it). */
interface AmqplibConnection {
  stream: { cork(): void; uncork(): void };
  muxer: { _readIncoming(): void };
}

/**
 * One socket write per turn of the event loop for everything the connection's channels queued in
 * it: amqplib's multiplexer writes each frame (a publish, an ack) to the socket on its own, one
 * system call each (a relay batch of 100 events, 100 of them); corked around the multiplexer's pass,
 * they leave in one writev (several, past the socket's 16 KiB high-water mark, where the
 * multiplexer waits for 'drain' as before). The frames, their order and when they leave are
 * unchanged: the pass is synchronous and uncorks at its end. Left alone (amqplib's own behaviour)
 * if its internals are not the expected ones.
 */
function coalesceWrites(model: ChannelModel): void {
  const connection = (model as unknown as { connection?: Partial<AmqplibConnection> }).connection;
  const { stream, muxer } = connection ?? {};
  if (typeof stream?.cork !== 'function' || typeof stream.uncork !== 'function' || typeof muxer?._readIncoming !== 'function') return;
  const readIncoming = muxer._readIncoming.bind(muxer);
  muxer._readIncoming = () => {
    stream.cork();
    try {
      readIncoming();
    } finally {
      stream.uncork();
    }
  };
}

/** `1s`, `10s`, `1m`, `10m`, `50ms`: a delay as it appears in a queue name. */
export function durationLabel(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1_000 === 0) return `${ms / 1_000}s`;
  return `${ms}ms`;
}

function maskedUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '****';
    return u.toString();
  } catch {
    return '(an AMQP_URL that is not a URL)';
  }
}

function errorText(err: unknown): string {
  if (err instanceof AggregateError && err.errors.length) return err.errors.map(errorText).join('; ');
  if (err instanceof Error) return (err as NodeJS.ErrnoException).code ? `${(err as NodeJS.ErrnoException).code}: ${err.message}` : err.message;
  return String(err);
}
