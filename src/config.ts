import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { userInfo } from 'node:os';

/**
 * Where a configuration value came from, shown by `svc config`: the environment, the SVC_CONFIG file,
 * a file named by `<KEY>_FILE` in the environment (a mounted secret), or the default.
 */
export type ConfigSource = 'default' | 'env' | 'file' | 'secret-file';

type Parser<T> = { parse: (raw: string) => T; expected: string };

interface KeySpec<T> {
  /** One line for `svc config` and the README's configuration table. */
  doc: string;
  parser: Parser<T>;
  /** Computed default; `undefined` means "unset". Never a secret. */
  default?: () => T | undefined;
  /**
   * How to show the value without giving away a secret. A masked key may also be read from the file
   * named by `<KEY>_FILE` (secrets mounted by Docker or Kubernetes).
   */
  mask?: (value: T) => string;
}

class ConfigValueError extends Error {}

const int = (min: number, max: number): Parser<number> => ({
  expected: `an integer from ${min} to ${max}`,
  parse(raw) {
    if (!/^-?\d+$/.test(raw.trim())) throw new ConfigValueError();
    const n = Number(raw);
    if (n < min || n > max) throw new ConfigValueError();
    return n;
  },
});

const oneOf = <T extends string>(...values: T[]): Parser<T> => ({
  expected: `one of ${values.join(', ')}`,
  parse(raw) {
    const v = raw.trim() as T;
    if (!values.includes(v)) throw new ConfigValueError();
    return v;
  },
});

/** A TCP port (0 picks a free one), or `off` (also `false`, `no`). */
const portOrOff: Parser<number | 'off'> = {
  expected: 'a TCP port from 0 to 65535 (0 picks a free one), or off',
  parse(raw) {
    const v = raw.trim().toLowerCase();
    if (v === 'off' || v === 'false' || v === 'no') return 'off';
    return int(0, 65_535).parse(v);
  },
};

const TRUE = ['true', 'on', 'yes', '1'];
const FALSE = ['false', 'off', 'no', '0'];
const bool: Parser<boolean> = {
  expected: 'true or false (also on/off, yes/no, 1/0)',
  parse(raw) {
    const v = raw.trim().toLowerCase();
    if (TRUE.includes(v)) return true;
    if (FALSE.includes(v)) return false;
    throw new ConfigValueError();
  },
};

/** A number from 0 to 1 (a share). */
const ratio: Parser<number> = {
  expected: 'a number from 0 to 1, such as 0.25',
  parse(raw) {
    const v = raw.trim();
    if (!/^(0(\.\d+)?|1(\.0+)?|\.\d+)$/.test(v)) throw new ConfigValueError();
    return Number(v);
  },
};

const text = (expected: string, pattern?: RegExp): Parser<string> => ({
  expected,
  parse(raw) {
    const v = raw.trim();
    if (!v || (pattern && !pattern.test(v))) throw new ConfigValueError();
    return v;
  },
});

/** Parses a URL, refusing what does not parse or has another protocol or no host. */
function parseUrl(raw: string, protocols: readonly string[]): { value: string; url: URL } {
  const value = raw.trim();
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new ConfigValueError();
  }
  if (!protocols.includes(url.protocol) || !url.hostname) throw new ConfigValueError();
  return { value, url };
}

const postgresUrl: Parser<string> = {
  expected: 'a PostgreSQL URL such as postgres://user:password@host:5432/dbname',
  parse(raw) {
    const { value, url } = parseUrl(raw, ['postgres:', 'postgresql:']);
    if (url.pathname.length < 2) throw new ConfigValueError();
    return value;
  },
};

const postgresUrls: Parser<string> = {
  expected: 'PostgreSQL URLs separated by commas, such as postgres://user:password@replica-1:5432/dbname,postgres://user:password@replica-2:5432/dbname',
  parse(raw) {
    const urls = raw
      .split(',')
      .map((url) => url.trim())
      .filter(Boolean);
    if (urls.length === 0) throw new ConfigValueError();
    return urls.map((url) => postgresUrl.parse(url)).join(',');
  },
};

const httpUrl = (what: string): Parser<string> => ({
  expected: `an http:// or https:// URL (${what})`,
  parse(raw) {
    const { value, url } = parseUrl(raw, ['http:', 'https:']);
    if (url.search || url.hash) throw new ConfigValueError();
    // One spelling whatever the operator typed: no trailing slash, so paths can be appended.
    return value.replace(/\/+$/, '');
  },
});

const redisUrl: Parser<string> = {
  expected: 'a Redis URL such as redis://:password@host:6379/0 (or rediss:// for TLS)',
  parse: (raw) => parseUrl(raw, ['redis:', 'rediss:']).value,
};

