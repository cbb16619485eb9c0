/**
 * The values of one series' labels. Label values come from small, fixed sets (route templates,
 * outcomes, consumer names, provider names): never ids, emails, raw URLs or error messages, each of
 * which would make a new series per request and exhaust Prometheus.
 */
export type Labels<L extends string> = Record<L, string>;

export interface MetricSpec<L extends string> {
  /** snake_case with the unit last (`_seconds`, `_total` for counters); svc's own start with `svc_`. */
  name: string;
  /** One line: what it counts, for the HELP line of the scrape. */
  help: string;
  labelNames: readonly L[];
}

export interface CounterMetric<L extends string> {
  inc(labels: Labels<L>, value?: number): void;
}

export interface HistogramMetric<L extends string> {
  /** One observation (seconds for durations). */
  observe(labels: Labels<L>, value: number): void;
}

/** One series of a gauge read at scrape time. */
export interface GaugeValue<L extends string> {
  labels: Labels<L>;
  value: number;
}

/**
 * Where svc counts what an on-call engineer reads (the Prometheus adapter in
 * src/adapters/prometheus-metrics.ts; `app.metrics`, one registry per App). A feature registers its
 * instruments once, where it is built, and keeps them:
 *
 *     const rejected = app.metrics.counter({ name: 'svc_rate_limit_rejections_total', help: 'Requests refused by a rate limit', labelNames: ['limit'] });
 *     rejected.inc({ limit: 'ip' });
 *
 * Registering a name again returns the instrument already registered under it (same kind).
 */
export interface Metrics {
  counter<L extends string = never>(spec: MetricSpec<L>): CounterMetric<L>;
  /** Buckets default to durations from 1 ms to 10 s. */
  histogram<L extends string = never>(spec: MetricSpec<L> & { buckets?: readonly number[] }): HistogramMetric<L>;
  /**
   * A gauge computed when Prometheus scrapes: `collect` gives the current series (those it leaves
   * out disappear). It runs on every scrape, so it must be cheap; it is given up on after
   * `timeoutMs` (default 2 s) and when it throws, the gauge is left out of that scrape.
   */
  gauge<L extends string = never>(spec: MetricSpec<L> & { collect: () => Promise<GaugeValue<L>[]> | GaugeValue<L>[]; timeoutMs?: number }): void;
  /**
   * A counter whose totals its source keeps (counts since the process started, read when Prometheus
   * scrapes: `collect` must be cheap and synchronous), for a component that counts for itself
   * (the cache's hits and misses). Totals only ever grow; the name ends in `_total`.
   */
  counterOf<L extends string = never>(spec: MetricSpec<L> & { collect: () => GaugeValue<L>[] }): void;
}

/** The messages waiting in one consumer's queues, by state, as an event transport counts them (svc_queue_messages). */
export interface QueueDepth {
  consumer: string;
  /** ready: due for the consumer (RabbitMQ: in its work queue, not yet handed out); retrying: waiting out a retry delay; dead: parked for `svc recover`. */
  state: 'ready' | 'retrying' | 'dead';
  messages: number;
}
