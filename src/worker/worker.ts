import type { Config } from '../config.js';
import { createApp, type App, type AppOverrides } from '../app.js';
import { DomainError } from '../domain/shared/errors.js';
import { startHealthServer, type HealthServer } from './health.js';
import { startPipeline } from './pipeline.js';
import { listenFix } from '../listen.js';

export interface WorkerOptions {
  /** Messages in flight per consumer (its prefetch): `--concurrency`. */
  concurrency: number;
  /** The consumers to run, by name (`--queues`); all of them when unset. */
  queues?: readonly string[];
  /** Run the outbox relay (default; `--no-relay` turns it off). */
  relay: boolean;
  /** Port of /health/live and /health/ready (0 picks a free one), on config.HOST. */
  healthPort: number;
  /** The waits before each retry of a failed message (default DEFAULT_RETRY_DELAYS_MS): tests shorten them. */
  retryDelaysMs?: readonly number[];
  overrides?: Omit<AppOverrides, 'role'>;
}

export interface RunningWorker {
  app: App;
  /** The consumers running, by name. */
  consumers: string[];
  relay: boolean;
  /** http://host:port of the health endpoints. */
  healthUrl: string;
  /**
   * Stops cleanly, in this order: no new messages, the ones in flight finished and acknowledged (up
   * to SHUTDOWN_TIMEOUT_MS), the relay's batch finished, housekeeping and the health server stopped,
   * then RabbitMQ and the database closed. Resolves to whether the messages in flight all finished.
   */
  stop(): Promise<{ drained: boolean }>;
}

/**
 * Starts svc worker on an App built for the worker (role 'worker': RabbitMQ from AMQP_URL as its
 * publisher and transport, or without it the in-process transport of the database itself).
 * Refuses to start on PostgreSQL with pending migrations (exit 4).
 */
export async function startWorker(config: Config, options: WorkerOptions): Promise<RunningWorker> {
  // Without RabbitMQ the database is the queue. The embedded one is then needed for this process
  // alone: while svc serve holds it, svc serve already dispatches its events in-process, and a worker
  // beside it would only compete for its one connection (through its socket).
  const embeddedPipeline = !config.AMQP_URL && !config.DATABASE_URL && !(options.overrides?.publisher && options.overrides.transport);
  let app: App;
  try {
    app = await createApp(config, { ...options.overrides, role: 'worker', ...(embeddedPipeline ? { exclusiveDatabase: true } : {}) });
  } catch (err) {
    if (embeddedPipeline && err instanceof DomainError && typeof err.details.pid === 'number') {
      throw new DomainError(
        'unavailable',
        `svc serve (pid ${err.details.pid}) holds the embedded database in ${config.dataDir} and already dispatches its events in-process: ` +
          'svc worker is not needed beside it (set DATABASE_URL and AMQP_URL to run workers apart from svc serve)',
        err.details,
        { cause: err },
      );
    }
    throw err;
  }
  const cleanups: (() => Promise<void>)[] = [];
  const cleanUp = async () => {
    // In start-up order: consumers and relay, housekeeping, health server.
    for (const fn of cleanups) await fn().catch((err: unknown) => app.logger.warn({ err }, 'error while stopping the worker'));
    await app.close();
  };
  try {
    await app.migrations.prepareSchema({ orElse: 'migrate before starting svc worker' });
    const { publisher } = app;
    if (!publisher) throw new Error('the App has no event transport');
    const pipeline = await startPipeline(app, {
      concurrency: options.concurrency,
      queues: options.queues,
      relay: options.relay,
      retryDelaysMs: options.retryDelaysMs,
    });
    cleanups.push(() => pipeline.stop(config.SHUTDOWN_TIMEOUT_MS).then(() => undefined));
    const housekeeping = app.scheduleHousekeeping();
    cleanups.push(() => housekeeping.stop());

    let health: HealthServer;
    try {
      health = await startHealthServer({
        host: config.HOST,
        port: options.healthPort,
        logger: app.logger,
        checks: async () => ({
          database: await app.databaseState(),
          ...(publisher.kind === 'rabbitmq' ? { rabbitmq: await transportState(publisher) } : {}),
        }),
        // On the health port rather than METRICS_PORT: no second port per worker to choose (several
        // workers on one machine already each take their own --health-port), and it is already the
        // operators' port of a process that serves no API.
        ...(app.metrics.enabled ? { metrics: () => app.metrics.scrape() } : {}),
      });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new DomainError(
        'unavailable',
        `cannot listen on ${config.HOST}:${options.healthPort} for the health endpoints (${code ?? (err as Error).message}): ${listenFix(err, { host: config.HOST, hostName: 'HOST', portName: '--health-port' })}`,
        { service: 'health', code },
        { cause: err },
      );
    }
    cleanups.push(() => health.close());

    const running = pipeline.consumers;
    app.logger.info(
      { consumers: running, relay: pipeline.relay, health: health.url, concurrency: options.concurrency, transport: publisher.kind },
      `worker started: consumers ${running.length ? running.join(', ') : '(none)'}, relay ${pipeline.relay ? 'on' : 'off'}, health on ${health.url}`,
    );

    let stopped: Promise<{ drained: boolean }> | undefined;
    return {
      app,
      consumers: running,
      relay: pipeline.relay,
      healthUrl: health.url,
      stop: () =>
        (stopped ??= (async () => {
          // 1. Stop consuming; the messages in flight finish and are settled (bounded), then the
          // relay's batch. 2. Housekeeping and the health server, then the transport and the database.
          const { drained } = await pipeline.stop(config.SHUTDOWN_TIMEOUT_MS);
          await cleanUp();
          return { drained };
        })()),
    };
  } catch (err) {
    await cleanUp();
    throw err;
  }
}

async function transportState(publisher: NonNullable<App['publisher']>): Promise<string> {
  try {
    return await publisher.check();
  } catch (err) {
    return (err as Error).message;
  }
}
