import type { App } from '../../app.js';
import type { ConsumerDefinition } from '../consumer.js';
import { mailConsumer } from './mail.js';
import { paymentsConsumer } from './payments.js';
import { receiptsConsumer } from './receipts.js';
import { countedMailer, countedPayments } from './counted.js';

/** The names of the consumers below, in their order: `svc worker --queues` is checked against them before anything opens. */
export const CONSUMER_NAMES: readonly string[] = ['payments', 'receipts', 'mail'];

/** Every consumer svc worker knows, by name (`svc worker --queues` picks among them). */
export function consumers(app: App): ConsumerDefinition[] {
  return [
    paymentsConsumer({ payments: countedPayments(app.metrics, app.payments) }),
    receiptsConsumer({ files: app.files, logger: app.logger.child({ consumer: 'receipts' }) }),
    mailConsumer({ mailer: countedMailer(app.metrics, app.mailer), logger: app.logger.child({ consumer: 'mail' }), publicUrl: () => app.publicUrl() }),
  ];
}
