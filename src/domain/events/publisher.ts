import type { EventMessage } from './events.js';

/**
 * Hands events to the transport (RabbitMQ with publisher confirms, or the in-process dispatcher of
 * the embedded default). Implemented in src/adapters; the outbox relay is its only caller.
 */
export interface EventPublisher {
  /** 'rabbitmq' or 'in-process', for logs and readiness. */
  readonly kind: string;
  /**
   * Publishes the messages and resolves once the transport has taken responsibility for every one
   * (a broker confirm); rejects if any was not confirmed, so the caller keeps them pending.
   */
  publish(messages: readonly EventMessage[]): Promise<void>;
  /** 'ok', or what is wrong (for /health/ready). */
  check(): Promise<string>;
  close(): Promise<void>;
}
