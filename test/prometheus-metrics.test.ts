import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Counter, Histogram, Registry } from 'prom-client';
import { PrometheusMetrics } from '../src/adapters/prometheus-metrics.js';
import { createLogger } from '../src/logger.js';

// The request and statement histograms keep their own series (see HotHistogram) instead of
// prom-client's Histogram: the scrape must read exactly as prom-client's would for the same
// observations, or every dashboard and alert on them would change.

/** The sample lines of these metrics, each with its labels sorted (the order of labels and series means nothing to Prometheus). */
function samples(text: string, names: RegExp): string[] {
  return text
    .split('\n')
    .filter((line) => names.test(line))
    .map((line) => {
      const m = /^([a-z_]+)(?:\{(.*)\})? (\S+)$/.exec(line);
      assert.ok(m, line);
      const labels = (m[2] ?? '')
        .split(/,(?=[a-z_]+=")/)
        .filter(Boolean)
        .toSorted();
      return `${m[1]}{${labels.join(',')}} ${m[3]}`;
    })
    .toSorted();
}

test("the request and statement metrics scrape as prom-client's Counter and Histogram would: names, help, labels, buckets, sums and counts", async () => {
  const metrics = new PrometheusMetrics({ logger: createLogger('silent'), enabled: true });
  const reference = new Registry();
  const http = ['method', 'route', 'status_code'] as const;
  const requests = new Counter({
    registers: [reference],
    name: 'svc_http_requests_total',
    help: 'HTTP requests answered, by method, route template and status',
    labelNames: http,
  });
  const durations = new Histogram({
    registers: [reference],
    name: 'svc_http_request_duration_seconds',
    help: 'Time from a request received to its response sent, by method, route template and status',
    labelNames: http,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  });
  const queries = new Histogram({
    registers: [reference],
    name: 'svc_db_query_duration_seconds',
    help: 'PostgreSQL statements from sent to answered, by kind (select, insert, update, delete, transaction, other)',
    labelNames: ['operation'],
    buckets: [0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
  });

  // On a bound (counted in that bucket), between bounds, beyond the last (only +Inf), several series.
  const answered: [string, string, number, number][] = [
    ['GET', '/api/v2/products/:id', 200, 0.005],
    ['GET', '/api/v2/products/:id', 200, 0.0051],
    ['GET', '/api/v2/products/:id', 404, 0.0004],
    ['POST', '/api/v2/orders', 201, 12],
    ['GET', '/api/v2/products/:id', 200, 0.3],
    ['BREW', 'unmatched', 404, 0.002],
  ];
  for (const [method, route, status, seconds] of answered) {
    metrics.requestAnswered(method, route, status, seconds);
    const labels = { method: method === 'BREW' ? 'OTHER' : method, route, status_code: String(status) };
    requests.inc(labels);
    durations.observe(labels, seconds);
  }
  const statements: [string, number][] = [
    ['select 1', 0.00025],
    ['  SELECT * from products', 0.0007],
    ['insert into orders', 0.02],
    ['begin', 0.0001],
    ['vacuum', 7],
  ];
  for (const [text, seconds] of statements) {
    metrics.queryAnswered(text, seconds);
    queries.observe({ operation: { s: 'select', i: 'insert', b: 'transaction', v: 'other' }[text.trim()[0]!.toLowerCase()]! }, seconds);
  }

  const names = /^(svc_http_requests_total|svc_http_request_duration_seconds|svc_db_query_duration_seconds)/;
  const expected = await reference.metrics();
  const { body } = await metrics.scrape();
  assert.deepEqual(samples(body, names), samples(expected, names));
  assert.ok(samples(body, names).length > 50, 'the series are there');
  for (const name of ['svc_http_requests_total', 'svc_http_request_duration_seconds', 'svc_db_query_duration_seconds']) {
    for (const comment of ['HELP', 'TYPE']) {
      const line = new RegExp(`^# ${comment} ${name} .*$`, 'm');
      assert.equal(line.exec(body)?.[0], line.exec(expected)?.[0], `${comment} ${name}`);
    }
  }
});