/** A comma-separated list of IP addresses and CIDR ranges (10.0.0.0/8, ::1), as fastify's trustProxy takes them. */
const addressList: Parser<string> = {
  expected: 'a comma-separated list of IP addresses or CIDR ranges, such as 10.0.0.0/8,127.0.0.1',
  parse(raw) {
    const items = raw
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
    const ADDRESS = /^(?:\d{1,3}(?:\.\d{1,3}){3}(?:\/\d{1,2})?|[\da-fA-F:]*:[\da-fA-F:.]*(?:\/\d{1,3})?)$/;
    if (items.length === 0 || !items.every((item) => ADDRESS.test(item))) throw new ConfigValueError();
    return items.join(',');
  },
};

const amqpUrl: Parser<string> = {
  expected: 'an AMQP URL such as amqp://user:password@host:5672/vhost (or amqps://)',
  parse: (raw) => parseUrl(raw, ['amqp:', 'amqps:']).value,
};

/**
 * `*` alone, or exact origins (scheme://host[:port], no path: what a browser sends in its Origin
 * header), kept comma-separated in their canonical form.
 */
const corsOrigins: Parser<string> = {
  expected: 'exact origins separated by commas, such as https://shop.example.com,http://localhost:5173, or * alone for any origin',
  parse(raw) {
    const items = raw
      .split(',')
      .map((item) => item.trim())
      .filter(Boolean);
    if (items.length === 0) throw new ConfigValueError();
    if (items.includes('*')) {
      if (items.length > 1) throw new ConfigValueError();
      return '*';
    }
    const origins = items.map((item) => {
      const { url } = parseUrl(item, ['http:', 'https:']);
      // An origin has no path, query or credentials; URL adds the trailing slash itself.
      if (url.origin !== item.replace(/\/$/, '') || url.username || url.password) throw new ConfigValueError();
      return url.origin;
    });
    return origins.join(',');
  },
};

