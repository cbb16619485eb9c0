import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InMemorySpanExporter, type ReadableSpan } from '@opentelemetry/sdk-trace';
import { postgresServeEnv, testServer, type TestServer } from './helpers/server.js';
import { query } from './helpers/db.js';
import { waitFor } from './helpers/rabbit.js';
import { REDIS_URL, redisPrefix } from './helpers/redis.js';
import { shop as workerShop } from './helpers/worker.js';
import { svcServe, tempDir } from './helpers/cli.js';
import { listenOnLoopback, readBody } from './fakes/http-server.js';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { createLoggerTo } from '../src/logger.js';

// svc serve on PostgreSQL without AMQP_URL: the outbox relay and the consumers run beside the API
// (the in-process transport), so one process makes every span of an order's life.

const INCOMING_TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const INCOMING = `00-${INCOMING_TRACE}-00f067aa0ba902b7-01`;

async function shop(ts: TestServer) {
  const admin = await ts.user({ email: 'admin@example.com', role: 'admin' });
  const alice = await ts.user({ email: 'alice@example.com', name: 'Alice' });
  const created = await fetch(`${ts.url}/api/v2/products`, {
    method: 'POST',
    headers: { ...(await ts.auth(admin)), 'content-type': 'application/json' },
    body: JSON.stringify({ sku: 'MUG-1', name: 'Mug', price: { amount: 1250, currency: 'USD' }, stock: 10 }),
  });
  assert.equal(created.status, 201, await created.text());
  return {
    alice,
    /** Places one order with this traceparent (or none); returns the response's id and x-trace-id. */
    async order(traceparent?: string): Promise<{ id: string; traceId: string }> {
      const res = await fetch(`${ts.url}/api/v1/orders`, {
        method: 'POST',
        headers: { ...(await ts.auth(alice)), 'content-type': 'application/json', ...(traceparent ? { traceparent } : {}) },
        body: JSON.stringify({ paymentMethod: 'pm_card_visa', items: [{ sku: 'MUG-1', quantity: 1 }] }),
      });
      const body = (await res.json()) as { id: string };
      assert.equal(res.status, 201, JSON.stringify(body));
      return { id: body.id, traceId: res.headers.get('x-trace-id')! };
    },
  };
}

const byName = (spans: readonly ReadableSpan[], name: string | RegExp) => spans.filter((s) => (typeof name === 'string' ? s.name === name : name.test(s.name)));

function one(spans: readonly ReadableSpan[], name: string | RegExp): ReadableSpan {
  const found = byName(spans, name);
  assert.equal(found.length, 1, `one span ${String(name)}, got: ${spans.map((s) => s.name).join(', ')}`);
  return found[0]!;
}

const parentOf = (span: ReadableSpan) => span.parentSpanContext?.spanId;

/**
 * The spans an order's created event leads to, each the child of the one before: its payment (and
 * the provider's charge), the order.completed it publishes, the email that one leads to (and the send).
 */
function assertOrderChain(spans: readonly ReadableSpan[], published: ReadableSpan) {
  const payment = one(spans, 'payments process order.created');
  assert.equal(parentOf(payment), published.spanContext().spanId);
  const charge = one(spans, 'payments.charge');
  assert.equal(parentOf(charge), payment.spanContext().spanId);
  const completed = one(spans, 'publish order.completed');
  assert.equal(parentOf(completed), payment.spanContext().spanId);
  const mail = one(spans, 'mail process order.completed');
  assert.equal(parentOf(mail), completed.spanContext().spanId);
  const sent = one(spans, 'mailer.send');
  assert.equal(parentOf(sent), mail.spanContext().spanId);
  return { payment, charge, completed, mail, sent };
}

