import type { Logger } from 'pino';
import type { EventMessage } from '../../domain/events/events.js';
import { MailUnavailable, type Mailer } from '../../domain/notifications/mailer.js';
import { ORDER_MAIL_SELECT, orderMailFromRow, paymentFailureWords, type OrderMailRow } from '../../domain/notifications/order-mail.js';
import type { Ctx } from '../../domain/shared/context.js';
import { formatMoney } from '../../domain/shared/money.js';
import { defineConsumer, firstRows, ProviderUnavailable, type ConsumerDefinition, type FirstRows } from '../consumer.js';
import { MailTemplates, type MailTemplateName } from '../mail-templates.js';

/** The link in an order confirmation: the API's receipt route, which hands a signed-in owner a fresh download link. */
export const receiptApiUrl = (baseUrl: string, orderId: string): string => `${baseUrl.replace(/\/+$/, '')}/api/v1/orders/${orderId}/receipt`;

/** The consumer's name: its queues' and `svc worker --queues`'. */
export const MAIL_CONSUMER = 'mail';

/**
 * The mail consumer: on `order.completed` the customer gets an order confirmation with the link to
 * the receipt, on `order.failed` a payment-failure email saying why in their words; both to the
 * order's user, rendered from templates/mail/, sent through the Mailer (SendGrid, or `.eml` files).
 *
 * The receipt link is the API's `GET /api/v1/orders/{id}/receipt` under PUBLIC_URL (or the address
 * svc serve is known to listen on), never a presigned URL: an email is read hours or weeks later,
 * and the route hands out a fresh short-lived link each time.
 *
 * Exactly one email per event, as far as a provider without idempotency keys allows:
 * - A redelivery after the commit: the inbox row (same transaction) makes it a no-op.
 * - The send is the handler's last step, so the only thing between SendGrid's 202 and the commit
 *   is the commit itself. A crash or a failed commit in that window rolls the inbox row back and
 *   the redelivered event sends a second copy; so may a retry after a SendGrid answer with an
 *   unknown outcome (a 5xx, a timeout). Both copies carry the same reference (`X-Svc-Reference`,
 *   SendGrid custom arg `reference`: `<template>-<orderId>`), to spot and de-duplicate them. The
 *   local mailer writes a file named after that reference, so there a repeat leaves one file.
 * - Why no `sent` row of its own: a row committed before the call cannot tell, after a crash,
 *   whether the call happened, so it could only turn "maybe twice" into "maybe never"; a row
 *   committed after the call in its own transaction would narrow the window a little but needs a
 *   second connection while the inbox transaction holds one (the embedded PGlite has only one).
 *   A lost order confirmation is worse than a rare duplicate: svc chooses at-least-once here.
 */
export function mailConsumer(deps: { mailer: Mailer; logger: Logger; publicUrl: () => string; templates?: MailTemplates }): ConsumerDefinition {
  const templates = deps.templates ?? new MailTemplates();
  const consumer: ConsumerDefinition = defineConsumer({
    name: MAIL_CONSUMER,
    events: ['order.completed', 'order.failed'],
    // The order's mail data, read in the inbox insert's round trip.
    first: (message) => ({ text: ORDER_MAIL_SELECT, values: [message.aggregateId] }),
    async handle(tx: Ctx, message: EventMessage, first?: FirstRows): Promise<void> {
      const orderId = message.aggregateId;
      const [row] = (await firstRows(tx, consumer, message, first)) as unknown as OrderMailRow[];
      const order = row && orderMailFromRow(row);
      if (!order) {
        deps.logger.warn({ orderId, messageId: message.id }, `${message.type} for an order that is not there: no email sent`);
        return;
      }
      // The event must still be true of the order (as the receipts consumer checks): a message published
      // to the exchange by hand, or an old one replayed, never tells a customer that an unpaid order is
      // confirmed or that a paid one failed.
      const expected = message.type === 'order.completed' ? ['completed', 'refunded'] : ['failed'];
      if (!expected.includes(order.status)) {
        deps.logger.warn({ orderId, messageId: message.id, status: order.status }, `${message.type} for an order that is ${order.status}: no email sent`);
        return;
      }
      const money = (amount: number) => formatMoney(amount, order.currency);
      const common = { name: order.customer.name, email: order.customer.email, orderId, total: money(order.total) };
      let template: MailTemplateName;
      let data: Record<string, unknown>;
      if (message.type === 'order.completed') {
        template = 'order-confirmation';
        data = {
          ...common,
          lines: order.lines.map((l) => ({ ...l, unitPrice: money(l.unitPrice), amount: money(l.unitPrice * l.quantity) })),
          receiptUrl: receiptApiUrl(deps.publicUrl(), orderId),
        };
      } else {
        template = 'payment-failed';
        const code = typeof message.payload.reason === 'string' ? message.payload.reason : undefined;
        data = { ...common, reason: paymentFailureWords(code) };
      }
      const mail = await templates.render(template, data);
      const reference = `${template}-${orderId}`;
      // Last: nothing but the commit comes after the provider has accepted the email.
      let messageId: string;
      try {
        ({ messageId } = await deps.mailer.send({
          to: { email: order.customer.email, name: order.customer.name },
          ...mail,
          category: template,
          reference,
        }));
      } catch (err) {
        // The provider down (or its circuit open): the email waits for it, however long, rather than
        // use up its retries. A send with an unknown outcome retried later may arrive twice, as above.
        if (!(err instanceof MailUnavailable)) throw err;
        const retryAfter = err.details.retryAfterSeconds;
        throw new ProviderUnavailable(err.details.provider, err.message, {
          cause: err,
          ...(retryAfter === undefined ? {} : { retryAfterMs: retryAfter * 1_000 }),
        });
      }
      // The logger masks the address (a***@e***.com), as in every log line.
      deps.logger.info({ orderId, to: order.customer.email, template, reference, messageId, mailer: deps.mailer.name }, 'email sent');
    },
  });
  return consumer;
}
