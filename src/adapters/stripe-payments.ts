import Stripe from 'stripe';
import type { Logger } from 'pino';
import { DomainError } from '../domain/shared/errors.js';
import {
  PaymentUnavailable,
  type ChargeInput,
  type ChargeOutcome,
  type PaymentProvider,
  type PaymentUnavailableDetails,
  type RefundInput,
  type RefundOutcome,
} from '../domain/payments/payment-provider.js';
import { BreakerRejection, ProviderBreaker, type BreakerOptions } from './circuit-breaker.js';

export interface StripePaymentsOptions {
  /** STRIPE_SECRET_KEY. */
  secretKey: string;
  /** STRIPE_API_URL: another API base (a local stand-in such as http://127.0.0.1:12111). */
  apiUrl?: string;
  logger: Logger;
  /** The circuit breaker's settings (default: timeout 5 s, 50 % errors, reset 30 s). */
  breaker?: Partial<BreakerOptions>;
  /** The SDK's timeout per request (default 4 s: inside the breaker's 5 s, so the SDK's own error decides). */
  timeoutMs?: number;
  /**
   * How long an attempt may stay invisible to Stripe's search, which is not read-after-write
   * ("usually within a minute"): findCharge does not answer "none" for an attempt younger than
   * this (default 120 s).
   */
  searchLagMs?: number;
}

const PROVIDER = 'stripe';
// A decline caused by what the order carries (an unknown payment method, an amount Stripe will not
// charge, a currency it does not take): no retry can help, so the order fails with Stripe's words.
const INPUT_PARAMS = new Set(['payment_method', 'amount', 'currency']);
// The reasons that say Stripe (or the way to it) is failing: only these move the breaker.
const PROVIDER_FAILURES = new Set<PaymentUnavailableDetails['reason']>(['timeout', 'connection_lost', 'connection_refused', 'provider_error']);
// The codes Node gives a connection that never reached a server: nothing was sent.
const NOT_CONNECTED = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH']);
const REFUND_REASONS = new Set(['duplicate', 'fraudulent', 'requested_by_customer']);

/**
 * Payments through Stripe's PaymentIntents, behind a circuit breaker. A charge confirms a
 * PaymentIntent off-session under the caller's idempotency key; declines are outcomes, and every
 * failure without an outcome is a PaymentUnavailable that says whether Stripe may have acted.
 */
export class StripePayments implements PaymentProvider {
  readonly name = PROVIDER;
  readonly breaker: ProviderBreaker;
  private readonly stripe: Stripe;
  private readonly searchLagMs: number;

  constructor(options: StripePaymentsOptions) {
    this.stripe = new Stripe(options.secretKey, {
      // Pinned to the version this SDK was generated for: answers have the shapes its types say.
      apiVersion: Stripe.API_VERSION,
      // The SDK's retries reuse our idempotency key, so they are safe, but they run inside one
      // call and hide what the first try did (a timeout retried into a 429 would read as "not
      // attempted"). The worker retries durably with the same stored key and its own backoff, so
      // every call here is one request and its error says exactly what happened. (The SDK still
      // retries a reset keep-alive connection once, with the same key.)
      maxNetworkRetries: 0,
      timeout: options.timeoutMs ?? 4_000,
      ...(options.apiUrl ? hostOf(options.apiUrl) : {}),
      appInfo: { name: 'svc' },
    });
    this.searchLagMs = options.searchLagMs ?? 120_000;
    this.breaker = new ProviderBreaker(
      PROVIDER,
      options.logger,
      // A replayed failure is an old request's answer: Stripe answering from its store is Stripe up.
      (err) => err instanceof PaymentUnavailable && PROVIDER_FAILURES.has(err.details.reason) && !err.details.replayed,
      options.breaker,
    );
  }

