import type { Logger } from 'pino';
import type { EventMessage } from '../../domain/events/events.js';
import type { FileStore } from '../../domain/files/file-store.js';
import type { StoredFile } from '../../domain/files/file-store.js';
import {
  RECEIPT_CONTENT_TYPE,
  RECEIPT_PREPARE_SELECT,
  RECEIPT_SELECT,
  receiptFromRow,
  receiptKey,
  recordReceipt,
  recordReceiptStatement,
  type ReceiptRow,
} from '../../domain/files/receipts.js';
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
 * The rendering and the upload happen in `prepare`, with no transaction open: a slow store (the S3
 * client waits up to 15 s a request) holds no database connection and no inbox row meanwhile. The
 * transaction then records what was stored, in the inbox insert's round trip. Without the runner (a
 * test, a replay tool) the handler reads, renders and stores in its transaction instead.
 *
 * Once per order: the inbox absorbs a redelivery after the commit, and a receipt already recorded
 * is not made again (two deliveries of one message at the same moment may both store it, the same
 * bytes under the same key: one object, and the inbox lets one record it). A crash (or a failed commit) after the upload and before the commit leaves an
 * object and no row; the redelivered event renders the same bytes and uploads them under the same
 * key (`receipts/<orderId>.pdf`), overwriting that object rather than orphaning it, then records it.
 */
export function receiptsConsumer(deps: { files: FileStore; logger: Logger; renderer?: ReceiptRenderer }): ConsumerDefinition {
  const renderer = deps.renderer ?? new ReceiptRenderer();
  /** Renders and stores the receipt; undefined (with a warning) when the order is not there or not paid. */
  const make = async (message: EventMessage, row: ReceiptRow | undefined): Promise<StoredFile | undefined> => {
    const orderId = message.aggregateId;
    const data = receiptFromRow(row, new Date(message.occurredAt));
    if (!data) {
      deps.logger.warn({ orderId, messageId: message.id }, 'order.completed for an order that is not there or not paid: no receipt made');
      return undefined;
    }
    const pdf = await renderer.render(data);
    try {
      return await deps.files.put(receiptKey(orderId), pdf, { contentType: RECEIPT_CONTENT_TYPE });
    } catch (err) {
      // The store down or refusing us (S3 unreachable, the bucket or the credentials wrong): the
      // receipt waits for it, however long (each wait logged with the reason), rather than use up its retries.
      if (err instanceof DomainError && err.code === 'unavailable') {
        throw new ProviderUnavailable(typeof err.details.service === 'string' ? err.details.service : deps.files.name, err.message, { cause: err });
      }
      throw err;
    }
  };
  const stored = (orderId: string, file: StoredFile) => deps.logger.info({ orderId, key: file.key, size: file.size, store: deps.files.name }, 'receipt stored');
  const consumer: ConsumerDefinition = defineConsumer({
    name: RECEIPTS_CONSUMER,
    events: ['order.completed'],
    // Before the transaction: the receipt's data read (nothing when it is recorded already or the
    // message processed), rendered and stored.
    async prepare(ctx: Ctx, message: EventMessage): Promise<PreparedReceipt | undefined> {
      const [row] = await ctx.sql<ReceiptRow & { processed: boolean }>(RECEIPT_PREPARE_SELECT, [message.aggregateId, RECEIPTS_CONSUMER, message.id]);
      if (row?.processed || row?.has_receipt) return undefined;
      const file = await make(message, row);
      return { orderId: message.aggregateId, file: file ?? null };
    },
    // With a receipt stored, its record in the inbox insert's round trip (none with nothing to make);
    // without one prepared, the receipt's data, and whether it is recorded already.
    first: (message, prepared) => {
      const made = preparedFor(message, prepared);
      if (!made) return { text: RECEIPT_SELECT, values: [message.aggregateId] };
      return made.file ? recordReceiptStatement(message.aggregateId, made.file) : undefined;
    },
    async handle(tx: Ctx, message: EventMessage, first?: FirstRows, prepared?: unknown): Promise<void> {
      const orderId = message.aggregateId;
      const made = preparedFor(message, prepared);
      if (made) {
        if (made.file) stored(orderId, made.file);
        return;
      }
      const [row] = (await firstRows(tx, consumer, message, first)) as unknown as ReceiptRow[];
      if (row?.has_receipt) return;
      const file = await make(message, row);
      if (!file) return;
      await recordReceipt(tx, orderId, file);
      stored(orderId, file);
    },
  });
  return consumer;
}

/** What prepare made: the receipt stored, or null when the order was not there or not paid (a warning said so). */
interface PreparedReceipt {
  orderId: string;
  file: StoredFile | null;
}

const preparedFor = (message: EventMessage, prepared: unknown): PreparedReceipt | undefined => {
  const made = prepared as PreparedReceipt | undefined;
  return made?.orderId === message.aggregateId ? made : undefined;
};
