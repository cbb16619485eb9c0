import { defineEntity, p } from '@mikro-orm/core';

/**
 * The webhook inbox: one row per Stripe event received (its `evt_…` id), written in the same
 * transaction as the event's effect. A redelivery (Stripe delivers at least once, and retries
 * anything but a 2xx) finds its row and is acknowledged without a second effect; an event whose
 * processing failed left no row, so Stripe's retry applies it.
 */
export const StripeEventSchema = defineEntity({
  name: 'StripeEvent',
  tableName: 'stripe_events',
  properties: {
    // Stripe's event id (`evt_…`).
    id: p.string().primary().length(255),
    // `payment_intent.succeeded`, `charge.refunded` …
    type: p.string().length(100),
    // The order it was about, when one was found.
    orderId: p.string().length(30).nullable(),
    // What it did: `applied`, `unchanged` (already in that state, or a late event the state machine refuses), `ignored` (a type svc does not act on), `unknown_order`.
    outcome: p.string().length(30).nullable(),
    // When Stripe created the event.
    createdAt: p.datetime(),
    receivedAt: p.datetime(),
    processedAt: p.datetime().nullable(),
  },
  indexes: [
    { name: 'stripe_events_order_id_index', properties: ['orderId'] },
    { name: 'stripe_events_received_at_index', properties: ['receivedAt'] },
  ],
});

export class StripeEvent extends StripeEventSchema.class {}
StripeEventSchema.setClass(StripeEvent);
