import type { EventType } from './events.js';

/** What a consumer listens to, and how its failed messages wait before they are tried again. */
export interface ConsumerSpec {
  /** Lower-case name (`payments`): names its queues and its rows in the inbox. */
  name: string;
  events: readonly EventType[];
  /** The waits before each retry, shortest first (1 s, 10 s, 1 min, 10 min); after the last one, dead-letter. */
  retryDelaysMs: readonly number[];
}

/** One delivery of a message to a consumer, settled exactly once by the consumer runner. */
export interface Delivery {
  /** The body as received; the runner parses and validates it (a transport never trusts it). */
  readonly body: Buffer;
  /** The transport's message id, when it carries one (the event id). */
  readonly messageId: string | undefined;
  /** Failed attempts before this delivery: 0 on the first. */
  readonly attempts: number;
  /** Deferrals before this delivery (waits for a provider that was down): they are not failed attempts. */
  readonly deferrals: number;
  /**
   * When the message was first deferred; undefined if it never was. A deferral 24 h after it is
   * dead-lettered: a replay of a dead letter must start without it (and with deferrals 0).
   */
  readonly firstDeferredAt: Date | undefined;
  /** Done: the message leaves the queue. Call only after the consumer's work committed. */
  ack(): Promise<void>;
  /** Failed for now: the message waits `delayMs` (one of the spec's retryDelaysMs), then comes back with attempts + 1. */
  retry(delayMs: number, error: string): Promise<void>;
  /**
   * A provider the consumer needs is unavailable: the message waits `delayMs` (one of the spec's
   * retryDelaysMs), then comes back with the same attempts and deferrals + 1.
   */
  defer(delayMs: number, reason: string): Promise<void>;
  /** Failed for good: the message is parked in the consumer's dead-letter queue with the reason, for `svc recover`. */
  deadLetter(reason: string): Promise<void>;
}

/** A running subscription. */
export interface Subscription {
  /** Stops new deliveries; deliveries already handed out can still be settled. */
  cancel(): Promise<void>;
  /** Releases the subscription (its channel): call after the deliveries in flight are settled. */
  close(): Promise<void>;
}

/**
 * The consumer side of the event transport (RabbitMQ, or the in-process dispatcher of the embedded
 * default): hands each consumer the messages of its events, at most `prefetch` unsettled at a time.
 */
export interface ConsumerTransport {
  readonly kind: string;
  /** Declares the consumer's queues (idempotent), so that events published before it first runs wait for it. */
  declare(spec: ConsumerSpec): Promise<void>;
  subscribe(spec: ConsumerSpec, options: { prefetch: number }, onDelivery: (delivery: Delivery) => Promise<void>): Promise<Subscription>;
}
