import type { App } from '../../app.js';
import type { ConsumerDefinition } from '../consumer.js';
import { mailConsumer } from './mail.js';
import { paymentsConsumer } from './payments.js';
import { receiptsConsumer } from './receipts.js';

/** Every consumer svc worker knows, by name (`svc worker --queues` picks among them). */
export function consumers(app: App): ConsumerDefinition[] {
  return [
    paymentsConsumer({ payments: app.payments }),
    receiptsConsumer({ files: app.files, logger: app.logger.child({ consumer: 'receipts' }) }),
    mailConsumer({ mailer: app.mailer, logger: app.logger.child({ consumer: 'mail' }), publicUrl: () => app.publicUrl() }),
  ];
}
