// The outside services of `npm run bench -- pipeline`, in a process of their own so that the load
// generator does not hold up their answers: the Stripe and SendGrid fakes and s3rver on 127.0.0.1
// (test/fakes). Started with an IPC channel (child_process.fork); it sends
// `{ type: 'ready', stripe, sendgrid, s3 }`, then answers `{ type: 'mail', from }` with the emails
// received since index `from` (the order ids each names, its recipients, when it arrived),
// `{ type: 'emails' }` with how many arrived so far (cheap enough to ask several times a second) and
// `{ type: 'stats' }` with request counts; `{ type: 'close' }` stops the fakes and exits. Importing it
// starts them: other modules import its types only.
import { startFakeS3 } from '../test/fakes/s3.js';
import { startFakeSendGrid } from '../test/fakes/sendgrid.js';
import { startFakeStripe } from '../test/fakes/stripe.js';
import { ORDER_ID, type MailSeen } from './harness.js';

export interface FakesReady {
  type: 'ready';
  stripe: string;
  sendgrid: string;
  s3: { url: string; bucket: string };
}

export interface FakesStats {
  type: 'stats';
  stripeRequests: number;
  /** Stripe requests by route and status (`POST /v1/payment_intents 200`). */
  stripeByRoute: Record<string, number>;
  stripePaymentIntents: number;
  emails: number;
  s3Puts: number;
}

export interface FakesEmails {
  type: 'emails';
  count: number;
}

export type FakesRequest = { type: 'mail'; from: number } | { type: 'emails' } | { type: 'stats' } | { type: 'close' };

const send = (message: unknown) => process.send?.(message);

const [stripe, sendgrid, s3] = await Promise.all([startFakeStripe(), startFakeSendGrid(), startFakeS3({ bucket: 'svc-bench-receipts' })]);

process.on('message', (message: FakesRequest) => {
  switch (message.type) {
    case 'mail': {
      const messages: MailSeen[] = sendgrid.messages.slice(message.from).map((m) => ({
        orderIds: [...new Set(JSON.stringify(m.body).match(ORDER_ID) ?? [])],
        recipients: m.recipients,
        at: m.receivedAt.getTime(),
      }));
      send({ type: 'mail', messages });
      break;
    }
    case 'emails':
      send({ type: 'emails', count: sendgrid.messages.length } satisfies FakesEmails);
      break;
    case 'stats':
      send({
        type: 'stats',
        stripeRequests: stripe.requests.length,
        stripeByRoute: stripe.requests.reduce<Record<string, number>>((counts, r) => {
          const key = `${r.route ?? `${r.method} ${r.path}`} ${r.status}`;
          counts[key] = (counts[key] ?? 0) + 1;
          return counts;
        }, {}),
        stripePaymentIntents: stripe.paymentIntents().length,
        emails: sendgrid.messages.length,
        s3Puts: s3.requests.filter((r) => r.method === 'PUT').length,
      } satisfies FakesStats);
      break;
    case 'close':
      void Promise.all([stripe.close(), sendgrid.close(), s3.close()]).then(() => process.exit(0));
      break;
  }
});
// The bench went away without saying so: do not outlive it.
process.on('disconnect', () => void Promise.all([stripe.close(), sendgrid.close(), s3.close()]).then(() => process.exit(0)));

send({ type: 'ready', stripe: stripe.url, sendgrid: sendgrid.url, s3: { url: s3.url, bucket: s3.bucket } } satisfies FakesReady);
