/** The mail port: SendGrid in production, `.eml` files in the data folder on the embedded default. */
export interface Mailer {
  /** 'sendgrid' or 'local', for logs. */
  readonly name: string;
  /** Sends one message; resolves with the provider's message id once the provider has accepted it. */
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
