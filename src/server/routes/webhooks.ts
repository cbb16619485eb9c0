import type { FastifyPluginAsync } from 'fastify';
import { DomainError } from '../../domain/shared/errors.js';
import { HANDLED_STRIPE_EVENTS, receiveStripeEvent } from '../../domain/payments/stripe-webhooks.js';
import { errorResponses, type ApiVersion } from '../versions.js';

/** Largest webhook body accepted: Stripe's events are a few KB; a charge with its lists stays far below this. */
export const WEBHOOK_BODY_LIMIT = 512 * 1024;

const OUTCOMES = ['applied', 'unchanged', 'ignored', 'unknown_order', 'duplicate'];

/**
 * `POST /webhooks/stripe`: Stripe's event deliveries. The signature is the credential (no bearer
 * token): verified over the raw body, so this plugin (and only it: fastify scopes content-type
 * parsers to the plugin that adds them) keeps JSON bodies as the bytes that were signed.
 */
export const webhookRoutes =
  (version: ApiVersion): FastifyPluginAsync =>
  async (server) => {
    const { app } = server.svc;
    // Said once (v1's registration): charging through Stripe without hearing from it is likely an oversight.
    if (version.name === 'v1' && app.config.STRIPE_SECRET_KEY && !app.stripeWebhooks) {
      app.logger.warn(
        'Stripe webhooks are off: POST /api/v1/webhooks/stripe answers 503 until STRIPE_WEBHOOK_SECRET is set (refunds and disputes made in Stripe are not seen)',
      );
    }
    server.removeAllContentTypeParsers();
    server.addContentTypeParser('application/json', { parseAs: 'buffer' }, (_request, body, done) => done(null, body));

    server.post<{ Body: Buffer | undefined; Headers: { 'stripe-signature'?: string } }>('/webhooks/stripe', {
      bodyLimit: WEBHOOK_BODY_LIMIT,
      schema: {
        tags: ['webhooks'],
        summary: "Receive a Stripe event (Stripe's signed deliveries only)",
        description:
          'The endpoint to give Stripe (Dashboard → Webhooks; its signing secret goes in STRIPE_WEBHOOK_SECRET). The Stripe-Signature ' +
          'header must sign the raw body with that secret, with a timestamp at most 300 s old: anything else answers 400 and changes ' +
          `nothing. Acts on ${HANDLED_STRIPE_EVENTS.join(', ')}; other types are acknowledged and ignored. Each event id is applied once: ` +
          'a repeated delivery answers 200 (outcome duplicate). A failure while applying answers 5xx and records nothing, so Stripe ' +
          'retries it. Without STRIPE_WEBHOOK_SECRET the endpoint answers 503 (Stripe keeps retrying until it is configured).',
        headers: {
          type: 'object',
          required: ['stripe-signature'],
          properties: { 'stripe-signature': { type: 'string', description: 't=<timestamp>,v1=<HMAC-SHA256 of "<timestamp>.<body>">' } },
        },
        body: { type: 'object', description: 'A Stripe event object (https://docs.stripe.com/api/events/object), as Stripe sends it' },
        response: {
          200: {
            description: 'Received: applied, or acknowledged without effect (see outcome)',
            type: 'object',
            required: ['received', 'id', 'type', 'outcome'],
            additionalProperties: false,
            properties: {
              received: { type: 'boolean', enum: [true] },
              id: { type: 'string', description: "Stripe's event id (evt_…)" },
              type: { type: 'string' },
              outcome: {
                type: 'string',
                enum: OUTCOMES,
                description:
                  'applied: it changed the order; unchanged: already so, or a late event the order no longer takes (a failure after the payment ' +
                  'succeeded); ignored: a type svc does not act on; unknown_order: about no order of this service; duplicate: already received',
              },
            },
          },
          ...errorResponses(400, 413, 415, 503),
        },
      },
      // The schema documents the body; the signature over its raw bytes is what is checked (in the handler).
      validatorCompiler: () => () => true,
      handler: async (request, reply) => {
        const verifier = app.stripeWebhooks;
        if (!verifier) {
          // 503, not 404: the endpoint exists and Stripe is sending to it, but this deployment cannot
          // verify what it sends. Stripe retries a 5xx for days, so nothing is lost once the secret is set.
          request.log.warn({ traceId: request.traceId }, 'a Stripe webhook arrived but STRIPE_WEBHOOK_SECRET is not set: refused with 503');
          return reply.code(503).header('retry-after', '3600').type('application/problem+json').send({
            type: 'urn:svc:problem:unavailable',
            title: 'Service Unavailable',
            status: 503,
            code: 'unavailable',
            detail: "Stripe webhooks are not enabled on this server: set STRIPE_WEBHOOK_SECRET to the endpoint's signing secret (whsec_…)",
            traceId: request.traceId,
          });
        }
        const signature = request.headers['stripe-signature'];
        if (typeof signature !== 'string' || signature.length === 0) {
          throw new DomainError('invalid', "the Stripe-Signature header is missing: this endpoint takes Stripe's signed deliveries only", {
            field: 'stripe-signature',
          });
        }
        if (!Buffer.isBuffer(request.body) || request.body.length === 0) {
          throw new DomainError('invalid', 'the body is empty: a Stripe event is expected', { field: 'body' });
        }
        const event = await verifier.verify(request.body, signature);
        request.ctx.actor = 'webhook:stripe';
        const result = await receiveStripeEvent(request.ctx, event);
        const line = { traceId: request.traceId, stripeEvent: event.id, type: event.type, outcome: result.outcome, order: result.orderId, note: result.note };
        if (result.outcome === 'unknown_order' || (result.outcome === 'applied' && result.note)) request.log.warn(line, 'stripe webhook needs attention');
        else request.log.info(line, 'stripe webhook');
        return { received: true, id: event.id, type: event.type, outcome: result.outcome };
      },
    });
  };
