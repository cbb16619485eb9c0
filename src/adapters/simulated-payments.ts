import { createHash } from 'node:crypto';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { ChargeInput, ChargeOutcome, PaymentProvider, RefundInput, RefundOutcome } from '../domain/payments/payment-provider.js';
import { DomainError } from '../domain/shared/errors.js';
import { createFileExclusive } from './atomic-file.js';

/**
 * The payment methods the simulated provider knows, after Stripe's test payment methods: the
 * methods that succeed, and for the others the decline code and message Stripe gives.
 */
export const SIMULATED_PAYMENT_METHODS: Record<string, { code: string; reason: string } | 'succeeds'> = {
  pm_card_visa: 'succeeds',
  pm_card_mastercard: 'succeeds',
  pm_card_amex: 'succeeds',
  pm_card_visa_debit: 'succeeds',
  pm_card_chargeDeclined: { code: 'card_declined', reason: 'Your card was declined.' },
  pm_card_chargeDeclinedInsufficientFunds: { code: 'insufficient_funds', reason: 'Your card has insufficient funds.' },
  pm_card_insufficientFunds: { code: 'insufficient_funds', reason: 'Your card has insufficient funds.' },
  // Off-session there is nobody to complete 3-D Secure: Stripe declines with authentication_required.
  pm_card_authenticationRequired: { code: 'authentication_required', reason: 'Your card was declined. This transaction requires authentication.' },
  pm_card_chargeDeclinedExpiredCard: { code: 'expired_card', reason: 'Your card has expired.' },
  pm_card_chargeDeclinedIncorrectCvc: { code: 'incorrect_cvc', reason: "Your card's security code is incorrect." },
  pm_card_chargeDeclinedProcessingError: { code: 'processing_error', reason: 'An error occurred while processing your card. Try again in a little bit.' },
};

interface ChargeRecord {
  request: { orderId: string; amount: number; currency: string; paymentMethod: string };
  outcome: ChargeOutcome;
}

interface RefundRecord {
  request: { paymentReference: string; amount: number };
  outcome: RefundOutcome;
}

const hash = (value: string) => createHash('sha256').update(value).digest('hex');
// Ids become file names: only what cannot climb out of the folder.
const SAFE_ID = /^[A-Za-z0-9_-]{1,100}$/;

async function readJson<T>(path: string): Promise<T | undefined> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as T;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/**
 * A payment provider for the embedded default that behaves like Stripe's test mode: the outcome
 * follows the payment method (SIMULATED_PAYMENT_METHODS; an unknown one is declined as Stripe
 * answers it, `resource_missing`), one idempotency key always gives the same outcome and
 * reference (the same key with other parameters is refused, as Stripe does), and every charge and
 * refund is kept as a JSON file under `<data folder>/payments/`, so `findCharge` finds a payment
 * made before a restart, as the Stripe search it stands in for would. Files written exclusively
 * make a key's first outcome win across processes (svc serve and svc worker on one data folder).
 */
export class SimulatedPayments implements PaymentProvider {
  readonly name = 'simulated';
  // Refunds of one process run one at a time, so two refunds never both take the last of a payment.
  private refunding: Promise<unknown> = Promise.resolve();

  constructor(private readonly dir: string) {}

