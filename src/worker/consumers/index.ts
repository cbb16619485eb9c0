import type { App } from '../../app.js';
import type { ConsumerDefinition } from '../consumer.js';
import { MAIL_CONSUMER, mailConsumer } from './mail.js';
import { PAYMENTS_CONSUMER, paymentsConsumer } from './payments.js';
import { RECEIPTS_CONSUMER, receiptsConsumer } from './receipts.js';
import { countedMailer, countedPayments } from './counted.js';

// Every consumer svc worker knows, by its module's name for it, and how an App makes it.
const MAKERS: Record<string, (app: App) => ConsumerDefinition> = {
  [PAYMENTS_CONSUMER]: (app) => paymentsConsumer({ payments: countedPayments(app.metrics, app.payments) }),
  [RECEIPTS_CONSUMER]: (app) => receiptsConsumer({ files: app.files, logger: app.logger.child({ consumer: RECEIPTS_CONSUMER }) }),
  [MAIL_CONSUMER]: (app) =>
    mailConsumer({ mailer: countedMailer(app.metrics, app.mailer), logger: app.logger.child({ consumer: MAIL_CONSUMER }), publicUrl: () => app.publicUrl() }),
};

/** The consumers' names: `svc worker --queues` is checked against them before anything opens. */
export const CONSUMER_NAMES: readonly string[] = Object.keys(MAKERS);

/** Every consumer svc worker knows, by name (`svc worker --queues` picks among them). */
export function consumers(app: App): ConsumerDefinition[] {
  return CONSUMER_NAMES.map((name) => MAKERS[name]!(app));
}
