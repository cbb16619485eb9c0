import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { testServer, type TestServer } from './helpers/server.js';
import { rejection } from './helpers/assertions.js';
import { shop, statusCounts } from './helpers/worker.js';
import { insertOutbox, waitFor } from './helpers/rabbit.js';
import { REDIS_URL, redisPrefix } from './helpers/redis.js';

// Prometheus metrics as an operator scrapes them: svc serve's /metrics on its own port (METRICS_PORT),
// svc worker's on its health port.

interface Series {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The samples of a Prometheus text exposition (comments skipped). */
function parse(text: string): Series[] {
  const series: Series[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const [, k, v] of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[k!] = v!;
    series.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return series;
}

/** The value of the one sample of `name` whose labels include `labels` (undefined when there is none). */
function sample(all: Series[], name: string, labels: Record<string, string> = {}): number | undefined {
  const found = all.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  assert.ok(found.length <= 1, `one ${name} ${JSON.stringify(labels)}, not ${found.length}`);
  return found[0]?.value;
}

async function scrape(url: string): Promise<{ text: string; series: Series[] }> {
  const res = await fetch(url);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  const text = await res.text();
  return { text, series: parse(text) };
}

/** An admin creates a product through the API, then reads it three times (200 each): its id and the admin's headers. */
async function productReadThrice(ts: TestServer): Promise<{ productId: string; headers: Record<string, string> }> {
  const admin = await ts.user({ email: 'admin@example.com', role: 'admin' });
  const headers = { ...(await ts.auth(admin)), 'content-type': 'application/json' };
  const created = await fetch(`${ts.url}/api/v2/products`, {
    method: 'POST',
    headers,
    body: JSON.stringify({ sku: 'MUG-1', name: 'Mug', price: { amount: 1250, currency: 'USD' }, stock: 5 }),
  });
  assert.equal(created.status, 201);
  const productId = ((await created.json()) as { id: string }).id;
  for (let i = 0; i < 3; i++) assert.equal((await fetch(`${ts.url}/api/v2/products/${productId}`, { headers })).status, 200);
  return { productId, headers };
}

// svc's ids (usr_, prd_, ord_, evt_ … and a ULID), emails and query strings: none may be a label value.
const RAW_VALUES = /[a-z]+_[0-9A-Z]{26}|@|\?/;

test('svc serve counts requests by route template and status on its own metrics port, with no id in any label', async (t) => {
  const cpuBefore = process.cpuUsage(); // this process's CPU so far: the server runs in it
  const ts = await testServer(t, { env: { METRICS_PORT: '0' } });
  assert.ok(ts.metricsUrl, 'the metrics listener is up');
  assert.notEqual(new URL(ts.metricsUrl).port, new URL(ts.url).port, 'a port apart from the API');
  const { productId, headers } = await productReadThrice(ts);
  assert.equal((await fetch(`${ts.url}/api/v2/products/prd_00000000000000000000000000`, { headers })).status, 404);
  assert.equal((await fetch(`${ts.url}/no/such/${productId}?email=ada@example.com`)).status, 404);

  const { text, series } = await scrape(ts.metricsUrl);
  const route = '/api/v2/products/:id';
  assert.equal(sample(series, 'svc_http_requests_total', { method: 'GET', route, status_code: '200' }), 3);
  assert.equal(sample(series, 'svc_http_requests_total', { method: 'GET', route, status_code: '404' }), 1);
  assert.equal(sample(series, 'svc_http_requests_total', { method: 'POST', route: '/api/v2/products', status_code: '201' }), 1);
  assert.equal(sample(series, 'svc_http_requests_total', { method: 'GET', route: 'unmatched', status_code: '404' }), 1);
  // The latency histogram: cumulative buckets up to +Inf, whose count is the number of requests.
  const buckets = series.filter((s) => s.name === 'svc_http_request_duration_seconds_bucket' && s.labels.route === route && s.labels.status_code === '200');
  assert.ok(buckets.length >= 10, 'buckets from milliseconds to seconds');
  assert.deepEqual(
    buckets.map((b) => b.value),
    buckets.map((b) => b.value).toSorted((a, b) => a - b),
    'cumulative',
  );
  assert.equal(sample(series, 'svc_http_request_duration_seconds_bucket', { route, status_code: '200', le: '+Inf' }), 3);
  assert.equal(sample(series, 'svc_http_request_duration_seconds_count', { route, status_code: '200' }), 3);
  assert.match(text, /^# TYPE svc_http_request_errors_total counter$/m);

  // Bounded labels: no id, email or query string anywhere in the scrape's labels.
  for (const s of series) {
    for (const [k, v] of Object.entries(s.labels)) assert.doesNotMatch(v, RAW_VALUES, `${s.name} ${k}="${v}"`);
  }
  assert.ok(!text.includes(productId), 'the product id is nowhere in the scrape');

  // The database, the outbox and the process.
  assert.ok(sample(series, 'svc_db_query_duration_seconds_count', { operation: 'select' })! > 0, 'select statements timed');
  assert.ok(sample(series, 'svc_db_query_duration_seconds_count', { operation: 'insert' })! > 0, 'insert statements timed');
  // (The scrape's own outbox count may be waiting for a connection as the pool is read.)
  for (const state of ['active', 'idle']) assert.ok(sample(series, 'svc_db_pool_connections', { state })! >= 0, state);
  assert.ok(sample(series, 'svc_db_pool_waiting_requests')! >= 0);
  assert.equal(sample(series, 'svc_db_pool_max_connections'), ts.config.DATABASE_POOL_MAX);
  assert.equal(sample(series, 'svc_outbox_pending_events'), 0);
  // Events nothing relays (this server runs no event pipeline): the backlog at the next scrape.
  await insertOutbox(ts.databaseUrl!, 2);
  assert.equal(sample((await scrape(ts.metricsUrl)).series, 'svc_outbox_pending_events'), 2);
  // The process's CPU since it started, as Prometheus's clients count it, not since the metrics were set up.
  assert.ok(sample(series, 'process_cpu_user_seconds_total')! >= cpuBefore.user / 1e6, 'user CPU since the start');
  assert.ok(sample(series, 'process_cpu_seconds_total')! >= (cpuBefore.user + cpuBefore.system) / 1e6, 'CPU since the start');
  assert.ok(sample(series, 'nodejs_heap_size_used_bytes')! > 0);
});

test('the metrics port serves GET /metrics only, and the API port does not serve metrics', async (t) => {
  const ts = await testServer(t, { env: { METRICS_PORT: '0' } });
  const base = ts.metricsUrl!.replace(/\/metrics$/, '');

  const post = await fetch(`${base}/metrics`, { method: 'POST' });
  assert.equal(post.status, 405);
  assert.equal(post.headers.get('allow'), 'GET, HEAD');
  assert.match(await post.text(), /GET \/metrics/);
  for (const path of ['/', '/api/v2/products', '/health/live', '/metrics/x']) {
    const res = await fetch(`${base}${path}`);
    assert.equal(res.status, 404, path);
    assert.match(await res.text(), /serves GET \/metrics only/);
  }
  const head = await fetch(ts.metricsUrl!, { method: 'HEAD' });
  assert.equal(head.status, 200);

  const onApi = await fetch(`${ts.url}/metrics`);
  assert.equal(onApi.status, 404);
  assert.doesNotMatch(await onApi.text(), /svc_http_requests_total/);
});

test('METRICS_PORT=off serves no metrics; a chosen port in use stops svc serve naming METRICS_PORT', async (t) => {
  const off = await testServer(t, { env: { METRICS_PORT: 'off' } });
  assert.equal(off.metricsUrl, undefined);
  assert.equal(off.app.metrics.enabled, false);

  const taken = createServer();
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise((resolve) => taken.close(resolve)));
  const port = (taken.address() as { port: number }).port;
  const err = await rejection(testServer(t, { env: { METRICS_PORT: String(port) } }));
  assert.match(err.message, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port} for /metrics .*set METRICS_PORT to a free port`));
});

test("svc worker's health port serves its metrics: consumer outcomes, payments, emails, the relay and the queues", async (t) => {
  const s = await shop(t);
  // Without AMQP_URL: the in-process transport (event_deliveries).
  const worker = await s.worker({}, { AMQP_URL: '' });
  const orders = await s.place(3);
  await waitFor(async () => (await statusCounts(s.db)).completed === 3, 30_000, 'the orders completed');
  const url = `${worker.healthUrl}/metrics`;
  // Settled after their commit: the counts follow the orders' status.
  await waitFor(
    async () => (sample((await scrape(url)).series, 'svc_consumer_messages_total', { consumer: 'mail', outcome: 'processed' }) ?? 0) >= 3,
    30_000,
    'the confirmation emails counted',
  );
  const { text, series } = await scrape(url);
  assert.equal(sample(series, 'svc_consumer_messages_total', { consumer: 'payments', outcome: 'processed' }), 3);
  assert.equal(sample(series, 'svc_consumer_handle_duration_seconds_count', { consumer: 'payments', outcome: 'processed' }), 3);
  assert.equal(sample(series, 'svc_consumer_handle_duration_seconds_bucket', { consumer: 'payments', outcome: 'processed', le: '+Inf' }), 3);
  assert.equal(sample(series, 'svc_payments_total', { provider: 'stripe', outcome: 'succeeded' }), 3);
  assert.ok(sample(series, 'svc_emails_total', { mailer: 'sendgrid', outcome: 'sent' })! >= 3);
  assert.ok(sample(series, 'svc_relay_events_total', { outcome: 'published' })! >= 3);
  for (const consumer of ['payments', 'receipts', 'mail']) {
    assert.equal(sample(series, 'svc_queue_messages', { consumer, state: 'dead' }), 0, `${consumer}: nothing dead-lettered`);
  }
  assert.equal(sample(series, 'svc_outbox_pending_events'), 0);
  for (const s of series) {
    for (const [k, v] of Object.entries(s.labels)) assert.doesNotMatch(v, RAW_VALUES, `${s.name} ${k}="${v}"`);
  }
  for (const id of orders) assert.ok(!text.includes(id), 'no order id in the scrape');

  // The health endpoints answer beside it, and other paths and methods are refused.
  assert.equal((await fetch(`${worker.healthUrl}/health/live`)).status, 200);
  assert.equal((await fetch(url, { method: 'POST' })).status, 405);
  assert.equal((await fetch(`${worker.healthUrl}/metricz`)).status, 404);
});

test("on RabbitMQ the worker's scrape counts each consumer's waiting messages from the broker", async (t) => {
  const s = await shop(t);
  // Only the receipts consumer runs: the payments queue fills with the orders' events.
  const worker = await s.worker({ queues: ['receipts'] });
  await s.place(3);
  const url = `${worker.healthUrl}/metrics`;
  // The relay counts its batch once its transaction committed, a moment after the broker has the messages.
  await waitFor(
    async () => {
      const { series } = await scrape(url);
      return (
        sample(series, 'svc_queue_messages', { consumer: 'payments', state: 'ready' }) === 3 &&
        sample(series, 'svc_relay_events_total', { outcome: 'published' }) === 3
      );
    },
    30_000,
    'three events published, waiting in the payments queue',
  );
  const { series } = await scrape(url);
  for (const state of ['retrying', 'dead']) assert.equal(sample(series, 'svc_queue_messages', { consumer: 'payments', state }), 0, state);
  assert.equal(sample(series, 'svc_consumer_messages_total', { consumer: 'payments', outcome: 'processed' }), undefined, 'not consumed here');
});

test('the cache counts its lookups by cache, level and result (the hit ratio per level)', async (t) => {
  const ts = await testServer(t, { env: { METRICS_PORT: '0', REDIS_URL, REDIS_PREFIX: redisPrefix(t), RATE_LIMIT_API_KEY_PER_HOUR: '0' } });
  assert.ok(ts.metricsUrl);
  // First read: missed in L1 and L2, loaded; the next two: L1 hits (the version still current in Redis).
  await productReadThrice(ts);
  const { series } = await scrape(ts.metricsUrl);
  const lookups = (level: string, result: string) => sample(series, 'svc_cache_requests_total', { cache: 'products', level, result }) ?? 0;
  assert.equal(lookups('l1', 'miss'), 1);
  assert.equal(lookups('l2', 'miss'), 1);
  assert.equal(lookups('l1', 'hit'), 2);
  assert.equal(lookups('none', 'bypass'), 0);
  assert.equal(sample(series, 'svc_rate_limit_rejections_total', { limit: 'ip' }), undefined, 'nothing refused yet');
});

test('a rate limit counts the requests it refuses, by limit', async (t) => {
  const ts = await testServer(t, { env: { METRICS_PORT: '0', RATE_LIMIT_IP_PER_MINUTE: '5' } });
  assert.ok(ts.metricsUrl);
  const statuses: number[] = [];
  for (let i = 0; i < 8; i++) statuses.push((await fetch(`${ts.url}/api/v1/products`)).status);
  const refused = statuses.filter((s) => s === 429).length;
  assert.equal(refused, 3, `5 counted, 3 refused: ${statuses.join(' ')}`);
  const { series } = await scrape(ts.metricsUrl);
  assert.equal(sample(series, 'svc_rate_limit_rejections_total', { limit: 'ip' }), refused);
});
