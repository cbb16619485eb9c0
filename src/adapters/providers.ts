import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { FileStore } from '../domain/files/file-store.js';
import type { Mailer } from '../domain/notifications/mailer.js';
import type { PaymentProvider } from '../domain/payments/payment-provider.js';
import type { WebhookVerifier } from '../domain/payments/stripe-webhooks.js';
import { lazy } from '../domain/shared/lazy.js';
import { LocalFileStore } from './local-file-store.js';
import { LocalMailer } from './local-mailer.js';
import { SIMULATED_PAYMENT_METHODS, SimulatedPayments } from './simulated-payments.js';

/** The outside services svc talks to, each the real one when configured, else its embedded stand-in. */
export interface Providers {
  payments: PaymentProvider;
  mailer: Mailer;
  files: FileStore;
  /** The local file store, when files are on local disk (svc serve then serves its links). */
  localFiles?: LocalFileStore;
  /** Verifies Stripe's webhook deliveries, with STRIPE_WEBHOOK_SECRET (else undefined: svc serve refuses them). */
  stripeWebhooks?: WebhookVerifier;
  /** Resolves once the configured real adapters of these ports are loaded (a broken one fails here, at start-up). */
  load(ports: readonly Port[]): Promise<void>;
  /** Logs, once, which of these ports are embedded stand-ins and which variable switches each to the real one. */
  announce(ports: readonly Port[]): void;
  /** Stops the loaded real adapters' timers and sockets (their circuit breakers, S3's connection pool). */
  close(): void;
}

export type Port = 'payments' | 'mailer' | 'files';

// The real adapters are imported on first use: their SDKs (stripe, @sendgrid/mail, @aws-sdk/client-s3)
// cost a command that never pays, mails or stores files more start-up time than it takes to run.
class DeferredPayments implements PaymentProvider {
  constructor(
    readonly name: string,
    readonly load: () => Promise<PaymentProvider>,
  ) {}
  charge(...args: Parameters<PaymentProvider['charge']>) {
    return this.load().then((p) => p.charge(...args));
  }
  findCharge(...args: Parameters<PaymentProvider['findCharge']>) {
    return this.load().then((p) => p.findCharge(...args));
  }
  refund(...args: Parameters<PaymentProvider['refund']>) {
    return this.load().then((p) => p.refund(...args));
  }
}

class DeferredWebhooks implements WebhookVerifier {
  constructor(readonly load: () => Promise<WebhookVerifier>) {}
  verify(...args: Parameters<WebhookVerifier['verify']>) {
    return this.load().then((w) => w.verify(...args));
  }
}

class DeferredMailer implements Mailer {
  constructor(
    readonly name: string,
    readonly load: () => Promise<Mailer>,
  ) {}
  send(...args: Parameters<Mailer['send']>) {
    return this.load().then((m) => m.send(...args));
  }
}

class DeferredFileStore implements FileStore {
  constructor(
    readonly name: string,
    readonly load: () => Promise<FileStore>,
  ) {}
  put(...args: Parameters<FileStore['put']>) {
    return this.load().then((f) => f.put(...args));
  }
  signedUrl(...args: Parameters<FileStore['signedUrl']>) {
    return this.load().then((f) => f.signedUrl(...args));
  }
  check() {
    return this.load().then((f) => f.check());
  }
}

/**
 * Chooses each outside service by configuration: Stripe with STRIPE_SECRET_KEY, SendGrid with
 * SENDGRID_API_KEY, S3 with S3_BUCKET; without them the simulated payment provider, `.eml` files
 * and files on local disk, in the data folder. A configured service is never replaced by its
 * stand-in: if its adapter cannot be built, that is an error naming the key. Building them touches
 * nothing: folders and keys are made on first use.
 */
