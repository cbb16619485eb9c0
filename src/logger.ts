import { context, trace } from '@opentelemetry/api';
import { pino, type DestinationStream, type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

const EMAIL = /([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9-]+)[A-Za-z0-9.-]*\.([A-Za-z]{2,})/g;

/** Masks an email for logs: `ada@example.com` becomes `a***@e***.com`. */
export function maskEmail(value: string): string {
  // Most strings in a log line hold no email: skip the pattern for them (it runs on every string).
  if (!value.includes('@')) return value;
  return value.replace(EMAIL, (_m, first: string, domain: string, tld: string) => `${first}***@${domain[0]}***.${tld}`);
}

// A password hash in PHC form. It reaches a log inside text rather than under a key, e.g. in
// PostgreSQL's "Failing row contains (...)" detail of a check violation on users.
const PASSWORD_HASH = /\$argon2(?:id|i|d)\$(?:v=\d+\$)?[^$\s]*\$[A-Za-z0-9+/=]*(?:\$[A-Za-z0-9+/=]*)?/g;

/** A string made safe for logs: emails masked, password hashes redacted (both checked cheaply first). */
function maskText(value: string): string {
  const masked = maskEmail(value);
  return masked.includes('$argon2') ? masked.replace(PASSWORD_HASH, '[redacted]') : masked;
}

// Keys whose values are secrets wherever they appear in a log line, at any depth (compared in
// lower case): credentials, tokens and the headers that carry them, and SQL parameters (a database
// error from PGlite carries the statement's values, a password hash among them).
const SECRET_KEYS = new Set(['password', 'passwordhash', 'token', 'accesstoken', 'refreshtoken', 'secret', 'authorization', 'cookie', 'set-cookie', 'params']);
const REDACTED = '[redacted]';
// Objects nested deeper than this are written as TRUNCATED, never as they are: a subtree the walk
// has not looked at could hold a password or an email. Eight levels keep an error's cause chain
// and a request's headers readable.
const MAX_DEPTH = 8;
const TRUNCATED = '[truncated]';
const CIRCULAR = '[circular]';

/**
 * The log-safe copy of a value: secrets replaced by key, emails masked in every string, objects
 * past MAX_DEPTH truncated and cycles cut. One walk does all of it (it runs on every log line).
 * `parents` holds the objects on the path from the root (at most MAX_DEPTH), to recognise a cycle.
 */
function maskDeep(value: unknown, depth = 0, parents: object[] = []): unknown {
  if (typeof value === 'string') return maskText(value);
  // A Date has no keys of its own: copied, it would log as {} instead of its time.
  if (value === null || typeof value !== 'object' || value instanceof Date) return value;
  if (depth > MAX_DEPTH) return TRUNCATED;
  if (parents.includes(value)) return CIRCULAR;
  parents.push(value);
  let out: unknown;
  if (Array.isArray(value)) out = value.map((v) => maskDeep(v, depth + 1, parents));
  else if (value instanceof Error) out = maskError(value, depth, parents);
  else out = maskFields(value, {}, depth, parents);
  parents.pop();
  return out;
}

/** Copies an object's own enumerable fields into `out`, each secret redacted and the rest masked. */
function maskFields(value: object, out: Record<string, unknown>, depth: number, parents: object[]): Record<string, unknown> {
  for (const key in value) {
    if (!Object.hasOwn(value, key) || key in out) continue;
    const v = (value as Record<string, unknown>)[key];
    out[key] = SECRET_KEYS.has(key.toLowerCase()) && v !== undefined && v !== null ? REDACTED : maskDeep(v, depth + 1, parents);
  }
  return out;
}

/**
 * An error as a log-safe object: its type, message, stack and own fields (a database error's code,
 * constraint and detail), then its cause (and an AggregateError's errors) as objects of their own.
 * Serialised here rather than by pino's err serializer (which runs after this and keeps only the
 * causes' messages), so that emails in messages and stacks are masked and a cause's fields are kept.
 */
function maskError(err: Error, depth: number, parents: object[]): Record<string, unknown> {
  const out: Record<string, unknown> = {
    type: typeof err.constructor === 'function' ? err.constructor.name : err.name,
    message: maskText(err.message),
    stack: typeof err.stack === 'string' ? maskText(err.stack) : err.stack,
  };
  maskFields(err, out, depth, parents);
  // Both are own but not enumerable properties when set by the Error constructors.
  if (err.cause !== undefined && !('cause' in out)) out.cause = maskDeep(err.cause, depth + 1, parents);
  if (err instanceof AggregateError && !('errors' in out)) out.errors = maskDeep(err.errors, depth + 1, parents);
  return out;
}

/**
 * JSON logs on stderr (stdout is for the command's output). Secrets are redacted by key and email
 * addresses are masked anywhere in the line, messages included.
 */
export function createLogger(level: LevelWithSilent, bindings: Record<string, unknown> = {}): Logger {
  return createLoggerTo(level, stderrByTurn(), bindings);
}

let stderr: DestinationStream | undefined;
let pending = '';
let scheduled = false;
let out: DestinationStream | undefined;

/**
 * Writes the log lines still held for the end of this turn (see stderrByTurn) now: call it before
 * writing to stderr other than through a logger, so that what is written there keeps its order.
 */
export function flushLogs(): void {
  scheduled = false;
  if (pending === '' || !out) return;
  const text = pending;
  pending = '';
  out.write(text);
}

/**
 * stderr, written once per turn of the event loop: the lines logged in a turn are joined and
 * written together when its I/O callbacks have run (setImmediate), synchronously. Under load a turn
 * finishes many requests, each with its line, and one write (one system call) then carries them
 * all, where a write per line was a tenth of a cached read's time. Lines are never reordered, and
 * everything pending is written when the process exits (process.exit, an uncaught exception, the
 * end of a command) or before svc writes to stderr itself (flushLogs), so an exit loses nothing;
 * only a SIGKILL can cut off the current turn's lines, as it cuts off the turn itself. One buffer
 * for the process, whatever the number of loggers.
 */
function stderrByTurn(): DestinationStream {
  if (stderr) return stderr;
  out = pino.destination({ fd: 2, sync: true });
  process.on('exit', flushLogs);
  stderr = {
    write(line: string) {
      pending += line;
      if (!scheduled) {
        scheduled = true;
        setImmediate(flushLogs);
      }
    },
  };
  return stderr;
}

/** The same logger writing to another stream (tests). */
export function createLoggerTo(level: LevelWithSilent, stream: DestinationStream, bindings: Record<string, unknown> = {}): Logger {
  const logger = pino(
    {
      level,
      base: maskDeep({ service: 'svc', pid: process.pid, ...bindings }) as Record<string, unknown>,
      timestamp: pino.stdTimeFunctions.isoTime,
      // The active span's trace id on every line written inside one (tracing on): the worker's, the
      // provider calls', not only the request line. Without tracing no span is ever active: nothing added.
      mixin: () => {
        const span = trace.getSpan(context.active());
        return span ? { traceId: span.spanContext().traceId } : {};
      },
      // maskDeep has already turned errors into masked plain objects; re-serialising one would lose its type.
      serializers: { err: (err: unknown) => (err instanceof Error ? maskDeep(err) : err) },
      formatters: {
        level: (label) => ({ level: label }),
        log: (obj) => maskDeep(obj) as Record<string, unknown>,
      },
      hooks: {
        logMethod(args, method) {
          // Given an error and no message (logger.error(err), logger.error({ err })), pino would write
          // the error's message as the line's message, unmasked: pass it as the message, masked.
          if (args.length === 1) {
            const only: unknown = args[0];
            const err = only instanceof Error ? only : typeof only === 'object' && only !== null ? (only as { err?: unknown; msg?: unknown }).err : undefined;
            if (err instanceof Error && (only === err || (only as { msg?: unknown }).msg === undefined)) {
              method.apply(this, [only, maskText(err.message)] as unknown as Parameters<typeof method>);
              return;
            }
          }
          // The message (and its format arguments): copied only when one of them holds an email or a hash.
          const unsafe = args.some((a) => typeof a === 'string' && (a.includes('@') || a.includes('$argon2')));
          method.apply(this, unsafe ? (args.map((a) => (typeof a === 'string' ? maskText(a) : a)) as Parameters<typeof method>) : args);
        },
      },
    },
    stream,
  );
  // A child's bindings are written once, when it is made, without passing the formatters: they are
  // masked here (children inherit this method from the root).
  // Called with .call(this) below: a child inherits this method, and its children are made from it.
  // eslint-disable-next-line @typescript-eslint/unbound-method
  const pinoChild = logger.child;
  logger.child = function (this: Logger, childBindings: Record<string, unknown>, options?: object) {
    return pinoChild.call(this, maskDeep(childBindings) as Record<string, unknown>, options);
  } as Logger['child'];
  return logger;
}
