import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry, type Metric } from 'prom-client';
import type { Logger } from 'pino';
import type { CounterMetric, GaugeValue, HistogramMetric, Labels, MetricSpec, Metrics } from '../domain/shared/metrics.js';

/** Durations from 1 ms to 10 s: an API request, a message handled, a provider call. */
const DURATION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** Database statements: from 0.25 ms (a prepared primary-key read) to the 5 s statement timeout. */
const QUERY_BUCKETS = [0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

// The methods a route can have; anything else (Node parses ~35) is counted as OTHER.
const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

/** What the relay did in one pass (OutboxRelay's RelayPass). */
interface RelayCounts {
  published: number;
  failed: number;
}

/** The process's own figures (CPU, memory, event loop lag, GC, handles), collected once per process. */
let processRegistry: Registry | undefined;

// Module-level on purpose: these figures belong to the process, not to an App. collectDefaultMetrics
// installs a GC observer and an event-loop delay monitor each time it is called; several Apps in one
// process (the tests) share one set instead of each adding its own.
function processMetrics(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry();
    // prom-client counts CPU from this call on; Prometheus's process_cpu_*_seconds_total count from
    // the process's start (as every other client library's do), so the CPU spent before is added.
    const before = process.cpuUsage();
    collectDefaultMetrics({ register: processRegistry });
    const add = (name: string, micros: number) => (processRegistry!.getSingleMetric(name) as Counter).inc(micros / 1e6);
    add('process_cpu_user_seconds_total', before.user);
    add('process_cpu_system_seconds_total', before.system);
    add('process_cpu_seconds_total', before.user + before.system);
  }
  return processRegistry;
}

/**
 * svc's metrics in Prometheus's model (prom-client), on a registry of their own per App (never
 * prom-client's global one, so that Apps in one process do not share or clash), plus the process
 * figures. `scrape()` renders the text format that /metrics answers.
 */
export class PrometheusMetrics implements Metrics {
  readonly registry = new Registry();
  /**
   * Whether anything reads these metrics (METRICS_PORT is not off, in svc serve or svc worker): the
   * per-request and per-statement measurements are only taken then. Counting the rest costs nothing.
   */
  readonly enabled: boolean;
  private readonly logger: Logger;
  private readonly requestDuration: HotHistogram;
  private readonly requestErrors: Counter<'method' | 'route'>;
  private readonly queryDuration: HotHistogram;
  private readonly consumerMessages: Counter<'consumer' | 'outcome'>;
  private readonly consumerDuration: Histogram<'consumer' | 'outcome'>;
  private readonly payments: Counter<'provider' | 'outcome'>;
  private readonly emails: Counter<'mailer' | 'outcome'>;
  private readonly relayEvents: Counter<'outcome'>;

  // Every instrument is created with `registers: [this.registry]`: prom-client's default is its global registry.
  constructor(options: { logger: Logger; enabled: boolean }) {
    this.logger = options.logger;
    this.enabled = options.enabled;
    this.requestDuration = new HotHistogram(this.registry, {
      name: 'svc_http_request_duration_seconds',
      help: 'Time from a request received to its response sent, by method, route template and status',
      labelNames: ['method', 'route', 'status_code'],
      buckets: DURATION_BUCKETS,
      // The requests answered are this histogram's counts, read when scraped.
      countedAs: { name: 'svc_http_requests_total', help: 'HTTP requests answered, by method, route template and status' },
    });
    this.requestErrors = new Counter({
      registers: [this.registry],
      name: 'svc_http_request_errors_total',
      help: 'HTTP requests answered with a 5xx status, by method and route template',
      labelNames: ['method', 'route'],
    });
    this.queryDuration = new HotHistogram(this.registry, {
      name: 'svc_db_query_duration_seconds',
      help: 'PostgreSQL statements from sent to answered, by kind (select, insert, update, delete, transaction, other)',
      labelNames: ['operation'],
      buckets: QUERY_BUCKETS,
    });
    this.consumerMessages = new Counter({
      registers: [this.registry],
      name: 'svc_consumer_messages_total',
      help: 'Event deliveries settled by each consumer, by outcome (processed, duplicate, retry, dead-letter, unsettled)',
      labelNames: ['consumer', 'outcome'],
    });
    this.consumerDuration = new Histogram({
      registers: [this.registry],
      name: 'svc_consumer_handle_duration_seconds',
      help: 'Time from a delivery received to it settled, by consumer and outcome',
      labelNames: ['consumer', 'outcome'],
      buckets: DURATION_BUCKETS,
    });
    this.payments = new Counter({
      registers: [this.registry],
      name: 'svc_payments_total',
      help: 'Charges asked of the payment provider, by provider and outcome (succeeded, declined, unavailable, error)',
      labelNames: ['provider', 'outcome'],
    });
    this.emails = new Counter({
      registers: [this.registry],
      name: 'svc_emails_total',
      help: 'Emails handed to the mailer, by mailer and outcome (sent, failed)',
      labelNames: ['mailer', 'outcome'],
    });
    this.relayEvents = new Counter({
      registers: [this.registry],
      name: 'svc_relay_events_total',
      help: 'Outbox events the relay published, or failed to publish (they stay pending), by outcome',
      labelNames: ['outcome'],
    });
  }

