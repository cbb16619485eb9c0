import type { App } from '../../app.js';
import type { Mailer } from '../../domain/notifications/mailer.js';
import { PaymentUnavailable, type PaymentProvider } from '../../domain/payments/payment-provider.js';

// The consumers' ports as they use them, counted for the metrics (svc_payments_total, svc_emails_total):
// charges happen only in the payments consumer, emails only in the mail consumer.

/** The payment provider, its charges counted by outcome (svc_payments_total). */
export function countedPayments(metrics: Pick<App['metrics'], 'paymentCharged'>, provider: PaymentProvider): PaymentProvider {
  return {
    get name() {
      return provider.name;
    },
    async charge(input) {
      try {
        const outcome = await provider.charge(input);
        metrics.paymentCharged(provider.name, outcome.status);
        return outcome;
      } catch (err) {
        metrics.paymentCharged(provider.name, err instanceof PaymentUnavailable ? 'unavailable' : 'error');
        throw err;
      }
    },
    findCharge: (orderId, options) => provider.findCharge(orderId, options),
    refund: (input) => provider.refund(input),
  };
}

/** The mailer, its sends counted by outcome (svc_emails_total). */
export function countedMailer(metrics: Pick<App['metrics'], 'emailSent'>, mailer: Mailer): Mailer {
  return {
    get name() {
      return mailer.name;
    },
    async send(message) {
      try {
        const sent = await mailer.send(message);
        metrics.emailSent(mailer.name, 'sent');
        return sent;
      } catch (err) {
        metrics.emailSent(mailer.name, 'failed');
        throw err;
      }
    },
  };
}
