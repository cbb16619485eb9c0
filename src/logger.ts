import { pino, type DestinationStream, type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

const EMAIL = /([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9-]+)[A-Za-z0-9.-]*\.([A-Za-z]{2,})/g;

/** Masks an email for logs: `ada@example.com` becomes `a***@e***.com`. */
export function maskEmail(value: string): string {
  // Most strings in a log line hold no email: skip the pattern for them (it runs on every string).
  if (!value.includes('@')) return value;
  return value.replace(EMAIL, (_m, first: string, domain: string, tld: string) => `${first}***@${domain[0]}***.${tld}`);
}

// Keys whose values are secrets wherever they appear in a log line, at any depth (compared in
// lower case): credentials, tokens and the headers that carry them.
const SECRET_KEYS = new Set(['password', 'passwordhash', 'token', 'accesstoken', 'refreshtoken', 'secret', 'authorization', 'cookie', 'set-cookie']);
const REDACTED = '[redacted]';

/**
 * The log-safe copy of a value: secrets replaced by key, emails masked in every string. One walk
 * does both (it runs on every log line), down to a bounded depth.
 */
function maskDeep(value: unknown, depth = 0): unknown {
  if (typeof value === 'string') return maskEmail(value);
  // A Date has no keys of its own: copied, it would log as {} instead of its time.
  if (depth > 4 || value === null || typeof value !== 'object' || value instanceof Date) return value;
  if (Array.isArray(value)) return value.map((v) => maskDeep(v, depth + 1));
  // Serialised here rather than by pino's err serializer (which runs after this), so that an email in an
  // error's message or stack (a unique-violation detail, say) is masked too.
  if (value instanceof Error) return maskDeep(pino.stdSerializers.err(value), depth);
  const out: Record<string, unknown> = {};
  for (const key in value) {
    if (!Object.hasOwn(value, key)) continue;
    const v = (value as Record<string, unknown>)[key];
    out[key] = SECRET_KEYS.has(key.toLowerCase()) && v !== undefined && v !== null ? REDACTED : maskDeep(v, depth + 1);
  }
  return out;
}

/**
 * JSON logs on stderr (stdout is for the command's output). Secrets are redacted by key and email
 * addresses are masked anywhere in the line, messages included.
 */
export function createLogger(level: LevelWithSilent, bindings: Record<string, unknown> = {}): Logger {
  return createLoggerTo(level, pino.destination({ fd: 2, sync: true }), bindings);
}

/** The same logger writing to another stream (tests). */
export function createLoggerTo(level: LevelWithSilent, stream: DestinationStream, bindings: Record<string, unknown> = {}): Logger {
  const logger = pino(
    {
      level,
      base: maskDeep({ service: 'svc', pid: process.pid, ...bindings }) as Record<string, unknown>,
      timestamp: pino.stdTimeFunctions.isoTime,
      // maskDeep has already turned errors into masked plain objects; re-serialising one would lose its type.
      serializers: { err: (err: unknown) => (err instanceof Error ? pino.stdSerializers.err(err) : err) },
      formatters: {
        level: (label) => ({ level: label }),
        log: (obj) => maskDeep(obj) as Record<string, unknown>,
      },
      hooks: {
        logMethod(args, method) {
          // The message (and its format arguments): copied only when one of them holds an email.
          const email = args.some((a) => typeof a === 'string' && a.includes('@'));
          method.apply(this, email ? (args.map((a) => (typeof a === 'string' ? maskEmail(a) : a)) as Parameters<typeof method>) : args);
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
