/**
 * The events svc announces, as `noun.past-verb` routing keys. Each is written to the outbox in the
 * transaction of the change it announces (see outbox.entity.ts).
 */
export const EVENT_TYPES = [
  'order.created',
  'order.completed',
  'order.failed',
  'order.cancelled',
  'refund.requested',
  'refund.succeeded',
  'refund.failed',
] as const;
export type EventType = (typeof EVENT_TYPES)[number];

/** One event as it travels from the outbox to a consumer (the AMQP message body, or the in-process one). */
export interface EventMessage<P = Record<string, unknown>> {
  /** The outbox row's id (`evt_…`): the message id, and the key consumers de-duplicate by. */
  id: string;
  type: EventType;
  /** The entity the event is about (`ord_…`). */
  aggregateId: string;
  payload: P;
  /** When the change committed, ISO 8601. */
  occurredAt: string;
  /** W3C trace context of the request that caused it. */
  traceparent?: string;
}
