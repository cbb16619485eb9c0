import { DomainError } from '../shared/errors.js';

/** The mail port: SendGrid in production, `.eml` files in the data folder on the embedded default. */
export interface Mailer {
  /** 'sendgrid' or 'local', for logs. */
  readonly name: string;
  /**
   * Sends one message; resolves with the provider's message id once the provider has accepted it.
   * Rejects with a MailUnavailable when it should be tried again later (see its details; a refused
   * API key too, which a fixed configuration cures), and with a DomainError `invalid` when the
   * provider refused the message itself (retrying cannot help).
   */
  send(message: MailMessage): Promise<{ messageId: string }>;
}

export interface MailMessage {
  to: { email: string; name?: string };
  subject: string;
  text: string;
  html: string;
  /** What the mail is about (`order-confirmation`, `payment-failed`), for the provider's statistics. */
  category: string;
  /** Svc's own id of this mail (derived from the event), sent as a header so a duplicate can be traced. */
  reference: string;
}

/**
 * Why a mail could not be handed over. `not_attempted`: the provider did not take it (rate limited,
 * circuit open, connection refused, the API key refused): send it again later. `unknown`: it may have been accepted (a
 * 5xx or a timeout after the request was sent; mail providers have no idempotency keys), so sending
 * it again may deliver it twice.
 */
export type MailUnavailableDetails = {
  provider: string;
  outcome: 'unknown' | 'not_attempted';
  /** `auth`: the provider refused the API key or the sender (401, 403): the configuration must be fixed. */
  reason: 'timeout' | 'connection_lost' | 'connection_refused' | 'provider_error' | 'rate_limited' | 'circuit_open' | 'auth';
  retryAfterSeconds?: number;
};

/** A mail not (known to be) accepted: try later (code `unavailable`), as `details` says. */
export class MailUnavailable extends DomainError {
  declare readonly details: MailUnavailableDetails;

  constructor(message: string, details: MailUnavailableDetails, options?: ErrorOptions) {
    super('unavailable', message, details, options);
    this.name = 'MailUnavailable';
  }
}
