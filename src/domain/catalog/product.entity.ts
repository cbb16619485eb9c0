import { defineEntity, p } from '@mikro-orm/core';
import { newId } from '../shared/ids.js';

export const ProductSchema = defineEntity({
  name: 'Product',
  tableName: 'products',
  properties: {
    id: p
      .string()
      .primary()
      .length(30)
      .onCreate(() => newId('prd')),
    sku: p.string().length(64).unique('products_sku_unique'),
    name: p.string().length(200),
    // Money is integer minor units of `currency` (cents for USD).
    price: p.bigint('number').check('price >= 0'),
    currency: p.string().length(3),
    // Reserved atomically by order creation; the check makes overselling impossible even for raw SQL.
    stock: p.integer().default(0).check('stock >= 0'),
    active: p.boolean().default(true),
    createdAt: p.datetime().onCreate(() => new Date()),
    updatedAt: p
      .datetime()
      .onCreate(() => new Date())
      .onUpdate(() => new Date()),
  },
  indexes: [{ name: 'products_created_at_id_index', properties: ['createdAt', 'id'] }],
});

export class Product extends ProductSchema.class {}
ProductSchema.setClass(Product);
