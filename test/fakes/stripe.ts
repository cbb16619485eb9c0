/**
 * A stateful fake of the part of Stripe's v1 API that svc uses, for the real `stripe` SDK:
 *
 *   const fake = await startFakeStripe();
 *   t.after(() => fake.close());
 *   const stripe = new Stripe(FAKE_STRIPE_SECRET_KEY, { ...fake.sdkOptions, maxNetworkRetries: 2 });
 *
 * It follows Stripe's documented contract (see test/fakes/README.md for the pages and the gaps):
 * form-encoded bodies, `Authorization: Bearer`, the error object and status codes, the test payment
 * methods (`pm_card_visa`, `pm_card_chargeDeclined`, `pm_card_authenticationRequired` ...), the
 * idempotency layer (first result stored for 24 h, 500s included; other parameters → 400; a key in
 * flight → 409), search by metadata, refunds, and signed webhook events. Failures are injected through
 * the typed control methods on the returned object, never over HTTP.
 */
import { createHmac, randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { listenOnLoopback, readBody, sendJson } from './http-server.js';
import { matchesSearch, parseSearchQuery, SearchSyntaxError } from './stripe-search.js';

/** The secret key the fake accepts unless told otherwise. */
export const FAKE_STRIPE_SECRET_KEY = 'sk_test_svcfake00000000000000000000';
/** The webhook signing secret the fake signs with unless told otherwise. */
export const FAKE_STRIPE_WEBHOOK_SECRET = 'whsec_svcfake0000000000000000000000000';
/** The API version of events (and of answers to requests that name none): the installed SDK's pinned version. */
export const FAKE_STRIPE_API_VERSION = '2026-10-28.endive';
/** Stripe keeps idempotency keys at least this long (https://docs.stripe.com/api/idempotent_requests). */
export const IDEMPOTENCY_KEY_TTL_MS = 24 * 60 * 60 * 1000;

// A Stripe object as JSON: the fake builds and stores them as plain objects, as the API returns them.
export type StripeObject = Record<string, any>;

export type StripeRoute =
  | 'POST /v1/payment_intents'
  | 'GET /v1/payment_intents/search'
  | 'GET /v1/payment_intents/:id'
  | 'POST /v1/payment_intents/:id/confirm'
  | 'POST /v1/payment_intents/:id/capture'
  | 'POST /v1/refunds'
  | 'GET /v1/refunds/:id'
  | 'GET /v1/events/:id';

const ROUTES: Array<{ route: StripeRoute; method: string; pattern: RegExp }> = [
  { route: 'POST /v1/payment_intents', method: 'POST', pattern: /^\/v1\/payment_intents$/ },
  { route: 'GET /v1/payment_intents/search', method: 'GET', pattern: /^\/v1\/payment_intents\/search$/ },
  { route: 'GET /v1/payment_intents/:id', method: 'GET', pattern: /^\/v1\/payment_intents\/([^/]+)$/ },
  { route: 'POST /v1/payment_intents/:id/confirm', method: 'POST', pattern: /^\/v1\/payment_intents\/([^/]+)\/confirm$/ },
  { route: 'POST /v1/payment_intents/:id/capture', method: 'POST', pattern: /^\/v1\/payment_intents\/([^/]+)\/capture$/ },
  { route: 'POST /v1/refunds', method: 'POST', pattern: /^\/v1\/refunds$/ },
  { route: 'GET /v1/refunds/:id', method: 'GET', pattern: /^\/v1\/refunds\/([^/]+)$/ },
  { route: 'GET /v1/events/:id', method: 'GET', pattern: /^\/v1\/events\/([^/]+)$/ },
];

/** Time as the fake sees it: idempotency expiry, `created` stamps, search visibility, webhook timestamps. */
export interface FakeClock {
  /** Milliseconds since the epoch. */
  now(): number;
  /** Moves the clock forward (e.g. past the 24 hours an idempotency key is kept). */
  advance(ms: number): void;
}

/** A clock that follows the real one, plus whatever tests have advanced it by. */
export function createFakeClock(): FakeClock {
  let offset = 0;
  return {
    now: () => Date.now() + offset,
    advance(ms) {
      offset += ms;
    },
  };
}

interface FaultTarget {
  /** Only requests to this route (default: any route). */
  route?: StripeRoute;
  /** How many matching requests (default 1). */
  times?: number;
}

export interface ApiErrorFault extends FaultTarget {
  /**
   * Whether the endpoint did its work before failing (the PaymentIntent is created and charged, but
   * the answer is a 500): the "did the payment happen?" case. Default false.
   */
  afterExecution?: boolean;
  /**
   * The `Stripe-Should-Retry` header. Default: `false` when the request had an idempotency key
   * (retrying would only replay the stored 500, and stripe-node's source expects exactly this),
   * absent otherwise. `null` sends none.
   */
  shouldRetry?: boolean | null;
}

export interface DelayFault extends FaultTarget {
  /** The endpoint does its work and stores the result at once; the answer leaves this much later. */
  ms: number;
}

export interface DropFault extends FaultTarget {
  /** Drop the connection after the work is done and stored (the answer is lost), or before (nothing happened). Default true. */
  afterExecution?: boolean;
}

export interface RateLimitFault extends FaultTarget {
  /** The `Stripe-Should-Retry` header (default absent: stripe-node then does not retry a 429). */
  shouldRetry?: boolean;
}

/** A request held in flight (its idempotency key locked) until released. */
export interface HeldRequest {
  /** Resolves when a matching request has arrived and is being held. */
  arrived: Promise<void>;
  /** Lets it go on: the endpoint does its work and answers. */
  release(): void;
}

export interface RequestLogEntry {
  method: string;
  path: string;
  route: StripeRoute | null;
  idempotencyKey: string | null;
  status: number;
  /** Answered from the idempotency store. */
  replayed: boolean;
  /** The injected fault that shaped this answer, if any. */
  fault: Fault['kind'] | null;
}

type Fault =
  | ({ kind: 'api_error' } & ApiErrorFault)
  | ({ kind: 'delay' } & DelayFault)
  | ({ kind: 'drop' } & DropFault)
  | ({ kind: 'rate_limit' } & RateLimitFault)
  | ({ kind: 'hold' } & FaultTarget & { gate: Promise<void>; arrived: () => void });

interface QueuedFault {
  fault: Fault;
  remaining: number;
}

interface Answer {
  status: number;
  body: unknown;
  headers: Record<string, string>;
}

interface StoredKey {
  state: 'in_flight' | 'done';
  method: string;
  path: string;
  fingerprint: string;
  createdAt: number;
  requestId: string;
  answer?: Answer;
}

/** What each of Stripe's test PaymentMethods does when confirmed (https://docs.stripe.com/testing). */
type CardBehaviour =
  { kind: 'succeed'; dispute?: boolean } | { kind: 'decline'; code: string; declineCode: string; message: string } | { kind: 'authenticate' };

interface TestCard {
  brand: string;
  last4: string;
  behaviour: CardBehaviour;
}

const GENERIC_DECLINE: CardBehaviour = { kind: 'decline', code: 'card_declined', declineCode: 'generic_decline', message: 'Your card was declined.' };
const INSUFFICIENT_FUNDS: CardBehaviour = {
  kind: 'decline',
  code: 'card_declined',
  declineCode: 'insufficient_funds',
  message: 'Your card has insufficient funds.',
};

export const TEST_PAYMENT_METHODS: Record<string, TestCard> = {
  pm_card_visa: { brand: 'visa', last4: '4242', behaviour: { kind: 'succeed' } },
  pm_card_mastercard: { brand: 'mastercard', last4: '4444', behaviour: { kind: 'succeed' } },
  pm_card_createDispute: { brand: 'visa', last4: '0259', behaviour: { kind: 'succeed', dispute: true } },
  pm_card_chargeDeclined: { brand: 'visa', last4: '0002', behaviour: GENERIC_DECLINE },
  pm_card_visa_chargeDeclined: { brand: 'visa', last4: '0002', behaviour: GENERIC_DECLINE },
  pm_card_chargeDeclinedInsufficientFunds: { brand: 'visa', last4: '9995', behaviour: INSUFFICIENT_FUNDS },
  pm_card_visa_chargeDeclinedInsufficientFunds: { brand: 'visa', last4: '9995', behaviour: INSUFFICIENT_FUNDS },
  pm_card_chargeDeclinedExpiredCard: {
    brand: 'visa',
    last4: '0069',
    behaviour: { kind: 'decline', code: 'expired_card', declineCode: 'expired_card', message: 'Your card has expired.' },
  },
  pm_card_chargeDeclinedProcessingError: {
    brand: 'visa',
    last4: '0119',
    behaviour: {
      kind: 'decline',
      code: 'processing_error',
      declineCode: 'processing_error',
      message: 'An error occurred while processing your card. Try again in a little bit.',
    },
  },
  pm_card_authenticationRequired: { brand: 'visa', last4: '3184', behaviour: { kind: 'authenticate' } },
  pm_card_threeDSecure2Required: { brand: 'visa', last4: '3220', behaviour: { kind: 'authenticate' } },
};

/** Minimum charge amounts in minor units (https://docs.stripe.com/currencies#minimum-and-maximum-charge-amounts), for the currencies the fake knows. */
const MINIMUM_AMOUNT: Record<string, number> = {
  usd: 50,
  eur: 50,
  gbp: 30,
  chf: 50,
  cad: 50,
  aud: 50,
  sek: 300,
  nok: 300,
  dkk: 250,
  pln: 200,
  czk: 1500,
  jpy: 50,
};

export interface FakeStripeOptions {
  /** Secret keys the fake accepts; each is its own account (idempotency keys are scoped per key). */
  apiKeys?: string[];
  webhookSecret?: string;
  clock?: FakeClock;
}

export interface WebhookDeliveryOptions {
  /** Signing secret (default: the fake's). */
  secret?: string;
  /** The `t=` timestamp in seconds (default: the fake clock's now); `now - 301` makes a stale delivery. */
  signedAt?: number;
  /** Change the body after signing, or corrupt the signature. */
  tamper?: 'payload' | 'signature';
}

export interface WebhookRequest {
  /** The raw body as Stripe sends it (pretty-printed JSON: verify the bytes, not a re-serialisation). */
  payload: string;
  headers: Record<string, string>;
}

export interface FakeStripe {
  url: string;
  port: number;
  /** Spread into the SDK's config: `new Stripe(key, { ...fake.sdkOptions })`. */
  sdkOptions: { host: string; port: number; protocol: 'http' };
  clock: FakeClock;
  webhookSecret: string;

  // Failure injection (consumed in order by the matching requests).
  /** The next matching requests answer 500 `api_error`, stored under their idempotency key as Stripe does. */
  failNext(fault?: ApiErrorFault): void;
  /** The next matching requests are done at once but answered late (longer than the SDK's timeout: "timeout after Stripe charged"). */
  delayNext(fault: DelayFault): void;
  /** The next matching requests lose their connection (after the work by default). */
  dropNext(fault?: DropFault): void;
  /** The next matching requests answer 429 `rate_limit` before the idempotency layer (nothing stored). */
  rateLimitNext(fault?: RateLimitFault): void;
  /** The next matching request waits, its idempotency key in flight, until released. */
  holdNext(target?: Omit<FaultTarget, 'times'>): HeldRequest;
  /** Objects created less than `ms` ago are not yet found by search (Stripe's search is not read-after-write). */
  setSearchLag(ms: number): void;
  /** Forgets every fault still queued (not the requests being held): "Stripe has recovered". */
  clearFaults(): void;

  // Provider-side events.
  /** A cardholder disputes the charge of a PaymentIntent: the dispute and its `charge.dispute.created` event. */
  dispute(paymentIntentId: string, reason?: string): StripeObject;

  // Assertions.
  /** Every request the fake answered (or dropped), in order. */
  readonly requests: readonly RequestLogEntry[];
  /** Every event, in the order they happened. */
  readonly events: readonly StripeObject[];
  paymentIntent(id: string): StripeObject | undefined;
  paymentIntents(): StripeObject[];
  /** Successful (captured or capturable) charges of PaymentIntents whose `metadata.order_id` is this order. */
  chargesForOrder(orderId: string): StripeObject[];
  refunds(): StripeObject[];
  /** How many times the endpoint ran for this idempotency key (replays and refusals do not count). */
  executions(idempotencyKey: string): number;

  // Webhooks.
  /** The payload and headers Stripe would POST for this event. */
  webhookRequest(event: StripeObject, options?: WebhookDeliveryOptions): WebhookRequest;
  /** POSTs events to a URL one after another, as Stripe's deliveries would arrive. */
  deliver(url: string, events: StripeObject | StripeObject[], options?: WebhookDeliveryOptions): Promise<Array<{ status: number; body: string }>>;

  close(): Promise<void>;
}

/** `Stripe-Signature: t=<ts>,v1=<hex HMAC-SHA256 of "<ts>.<payload>">` (https://docs.stripe.com/webhooks#verify-manually). */
export function stripeSignatureHeader(payload: string, secret: string, timestampSeconds: number): string {
  const v1 = createHmac('sha256', secret).update(`${timestampSeconds}.${payload}`).digest('hex');
  return `t=${timestampSeconds},v1=${v1}`;
}

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
function stripeId(prefix: string, length = 24): string {
  const bytes = randomBytes(length);
  let s = '';
  for (const b of bytes) s += BASE62[b % 62];
  return `${prefix}_${s}`;
}

/** An answer of Stripe's error shape, thrown inside the fake and turned into the response. */
class StripeApiError extends Error {
  constructor(
    readonly status: number,
    readonly error: StripeObject,
    readonly headers: Record<string, string> = {},
  ) {
    super(typeof error.message === 'string' ? error.message : `Stripe error ${status}`);
  }
}

function docUrl(code: string): string {
  return `https://stripe.com/docs/error-codes/${code.replaceAll('_', '-')}`;
}

function invalidRequest(message: string, extra: { param?: string; code?: string; status?: number } = {}): StripeApiError {
  const { status = 400, ...rest } = extra;
  return new StripeApiError(status, { type: 'invalid_request_error', message, ...rest, ...(rest.code ? { doc_url: docUrl(rest.code) } : {}) });
}

function missingParam(param: string): StripeApiError {
  return invalidRequest(`Missing required param: ${param}.`, { param, code: 'parameter_missing' });
}

function noSuch(resource: string, id: string, param: string): StripeApiError {
  return invalidRequest(`No such ${resource}: '${id}'`, { param, code: 'resource_missing', status: 404 });
}

/** Decodes Stripe's form encoding (`metadata[order_id]=x`, `expand[0]=y`) into nested objects and arrays. */
export function parseStripeForm(text: string): StripeObject {
  const root: StripeObject = {};
  for (const [rawKey, value] of new URLSearchParams(text)) {
    const m = /^([^[\]]+)((?:\[[^[\]]*\])*)$/.exec(rawKey);
    if (!m) throw invalidRequest(`Invalid parameter name: ${rawKey}`);
    const path = [m[1]!, ...[...m[2]!.matchAll(/\[([^[\]]*)\]/g)].map((x) => x[1]!)];
    let node: any = root;
    for (let i = 0; i < path.length - 1; i++) {
      const part = path[i]!;
      const nextIsIndex = /^\d*$/.test(path[i + 1]!);
      node[part] ??= nextIsIndex ? [] : {};
      node = node[part];
    }
    const last = path[path.length - 1]!;
    if (Array.isArray(node) && last === '') node.push(value);
    else node[last] = value;
  }
  return root;
}

/** Parameters in a canonical form, so that the same parameters in another order compare equal. */
function fingerprint(params: unknown): string {
  const canon = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(canon);
    if (v && typeof v === 'object')
      return Object.fromEntries(
        Object.keys(v)
          .sort()
          .map((k) => [k, canon((v as StripeObject)[k])]),
      );
    return v;
  };
  return JSON.stringify(canon(params));
}

