import { defineEntity, p } from '@mikro-orm/core';
import { newId } from '../shared/ids.js';
import { User } from '../users/user.entity.js';
import { Product } from '../catalog/product.entity.js';

export const ORDER_STATUSES = ['pending', 'processing', 'completed', 'failed', 'cancelled', 'refunded'] as const;
export type OrderStatus = (typeof ORDER_STATUSES)[number];

export const OrderSchema = defineEntity({
  name: 'Order',
  tableName: 'orders',
  properties: {
    id: p
      .string()
      .primary()
      .length(30)
      .onCreate(() => newId('ord')),
    user: () => p.manyToOne(User).ref().deleteRule('restrict'),
    status: p.enum(ORDER_STATUSES).default('pending'),
    currency: p.string().length(3),
    // Integer minor units of `currency`.
    total: p.bigint('number').check('total >= 0'),
    refundedAmount: p.bigint('number').default(0).check('refunded_amount >= 0 and refunded_amount <= total'),
    // The Stripe PaymentMethod id the order is paid with (`pm_…`); null on orders placed before it was required.
    paymentMethod: p.string().length(120).nullable(),
    items: () => p.oneToMany(OrderItem).mappedBy('order'),
    createdAt: p.datetime().onCreate(() => new Date()),
    updatedAt: p
      .datetime()
      .onCreate(() => new Date())
      .onUpdate(() => new Date()),
  },
  indexes: [
    { name: 'orders_user_id_created_at_id_index', properties: ['user', 'createdAt', 'id'] },
    { name: 'orders_created_at_id_index', properties: ['createdAt', 'id'] },
    { name: 'orders_status_index', properties: ['status'] },
  ],
});

export class Order extends OrderSchema.class {}
OrderSchema.setClass(Order);

export const OrderItemSchema = defineEntity({
  name: 'OrderItem',
  tableName: 'order_items',
  properties: {
    id: p
      .string()
      .primary()
      .length(30)
      .onCreate(() => newId('itm')),
    order: () => p.manyToOne(Order).ref().deleteRule('cascade').index('order_items_order_id_index'),
    product: () => p.manyToOne(Product).ref().deleteRule('restrict').index('order_items_product_id_index'),
    // sku, name and unit price are copied at order time: the order keeps what the customer was charged.
    sku: p.string().length(64),
    name: p.string().length(200),
    unitPrice: p.bigint('number').check('unit_price >= 0'),
    quantity: p.integer().check('quantity > 0'),
  },
});

export class OrderItem extends OrderItemSchema.class {}
OrderItemSchema.setClass(OrderItem);
