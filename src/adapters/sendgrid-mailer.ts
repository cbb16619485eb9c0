import { Client } from '@sendgrid/client';
import { MailService } from '@sendgrid/mail';
import type { Logger } from 'pino';
import { DomainError } from '../domain/shared/errors.js';
import { MailUnavailable, type MailMessage, type Mailer, type MailUnavailableDetails } from '../domain/notifications/mailer.js';
import { BreakerRejection, ProviderBreaker, type BreakerOptions } from './circuit-breaker.js';

export interface SendGridMailerOptions {
  /** SENDGRID_API_KEY. */
  apiKey: string;
  /** SENDGRID_API_URL: another API base (a local stand-in). */
  apiUrl?: string;
  /** MAIL_FROM: `orders@example.com` or `Shop <orders@example.com>`. */
  from: string;
  logger: Logger;
  /** The circuit breaker's settings (default: timeout 5 s, 50 % errors, reset 30 s). */
  breaker?: Partial<BreakerOptions>;
  /** The HTTP timeout per request (default 4 s: inside the breaker's 5 s). */
  timeoutMs?: number;
}

const PROVIDER = 'sendgrid';
/** The header that carries svc's own id of a mail, to trace a duplicate in the recipient's copy. */
export const REFERENCE_HEADER = 'X-Svc-Reference';
const PROVIDER_FAILURES = new Set<MailUnavailableDetails['reason']>(['timeout', 'connection_lost', 'connection_refused', 'provider_error']);
const NOT_CONNECTED = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH']);

/**
 * Mail through SendGrid's v3 Mail Send, behind a circuit breaker.
 *
 * SendGrid has no idempotency key: a 5xx or a timeout may hide a message it accepted, and sending
 * it again may deliver it twice. Such failures are MailUnavailable with `outcome: 'unknown'`; the
 * caller decides. What this means for "exactly one email per event": the consumer records the send
 * (by the mail's reference, unique) in the same transaction as its inbox row once SendGrid answered
 * 202, so a redelivered event never sends again; only a failure with an unknown outcome, retried,
 * can deliver a second copy, which carries the same reference (custom arg and header) to spot it.
 */
export class SendGridMailer implements Mailer {
  readonly name = PROVIDER;
  readonly breaker: ProviderBreaker;
  private readonly mail: MailService;
  private readonly from: { email: string; name?: string };
  private readonly logger: Logger;

  constructor(options: SendGridMailerOptions) {
    if (!options.apiKey.trim().startsWith('SG.')) {
      // @sendgrid/client only warns on the console and every send then fails with a 401.
      throw new DomainError('invalid', 'SENDGRID_API_KEY is not a SendGrid API key (they start with "SG.")', { key: 'SENDGRID_API_KEY' });
    }
    this.from = parseAddress(options.from);
    const client = new Client();
    // setApiKey resets the base URL to api.sendgrid.com: the key first, then the base URL.
    client.setApiKey(options.apiKey);
    if (options.apiUrl) client.setDefaultRequest('baseUrl', options.apiUrl);
    // Passed on to axios: with no redirects to follow it sends through Node's http module instead of
    // wrapping each request in follow-redirects (some 7 % of a send's CPU in a profile). Mail Send
    // answers, it does not redirect; a redirect (a wrong SENDGRID_API_URL) is an error rather than
    // the message sent again to wherever it points. (The SDK types its default request as its own
    // options; it hands them to axios as they are.)
    client.setDefaultRequest({ maxRedirects: 0 } as unknown as Parameters<Client['setDefaultRequest']>[0]);
    this.mail = new MailService();
    // Never mail.setApiKey() after this: it would reset the base URL of this client.
    this.mail.setClient(client);
    this.mail.setTimeout(options.timeoutMs ?? 4_000);
    this.logger = options.logger;
    this.breaker = new ProviderBreaker(
      PROVIDER,
      options.logger,
      (err) => err instanceof MailUnavailable && PROVIDER_FAILURES.has(err.details.reason),
      options.breaker,
    );
  }

  /** Hands one message to SendGrid; resolves with its X-Message-Id once accepted (202). */
  async send(message: MailMessage): Promise<{ messageId: string }> {
    let messageId: string;
    try {
      messageId = await this.breaker.run(async () => {
        try {
          const [response] = await this.mail.send({
            to: message.to.name ? { email: message.to.email, name: message.to.name } : message.to.email,
            from: this.from,
            subject: message.subject,
            text: message.text,
            html: message.html,
            categories: [message.category],
            customArgs: { reference: message.reference },
            headers: { [REFERENCE_HEADER]: message.reference },
          });
          const id = (response.headers as Record<string, unknown>)['x-message-id'];
          return typeof id === 'string' && id ? id : `sendgrid-${response.statusCode}`;
        } catch (err) {
          throw translate(err);
        }
      });
    } catch (err) {
      if (err instanceof BreakerRejection) {
        throw err.kind === 'open'
          ? new MailUnavailable(`SendGrid: ${err.message}`, {
              provider: PROVIDER,
              outcome: 'not_attempted',
              reason: 'circuit_open',
              retryAfterSeconds: Math.ceil(this.breaker.options.resetTimeoutMs / 1_000),
            })
          : new MailUnavailable(`SendGrid: ${err.message}; the message may have been accepted`, { provider: PROVIDER, outcome: 'unknown', reason: 'timeout' });
      }
      throw err;
    }
    this.logger.debug({ provider: PROVIDER, to: message.to.email, category: message.category, reference: message.reference, messageId }, 'mail accepted');
    return { messageId };
  }

