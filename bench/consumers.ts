// `npm run bench -- consumers`: the CPU and the statements one order costs the payments, receipts
// and mail consumers, in this process. The consumers are the real ones (src/worker/consumers) run
// by the real ConsumerRunner, which svc worker runs on RabbitMQ: parse, the inbox insert with the
// handler's first statement, the handler, the commit, the ack. They run on two transports, in
// interleaved rounds: a direct one (below), whose cost is nil, so its figures are what a consumer
// costs whichever transport carries it (the in-process transport's claims, lease renewals and acks
// would be counted as the consumers' and vary with timing); and the real RabbitMq adapter on the
// local broker, under an AMQP prefix of its own, as svc worker runs, so the difference is what the
// broker path itself costs the worker per order. The relay that turns outbox rows into messages is
// the real one too, on a publisher that hands them to the bench, or on RabbitMQ with confirms.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { connect as amqpConnect } from 'amqplib';
import pg from 'pg';
import pino from 'pino';
import { RabbitMq } from '../src/adapters/rabbitmq.js';
import { createApp, type App } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { createLoggerTo } from '../src/logger.js';
import type { EventMessage, EventType } from '../src/domain/events/events.js';
import type { EventPublisher } from '../src/domain/events/publisher.js';
import type { ConsumerSpec, ConsumerTransport, Delivery, Subscription } from '../src/domain/events/transport.js';
import { ConsumerRunner, type Outcome } from '../src/worker/consumer.js';
import { consumers } from '../src/worker/consumers/index.js';
import { OutboxRelay } from '../src/worker/relay.js';
import { FAKE_SENDGRID_API_KEY } from '../test/fakes/sendgrid.js';
import { FAKE_STRIPE_SECRET_KEY } from '../test/fakes/stripe.js';
import { S3RVER_CREDENTIALS } from '../test/fakes/s3.js';
import { admin, cpuMicros, fmt, idOf, startFakesProcess, withDatabase } from './harness.js';
import type { BenchOptions, Report } from './report.js';

const USERS = 100;
const PRODUCTS = 100;
const ITEMS_PER_ORDER = 3;
const CONSUMERS = ['payments', 'receipts', 'mail'] as const;
type Step = 'relay' | (typeof CONSUMERS)[number];

// Every statement that reaches a pg.Client: the App's pool uses subclasses of it, whose query ends
// in this one. Only the App runs statements while a step is measured.
let statements = 0;
const query: unknown = Reflect.get(pg.Client.prototype, 'query');
Reflect.set(pg.Client.prototype, 'query', function counted(this: pg.Client, ...args: unknown[]): unknown {
  statements++;
  return (query as (...args: unknown[]) => unknown).apply(this, args);
});

/** What one step cost for one round's orders. */
interface Cost {
  cpuMs: number;
  statements: number;
  wallMs: number;
  /** CPU of the PostgreSQL server processes serving the bench database (Linux /proc); undefined elsewhere. */
  serverCpuMs: number | undefined;
}

/**
 * The PostgreSQL backends of the bench database but the bench's own, and the CPU each has used so
 * far, from /proc (PostgreSQL on this machine); read outside the measured statements.
 */
type Backends = (() => Promise<Map<number, number | undefined>>) | undefined;

async function measured(fn: () => Promise<void>, backends: Backends): Promise<Cost> {
  const server = await backends?.();
  const cpu = process.cpuUsage();
  const before = statements;
  const start = performance.now();
  await fn();
  const used = process.cpuUsage(cpu);
  const cost = { cpuMs: (used.user + used.system) / 1000, statements: statements - before, wallMs: performance.now() - start };
  const after = await backends?.();
  let serverUs: number | undefined = server && after ? 0 : undefined;
  // A backend that started during the step counts from zero; one that ended during it is lost (the pool keeps them for 10 s idle).
  for (const [pid, us] of after ?? []) if (serverUs !== undefined && us !== undefined) serverUs += us - (server?.get(pid) ?? 0);
  return { ...cost, serverCpuMs: serverUs === undefined ? undefined : serverUs / 1000 };
}

