import { DomainError } from '../shared/errors.js';

/**
 * The payment provider port (Stripe in production, a simulated provider on the embedded default).
 * Amounts are integer minor units; currencies ISO 4217 upper case.
 */
export interface PaymentProvider {
  /** 'stripe' or 'simulated', for logs and the order's payment view. */
  readonly name: string;
  /**
   * Charges a payment method off-session for an order. The idempotency key is derived from the
   * order and the attempt and stored before the call, so every retry of one attempt reuses it.
   * Resolves with the outcome the provider decided (succeeded or declined); rejects with a
   * PaymentUnavailable when the outcome is unknown or the provider could not be reached (its
   * `details` say which, and whether the same key may be sent again), and with a DomainError
   * `invalid` when the provider refused the request as malformed (a bug: retrying cannot help).
   */
  charge(input: ChargeInput): Promise<ChargeOutcome>;
  /**
   * The payment made for an order, if any: what to check after an unknown outcome (a 500 or a
   * timeout) before a new attempt with a new key. A succeeded payment wins over declined ones.
   * `since` is when the unknown attempt was made: a provider whose search lags behind its writes
   * (Stripe's does) rejects with a PaymentUnavailable (`reason: 'search_lag'`) rather than answer
   * "none" while an attempt that recent could still be invisible. With `amount` and `currency` (the
   * order's total), a payment for anything else is passed over: svc never made it (a payment created
   * by hand with the order's id), so it is not the order's.
   */
  findCharge(orderId: string, options?: { since?: Date; amount?: number; currency?: string }): Promise<ChargeOutcome | undefined>;
  /** Refunds part or all of a payment, under an idempotency key derived from the refund. */
  refund(input: RefundInput): Promise<RefundOutcome>;
}

export interface ChargeInput {
  orderId: string;
  amount: number;
  currency: string;
  /** A provider payment method id, such as `pm_card_visa`. */
  paymentMethod: string;
  idempotencyKey: string;
}

export type ChargeOutcome =
  | { status: 'succeeded'; reference: string; amount: number; currency: string }
  | {
      status: 'declined';
      /** The provider's id for the attempt, when it made one. */
      reference?: string;
      /** Why, in the provider's words and code: `card_declined`, `authentication_required` … */
      reason: string;
      code: string;
      /** The issuer's finer reason when the provider gives one: `insufficient_funds`, `generic_decline` … */
      declineCode?: string;
    };

export interface RefundInput {
  /** The provider's id of the payment (a PaymentIntent id). */
  paymentReference: string;
  amount: number;
  idempotencyKey: string;
  reason?: string;
}

export type RefundOutcome =
  { status: 'succeeded' | 'pending'; reference: string; amount: number } | { status: 'failed'; reference?: string; reason: string; code?: string };

/**
 * What a PaymentUnavailable tells the caller about the attempt it could not complete.
 *
 * - `outcome: 'not_attempted'`: the provider did nothing with this request (rate limited, the key
 *   still in flight, the circuit open, the connection refused). Retry later with the same key.
 * - `outcome: 'unknown'`: the provider may have executed it (a 5xx, a timeout, a dropped
 *   connection). With `keyReusable: true`, retrying with the same key is safe: the provider
 *   answers with the stored result of the first request, or runs it if it never arrived. With
 *   `keyReusable: false` the key holds a stored failure that every retry replays (Stripe keeps a
 *   500 for 24 hours): call `findCharge` and only if it finds nothing, attempt with a new key.
 */
export type PaymentUnavailableDetails = {
  provider: string;
  outcome: 'unknown' | 'not_attempted';
  keyReusable: boolean;
  reason:
    | 'timeout'
    | 'connection_lost'
    | 'connection_refused'
    | 'provider_error'
    | 'rate_limited'
    | 'in_flight'
    | 'circuit_open'
    | 'auth'
    /** findCharge: an attempt this recent may not be searchable yet. */
    | 'search_lag'
    /** The provider has the payment but has not decided it (processing). */
    | 'pending';
  /** When the provider said how long to wait. */
  retryAfterSeconds?: number;
  /**
   * The answer was replayed from the provider's idempotency store (Stripe's `Idempotent-Replayed`):
   * the failure happened on an earlier request with this key, not now.
   */
  replayed?: boolean;
  /** The provider's request id, for its support. */
  requestId?: string;
};

/** A payment call with no decided outcome: try later (code `unavailable`), as `details` says. */
export class PaymentUnavailable extends DomainError {
  declare readonly details: PaymentUnavailableDetails;

  constructor(message: string, details: PaymentUnavailableDetails, options?: ErrorOptions) {
    super('unavailable', message, details, options);
    this.name = 'PaymentUnavailable';
  }
}
