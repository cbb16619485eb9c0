import Stripe from 'stripe';
import { DomainError, invalid } from '../domain/shared/errors.js';
import type { StripeEvent, WebhookVerifier } from '../domain/payments/stripe-webhooks.js';

/**
 * How old a delivery's signed timestamp may be, in seconds: Stripe's own default, set explicitly
 * (the SDK reads 0 as "skip the timestamp check", which would accept a captured delivery replayed
 * at any later time).
 */
export const WEBHOOK_TOLERANCE_SECONDS = 300;

/**
 * Verifies Stripe webhook deliveries with the SDK: the `Stripe-Signature` header's HMAC over the raw
 * body with the endpoint's signing secret (STRIPE_WEBHOOK_SECRET), and its timestamp within the
 * tolerance. Needs no API key and calls nothing.
 */
export class StripeWebhookVerifier implements WebhookVerifier {
  constructor(
    private readonly secret: string,
    private readonly toleranceSeconds = WEBHOOK_TOLERANCE_SECONDS,
  ) {
    if (!(toleranceSeconds > 0)) throw new Error('the webhook tolerance must be a positive number of seconds (0 would skip the timestamp check)');
  }

  async verify(payload: Buffer, signature: string): Promise<StripeEvent> {
    let event: unknown;
    try {
      event = await Stripe.webhooks.constructEventAsync(payload, signature, this.secret, this.toleranceSeconds);
    } catch (err) {
      if (err instanceof Stripe.errors.StripeSignatureVerificationError) {
        const stale = /tolerance/i.test(err.message);
        throw new DomainError(
          'invalid',
          stale
            ? `the Stripe-Signature timestamp is more than ${this.toleranceSeconds} s old: a late or replayed delivery (Stripe retries with a fresh signature)`
            : 'the Stripe-Signature header does not sign this body with the endpoint secret (STRIPE_WEBHOOK_SECRET): check the secret, and that nothing rewrites the body on the way',
          // No cause: the SDK's error carries the whole payload, which has no place in a log line.
          { field: 'stripe-signature', reason: stale ? 'stale' : 'mismatch' },
        );
      }
      // A body that is signed but not JSON (the SDK parses it after the check).
      if (err instanceof SyntaxError) throw invalid('the webhook body is not JSON', { field: 'body' });
      throw err;
    }
    return checkEvent(event);
  }
}

/** The fields svc relies on, checked once here so a malformed (but signed) event is a clear 400, never a 500 retried forever. */
function checkEvent(raw: unknown): StripeEvent {
  const e = raw as Partial<StripeEvent> | null;
  if (!e || typeof e !== 'object' || typeof e.id !== 'string' || !e.id || e.id.length > 255 || typeof e.type !== 'string' || !e.type) {
    throw invalid('the webhook body is not a Stripe event: it needs an id and a type', { field: 'body' });
  }
  if (typeof e.created !== 'number' || !Number.isFinite(e.created) || !e.data || typeof e.data !== 'object' || typeof e.data.object !== 'object') {
    throw invalid(`the Stripe event ${e.id} has no created time or data.object`, { field: 'body' });
  }
  return e as StripeEvent;
}
