import type { App } from '../../app.js';
import type { ConsumerDefinition } from '../consumer.js';
import { paymentsConsumer } from './payments.js';

/**
 * Every consumer svc worker knows, by name (`svc worker --queues` picks among them). The mail and
 * receipt consumers register here as they are written.
 */
export function consumers(app: App): ConsumerDefinition[] {
  return [paymentsConsumer({ payments: app.payments })];
}
