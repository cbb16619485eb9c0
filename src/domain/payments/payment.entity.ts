import { defineEntity, p } from '@mikro-orm/core';
import { newId } from '../shared/ids.js';
import { Order } from '../orders/order.entity.js';

export const PAYMENT_STATUSES = ['pending', 'succeeded', 'declined', 'unknown'] as const;
export type PaymentStatus = (typeof PAYMENT_STATUSES)[number];

/**
 * One attempt to charge an order. The row is written (status `pending`) with its idempotency key
 * `pay:<orderId>:<attempt>` before the provider is called, and holds the provider's decision after.
 * `unknown`: the provider's answer for this key is a stored failure (Stripe keeps a 500 for 24 h)
 * and a search found no payment: the next attempt takes a new key.
 */
export const PaymentSchema = defineEntity({
  name: 'Payment',
  tableName: 'payments',
  properties: {
    id: p
      .string()
      .primary()
      .length(30)
      .onCreate(() => newId('pay')),
    order: () => p.manyToOne(Order).ref().deleteRule('cascade'),
    attempt: p.integer().check('attempt > 0'),
    idempotencyKey: p.string().length(100).unique('payments_idempotency_key_unique'),
    status: p.enum(PAYMENT_STATUSES).default('pending'),
    // Integer minor units of `currency`.
    amount: p.bigint('number').check('amount >= 0'),
    currency: p.string().length(3),
    provider: p.string().length(30),
    providerReference: p.string().length(255).nullable(),
    failureCode: p.string().length(100).nullable(),
    failureReason: p.string().length(1000).nullable(),
    // When the key was first handed to the provider (set, committed, before the call): from then on
    // a call refused without reaching it cannot tell whether an earlier one charged.
    sentAt: p.datetime().nullable(),
    createdAt: p.datetime().onCreate(() => new Date()),
    updatedAt: p
      .datetime()
      .onCreate(() => new Date())
      .onUpdate(() => new Date()),
  },
  uniques: [{ name: 'payments_order_id_attempt_unique', properties: ['order', 'attempt'] }],
  // Webhooks find an order's payment by the provider's id (a PaymentIntent's `pi_…`).
  indexes: [{ name: 'payments_provider_reference_index', properties: ['providerReference'] }],
});

export class Payment extends PaymentSchema.class {}
PaymentSchema.setClass(Payment);