  /** The Prometheus text exposition of this App's metrics and the process's. */
  async scrape(): Promise<{ contentType: string; body: string }> {
    const [process, own] = await Promise.all([processMetrics().metrics(), this.registry.metrics()]);
    return { contentType: this.registry.contentType, body: `${process}\n${own}` };
  }

  /** One HTTP request answered. `route` is the route's template (never the URL), or 'unmatched'. */
  requestAnswered(method: string, route: string, status: number, seconds: number): void {
    const known = METHODS.has(method) ? method : 'OTHER';
    this.requestDuration.observe(seconds, known, route, status);
    if (status >= 500) this.requestErrors.inc({ method: known, route });
  }

  /** One database statement answered (or failed) after `seconds`; `text` is its SQL (only its first word is read). */
  readonly queryAnswered = (text: string, seconds: number): void => {
    this.queryDuration.observe(seconds, operationOf(text));
  };

  /** One delivery settled by a consumer. */
  consumerSettled(consumer: string, outcome: string, seconds: number): void {
    this.consumerMessages.inc({ consumer, outcome });
    this.consumerDuration.observe({ consumer, outcome }, seconds);
  }

  /** One charge's outcome at the payment provider. */
  paymentCharged(provider: string, outcome: 'succeeded' | 'declined' | 'unavailable' | 'error'): void {
    this.payments.inc({ provider, outcome });
  }

  /** One email handed to the mailer. */
  emailSent(mailer: string, outcome: 'sent' | 'failed'): void {
    this.emails.inc({ mailer, outcome });
  }

  /** One pass of the outbox relay. */
  relayPassed(pass: RelayCounts): void {
    if (pass.published) this.relayEvents.inc({ outcome: 'published' }, pass.published);
    if (pass.failed) this.relayEvents.inc({ outcome: 'failed' }, pass.failed);
  }

  counter<L extends string = never>(spec: MetricSpec<L>): CounterMetric<L> {
    const existing = this.existing(spec.name, 'counter');
    if (existing) return existing as unknown as CounterMetric<L>;
    const counter = new Counter<L>({ registers: [this.registry], name: spec.name, help: spec.help, labelNames: spec.labelNames });
    return { inc: (labels, value) => counter.inc(labels, value ?? 1) };
  }

  histogram<L extends string = never>(spec: MetricSpec<L> & { buckets?: readonly number[] }): HistogramMetric<L> {
    const existing = this.existing(spec.name, 'histogram');
    if (existing) return existing as unknown as HistogramMetric<L>;
    const histogram = new Histogram<L>({
      registers: [this.registry],
      name: spec.name,
      help: spec.help,
      labelNames: spec.labelNames,
      buckets: [...(spec.buckets ?? DURATION_BUCKETS)],
    });
    return { observe: (labels, value) => histogram.observe(labels, value) };
  }

  gauge<L extends string = never>(spec: MetricSpec<L> & { collect: () => Promise<GaugeValue<L>[]> | GaugeValue<L>[]; timeoutMs?: number }): void {
    if (this.existing(spec.name, 'gauge')) throw new Error(`the gauge ${spec.name} is already registered`);
    const logger = this.logger;
    const timeoutMs = spec.timeoutMs ?? 2_000;

    new Gauge<L>({
      registers: [this.registry],
      name: spec.name,
      help: spec.help,
      labelNames: spec.labelNames,
      // On each scrape: the series of now, or none when the source fails or is too slow (a scrape
      // never hangs on a slow database or broker, and never fails for one gauge).
      async collect() {
        this.reset();
        try {
          for (const { labels, value } of await withTimeout(Promise.resolve(spec.collect()), timeoutMs)) this.set(labels, value);
        } catch (err) {
          logger.warn({ err, metric: spec.name }, `metrics: could not read ${spec.name}; left out of this scrape`);
        }
      },
    });
  }

  counterOf<L extends string = never>(spec: MetricSpec<L> & { collect: () => GaugeValue<L>[] }): void {
    if (this.registry.getSingleMetric(spec.name)) throw new Error(`the counter ${spec.name} is already registered`);
    new Counter<L>({
      registers: [this.registry],
      name: spec.name,
      help: spec.help,
      labelNames: spec.labelNames,
      // On each scrape: the source's totals (a counter that is set, not incremented, by its source).
      collect() {
        this.reset();
        for (const { labels, value } of spec.collect()) if (value > 0) this.inc(labels, value);
      },
    });
  }

  // The instrument registered under `name`, if any: of the same kind, or an error (a programming mistake).
  private existing(name: string, kind: 'counter' | 'histogram' | 'gauge'): unknown {
    const metric = this.registry.getSingleMetric(name);
    if (!metric) return undefined;
    if (!(kind === 'counter' ? metric instanceof Counter : kind === 'histogram' ? metric instanceof Histogram : metric instanceof Gauge)) {
      throw new Error(`the metric ${name} is already registered as another kind`);
    }
    const registered = metric as Counter<string> & Histogram<string>;
    return kind === 'counter'
      ? { inc: (labels: Labels<string>, value?: number) => registered.inc(labels, value ?? 1) }
      : { observe: (labels: Labels<string>, value: number) => registered.observe(labels, value) };
  }
}

