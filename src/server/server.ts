import { randomFillSync } from 'node:crypto';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { Ajv } from 'ajv';
import addFormats from 'ajv-formats';
import type { App } from '../app.js';
import type { Ctx } from '../domain/shared/context.js';
import type { OpenSpan } from '../domain/shared/tracing.js';
import type { Authenticator } from '../domain/auth/authenticator.js';
import type { AuthService } from '../domain/auth/auth.service.js';
import type { AccessTokens } from '../adapters/jwt.js';
import { clientErrorHandler, errorHandler, frameworkErrorHandler, notFoundHandler, problemSchema } from './errors.js';
import { healthRoutes } from './routes/health.js';
import { apiRoutes } from './routes/index.js';
import { fileRoutes } from './routes/files.js';
import { registerRateLimits } from './rate-limits.js';
import { withRefusals } from './versions.js';

/** The route label of a request no route matched (a 404), in the request log line and the metrics. */
const UNMATCHED_ROUTE = 'unmatched';
import { registerSecurity } from './security.js';
import { registerReadYourWrites } from './replicas.js';
import type { TlsOptions } from './tls.js';

/** What routes reach through `request.server.svc` (the App's, named here for the routes' convenience). */
export interface ServerServices {
  app: App;
  tokens: AccessTokens;
  authenticator: Authenticator;
  /** Registration, login and refresh-token sessions. */
  auth: AuthService;
  /** Each dependency's state: 'ok' or what is wrong with it. */
  readiness(): Promise<Record<string, string>>;
}

declare module 'fastify' {
  interface FastifyInstance {
    svc: ServerServices;
  }
  interface FastifyRequest {
    traceId: string;
    /** This request's unit of work: its own EntityManager, its trace id, and (once authenticated) its actor. */
    ctx: Ctx;
    /** This request's server span, when tracing is on. */
    span: OpenSpan | null;
  }
}

export interface ServerOptions {
  /** Largest request body accepted, in bytes. */
  bodyLimit?: number;
  /** Terminate TLS (TLS_CERT_FILE, TLS_KEY_FILE): the certificate, its key, TLS 1.3 only. */
  https?: TlsOptions;
}

// W3C traceparent: version-traceid-parentid-flags. A valid incoming trace id is kept, so one id
// follows a request across the load balancer, this service and its logs.
// The W3C spec makes an all-zero trace id or parent id, and version ff, invalid: such a header is
// ignored, or every client sending zeros would share one trace id in the logs.
const TRACEPARENT = /^(?!ff)[\da-f]{2}-(?!0{32})([\da-f]{32})-(?!0{16})[\da-f]{16}-[\da-f]{2}$/;

/**
 * Random hex strings cut from a pooled buffer: one CSPRNG call per 256 trace ids instead of one
 * (with its OpenSSL locking) for every id of every request.
 */
function randomHexSource(poolBytes = 4096): (bytes: number) => string {
  const pool = Buffer.alloc(poolBytes);
  let offset = poolBytes;
  return (bytes) => {
    if (offset + bytes > poolBytes) {
      randomFillSync(pool);
      offset = 0;
    }
    const hex = pool.toString('hex', offset, offset + bytes);
    offset += bytes;
    return hex;
  };
}

function isJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

