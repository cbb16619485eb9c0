import type { Config } from './config.js';
import { createLogger, type Logger } from './logger.js';
import { openDatabase, type Database } from './adapters/database.js';
import type { QueryObserver } from './adapters/query-timing.js';
import { Migrations } from './adapters/migrations.js';
import { UsersService } from './domain/users/users.service.js';
import { PasswordHasher } from './domain/users/password.js';
import { ApiKeysService } from './domain/auth/api-keys.service.js';
import { ProductsService } from './domain/catalog/products.service.js';
import { OrdersService } from './domain/orders/orders.service.js';
import { lazy } from './domain/shared/lazy.js';
import { createContext, type ContextInput, type Ctx } from './domain/shared/context.js';
import { sqlOn } from './domain/shared/sql.js';
import { ReadYourWrites, type WriteWindows } from './domain/shared/read-your-writes.js';
import { CursorCodec } from './domain/shared/pagination.js';
import { AppSecret } from './domain/shared/app-secret.entity.js';
import { DomainError } from './domain/shared/errors.js';
import { Authenticator } from './domain/auth/authenticator.js';
import { UserStandings } from './domain/auth/standing.js';
import { AuthService } from './domain/auth/auth.service.js';
import type { PaymentProvider } from './domain/payments/payment-provider.js';
import type { WebhookVerifier } from './domain/payments/stripe-webhooks.js';
import type { Mailer } from './domain/notifications/mailer.js';
import type { FileStore } from './domain/files/file-store.js';
import type { EventPublisher } from './domain/events/publisher.js';
import type { ConsumerTransport } from './domain/events/transport.js';
import type { RabbitMq } from './adapters/rabbitmq.js';
import { DatabaseQueue } from './adapters/database-queue.js';
import { OutboxSignal } from './adapters/outbox-signal.js';
import { AccessTokens, loadSigningKeys } from './adapters/jwt.js';
import { createProviders } from './adapters/providers.js';
import type { LocalFileStore } from './adapters/local-file-store.js';
import type { EmbeddedShare } from './adapters/embedded-share.js';
import type { RedisConnection } from './adapters/redis.js';
import { RedisRateLimiter } from './adapters/redis-rate-limiter.js';
import { RedisReadYourWrites } from './adapters/redis-read-your-writes.js';
import { InProcessRateLimiter, type RateLimiter } from './domain/shared/rate-limit.js';
import { NoCache, type Cache } from './domain/shared/cache.js';
import { TwoLevelCache } from './adapters/two-level-cache.js';
import { PrometheusMetrics } from './adapters/prometheus-metrics.js';
import { watchCache, watchDatabasePool, watchOutbox, watchQueues } from './adapters/metric-sources.js';
import { createTracing, type TracingOverride } from './adapters/opentelemetry.js';
import { traced, tracedPublisher } from './adapters/traced.js';
import { NoTracing, type Tracing } from './domain/shared/tracing.js';
import { HOUSEKEEPING_INTERVAL_MS, scheduleHousekeeping, type Housekeeping } from './housekeeping.js';

/** Which process an App is for: what it loads at start-up rather than on first use. */
export type AppRole = 'serve' | 'worker' | 'command';

/** What tests (and the processes) choose or replace when building an App. */
export interface AppOverrides {
  /**
   * 'serve' and 'worker' load at start-up what they will need (svc serve its signing keys; both the
   * configured provider adapters), so a bad key file or adapter stops them before they take work, and
   * announce the embedded stand-ins once. 'command' (the default) loads each on first use: a command
   * that never signs a token never reads the keys. 'serve' also owns the embedded database.
   */
  role?: AppRole;
  logger?: Logger;
  /** Own the embedded database (svc serve): never use it through another process's socket. Default: role 'serve'. */
  exclusiveDatabase?: boolean;
  /** Access tokens (signing keys) in place of the ones from JWT_KEYS_FILE or the data folder. */
  tokens?: AccessTokens;
  payments?: PaymentProvider;
  mailer?: Mailer;
  files?: FileStore;
  publisher?: EventPublisher;
  transport?: ConsumerTransport;
  /** The clock of sessions, login throttling and rate limits. */
  now?: () => Date;
  /** Tracing into this exporter (a test's in-memory one) whatever the OTEL_* configuration says. */
  tracing?: TracingOverride;
}

