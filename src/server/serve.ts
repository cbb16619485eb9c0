import type { FastifyInstance } from 'fastify';
import type { Config } from '../config.js';
import { createApp, type App, type AppOverrides } from '../app.js';
import { buildServer } from './server.js';
import { trackConnections } from './drain.js';
import { startMetricsServer, type MetricsServer } from './metrics-server.js';
import { DomainError } from '../domain/shared/errors.js';
import { loadTls } from './tls.js';
import { listenFix } from '../listen.js';

// Routes whose writes emit events (their URL as registered, versioned).
const EVENTFUL_ROUTE = /^\/api\/v\d+\/(orders|webhooks)(\/|$)/;

// The kernel's queue of connections not yet accepted (capped by net.core.somaxconn): a burst of new
// connections (a balancer reconnecting its pool, a client opening hundreds at once) waits there while
// the event loop is busy, instead of overflowing Node's default of 511, where they are dropped or reset.
const LISTEN_BACKLOG = 4096;

/** Work svc serve runs beside the API (the in-process event pipeline): started after listening, stopped before the App closes. */
export interface Alongside {
  /** A request that may have written events was answered (after its commit): look for work now. */
  changed(): void;
  /** Stops it gracefully (its work in flight finished, bounded by `timeoutMs`). */
  stop(timeoutMs: number): Promise<unknown>;
}

export interface RunningServer {
  app: App;
  server: FastifyInstance;
  /** http://host:port (https:// with TLS_CERT_FILE) as bound (port 0 resolved). */
  url: string;
  /** http://host:port/metrics of the Prometheus endpoint; undefined with METRICS_PORT=off (or its default port taken). */
  metricsUrl?: string;
  /** Migrations applied at start-up (embedded mode, or --migrate). */
  migrated: string[];
  /**
   * Stops cleanly: no new connections, in-flight requests finish (up to SHUTDOWN_TIMEOUT_MS, then
   * their connections are closed), then the work beside the API (the in-process event pipeline: its
   * deliveries in flight finish), then the database is closed. Resolves to whether the requests drained.
   */
  stop(): Promise<{ drained: boolean }>;
}

/**
 * Starts the API on an App built for serving (its signing keys and configured adapters loaded, the
 * embedded stand-ins announced). On the embedded default it applies pending migrations itself; on
 * PostgreSQL it refuses to start while migrations are pending unless `migrate` is set. `overrides`
 * replace parts of the App (tests).
 */
