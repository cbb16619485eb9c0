import { fork, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import amqp from 'amqplib';
import autocannon from 'autocannon';
import pg from 'pg';
import { configSchema, loadConfig } from '../src/config.js';
import { createLogger } from '../src/logger.js';
import { AccessTokens, generateSigningJwk, loadSigningKeys } from '../src/adapters/jwt.js';
import { RabbitMq } from '../src/adapters/rabbitmq.js';
import { DEFAULT_RETRY_DELAYS_MS } from '../src/worker/consumer.js';
import { FAKE_SENDGRID_API_KEY } from '../test/fakes/sendgrid.js';
import { FAKE_STRIPE_SECRET_KEY } from '../test/fakes/stripe.js';
import { S3RVER_CREDENTIALS } from '../test/fakes/s3.js';
import { ensureBuilt } from './cli.js';
import type { FakesReady, FakesRequest, FakesStats } from './fakes-host.js';
import {
  admin,
  BIN,
  exec,
  fmt,
  idOf,
  ORDER_ID,
  orderBody,
  pick,
  ROOT,
  startChild,
  withDatabase,
  type Child,
  type Env,
  type Figures,
  type MailSeen,
} from './harness.js';
import type { BenchOptions, Goal, Report } from './report.js';

/** The RabbitMQ the tests use. */
const AMQP_URL = process.env.TEST_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
const CONNECTIONS = 50;
/** Connections of the paced phase: enough that a slow answer does not hold the rate back. */
const PACED_CONNECTIONS = 20;
const WARMUP_S = 3;
const WORKERS = 2;
const USERS = 1_000;
const EMBEDDED_USERS = 200;
const PRODUCTS = 1_000;
const ITEMS_PER_ORDER = 5;
const INITIAL_STOCK = 1_000_000_000;
/** How long the paced phase's last orders get to be done after the load stops. */
const DRAIN_TIMEOUT_MS = 60_000;
/** How long an order placed on an embedded svc serve may stay pending before the in-process pipeline counts as absent. */
const EMBEDDED_DETECT_MS = 10_000;
/** Targets (issue 9): done orders/s ≥ 15 % of creation alone; p99 lag < 2 s at the paced load. */
const MIN_RATIO = 0.15;
const MAX_P99_LAG_MS = 2_000;

const logger = createLogger('silent');
/** SVC_BENCH_CPU_PROF=<folder>: V8 CPU profiles of svc serve and the workers (on PostgreSQL) written there, as in the api bench. */
const profiling = process.env.SVC_BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.SVC_BENCH_CPU_PROF}`] : [];

/** What "done" includes in this build: always the `completed` status, the email and the receipt once their consumers exist. */
interface DoneDefinition {
  consumers: string[];
  mail: boolean;
  receipts: boolean;
  /** Why the receipts are not counted although a `receipts` consumer runs. */
  receiptsMissing?: string;
}

/** One order's way through the pipeline, in ms since the epoch. */
interface Progress {
  id: string;
  email: string;
  createdMs: number;
  /** When order.created left the outbox (the relay published it). */
  relayedMs?: number;
  /** When it moved to `completed`: the created_at of its order.completed outbox row, written by that transition. */
  completedMs?: number;
  receiptMs?: number;
  mailMs?: number;
  /** The latest of the above that "done" includes; unset until all of them are there. */
  doneMs?: number;
}

interface Saturation {
  creation: Figures;
  /** The measured window (after the warm-up), ms since the epoch. */
  from: number;
  to: number;
}

interface Throughput {
  creation: Figures;
  doneInWindow: number;
  donePerSec: number;
  /** Orders created in the run that were not done when it was counted (the backlog). */
  backlog: number;
  /** Each step's own rate in the window (per second): which one holds the pipeline back. */
  steps: { relayed: number; paid: number; receipts: number; emails: number };
}

interface Paced {
  creation: Figures;
  created: number;
  done: number;
  lagMs: number[];
  completedLagMs: number[];
  stages: { relay: number[]; payment: number[]; receipt: number[]; mail: number[] };
}

type Embedded = { available: false; why: string } | { available: true; throughput: Throughput; done: DoneDefinition; mailLinked: string };

// ---------------------------------------------------------------------------------------------
// The outside services: Stripe, SendGrid and S3 stand-ins in a process of their own.

interface Fakes {
  ready: FakesReady;
  /** Every email received so far (fetched incrementally). */
  mail(): Promise<MailSeen[]>;
  stats(): Promise<FakesStats>;
  pid: number;
  stop(): Promise<void>;
}

function startFakes(): Promise<Fakes> {
  return new Promise((resolve, reject) => {
    const child: ChildProcess = fork(join(ROOT, 'bench', 'fakes-host.ts'), [], {
      cwd: ROOT,
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    const seen: MailSeen[] = [];
    const ask = <T>(request: FakesRequest, type: string): Promise<T> =>
      new Promise((answer) => {
        const on = (message: { type: string }) => {
          if (message.type !== type) return;
          child.off('message', on);
          answer(message as T);
        };
        child.on('message', on);
        child.send(request);
      });
    const exited = new Promise<void>((done) => child.once('exit', () => done()));
    child.once('exit', (code, signal) => reject(new Error(`the fakes (bench/fakes-host.ts) exited with ${code ?? signal} before they were ready`)));
    child.once('message', (ready: FakesReady) =>
      resolve({
        ready,
        pid: child.pid!,
        async mail() {
          const { messages } = await ask<{ messages: MailSeen[] }>({ type: 'mail', from: seen.length }, 'mail');
          seen.push(...messages);
          return seen;
        },
        stats: () => ask<FakesStats>({ type: 'stats' }, 'stats'),
        async stop() {
          if (child.exitCode !== null || child.signalCode !== null) return;
          child.send({ type: 'close' } satisfies FakesRequest);
          const kill = setTimeout(() => child.kill('SIGKILL'), 5_000);
          await exited;
          clearTimeout(kill);
        },
      }),
    );
  });
}

// ---------------------------------------------------------------------------------------------
// Processes, database and broker.

/** The environment without any svc configuration inherited from the caller's shell or config file. */
function cleanEnv(extra: Env): Env {
  const env: Env = { ...process.env, SVC_CONFIG: undefined };
  for (const key of Object.keys(configSchema)) env[key] = undefined;
  // The load comes from one address: the rate limits are off, or nearly every order is refused
  // (429) and the bench measures the limiter rather than the pipeline (the api bench measures it).
  const unlimited = { RATE_LIMIT_IP_PER_MINUTE: '0', RATE_LIMIT_AUTH_IP_PER_MINUTE: '0', RATE_LIMIT_API_KEY_PER_HOUR: '0' };
  return { ...env, ...unlimited, ...extra };
}

interface Worker extends Child {
  consumers: string[];
}

async function startWorker(n: number, env: Env): Promise<Worker> {
  const child = await startChild(`svc worker #${n}`, [...profiling, BIN, 'worker', '--health-port', '0'], env, /svc worker: started \(consumers: ([^;]*);/);
  return { ...child, consumers: child.url === 'none' ? [] : child.url.split(',').map((c) => c.trim()) };
}