/** Everything svc runs on, built once from validated config. */
export interface App {
  config: Config;
  logger: Logger;
  db: Database;
  /**
   * This App's metrics (a Prometheus registry of its own): svc serve answers them on METRICS_PORT,
   * svc worker on its health port; `metrics.enabled` is false with METRICS_PORT=off. Features add
   * their own instruments through `metrics.counter(...)`, `histogram(...)` and `gauge(...)`.
   */
  metrics: PrometheusMetrics;
  /** Spans of requests, statements, events and provider calls (OpenTelemetry), or NoTracing when OTEL_* leave it off. */
  tracing: Tracing;
  migrations: Migrations;
  users: UsersService;
  /** The process's password hashing, bounded (PASSWORD_HASH_CONCURRENCY, PASSWORD_HASH_QUEUE). */
  passwords: PasswordHasher;
  products: ProductsService;
  orders: OrdersService;
  apiKeys: ApiKeysService;
  /** Signs and verifies access tokens (the keys are read on first use, or at start-up for svc serve). */
  tokens: AccessTokens;
  /** Turns a bearer credential into a principal. */
  authenticator: Authenticator;
  /** Registration, login and refresh-token sessions. */
  auth: AuthService;
  /** Stripe with STRIPE_SECRET_KEY, else the simulated provider. */
  payments: PaymentProvider;
  /** SendGrid with SENDGRID_API_KEY, else .eml files in the data folder. */
  mailer: Mailer;
  /** S3 with S3_BUCKET, else files in the data folder. */
  files: FileStore;
  /** The same store as `files` when files are on local disk: svc serve serves its signed links. */
  localFiles?: LocalFileStore;
  /** Verifies Stripe webhook deliveries, when STRIPE_WEBHOOK_SECRET is set. */
  stripeWebhooks?: WebhookVerifier;
  /**
   * The event transport, when one is set: RabbitMQ for role 'worker' with AMQP_URL; the in-process
   * one (the database's event_deliveries table) for roles 'serve' and 'worker' without it.
   */
  publisher?: EventPublisher;
  /**
   * Where consumers take their messages from, when one is set: the same object as `publisher`
   * (RabbitMQ's connection, or the in-process transport), closed by close().
   */
  transport?: ConsumerTransport;
  /**
   * On PostgreSQL, for svc serve and svc worker: the wake-up hint between processes that new outbox
   * rows committed (NOTIFY after an API write, LISTEN in the relay); polling stays the guarantee.
   */
  outboxSignal?: OutboxSignal;
  /**
   * Starts the periodic purge of expired rows, of published outbox rows past OUTBOX_RETENTION_HOURS
   * of inbox rows past PROCESSED_MESSAGES_RETENTION_HOURS and of Stripe webhook inbox rows past
   * STRIPE_EVENTS_RETENTION_HOURS (now, then every 15 minutes).
   */
  scheduleHousekeeping(intervalMs?: number): Housekeeping;
  /**
   * Lets other svc processes use the embedded database through a socket while this one holds it
   * (svc serve); undefined on PostgreSQL.
   */
  shareDatabase(url: string): Promise<EmbeddedShare | undefined>;
  /** Where svc serve listens: the links the App hands out (local files) point there unless PUBLIC_URL is set. */
  listening(url: string): void;
  /**
   * The base URL clients reach the API at, for links that outlive a request (the receipt link in an
   * email): PUBLIC_URL, else the address svc serve listens on (in svc serve), else the one it would
   * listen on from HOST and PORT (in svc worker: set PUBLIC_URL there; a warning says so once).
   */
  publicUrl(): string;
  /** The database's state for readiness probes: 'ok', or 'unreachable' (the cause is logged, never answered). */
  databaseState(): Promise<string>;
  /** A context for one unit of work (a command, a request, a message) with its own EntityManager. */
  context(input: ContextInput): Ctx;
  /** The App's clock (a test's, or the system's). */
  clock(): Date;
  /**
   * The connection to REDIS_URL (svc serve and svc worker), when it is set; `redis.state()` says
   * whether it is reachable now (an unreachable Redis degrades, see RedisConnection).
   */
  redis?: RedisConnection;
  /**
   * Cached product and order reads, and users' standings for authentication (hit and miss counts in
   * `cache.stats()`): L1 in the process and L2 in Redis with REDIS_URL; L1 alone for svc serve on the
   * embedded database it owns; none otherwise (svc serve then keeps standings in a cache of their own).
   */
  cache: Cache;
  /** svc serve's rate limits: shared through Redis with REDIS_URL (per process while it is down), else in this process. */
  rateLimiter: RateLimiter;
  /**
   * Records a write by `actor` (svc serve, for each API request but GET, HEAD and OPTIONS): its
   * lag-tolerant reads go to the primary for DATABASE_REPLICA_READ_YOUR_WRITES_MS, on every instance
   * with REDIS_URL (resolved once recorded there). Nothing without replicas. Never rejects.
   */
  wrote(actor: string): Promise<void>;
  close(): Promise<void>;
}

