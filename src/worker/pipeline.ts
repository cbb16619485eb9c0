import type { App } from '../app.js';
import { performance } from 'node:perf_hooks';
import { DomainError } from '../domain/shared/errors.js';
import type { ConsumerTransport, Delivery } from '../domain/events/transport.js';
import { ConsumerRunner } from './consumer.js';
import { consumers as allConsumers, CONSUMER_NAMES } from './consumers/index.js';
import { OutboxRelay } from './relay.js';

export interface PipelineOptions {
  /** Messages in flight per consumer (its prefetch). */
  concurrency: number;
  /** The consumers to run, by name; all of them when unset. */
  queues?: readonly string[];
  /** Run the outbox relay. */
  relay: boolean;
  /** The waits before each retry (tests shorten them); DEFAULT_RETRY_DELAYS_MS when unset. */
  retryDelaysMs?: readonly number[];
}

/** The consumers and the relay of one process, running on the App's transport. */
export interface EventPipeline {
  /** The consumers running, by name. */
  consumers: string[];
  relay: boolean;
  /** New outbox rows have committed (an API write): relay them now rather than at the next poll. */
  notify(): void;
  /**
   * Graceful stop: no new messages, the ones in flight finished and settled (up to `timeoutMs`, then
   * given up on: they are delivered again), then the relay's batch finished. Resolves to whether the
   * messages in flight all finished. Call before the App closes.
   */
  stop(timeoutMs: number): Promise<{ drained: boolean }>;
}

/** Refuses (invalid: exit 2) names that are not consumers', listing the known ones: `svc worker --queues`. */
export function checkQueues(wanted: readonly string[]): void {
  const unknown = wanted.filter((name) => !CONSUMER_NAMES.includes(name));
  if (unknown.length > 0) {
    throw new DomainError('invalid', `--queues: unknown consumer(s) ${unknown.join(', ')}; the known ones are: ${CONSUMER_NAMES.join(', ')}`, {
      unknown,
      known: [...CONSUMER_NAMES],
    });
  }
}

/**
 * Starts the event pipeline on the App's publisher and transport (RabbitMQ, or the in-process one):
 * every consumer declared (so events wait for those this process does not run), the selected ones
 * consuming, and the outbox relay. svc worker runs it; svc serve runs it without AMQP_URL.
 */
export async function startPipeline(app: App, options: PipelineOptions): Promise<EventPipeline> {
  const { publisher, transport } = app;
  if (!publisher || !transport) throw new Error('the App has no event transport (set AMQP_URL, or run it as svc serve or svc worker)');
  const known = allConsumers(app);
  const wanted = options.queues ?? CONSUMER_NAMES;
  checkQueues(wanted);
  const context = (input: { actor: string; traceId?: string }) => app.context(input);
  const relay = options.relay ? new OutboxRelay({ publisher, context, logger: app.logger, onPass: (pass) => app.metrics.relayPassed(pass) }) : undefined;
  // When each delivery arrived, for the handle-duration metric its settlement reports.
  const received = new WeakMap<Delivery, number>();
  const subscribe: ConsumerTransport['subscribe'] = (spec, subscribeOptions, onDelivery) =>
    transport.subscribe(spec, subscribeOptions, (delivery) => {
      received.set(delivery, performance.now());
      return onDelivery(delivery);
    });
  // The transport itself in every other respect (a proxy, so that whatever else it offers the runner
  // stays there, bound to it).
  const timed = new Proxy(transport, {
    get: (target, property) => {
      if (property === 'subscribe') return subscribe;
      const value: unknown = Reflect.get(target, property, target);
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
  const runners = known.map((consumer) => {
    const runner = new ConsumerRunner(consumer, {
      transport: timed,
      context,
      logger: app.logger,
      tracing: app.tracing,
      prefetch: options.concurrency,
      // A payment that committed order.completed: relayed now, not at the relay's next poll.
      emitted: () => relay?.notify(),
      ...(options.retryDelaysMs ? { retryDelaysMs: options.retryDelaysMs } : {}),
    });
    runner.onSettled = (outcome, delivery) => {
      const start = received.get(delivery);
      app.metrics.consumerSettled(consumer.name, outcome, start === undefined ? 0 : (performance.now() - start) / 1000);
    };
    return runner;
  });
  // Every consumer's queues, also those this process does not run: events the relay publishes wait
  // in them for the process that does, instead of being dropped for want of a queue.
  for (const runner of runners) await transport.declare(runner.spec);
  const selected = runners.filter((r) => wanted.includes(r.consumer.name));
  const started: ConsumerRunner[] = [];
  try {
    for (const runner of selected) {
      await runner.start();
      started.push(runner);
    }
  } catch (err) {
    await Promise.allSettled(started.map((r) => r.stop()));
    throw err;
  }
  relay?.start();
  // On PostgreSQL, rows other processes commit (svc serve's orders) wake the relay at once.
  const listener = relay && app.outboxSignal?.listen(() => relay?.notify());
  if (transport.kind === 'in-process') {
    app.logger.info(
      { events: 'in-process', consumers: selected.map((r) => r.consumer.name) },
      'events dispatched in-process (no AMQP_URL): the event_deliveries table is the queue; set AMQP_URL to use RabbitMQ',
    );
  }
  let stopped: Promise<{ drained: boolean }> | undefined;
  return {
    consumers: selected.map((r) => r.consumer.name),
    relay: Boolean(relay),
    notify: () => relay?.notify(),
    stop: (timeoutMs) =>
      (stopped ??= (async () => {
        const drained = await withinTimeout(
          Promise.all(selected.map((r) => r.stop())).then(() => true),
          timeoutMs,
        );
        if (!drained) app.logger.warn({ timeoutMs }, 'messages in flight did not finish in time; they will be delivered again');
        // The relay stops before the App closes: a relay that outlives its App hangs.
        await listener?.close();
        await relay?.stop();
        return { drained };
      })()),
  };
}

// Deliveries each consumer handles at once beside the API. On the embedded database its transactions
// take turns on one connection anyway; a few in flight keep a slow provider call from idling the rest.
const BESIDE_API_CONCURRENCY = 4;

/**
 * The pipeline as svc serve runs it beside the API when the App has the in-process transport (no
 * AMQP_URL): the relay and every consumer, woken by each answered write. Undefined with AMQP_URL,
 * where svc worker does that work on RabbitMQ.
 */
export async function besideApi(app: App): Promise<{ changed(): void; stop(timeoutMs: number): Promise<unknown> } | undefined> {
  if (!app.publisher || !app.transport) return undefined;
  const pipeline = await startPipeline(app, { concurrency: BESIDE_API_CONCURRENCY, relay: true });
  return { changed: () => pipeline.notify(), stop: (timeoutMs) => pipeline.stop(timeoutMs) };
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