  /** Creates and confirms an off-session PaymentIntent for the order under the caller's idempotency key. */
  async charge(input: ChargeInput): Promise<ChargeOutcome> {
    return this.call('charge', async () => {
      try {
        const pi = await this.stripe.paymentIntents.create(
          {
            amount: input.amount,
            currency: input.currency.toLowerCase(),
            payment_method: input.paymentMethod,
            confirm: true,
            off_session: true,
            metadata: { order_id: input.orderId },
            description: `svc order ${input.orderId}`,
          },
          { idempotencyKey: input.idempotencyKey },
        );
        return outcomeOf(pi, pi.lastResponse.requestId);
      } catch (err) {
        const declined = declineOf(err);
        if (declined) return declined;
        throw err;
      }
    });
  }

  /** The order's payment as Stripe has it: a succeeded PaymentIntent if any, else the latest declined one. */
  async findCharge(orderId: string, options: { since?: Date; amount?: number; currency?: string } = {}): Promise<ChargeOutcome | undefined> {
    const found = await this.call('findCharge', async () => {
      const result = await this.stripe.paymentIntents.search({ query: `metadata['order_id']:'${orderId.replaceAll("'", "\\'")}'`, limit: 100 });
      return { intents: result.data, requestId: result.lastResponse.requestId };
    });
    const { requestId } = found;
    // Only the order's own charges (its total, in its currency): one made by hand with its id is not its payment.
    const intents = found.intents.filter(
      (pi) =>
        (options.amount === undefined || pi.amount === options.amount) && (options.currency === undefined || pi.currency.toUpperCase() === options.currency),
    );
    // Search answers newest first.
    const succeeded = intents.find((pi) => pi.status === 'succeeded');
    if (succeeded) return outcomeOf(succeeded, requestId);
    const pending = intents.find((pi) => PENDING_STATUSES.has(pi.status));
    if (pending) {
      throw new PaymentUnavailable(`Stripe's PaymentIntent ${pending.id} for order ${orderId} is still ${pending.status}; look again later`, {
        provider: PROVIDER,
        outcome: 'unknown',
        keyReusable: false,
        reason: 'pending',
        requestId,
      });
    }
    const sinceSeconds = options.since ? Math.floor(options.since.getTime() / 1000) : undefined;
    const recent = options.since !== undefined && Date.now() - options.since.getTime() < this.searchLagMs;
    // A declined PaymentIntent made at or after the unknown attempt is its answer; older ones may
    // hide a newer one that search does not show yet.
    if (recent && !intents.some((pi) => sinceSeconds !== undefined && pi.created >= sinceSeconds)) {
      throw new PaymentUnavailable(
        `Stripe's search may not show a payment made less than ${Math.round(this.searchLagMs / 1000)} s ago for order ${orderId}; look again later`,
        { provider: PROVIDER, outcome: 'unknown', keyReusable: false, reason: 'search_lag', retryAfterSeconds: Math.ceil(this.searchLagMs / 1000) },
      );
    }
    const latest = intents[0];
    return latest ? outcomeOf(latest, requestId) : undefined;
  }

  /** Refunds part or all of a PaymentIntent under the caller's idempotency key. */
  async refund(input: RefundInput): Promise<RefundOutcome> {
    return this.call('refund', async () => {
      try {
        const refund = await this.stripe.refunds.create(
          {
            payment_intent: input.paymentReference,
            amount: input.amount,
            ...(input.reason && REFUND_REASONS.has(input.reason) ? { reason: input.reason } : {}),
            ...(input.reason ? { metadata: { reason: input.reason.slice(0, 500) } } : {}),
          },
          { idempotencyKey: input.idempotencyKey },
        );
        switch (refund.status) {
          case 'succeeded':
            return { status: 'succeeded', reference: refund.id, amount: refund.amount };
          case 'failed':
          case 'canceled':
            return { status: 'failed', reference: refund.id, reason: refund.failure_reason ?? refund.status, code: refund.failure_reason ?? refund.status };
          default:
            // pending, requires_action: Stripe settles it later and says so in charge.refund.updated.
            return { status: 'pending', reference: refund.id, amount: refund.amount };
        }
      } catch (err) {
        // Stripe refusing the refund itself (already refunded, more than is left, no such payment)
        // is the refund's outcome, not a failure to reach Stripe.
        if (err instanceof Stripe.errors.StripeInvalidRequestError && err.rawType !== 'idempotency_error' && err.statusCode === 400 && err.code) {
          return { status: 'failed', reason: err.message, code: err.code };
        }
        throw err;
      }
    });
  }