/**
 * The transport of this bench: each consumer's messages handed straight to its runner, `prefetch`
 * at a time, and settled in memory. Anything but an ack (a retry, a deferral, a dead letter) is a
 * failure of the run: every order is expected to go through.
 */
class DirectTransport implements ConsumerTransport {
  readonly kind = 'direct';
  private readonly subscribers = new Map<string, { prefetch: number; onDelivery: (delivery: Delivery) => Promise<void> }>();
  readonly failures: string[] = [];

  declare(): Promise<void> {
    return Promise.resolve();
  }

  subscribe(spec: ConsumerSpec, options: { prefetch: number }, onDelivery: (delivery: Delivery) => Promise<void>): Promise<Subscription> {
    this.subscribers.set(spec.name, { prefetch: options.prefetch, onDelivery });
    const gone = () => {
      this.subscribers.delete(spec.name);
      return Promise.resolve();
    };
    return Promise.resolve({ cancel: gone, close: gone });
  }

  /** Hands the messages to the consumer, at most its prefetch in flight; resolves once each is settled. */
  async deliver(consumer: string, messages: readonly EventMessage[]): Promise<void> {
    const subscriber = this.subscribers.get(consumer);
    if (!subscriber) throw new Error(`${consumer} is not subscribed`);
    let next = 0;
    const lane = async () => {
      while (next < messages.length) {
        const message = messages[next++]!;
        await subscriber.onDelivery(this.delivery(consumer, message));
      }
    };
    await Promise.all(Array.from({ length: subscriber.prefetch }, lane));
  }

  private delivery(consumer: string, message: EventMessage): Delivery {
    const failed = (what: string) => (_delay: unknown, error?: unknown) => {
      this.failures.push(`${consumer} ${message.id}: ${what}: ${String(error ?? _delay)}`);
      return Promise.resolve();
    };
    return {
      body: Buffer.from(JSON.stringify(message)),
      messageId: message.id,
      attempts: 0,
      deferrals: 0,
      firstDeferredAt: undefined,
      ack: () => Promise.resolve(),
      retry: failed('retry'),
      defer: failed('deferred'),
      deadLetter: (reason) => failed('dead-letter')(reason),
    };
  }
}