/** Builds the HTTP API on an App: plugins, schemas, error handling, routes v1 and v2, health, OpenAPI. */
export async function buildServer(app: App, options: ServerOptions = {}): Promise<FastifyInstance> {
  const randomHex = randomHexSource();
  // With https fastify runs an https.Server; every route and hook is the same, so the instance is typed as one.
  const server = Fastify({
    ...(options.https ? { https: options.https } : {}),
    // Not redundant: it makes fastify's logger type parameter FastifyBaseLogger rather than pino's Logger.
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-type-assertion
    loggerInstance: app.logger as FastifyBaseLogger,
    // fastify's own request logs are off: the onResponse hook below writes one line per request.
    logController: new LogController({ disableRequestLogging: true }),
    // Every line about a request carries its trace id explicitly, so requests log through the
    // service's logger itself rather than a child made (and its bindings redacted) per request.
    childLoggerFactory: (logger) => logger,
    bodyLimit: options.bodyLimit ?? 64 * 1024,
    // Behind a load balancer: keep-alive longer than its idle timeout, and bounded request time.
    keepAliveTimeout: 65_000,
    requestTimeout: 30_000,
    return503OnClosing: true,
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: 200 },
    genReqId: () => randomHex(8),
    // What node's HTTP parser refuses (a bad header, headers too large) is answered as a problem document too.
    clientErrorHandler,
    // What fastify's router refuses (a broken percent-encoding, an overlong path parameter) is a problem document too.
    frameworkErrors: frameworkErrorHandler,
    // Rate limits count the client behind the load balancers named in TRUSTED_PROXIES (X-Forwarded-For); else the socket's address.
    trustProxy: app.config.TRUSTED_PROXIES ? app.config.TRUSTED_PROXIES.split(',') : false,
  }) as unknown as FastifyInstance;

  // Bodies are validated strictly (no type coercion: "5" is not a quantity); query strings and
  // path parameters arrive as text, so they are coerced. Unknown properties are rejected, never
  // silently dropped, so a client learns that `{"status": "completed"}` did nothing.
  const strict = new Ajv({ removeAdditional: false, useDefaults: true, coerceTypes: false, allErrors: true, strict: false });
  const coercing = new Ajv({ removeAdditional: false, useDefaults: true, coerceTypes: 'array', allErrors: true, strict: false });
  addFormats.default(strict);
  addFormats.default(coercing);
  server.setValidatorCompiler(({ schema, httpPart }) => (httpPart === 'body' ? strict : coercing).compile(schema));

  server.decorate('svc', {
    app,
    tokens: app.tokens,
    authenticator: app.authenticator,
    auth: app.auth,
    readiness: async () => ({ database: await app.databaseState() }),
  } satisfies ServerServices);
  server.decorateRequest('traceId', '');
  server.decorateRequest('ctx', null as unknown as Ctx);
  server.decorateRequest('span', null);

  // The per-request hooks take a callback rather than returning a promise: they run on every request.
  const { tracing } = app;
  server.addHook('onRequest', (request, reply, done) => {
    const incoming = request.headers.traceparent;
    const match = typeof incoming === 'string' ? TRACEPARENT.exec(incoming) : null;
    // With tracing on, a server span continues the incoming trace (or starts one): its trace id is the request's.
    if (tracing.enabled) {
      const route = request.routeOptions.url ?? UNMATCHED_ROUTE;
      request.span = tracing.start(`${request.method} ${route}`, {
        kind: 'server',
        parent: match ? (incoming as string) : undefined,
        attributes: { 'http.request.method': request.method, 'http.route': route },
      });
    }
    request.traceId = request.span?.traceId ?? match?.[1] ?? randomHex(16);
    request.ctx = app.context({ actor: 'anonymous', traceId: request.traceId });
    reply.header('x-trace-id', request.traceId);
    if (request.span) request.span.run(done);
    else done();
  });
  if (tracing.enabled) {
    // Again before the handler: a body is read in the socket's async context, not the one onRequest set.
    server.addHook('preHandler', (request, _reply, done) => (request.span ? request.span.run(done) : done()));
  }
  // Per request: its metrics (route template, never the URL), and one log line with method, route,
  // status, duration, trace id (and the actor when known).
  const metrics = app.metrics.enabled ? app.metrics : undefined;
  server.addHook('onResponse', (request, reply, done) => {
    metrics?.requestAnswered(request.method, request.routeOptions.url ?? UNMATCHED_ROUTE, reply.statusCode, reply.elapsedTime / 1000);
    if (request.span) {
      request.span.setAttributes({ 'http.response.status_code': reply.statusCode });
      request.span.end(reply.statusCode >= 500 ? new Error(`status ${reply.statusCode}`) : undefined);
    }
    // Skipped before the line is built when info is off (LOG_LEVEL=warn and above).
    if (app.logger.isLevelEnabled('info')) {
      request.log.info(
        {
          method: request.method,
          route: request.routeOptions.url ?? UNMATCHED_ROUTE,
          status: reply.statusCode,
          durationMs: Math.round(reply.elapsedTime * 100) / 100,
          traceId: request.traceId,
          actor: request.principal ? request.ctx.actor : undefined,
        },
        'request',
      );
    }
    done();
  });

  // ---- Security plugins (helmet, CORS_ORIGINS) and read replicas' read-your-writes. Other plugins register below. ----
  await registerSecurity(server, app.config, { tls: options.https !== undefined });
  registerReadYourWrites(server, app);

  // --- Rate limits (issue 10): per client address, tighter on the credential routes, per API key;
  // shared through Redis with REDIS_URL. Health, metrics and the Stripe webhook are exempt. ---
  registerRateLimits(server, { config: app.config, limiter: app.rateLimiter, now: () => app.clock().getTime(), metrics: app.metrics });
  // --- end of rate limits ---
  // Every documented route lists the refusals that can answer it whatever its handler does: 429 (the
  // rate limits) and 503 (a statement timeout, a full pool), with their headers. Before the routes.
  server.addHook('onRoute', (route) => {
    const response = route.schema?.response as Record<string, unknown> | undefined;
    if (response && !route.schema!.hide) route.schema = { ...route.schema, response: withRefusals(route.url, response) };
  });

  // Bodies are JSON only: fastify's text/plain parser would hand a route a string that fails as "body must be object".
  server.removeContentTypeParser('text/plain');
  // fastify's JSON parser refuses a `__proto__` key or a `constructor.prototype` (prototype poisoning)
  // with the same "not valid JSON" as a syntax error. The same parser, then on a refusal a second
  // look: a body that is valid JSON is refused for that key, and the client is told so.
  const parseJson = server.getDefaultJsonParser('error', 'error');
  server.removeContentTypeParser('application/json');
  server.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    void parseJson(request, body as string, (err, value) => {
      if (err && (err as { code?: string }).code === 'FST_ERR_CTP_INVALID_JSON_BODY' && isJson(body as string)) {
        done(
          Object.assign(new Error('the body may not have a __proto__ key or a constructor.prototype (prototype poisoning)'), { statusCode: 400 }),
          undefined,
        );
        return;
      }
      done(err, value);
    });
  });
  server.setErrorHandler(errorHandler);
  server.setNotFoundHandler(notFoundHandler);
  server.addSchema(problemSchema);

  const { default: swagger } = await import('@fastify/swagger');
  await server.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: 'svc', version: '1.0.0', description: 'Order service API. Money is integer minor units in v2 and decimal major units in v1.' },
      components: {
        securitySchemes: {
          bearerAuth: { type: 'http', scheme: 'bearer', description: 'An access token from /auth/login or /auth/refresh, or an API key (svc_key_…)' },
        },
      },
    },
    refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => (typeof json.$id === 'string' ? json.$id : `def-${i}`) },
  });
  const { default: swaggerUi } = await import('@fastify/swagger-ui');
  await server.register(swaggerUi, { routePrefix: '/docs', staticCSP: true });

  await server.register(healthRoutes);
  await server.register(apiRoutes);
  // Signed links to files on local disk (the embedded stand-in for S3's presigned URLs).
  if (app.localFiles) await server.register(fileRoutes(app.localFiles));
  server.get('/api/openapi.json', { schema: { hide: true } }, async () => server.swagger());
  return server;
}