// `ada@example.com` or `Ada Lovelace <ada@example.com>` (a display name without <, >, " or line breaks).
const MAILBOX = /^(?:[^<>"\r\n]*<[^<>\s@]+@[^<>\s@]+\.[^<>\s@]+>|[^<>\s@]+@[^<>\s@]+\.[^<>\s@]+)$/;
const LOCAL_MAILBOX = /^(?:[^<>"\r\n]*<[^<>\s@]+@localhost>|[^<>\s@]+@localhost)$/;
const mailbox: Parser<string> = {
  expected: 'an email address, or a name and an address as Name <address@example.com>',
  parse(raw) {
    const v = raw.trim();
    if (!MAILBOX.test(v) && !LOCAL_MAILBOX.test(v)) throw new ConfigValueError();
    return v;
  },
};

/** A secret shown as its recognisable prefix only (`sk_live_****`), so an operator sees which kind of key is set. */
const maskSecret =
  (prefix: RegExp) =>
  (value: string): string =>
    `${prefix.exec(value)?.[0] ?? ''}****`;

/** Shows a URL with its password replaced, so it can be printed and logged (also when it does not parse). */
export function maskUrl(value: string): string {
  try {
    const url = new URL(value);
    if (url.password) {
      url.password = '****';
      return url.toString();
    }
  } catch {
    // not a URL: fall through to the pattern below
  }
  return value.replace(/:[^:@/\s]*@/g, ':****@');
}

function defaultActor(): string {
  try {
    return `cli:${userInfo().username}`;
  } catch {
    return `cli:uid-${process.getuid?.() ?? 'unknown'}`;
  }
}

/** The configuration schema: every key svc reads, with its doc line. */
export const configSchema = {
  DATABASE_URL: {
    doc: 'PostgreSQL connection URL; unset means the embedded database (PGlite) in SVC_DATA_DIR',
    parser: postgresUrl,
    mask: maskUrl,
  } satisfies KeySpec<string>,
  DATABASE_POOL_MAX: {
    doc: 'Most connections one process opens to PostgreSQL (and to each replica); a request that waits more than 5 s for one answers 503 with Retry-After',
    parser: int(1, 200),
    default: () => 20,
  } satisfies KeySpec<number>,
  DATABASE_STATEMENT_TIMEOUT_MS: {
    doc: "PostgreSQL statement_timeout for the service's queries, in milliseconds (0 = none): a cancelled statement answers 503 with Retry-After; migrations and housekeeping run without it; not enforced on the embedded database",
    parser: int(0, 3_600_000),
    default: () => 5_000,
  } satisfies KeySpec<number>,
  DATABASE_REPLICA_URLS: {
    doc: "PostgreSQL read replicas (comma-separated URLs) for svc serve's reads that tolerate lag: order lists (the catalog is cached instead, and a cache is filled from the primary only); a caller's reads go to the primary for DATABASE_REPLICA_READ_YOUR_WRITES_MS after each of its writes. Needs DATABASE_URL (the embedded database has no replicas); unset: every read on the primary",
    parser: postgresUrls,
    mask: (value: string) => value.split(',').map(maskUrl).join(','),
  } satisfies KeySpec<string>,
  DATABASE_REPLICA_READ_YOUR_WRITES_MS: {
    doc: "After a caller's write (any API request but GET, HEAD and OPTIONS), how long that caller (its user or API key) reads from the primary rather than a replica, so that it sees its own writes; above the replicas' worst lag. Shared by every svc serve instance through Redis with REDIS_URL (while Redis is unreachable, and for one window after, every such read goes to the primary); per instance without it",
    parser: int(100, 3_600_000),
    default: () => 10_000,
  } satisfies KeySpec<number>,
  DATABASE_PREPARED_STATEMENTS: {
    doc: 'Prepare parameterized statements once per PostgreSQL connection (faster); turn off behind a PgBouncer in transaction pooling mode, where consecutive statements may run on different server connections',
    parser: bool,
    default: () => true,
  } satisfies KeySpec<boolean>,
  SVC_DATA_DIR: {
    doc: "Folder for the embedded mode's data (database, generated keys); created on first use",
    parser: text('a folder path'),
    default: () => './.svc',
  } satisfies KeySpec<string>,
  SVC_ACTOR: {
    doc: 'Who operator commands act as in the audit log (default cli:<os user>)',
    parser: text('a name such as cli:alice, 1 to 100 characters without spaces or control characters', /^[^\s\p{Cc}]{1,100}$/u),
    default: defaultActor,
  } satisfies KeySpec<string>,
  HOST: {
    doc: "Address svc serve listens on, and svc worker's health endpoints (0.0.0.0 in a container behind a load balancer)",
    parser: text('an IP address or host name'),
    default: () => '127.0.0.1',
  } satisfies KeySpec<string>,
  PORT: {
    doc: 'TCP port svc serve listens on (0 picks a free one)',
    parser: int(0, 65_535),
    default: () => 3000,
  } satisfies KeySpec<number>,
  METRICS_PORT: {
    doc: "TCP port of svc serve's Prometheus /metrics (a listener apart from the API's, never behind the load balancer; 0 picks a free one); off turns metrics off, in svc worker too (which serves /metrics on its --health-port). The default port taken by another process: a warning, and svc serve runs without metrics; a port set here that cannot be bound stops it",
    parser: portOrOff,
    default: () => 9464,
  } satisfies KeySpec<number | 'off'>,
  METRICS_HOST: {
    doc: 'Address the /metrics listener of svc serve binds to: loopback by default, so metrics are never public by accident; 0.0.0.0 (or the pod address) where Prometheus scrapes from another host',
    parser: text('an IP address or host name'),
    default: () => '127.0.0.1',
  } satisfies KeySpec<string>,
  TLS_CERT_FILE: {
    doc: 'PEM certificate chain for svc serve to terminate TLS itself (TLS 1.3 only), with TLS_KEY_FILE; unset: plain HTTP (behind a load balancer that terminates TLS)',
    parser: text('a path to a PEM certificate file'),
  } satisfies KeySpec<string>,
  TLS_KEY_FILE: {
    doc: "PEM private key of TLS_CERT_FILE's certificate; set both or neither",
    parser: text('a path to a PEM private key file'),
  } satisfies KeySpec<string>,
  CORS_ORIGINS: {
    doc: 'Browser origins allowed to call the API cross-origin, comma-separated and exact (https://shop.example.com,https://admin.example.com), or * for any (never with credentials: svc authenticates by bearer token, not cookies); unset: no CORS headers',
    parser: corsOrigins,
  } satisfies KeySpec<string>,
  SHUTDOWN_TIMEOUT_MS: {
    doc: 'How long svc serve waits for in-flight requests after SIGTERM before closing them',
    parser: int(0, 600_000),
    default: () => 10_000,
  } satisfies KeySpec<number>,
  PASSWORD_HASH_CONCURRENCY: {
    doc: 'Most password hashes (argon2id, 19 MiB and about 0.1 s of a core each) one process computes at once, for logins and registrations',
    parser: int(1, 64),
    default: () => 2,
  } satisfies KeySpec<number>,
  PASSWORD_HASH_QUEUE: {
    doc: 'Most password hashes one process keeps waiting for a turn; beyond it a login or registration gets 503 with Retry-After',
    parser: int(0, 10_000),
    default: () => 16,
  } satisfies KeySpec<number>,
  JWT_KEYS_FILE: {
    doc: 'JSON Web Key Set of private signing keys (EdDSA or RS256, each with a kid; the first signs); unset in embedded mode: generated into SVC_DATA_DIR',
    parser: text('a path to a JWKS JSON file'),
  } satisfies KeySpec<string>,
  JWT_ISSUER: {
    doc: 'iss claim of the access tokens svc issues and accepts',
    parser: text('a non-empty string'),
    default: () => 'svc',
  } satisfies KeySpec<string>,
  JWT_AUDIENCE: {
    doc: 'aud claim of the access tokens svc issues and accepts',
    parser: text('a non-empty string'),
    default: () => 'svc-api',
  } satisfies KeySpec<string>,
  ACCESS_TOKEN_TTL_SECONDS: {
    doc: 'Lifetime of an access token',
    parser: int(60, 86_400),
    default: () => 900,
  } satisfies KeySpec<number>,
  USER_STANDING_TTL_SECONDS: {
    doc: "The oldest copy of a user's role and status svc serve uses: a change through the API or svc users applies at once (on every instance with REDIS_URL); this bounds one an instance was not told of (Redis unreachable, several instances without REDIS_URL); 0 reads them on every request",
    parser: int(0, 300),
    default: () => 5,
  } satisfies KeySpec<number>,
  REFRESH_TOKEN_TTL_SECONDS: {
    doc: 'Lifetime of a refresh token (each use rotates it)',
    parser: int(300, 31_536_000),
    default: () => 2_592_000,
  } satisfies KeySpec<number>,
  PUBLIC_URL: {
    doc: "The address clients reach svc serve at (https://api.example.com), for links svc hands out (the local file store's signed links, the receipt link in emails); unset: the address svc serve is bound to (svc worker then guesses http://HOST:PORT and warns)",
    parser: httpUrl('the base URL clients use'),
  } satisfies KeySpec<string>,
  REDIS_URL: {
    doc: 'Redis connection URL (redis:// or rediss://): the shared rate limits and the second cache level of every svc serve; unset means both stay in each process (one instance). An unreachable Redis degrades (per-process limits, database reads) with a warning, never errors',
    parser: redisUrl,
    mask: maskUrl,
  } satisfies KeySpec<string>,
  REDIS_PREFIX: {
    doc: 'First part of every Redis key svc writes (<prefix>:rl:…, <prefix>:c:…): deployments sharing one Redis each take their own',
    parser: text('letters, digits, _, - or . (at most 64)', /^[A-Za-z0-9_.-]{1,64}$/),
    default: () => 'svc',
  } satisfies KeySpec<string>,
  RATE_LIMIT_IP_PER_MINUTE: {
    doc: 'Requests one client address may make in any minute (sliding window), shared by all instances through Redis; 0 turns the limit off. Health routes, metrics and the Stripe webhook are exempt',
    parser: int(0, 1_000_000),
    default: () => 100,
  } satisfies KeySpec<number>,
  RATE_LIMIT_API_KEY_PER_HOUR: {
    doc: 'Requests one API key may make in any hour (sliding window), besides the per-address limit; 0 turns the limit off',
    parser: int(0, 10_000_000),
    default: () => 1000,
  } satisfies KeySpec<number>,
  RATE_LIMIT_AUTH_IP_PER_MINUTE: {
    doc: 'Login, registration and refresh requests one client address may make in any minute (besides the per-email login throttle); 0 turns the limit off',
    parser: int(0, 1_000_000),
    default: () => 10,
  } satisfies KeySpec<number>,
  TRUSTED_PROXIES: {
    doc: 'Addresses or CIDR ranges of the load balancers in front of svc serve (comma-separated): from them X-Forwarded-For names the client the rate limits count; unset means the connecting address counts and X-Forwarded-For is ignored',
    parser: addressList,
  } satisfies KeySpec<string>,
  CACHE_L1_MAX_ENTRIES: {
    doc: 'Most entries the in-process cache (products, orders; 5 minutes each) holds; 0 turns the whole cache off',
    parser: int(0, 10_000_000),
    default: () => 10_000,
  } satisfies KeySpec<number>,
  CACHE_L1_MAX_MB: {
    doc: 'Most memory the in-process cache takes, in MiB of cached JSON (the least recently used entries go first)',
    parser: int(1, 4_096),
    default: () => 32,
  } satisfies KeySpec<number>,
  AMQP_URL: {
    doc: 'RabbitMQ connection URL; unset means events are dispatched in-process from the outbox table',
    parser: amqpUrl,
    mask: maskUrl,
  } satisfies KeySpec<string>,
  AMQP_PREFIX: {
    doc: 'First part of every RabbitMQ exchange and queue name (<prefix>.events, <prefix>.<consumer>): deployments sharing one broker (or vhost) each take their own',
    parser: text('letters, digits, _, - or . (at most 64)', /^[A-Za-z0-9_.-]{1,64}$/),
    default: () => 'svc',
  } satisfies KeySpec<string>,
  EVENT_DELIVERY_LEASE_MS: {
    doc: "Without AMQP_URL: how long a consumer's lease on a delivery in the event_deliveries table lasts, in milliseconds, renewed every third of it while the work runs; a process that dies (SIGKILL, a lost host) holding deliveries gives them up to the other svc worker or svc serve processes that long after its last renewal. Shorter: faster failover, more renewals",
    parser: int(1_000, 600_000),
    default: () => 30_000,
  } satisfies KeySpec<number>,
  OUTBOX_RETENTION_HOURS: {
    doc: 'How long published outbox rows are kept (for replay) before housekeeping deletes them',
    parser: int(1, 8_760),
    default: () => 168,
  } satisfies KeySpec<number>,
  PROCESSED_MESSAGES_RETENTION_HOURS: {
    doc: "How long the consumers' inbox (processed_messages) remembers a message it handled, so that a redelivery or a replay of it has no second effect, before housekeeping deletes it; must exceed OUTBOX_RETENTION_HOURS by at least an hour (a replayed outbox row, or a message back from its longest retry wait of 10 minutes, must still be recognised)",
    parser: int(2, 87_600),
    default: () => 336,
  } satisfies KeySpec<number>,
  STRIPE_EVENTS_RETENTION_HOURS: {
    doc: 'How long the Stripe webhook inbox (stripe_events) remembers an event id, so that a redelivery has no second effect, before housekeeping deletes it; must exceed 72 (Stripe retries a delivery for up to 3 days)',
    parser: int(1, 87_600),
    default: () => 720,
  } satisfies KeySpec<number>,
  STRIPE_SECRET_KEY: {
    doc: 'Stripe secret or restricted API key (sk_test_…, sk_live_…, rk_…); unset means a simulated payment provider',
    parser: text('a Stripe API key: sk_test_…, sk_live_…, rk_test_… or rk_live_…', /^(sk|rk)_(test|live)_[A-Za-z0-9_]{8,}$/),
    mask: maskSecret(/^(sk|rk)_(test|live)_/),
  } satisfies KeySpec<string>,
  STRIPE_WEBHOOK_SECRET: {
    doc: 'Signing secret of the Stripe webhook endpoint (whsec_…), to verify POST /api/v1/webhooks/stripe',
    parser: text('a Stripe webhook signing secret: whsec_…', /^whsec_[A-Za-z0-9_+/=]{8,}$/),
    mask: maskSecret(/^whsec_/),
  } satisfies KeySpec<string>,
  STRIPE_API_URL: {
    doc: "Another base URL for Stripe's API, such as a local stand-in (http://127.0.0.1:12111); unset means api.stripe.com",
    parser: httpUrl('the base of a Stripe-compatible API'),
    mask: maskUrl,
  } satisfies KeySpec<string>,
  SENDGRID_API_KEY: {
    doc: 'SendGrid API key (SG.…); unset means emails are written as .eml files under SVC_DATA_DIR/mail',
    parser: text('a SendGrid API key: SG.…', /^SG\.\S{8,}$/),
    mask: maskSecret(/^SG\./),
  } satisfies KeySpec<string>,
  SENDGRID_API_URL: {
    doc: "Another base URL for SendGrid's API, such as a local stand-in; unset means api.sendgrid.com",
    parser: httpUrl('the base of a SendGrid-compatible API'),
    mask: maskUrl,
  } satisfies KeySpec<string>,
  MAIL_FROM: {
    doc: 'Sender of the emails svc sends (address, or Name <address>); required with SENDGRID_API_KEY, the default serves the local .eml files only',
    parser: mailbox,
    default: () => 'svc <no-reply@localhost>',
  } satisfies KeySpec<string>,
  S3_BUCKET: {
    doc: 'S3 bucket for stored files (receipts); unset means files under SVC_DATA_DIR/files, served by svc serve through signed links. Credentials: the AWS SDK reads AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or its other sources) itself',
    parser: text('an S3 bucket name: 3 to 63 lower-case letters, digits, dots and hyphens', /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/),
  } satisfies KeySpec<string>,
  S3_ENDPOINT: {
    doc: 'Another S3 endpoint (MinIO, s3rver, another provider); unset means AWS S3 in S3_REGION',
    parser: httpUrl('the S3-compatible endpoint'),
    mask: maskUrl,
  } satisfies KeySpec<string>,
  S3_REGION: {
    doc: 'Region of the S3 bucket',
    parser: text('a region name such as us-east-1', /^[a-z0-9-]{2,40}$/),
    default: () => 'us-east-1',
  } satisfies KeySpec<string>,
  S3_FORCE_PATH_STYLE: {
    doc: 'Address the bucket in the path (http://host/bucket/key) rather than the host name; most S3-compatible servers need it',
    parser: bool,
    default: () => false,
  } satisfies KeySpec<boolean>,
  RECEIPT_URL_TTL_SECONDS: {
    doc: 'Lifetime of the signed receipt download links the API hands out',
    parser: int(30, 604_800),
    default: () => 300,
  } satisfies KeySpec<number>,
  OTEL_TRACES_EXPORTER: {
    doc: 'Where spans go (OpenTelemetry): otlp (OTLP over HTTP to OTEL_EXPORTER_OTLP_ENDPOINT), console (stdout), or none; unset means otlp when OTEL_EXPORTER_OTLP_ENDPOINT is set, else tracing is off (no span is made)',
    parser: oneOf('otlp', 'console', 'none'),
  } satisfies KeySpec<'otlp' | 'console' | 'none'>,
  OTEL_EXPORTER_OTLP_ENDPOINT: {
    doc: 'Base URL of the OpenTelemetry collector (http://collector:4318): spans are sent to <url>/v1/traces; setting it turns tracing on',
    parser: httpUrl('the collector base URL'),
  } satisfies KeySpec<string>,
  OTEL_SDK_DISABLED: {
    doc: "true turns tracing off whatever the other OTEL_* variables say (OpenTelemetry's standard switch)",
    parser: bool,
    default: () => false,
  } satisfies KeySpec<boolean>,
  OTEL_TRACES_SAMPLER: {
    doc: "Which traces are recorded: parentbased_always_on (all, unless the caller's traceparent says not sampled), parentbased_traceidratio (a share, OTEL_TRACES_SAMPLER_ARG, of the traces that start here; the caller decides for the rest), parentbased_always_off, always_on, always_off or traceidratio (ignoring the caller's decision)",
    parser: oneOf('parentbased_always_on', 'parentbased_always_off', 'parentbased_traceidratio', 'always_on', 'always_off', 'traceidratio'),
    default: () => 'parentbased_always_on' as const,
  } satisfies KeySpec<'parentbased_always_on' | 'parentbased_always_off' | 'parentbased_traceidratio' | 'always_on' | 'always_off' | 'traceidratio'>,
  OTEL_TRACES_SAMPLER_ARG: {
    doc: 'The share of traces the traceidratio samplers record, from 0 to 1 (0.1 = one in ten); only read with those samplers',
    parser: ratio,
    default: () => 1,
  } satisfies KeySpec<number>,
  OTEL_SERVICE_NAME: {
    doc: 'The service name spans carry (service.name)',
    parser: text('letters, digits, _, - or . (at most 64)', /^[A-Za-z0-9_.-]{1,64}$/),
    default: () => 'svc',
  } satisfies KeySpec<string>,
  LOG_LEVEL: {
    doc: 'Level of the JSON logs written to stderr',
    parser: oneOf('fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'),
    default: () => 'info' as const,
  } satisfies KeySpec<'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent'>,
} as const;

export type ConfigKey = keyof typeof configSchema;
type ValueOf<K extends ConfigKey> = ReturnType<(typeof configSchema)[K]['parser']['parse']>;
type Defaulted = { [K in ConfigKey]: 'default' extends keyof (typeof configSchema)[K] ? K : never }[ConfigKey];

/** Validated configuration: keys with a default are always set. */
export type Config = { [K in Defaulted]: ValueOf<K> } & { [K in Exclude<ConfigKey, Defaulted>]?: ValueOf<K> } & {
  /** Absolute path of SVC_DATA_DIR. */
  dataDir: string;
  /** Where each key's value came from. */
  sources: Record<ConfigKey, ConfigSource>;
  /** For the keys read through `<KEY>_FILE`: the file each was read from. */
  secretFiles: Partial<Record<ConfigKey, string>>;
  /** The optional config file that was read (SVC_CONFIG). */
  file?: string;
};

/** A configuration value that does not parse: names the key, where it came from and the expected form. */
export class ConfigError extends Error {
  constructor(
    readonly key: string,
    readonly source: ConfigSource | 'SVC_CONFIG',
    message: string,
  ) {
    super(message);
    this.name = 'ConfigError';
  }
}

function readConfigFile(path: string): Record<string, unknown> {
  let raw: string;
  try {
    raw = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError('SVC_CONFIG', 'env', `SVC_CONFIG: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch (err) {
    throw new ConfigError('SVC_CONFIG', 'env', `SVC_CONFIG: ${path} is not valid JSON: ${(err as Error).message}`);
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new ConfigError('SVC_CONFIG', 'env', `SVC_CONFIG: ${path} must hold a JSON object of KEY: value`);
  }
  for (const key of Object.keys(parsed)) {
    if (!(key in configSchema)) {
      throw new ConfigError(key, 'file', `${key} in ${path} is not a configuration key; known keys: ${Object.keys(configSchema).join(', ')}`);
    }
  }
  return parsed as Record<string, unknown>;
}

/** The keys that may come from a file named by `<KEY>_FILE`: those svc masks, as secrets. */
export const SECRET_FILE_KEYS = (Object.entries(configSchema) as [ConfigKey, KeySpec<unknown>][]).filter(([, spec]) => spec.mask).map(([key]) => key);

const READ_ERRORS: Record<string, string> = {
  ENOENT: 'no such file',
  EACCES: 'permission denied',
  EISDIR: 'it is a folder',
};

/**
 * The value of a secret from the file named by `<KEY>_FILE` (Docker and Kubernetes mount secrets as
 * files), its trailing line break removed; undefined when that variable is unset. Setting both the key
 * and its file is a mistake (which one did the operator mean?), as is a file that cannot be read.
 */
function readSecretFile(key: ConfigKey, env: NodeJS.ProcessEnv, cwd: string): { raw: string; path: string } | undefined {
  const variable = `${key}_FILE`;
  const named = env[variable]?.trim();
  if (!named) return undefined;
  if (env[key] !== undefined && env[key] !== '') {
    throw new ConfigError(key, 'env', `${key} and ${variable} are both set: set only one of them`);
  }
  const path = resolve(cwd, named);
  try {
    return { raw: readFileSync(path, 'utf8').replace(/(\r?\n)+$/, ''), path };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? String(err);
    throw new ConfigError(key, 'secret-file', `${variable}: cannot read ${path}: ${READ_ERRORS[code] ?? code}`);
  }
}

/**
 * Reads and validates the configuration once: environment first (a secret either as itself or from the
 * file named by `<KEY>_FILE`), then the optional JSON file named by SVC_CONFIG, then defaults. Throws
 * ConfigError naming the first bad key.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): Config {
  const file = env.SVC_CONFIG?.trim() ? resolve(cwd, env.SVC_CONFIG.trim()) : undefined;
  const fromFile = file ? readConfigFile(file) : {};
  const values: Record<string, unknown> = {};
  const sources = {} as Record<ConfigKey, ConfigSource>;
  const secretFiles: Partial<Record<ConfigKey, string>> = {};

  for (const [key, spec] of Object.entries(configSchema) as [ConfigKey, KeySpec<unknown>][]) {
    const envValue = env[key];
    const fileValue = fromFile[key];
    const secret = spec.mask ? readSecretFile(key, env, cwd) : undefined;
    let raw: string | undefined;
    let source: ConfigSource = 'default';
    if (secret) {
      raw = secret.raw;
      source = 'secret-file';
      secretFiles[key] = secret.path;
    } else if (envValue !== undefined && envValue !== '') {
      raw = envValue;
      source = 'env';
    } else if (fileValue !== undefined && fileValue !== null) {
      raw = typeof fileValue === 'string' ? fileValue : JSON.stringify(fileValue);
      source = 'file';
    }
    sources[key] = source;
    if (raw === undefined) {
      values[key] = spec.default?.();
      continue;
    }
    try {
      values[key] = spec.parser.parse(raw);
    } catch (err) {
      if (!(err instanceof ConfigValueError)) throw err;
      const shown = spec.mask ? spec.mask(raw) : JSON.stringify(raw);
      const where = source === 'file' ? `in ${file}` : source === 'secret-file' ? `in ${secretFiles[key]} (${key}_FILE)` : 'in the environment';
      throw new ConfigError(key, source, `${key}=${shown} ${where} is invalid: expected ${spec.parser.expected}`);
    }
  }
  const config = values as Config;
  config.dataDir = resolve(cwd, config.SVC_DATA_DIR);
  config.sources = sources;
  config.secretFiles = secretFiles;
  if (file) config.file = file;
  checkConsistency(config);
  return config;
}

/**
 * Keys that mean something only beside another one. Set alone, they are a mistake that would
 * otherwise leave svc quietly on an embedded stand-in (the key the operator thought switched it
 * over did nothing), so they fail like a bad value, naming both keys.
 */
function checkConsistency(config: Config): void {
  const set = (key: ConfigKey) => config.sources[key] !== 'default';
  const needs = (key: ConfigKey, other: ConfigKey, what: string) => {
    if (set(key) && config[other] === undefined) {
      throw new ConfigError(key, config.sources[key], `${key} is set but ${other} is not: ${what}; set ${other}, or unset ${key}`);
    }
  };
  needs('DATABASE_REPLICA_URLS', 'DATABASE_URL', 'the embedded database (PGlite) has no read replicas');
  needs('STRIPE_WEBHOOK_SECRET', 'STRIPE_SECRET_KEY', 'Stripe webhooks need the Stripe account they come from');
  needs('STRIPE_API_URL', 'STRIPE_SECRET_KEY', 'without a Stripe key payments are simulated and no Stripe API is called');
  needs('SENDGRID_API_URL', 'SENDGRID_API_KEY', 'without a SendGrid key emails are written to files and no SendGrid API is called');
  for (const key of ['S3_ENDPOINT', 'S3_REGION', 'S3_FORCE_PATH_STYLE'] as const) {
    needs(key, 'S3_BUCKET', 'without a bucket files are stored in the data folder and no S3 API is called');
  }
  // Half a TLS configuration would otherwise serve plain HTTP where the operator expects HTTPS.
  for (const [key, other] of [
    ['TLS_CERT_FILE', 'TLS_KEY_FILE'],
    ['TLS_KEY_FILE', 'TLS_CERT_FILE'],
  ] as const) {
    if (set(key) && !set(other)) {
      throw new ConfigError(
        key,
        config.sources[key],
        `${key} is set but ${other} is not: svc serve terminates TLS with both (the certificate and its key); set ${other}, or unset ${key}`,
      );
    }
  }
  // A message (a replayed outbox row, a late retry) the inbox has forgotten would be handled twice.
  if (config.PROCESSED_MESSAGES_RETENTION_HOURS < config.OUTBOX_RETENTION_HOURS + 1) {
    const key = set('PROCESSED_MESSAGES_RETENTION_HOURS') ? 'PROCESSED_MESSAGES_RETENTION_HOURS' : 'OUTBOX_RETENTION_HOURS';
    throw new ConfigError(
      key,
      config.sources[key],
      `PROCESSED_MESSAGES_RETENTION_HOURS (${config.PROCESSED_MESSAGES_RETENTION_HOURS}) must exceed OUTBOX_RETENTION_HOURS (${config.OUTBOX_RETENTION_HOURS}) by at least 1: ` +
        `a published event can be replayed, or come back from a retry wait, as long as its outbox row is kept, and the inbox must still recognise it; ` +
        `raise PROCESSED_MESSAGES_RETENTION_HOURS to ${config.OUTBOX_RETENTION_HOURS + 1} or more`,
    );
  }
  // Stripe redelivers an event for up to 3 days: an inbox that forgot it would apply it twice.
  if (config.STRIPE_EVENTS_RETENTION_HOURS <= 72) {
    throw new ConfigError(
      'STRIPE_EVENTS_RETENTION_HOURS',
      config.sources.STRIPE_EVENTS_RETENTION_HOURS,
      `STRIPE_EVENTS_RETENTION_HOURS (${config.STRIPE_EVENTS_RETENTION_HOURS}) must exceed 72: Stripe retries a webhook delivery for up to 3 days, ` +
        `and the webhook inbox must still recognise a redelivered event; raise it to 73 or more (the default is 720)`,
    );
  }
  // The default sender is for the .eml files on this machine; a real provider refuses (or spam-folders) it.
  if (config.SENDGRID_API_KEY && !set('MAIL_FROM')) {
    throw new ConfigError(
      'MAIL_FROM',
      'default',
      `MAIL_FROM is required with SENDGRID_API_KEY: the sender address of the emails, one your SendGrid account may send from (for example MAIL_FROM="Shop <orders@example.com>")`,
    );
  }
}

export interface ConfigEntry {
  key: ConfigKey;
  value: string | number | boolean | null;
  source: ConfigSource;
  /** With source secret-file: the file the value was read from. */
  secretFile?: string;
  doc: string;
}

/** The effective configuration as `svc config` shows it: secrets masked, each value's source named. */
export function describeConfig(config: Config): ConfigEntry[] {
  return (Object.entries(configSchema) as [ConfigKey, KeySpec<unknown>][]).map(([key, spec]) => {
    const value = config[key];
    const shown = value === undefined ? null : spec.mask ? spec.mask(value) : value;
    const secretFile = config.secretFiles[key];
    return { key, value: shown, source: config.sources[key], ...(secretFile ? { secretFile } : {}), doc: spec.doc };
  });
}