export async function startServer(
  config: Config,
  options: { migrate?: boolean; overrides?: Omit<AppOverrides, 'role'>; alongside?: (app: App) => Promise<Alongside | undefined> } = {},
): Promise<RunningServer> {
  // Checked before anything starts: a bad certificate or key is a configuration error naming its key.
  const https = loadTls(config);
  const app = await createApp(config, { ...options.overrides, role: 'serve' });
  let share: Awaited<ReturnType<App['shareDatabase']>>;
  let alongside: Alongside | undefined;
  let metrics: MetricsServer | undefined;
  try {
    const migrated = await app.migrations.prepareSchema({ apply: options.migrate, orElse: 'start with --migrate' });
    const server = await buildServer(app, { https });
    // A write to the resources whose changes are announced (orders: placed, cancelled), answered
    // successfully, has committed its events to the outbox: the pipeline beside the API relays them
    // now instead of at its next poll. (Not on every write: a login would cost a relay pass.)
    server.addHook('onResponse', (request, reply, done) => {
      if (request.method !== 'GET' && reply.statusCode < 400 && EVENTFUL_ROUTE.test(request.routeOptions.url ?? '')) {
        alongside?.changed();
        // And the relays of svc worker processes, on PostgreSQL.
        app.outboxSignal?.notify();
      }
      done();
    });
    // Before the API: a metrics port that cannot be bound stops the start before any request is taken.
    metrics = await serveMetrics(app);
    const connections = trackConnections(server.server);
    try {
      await server.listen({ port: config.PORT, host: config.HOST, backlog: LISTEN_BACKLOG });
    } catch (err) {
      throw cannotListen(config, err);
    }
    const address = server.server.address();
    const port = typeof address === 'object' && address ? address.port : config.PORT;
    const host = config.HOST.includes(':') ? `[${config.HOST}]` : config.HOST;
    const url = `${https ? 'https' : 'http'}://${host}:${port}`;
    // The links svc hands out (receipt downloads, the receipt link in emails) need an address a
    // client can reach, which a wildcard is not: this machine's loopback, unless PUBLIC_URL says.
    const wildcard = config.HOST === '0.0.0.0' || config.HOST === '::';
    app.listening(wildcard ? `${https ? 'https' : 'http'}://${config.HOST === '::' ? '[::1]' : '127.0.0.1'}:${port}` : url);
    if (wildcard && !config.PUBLIC_URL) {
      app.logger.warn(
        `PUBLIC_URL is not set and HOST=${config.HOST} listens on every interface: links in emails and receipt links point at ${app.publicUrl()}; set PUBLIC_URL`,
      );
    }
    // The embedded database lives in this process: other svc commands reach it through a socket.
    share = await app.shareDatabase(url);
    app.logger.info({ url, database: app.db.kind, location: app.db.location }, `listening on ${url}`);
    alongside = await options.alongside?.(app);
    const housekeeping = app.scheduleHousekeeping();
    return {
      app,
      server,
      url,
      metricsUrl: metrics?.url,
      migrated,
      async stop() {
        let drained: boolean;
        try {
          drained = await connections.drain(config.SHUTDOWN_TIMEOUT_MS);
          if (!drained) app.logger.warn({ timeoutMs: config.SHUTDOWN_TIMEOUT_MS }, 'in-flight requests did not finish in time; their connections were closed');
          // The listener is already closed; this runs fastify's onClose hooks.
          await server.close();
        } finally {
          try {
            // After the last request (its events are in the outbox), before the App closes.
            await alongside?.stop(config.SHUTDOWN_TIMEOUT_MS);
            await housekeeping.stop();
            await metrics?.close();
            await share?.close();
          } finally {
            await app.close();
          }
        }
        return { drained };
      },
    };
  } catch (err) {
    await alongside?.stop(config.SHUTDOWN_TIMEOUT_MS);
    await metrics?.close();
    await share?.close();
    await app.close();
    throw err;
  }
}

/**
 * The API's address cannot be bound: an operator's mistake (a port taken, a host that is not this
 * machine's) said as one, exit 6, naming the flag and the key. Unwrapped, a taken port was an
 * unexpected error (exit 1, a stack) and an unresolvable host "cannot reach the database".
 */
function cannotListen(config: Config, err: unknown): DomainError {
  const code = (err as NodeJS.ErrnoException).code;
  const where = `${config.HOST}:${config.PORT}`;
  const fix = listenFix(err, { host: config.HOST, hostName: '--host (HOST)', portName: '--port (PORT)' });
  return new DomainError('unavailable', `cannot listen on ${where} (${code ?? (err as Error).message}): ${fix}`, { service: 'api', code }, { cause: err });
}

/**
 * The Prometheus endpoint on METRICS_HOST:METRICS_PORT, unless METRICS_PORT is off. Its default port
 * already taken (a second svc serve on one machine) costs a warning, not the API; a port the operator
 * chose that cannot be bound stops the start, naming the key.
 */
async function serveMetrics(app: App): Promise<MetricsServer | undefined> {
  const { config, logger } = app;
  if (config.METRICS_PORT === 'off') return undefined;
  try {
    const server = await startMetricsServer({ host: config.METRICS_HOST, port: config.METRICS_PORT, logger, scrape: () => app.metrics.scrape() });
    logger.info({ metrics: server.url }, `metrics on ${server.url}`);
    return server;
  } catch (err) {
    const where = `${config.METRICS_HOST}:${config.METRICS_PORT}`;
    if (config.sources.METRICS_PORT === 'default' && (err as NodeJS.ErrnoException).code === 'EADDRINUSE') {
      logger.warn({ err }, `metrics are not served: ${where} is in use; set METRICS_PORT to a free port (0 picks one) or to off`);
      return undefined;
    }
    throw new DomainError(
      'unavailable',
      `cannot listen on ${where} for /metrics (${(err as Error).message}): set METRICS_PORT to a free port (0 picks one), or METRICS_PORT=off`,
      { service: 'metrics' },
      { cause: err },
    );
  }
}