/** The composition root: serve, worker, every command and every test start here. */
export async function createApp(config: Config, overrides: AppOverrides = {}): Promise<App> {
  const role = overrides.role ?? 'command';
  const logger = overrides.logger ?? createLogger(config.LOG_LEVEL);
  // Commands count nothing: nobody scrapes them.
  const metrics = new PrometheusMetrics({ logger, enabled: config.METRICS_PORT !== 'off' && role !== 'command' });
  // Commands trace nothing either: their statements belong to no request.
  const tracing = role === 'command' && !overrides.tracing ? new NoTracing() : createTracing(config, logger, overrides.tracing);
  const observeQuery = observer(
    metrics.enabled ? metrics.queryAnswered : undefined,
    tracing.enabled ? Object.assign((text: string, seconds: number) => tracing.queryAnswered(text, seconds), { readsContext: true }) : undefined,
  );
  const db = await openDatabase(config, logger, {
    exclusive: overrides.exclusiveDatabase ?? role === 'serve',
    ...(observeQuery ? { observeQuery } : {}),
  });
  // The worker's event transport: RabbitMQ with AMQP_URL (unreachable: exit 6 naming AMQP_URL).
  let rabbit: RabbitMq | undefined;
  let redis: RedisConnection | undefined;
  try {
    // Redis is a cache and a counter store, never a source of truth: unreachable at start-up, svc
    // starts anyway with a warning naming REDIS_URL, and uses it once it answers.
    // ioredis and amqplib are loaded only where they are configured: a command on the embedded
    // default or without them starts without their modules (about 0.1 s of CPU each time).
    if (role !== 'command' && config.REDIS_URL) {
      const { RedisConnection } = await import('./adapters/redis.js');
      redis = await RedisConnection.connect(config.REDIS_URL, { logger, prefix: config.REDIS_PREFIX, tracing });
    }
    if (role === 'worker' && config.AMQP_URL && !(overrides.publisher && overrides.transport)) {
      const { RabbitMq } = await import('./adapters/rabbitmq.js');
      rabbit = await RabbitMq.connect(config.AMQP_URL, { logger, prefix: config.AMQP_PREFIX });
    }
    const migrations = new Migrations(db, logger);
    const passwords = new PasswordHasher({ concurrency: config.PASSWORD_HASH_CONCURRENCY, queue: config.PASSWORD_HASH_QUEUE });
    const users = new UsersService(passwords);
    const apiKeys = new ApiKeysService(users);
    const tokens =
      overrides.tokens ??
      new AccessTokens(() => loadSigningKeys(config, logger), {
        issuer: config.JWT_ISSUER,
        audience: config.JWT_AUDIENCE,
        ttlSeconds: config.ACCESS_TOKEN_TTL_SECONDS,
      });
    const auth = new AuthService(users, passwords, tokens, { refreshTtlSeconds: config.REFRESH_TOKEN_TTL_SECONDS, now: overrides.now });
    let serverUrl: string | undefined;
    const providers = createProviders(config, logger, () => config.PUBLIC_URL ?? serverUrl);
    // Each provider call a client span when tracing is on.
    const files = traced(tracing, 'files', overrides.files ?? providers.files);
    const localFiles = overrides.files ? undefined : providers.localFiles;
    const payments = traced(tracing, 'payments', overrides.payments ?? providers.payments);
    const mailer = traced(tracing, 'mailer', overrides.mailer ?? providers.mailer);
    if (role !== 'command') {
      if (role === 'serve') await tokens.load();
      // Only the ports in use: an override replaces the configured adapter, which is then never loaded.
      const inUse = (['payments', 'mailer', 'files'] as const).filter((port) => !overrides[port]);
      await providers.load(inUse);
      providers.announce(inUse);
    }
    let closed = false;
    let guessedUrlWarned = false;
    // Read once, on first use: commands that never page never touch it. Read on a fresh fork outside
    // any transaction (PGlite has a single connection).
    const cursors = lazy(() => loadCursorCodec(db));
    // Plain statements run on the root EntityManager's connection: never inside a transaction.
    const sql = sqlOn(db.orm.em as Ctx['em']);
    const cache = createCache(config, db, role, redis);
    const standingsCache = createStandingsCache(role, cache, redis);
    const authenticator = new Authenticator(tokens, new UserStandings(standingsCache, config.USER_STANDING_TTL_SECONDS * 1000));
    const caches = standingsCache === cache ? [cache] : [cache, standingsCache];
    // A command has no cache of its own to invalidate, but running svc serve instances do: with
    // REDIS_URL it moves the versions it changed there (users' standings), or fails saying so.
    const invalidate =
      role === 'command' && config.REDIS_URL
        ? async (keys: readonly string[]) => {
            const { invalidateFromCommand } = await import('./adapters/command-invalidation.js');
            await invalidateFromCommand({ url: config.REDIS_URL!, prefix: config.REDIS_PREFIX, standingTtlSeconds: config.USER_STANDING_TTL_SECONDS }, keys);
          }
        : async (keys: readonly string[]) => {
            await Promise.all(caches.map((c) => c.invalidate(keys)));
          };
    // Read replicas serve svc serve's lag-tolerant reads (lists, the catalog); commands and the worker
    // read the primary. A caller's read-your-writes window is shared by every instance through Redis.
    const rywWindowMs = config.DATABASE_REPLICA_READ_YOUR_WRITES_MS;
    const replicas: WriteWindows | undefined =
      role === 'serve' && config.DATABASE_REPLICA_URLS ? (redis ? new RedisReadYourWrites(redis, rywWindowMs) : new ReadYourWrites(rywWindowMs)) : undefined;
    const contextDeps = {
      fork: () => db.orm.em.fork({ clear: true }) as Ctx['em'],
      sql,
      ...(replicas ? { replicaSql: sqlOn(db.orm.em as Ctx['em'], 'read'), mayReadReplica: (actor: string) => replicas.mayReadReplica(actor) } : {}),
      cursors,
      invalidate,
      ...(tracing.enabled ? { activeTraceparent: () => tracing.activeTraceparent() } : {}),
    };
    const context = (input: ContextInput) => createContext(contextDeps, input);
    // Without AMQP_URL, svc serve and svc worker dispatch events through the database itself.
    const inProcess =
      role !== 'command' && !config.AMQP_URL && !(overrides.publisher && overrides.transport)
        ? new DatabaseQueue({ sql, context, logger, leaseMs: config.EVENT_DELIVERY_LEASE_MS, soleUser: db.kind === 'embedded' && !db.via })
        : undefined;
    if (metrics.enabled) {
      watchDatabasePool(metrics, db, config.DATABASE_POOL_MAX);
      watchOutbox(metrics, sql);
      const queues = rabbit ?? inProcess;
      if (queues) watchQueues(metrics, () => queues.queueDepths());
      watchCache(metrics, cache);
    }
    const outboxSignal =
      role !== 'command' && db.kind === 'postgresql' && config.DATABASE_URL
        ? new OutboxSignal({ url: config.DATABASE_URL, run: (text, params) => sql(text, params), logger })
        : undefined;
    return {
      config,
      logger,
      db,
      metrics,
      tracing,
      migrations,
      users,
      passwords,
      products: new ProductsService(cache),
      orders: new OrdersService(cache),
      apiKeys,
      tokens,
      authenticator,
      auth,
      payments,
      mailer,
      files,
      localFiles,
      stripeWebhooks: providers.stripeWebhooks,
      publisher: tracedPublisher(tracing, overrides.publisher ?? rabbit ?? inProcess),
      transport: overrides.transport ?? rabbit ?? inProcess,
      outboxSignal,
      scheduleHousekeeping: (intervalMs = HOUSEKEEPING_INTERVAL_MS) =>
        scheduleHousekeeping(() => db.orm.em.fork() as Ctx['em'], logger, intervalMs, {
          outboxRetentionHours: config.OUTBOX_RETENTION_HOURS,
          processedMessagesRetentionHours: config.PROCESSED_MESSAGES_RETENTION_HOURS,
          stripeEventsRetentionHours: config.STRIPE_EVENTS_RETENTION_HOURS,
        }),
      // A client of the shared embedded database (svc worker, a command) may change what L1 holds.
      shareDatabase: async (url) =>
        db.share?.(url, {
          onClientWork: () => {
            for (const c of caches) if (c instanceof TwoLevelCache && !redis) c.clearLocal();
          },
        }),
      databaseState: async () => {
        try {
          await db.orm.em.getConnection().execute('select 1');
          return 'ok';
        } catch (err) {
          logger.warn({ err }, 'readiness: the database does not answer');
          return 'unreachable';
        }
      },
      listening: (url) => {
        serverUrl = url;
      },
      publicUrl: () => {
        const known = config.PUBLIC_URL ?? serverUrl;
        if (known) return known;
        if (!guessedUrlWarned) {
          guessedUrlWarned = true;
          logger.warn('PUBLIC_URL is not set: links in emails point at the address svc serve would listen on (HOST, PORT); set PUBLIC_URL');
        }
        return configuredServeUrl(config);
      },
      context,
      clock: overrides.now ?? (() => new Date()),
      redis,
      cache,
      rateLimiter: redis ? new RedisRateLimiter(redis) : new InProcessRateLimiter(),
      wrote: async (actor) => replicas?.wrote(actor),
      async close() {
        if (closed) return;
        closed = true;
        providers.close();
        for (const c of caches) c.close();
        outboxSignal?.close();
        try {
          await inProcess?.close();
          await rabbit?.close();
          await redis?.close();
        } finally {
          await db.close();
          await tracing.close();
        }
      },
    };
  } catch (err) {
    await tracing.close();
    await rabbit?.close();
    await redis?.close();
    await db.close();
    throw err;
  }
}

