import { defineEntity, p } from '@mikro-orm/core';
import { Order } from '../orders/order.entity.js';

/**
 * A cardholder's dispute (chargeback) of an order's payment, as Stripe reported it through its
 * `charge.dispute.*` webhooks. `statusAt` is when Stripe made the event that set `status`: an older
 * event delivered late never overwrites a newer status.
 */
export const OrderDisputeSchema = defineEntity({
  name: 'OrderDispute',
  tableName: 'order_disputes',
  properties: {
    // Stripe's dispute id (`dp_…`).
    id: p.string().primary().length(255),
    order: () => p.manyToOne(Order).ref().deleteRule('cascade').index('order_disputes_order_id_index'),
    // The disputed charge (`ch_…`).
    chargeId: p.string().length(255).nullable(),
    // Integer minor units of `currency`.
    amount: p.bigint('number').check('amount >= 0'),
    currency: p.string().length(3),
    // Stripe's reason: `fraudulent`, `product_not_received`, `duplicate` …
    reason: p.string().length(100),
    // Stripe's status: `needs_response`, `under_review`, `won`, `lost` …
    status: p.string().length(50),
    statusAt: p.datetime(),
    createdAt: p.datetime().onCreate(() => new Date()),
    updatedAt: p
      .datetime()
      .onCreate(() => new Date())
      .onUpdate(() => new Date()),
  },
});

export class OrderDispute extends OrderDisputeSchema.class {}
OrderDisputeSchema.setClass(OrderDispute);