function checkKnownParams(params: StripeObject, known: string[]): void {
  for (const key of Object.keys(params)) {
    if (!known.includes(key)) throw invalidRequest(`Received unknown parameter: ${key}`, { param: key, code: 'parameter_unknown' });
  }
}

function integerParam(params: StripeObject, name: string, required: boolean): number | undefined {
  const raw = params[name];
  if (raw === undefined) {
    if (required) throw missingParam(name);
    return undefined;
  }
  if (typeof raw !== 'string' || !/^-?\d+$/.test(raw))
    throw invalidRequest(`Invalid integer: ${typeof raw === 'string' ? raw : JSON.stringify(raw)}`, { param: name, code: 'parameter_invalid_integer' });
  return Number(raw);
}

function booleanParam(params: StripeObject, name: string): boolean | undefined {
  const raw = params[name];
  if (raw === undefined) return undefined;
  if (raw === 'true') return true;
  if (raw === 'false') return false;
  throw invalidRequest(`Invalid boolean: ${String(raw)}`, { param: name });
}

function stringParam(params: StripeObject, name: string): string | undefined {
  const raw = params[name];
  if (raw === undefined || raw === '') return undefined;
  if (typeof raw !== 'string') throw invalidRequest(`Invalid string: ${JSON.stringify(raw)}`, { param: name });
  return raw;
}

