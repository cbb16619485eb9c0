import type { Ctx } from '../shared/context.js';
import type { EventMessage } from './events.js';

/**
 * Hands events to the transport (RabbitMQ with publisher confirms, or the in-process dispatcher of
 * the embedded default). Implemented in src/adapters; the outbox relay is its only caller.
 */
export interface EventPublisher {
  /** 'rabbitmq' or 'in-process', for logs and readiness. */
  readonly kind: string;
  /**
   * True when the transport lives in the database itself (the in-process one): the relay then hands
   * `publish` its own transaction, so the outbox rows turn published and their deliveries are written
   * in one commit (and PGlite's one connection, which that transaction holds, is never asked for twice).
   */
  readonly transactional?: boolean;
  /**
   * Publishes the messages and resolves once the transport has taken responsibility for every one
   * (a broker confirm); rejects if any was not confirmed, so the caller keeps them pending. A
   * transactional publisher writes them through `tx` when it is given (they commit with it), in a
   * transaction of its own otherwise; the others ignore `tx`.
   */
  publish(messages: readonly EventMessage[], tx?: Ctx): Promise<void>;
  /** The transaction a transactional publish wrote in has committed: deliver now rather than at the next poll. */
  committed?(): void;
  /** 'ok', or what is wrong (for /health/ready). */
  check(): Promise<string>;
  close(): Promise<void>;
}