async function startWorkers(env: Env): Promise<Worker[]> {
  const workers: Worker[] = [];
  try {
    for (let n = 1; n <= WORKERS; n++) workers.push(await startWorker(n, env));
  } catch (err) {
    await Promise.all(workers.map((w) => w.stop()));
    throw err;
  }
  return workers;
}

/** Purges (or deletes) the queues of `consumers` under `prefix`; with `remove`, also the dead-letter queues and the exchange. */
async function clearBroker(prefix: string, consumers: string[], remove: boolean): Promise<void> {
  const rabbit = await RabbitMq.connect(AMQP_URL, { logger, prefix });
  const conn = await amqp.connect(AMQP_URL);
  try {
    for (const name of consumers) {
      const q = rabbit.queues({ name, retryDelaysMs: DEFAULT_RETRY_DELAYS_MS });
      for (const queue of [q.work, ...q.retries.map((r) => r.queue), ...(remove ? [q.dead] : [])]) {
        // A fresh channel each time: an operation on a queue that is not there closes its channel.
        const ch = await conn.createChannel();
        ch.on('error', () => {});
        await (remove ? ch.deleteQueue(queue) : ch.purgeQueue(queue)).catch(() => {});
        await ch.close().catch(() => {});
      }
    }
    if (remove) {
      const ch = await conn.createChannel();
      await ch.deleteExchange(rabbit.exchange);
      await ch.close();
    }
  } finally {
    await conn.close();
    await rabbit.close();
  }
}

/** Users and products as the api bench seeds them (no earlier orders: the pipeline bench counts the orders it places). */
async function seed(client: pg.Client, users: number): Promise<void> {
  await client.query(`insert into users (id, email, name, role, status, created_at, updated_at)
    select ${idOf('usr', 'n')}, 'user' || n || '@bench.example.com', 'User ' || n, case when n = 1 then 'admin' else 'user' end, 'active', now(), now()
    from generate_series(1, ${users}) n`);
  await client.query(`insert into products (id, sku, name, price, currency, stock, active, created_at, updated_at)
    select ${idOf('prd', 'n')}, 'SKU-' || lpad(n::text, 5, '0'), 'Product ' || n, 100 + (n * 7919) % 99900, 'USD', ${INITIAL_STOCK}, true, now(), now()
    from generate_series(1, ${PRODUCTS}) n`);
}

