import { defineEntity, p } from '@mikro-orm/core';
import { newId } from '../shared/ids.js';

/** Where an outbox row is: waiting for the relay, or handed to the broker (kept for replay until purged). */
export const OUTBOX_STATUSES = ['pending', 'published'] as const;
export type OutboxStatus = (typeof OUTBOX_STATUSES)[number];

/**
 * The transactional outbox: an event written in the same transaction as the state change it
 * announces, so both commit or neither does. A relay publishes pending rows (claimed with
 * `for update skip locked`, so several relays never publish one twice) and marks them published.
 */
export const OutboxEventSchema = defineEntity({
  name: 'OutboxEvent',
  tableName: 'outbox_events',
  properties: {
    id: p
      .string()
      .primary()
      .length(30)
      .onCreate(() => newId('evt')),
    // `noun.past-verb`, such as `order.created`: the routing key on the broker.
    type: p.string().length(80),
    // The entity the event is about (`ord_…`), for replay and for ordering per entity.
    aggregateId: p.string().length(30),
    payload: p.json<Record<string, unknown>>(),
    // W3C trace context of the request or message that caused the event, so the trace continues.
    traceparent: p.string().length(55).nullable(),
    status: p.enum(OUTBOX_STATUSES).default('pending'),
    // Failed publish attempts so far, and when the relay may try again.
    attempts: p.integer().default(0),
    availableAt: p.datetime(),
    lastError: p.text().nullable(),
    createdAt: p.datetime().onCreate(() => new Date()),
    publishedAt: p.datetime().nullable(),
  },
  indexes: [
    { name: 'outbox_events_status_available_at_index', properties: ['status', 'availableAt'] },
    { name: 'outbox_events_published_at_index', properties: ['publishedAt'] },
    { name: 'outbox_events_aggregate_id_created_at_index', properties: ['aggregateId', 'createdAt'] },
  ],
});

export class OutboxEvent extends OutboxEventSchema.class {}
OutboxEventSchema.setClass(OutboxEvent);
