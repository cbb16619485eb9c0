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
   * PaymentUnavailable when the outcome is unknown or the provider could not be reached.
   */
  charge(input: ChargeInput): Promise<ChargeOutcome>;
  /**
   * The payment made for an order, if any: what to check after an unknown outcome (a 500 or a
   * timeout) before a new attempt with a new key.
   */
  findCharge(orderId: string): Promise<ChargeOutcome | undefined>;
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
    };

export interface RefundInput {
  /** The provider's id of the payment (a PaymentIntent id). */
  paymentReference: string;
  amount: number;
  idempotencyKey: string;
  reason?: string;
}

export type RefundOutcome = { status: 'succeeded' | 'pending'; reference: string; amount: number } | { status: 'failed'; reference?: string; reason: string };