/** Bearer tokens of the seeded users (role user), signed with the servers' key set as /auth/login would. */
async function tokensFor(client: pg.Client, keysFile: string): Promise<string[]> {
  const config = loadConfig({ JWT_KEYS_FILE: keysFile, LOG_LEVEL: 'silent' });
  const tokens = new AccessTokens(await loadSigningKeys(config, logger), { issuer: config.JWT_ISSUER, audience: config.JWT_AUDIENCE, ttlSeconds: 3_600 });
  const { rows } = await client.query<{ id: string }>(`select id from users where role = 'user' order by id`);
  return Promise.all(rows.map((r) => tokens.sign({ sub: r.id, role: 'user' })));
}

function createOrders(tokens: string[]): Partial<autocannon.Options> {
  return {
    requests: [
      {
        method: 'POST',
        setupRequest: (req) => ({
          ...req,
          path: '/api/v1/orders',
          body: orderBody(PRODUCTS, ITEMS_PER_ORDER),
          headers: { ...req.headers, authorization: `Bearer ${pick(tokens)}`, 'content-type': 'application/json' },
        }),
      },
    ],
  };
}

const figuresOf = (name: string, r: autocannon.Result): Figures => ({
  name,
  reqPerSec: r.requests.average,
  p50: r.latency.p50,
  p99: r.latency.p99,
  errors: r.errors + r.non2xx,
  ok: r['2xx'],
});

/** Orders placed as fast as svc serve takes them (50 connections): a warm-up, then the measured window. */
async function saturate(name: string, url: string, tokens: string[], durationS: number): Promise<Saturation> {
  process.stderr.write(`measuring ${name} (${WARMUP_S} s warm-up, ${durationS} s)…\n`);
  const options = createOrders(tokens);
  await autocannon({ url, connections: CONNECTIONS, duration: WARMUP_S, ...options });
  const from = Date.now();
  const r = await autocannon({ url, connections: CONNECTIONS, duration: durationS, ...options });
  return { creation: figuresOf(name, r), from, to: Date.now() };
}

/** CPU time (user + system) of a process so far, in ms, from /proc; undefined when it cannot be read. */
function cpuMs(pid: number, ticksPerSec: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) / ticksPerSec) * 1000;
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// Which orders are done, and when.

/** When the rows of `files` were made, and the orders they name (any column, by id): a receipt per order. */
async function receiptTimes(client: pg.Client, sinceMs: number): Promise<Map<string, number>> {
  const { rows: cols } = await client.query<{ column_name: string }>(
    `select column_name from information_schema.columns where table_name = 'files' and data_type like 'timestamp%' order by ordinal_position`,
  );
  const stamp = cols.find((c) => /created|uploaded|stored/.test(c.column_name)) ?? cols[0];
  const times = new Map<string, number>();
  if (!stamp) return times;
  const { rows } = await client.query<{ row: string; at: number }>(
    `select row_to_json(f)::text as row, extract(epoch from f."${stamp.column_name}") * 1000 as at from files f where f."${stamp.column_name}" >= to_timestamp($1 / 1000.0)`,
    [sinceMs],
  );
  for (const r of rows) for (const id of r.row.match(ORDER_ID) ?? []) times.set(id, Math.min(times.get(id) ?? Infinity, Number(r.at)));
  return times;
}

/**
 * Links emails to orders: by the order id an email names; when no email names one (a template that
 * shows another reference), by recipient, a user's emails matched in arrival order with that user's
 * completed orders in completion order. Says which it did.
 */
function mailTimes(orders: Progress[], mails: MailSeen[]): { times: Map<string, number>; linked: string } {
  const times = new Map<string, number>();
  if (mails.some((m) => m.orderIds.length > 0)) {
    for (const m of mails) for (const id of m.orderIds) times.set(id, Math.min(times.get(id) ?? Infinity, m.at));
    return { times, linked: 'by the order id it names' };
  }
  const byRecipient = new Map<string, number[]>();
  for (const m of [...mails].sort((a, b) => a.at - b.at)) for (const r of m.recipients) byRecipient.set(r, [...(byRecipient.get(r) ?? []), m.at]);
  const completed = orders.filter((o) => o.completedMs !== undefined).sort((a, b) => a.completedMs! - b.completedMs!);
  const used = new Map<string, number>();
  for (const o of completed) {
    const n = used.get(o.email) ?? 0;
    const at = byRecipient.get(o.email)?.[n];
    if (at === undefined) continue;
    used.set(o.email, n + 1);
    times.set(o.id, at);
  }
  return { times, linked: mails.length ? 'by recipient (no email names its order id)' : 'no emails' };
}