  /** Stops the breaker's timers. */
  close(): void {
    this.breaker.shutdown();
  }

  /** One call through the breaker, its failures in domain terms. */
  private async call<T>(operation: string, action: () => Promise<T>): Promise<T> {
    try {
      // Translated inside the breaker: it counts PaymentUnavailable by reason, ignores the rest.
      return await this.breaker.run(async () => {
        try {
          return await action();
        } catch (err) {
          throw translate(err, operation);
        }
      });
    } catch (err) {
      if (err instanceof BreakerRejection) {
        throw err.kind === 'open'
          ? new PaymentUnavailable(`Stripe ${operation}: ${err.message}`, {
              provider: PROVIDER,
              outcome: 'not_attempted',
              keyReusable: true,
              reason: 'circuit_open',
              retryAfterSeconds: Math.ceil(this.breaker.options.resetTimeoutMs / 1_000),
            })
          : new PaymentUnavailable(`Stripe ${operation}: ${err.message}; the outcome is unknown`, {
              provider: PROVIDER,
              outcome: 'unknown',
              keyReusable: true,
              reason: 'timeout',
            });
      }
      throw err;
    }
  }
}

const PENDING_STATUSES = new Set<Stripe.PaymentIntent.Status>(['processing', 'requires_capture', 'requires_action', 'requires_confirmation']);

/** `{ host, port, protocol }` for the SDK from STRIPE_API_URL. */
function hostOf(apiUrl: string): { host: string; port: number; protocol: 'http' | 'https' } {
  let url: URL;
  try {
    url = new URL(apiUrl);
  } catch {
    throw new DomainError('invalid', `STRIPE_API_URL is not a URL: ${apiUrl}`, { key: 'STRIPE_API_URL' });
  }
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || (url.pathname !== '/' && url.pathname !== '')) {
    throw new DomainError('invalid', `STRIPE_API_URL must be an http(s) origin such as http://127.0.0.1:12111, not ${apiUrl}`, { key: 'STRIPE_API_URL' });
  }
  const protocol = url.protocol === 'http:' ? 'http' : 'https';
  return { host: url.hostname, port: url.port ? Number(url.port) : protocol === 'http' ? 80 : 443, protocol };
}

/** A PaymentIntent as the port's outcome. */
function outcomeOf(pi: Stripe.PaymentIntent, requestId: string | undefined): ChargeOutcome {
  if (pi.status === 'succeeded') {
    return { status: 'succeeded', reference: pi.id, amount: pi.amount_received || pi.amount, currency: pi.currency.toUpperCase() };
  }
  if (pi.status === 'requires_payment_method' || pi.status === 'canceled') {
    const error = pi.last_payment_error;
    return {
      status: 'declined',
      reference: pi.id,
      reason: error?.message ?? (pi.status === 'canceled' ? 'the payment was canceled' : 'the payment was declined'),
      code: error?.code ?? pi.status,
      ...(error?.decline_code ? { declineCode: error.decline_code } : {}),
    };
  }
  // processing, requires_action, requires_capture: an off-session card payment that is not decided.
  throw new PaymentUnavailable(`Stripe's PaymentIntent ${pi.id} is ${pi.status}, not decided; look again later`, {
    provider: PROVIDER,
    outcome: 'unknown',
    keyReusable: false,
    reason: 'pending',
    ...(requestId ? { requestId } : {}),
  });
}