/**
 * The cache a process gets: none in commands (they read once) or with CACHE_L1_MAX_ENTRIES=0; with
 * REDIS_URL both levels, checked against versions in Redis; without it, L1 alone only in the process
 * that owns the embedded database (svc serve), which sees every write: its own, and its socket
 * clients' (it empties L1 after each of their transactions). Several processes on PostgreSQL without
 * Redis could not tell each other of writes: no cache there.
 */
function createCache(config: Config, db: Database, role: AppRole, redis: RedisConnection | undefined): Cache {
  if (config.CACHE_L1_MAX_ENTRIES === 0) return new NoCache();
  const limits = { maxEntries: config.CACHE_L1_MAX_ENTRIES, maxBytes: config.CACHE_L1_MAX_MB * 1024 * 1024 };
  if (redis) return new TwoLevelCache({ ...limits, redis });
  if (role === 'serve' && db.kind === 'embedded' && !db.via) return new TwoLevelCache(limits);
  return new NoCache();
}

/**
 * Where svc serve keeps users' standings (UserStandings): in its cache when it has one; else (on
 * PostgreSQL without Redis, or with CACHE_L1_MAX_ENTRIES=0) in a cache of their own, with Redis
 * when it is set. Other processes authenticate nobody.
 */
function createStandingsCache(role: AppRole, cache: Cache, redis: RedisConnection | undefined): Cache {
  if (role !== 'serve' || cache instanceof TwoLevelCache) return cache;
  return new TwoLevelCache({ maxEntries: STANDINGS_MAX_ENTRIES, maxBytes: STANDINGS_MAX_ENTRIES * 200, ...(redis ? { redis } : {}) });
}

