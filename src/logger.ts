import { pino, type DestinationStream, type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

const EMAIL = /([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9-]+)[A-Za-z0-9.-]*\.([A-Za-z]{2,})/g;

/** Masks an email for logs: `ada@example.com` becomes `a***@e***.com`. */
export function maskEmail(value: string): string {
  // Most strings in a log line hold no email: skip the pattern for them (it runs on every string).
  if (!value.includes('@')) return value;
  return value.replace(EMAIL, (_m, first: string, domain: string, tld: string) => `${first}***@${domain[0]}***.${tld}`);
}

// Keys whose values are personal data or secrets wherever they appear in a log line.
const SECRET_PATHS = [
  'password',
  'passwordHash',
  'token',
  'accessToken',
  'refreshToken',
  'secret',
  'authorization',
  'req.headers.authorization',
  'req.headers.cookie',
  '*.password',
  '*.passwordHash',
  '*.token',
  '*.secret',
];

function maskDeep(value: unknown, depth = 0): unknown {
  if (typeof value === 'string') return maskEmail(value);
  if (depth > 4 || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map((v) => maskDeep(v, depth + 1));
  // Serialised here rather than by pino's err serializer (which runs after this), so that an email in an
  // error's message or stack (a unique-violation detail, say) is masked too.
  if (value instanceof Error) return maskDeep(pino.stdSerializers.err(value), depth);
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = maskDeep(v, depth + 1);
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
  return pino(
    {
      level,
      base: { service: 'svc', pid: process.pid, ...bindings },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: SECRET_PATHS, censor: '[redacted]' },
      // maskDeep has already turned errors into masked plain objects; re-serialising one would lose its type.
      serializers: { err: (err: unknown) => (err instanceof Error ? pino.stdSerializers.err(err) : err) },
      formatters: { level: (label) => ({ level: label }), log: (obj) => maskDeep(obj) as Record<string, unknown> },
      hooks: {
        logMethod(args, method) {
          const masked = args.map((a) => (typeof a === 'string' ? maskEmail(a) : a)) as Parameters<typeof method>;
          method.apply(this, masked);
        },
      },
    },
    stream,
  );
}