/** One series of a HotHistogram: its labels and its counts per bucket (not cumulative; the last is +Inf). */
interface HotSeries {
  labels: Record<string, string>;
  buckets: number[];
  sum: number;
  count: number;
}

type HotKey = string | number;

/**
 * A histogram for the measurements taken on every request and every statement. prom-client's
 * Histogram validates, sorts and hashes its label object on each observe (its labelled children
 * too): 1 to 2 µs each, three to five times a request. This one finds its series through nested
 * Maps of the label values as given (a status as a number: no string is built per request), and
 * leaves the cumulative buckets and the label objects to the scrape. It is registered on the
 * registry like prom-client's own metrics (the registry asks `get()` for the values when
 * scraped), so the text exposition is the same: names, labels, buckets, `_sum` and `_count`.
 */
class HotHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  readonly name: string;
  readonly help: string;
  private readonly labelNames: readonly string[];
  private readonly bounds: readonly number[];
  private readonly series = new Map<HotKey, unknown>();
  private readonly all: HotSeries[] = [];

  /** Registered on `registry`, with a counter of its observations per series when `countedAs` names one. */
  constructor(
    registry: Registry,
    spec: { name: string; help: string; labelNames: readonly string[]; buckets: readonly number[]; countedAs?: { name: string; help: string } },
  ) {
    this.name = spec.name;
    this.help = spec.help;
    this.labelNames = spec.labelNames;
    this.bounds = spec.buckets;
    // prom-client's Metric type lists its own classes; the registry only calls get() and reset().
    registry.registerMetric(this as unknown as Metric);
    if (spec.countedAs) registry.registerMetric(this.counter(spec.countedAs.name, spec.countedAs.help) as unknown as Metric);
  }

  /** One observation for the series of these label values (in labelNames' order). */
  observe(value: number, ...values: HotKey[]): void {
    let level = this.series;
    const last = values.length - 1;
    for (let i = 0; i < last; i++) {
      let next = level.get(values[i]!) as Map<HotKey, unknown> | undefined;
      if (!next) level.set(values[i]!, (next = new Map()));
      level = next;
    }
    let series = level.get(values[last]!) as HotSeries | undefined;
    if (!series) level.set(values[last]!, (series = this.add(values)));
    let b = 0;
    while (b < this.bounds.length && value > this.bounds[b]!) b++;
    series.buckets[b]!++;
    series.sum += value;
    series.count++;
  }

  // A counter of the observations per series (the `_total` of what this histogram times).
  private counter(name: string, help: string): { name: string; help: string; type: 'counter'; aggregator: 'sum'; get(): Promise<unknown>; reset(): void } {
    return {
      name,
      help,
      type: 'counter',
      aggregator: 'sum',
      get: () => Promise.resolve({ name, help, type: 'counter', aggregator: 'sum', values: this.all.map((s) => ({ labels: s.labels, value: s.count })) }),
      reset: () => this.reset(),
    };
  }

  /** prom-client's Metric: the values of a scrape, as its Histogram renders them. */
  get(): Promise<{
    name: string;
    help: string;
    type: string;
    aggregator: string;
    values: { labels: Record<string, string | number>; value: number; metricName: string }[];
  }> {
    const values = [];
    for (const s of this.all) {
      let acc = 0;
      for (let b = 0; b < this.bounds.length; b++) {
        acc += s.buckets[b]!;
        values.push({ labels: { ...s.labels, le: this.bounds[b]! }, value: acc, metricName: `${this.name}_bucket` });
      }
      values.push({ labels: { ...s.labels, le: '+Inf' }, value: s.count, metricName: `${this.name}_bucket` });
      values.push({ labels: s.labels, value: s.sum, metricName: `${this.name}_sum` });
      values.push({ labels: s.labels, value: s.count, metricName: `${this.name}_count` });
    }
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values });
  }

  reset(): void {
    this.series.clear();
    this.all.length = 0;
  }

  private add(values: HotKey[]): HotSeries {
    const labels: Record<string, string> = {};
    this.labelNames.forEach((name, i) => (labels[name] = String(values[i])));
    const series = { labels, buckets: new Array<number>(this.bounds.length + 1).fill(0), sum: 0, count: 0 };
    this.all.push(series);
    return series;
  }
}

/** A statement's kind from its first word, from a fixed set (the label stays bounded). */
export function operationOf(text: string): string {
  const word = /^\s*([A-Za-z]+)/.exec(text)?.[1]?.toLowerCase();
  switch (word) {
    case 'select':
    case 'insert':
    case 'update':
    case 'delete':
      return word;
    case 'begin':
    case 'commit':
    case 'rollback':
    case 'savepoint':
    case 'release':
    case 'start':
      return 'transaction';
    default:
      return 'other';
  }
}

function withTimeout<T>(work: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    work,
    new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}