// A standing is a few dozen bytes of JSON: 10,000 users take about 1 MiB.
const STANDINGS_MAX_ENTRIES = 10_000;

/** http://HOST:PORT as svc serve would listen with this configuration (a wildcard address as loopback). */
function configuredServeUrl(config: Config): string {
  const host = config.HOST === '0.0.0.0' ? '127.0.0.1' : config.HOST === '::' ? '::1' : config.HOST;
  return `http://${host.includes(':') ? `[${host}]` : host}:${config.PORT}`;
}

async function loadCursorCodec(db: Database): Promise<CursorCodec> {
  const secret = await db.orm.em.fork().findOne(AppSecret, { name: 'cursor' }, { fields: ['value'] });
  if (!secret) throw new DomainError('unavailable', 'the database has no cursor key: run `svc migrate`');
  return new CursorCodec(Buffer.from(secret.value, 'utf8'));
}

/** Both observers of a statement, or the one that is set, or none (statements then go untimed). */
function observer(...observers: (QueryObserver | undefined)[]): QueryObserver | undefined {
  const set = observers.filter((o): o is QueryObserver => o !== undefined);
  if (set.length <= 1) return set[0];
  return Object.assign(
    (text: string, seconds: number) => {
      for (const o of set) o(text, seconds);
    },
    { readsContext: set.some((o) => o.readsContext) },
  );
}
