import CircuitBreaker from 'opossum';
import type { Logger } from 'pino';

/** How a provider's circuit breaker decides (DESIGN.md, per the brief: timeout 5 s, 50 % errors, reset 30 s). */
export interface BreakerOptions {
  /** A call still running after this long counts as a failure and is answered as a timeout. */
  timeoutMs: number;
  /** The circuit opens when more than this share of the calls in the window failed. */
  errorThresholdPercentage: number;
  /** How long the circuit stays open before one trial call (half-open) may decide to close it. */
  resetTimeoutMs: number;
  /**
   * Calls needed in the window before the share counts: without it a single timeout on a quiet
   * worker (one call, 100 % errors) would stop every payment for 30 s.
   */
  volumeThreshold: number;
  /** The window the share is computed over. */
  rollingWindowMs: number;
}

export const DEFAULT_BREAKER_OPTIONS: BreakerOptions = {
  timeoutMs: 5_000,
  errorThresholdPercentage: 50,
  resetTimeoutMs: 30_000,
  volumeThreshold: 5,
  rollingWindowMs: 10_000,
};

export type BreakerState = 'closed' | 'open' | 'half-open';

/** Why the breaker refused or ended a call itself (the adapter turns it into its domain error). */
export class BreakerRejection extends Error {
  constructor(
    readonly kind: 'open' | 'timeout',
    message: string,
  ) {
    super(message);
    this.name = 'BreakerRejection';
  }
}

type Action = () => Promise<unknown>;

/**
 * An opossum circuit breaker in front of one provider. Only what `countsAsFailure` says is the
 * provider's fault (5xx, timeouts, lost connections) moves it towards open: a declined card or a
 * request the provider refused as malformed proves the provider is up. While open, calls are
 * refused at once without reaching the provider. State changes are logged once each.
 */
export class ProviderBreaker {
  /** The opossum breaker, for tests and metrics (its 'open', 'halfOpen' and 'close' events). */
  readonly circuit: CircuitBreaker<[Action], unknown>;
  readonly options: BreakerOptions;

  constructor(
    readonly provider: string,
    logger: Logger,
    countsAsFailure: (err: unknown) => boolean,
    options: Partial<BreakerOptions> = {},
  ) {
    this.options = { ...DEFAULT_BREAKER_OPTIONS, ...options };
    const o = this.options;
    this.circuit = new CircuitBreaker((action: Action) => action(), {
      name: provider,
      timeout: o.timeoutMs,
      errorThresholdPercentage: o.errorThresholdPercentage,
      resetTimeout: o.resetTimeoutMs,
      volumeThreshold: o.volumeThreshold,
      rollingCountTimeout: o.rollingWindowMs,
      // opossum's errorFilter answers "ignore this error": everything that is not the provider's
      // fault. Its own timeout error counts.
      errorFilter: (err: unknown) => !(err instanceof Error && CircuitBreaker.isOurError(err)) && !countsAsFailure(err),
      enableSnapshots: false,
    });
    this.circuit.on('open', () =>
      logger.warn({ provider, resetTimeoutMs: o.resetTimeoutMs }, `${provider} circuit open: calls fail at once for ${o.resetTimeoutMs / 1000} s`),
    );
    this.circuit.on('halfOpen', () => logger.info({ provider }, `${provider} circuit half-open: the next call decides`));
    this.circuit.on('close', () => logger.info({ provider }, `${provider} circuit closed: calls go through again`));
  }

  get state(): BreakerState {
    if (this.circuit.opened) return 'open';
    if (this.circuit.halfOpen) return 'half-open';
    return 'closed';
  }

  /** Runs a call through the breaker; rejects with a BreakerRejection when open or past the timeout. */
  async run<T>(action: () => Promise<T>): Promise<T> {
    try {
      return (await this.circuit.fire(action)) as T;
    } catch (err) {
      if (err instanceof Error && CircuitBreaker.isOurError(err)) {
        const code = (err as { code?: string }).code;
        if (code === 'ETIMEDOUT') throw new BreakerRejection('timeout', `${this.provider} did not answer within ${this.options.timeoutMs} ms`);
        throw new BreakerRejection(
          'open',
          `${this.provider} circuit is open after repeated failures; calls resume within ${this.options.resetTimeoutMs / 1000} s`,
        );
      }
      throw err;
    }
  }

  /** Stops the breaker's timers. */
  shutdown(): void {
    this.circuit.shutdown();
  }
}