test("one order's request, outbox publish, payment and email are one trace", async (t) => {
  const exporter = new InMemorySpanExporter();
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
      done();
    },
  });
  const ts = await testServer(t, { pipeline: true, overrides: { tracing: { exporter }, logger: createLoggerTo('debug', stream) } });
  const s = await shop(ts);
  exporter.reset();
  const order = await s.order(INCOMING);
  // The request joined the caller's trace: the id it answers with is the caller's.
  assert.equal(order.traceId, INCOMING_TRACE);
  await waitFor(() => byName(exporter.getFinishedSpans(), /^mail process order\.completed$/).length > 0, 30_000, 'the order confirmation email');
  const spans = exporter.getFinishedSpans().filter((span) => span.spanContext().traceId === INCOMING_TRACE);

  const request = one(spans, 'POST /api/v1/orders');
  assert.equal(parentOf(request), '00f067aa0ba902b7');
  assert.equal(request.attributes['http.response.status_code'], 201);
  // The request's statements are its children: the one that writes the order and its outbox row among them.
  const statements = spans.filter((span) => span.attributes['db.system.name'] === 'postgresql' && parentOf(span) === request.spanContext().spanId);
  assert.ok(
    statements.some((span) => /insert into outbox_events/i.test(String(span.attributes['db.query.text']))),
    'the order insert is a child of the request span',
  );

  // The outbox row carried the request span on: the relay's publish is its child, the payment its grandchild.
  const published = one(spans, 'publish order.created');
  assert.equal(parentOf(published), request.spanContext().spanId);
  // And on from the payment's event to the email.
  const { charge, completed } = assertOrderChain(spans, published);
  assert.equal(charge.attributes['svc.provider'], 'simulated');

  // The worker's log lines carry the trace id: the consumers' as well as the request's.
  const messageIds = new Set([published, completed].map((span) => span.attributes['messaging.message.id']));
  const handled = lines.filter((l) => l.msg === 'processed' && messageIds.has(l.messageId as string));
  assert.ok(handled.length >= 2, `the consumers logged: ${JSON.stringify(lines.filter((l) => l.msg === 'processed'))}`);
  for (const line of handled) assert.equal(line.traceId, INCOMING_TRACE);
  assert.equal(lines.find((l) => l.msg === 'request' && l.route === '/api/v1/orders')?.traceId, INCOMING_TRACE);

  // The outbox rows hold the trace too.
  const rows = await query<{ type: string; traceparent: string }>(ts.databaseUrl!, 'select type, traceparent from outbox_events where aggregate_id = $1', [
    order.id,
  ]);
  assert.ok(rows.length >= 2);
  for (const row of rows) assert.match(row.traceparent, new RegExp(`^00-${INCOMING_TRACE}-[\\da-f]{16}-01$`));
});

test('a request without traceparent starts a trace of its own, answered in x-trace-id', async (t) => {
  const exporter = new InMemorySpanExporter();
  const ts = await testServer(t, { pipeline: true, overrides: { tracing: { exporter } } });
  const s = await shop(ts);
  const order = await s.order();
  assert.match(order.traceId, /^[\da-f]{32}$/);
  await waitFor(
    () => byName(exporter.getFinishedSpans(), 'payments.charge').some((span) => span.spanContext().traceId === order.traceId),
    30_000,
    'the charge',
  );
  const request = one(
    exporter.getFinishedSpans().filter((span) => span.spanContext().traceId === order.traceId),
    'POST /api/v1/orders',
  );
  assert.equal(parentOf(request), undefined);
});

test('with no OTEL_* variables no span is made and traceparent flows as before', async (t) => {
  const ts = await testServer(t, { pipeline: true });
  assert.equal(ts.app.tracing.enabled, false);
  const s = await shop(ts);
  const order = await s.order(INCOMING);
  assert.equal(order.traceId, INCOMING_TRACE);
  const rows = await query<{ traceparent: string }>(
    ts.databaseUrl!,
    "select traceparent from outbox_events where aggregate_id = $1 and type = 'order.created'",
    [order.id],
  );
  assert.match(rows[0]!.traceparent, new RegExp(`^00-${INCOMING_TRACE}-[\\da-f]{16}-01$`));
});

test("with REDIS_URL, a cached read's Redis commands are children of its request span", async (t) => {
  const exporter = new InMemorySpanExporter();
  const ts = await testServer(t, { pipeline: true, env: { REDIS_URL, REDIS_PREFIX: redisPrefix(t) }, overrides: { tracing: { exporter } } });
  const s = await shop(ts);
  const order = await s.order();
  exporter.reset();
  const read = await fetch(`${ts.url}/api/v1/orders/${order.id}`, { headers: { ...(await ts.auth(s.alice)), traceparent: INCOMING } });
  assert.equal(read.status, 200, await read.text());
  await waitFor(() => byName(exporter.getFinishedSpans(), 'GET /api/v1/orders/:id').length > 0, 10_000, 'the read span');
  const spans = exporter.getFinishedSpans().filter((span) => span.spanContext().traceId === INCOMING_TRACE);
  const request = one(spans, 'GET /api/v1/orders/:id');
  const commands = spans.filter((span) => span.attributes['db.system.name'] === 'redis');
  assert.ok(commands.length > 0, `Redis spans, got: ${spans.map((span) => span.name).join(', ')}`);
  for (const command of commands) assert.equal(parentOf(command), request.spanContext().spanId);
});

test('through RabbitMQ, svc worker continues the trace an order was placed in: payment by Stripe, email by SendGrid', async (t) => {
  const exporter = new InMemorySpanExporter();
  const s = await workerShop(t);
  const ada = await s.app.users.create(s.app.context({ actor: 'cli:test' }), { email: 'ada.trace@example.com', name: 'Ada' });
  // Placed in a caller's trace (as a request would be), by an App that does not trace itself.
  const placed = await s.app.orders.create(s.app.context({ actor: ada.id, traceparent: INCOMING }), {
    userId: ada.id,
    items: [{ sku: 'TEA-1', quantity: 1 }],
    paymentMethod: 'pm_card_visa',
  });
  await s.worker({ overrides: { tracing: { exporter } } });
  await waitFor(() => byName(exporter.getFinishedSpans(), 'mail process order.completed').length > 0, 30_000, 'the order confirmation email');
  const spans = exporter.getFinishedSpans().filter((span) => span.spanContext().traceId === INCOMING_TRACE);

  const published = one(spans, 'publish order.created');
  assert.equal(parentOf(published), '00f067aa0ba902b7');
  assert.equal(published.attributes['messaging.system'], 'rabbitmq');
  assert.equal(
    published.attributes['messaging.message.id'],
    (await query<{ id: string }>(s.db, "select id from outbox_events where aggregate_id = $1 and type = 'order.created'", [placed.order.id]))[0]!.id,
  );
  const { charge, sent } = assertOrderChain(spans, published);
  assert.equal(charge.attributes['svc.provider'], 'stripe');
  assert.equal(sent.attributes['svc.provider'], 'sendgrid');
});

