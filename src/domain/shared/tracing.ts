/** What a span is, in OpenTelemetry's terms: the side of a call it stands for. */
export type SpanKind = 'server' | 'client' | 'producer' | 'consumer' | 'internal';

export type SpanAttributes = Record<string, string | number | boolean | undefined>;

export interface SpanOptions {
  kind: SpanKind;
  /** A W3C traceparent to continue (a request's header, a message's): by default the active span is the parent. */
  parent?: string;
  attributes?: SpanAttributes;
}

/** One started span: ended exactly once, by `end`. */
export interface OpenSpan {
  /** Its trace id (32 hex digits). */
  readonly traceId: string;
  /** Its W3C traceparent, for a message or a row that carries the trace on. */
  readonly traceparent: string;
  /** Runs `fn` with this span active: the spans `fn` starts (and its log lines) belong to it. */
  run<T>(fn: () => T): T;
  setAttributes(attributes: SpanAttributes): void;
  /** Ends it: with an error status when `error` is given. */
  end(error?: unknown): void;
}

/**
 * Spans around svc's own seams (requests, statements, publishes, deliveries, provider calls). The
 * OpenTelemetry SDK with OTEL_TRACES_EXPORTER or OTEL_EXPORTER_OTLP_ENDPOINT set; otherwise `NoTracing`,
 * which makes nothing (callers check `enabled` before building names or attributes).
 */
export interface Tracing {
  readonly enabled: boolean;
  start(name: string, options: SpanOptions): OpenSpan;
  /** Runs `fn` in a new span, ended when it settles (with the error status when it throws). */
  inSpan<T>(name: string, options: SpanOptions, fn: () => Promise<T>): Promise<T>;
  /** The active span's traceparent, when one is active. */
  activeTraceparent(): string | undefined;
  /**
   * A database statement that took `seconds` and has just been answered: a client span of the active
   * span (none outside one: the relay's and consumers' polls make no traces of their own).
   */
  queryAnswered(text: string, seconds: number): void;
  /** Exports what is still buffered and stops. */
  close(): Promise<void>;
}

/** Tracing off: no span is made, `fn` runs as it is. */
export class NoTracing implements Tracing {
  readonly enabled = false;
  start(): OpenSpan {
    throw new Error('tracing is off: check `enabled` before starting a span');
  }
  inSpan<T>(_name: string, _options: SpanOptions, fn: () => Promise<T>): Promise<T> {
    return fn();
  }
  activeTraceparent(): undefined {
    return undefined;
  }
  queryAnswered(): void {}
  close(): Promise<void> {
    return Promise.resolve();
  }
}
