import type { App } from '../../app.js';
import type { ConsumerDefinition } from '../consumer.js';

/**
 * Every consumer svc worker knows, by name (`svc worker --queues` picks among them). The payments,
 * mail and receipt consumers register here as they are written; the list is empty until then, and
 * svc worker then runs the outbox relay and housekeeping only.
 */
export function consumers(app: App): ConsumerDefinition[] {
  void app;
  return [];
}