  /** Stops the breaker's timers. */
  close(): void {
    this.breaker.shutdown();
  }
}

/** `orders@example.com`, `Shop <orders@example.com>` or `"Shop, Inc." <orders@example.com>`. */
export function parseAddress(value: string): { email: string; name?: string } {
  const text = value.trim();
  const plain = /^[^\s<>@"]+@[^\s<>@"]+\.[^\s<>@"]+$/;
  if (plain.test(text)) return { email: text };
  const named = /^(?:"([^"]*)"|([^"<>]*?))\s*<([^<>\s]+)>$/.exec(text);
  const email = named?.[3];
  if (named && email && plain.test(email)) {
    const name = (named[1] ?? named[2] ?? '').trim();
    return name ? { email, name } : { email };
  }
  throw new DomainError('invalid', `MAIL_FROM must be an address or "Name <address>", not ${JSON.stringify(value)}`, { key: 'MAIL_FROM' });
}

interface SendGridResponseError {
  code: number;
  response?: { headers?: Record<string, string>; body?: { errors?: Array<{ message?: string; field?: string | null }> } };
}

function isResponseError(err: unknown): err is SendGridResponseError {
  return typeof err === 'object' && err !== null && typeof (err as { code?: unknown }).code === 'number' && 'response' in err;
}

/**
 * A failed send in domain terms. Neither the SDK's error nor axios's becomes the cause: axios keeps
 * the request (the Authorization header, the whole message) on its error.
 */
function translate(err: unknown): unknown {
  const unavailable = (message: string, details: Omit<MailUnavailableDetails, 'provider'>) =>
    new MailUnavailable(`SendGrid: ${message}`, { provider: PROVIDER, ...details });
  if (isResponseError(err)) {
    const status = err.code;
    if (status === 429) {
      const reset = Number(err.response?.headers?.['x-ratelimit-reset']);
      const retryAfterSeconds = Number.isFinite(reset) ? Math.max(1, Math.ceil(reset - Date.now() / 1000)) : undefined;
      return unavailable('rate limited; the message was not accepted', {
        outcome: 'not_attempted',
        reason: 'rate_limited',
        ...(retryAfterSeconds ? { retryAfterSeconds } : {}),
      });
    }
    if (status >= 500) return unavailable(`answered ${status}; the message may have been accepted`, { outcome: 'unknown', reason: 'provider_error' });
    const problems = (err.response?.body?.errors ?? []).map((e) => (e.field ? `${e.field}: ${e.message}` : e.message)).filter(Boolean);
    if (status === 401 || status === 403) {
      // The configuration's fault, not the message's (a revoked key, a MAIL_FROM that is not a verified
      // sender): like a refused Stripe key or S3 credentials, the email waits until it is fixed rather
      // than be dead-lettered with every other one. Not a provider failure: the breaker stays as it is.
      const what =
        status === 401
          ? 'refused the API key (401): check SENDGRID_API_KEY'
          : 'refused the request (403): check that SENDGRID_API_KEY may send mail and that MAIL_FROM is a verified sender';
      return unavailable(`${what}${problems.length ? ` (${problems.join('; ')})` : ''}`, { outcome: 'not_attempted', reason: 'auth' });
    }
    return new DomainError('invalid', `SendGrid refused the message (${status}): ${problems.join('; ') || 'no detail given'}`, {
      provider: PROVIDER,
      problem: 'message',
      fields: (err.response?.body?.errors ?? []).map((e) => e.field ?? null),
    });
  }
  const redirect = typeof err === 'object' && err !== null ? (err as { response?: { status?: unknown } }).response?.status : undefined;
  if (typeof redirect === 'number' && redirect >= 300 && redirect < 400) {
    return new DomainError('invalid', `SendGrid answered ${redirect}, a redirect (not followed): check SENDGRID_API_URL`, {
      provider: PROVIDER,
      problem: 'redirect',
    });
  }
  const code = typeof err === 'object' && err !== null ? (err as { code?: unknown }).code : undefined;
  if (typeof code === 'string') {
    if (code === 'ECONNABORTED' || code === 'ETIMEDOUT')
      return unavailable(`no answer in time (${code}); the message may have been accepted`, { outcome: 'unknown', reason: 'timeout' });
    if (NOT_CONNECTED.has(code)) return unavailable(`cannot connect (${code})`, { outcome: 'not_attempted', reason: 'connection_refused' });
    return unavailable(`the connection was lost (${code}); the message may have been accepted`, { outcome: 'unknown', reason: 'connection_lost' });
  }
  return err;
}