export function createProviders(config: Config, logger: Logger, publicUrl: () => string | undefined): Providers {
  const loads: Partial<Record<Port, () => Promise<unknown>>> = {};
  // The real adapters built so far, to close with the App.
  const built: { close(): void }[] = [];
  const keep = <T extends { close(): void }>(adapter: T): T => (built.push(adapter), adapter);
  const notes: Partial<Record<Port, string>> = {};

  let payments: PaymentProvider;
  if (config.STRIPE_SECRET_KEY) {
    const secretKey = config.STRIPE_SECRET_KEY;
    const load = lazy(async (): Promise<PaymentProvider> => {
      const { StripePayments } = await import('./stripe-payments.js');
      return keep(new StripePayments({ secretKey, apiUrl: config.STRIPE_API_URL, logger }));
    });
    payments = new DeferredPayments('stripe', load);
    loads.payments = load;
  } else {
    const dir = join(config.dataDir, 'payments');
    payments = new SimulatedPayments(dir);
    const succeeding = Object.entries(SIMULATED_PAYMENT_METHODS).filter(([, v]) => v === 'succeeds');
    notes.payments =
      `payments are simulated (like Stripe's test mode: ${succeeding.map(([k]) => k).join(', ')} succeed, ` +
      `pm_card_chargeDeclined and pm_card_authenticationRequired are declined; records in ${dir}); set STRIPE_SECRET_KEY to use Stripe`;
  }

  let stripeWebhooks: WebhookVerifier | undefined;
  if (config.STRIPE_WEBHOOK_SECRET) {
    const secret = config.STRIPE_WEBHOOK_SECRET;
    stripeWebhooks = new DeferredWebhooks(
      lazy(async (): Promise<WebhookVerifier> => {
        const { StripeWebhookVerifier } = await import('./stripe-webhooks.js');
        return new StripeWebhookVerifier(secret);
      }),
    );
  }

  let mailer: Mailer;
  if (config.SENDGRID_API_KEY) {
    const apiKey = config.SENDGRID_API_KEY;
    const load = lazy(async (): Promise<Mailer> => {
      const { SendGridMailer } = await import('./sendgrid-mailer.js');
      return keep(new SendGridMailer({ apiKey, apiUrl: config.SENDGRID_API_URL, from: config.MAIL_FROM, logger }));
    });
    mailer = new DeferredMailer('sendgrid', load);
    loads.mailer = load;
  } else {
    const local = new LocalMailer(join(config.dataDir, 'mail'), config.MAIL_FROM);
    mailer = local;
    notes.mailer = `emails are not sent but written as .eml files to ${local.dir}; set SENDGRID_API_KEY (and MAIL_FROM) to send them through SendGrid`;
  }

  let files: FileStore;
  let localFiles: LocalFileStore | undefined;
  if (config.S3_BUCKET) {
    const bucket = config.S3_BUCKET;
    const load = lazy(async (): Promise<FileStore> => {
      const { S3FileStore } = await import('./s3-file-store.js');
      return keep(new S3FileStore({ bucket, endpoint: config.S3_ENDPOINT, region: config.S3_REGION, forcePathStyle: config.S3_FORCE_PATH_STYLE, logger }));
    });
    files = new DeferredFileStore('s3', load);
    loads.files = load;
  } else {
    localFiles = new LocalFileStore({ dataDir: config.dataDir, publicUrl });
    files = localFiles;
    notes.files = `files are stored in ${localFiles.dir} and downloaded from svc serve through signed, expiring links; set S3_BUCKET to store them on S3`;
  }

  const announced = new Set<Port>();
  return {
    payments,
    mailer,
    files,
    localFiles,
    stripeWebhooks,
    async load(ports) {
      await Promise.all(ports.map((port) => loads[port]?.() ?? Promise.resolve()));
    },
    close() {
      for (const adapter of built.splice(0)) adapter.close();
    },
    announce(ports) {
      for (const port of ports) {
        const note = notes[port];
        if (!note || announced.has(port)) continue;
        announced.add(port);
        logger.info({ embedded: port }, note);
      }
    },
  };
}