/** Every order created at or after sinceMs, with the times of its steps and whether it is done. */
async function progress(
  client: pg.Client,
  sinceMs: number,
  definition: DoneDefinition,
  mails: MailSeen[],
): Promise<{ orders: Progress[]; mailLinked: string }> {
  const { rows } = await client.query<{ id: string; email: string; created: number; relayed: number | null; completed: number | null }>(
    `select o.id, u.email, extract(epoch from o.created_at) * 1000 as created,
       (select extract(epoch from min(e.published_at)) * 1000 from outbox_events e where e.aggregate_id = o.id and e.type = 'order.created') as relayed,
       (select extract(epoch from min(e.created_at)) * 1000 from outbox_events e where e.aggregate_id = o.id and e.type = 'order.completed') as completed
     from orders o join users u on u.id = o.user_id where o.created_at >= to_timestamp($1 / 1000.0)`,
    [sinceMs],
  );
  const orders: Progress[] = rows.map((r) => ({
    id: r.id,
    email: r.email.toLowerCase(),
    createdMs: Number(r.created),
    relayedMs: r.relayed === null ? undefined : Number(r.relayed),
    completedMs: r.completed === null ? undefined : Number(r.completed),
  }));
  const receipts = definition.receipts ? await receiptTimes(client, sinceMs) : new Map<string, number>();
  const mail = definition.mail ? mailTimes(orders, mails) : { times: new Map<string, number>(), linked: 'not counted' };
  for (const o of orders) {
    o.receiptMs = receipts.get(o.id);
    o.mailMs = mail.times.get(o.id);
    const steps = [o.completedMs, ...(definition.receipts ? [o.receiptMs] : []), ...(definition.mail ? [o.mailMs] : [])];
    if (steps.every((s) => s !== undefined)) o.doneMs = Math.max(...steps);
  }
  return { orders, mailLinked: mail.linked };
}

/** Orders done within the window [from, to], per second, and the backlog left. */
function throughputOf(run: Saturation, orders: Progress[]): Throughput {
  const windowS = (run.to - run.from) / 1000;
  const inWindow = (step: 'doneMs' | 'relayedMs' | 'completedMs' | 'receiptMs' | 'mailMs') =>
    orders.filter((o) => o[step] !== undefined && o[step] >= run.from && o[step] <= run.to).length;
  const doneInWindow = inWindow('doneMs');
  return {
    creation: run.creation,
    doneInWindow,
    donePerSec: doneInWindow / windowS,
    backlog: orders.filter((o) => o.doneMs === undefined).length,
    steps: {
      relayed: inWindow('relayedMs') / windowS,
      paid: inWindow('completedMs') / windowS,
      receipts: inWindow('receiptMs') / windowS,
      emails: inWindow('mailMs') / windowS,
    },
  };
}

/** Outbox rows still pending are marked published, so the next phase's relays leave the last phase's backlog alone. */
async function setAsideBacklog(client: pg.Client): Promise<number> {
  const { rowCount } = await client.query(`update outbox_events set status = 'published', published_at = now() where status = 'pending'`);
  return rowCount ?? 0;
}

async function describeDone(client: pg.Client, consumers: string[]): Promise<DoneDefinition> {
  const { rows } = await client.query<{ files: string | null }>(`select to_regclass('files')::text as files`);
  const receiptsConsumer = consumers.includes('receipts');
  const filesTable = rows[0]?.files != null;
  return {
    consumers,
    mail: consumers.includes('mail'),
    receipts: receiptsConsumer && filesTable,
    ...(receiptsConsumer && !filesTable ? { receiptsMissing: 'a receipts consumer runs but there is no files table' } : {}),
  };
}

// ---------------------------------------------------------------------------------------------
// The phases.

const wait = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface PostgresFigures {
  alone: Figures;
  setAside: number;
  definition: DoneDefinition;
  mailLinked: string;
  e2e: Throughput;
  cpu: { name: string; msPerOrder: number }[];
  /** Stripe requests during phase 2 by route and status. */
  stripeByRoute: Record<string, number>;
  paced: Paced;
}

