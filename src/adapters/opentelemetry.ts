import { context, trace, SpanKind as OtelSpanKind, SpanStatusCode, type Context, type Span, type Tracer } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { parseTraceParent } from '@opentelemetry/core';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  AlwaysOffSampler,
  AlwaysOnSampler,
  BatchSpanProcessor,
  ConsoleSpanExporter,
  ParentBasedSampler,
  SimpleSpanProcessor,
  TraceIdRatioBasedSampler,
  TracerProvider,
  type Sampler,
  type SpanExporter,
  type SpanProcessor,
} from '@opentelemetry/sdk-trace';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { maskUrl, type Config } from '../config.js';
import type { Logger } from '../logger.js';
import { NoTracing, type OpenSpan, type SpanAttributes, type SpanKind, type SpanOptions, type Tracing } from '../domain/shared/tracing.js';

const KINDS: Record<SpanKind, OtelSpanKind> = {
  server: OtelSpanKind.SERVER,
  client: OtelSpanKind.CLIENT,
  producer: OtelSpanKind.PRODUCER,
  consumer: OtelSpanKind.CONSUMER,
  internal: OtelSpanKind.INTERNAL,
};

/** How tests (and a caller that knows better than the environment) set tracing up: their exporter, exported at once. */
export interface TracingOverride {
  exporter: SpanExporter;
  serviceName?: string;
}

/**
 * svc's tracing from its configuration: the OpenTelemetry SDK when OTEL_TRACES_EXPORTER is otlp or
 * console, or OTEL_EXPORTER_OTLP_ENDPOINT is set (OTLP over HTTP, protobuf), sampling as
 * OTEL_TRACES_SAMPLER says; NoTracing otherwise (and with OTEL_TRACES_EXPORTER=none or
 * OTEL_SDK_DISABLED=true), which starts nothing.
 */
export function createTracing(config: Config, logger: Logger, override?: TracingOverride): Tracing {
  if (override)
    return new OpenTelemetryTracing(
      new SimpleSpanProcessor({ exporter: override.exporter }),
      override.serviceName ?? config.OTEL_SERVICE_NAME,
      logger,
      sampler(config),
    );
  const exporter = config.OTEL_SDK_DISABLED ? 'none' : (config.OTEL_TRACES_EXPORTER ?? (config.OTEL_EXPORTER_OTLP_ENDPOINT ? 'otlp' : 'none'));
  if (exporter === 'none') return new NoTracing();
  const spanExporter =
    exporter === 'console'
      ? new ConsoleSpanExporter()
      : // Without the endpoint here, the exporter reads OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or its default (localhost:4318).
        new OTLPTraceExporter(config.OTEL_EXPORTER_OTLP_ENDPOINT ? { url: `${config.OTEL_EXPORTER_OTLP_ENDPOINT}/v1/traces` } : {});
  const serviceName = config.OTEL_SERVICE_NAME;
  logger.info(
    {
      exporter,
      serviceName,
      sampler: config.OTEL_TRACES_SAMPLER.endsWith('traceidratio')
        ? `${config.OTEL_TRACES_SAMPLER} ${config.OTEL_TRACES_SAMPLER_ARG}`
        : config.OTEL_TRACES_SAMPLER,
      endpoint: exporter === 'otlp' ? (config.OTEL_EXPORTER_OTLP_ENDPOINT ? maskUrl(config.OTEL_EXPORTER_OTLP_ENDPOINT) : '(the exporter default)') : undefined,
    },
    'tracing on',
  );
  return new OpenTelemetryTracing(new BatchSpanProcessor({ exporter: spanExporter }), serviceName, logger, sampler(config));
}

/** OTEL_TRACES_SAMPLER's sampler, as the OpenTelemetry specification names them. */
function sampler(config: Config): Sampler {
  const ratio = () => new TraceIdRatioBasedSampler(config.OTEL_TRACES_SAMPLER_ARG);
  switch (config.OTEL_TRACES_SAMPLER) {
    case 'always_on':
      return new AlwaysOnSampler();
    case 'always_off':
      return new AlwaysOffSampler();
    case 'traceidratio':
      return ratio();
    case 'parentbased_always_off':
      return new ParentBasedSampler({ root: new AlwaysOffSampler() });
    case 'parentbased_traceidratio':
      return new ParentBasedSampler({ root: ratio() });
    case 'parentbased_always_on':
      return new ParentBasedSampler({ root: new AlwaysOnSampler() });
  }
}

