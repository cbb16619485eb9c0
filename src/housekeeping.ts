import type { SqlEntityManager } from '@mikro-orm/sql';
import type { Logger } from './logger.js';
import { purgeExpired } from './domain/housekeeping.js';
import { purgePublishedEvents } from './domain/events/outbox-retention.js';
import { purgeProcessedMessages } from './domain/events/inbox-retention.js';
import { purgeStripeEvents } from './domain/payments/webhook-retention.js';

/**
 * How often `svc serve` and `svc worker` delete expired idempotency keys, refresh-token families,
 * and published outbox rows, inbox rows and Stripe webhook inbox rows past their retention.
 */
export const HOUSEKEEPING_INTERVAL_MS = 15 * 60_000;

/** A running housekeeping schedule. */
export interface Housekeeping {
  /** Stops the schedule and waits for a pass in progress. */
  stop(): Promise<void>;
}

/**
 * Runs `purgeExpired` now and then every `intervalMs` until stopped; a failed pass is logged and
 * tried again at the next one. The timer never keeps the process alive.
 */
export function scheduleHousekeeping(
  fork: () => SqlEntityManager,
  logger: Logger,
  intervalMs: number,
  options: { outboxRetentionHours?: number; processedMessagesRetentionHours?: number; stripeEventsRetentionHours?: number } = {},
): Housekeeping {
  let running: Promise<void> | undefined;
  let stopped = false;
  const pass = () => {
    if (stopped || running) return;
    running = Promise.resolve()
      .then(async () => {
        const purged = await purgeExpired(fork());
        const hours = options.outboxRetentionHours;
        const outboxEvents = hours === undefined ? 0 : await purgePublishedEvents(fork(), new Date(Date.now() - hours * 3_600_000));
        const inboxHours = options.processedMessagesRetentionHours;
        const processedMessages = inboxHours === undefined ? 0 : await purgeProcessedMessages(fork(), new Date(Date.now() - inboxHours * 3_600_000));
        const webhookHours = options.stripeEventsRetentionHours;
        const stripeEvents = webhookHours === undefined ? 0 : await purgeStripeEvents(fork(), new Date(Date.now() - webhookHours * 3_600_000));
        if (purged.idempotencyKeys + purged.refreshTokens + purged.loginThrottles + outboxEvents + processedMessages + stripeEvents > 0) {
          logger.info({ purged: { ...purged, outboxEvents, processedMessages, stripeEvents } }, 'housekeeping: deleted expired rows');
        }
      })
      .catch((err: unknown) => logger.warn({ err }, 'housekeeping failed; trying again at the next pass'))
      .finally(() => (running = undefined));
  };
  const timer = setInterval(pass, intervalMs);
  timer.unref();
  pass();
  return {
    async stop() {
      stopped = true;
      clearInterval(timer);
      await running;
    },
  };
}