async function onPostgres(url: string, scratch: string, keysFile: string, fakes: Fakes, options: { saturationS: number; pacedS: number; rate: number }) {
  const prefix = `svc_bench_${randomBytes(5).toString('hex')}`;
  const env = cleanEnv({
    SVC_DATA_DIR: join(scratch, 'data'),
    DATABASE_URL: url,
    JWT_KEYS_FILE: keysFile,
    LOG_LEVEL: 'info',
    AMQP_URL,
    AMQP_PREFIX: prefix,
    STRIPE_SECRET_KEY: FAKE_STRIPE_SECRET_KEY,
    STRIPE_API_URL: fakes.ready.stripe,
    SENDGRID_API_KEY: FAKE_SENDGRID_API_KEY,
    SENDGRID_API_URL: fakes.ready.sendgrid,
    MAIL_FROM: 'svc bench <orders@bench.example.com>',
    S3_BUCKET: fakes.ready.s3.bucket,
    S3_ENDPOINT: fakes.ready.s3.url,
    S3_REGION: 'us-east-1',
    S3_FORCE_PATH_STYLE: 'true',
    AWS_ACCESS_KEY_ID: S3RVER_CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: S3RVER_CREDENTIALS.secretAccessKey,
  });
  process.stderr.write('migrating the bench database with svc migrate…\n');
  await exec(process.execPath, [BIN, 'migrate'], env);
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  let consumers: string[] = [];
  const running: Child[] = [];
  try {
    await seed(client, USERS);
    const tokens = await tokensFor(client, keysFile);
    const ticks = Number((await exec('getconf', ['CLK_TCK']).catch(() => '100')).trim()) || 100;

    const serve = await startChild('svc serve', [...profiling, BIN, 'serve', '--port', '0'], env);
    running.push(serve);

    // 1. The API alone: no worker runs, the outbox rows wait.
    const alone = await saturate('order creation alone (workers not started)', serve.url, tokens, options.saturationS);
    const setAside = await setAsideBacklog(client);

    // 2. End to end at saturation: orders placed as fast as svc serve takes them, two workers running.
    // The receipt link in the confirmation email: the API's address (svc worker warns when it has to guess it).
    const workerEnv = { ...env, PUBLIC_URL: serve.url };
    let workers = await startWorkers(workerEnv);
    running.push(...workers);
    consumers = workers[0]!.consumers;
    const definition = await describeDone(client, consumers);
    const pids = [serve.pid, ...workers.map((w) => w.pid), fakes.pid];
    const cpuBefore = pids.map((pid) => cpuMs(pid, ticks));
    const ownBefore = process.cpuUsage();
    const statsBefore = await fakes.stats();
    const e2eRun = await saturate(`order creation with ${WORKERS} workers running`, serve.url, tokens, options.saturationS);
    const cpuAfter = pids.map((pid) => cpuMs(pid, ticks));
    const own = process.cpuUsage(ownBefore);
    const statsAfter = await fakes.stats();
    // Work that finished inside the window commits a moment later: let it land before counting.
    await wait(2_000);
    const counted = await progress(client, e2eRun.from - WARMUP_S * 1000 - 1_000, definition, await fakes.mail());
    const e2e = throughputOf(e2eRun, counted.orders);
    const spent = (i: number) => (cpuBefore[i] === undefined || cpuAfter[i] === undefined ? undefined : cpuAfter[i] - cpuBefore[i]);
    const perOrder = (ms: number | undefined) => (ms === undefined || e2e.doneInWindow === 0 ? NaN : ms / e2e.doneInWindow);
    const workerCpu = workers.reduce<number | undefined>(
      (sum, _w, i) => (sum === undefined || spent(1 + i) === undefined ? undefined : sum + spent(1 + i)!),
      0,
    );
    const cpu = [
      { name: 'svc serve', msPerOrder: perOrder(spent(0)) },
      { name: `${WORKERS} svc workers`, msPerOrder: perOrder(workerCpu) },
      { name: 'the fakes (Stripe, SendGrid, s3rver)', msPerOrder: perOrder(spent(pids.length - 1)) },
      { name: 'the load generator', msPerOrder: perOrder((own.user + own.system) / 1000) },
    ];
    const stripeByRoute = Object.fromEntries(
      Object.entries(statsAfter.stripeByRoute)
        .map(([route, n]) => [route, n - (statsBefore.stripeByRoute[route] ?? 0)] as const)
        .filter(([, n]) => n > 0),
    );
    process.stderr.write(`stopping the workers and setting the backlog aside…\n`);
    await Promise.all(workers.map((w) => w.stop()));
    const setAside2 = await setAsideBacklog(client);
    await clearBroker(prefix, consumers, false);

    // 3. A paced load: lag from creation to done.
    workers = await startWorkers(workerEnv);
    running.push(...workers);
    process.stderr.write(`measuring a paced load of ${options.rate} orders/s for ${options.pacedS} s…\n`);
    const pacedFrom = Date.now();
    const r = await autocannon({
      url: serve.url,
      connections: PACED_CONNECTIONS,
      overallRate: options.rate,
      duration: options.pacedS,
      ...createOrders(tokens),
    });
    const creation = figuresOf(`paced ${options.rate}/s`, r);
    process.stderr.write(`waiting for the paced orders to be done (up to ${DRAIN_TIMEOUT_MS / 1000} s)…\n`);
    const deadline = Date.now() + DRAIN_TIMEOUT_MS;
    let last: Progress[];
    for (;;) {
      last = (await progress(client, pacedFrom, definition, await fakes.mail())).orders;
      if (last.every((o) => o.doneMs !== undefined) || Date.now() > deadline) break;
      await wait(1_000);
    }
    await Promise.all(workers.map((w) => w.stop()));
    await serve.stop();
    const done = last.filter((o) => o.doneMs !== undefined);
    const gaps = (list: Progress[], a: keyof Progress, b: keyof Progress) =>
      list.filter((o) => o[a] !== undefined && o[b] !== undefined).map((o) => (o[b] as number) - (o[a] as number));
    const paced: Paced = {
      creation,
      created: last.length,
      done: done.length,
      lagMs: gaps(done, 'createdMs', 'doneMs'),
      completedLagMs: gaps(last, 'createdMs', 'completedMs'),
      stages: {
        relay: gaps(last, 'createdMs', 'relayedMs'),
        payment: gaps(last, 'relayedMs', 'completedMs'),
        receipt: gaps(last, 'completedMs', 'receiptMs'),
        mail: gaps(last, 'completedMs', 'mailMs'),
      },
    };
    return {
      alone: alone.creation,
      setAside: setAside + setAside2,
      definition,
      mailLinked: counted.mailLinked,
      e2e,
      cpu,
      stripeByRoute,
      paced,
    } satisfies PostgresFigures;
  } finally {
    await Promise.all(running.map((c) => c.stop()));
    await client.end();
    await clearBroker(prefix, consumers.length ? consumers : ['payments'], true).catch((err: unknown) =>
      process.stderr.write(`could not remove the bench's RabbitMQ queues (prefix ${prefix}): ${(err as Error).message}\n`),
    );
  }
}