function metadataParam(params: StripeObject): Record<string, string> {
  const raw = params.metadata;
  if (raw === undefined || raw === '') return {};
  if (typeof raw !== 'object' || Array.isArray(raw)) throw invalidRequest('Invalid object', { param: 'metadata' });
  const entries = Object.entries(raw as Record<string, unknown>);
  // https://docs.stripe.com/metadata: up to 50 keys, keys up to 40 characters, values up to 500.
  if (entries.length > 50) throw invalidRequest('Metadata can have at most 50 keys.', { param: 'metadata' });
  for (const [k, v] of entries) {
    if (k.length > 40) throw invalidRequest(`Metadata keys can be at most 40 characters long: ${k}`, { param: `metadata[${k}]` });
    if (typeof v !== 'string' || v.length > 500)
      throw invalidRequest('Metadata values must be strings of at most 500 characters.', { param: `metadata[${k}]` });
  }
  return Object.fromEntries(entries) as Record<string, string>;
}

function expandParam(params: StripeObject): string[] {
  const raw = params.expand;
  if (raw === undefined) return [];
  if (!Array.isArray(raw)) throw invalidRequest('Invalid array', { param: 'expand' });
  return raw as string[];
}

export async function startFakeStripe(options: FakeStripeOptions = {}): Promise<FakeStripe> {
  const apiKeys = new Set(options.apiKeys ?? [FAKE_STRIPE_SECRET_KEY]);
  const webhookSecret = options.webhookSecret ?? FAKE_STRIPE_WEBHOOK_SECRET;
  const clock = options.clock ?? createFakeClock();
  const nowSeconds = () => Math.floor(clock.now() / 1000);

  const faults: QueuedFault[] = [];
  const holds = new Set<() => void>();
  let closed = false;
  let searchLagMs = 0;

  const idempotency = new Map<string, StoredKey>();
  const executionCounts = new Map<string, number>();
  const requests: RequestLogEntry[] = [];
  const events: StripeObject[] = [];

  const paymentIntents = new Map<string, StripeObject>();
  // When each PaymentIntent was created: the fake clock's milliseconds (for search lag) and a
  // sequence number (for newest-first order: `created` has only seconds).
  const createdAt = new Map<string, { ms: number; seq: number }>();
  const paymentMethods = new Map<string, { object: StripeObject; card: TestCard }>();
  const charges = new Map<string, StripeObject>();
  const refunds = new Map<string, StripeObject>();
  const disputes = new Map<string, StripeObject>();

  const clone = <T>(v: T): T => structuredClone(v);

  function takeFault(kinds: Array<Fault['kind']>, route: StripeRoute): Fault | undefined {
    const i = faults.findIndex((q) => kinds.includes(q.fault.kind) && (!q.fault.route || q.fault.route === route));
    if (i < 0) return undefined;
    const queued = faults[i]!;
    if (--queued.remaining <= 0) faults.splice(i, 1);
    return queued.fault;
  }

  function emit(type: string, object: StripeObject, context: RequestContext | null, previousAttributes?: StripeObject): StripeObject {
    const event: StripeObject = {
      id: stripeId('evt'),
      object: 'event',
      api_version: FAKE_STRIPE_API_VERSION,
      created: nowSeconds(),
      data: { object: clone(object), ...(previousAttributes ? { previous_attributes: previousAttributes } : {}) },
      livemode: false,
      pending_webhooks: 1,
      request: { id: context?.requestId ?? null, idempotency_key: context?.idempotencyKey ?? null },
      type,
    };
    events.push(event);
    return event;
  }

  function paymentMethodFor(token: string): { object: StripeObject; card: TestCard } {
    const known = paymentMethods.get(token);
    if (known) return known;
    const card = TEST_PAYMENT_METHODS[token];
    if (!card) throw invalidRequest(`No such PaymentMethod: '${token}'`, { param: 'payment_method', code: 'resource_missing' });
    // A test token stands for a card: each use makes a new PaymentMethod, as in test mode.
    const object: StripeObject = {
      id: stripeId('pm'),
      object: 'payment_method',
      type: 'card',
      card: { brand: card.brand, last4: card.last4, exp_month: 12, exp_year: new Date(clock.now()).getUTCFullYear() + 3, funding: 'credit', country: 'US' },
      created: nowSeconds(),
      customer: null,
      livemode: false,
      metadata: {},
    };
    const entry = { object, card };
    paymentMethods.set(object.id, entry);
    return entry;
  }

  function checkPaymentMethod(token: string | undefined): void {
    if (token && !paymentMethods.has(token) && !TEST_PAYMENT_METHODS[token]) {
      throw invalidRequest(`No such PaymentMethod: '${token}'`, { param: 'payment_method', code: 'resource_missing' });
    }
  }

  function renderPaymentIntent(pi: StripeObject, expand: string[]): StripeObject {
    const out = clone(pi);
    if (expand.includes('latest_charge') && typeof out.latest_charge === 'string') out.latest_charge = clone(charges.get(out.latest_charge));
    if (expand.includes('payment_method') && typeof out.payment_method === 'string') out.payment_method = clone(paymentMethods.get(out.payment_method)?.object);
    return out;
  }

  function newCharge(
    pi: StripeObject,
    pm: StripeObject,
    outcome: { succeeded: boolean; captured: boolean; failure?: { code: string; message: string; declineCode: string } },
  ): StripeObject {
    const charge: StripeObject = {
      id: stripeId('ch'),
      object: 'charge',
      amount: pi.amount,
      amount_captured: outcome.succeeded && outcome.captured ? pi.amount : 0,
      amount_refunded: 0,
      balance_transaction: outcome.succeeded && outcome.captured ? stripeId('txn') : null,
      captured: outcome.succeeded && outcome.captured,
      created: nowSeconds(),
      currency: pi.currency,
      customer: pi.customer,
      description: pi.description,
      disputed: false,
      failure_code: outcome.failure?.code ?? null,
      failure_message: outcome.failure?.message ?? null,
      livemode: false,
      metadata: clone(pi.metadata),
      outcome: outcome.succeeded
        ? { network_status: 'approved_by_network', reason: null, risk_level: 'normal', seller_message: 'Payment complete.', type: 'authorized' }
        : {
            network_status: 'declined_by_network',
            reason: outcome.failure!.declineCode,
            risk_level: 'normal',
            seller_message: 'The bank did not return any further details with this decline.',
            type: 'issuer_declined',
          },
      paid: outcome.succeeded,
      payment_intent: pi.id,
      payment_method: pm.id,
      payment_method_details: { type: 'card', card: { brand: pm.card.brand, last4: pm.card.last4 } },
      refunded: false,
      status: outcome.succeeded ? 'succeeded' : 'failed',
    };
    charges.set(charge.id, charge);
    return charge;
  }

  /** One confirmation attempt of a PaymentIntent with its payment method (https://docs.stripe.com/payments/paymentintents/lifecycle). */
  function attempt(pi: StripeObject, offSession: boolean, context: RequestContext): void {
    const entry = paymentMethods.get(pi.payment_method)!;
    const { behaviour } = entry.card;
    pi.last_payment_error = null;
    pi.next_action = null;
    if (behaviour.kind === 'succeed') {
      const manual = pi.capture_method === 'manual';
      const charge = newCharge(pi, entry.object, { succeeded: true, captured: !manual });
      pi.latest_charge = charge.id;
      if (manual) {
        pi.status = 'requires_capture';
        pi.amount_capturable = pi.amount;
        emit('payment_intent.amount_capturable_updated', pi, context);
      } else {
        pi.status = 'succeeded';
        pi.amount_received = pi.amount;
        emit('payment_intent.succeeded', pi, context);
        if (behaviour.dispute) openDispute(pi, charge, 'fraudulent');
      }
      return;
    }
    if (behaviour.kind === 'authenticate' && !offSession) {
      // On session the customer can authenticate: the PaymentIntent waits for it.
      pi.status = 'requires_action';
      pi.next_action = {
        type: 'use_stripe_sdk',
        use_stripe_sdk: { type: 'three_d_secure_redirect', stripe_js: `https://hooks.stripe.com/3d_secure_2/hosted?payment_intent=${pi.id}` },
      };
      emit('payment_intent.requires_action', pi, context);
      return;
    }
    // Declined, or 3-D Secure required while the customer is not there: the attempt fails.
    const failure =
      behaviour.kind === 'authenticate'
        ? {
            code: 'authentication_required',
            declineCode: 'authentication_required',
            message: 'Your card was declined. This transaction requires authentication.',
          }
        : { code: behaviour.code, declineCode: behaviour.declineCode, message: behaviour.message };
    const charge = newCharge(pi, entry.object, { succeeded: false, captured: false, failure });
    pi.latest_charge = charge.id;
    pi.status = 'requires_payment_method';
    const error: StripeObject = {
      type: 'card_error',
      code: failure.code,
      decline_code: failure.declineCode,
      doc_url: docUrl(failure.code),
      message: failure.message,
      charge: charge.id,
      payment_method: clone(entry.object),
    };
    pi.last_payment_error = clone(error);
    emit('payment_intent.payment_failed', pi, context);
    throw new StripeApiError(402, { ...error, payment_intent: clone(pi) });
  }

  function openDispute(pi: StripeObject, charge: StripeObject, reason: string): StripeObject {
    const dispute: StripeObject = {
      id: stripeId('dp'),
      object: 'dispute',
      amount: charge.amount_captured,
      balance_transactions: [],
      charge: charge.id,
      created: nowSeconds(),
      currency: charge.currency,
      evidence_details: { due_by: nowSeconds() + 7 * 24 * 3600, has_evidence: false, past_due: false, submission_count: 0 },
      is_charge_refundable: false,
      livemode: false,
      metadata: {},
      payment_intent: pi.id,
      reason,
      status: 'needs_response',
    };
    disputes.set(dispute.id, dispute);
    charge.disputed = true;
    emit('charge.dispute.created', dispute, null);
    return dispute;
  }

  function retrieveIntent(id: string): StripeObject {
    const pi = paymentIntents.get(id);
    if (!pi) throw noSuch('payment_intent', id, 'intent');
    return pi;
  }

  interface RequestContext {
    requestId: string;
    idempotencyKey: string | null;
    params: StripeObject;
    id?: string;
  }

  /** Checks the parameters (a failure here is not stored under the idempotency key, per Stripe's docs). */
  function validate(route: StripeRoute, ctx: RequestContext): () => Answer {
    const p = ctx.params;
    const ok = (body: unknown): Answer => ({ status: 200, body, headers: {} });
    switch (route) {
      case 'POST /v1/payment_intents': {
        checkKnownParams(p, [
          'amount',
          'currency',
          'payment_method',
          'confirm',
          'off_session',
          'capture_method',
          'metadata',
          'description',
          'customer',
          'receipt_email',
          'payment_method_types',
          'statement_descriptor_suffix',
          'expand',
        ]);
        const amount = integerParam(p, 'amount', true)!;
        const currencyRaw = stringParam(p, 'currency');
        if (!currencyRaw) throw missingParam('currency');
        const currency = currencyRaw.toLowerCase();
        const minimum = MINIMUM_AMOUNT[currency];
        if (minimum === undefined)
          throw invalidRequest(`Invalid currency: ${currencyRaw}. Stripe currently supports these currencies: ${Object.keys(MINIMUM_AMOUNT).join(', ')}`, {
            param: 'currency',
          });
        if (amount < minimum)
          throw invalidRequest(`Amount must be at least ${minimum} ${currency} (in the currency's smallest unit)`, {
            param: 'amount',
            code: 'amount_too_small',
          });
        if (amount > 99_999_999) throw invalidRequest('Amount must be no more than 99999999', { param: 'amount', code: 'amount_too_large' });
        const confirm = booleanParam(p, 'confirm') ?? false;
        const offSessionRaw = p.off_session;
        let offSession = false;
        if (offSessionRaw !== undefined) {
          if (!['true', 'false', 'one_off', 'recurring'].includes(offSessionRaw))
            throw invalidRequest(`Invalid off_session: ${String(offSessionRaw)}`, { param: 'off_session' });
          offSession = offSessionRaw !== 'false';
          if (!confirm) throw invalidRequest('You can only set `off_session` when `confirm` is true.', { param: 'off_session' });
        }
        const captureMethod = stringParam(p, 'capture_method') ?? 'automatic_async';
        if (!['automatic', 'automatic_async', 'manual'].includes(captureMethod))
          throw invalidRequest(`Invalid capture_method: must be one of automatic, automatic_async, or manual`, { param: 'capture_method' });
        const metadata = metadataParam(p);
        const token = stringParam(p, 'payment_method');
        checkPaymentMethod(token);
        if (confirm && !token)
          throw invalidRequest("You cannot confirm this PaymentIntent because it's missing a payment method.", {
            param: 'payment_method',
            code: 'payment_intent_unexpected_state',
          });
        const expand = expandParam(p);
        return () => {
          const pm = token ? paymentMethodFor(token) : undefined;
          const pi: StripeObject = {
            id: stripeId('pi'),
            object: 'payment_intent',
            amount,
            amount_capturable: 0,
            amount_received: 0,
            automatic_payment_methods: null,
            canceled_at: null,
            cancellation_reason: null,
            capture_method: captureMethod,
            client_secret: '',
            confirmation_method: 'automatic',
            created: nowSeconds(),
            currency,
            customer: stringParam(p, 'customer') ?? null,
            description: stringParam(p, 'description') ?? null,
            last_payment_error: null,
            latest_charge: null,
            livemode: false,
            metadata,
            next_action: null,
            payment_method: pm?.object.id ?? null,
            payment_method_types: Array.isArray(p.payment_method_types) ? p.payment_method_types : ['card'],
            receipt_email: stringParam(p, 'receipt_email') ?? null,
            setup_future_usage: null,
            status: pm ? 'requires_confirmation' : 'requires_payment_method',
          };
          pi.client_secret = `${pi.id}_secret_${stripeId('x').slice(2)}`;
          paymentIntents.set(pi.id, pi);
          createdAt.set(pi.id, { ms: clock.now(), seq: createdAt.size });
          emit('payment_intent.created', pi, ctx);
          if (confirm) attempt(pi, offSession, ctx);
          return ok(renderPaymentIntent(pi, expand));
        };
      }
      case 'POST /v1/payment_intents/:id/confirm': {
        checkKnownParams(p, ['payment_method', 'off_session', 'expand']);
        const token = stringParam(p, 'payment_method');
        checkPaymentMethod(token);
        const offSessionRaw = p.off_session;
        const offSession = offSessionRaw !== undefined && offSessionRaw !== 'false';
        const expand = expandParam(p);
        return () => {
          const pi = retrieveIntent(ctx.id!);
          if (!['requires_payment_method', 'requires_confirmation', 'requires_action'].includes(pi.status)) {
            throw invalidRequest(`You cannot confirm this PaymentIntent because it has a status of ${pi.status}.`, { code: 'payment_intent_unexpected_state' });
          }
          if (token) pi.payment_method = paymentMethodFor(token).object.id;
          if (!pi.payment_method)
            throw invalidRequest("You cannot confirm this PaymentIntent because it's missing a payment method.", { code: 'payment_intent_unexpected_state' });
          attempt(pi, offSession, ctx);
          return ok(renderPaymentIntent(pi, expand));
        };
      }
      case 'POST /v1/payment_intents/:id/capture': {
        checkKnownParams(p, ['amount_to_capture', 'metadata', 'expand']);
        const amountToCapture = integerParam(p, 'amount_to_capture', false);
        const expand = expandParam(p);
        return () => {
          const pi = retrieveIntent(ctx.id!);
          if (pi.status !== 'requires_capture') {
            throw invalidRequest(
              `This PaymentIntent could not be captured because it has a status of ${pi.status}. Only a PaymentIntent with one of the following statuses may be captured: requires_capture.`,
              { code: 'payment_intent_unexpected_state' },
            );
          }
          const amount = amountToCapture ?? pi.amount;
          if (amount > pi.amount_capturable || amount < 1)
            throw invalidRequest(`amount_to_capture must be between 1 and ${pi.amount_capturable}`, { param: 'amount_to_capture' });
          const charge = charges.get(pi.latest_charge)!;
          Object.assign(charge, { captured: true, amount_captured: amount, balance_transaction: stripeId('txn') });
          Object.assign(pi, { status: 'succeeded', amount_received: amount, amount_capturable: 0 });
          emit('payment_intent.succeeded', pi, ctx);
          return ok(renderPaymentIntent(pi, expand));
        };
      }
      case 'GET /v1/payment_intents/:id': {
        const expand = expandParam(p);
        return () => ok(renderPaymentIntent(retrieveIntent(ctx.id!), expand));
      }
      case 'GET /v1/payment_intents/search': {
        checkKnownParams(p, ['query', 'limit', 'page', 'expand']);
        const text = stringParam(p, 'query');
        if (!text) throw missingParam('query');
        let query;
        try {
          query = parseSearchQuery(text);
        } catch (e) {
          if (e instanceof SearchSyntaxError) throw invalidRequest(e.message, { param: 'query' });
          throw e;
        }
        const limit = integerParam(p, 'limit', false) ?? 10;
        if (limit < 1 || limit > 100) throw invalidRequest('This value must be between 1 and 100.', { param: 'limit' });
        const page = stringParam(p, 'page');
        const offset = page ? Number(Buffer.from(page, 'base64url').toString()) : 0;
        if (!Number.isInteger(offset) || offset < 0) throw invalidRequest('Invalid page token.', { param: 'page' });
        const expand = expandParam(p).map((e) => e.replace(/^data\./, ''));
        return () => {
          const visibleBefore = clock.now() - searchLagMs;
          const hits = [...paymentIntents.values()]
            .filter((pi) => createdAt.get(pi.id)!.ms <= visibleBefore && matchesSearch(query, pi))
            .sort((a, b) => createdAt.get(b.id)!.seq - createdAt.get(a.id)!.seq);
          const data = hits.slice(offset, offset + limit).map((pi) => renderPaymentIntent(pi, expand));
          const hasMore = offset + limit < hits.length;
          return ok({
            object: 'search_result',
            data,
            has_more: hasMore,
            next_page: hasMore ? Buffer.from(String(offset + limit)).toString('base64url') : null,
            url: '/v1/payment_intents/search',
          });
        };
      }
      case 'POST /v1/refunds': {
        checkKnownParams(p, ['payment_intent', 'charge', 'amount', 'metadata', 'reason', 'expand']);
        const piId = stringParam(p, 'payment_intent');
        const chargeId = stringParam(p, 'charge');
        if (!piId && !chargeId)
          throw invalidRequest('One of the following params should be provided for this request: payment_intent or charge.', { code: 'parameter_missing' });
        const amount = integerParam(p, 'amount', false);
        if (amount !== undefined && amount < 1) throw invalidRequest('Invalid positive integer', { param: 'amount', code: 'parameter_invalid_integer' });
        const reason = stringParam(p, 'reason') ?? null;
        if (reason && !['duplicate', 'fraudulent', 'requested_by_customer'].includes(reason))
          throw invalidRequest('Invalid reason: must be one of duplicate, fraudulent, or requested_by_customer', { param: 'reason' });
        const metadata = metadataParam(p);
        if (piId && !paymentIntents.has(piId)) throw invalidRequest(`No such payment_intent: '${piId}'`, { param: 'payment_intent', code: 'resource_missing' });
        if (chargeId && !charges.has(chargeId)) throw invalidRequest(`No such charge: '${chargeId}'`, { param: 'charge', code: 'resource_missing' });
        return () => {
          const pi = piId ? paymentIntents.get(piId)! : paymentIntents.get(charges.get(chargeId!)!.payment_intent)!;
          const charge = chargeId ? charges.get(chargeId) : pi.latest_charge ? charges.get(pi.latest_charge) : undefined;
          if (!charge || charge.status !== 'succeeded' || !charge.captured) {
            throw invalidRequest(`This PaymentIntent (${pi.id}) does not have a successful charge to refund.`, { param: piId ? 'payment_intent' : 'charge' });
          }
          const refundable = charge.amount_captured - charge.amount_refunded;
          if (refundable <= 0) throw invalidRequest(`Charge ${charge.id} has already been refunded.`, { code: 'charge_already_refunded' });
          const refundAmount = amount ?? refundable;
          if (refundAmount > refundable) {
            throw invalidRequest(
              `Refund amount (${refundAmount} ${charge.currency}) is greater than unrefunded amount on charge (${refundable} ${charge.currency})`,
              { param: 'amount', code: 'amount_too_large' },
            );
          }
          const refund: StripeObject = {
            id: stripeId('re'),
            object: 'refund',
            amount: refundAmount,
            balance_transaction: stripeId('txn'),
            charge: charge.id,
            created: nowSeconds(),
            currency: charge.currency,
            metadata,
            payment_intent: pi.id,
            reason,
            status: 'succeeded',
          };
          refunds.set(refund.id, refund);
          const previous = { amount_refunded: charge.amount_refunded, refunded: charge.refunded };
          charge.amount_refunded += refundAmount;
          charge.refunded = charge.amount_refunded === charge.amount_captured;
          emit('charge.refunded', charge, ctx, previous);
          return ok(clone(refund));
        };
      }
      case 'GET /v1/refunds/:id':
        return () => {
          const refund = refunds.get(ctx.id!);
          if (!refund) throw noSuch('refund', ctx.id!, 'refund');
          return ok(clone(refund));
        };
      case 'GET /v1/events/:id':
        return () => {
          const event = events.find((e) => e.id === ctx.id);
          if (!event) throw noSuch('event', ctx.id!, 'id');
          return ok(clone(event));
        };
    }
  }

  function errorAnswer(e: unknown): Answer {
    if (e instanceof StripeApiError) return { status: e.status, body: { error: e.error }, headers: e.headers };
    // A bug in the fake: say so loudly rather than pass for one of Stripe's 500s.
    return { status: 500, body: { error: { type: 'api_error', message: `fake stripe bug: ${(e as Error).stack}` } }, headers: {} };
  }

  function apiError(shouldRetry: boolean | null): Answer {
    return {
      status: 500,
      body: {
        error: { type: 'api_error', message: "An unknown error occurred on Stripe's side. Retrying with the same idempotency key returns this same answer." },
      },
      headers: shouldRetry === null ? {} : { 'stripe-should-retry': String(shouldRetry) },
    };
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const requestId = stripeId('req', 14);
    const method = req.method ?? 'GET';
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const matched = ROUTES.map((r) => ({ r, m: r.method === method ? r.pattern.exec(url.pathname) : null })).find((x) => x.m);
    const route = matched?.r.route ?? null;
    const idempotencyKey = method === 'POST' ? ((req.headers['idempotency-key'] as string | undefined) ?? null) : null;
    const log: RequestLogEntry = { method, path: url.pathname, route, idempotencyKey, status: 0, replayed: false, fault: null };
    const body = await readBody(req);
    requests.push(log);

    const baseHeaders: Record<string, string> = {
      'request-id': requestId,
      'stripe-version': (req.headers['stripe-version'] as string | undefined) ?? FAKE_STRIPE_API_VERSION,
      ...(idempotencyKey ? { 'idempotency-key': idempotencyKey } : {}),
    };
    const send = (answer: Answer, extra: Record<string, string> = {}) => {
      log.status = answer.status;
      sendJson(res, answer.status, answer.body, { ...baseHeaders, ...answer.headers, ...extra });
    };

    if (!route) {
      send(
        errorAnswer(
          invalidRequest(
            `Unrecognized request URL (${method}: ${url.pathname}). Please see https://stripe.com/docs or we can help at https://support.stripe.com/.`,
            { status: 404 },
          ),
        ),
      );
      return;
    }

    // Authentication (Bearer, or Basic with the key as the user name, as curl -u sends it).
    const auth = req.headers.authorization ?? '';
    let apiKey: string | undefined;
    if (/^Bearer /i.test(auth)) apiKey = auth.slice(7).trim();
    else if (/^Basic /i.test(auth)) apiKey = Buffer.from(auth.slice(6), 'base64').toString().split(':')[0];
    if (!apiKey) {
      send(
        errorAnswer(
          invalidRequest(
            "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
            { status: 401 },
          ),
        ),
      );
      return;
    }
    if (!apiKeys.has(apiKey)) {
      // Stripe answers 401 with type invalid_request_error (the SDK makes it a StripeAuthenticationError by status).
      send(
        errorAnswer(
          invalidRequest(`Invalid API Key provided: ${apiKey.slice(0, 8)}${'*'.repeat(Math.max(0, apiKey.length - 12))}${apiKey.slice(-4)}`, { status: 401 }),
        ),
      );
      return;
    }

    // The rate limiter runs before the idempotency layer: a 429 is never stored under the key.
    const rateLimit = takeFault(['rate_limit'], route);
    if (rateLimit?.kind === 'rate_limit') {
      log.fault = 'rate_limit';
      const limited = invalidRequest('Too many requests hit the API too quickly. We recommend an exponential backoff of your requests.', {
        status: 429,
        code: 'rate_limit',
      });
      send(errorAnswer(limited), rateLimit.shouldRetry === undefined ? {} : { 'stripe-should-retry': String(rateLimit.shouldRetry) });
      return;
    }

    const ctx: RequestContext = { requestId, idempotencyKey, params: {}, ...(matched!.m![1] ? { id: decodeURIComponent(matched!.m![1]) } : {}) };
    try {
      ctx.params = method === 'POST' ? parseStripeForm(body.toString('utf8')) : parseStripeForm(url.search.slice(1));
    } catch (e) {
      send(errorAnswer(e));
      return;
    }

    const scope = idempotencyKey ? `${apiKey}\u0000${idempotencyKey}` : null;
    const print = fingerprint(ctx.params);
    if (idempotencyKey && idempotencyKey.length > 255) {
      send(errorAnswer(invalidRequest('Idempotency keys can be at most 255 characters long.', { param: 'idempotency_key' })));
      return;
    }
    if (scope) {
      const stored = idempotency.get(scope);
      if (stored && clock.now() - stored.createdAt >= IDEMPOTENCY_KEY_TTL_MS && stored.state === 'done') idempotency.delete(scope);
      const current = idempotency.get(scope);
      if (current?.state === 'in_flight') {
        const inUse = new StripeApiError(
          409,
          {
            type: 'idempotency_error',
            code: 'idempotency_key_in_use',
            doc_url: docUrl('idempotency_key_in_use'),
            message: `There is currently another in-progress request using this idempotency key (that probably means you submitted twice, and the other request is still going through): ${idempotencyKey}. Please try again later.`,
          },
          { 'stripe-should-retry': 'true' },
        );
        send(errorAnswer(inUse));
        return;
      }
      if (current?.state === 'done') {
        if (current.method !== method || current.path !== url.pathname || current.fingerprint !== print) {
          send(
            errorAnswer(
              new StripeApiError(400, {
                type: 'idempotency_error',
                message: `Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '${idempotencyKey}' if you meant to execute a different request.`,
              }),
            ),
          );
          return;
        }
        log.replayed = true;
        send(current.answer!, { 'idempotent-replayed': 'true', 'original-request': current.requestId });
        return;
      }
    }

    let run: () => Answer;
    try {
      run = validate(route, ctx);
    } catch (e) {
      send(errorAnswer(e));
      return;
    }

    // From here the endpoint "executes": its result is stored under the idempotency key.
    if (scope) idempotency.set(scope, { state: 'in_flight', method, path: url.pathname, fingerprint: print, createdAt: clock.now(), requestId });
    const fault = takeFault(['api_error', 'delay', 'drop', 'hold'], route);
    if (fault) log.fault = fault.kind;
    if (fault?.kind === 'hold') {
      fault.arrived();
      await fault.gate;
      // The fake was closed while holding. A client that went away meanwhile (a timeout, a killed
      // process) does not stop the request: Stripe finishes what it received and stores the result,
      // so the key is no longer in flight (its answer is lost with the connection).
      if (closed) return;
    }
    if (fault?.kind === 'drop' && fault.afterExecution === false) {
      if (scope) idempotency.delete(scope);
      log.status = -1;
      req.socket.destroy();
      return;
    }
    const shouldRetry = fault?.kind === 'api_error' ? (fault.shouldRetry === undefined ? (idempotencyKey ? false : null) : fault.shouldRetry) : null;
    let answer: Answer;
    if (fault?.kind === 'api_error' && !fault.afterExecution) {
      answer = apiError(shouldRetry);
    } else {
      if (idempotencyKey) executionCounts.set(idempotencyKey, (executionCounts.get(idempotencyKey) ?? 0) + 1);
      try {
        answer = run();
      } catch (e) {
        answer = errorAnswer(e);
      }
      if (fault?.kind === 'api_error') answer = apiError(shouldRetry);
    }
    if (scope) idempotency.set(scope, { state: 'done', method, path: url.pathname, fingerprint: print, createdAt: clock.now(), requestId, answer });

    if (fault?.kind === 'drop') {
      log.status = -1;
      req.socket.destroy();
      return;
    }
    if (fault?.kind === 'delay') {
      server.later(fault.ms, () => send(answer));
      return;
    }
    send(answer);
  }

  const server = await listenOnLoopback((req, res) => {
    handle(req, res).catch((e: unknown) => {
      if (!res.headersSent) sendJson(res, 500, { error: { type: 'api_error', message: `fake stripe: ${(e as Error).message}` } });
    });
  });

  const queue = (fault: Fault, times = 1) => {
    faults.push({ fault, remaining: times });
  };

  const fake: FakeStripe = {
    url: server.url,
    port: server.port,
    sdkOptions: { host: '127.0.0.1', port: server.port, protocol: 'http' },
    clock,
    webhookSecret,
    failNext(fault = {}) {
      queue({ kind: 'api_error', ...fault }, fault.times);
    },
    delayNext(fault) {
      queue({ kind: 'delay', ...fault }, fault.times);
    },
    dropNext(fault = {}) {
      queue({ kind: 'drop', afterExecution: true, ...fault }, fault.times);
    },
    rateLimitNext(fault = {}) {
      queue({ kind: 'rate_limit', ...fault }, fault.times);
    },
    holdNext(target = {}) {
      let release!: () => void;
      let arrived!: () => void;
      const gate = new Promise<void>((resolve) => (release = resolve));
      const arrivedPromise = new Promise<void>((resolve) => (arrived = resolve));
      holds.add(release);
      queue({ kind: 'hold', ...target, gate, arrived });
      return {
        arrived: arrivedPromise,
        release: () => {
          holds.delete(release);
          release();
        },
      };
    },
    setSearchLag(ms) {
      searchLagMs = ms;
    },
    dispute(paymentIntentId, reason = 'fraudulent') {
      const pi = paymentIntents.get(paymentIntentId);
      const charge = pi?.latest_charge ? charges.get(pi.latest_charge) : undefined;
      if (!pi || !charge || charge.status !== 'succeeded') throw new Error(`fake stripe: ${paymentIntentId} has no successful charge to dispute`);
      return clone(openDispute(pi, charge, reason));
    },
    get requests() {
      return requests;
    },
    get events() {
      return events;
    },
    paymentIntent: (id) => (paymentIntents.has(id) ? clone(paymentIntents.get(id)) : undefined),
    paymentIntents: () => [...paymentIntents.values()].map(clone),
    chargesForOrder(orderId) {
      return [...charges.values()].filter((c) => c.status === 'succeeded' && paymentIntents.get(c.payment_intent)?.metadata.order_id === orderId).map(clone);
    },
    refunds: () => [...refunds.values()].map(clone),
    executions: (key) => executionCounts.get(key) ?? 0,
    webhookRequest(event, opts = {}) {
      // Stripe sends the event pretty-printed: a handler must verify the raw bytes, not a re-serialisation.
      const payload = JSON.stringify(event, null, 2);
      const signedAt = opts.signedAt ?? nowSeconds();
      let signature = stripeSignatureHeader(payload, opts.secret ?? webhookSecret, signedAt);
      let sent = payload;
      if (opts.tamper === 'payload') {
        const changed = structuredClone(event);
        if (typeof changed.data?.object?.amount === 'number') changed.data.object.amount += 100;
        else changed.data = { ...changed.data, tampered: true };
        sent = JSON.stringify(changed, null, 2);
      } else if (opts.tamper === 'signature') {
        signature = signature.replace(/v1=([0-9a-f])/, (_, c: string) => `v1=${c === '0' ? '1' : '0'}`);
      }
      return {
        payload: sent,
        headers: {
          'content-type': 'application/json; charset=utf-8',
          'stripe-signature': signature,
          'user-agent': 'Stripe/1.0 (+https://stripe.com/docs/webhooks)',
        },
      };
    },
    async deliver(url, list, opts = {}) {
      const results: Array<{ status: number; body: string }> = [];
      for (const event of Array.isArray(list) ? list : [list]) {
        const { payload, headers } = fake.webhookRequest(event, opts);
        const res = await fetch(url, { method: 'POST', headers, body: payload });
        results.push({ status: res.status, body: await res.text() });
      }
      return results;
    },
    clearFaults() {
      faults.splice(0, faults.length);
    },
    async close() {
      closed = true;
      for (const release of holds) release();
      holds.clear();
      await server.close();
    },
  };
  return fake;
}
