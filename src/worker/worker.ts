import type { Config } from '../config.js';
import { ConfigError } from '../config.js';
import { createApp, type App, type AppOverrides } from '../app.js';
import { DomainError } from '../domain/shared/errors.js';
import { ConsumerRunner } from './consumer.js';
import { consumers as allConsumers } from './consumers/index.js';
import { startHealthServer, type HealthServer } from './health.js';
import { OutboxRelay } from './relay.js';

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
 * publisher and transport). Refuses to start on PostgreSQL with pending migrations (exit 4).
 */
export async function startWorker(config: Config, options: WorkerOptions): Promise<RunningWorker> {
  if (!config.AMQP_URL && !(options.overrides?.publisher && options.overrides.transport)) {
    throw new ConfigError(
      'AMQP_URL',
      'default',
      'svc worker needs RabbitMQ: set AMQP_URL (e.g. AMQP_URL=amqp://user:password@rabbitmq:5672). The embedded pipeline ' +
        '(events dispatched in-process without a broker) is not available in svc worker yet.',
    );
  }
  const app = await createApp(config, { ...options.overrides, role: 'worker' });
  const cleanups: (() => Promise<void>)[] = [];
  const cleanUp = async () => {
    // In start-up order: consumers, relay, housekeeping, health server.
    for (const fn of cleanups) await fn().catch((err: unknown) => app.logger.warn({ err }, 'error while stopping the worker'));
    await app.close();
  };
  try {
    await app.migrations.prepareSchema({ orElse: 'migrate before starting svc worker' });
    const { publisher, transport } = app;
    if (!publisher || !transport) throw new Error('the App has no event transport (role worker without AMQP_URL)');

    const known = allConsumers(app);
    const names = known.map((c) => c.name);
    const wanted = options.queues ?? names;
    const unknown = wanted.filter((name) => !names.includes(name));
    if (unknown.length > 0) {
      throw new DomainError(
        'invalid',
        `--queues: unknown consumer(s) ${unknown.join(', ')}; the known ones are: ${names.length ? names.join(', ') : '(none yet)'}`,
        { unknown, known: names },
      );
    }
    const context = (input: { actor: string; traceId?: string }) => app.context(input);
    const runners = known.map(
      (consumer) =>
        new ConsumerRunner(consumer, {
          transport,
          context,
          logger: app.logger,
          prefetch: options.concurrency,
          ...(options.retryDelaysMs ? { retryDelaysMs: options.retryDelaysMs } : {}),
        }),
    );
    // Every consumer's queues, also those this worker does not run: events the relay publishes wait
    // in them for the worker that does, instead of being dropped by an exchange with no queue bound.
    for (const runner of runners) await transport.declare(runner.spec);
    const selected = runners.filter((r) => wanted.includes(r.consumer.name));
    for (const runner of selected) {
      cleanups.push(() => runner.stop());
      await runner.start();
    }

    const relay = options.relay ? new OutboxRelay({ publisher, context, logger: app.logger }) : undefined;
    if (relay) {
      relay.start();
      cleanups.push(() => relay.stop());
    }
    const housekeeping = app.scheduleHousekeeping();
    cleanups.push(() => housekeeping.stop());

    let health: HealthServer;
    try {
      health = await startHealthServer({
        host: config.HOST,
        port: options.healthPort,
        logger: app.logger,
        checks: async () => ({ database: await app.databaseState(), rabbitmq: await transportState(publisher) }),
      });
    } catch (err) {
      throw new DomainError(
        'unavailable',
        `cannot listen on ${config.HOST}:${options.healthPort} for the health endpoints (${(err as Error).message}): choose another --health-port (0 picks a free one)`,
        { service: 'health' },
        { cause: err },
      );
    }
    cleanups.push(() => health.close());

    const running = selected.map((r) => r.consumer.name);
    app.logger.info(
      { consumers: running, relay: Boolean(relay), health: health.url, concurrency: options.concurrency },
      `worker started: consumers ${running.length ? running.join(', ') : '(none)'}, relay ${relay ? 'on' : 'off'}, health on ${health.url}`,
    );

    let stopped: Promise<{ drained: boolean }> | undefined;
    return {
      app,
      consumers: running,
      relay: Boolean(relay),
      healthUrl: health.url,
      stop: () =>
        (stopped ??= (async () => {
          // 1. Stop consuming; the messages in flight finish and are acknowledged (bounded).
          const drained = await withinTimeout(
            Promise.all(selected.map((r) => r.stop())).then(() => true),
            config.SHUTDOWN_TIMEOUT_MS,
          );
          if (!drained) app.logger.warn({ timeoutMs: config.SHUTDOWN_TIMEOUT_MS }, 'messages in flight did not finish in time; they will be delivered again');
          // 2. The relay finishes its batch, housekeeping its pass, the health server closes (the
          // consumers' stops, done or given up on above, are not run again), then RabbitMQ and the database.
          // The relay stops before the App closes: a relay that outlives its App hangs.
          cleanups.splice(0, selected.length);
          await cleanUp();
          return { drained };
        })()),
    };
  } catch (err) {
    await cleanUp();
    throw err;
  }
}

function withinTimeout(work: Promise<boolean>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    work.catch(() => false),
    new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

async function transportState(publisher: NonNullable<App['publisher']>): Promise<string> {
  try {
    return await publisher.check();
  } catch (err) {
    return (err as Error).message;
  }
}