/** The .eml files the embedded mail stand-in wrote: the orders each names, its recipients, when it was written. */
function emlFiles(dataDir: string): MailSeen[] {
  const dir = join(dataDir, 'mail');
  let names: string[];
  try {
    names = readdirSync(dir).filter((n) => n.endsWith('.eml'));
  } catch {
    return [];
  }
  return names.map((name) => {
    const path = join(dir, name);
    const text = readFileSync(path, 'utf8');
    const to = /^To:(.*)$/im.exec(text)?.[1] ?? '';
    return {
      // The file is named after the message's reference (order-confirmation-<orderId>), and the body may be encoded.
      orderIds: [...new Set([...(name.match(ORDER_ID) ?? []), ...(text.match(ORDER_ID) ?? [])])],
      recipients: (to.match(/[^\s<>,"]+@[^\s<>,"]+/g) ?? []).map((a) => a.toLowerCase()),
      at: statSync(path).mtimeMs,
    };
  });
}

/**
 * The embedded default: `svc serve` alone (PGlite, no AMQP_URL, the stand-ins for payments, email
 * and files). Its pipeline counts as present when an order placed on it leaves `pending` within
 * EMBEDDED_DETECT_MS; then its end-to-end rate at saturation, as in phase 2.
 */
async function embedded(scratch: string, keysFile: string, consumers: string[], durationS: number): Promise<Embedded> {
  const dataDir = join(scratch, 'embedded');
  const env = cleanEnv({ SVC_DATA_DIR: dataDir, JWT_KEYS_FILE: keysFile, LOG_LEVEL: 'info' });
  process.stderr.write('starting an embedded svc serve (PGlite, in-process pipeline)…\n');
  const serve = await startChild('embedded svc serve', [BIN, 'serve', '--port', '0'], env);
  try {
    const share = JSON.parse(readFileSync(join(dataDir, 'serve.json'), 'utf8')) as { socketDir: string; port: number };
    const connect = async () => {
      const client = new pg.Client({ host: share.socketDir, port: share.port, user: 'postgres', database: 'postgres' });
      await client.connect();
      return client;
    };
    let client = await connect();
    let tokens: string[];
    try {
      await seed(client, EMBEDDED_USERS);
      tokens = await tokensFor(client, keysFile);
    } finally {
      await client.end();
    }
    const res = await fetch(`${serve.url}/api/v1/orders`, {
      method: 'POST',
      headers: { authorization: `Bearer ${tokens[0]}`, 'content-type': 'application/json' },
      body: orderBody(PRODUCTS, ITEMS_PER_ORDER),
    });
    if (res.status !== 201) throw new Error(`the embedded svc serve answered ${res.status} to an order: ${await res.text()}`);
    const { id } = (await res.json()) as { id: string };
    client = await connect();
    let status = 'pending';
    try {
      const deadline = Date.now() + EMBEDDED_DETECT_MS;
      while (status === 'pending' && Date.now() < deadline) {
        await wait(200);
        status = (await client.query<{ status: string }>('select status from orders where id = $1', [id])).rows[0]?.status ?? 'missing';
      }
    } finally {
      await client.end();
    }
    if (status === 'pending')
      return { available: false, why: `an order placed on an embedded svc serve was still pending after ${EMBEDDED_DETECT_MS / 1000} s` };

    const run = await saturate('embedded pipeline: orders placed on svc serve alone', serve.url, tokens, durationS);
    await wait(2_000);
    client = await connect();
    try {
      const definition = await describeDone(client, consumers);
      const counted = await progress(client, run.from - WARMUP_S * 1000 - 1_000, definition, emlFiles(dataDir));
      return { available: true, throughput: throughputOf(run, counted.orders), done: definition, mailLinked: counted.mailLinked };
    } finally {
      await client.end();
    }
  } finally {
    await serve.stop();
  }
}