/** How long closing waits for the last spans to be exported. */
const CLOSE_TIMEOUT_MS = 2_000;

let contextManagerSet = false;

/** The OpenTelemetry SDK: one TracerProvider per App (never the global one), spans active through AsyncLocalStorage. */
class OpenTelemetryTracing implements Tracing {
  readonly enabled = true;
  private readonly provider: TracerProvider;
  private readonly tracer: Tracer;

  constructor(
    processor: SpanProcessor,
    serviceName: string,
    private readonly logger: Logger,
    sampler: Sampler,
  ) {
    // The context manager is the process's (OpenTelemetry's API has one): set once, by the first App that traces.
    if (!contextManagerSet) {
      context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
      contextManagerSet = true;
    }
    this.provider = new TracerProvider({ resource: resourceFromAttributes({ 'service.name': serviceName }), spanProcessors: [processor], sampler });
    this.tracer = this.provider.getTracer('svc');
  }

  start(name: string, options: SpanOptions): OpenSpan {
    const parent = parentContext(options.parent);
    const span = this.tracer.startSpan(name, { kind: KINDS[options.kind], attributes: clean(options.attributes) }, parent);
    return openSpan(span, trace.setSpan(parent, span));
  }

  async inSpan<T>(name: string, options: SpanOptions, fn: () => Promise<T>): Promise<T> {
    const span = this.start(name, options);
    try {
      const result = await span.run(fn);
      span.end();
      return result;
    } catch (err) {
      span.end(err);
      throw err;
    }
  }

  activeTraceparent(): string | undefined {
    const span = trace.getSpan(context.active());
    return span ? traceparentOf(span) : undefined;
  }

  readonly queryAnswered = (text: string, seconds: number): void => {
    const parent = context.active();
    if (!trace.getSpan(parent)) return;
    const end = Date.now();
    const operation = /^\s*(\w+)/.exec(text)?.[1]?.toUpperCase() ?? 'QUERY';
    // The statement's text has $n placeholders, never its values.
    const attributes = {
      'db.system.name': 'postgresql',
      'db.operation.name': operation,
      'db.query.text': text.length > 2000 ? `${text.slice(0, 2000)}…` : text,
    };
    this.tracer.startSpan(operation, { kind: OtelSpanKind.CLIENT, startTime: end - seconds * 1000, attributes }, parent).end(end);
  };

  /**
   * Exports the spans still buffered, waiting at most CLOSE_TIMEOUT_MS: an unreachable collector
   * costs a warning, never a failed or slow shutdown.
   */
  async close(): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), CLOSE_TIMEOUT_MS);
      timer.unref();
    });
    try {
      const outcome = await Promise.race([this.provider.shutdown(), timeout]);
      if (outcome === 'timeout') this.logger.warn(`tracing: the last spans were not exported within ${CLOSE_TIMEOUT_MS} ms (is the collector reachable?)`);
    } catch (err) {
      this.logger.warn({ err }, 'tracing: the last spans could not be exported (is the collector reachable?)');
    } finally {
      clearTimeout(timer);
    }
  }
}

/** The context a new span starts in: the remote span of a valid traceparent, else the active one. */
function parentContext(traceparent: string | undefined): Context {
  const active = context.active();
  if (!traceparent) return active;
  const remote = parseTraceParent(traceparent);
  return remote ? trace.setSpanContext(active, remote) : active;
}

function openSpan(span: Span, ctx: Context): OpenSpan {
  let ended = false;
  return {
    traceId: span.spanContext().traceId,
    get traceparent() {
      return traceparentOf(span);
    },
    run: (fn) => context.with(ctx, fn),
    setAttributes: (attributes) => span.setAttributes(clean(attributes) ?? {}),
    end(error) {
      if (ended) return;
      ended = true;
      if (error !== undefined) {
        // The error's type only: a message may hold an email or a value a collector must not see.
        span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.name : 'error' });
      }
      span.end();
    },
  };
}

function traceparentOf(span: Span): string {
  const { traceId, spanId, traceFlags } = span.spanContext();
  // Bit 0 of the flags is W3C's sampled flag.
  return `00-${traceId}-${spanId}-${(traceFlags & 1) === 1 ? '01' : '00'}`;
}

function clean(attributes: SpanAttributes | undefined): Record<string, string | number | boolean> | undefined {
  if (!attributes) return undefined;
  const out: Record<string, string | number | boolean> = {};
  for (const [key, value] of Object.entries(attributes)) if (value !== undefined) out[key] = value;
  return out;
}