/** A card error or a refused input as a declined outcome; undefined for anything else. */
function declineOf(err: unknown): ChargeOutcome | undefined {
  if (err instanceof Stripe.errors.StripeCardError) {
    return {
      status: 'declined',
      ...(err.payment_intent ? { reference: err.payment_intent.id } : {}),
      reason: err.message,
      code: err.code ?? 'card_declined',
      ...(err.decline_code ? { declineCode: err.decline_code } : {}),
    };
  }
  if (err instanceof Stripe.errors.StripeInvalidRequestError && err.rawType !== 'idempotency_error' && err.param && INPUT_PARAMS.has(err.param)) {
    return { status: 'declined', reason: err.message, code: err.code ?? `invalid_${err.param}` };
  }
  return undefined;
}

/** A failed SDK call in domain terms: PaymentUnavailable (try later) or invalid (a bug; retrying cannot help). */
function translate(err: unknown, operation: string): unknown {
  if (!(err instanceof Stripe.errors.StripeError)) return err;
  const requestId = err.requestId ? { requestId: err.requestId } : {};
  const unavailable = (message: string, details: Omit<PaymentUnavailableDetails, 'provider'>) =>
    new PaymentUnavailable(`Stripe ${operation}: ${message}`, { provider: PROVIDER, ...details, ...requestId }, { cause: err });

  if (err instanceof Stripe.errors.StripeConnectionError) {
    const code = (err.detail as { code?: string } | undefined)?.code;
    if (code === 'ETIMEDOUT') return unavailable(`${err.message}; the outcome is unknown`, { outcome: 'unknown', keyReusable: true, reason: 'timeout' });
    if (code && NOT_CONNECTED.has(code))
      return unavailable(`cannot connect to Stripe (${code})`, { outcome: 'not_attempted', keyReusable: true, reason: 'connection_refused' });
    return unavailable(`the connection to Stripe was lost (${code ?? err.message}); the outcome is unknown`, {
      outcome: 'unknown',
      keyReusable: true,
      reason: 'connection_lost',
    });
  }
  if (err instanceof Stripe.errors.StripeRateLimitError) {
    return unavailable('Stripe is rate limiting requests; nothing was done', { outcome: 'not_attempted', keyReusable: true, reason: 'rate_limited' });
  }
  if (err instanceof Stripe.errors.StripeAuthenticationError || err instanceof Stripe.errors.StripePermissionError) {
    // A configuration problem, not the order's: messages wait (and dead-letter) rather than fail orders.
    return unavailable(`Stripe refused the API key: check STRIPE_SECRET_KEY (${err.message})`, { outcome: 'not_attempted', keyReusable: true, reason: 'auth' });
  }
  if (err.statusCode === 409) {
    return unavailable('a request with this idempotency key is still in progress at Stripe; nothing new was done', {
      outcome: 'not_attempted',
      keyReusable: true,
      reason: 'in_flight',
    });
  }
  if (
    err instanceof Stripe.errors.StripeIdempotencyError ||
    err instanceof Stripe.errors.StripeInvalidRequestError ||
    err instanceof Stripe.errors.StripeCardError
  ) {
    return new DomainError(
      'invalid',
      `Stripe refused the ${operation} request: ${err.message}`,
      {
        provider: PROVIDER,
        providerCode: err.code ?? err.rawType,
        param: err.param,
        // The key was used before with other parameters: that request may have charged (see refusedRequest).
        ...(err instanceof Stripe.errors.StripeIdempotencyError ? { keyConflict: true } : {}),
        ...requestId,
      },
      { cause: err },
    );
  }
  // 5xx: Stripe may have acted. It stores the answer under the key (a 500 included) and replays it
  // for 24 h, so only `Stripe-Should-Retry: true` makes the same key worth sending again.
  const shouldRetry = err.headers?.['stripe-should-retry'] === 'true';
  const replayed = err.headers?.['idempotent-replayed'] === 'true';
  return unavailable(`Stripe answered ${err.statusCode ?? 'an error'}${replayed ? ' (replayed for this key)' : ''} (${err.message}); the outcome is unknown`, {
    outcome: 'unknown',
    keyReusable: shouldRetry,
    reason: 'provider_error',
    ...(replayed ? { replayed } : {}),
  });
}