// ---------------------------------------------------------------------------------------------

/**
 * The event pipeline end to end on PostgreSQL + RabbitMQ with `svc serve`, two `svc worker` and the
 * Stripe, SendGrid and S3 stand-ins on 127.0.0.1: the API's creation rate alone, the rate of orders
 * done at saturation, the lag at a paced load, and the embedded pipeline's rate.
 */
export async function run(options: BenchOptions): Promise<Report> {
  if (process.versions.node.split('.')[0] !== '24')
    throw new Error(`the pipeline benchmark needs Node 24 but runs on ${process.version}; start it with npm run bench`);
  ensureBuilt();
  const saturationS = options.durationS ?? 10;
  const pacedS = options.durationS ?? 30;
  const rate = options.rate ?? 100;
  const scratch = mkdtempSync(join(tmpdir(), 'svc-bench-pipeline-'));
  const fakes = await startFakes();
  try {
    const keysFile = join(scratch, 'jwks.json');
    writeFileSync(keysFile, JSON.stringify({ keys: [await generateSigningJwk()] }), { mode: 0o600 });
    await admin((c) => c.query('select 1'));
    const pgFigures = await withDatabase('svc_bench_pipeline', (url) => onPostgres(url, scratch, keysFile, fakes, { saturationS, pacedS, rate }));
    const emb = await embedded(scratch, keysFile, pgFigures.definition.consumers, saturationS);
    return report(pgFigures, emb, { saturationS, pacedS, rate });
  } finally {
    await fakes.stop();
    rmSync(scratch, { recursive: true, force: true });
  }
}

