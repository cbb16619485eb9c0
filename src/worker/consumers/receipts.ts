import type { Logger } from 'pino';
import type { EventMessage } from '../../domain/events/events.js';
import type { FileStore } from '../../domain/files/file-store.js';
import { RECEIPT_SELECT, receiptFromRow, receiptKey, recordReceipt, RECEIPT_CONTENT_TYPE, type ReceiptRow } from '../../domain/files/receipts.js';
import type { Ctx } from '../../domain/shared/context.js';
import { DomainError } from '../../domain/shared/errors.js';
import { defineConsumer, firstRows, ProviderUnavailable, type ConsumerDefinition, type FirstRows } from '../consumer.js';
import { ReceiptRenderer } from '../receipt-pdf.js';

/** The consumer's name: its queues' and `svc worker --queues`'. */
export const RECEIPTS_CONSUMER = 'receipts';

/**
 * The receipts consumer: on `order.completed`, renders the order's PDF receipt, stores it through
 * the file store (S3 with server-side encryption, or the data folder) and records it in the files
 * table (size and SHA-256 of the stored bytes) in the inbox transaction.
 *
 * Once per order: the inbox absorbs a redelivery after the commit, and a receipt already recorded
 * is not made again. A crash (or a failed commit) after the upload and before the commit leaves an
 * object and no row; the redelivered event renders the same bytes and uploads them under the same
 * key (`receipts/<orderId>.pdf`), overwriting that object rather than orphaning it, then records it.
 */
export function receiptsConsumer(deps: { files: FileStore; logger: Logger; renderer?: ReceiptRenderer }): ConsumerDefinition {
  const renderer = deps.renderer ?? new ReceiptRenderer();
  const consumer: ConsumerDefinition = defineConsumer({
    name: RECEIPTS_CONSUMER,
    events: ['order.completed'],
    // The receipt's data, and whether it is recorded already, read in the inbox insert's round trip.
    first: (message) => ({ text: RECEIPT_SELECT, values: [message.aggregateId] }),
    async handle(tx: Ctx, message: EventMessage, first?: FirstRows): Promise<void> {
      const orderId = message.aggregateId;
      const [row] = (await firstRows(tx, consumer, message, first)) as unknown as ReceiptRow[];
      if (row?.has_receipt) return;
      const data = receiptFromRow(row, new Date(message.occurredAt));
      if (!data) {
        deps.logger.warn({ orderId, messageId: message.id }, 'order.completed for an order that is not there or not paid: no receipt made');
        return;
      }
      const pdf = await renderer.render(data);
      let stored;
      try {
        stored = await deps.files.put(receiptKey(orderId), pdf, { contentType: RECEIPT_CONTENT_TYPE });
      } catch (err) {
        // The store down or refusing us (S3 unreachable, the bucket or the credentials wrong): the
        // receipt waits for it, however long (each wait logged with the reason), rather than use up its retries.
        if (err instanceof DomainError && err.code === 'unavailable') {
          throw new ProviderUnavailable(typeof err.details.service === 'string' ? err.details.service : deps.files.name, err.message, { cause: err });
        }
        throw err;
      }
      await recordReceipt(tx, orderId, stored);
      deps.logger.info({ orderId, key: stored.key, size: stored.size, store: deps.files.name }, 'receipt stored');
    },
  });
  return consumer;
}