test('svc serve with OTEL_EXPORTER_OTLP_ENDPOINT sends its spans to the collector (OTLP over HTTP), the last ones on SIGTERM', async (t) => {
  const received: { path: string; type: string; body: Buffer }[] = [];
  const collector = await listenOnLoopback((req, res) => {
    void readBody(req).then((body) => {
      received.push({ path: req.url ?? '', type: req.headers['content-type'] ?? '', body });
      res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
    });
  });
  t.after(() => collector.close());
  const serve = await svcServe(t, ['--port', '0'], {
    env: {
      ...(await postgresServeEnv(t)),
      SVC_DATA_DIR: join(tempDir(t), 'data'),
      OTEL_EXPORTER_OTLP_ENDPOINT: collector.url,
      OTEL_SERVICE_NAME: 'svc-under-test',
    },
  });
  const res = await fetch(`${serve.url}/health/live`, { headers: { traceparent: INCOMING } });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-trace-id'), INCOMING_TRACE);
  serve.child.kill('SIGTERM');
  assert.equal((await serve.exited).code, 0, serve.stderr());
  const exported = received.filter((r) => r.path === '/v1/traces');
  assert.ok(exported.length > 0, `the collector got: ${JSON.stringify(received.map((r) => r.path))}`);
  assert.ok(exported.every((r) => r.type === 'application/x-protobuf'));
  const all = Buffer.concat(exported.map((r) => r.body));
  // The request's span in the protobuf: its trace id's bytes, its name, the service's name.
  assert.ok(all.includes(Buffer.from(INCOMING_TRACE, 'hex')), 'the trace id was exported');
  assert.ok(all.includes(Buffer.from('GET /health/live')), 'the span name was exported');
  assert.ok(all.includes(Buffer.from('svc-under-test')), 'the service name was exported');
});

test('OTEL_TRACES_SAMPLER=parentbased_traceidratio records the share of new traces it is told (0: none) and follows a caller that sampled', async (t) => {
  const exporter = new InMemorySpanExporter();
  const ts = await testServer(t, {
    env: { OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '0' },
    overrides: { tracing: { exporter } },
  });
  const live = (traceparent?: string) => fetch(`${ts.url}/health/live`, traceparent ? { headers: { traceparent } } : {});
  const own = await live();
  assert.equal(own.status, 200);
  // Not recorded, but still a trace id to quote.
  assert.match(own.headers.get('x-trace-id') ?? '', /^[\da-f]{32}$/);
  const notSampled = await live(`00-${'1'.repeat(32)}-${'2'.repeat(16)}-00`);
  assert.equal(notSampled.headers.get('x-trace-id'), '1'.repeat(32));
  const sampled = await live(INCOMING);
  assert.equal(sampled.headers.get('x-trace-id'), INCOMING_TRACE);
  await waitFor(() => exporter.getFinishedSpans().length > 0, 10_000, 'the sampled request span');
  const traces = new Set(exporter.getFinishedSpans().map((span) => span.spanContext().traceId));
  assert.deepEqual([...traces], [INCOMING_TRACE]);
});

test('OTEL_SDK_DISABLED=true turns tracing off even with a collector configured; a sampler ratio outside 0..1 is refused naming its key', async () => {
  const { loadConfig, ConfigError } = await import('../src/config.js');
  const { createTracing } = await import('../src/adapters/opentelemetry.js');
  const { createLogger } = await import('../src/logger.js');
  const env = { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:4318' };
  const on = createTracing(loadConfig(env), createLogger('silent'));
  assert.equal(on.enabled, true);
  await on.close();
  assert.equal(createTracing(loadConfig({ ...env, OTEL_SDK_DISABLED: 'true' }), createLogger('silent')).enabled, false);
  assert.throws(
    () => loadConfig({ OTEL_TRACES_SAMPLER_ARG: '1.5' }),
    (err: unknown) => err instanceof ConfigError && /OTEL_TRACES_SAMPLER_ARG/.test(err.message),
  );
  assert.throws(
    () => loadConfig({ OTEL_TRACES_SAMPLER: 'sometimes' }),
    (err: unknown) => err instanceof ConfigError && /OTEL_TRACES_SAMPLER/.test(err.message),
  );
});