/** The relay's publisher here: the messages kept for the bench to deliver. */
class Collector implements EventPublisher {
  readonly kind = 'direct';
  messages: EventMessage[] = [];
  publish(messages: readonly EventMessage[]): Promise<void> {
    this.messages.push(...messages);
    return Promise.resolve();
  }
  check(): Promise<string> {
    return Promise.resolve('ok');
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** The local broker of the RabbitMQ rounds (README: services on 127.0.0.1). */
const AMQP_URL = process.env.BENCH_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';

/** One way of running the consumers: an App with its adapters (the stand-ins, or the SDKs against the fakes) on a transport. */
interface Setup {
  name: string;
  app: App;
  runners: ConsumerRunner[];
  relay: OutboxRelay;
  outcomes: Map<Outcome, number>;
  /** Runs one consumer until it has settled `n` messages of `type` (those the relay passes just published). */
  consume(consumer: string, type: EventType, n: number): Promise<void>;
  /** Forgets the round's messages (the direct transport keeps them until both order.completed consumers had them). */
  endRound(): void;
  /** What went wrong in the round: anything but a processed message. */
  failures: string[];
  /** Deletes what the setup made outside the database (the RabbitMQ prefix's queues and exchange). */
  cleanUp(): Promise<void>;
}

function newApp(env: Record<string, string>, overrides: Pick<Parameters<typeof createApp>[1] & object, 'publisher' | 'transport'>) {
  // Logged as svc worker logs (info: a line per receipt stored and per email sent), into /dev/null.
  const logger = createLoggerTo('info', pino.destination({ dest: '/dev/null', sync: true }));
  return createApp(loadConfig(env), { role: 'worker', logger, ...overrides });
}

function runnersOf(app: App, transport: ConsumerTransport, concurrency: number, outcomes: Map<Outcome, number>, failures: string[]): ConsumerRunner[] {
  const context = (input: { actor: string; traceId?: string }) => app.context(input);
  return consumers(app).map((consumer) => {
    const runner = new ConsumerRunner(consumer, { transport, context, logger: app.logger, tracing: app.tracing, prefetch: concurrency });
    runner.onSettled = (outcome, delivery) => {
      outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
      if (outcome !== 'processed') failures.push(`${consumer.name} ${delivery.messageId}: ${outcome}`);
    };
    return runner;
  });
}

/** What every setup holds: its App and runners, a relay on its publisher, and the round's outcomes and failures. */
function setupOf(
  name: string,
  app: App,
  runners: ConsumerRunner[],
  publisher: ConstructorParameters<typeof OutboxRelay>[0]['publisher'],
  outcomes: Map<Outcome, number>,
  failures: string[],
): Pick<Setup, 'name' | 'app' | 'runners' | 'relay' | 'outcomes' | 'failures'> {
  const relay = new OutboxRelay({ publisher, context: (input) => app.context(input), logger: app.logger });
  return { name, app, runners, relay, outcomes, failures };
}

/** The direct transport: each consumer subscribed throughout, handed the relay's messages by the bench. */
async function directSetup(name: string, env: Record<string, string>, concurrency: number): Promise<Setup> {
  const transport = new DirectTransport();
  const collector = new Collector();
  const app = await newApp(env, { publisher: collector, transport });
  const outcomes = new Map<Outcome, number>();
  const failures = transport.failures;
  const runners = runnersOf(app, transport, concurrency, outcomes, failures);
  for (const runner of runners) await runner.start();
  return {
    ...setupOf(name, app, runners, collector, outcomes, failures),
    async consume(consumer, type, n) {
      const messages = collector.messages.filter((m) => m.type === type);
      if (messages.length !== n) throw new Error(`${name}: ${messages.length} ${type} events relayed for ${n} orders`);
      await transport.deliver(consumer, messages);
    },
    endRound: () => (collector.messages = []),
    cleanUp: () => Promise.resolve(),
  };
}

/**
 * The RabbitMq adapter of svc worker (App built with AMQP_URL) under a prefix of its own: the relay
 * publishes to its exchange with confirms, and each consumer subscribes for its step only (its
 * queues declared beforehand, so the relay's messages wait in them), until it settled the step's
 * messages; the subscription's channel opened and closed is counted in the step (a few
 * milliseconds a round).
 */
async function rabbitSetup(name: string, env: Record<string, string>, concurrency: number): Promise<Setup> {
  const prefix = `svcbench-${randomBytes(4).toString('hex')}`;
  const app = await newApp({ ...env, AMQP_URL, AMQP_PREFIX: prefix }, {});
  const rabbit = app.transport;
  if (!(rabbit instanceof RabbitMq) || !app.publisher) throw new Error(`${name}: the App did not connect to RabbitMQ`);
  const outcomes = new Map<Outcome, number>();
  const failures: string[] = [];
  const runners = runnersOf(app, rabbit, concurrency, outcomes, failures);
  for (const runner of runners) await rabbit.declare(runner.spec);
  return {
    ...setupOf(name, app, runners, app.publisher, outcomes, failures),
    async consume(consumer, _type, n) {
      const runner = runners.find((r) => r.consumer.name === consumer);
      if (!runner) throw new Error(`${name}: no consumer ${consumer}`);
      const onSettled = runner.onSettled;
      let count = 0;
      const done = new Promise<void>((resolve) => {
        runner.onSettled = (outcome, delivery) => {
          onSettled?.(outcome, delivery);
          // Anything but processed ends the step (a retry would only come back after its wait).
          if (++count === n || outcome !== 'processed') resolve();
        };
      });
      try {
        await runner.start();
        await done;
        await runner.stop();
      } finally {
        runner.onSettled = onSettled;
      }
    },
    endRound: () => {},
    async cleanUp() {
      const connection = await amqpConnect(AMQP_URL);
      try {
        const channel = await connection.createChannel();
        for (const runner of runners) {
          const q = rabbit.queues(runner.spec);
          for (const queue of [q.work, q.dead, ...q.retries.map((r) => r.queue)]) await channel.deleteQueue(queue);
        }
        await channel.deleteExchange(rabbit.exchange);
      } finally {
        await connection.close();
      }
    },
  };
}

async function tearDown(setup: Setup): Promise<void> {
  for (const runner of setup.runners) await runner.stop();
  await setup.app.close();
  await setup.cleanUp();
}

/** Places `n` orders of ITEMS_PER_ORDER lines, `k` at a time, through the orders service (not measured). */
async function placeOrders(app: App, userIds: string[], n: number, k: number): Promise<void> {
  let placed = 0;
  const lane = async () => {
    while (placed < n) {
      const i = placed++;
      const first = (i * 7) % PRODUCTS;
      const items = Array.from({ length: ITEMS_PER_ORDER }, (_, j) => ({
        sku: `SKU-${String(((first + j * 13) % PRODUCTS) + 1).padStart(5, '0')}`,
        quantity: 1 + (j % 2),
      }));
      await app.orders.create(app.context({ actor: 'bench' }), { userId: userIds[i % userIds.length]!, paymentMethod: 'pm_card_visa', items });
    }
  };
  await Promise.all(Array.from({ length: k }, lane));
}

/** One round: `n` orders placed, then relayed, paid, relayed, given a receipt and an email, each step measured on its own. */
async function round(setup: Setup, userIds: string[], n: number, k: number, backends: Backends): Promise<Record<Step, Cost>> {
  await placeOrders(setup.app, userIds, n, k);
  let relayed = 0;
  const relayAll = async () => {
    let published: number;
    while ((published = (await setup.relay.relayOnce()).published) > 0) relayed += published;
  };
  setup.outcomes.clear();
  const relayCreated = await measured(relayAll, backends);
  const payments = await measured(() => setup.consume('payments', 'order.created', n), backends);
  const relayCompleted = await measured(relayAll, backends);
  const receipts = await measured(() => setup.consume('receipts', 'order.completed', n), backends);
  const mail = await measured(() => setup.consume('mail', 'order.completed', n), backends);
  setup.endRound();
  const processed = setup.outcomes.get('processed') ?? 0;
  if (setup.failures.length > 0 || relayed !== 2 * n || processed !== 3 * n) {
    throw new Error(`${setup.name}: of ${n} orders, ${relayed} events relayed, ${processed} messages processed; ${setup.failures.slice(0, 3).join('; ')}`);
  }
  return { relay: sum([relayCreated, relayCompleted]), payments, receipts, mail };
}

function sum(costs: Cost[]): Cost {
  const total = (f: (c: Cost) => number) => costs.reduce((t, c) => t + f(c), 0);
  const server = costs.every((c) => c.serverCpuMs !== undefined) ? total((c) => c.serverCpuMs!) : undefined;
  return { cpuMs: total((c) => c.cpuMs), statements: total((c) => c.statements), wallMs: total((c) => c.wallMs), serverCpuMs: server };
}

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};

export async function run(options: BenchOptions): Promise<Report> {
  const n = options.orders ?? 200;
  const k = options.concurrency ?? 10;
  const rounds = options.rounds ?? 3;
  const scratch = mkdtempSync(join(tmpdir(), 'svc-bench-consumers-'));
  const fakes = await startFakesProcess();
  try {
    return await withDatabase('svc_bench_consumers', async (url) => {
      const base = { DATABASE_URL: url, LOG_LEVEL: 'info', PUBLIC_URL: 'http://127.0.0.1:8080', MAIL_FROM: 'svc bench <orders@bench.example.com>' };
      const envs: Record<string, Record<string, string>> = {
        'stand-ins': { ...base, SVC_DATA_DIR: join(scratch, 'stand-ins') },
        'SDKs + fakes': {
          ...base,
          SVC_DATA_DIR: join(scratch, 'sdks'),
          STRIPE_SECRET_KEY: FAKE_STRIPE_SECRET_KEY,
          STRIPE_API_URL: fakes.ready.stripe,
          SENDGRID_API_KEY: FAKE_SENDGRID_API_KEY,
          SENDGRID_API_URL: fakes.ready.sendgrid,
          S3_BUCKET: fakes.ready.s3.bucket,
          S3_ENDPOINT: fakes.ready.s3.url,
          S3_REGION: 'us-east-1',
          S3_FORCE_PATH_STYLE: 'true',
        },
      };
      // The AWS SDK reads its credentials from the environment itself.
      process.env.AWS_ACCESS_KEY_ID = S3RVER_CREDENTIALS.accessKeyId;
      process.env.AWS_SECRET_ACCESS_KEY = S3RVER_CREDENTIALS.secretAccessKey;

      process.stderr.write('migrating a fresh database…\n');
      const migrator = await createApp(loadConfig({ DATABASE_URL: url, LOG_LEVEL: 'silent' }), { logger: createLoggerTo('silent', process.stderr) });
      try {
        await migrator.migrations.up();
      } finally {
        await migrator.close();
      }
      const userIds = await admin(async (client) => {
        await client.query(`insert into users (id, email, name, role, status, created_at, updated_at)
          select ${idOf('usr', 'n')}, 'user' || n || '@bench.example.com', 'User ' || n, 'user', 'active', now(), now() from generate_series(1, ${USERS}) n`);
        await client.query(`insert into products (id, sku, name, price, currency, stock, active, created_at, updated_at)
          select ${idOf('prd', 'n')}, 'SKU-' || lpad(n::text, 5, '0'), 'Product ' || n, 100 + (n * 7919) % 99900, 'USD', 1000000000, true, now(), now()
          from generate_series(1, ${PRODUCTS}) n`);
        return (await client.query<{ id: string }>('select id from users order by id')).rows.map((r) => r.id);
      }, url);

      // PostgreSQL's CPU, when it runs on this machine and /proc shows its processes.
      const watcher = new pg.Client({ connectionString: url });
      await watcher.connect();
      const backends: Backends = async () => {
        const { rows } = await watcher.query<{ pid: number }>(
          'select pid from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()',
        );
        return new Map(rows.map((r) => [r.pid, cpuMicros(r.pid)]));
      };
      const setups: Setup[] = [];
      try {
        // The SDKs against the fakes (as deployed) on both transports, the stand-ins on the direct one.
        setups.push(await directSetup('stand-ins, direct', envs['stand-ins']!, k));
        setups.push(await directSetup('SDKs + fakes, direct', envs['SDKs + fakes']!, k));
        setups.push(await rabbitSetup('SDKs + fakes, RabbitMQ', { ...envs['SDKs + fakes']!, SVC_DATA_DIR: join(scratch, 'rabbitmq') }, k));
        // A warm-up round each (connections opened, statements prepared, code compiled), not counted.
        for (const setup of setups) await round(setup, userIds, 2 * k, k, backends);
        const costs = new Map<string, Record<Step, Cost>[]>(setups.map((s) => [s.name, []]));
        for (let r = 1; r <= rounds; r++) {
          for (const setup of setups) {
            process.stderr.write(`round ${r} of ${rounds}, ${setup.name}: ${n} orders, ${k} at a time…\n`);
            costs.get(setup.name)!.push(await round(setup, userIds, n, k, backends));
          }
        }
        return report(costs, { n, k, rounds });
      } finally {
        for (const setup of setups) await tearDown(setup);
        await watcher.end();
      }
    });
  } finally {
    await fakes.stop();
    rmSync(scratch, { recursive: true, force: true });
  }
}

function report(costs: Map<string, Record<Step, Cost>[]>, { n, k, rounds }: { n: number; k: number; rounds: number }): Report {
  const rows: string[][] = [];
  const perOrder = (cost: Cost) => ({
    cpu: cost.cpuMs / n,
    statements: cost.statements / n,
    wall: cost.wallMs / n,
    server: cost.serverCpuMs === undefined ? undefined : cost.serverCpuMs / n,
  });
  const series = (byRound: Record<Step, Cost>[]): [string, Cost[]][] => [
    ...CONSUMERS.map((c): [string, Cost[]] => [c, byRound.map((r) => r[c])]),
    ['all three', byRound.map((r) => sum(CONSUMERS.map((c) => r[c])))],
    ['relay', byRound.map((r) => r.relay)],
  ];
  for (const [setup, byRound] of costs) {
    for (const [step, costsOf] of series(byRound)) {
      const each = costsOf.map(perOrder);
      rows.push([
        setup,
        step,
        fmt(median(each.map((e) => e.cpu)), 2),
        each.map((e) => fmt(e.cpu, 2)).join(', '),
        fmt(median(each.map((e) => e.statements)), 2),
        each.every((e) => e.server !== undefined) ? fmt(median(each.map((e) => e.server!)), 2) : 'n/a',
        fmt(median(each.map((e) => e.wall)), 2),
      ]);
    }
  }
  // The broker path's own cost: each RabbitMQ round less the direct round of the same adapters run
  // just before it (the machine's load drifts less within a pair than across rounds).
  for (const [setup, byRound] of costs) {
    const direct = costs.get(setup.replace(/RabbitMQ$/, 'direct'));
    if (!setup.endsWith('RabbitMQ') || !direct) continue;
    const theirs = series(direct);
    for (const [i, [step, costsOf]] of series(byRound).entries()) {
      const diffs = costsOf.map((c, r) => (c.cpuMs - theirs[i]![1][r]!.cpuMs) / n);
      rows.push([`${setup} − direct`, step, fmt(median(diffs), 2), diffs.map((d) => fmt(d, 2)).join(', '), '', '', '']);
    }
  }
  return {
    title: `consumers: ${n} orders per round through the real consumers and runner, ${k} at a time, on PostgreSQL, ${rounds} interleaved rounds`,
    measurements: [],
    table: { header: ['adapters', 'step', 'CPU ms/order', 'by round', 'statements/order', 'PostgreSQL CPU ms/order', 'wall ms/order'], rows },
    goals: [],
    notes: [
      'CPU: process.cpuUsage() of this process (every thread) around each step; the fakes run in a process of their own, PostgreSQL in its server.',
      'PostgreSQL CPU: the server processes of the bench database (its connections), from /proc; n/a when the server runs elsewhere.',
      'statements: every query that reached a pg.Client (begin and commit included), per order; the figures are medians over the rounds.',
      'relay: the real OutboxRelay\'s passes (batches of up to 100) for the order.created and order.completed rows, on a publisher that hands the messages over (direct) or on RabbitMQ with confirms: not in "all three".',
      'RabbitMQ: the RabbitMq adapter of svc worker on the local broker (its prefix deleted afterwards); each consumer subscribes for its step (a channel opened and closed, counted). "− direct": the CPU per order of each RabbitMQ round less that of the direct round with the same adapters just before it, the broker path\'s own cost (the broker\'s CPU not included).',
      'wall: the step’s elapsed time per order with k in flight (the consumers wait on PostgreSQL and the providers meanwhile).',
    ],
  };
}
