import { defineEntity, p } from '@mikro-orm/core';
import { newId } from '../shared/ids.js';

/** Where a delivery is: waiting for (or being handled by) its consumer, or parked for good with its last error. */
export const DELIVERY_STATUSES = ['pending', 'dead'] as const;
export type DeliveryStatus = (typeof DELIVERY_STATUSES)[number];

/**
 * The in-process event transport's queue (without AMQP_URL): one row per event and consumer that
 * listens to it, written in the outbox relay's transaction (so an outbox row turns `published` and
 * its deliveries appear in one commit). A consumer takes a due `pending` row by leasing it
 * (`lease_owner` set, `available_at` pushed to the lease's expiry, renewed while it works); a lease
 * that expires (its process died) makes the row due again. Acknowledged rows are deleted; a retry
 * puts the row back with `available_at` after its delay; a dead letter keeps it as `dead` with the
 * last error.
 */
export const EventDeliverySchema = defineEntity({
  name: 'EventDelivery',
  tableName: 'event_deliveries',
  properties: {
    id: p
      .string()
      .primary()
      .length(30)
      .onCreate(() => newId('dlv')),
    // The consumer's name (`payments`).
    consumer: p.string().length(60),
    // The event's id (`evt_…`): one delivery per consumer and message.
    messageId: p.string().length(64),
    // The message as the consumer receives it (JSON text; the runner parses and validates it).
    body: p.text(),
    status: p.enum(DELIVERY_STATUSES).default('pending'),
    // Failed attempts so far (retries and the final failure), as on RabbitMQ.
    attempts: p.integer().default(0),
    // Waits for a provider that was down (circuit open, unreachable): not failed attempts.
    deferrals: p.integer().default(0),
    // When the first of those waits began (a message deferred too long is parked as dead).
    firstDeferredAt: p.datetime().nullable(),
    // Leases taken since the last settled attempt: a message whose handler kills its process every
    // time is parked after a few (RabbitMQ's x-delivery-limit).
    unsettled: p.integer().default(0),
    // When the row is due: after its retry delay, or, while leased, when the lease expires.
    availableAt: p.datetime(),
    // Who holds the lease now (a subscription's token), null when nobody does.
    leaseOwner: p.string().length(60).nullable(),
    lastError: p.text().nullable(),
    firstFailedAt: p.datetime().nullable(),
    deadAt: p.datetime().nullable(),
    createdAt: p.datetime().onCreate(() => new Date()),
  },
  uniques: [{ name: 'event_deliveries_consumer_message_id_unique', properties: ['consumer', 'messageId'] }],
  indexes: [{ name: 'event_deliveries_consumer_status_available_at_index', properties: ['consumer', 'status', 'availableAt'] }],
});

export class EventDelivery extends EventDeliverySchema.class {}
EventDeliverySchema.setClass(EventDelivery);
