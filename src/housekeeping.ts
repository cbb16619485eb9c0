import type { SqlEntityManager } from '@mikro-orm/sql';
import type { Logger } from '../logger.js';
import { purgeExpired } from '../domain/housekeeping.js';

/** How often `svc serve` deletes expired idempotency keys and refresh-token families. */
export const HOUSEKEEPING_INTERVAL_MS = 15 * 60_000;

/**
 * Runs `purgeExpired` now and then every `intervalMs` until stopped; a failed pass is logged and
 * tried again at the next one. The timer never keeps the process alive.
 */
export function scheduleHousekeeping(fork: () => SqlEntityManager, logger: Logger, intervalMs: number): { stop(): Promise<void> } {
  let running: Promise<void> | undefined;
  let stopped = false;
  const pass = () => {
    if (stopped || running) return;
    running = Promise.resolve()
      .then(() => purgeExpired(fork()))
      .then((purged) => {
        if (purged.idempotencyKeys + purged.refreshTokens + purged.loginThrottles > 0) logger.info({ purged }, 'housekeeping: deleted expired rows');
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