  /** Decides the charge from its payment method; a repeated key answers what it answered first. */
  async charge(input: ChargeInput): Promise<ChargeOutcome> {
    if (!SAFE_ID.test(input.orderId)) throw new DomainError('invalid', `order id ${JSON.stringify(input.orderId)} is not an id`);
    if (!Number.isInteger(input.amount) || input.amount <= 0)
      throw new DomainError('invalid', `amount ${input.amount} must be a positive integer of minor units`);
    const request = { orderId: input.orderId, amount: input.amount, currency: input.currency, paymentMethod: input.paymentMethod };
    const keyFile = join(this.dir, 'keys', `${hash(input.idempotencyKey)}.json`);
    // A PaymentIntent id derived from the key: the same key names the same payment in every process.
    const reference = `pi_sim_${hash(input.idempotencyKey).slice(0, 24)}`;
    const method = SIMULATED_PAYMENT_METHODS[input.paymentMethod];
    const outcome: ChargeOutcome =
      method === 'succeeds'
        ? { status: 'succeeded', reference, amount: input.amount, currency: input.currency }
        : method
          ? { status: 'declined', reference, code: method.code, reason: method.reason }
          : {
              status: 'declined',
              code: 'resource_missing',
              reason: `No such PaymentMethod: '${input.paymentMethod}' (the simulated provider knows ${Object.keys(SIMULATED_PAYMENT_METHODS).join(', ')})`,
            };
    await createFileExclusive(keyFile, JSON.stringify({ request, outcome } satisfies ChargeRecord));
    const first = (await readJson<ChargeRecord>(keyFile))!;
    if (JSON.stringify(first.request) !== JSON.stringify(request)) {
      throw new DomainError('conflict', `idempotency key ${input.idempotencyKey} was first used with other parameters (${JSON.stringify(first.request)})`);
    }
    if (first.outcome.status === 'succeeded') {
      // The order's payment, for findCharge; a second success for the order (another key) keeps the first.
      await createFileExclusive(join(this.dir, 'orders', `${input.orderId}.json`), JSON.stringify(first.outcome));
      await createFileExclusive(join(this.dir, 'intents', `${first.outcome.reference}.json`), JSON.stringify(first));
    }
    return first.outcome;
  }

  /** The order's succeeded payment, also one made before a restart. */
  async findCharge(orderId: string): Promise<ChargeOutcome | undefined> {
    if (!SAFE_ID.test(orderId)) return undefined;
    return readJson<ChargeOutcome>(join(this.dir, 'orders', `${orderId}.json`));
  }

  /** Refunds part or all of a simulated payment; never more than is left of it. */
  refund(input: RefundInput): Promise<RefundOutcome> {
    const run = this.refunding.then(() => this.refundNow(input));
    this.refunding = run.catch(() => undefined);
    return run;
  }

  private async refundNow(input: RefundInput): Promise<RefundOutcome> {
    const request = { paymentReference: input.paymentReference, amount: input.amount };
    const keyFile = join(this.dir, 'refunds', `${hash(input.idempotencyKey)}.json`);
    const earlier = await readJson<RefundRecord>(keyFile);
    if (earlier) {
      if (JSON.stringify(earlier.request) !== JSON.stringify(request)) {
        throw new DomainError('conflict', `idempotency key ${input.idempotencyKey} was first used with other parameters (${JSON.stringify(earlier.request)})`);
      }
      return earlier.outcome;
    }
    const reference = `re_sim_${hash(input.idempotencyKey).slice(0, 24)}`;
    const payment = SAFE_ID.test(input.paymentReference)
      ? await readJson<ChargeRecord>(join(this.dir, 'intents', `${input.paymentReference}.json`))
      : undefined;
    let outcome: RefundOutcome;
    if (!payment || payment.outcome.status !== 'succeeded') {
      outcome = { status: 'failed', reason: `No such payment: '${input.paymentReference}'` };
    } else {
      const refunded = await this.refundedOf(input.paymentReference);
      const left = payment.outcome.amount - refunded;
      outcome =
        Number.isInteger(input.amount) && input.amount > 0 && input.amount <= left
          ? { status: 'succeeded', reference, amount: input.amount }
          : { status: 'failed', reference, reason: `Refund amount (${input.amount}) is greater than the unrefunded amount of the payment (${left})` };
    }
    await createFileExclusive(keyFile, JSON.stringify({ request, outcome } satisfies RefundRecord));
    const first = (await readJson<RefundRecord>(keyFile))!;
    if (first.outcome.status === 'succeeded') {
      await createFileExclusive(join(this.dir, 'refunded', input.paymentReference, `${first.outcome.reference}.json`), JSON.stringify(first.outcome));
    }
    return first.outcome;
  }

  private async refundedOf(paymentReference: string): Promise<number> {
    const folder = join(this.dir, 'refunded', paymentReference);
    let names: string[];
    try {
      names = (await readdir(folder)).filter((n) => n.endsWith('.json'));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
      throw err;
    }
    let total = 0;
    for (const name of names) total += (await readJson<{ amount: number }>(join(folder, name)))?.amount ?? 0;
    return total;
  }
}