function percentile(values: number[], p: number): number | undefined {
  if (!values.length) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

const seconds = (ms: number | undefined) => (ms === undefined ? 'n/a' : `${fmt(ms / 1000, 2)} s`);
const millis = (ms: number | undefined) => (ms === undefined ? 'n/a' : `${fmt(ms)} ms`);
const pct = (ratio: number) => `${fmt(ratio * 100, 1)}%`;

function doneWords(d: DoneDefinition): string {
  const parts = ['status completed (paid through Stripe)'];
  if (d.mail) parts.push('its email at SendGrid');
  if (d.receipts) parts.push('its receipt in the files table');
  return parts.join(' + ');
}

function report(m: PostgresFigures, emb: Embedded, o: { saturationS: number; pacedS: number; rate: number }): Report {
  const ratio = m.e2e.donePerSec / m.alone.reqPerSec;
  const lagP50 = percentile(m.paced.lagMs, 50);
  const lagP99 = percentile(m.paced.lagMs, 99);
  const allDone = m.paced.done === m.paced.created && m.paced.created > 0;
  const errors = m.alone.errors + m.e2e.creation.errors + m.paced.creation.errors + (emb.available ? emb.throughput.creation.errors : 0);
  const d = m.definition;
  const extended = d.mail || d.receipts;
  const rows: string[][] = [
    ['1. order creation alone (no worker running)', fmt(m.alone.reqPerSec), millis(m.alone.p50), millis(m.alone.p99), fmt(m.alone.errors), ''],
    [
      `2. order creation, ${WORKERS} workers running`,
      fmt(m.e2e.creation.reqPerSec),
      millis(m.e2e.creation.p50),
      millis(m.e2e.creation.p99),
      fmt(m.e2e.creation.errors),
      '',
    ],
    [`2. orders done end to end (${fmt(m.e2e.doneInWindow)} in ${o.saturationS} s)`, fmt(m.e2e.donePerSec, 1), '', '', '', pct(ratio)],
    [
      `3. paced ${o.rate}/s for ${o.pacedS} s: lag creation → done`,
      fmt(m.paced.creation.reqPerSec, 1),
      seconds(lagP50),
      seconds(lagP99),
      fmt(m.paced.creation.errors),
      '',
    ],
    ...(extended
      ? [
          [
            '3. paced: lag creation → completed (payment only)',
            '',
            seconds(percentile(m.paced.completedLagMs, 50)),
            seconds(percentile(m.paced.completedLagMs, 99)),
            '',
            '',
          ],
        ]
      : []),
    emb.available
      ? [
          `embedded pipeline: orders done (${fmt(emb.throughput.doneInWindow)} in ${o.saturationS} s)`,
          fmt(emb.throughput.donePerSec, 1),
          '',
          '',
          '',
          // Another database (PGlite) and other providers: not a fraction of phase 1.
          '',
        ]
      : ['embedded pipeline: not available in this build', '', '', '', '', ''],
    ...(emb.available
      ? [
          [
            'embedded: order creation meanwhile',
            fmt(emb.throughput.creation.reqPerSec),
            millis(emb.throughput.creation.p50),
            millis(emb.throughput.creation.p99),
            fmt(emb.throughput.creation.errors),
            '',
          ],
        ]
      : []),
  ];
  const goals: Goal[] = [
    { name: 'orders done end to end vs creation alone', ratio, value: pct(ratio), target: `≥ ${MIN_RATIO * 100}%`, met: ratio >= MIN_RATIO },
    {
      name: `p99 lag creation → done at ${o.rate}/s`,
      ratio: (lagP99 ?? Infinity) / MAX_P99_LAG_MS,
      value: allDone ? seconds(lagP99) : `${seconds(lagP99)} (done orders only)`,
      target: `< ${MAX_P99_LAG_MS / 1000} s`,
      met: allDone && lagP99 !== undefined && lagP99 < MAX_P99_LAG_MS,
    },
    {
      name: `paced orders done within ${DRAIN_TIMEOUT_MS / 1000} s of the load`,
      ratio: m.paced.created ? m.paced.done / m.paced.created : 0,
      value: `${fmt(m.paced.done)} of ${fmt(m.paced.created)}`,
      target: 'all',
      met: allDone,
    },
    { name: 'order creation errors (all phases)', ratio: errors, value: fmt(errors), target: '0', met: errors === 0 },
    emb.available
      ? { name: 'embedded pipeline, orders done', ratio: emb.throughput.donePerSec, value: `${fmt(emb.throughput.donePerSec, 1)}/s` }
      : { name: 'embedded pipeline', ratio: 0, value: 'not available in this build' },
  ];
  const median = (v: number[]) => millis(percentile(v, 50));
  const notes = [
    `"done" = ${doneWords(d)}${d.mail ? ` (emails linked ${m.mailLinked})` : ''}. Consumers in this build: ${d.consumers.join(', ') || 'none'}` +
      (extended ? '.' : '; the mail and receipt consumers are not there yet, so emails and receipts are not counted.') +
      (d.receiptsMissing ? ` Receipts not counted: ${d.receiptsMissing}.` : ''),
    `Completion time: the created_at of the order's order.completed outbox row (written by the transition to completed, in its transaction); creation time: orders.created_at.`,
    `Between phases the workers were stopped and the backlog set aside (${fmt(m.setAside)} pending outbox rows marked published, queues purged); phase 2 left ${fmt(m.e2e.backlog)} orders not done.`,
    `Where the lag goes at ${o.rate}/s (medians): relay (created → order.created published) ${median(m.paced.stages.relay)}, ` +
      `payment (published → completed) ${median(m.paced.stages.payment)}` +
      (d.receipts ? `, receipt after completion ${median(m.paced.stages.receipt)}` : '') +
      (d.mail ? `, email after completion ${median(m.paced.stages.mail)}` : '') +
      '.',
    `At saturation, each step's rate in the window: order.created relayed ${fmt(m.e2e.steps.relayed, 1)}/s, paid (completed) ${fmt(m.e2e.steps.paid, 1)}/s` +
      (d.receipts ? `, receipts ${fmt(m.e2e.steps.receipts, 1)}/s` : '') +
      (d.mail ? `, emails ${fmt(m.e2e.steps.emails, 1)}/s` : '') +
      `; Stripe requests ${Object.entries(m.stripeByRoute)
        .sort((a, b) => b[1] - a[1])
        .map(([route, n]) => `${route}: ${fmt(n)}`)
        .join(', ')}.`,
    `CPU per order done at saturation: ${m.cpu.map((c) => `${c.name} ${Number.isFinite(c.msPerOrder) ? `${fmt(c.msPerOrder, 1)} ms` : 'n/a'}`).join(', ')} ` +
      `(PostgreSQL and RabbitMQ not measured: shared with other processes).`,
    emb.available
      ? `Embedded pipeline: svc serve alone on PGlite with the stand-ins (simulated payments, .eml files, local files); "done" as above${emb.done.mail ? `, emails linked ${emb.mailLinked}` : ''}; ${fmt(emb.throughput.backlog)} orders not done when counted.`
      : `Embedded pipeline: ${emb.why}.`,
  ];
  return {
    title:
      `pipeline: PostgreSQL + RabbitMQ, svc serve and ${WORKERS} svc worker, Stripe/SendGrid fakes and s3rver on 127.0.0.1; ` +
      `${CONNECTIONS} connections for ${o.saturationS} s after ${WARMUP_S} s warm-up at saturation, ${o.rate} orders/s for ${o.pacedS} s paced; ` +
      `${fmt(USERS)} users, ${fmt(PRODUCTS)} products, orders of ${ITEMS_PER_ORDER} items`,
    measurements: [],
    table: { header: ['measurement', 'orders/s', 'p50', 'p99', 'errors', 'of creation alone'], rows },
    goals,
    notes,
  };
}
