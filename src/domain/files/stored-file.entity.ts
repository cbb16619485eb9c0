import { defineEntity, p } from '@mikro-orm/core';
import { newId } from '../shared/ids.js';
import { Order } from '../orders/order.entity.js';

export const FILE_KINDS = ['receipt'] as const;
export type FileKind = (typeof FILE_KINDS)[number];

/**
 * A file svc made and stored through the file store (S3, or the data folder): what it is, for which
 * order, where it is (`key`), and its size and SHA-256 as stored, to check a download against. One
 * per order and kind: a receipt made twice (a redelivered event) is one row.
 */
export const StoredFileSchema = defineEntity({
  name: 'StoredFile',
  tableName: 'files',
  properties: {
    id: p
      .string()
      .primary()
      .length(30)
      .onCreate(() => newId('fil')),
    kind: p.enum(FILE_KINDS),
    order: () => p.manyToOne(Order).ref().deleteRule('cascade'),
    // The file store's key (`receipts/<orderId>.pdf`): deterministic, so a retry overwrites the same object.
    key: p.string().length(512).unique('files_key_unique'),
    contentType: p.string().length(100),
    size: p.bigint('number').check('size >= 0'),
    // Hex SHA-256 of the stored bytes.
    sha256: p.string().length(64),
    createdAt: p.datetime().onCreate(() => new Date()),
  },
  uniques: [{ name: 'files_order_id_kind_unique', properties: ['order', 'kind'] }],
});

export class StoredFile extends StoredFileSchema.class {}
StoredFileSchema.setClass(StoredFile);
