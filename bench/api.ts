import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type autocannon from 'autocannon';
import { loadConfig } from '../src/config.js';
import { createLogger } from '../src/logger.js';
import { AccessTokens, generateSigningJwk, loadSigningKeys } from '../src/adapters/jwt.js';
import { ensureBuilt } from './cli.js';
import {
  admin,
  BIN,
  drive as driveWith,
  exec,
  fmt,
  idOf,
  orderBody as body,
  PG_ADMIN_URL,
  pick,
  startChild,
  withDatabase,
  type Env,
  type Figures,
} from './harness.js';
import type { BenchOptions, Goal, Report } from './report.js';

/** Set to a folder to write a V8 CPU profile of `svc serve` there (node --cpu-prof). */
const CPU_PROF_DIR = process.env.SVC_BENCH_CPU_PROF;

const CONNECTIONS = 50;
const WARMUP_S = 3;
const USERS = 10_000;
const PRODUCTS = 1_000;
const ORDERS = 100_000;
const ITEMS_PER_ORDER = 5;
const INITIAL_STOCK = 1_000_000_000;
/** Users whose access tokens drive the load (each reads its own orders and places new ones). */
const LOAD_USERS = 1_000;
const PGBENCH_CLIENTS = 8;
const PGBENCH_SCALE = 8;

/** Drives url with autocannon at 50 connections: a warm-up, then the measured run. */
const drive = (name: string, url: string, durationS: number, options: Partial<autocannon.Options>, pid?: number) =>
  driveWith(name, url, { connections: CONNECTIONS, warmupS: WARMUP_S, durationS }, options, pid);

/** Bulk-loads users, products, orders and their items with generate_series (SQL, not the API). */
async function seed(url: string): Promise<Date> {
  process.stderr.write(`seeding ${USERS} users, ${PRODUCTS} products, ${ORDERS} orders with ${ITEMS_PER_ORDER} items each…\n`);
  return admin(async (c) => {
    await c.query(`insert into users (id, email, name, role, status, created_at, updated_at)
      select ${idOf('usr', 'n')}, 'user' || n || '@bench.example.com', 'User ' || n, case when n = 1 then 'admin' else 'user' end, 'active',
             now() - make_interval(secs => ${USERS} - n), now()
      from generate_series(1, ${USERS}) n`);
    await c.query(`insert into products (id, sku, name, price, currency, stock, active, created_at, updated_at)
      select ${idOf('prd', 'n')}, 'SKU-' || lpad(n::text, 5, '0'), 'Product ' || n, 100 + (n * 7919) % 99900, 'USD', ${INITIAL_STOCK}, true,
             now() - make_interval(secs => ${PRODUCTS} - n), now()
      from generate_series(1, ${PRODUCTS}) n`);
    await c.query(`insert into orders (id, user_id, status, currency, total, payment_method, created_at, updated_at)
      select ${idOf('ord', 'n')}, ${idOf('usr', `1 + (n - 1) % ${USERS}`)}, (array['pending', 'processing', 'completed', 'completed', 'completed'])[1 + n % 5],
             'USD', 0, 'pm_card_visa', now() - make_interval(secs => ${ORDERS} - n), now()
      from generate_series(1, ${ORDERS}) n`);
    // Five distinct products per order: 7 is coprime with 1,000.
    await c.query(`insert into order_items (id, order_id, product_id, sku, name, unit_price, quantity)
      select ${idOf('itm', `n * ${ITEMS_PER_ORDER} + k`)}, ${idOf('ord', 'n')}, p.id, p.sku, p.name, p.price, 1 + (n + k) % 3
      from generate_series(1, ${ORDERS}) n cross join generate_series(0, ${ITEMS_PER_ORDER - 1}) k
      join products p on p.sku = 'SKU-' || lpad((1 + ((n * ${ITEMS_PER_ORDER} + k) * 7) % ${PRODUCTS})::text, 5, '0')`);
    await c.query(`update orders o set total = t.total
      from (select order_id, sum(unit_price * quantity) as total from order_items group by order_id) t where t.order_id = o.id`);
    await c.query('vacuum analyze');
    const { rows } = await c.query<{ now: Date }>('select now() as now');
    return rows[0]!.now;
  }, url);
}

interface LoadUser {
  id: string;
  token: string;
  orders: string[];
}

/** Access tokens for the load users, signed with the server's key set as /auth/login would. */
async function loadUsers(url: string, keysFile: string): Promise<LoadUser[]> {
  const config = loadConfig({ DATABASE_URL: url, JWT_KEYS_FILE: keysFile, LOG_LEVEL: 'silent' });
  const tokens = new AccessTokens(await loadSigningKeys(config, createLogger('silent')), {
    issuer: config.JWT_ISSUER,
    audience: config.JWT_AUDIENCE,
    ttlSeconds: 3_600,
  });
  const rows = await admin(
    (c) =>
      c.query<{ id: string; orders: string[] }>(
        `select u.id, array_agg(o.id) as orders from users u join orders o on o.user_id = u.id
         where u.role = 'user' group by u.id order by u.id limit ${LOAD_USERS}`,
      ),
    url,
  );
  return Promise.all(rows.rows.map(async (r) => ({ id: r.id, orders: r.orders, token: await tokens.sign({ sub: r.id, role: 'user' }) })));
}

const orderBody = () => body(PRODUCTS, ITEMS_PER_ORDER);

/** Stock accounting after the order-creation run: nothing negative, every unit taken is in an order. */
async function checkStock(url: string, since: Date): Promise<{ negative: number; mismatched: number; created: number }> {
  return admin(async (c) => {
    const { rows } = await c.query<{ negative: number; mismatched: number; created: number }>(
      `with used as (
         select oi.product_id, sum(oi.quantity)::bigint as q from order_items oi join orders o on o.id = oi.order_id
         where o.created_at > $1 group by oi.product_id)
       select count(*) filter (where p.stock < 0)::int as negative,
              count(*) filter (where ${INITIAL_STOCK} - p.stock <> coalesce(u.q, 0))::int as mismatched,
              (select count(*) from orders where created_at > $1)::int as created
       from products p left join used u on u.product_id = p.id`,
      [since],
    );
    return rows[0]!;
  }, url);
}

function pgbenchPath(): string {
  if (process.env.PGBENCH) return process.env.PGBENCH;
  const base = '/usr/lib/postgresql';
  const versions = existsSync(base) ? readdirSync(base).sort((a, b) => Number(b) - Number(a)) : [];
  for (const v of versions) if (existsSync(join(base, v, 'bin', 'pgbench'))) return join(base, v, 'bin', 'pgbench');
  return 'pgbench';
}

/** pgbench's built-in TPC-B-like script on a scratch database of its own: the write anchor. */
async function pgbench(durationS: number): Promise<{ tps: number; latencyMs: number }> {
  return withDatabase('svc_bench_pgbench', async (_url, name) => {
    const u = new URL(PG_ADMIN_URL);
    const conn = ['-h', u.hostname, '-p', u.port || '5432', '-U', decodeURIComponent(u.username || 'postgres')];
    const env = { ...process.env, ...(u.password ? { PGPASSWORD: decodeURIComponent(u.password) } : {}) };
    const bin = pgbenchPath();
    process.stderr.write(`measuring pgbench TPC-B (scale ${PGBENCH_SCALE}, ${PGBENCH_CLIENTS} clients, ${durationS} s)…\n`);
    await exec(bin, ['-i', '-q', '-s', String(PGBENCH_SCALE), ...conn, name], env);
    const out = await exec(bin, ['-c', String(PGBENCH_CLIENTS), '-j', '2', '-T', String(durationS), ...conn, name], env);
    const tps = Number(/tps = ([\d.]+)/.exec(out)?.[1]);
    const latencyMs = Number(/latency average = ([\d.]+) ms/.exec(out)?.[1]);
    if (!Number.isFinite(tps)) throw new Error(`could not read tps from pgbench:\n${out}`);
    return { tps, latencyMs };
  });
}

const mib = (bytes?: number) => (bytes === undefined ? 'n/a' : fmt(bytes / 2 ** 20));

/**
 * `svc serve` on PostgreSQL under autocannon (50 connections) against anchors measured in the same
 * run with the same load generator: a bare fastify handler (HTTP ceiling), bare fastify + pg reading
 * one order by id (database read), and pgbench TPC-B (database write).
 */
export async function run(options: BenchOptions): Promise<Report> {
  if (process.versions.node.split('.')[0] !== '24')
    throw new Error(`the api benchmark needs Node 24 but runs on ${process.version}; start it with npm run bench`);
  ensureBuilt();
  const durationS = options.durationS ?? 10;
  const scratch = mkdtempSync(join(tmpdir(), 'svc-bench-api-'));
  try {
    const measured = await withDatabase('svc_bench_api', async (url) => {
      const base: Env = {
        ...process.env,
        LOG_LEVEL: 'warn',
        SVC_CONFIG: undefined,
        SVC_DATA_DIR: join(scratch, 'data'),
        // The load comes from one address: the rate limits are off (their cost is measured on its own).
        RATE_LIMIT_IP_PER_MINUTE: '0',
        RATE_LIMIT_AUTH_IP_PER_MINUTE: '0',
        RATE_LIMIT_API_KEY_PER_HOUR: '0',
      };
      process.stderr.write('migrating the bench database with svc migrate…\n');
      await exec(process.execPath, [BIN, 'migrate'], { ...base, DATABASE_URL: url });
      const seededAt = await seed(url);
      const keysFile = join(scratch, 'jwks.json');
      writeFileSync(keysFile, JSON.stringify({ keys: [await generateSigningJwk()] }), { mode: 0o600 });
      const users = await loadUsers(url, keysFile);
      const orderIds = users.flatMap((u) => u.orders);

      const http = await startChild('the HTTP anchor', ['--import', 'tsx', 'bench/anchor-http.ts'], base);
      let httpFigures: Figures;
      try {
        httpFigures = await drive('HTTP ceiling: bare fastify, small JSON', `${http.url}/`, durationS, {}, http.pid);
      } finally {
        await http.stop();
      }
      const dbAnchor = await startChild('the database-read anchor', ['--import', 'tsx', 'bench/anchor-pg.ts'], { ...base, DATABASE_URL: url, POOL_MAX: '20' });
      let dbFigures: Figures;
      try {
        dbFigures = await drive(
          'database read: bare fastify + pg, one order by id',
          dbAnchor.url,
          durationS,
          {
            requests: [{ method: 'GET', setupRequest: (req) => ({ ...req, path: `/orders/${pick(orderIds)}` }) }],
          },
          dbAnchor.pid,
        );
      } finally {
        await dbAnchor.stop();
      }

      const nodeArgs = CPU_PROF_DIR ? ['--cpu-prof', `--cpu-prof-dir=${CPU_PROF_DIR}`] : [];
      // At the default log level, as deployed: one JSON line per request on stderr (read by this process).
      const serve = await startChild('svc serve', [...nodeArgs, BIN, 'serve', '--port', '0'], {
        ...base,
        DATABASE_URL: url,
        JWT_KEYS_FILE: keysFile,
        LOG_LEVEL: 'info',
        // As deployed beside svc worker: svc serve with AMQP_URL leaves the events to the workers
        // (it never connects); without it, it would also pay the orders it creates, in-process.
        AMQP_URL: 'amqp://127.0.0.1:5672',
      });
      try {
        const auth = (req: autocannon.Request, user: LoadUser) => ({ ...req.headers, authorization: `Bearer ${user.token}` });
        const read = await drive(
          'svc GET /api/v1/orders/{id} (own order, with items)',
          serve.url,
          durationS,
          {
            requests: [
              {
                method: 'GET',
                setupRequest: (req) => {
                  const user = pick(users);
                  return { ...req, path: `/api/v1/orders/${pick(user.orders)}`, headers: auth(req, user) };
                },
              },
            ],
          },
          serve.pid,
        );
        const products = await drive(
          'svc GET /api/v1/products?limit=20',
          serve.url,
          durationS,
          {
            requests: [{ method: 'GET', setupRequest: (req) => ({ ...req, path: '/api/v1/products?limit=20', headers: auth(req, pick(users)) }) }],
          },
          serve.pid,
        );
        const create = await drive(
          `svc POST /api/v1/orders (${ITEMS_PER_ORDER} items)`,
          serve.url,
          durationS,
          {
            requests: [
              {
                method: 'POST',
                setupRequest: (req) => ({
                  ...req,
                  path: '/api/v1/orders',
                  body: orderBody(),
                  headers: { ...auth(req, pick(users)), 'content-type': 'application/json' },
                }),
              },
            ],
          },
          serve.pid,
        );
        const stock = await checkStock(url, seededAt);
        return { httpFigures, dbFigures, read, products, create, stock };
      } finally {
        await serve.stop();
      }
    });
    const pgb = await pgbench(durationS);
    return report(measured, pgb, durationS);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

function report(
  m: {
    httpFigures: Figures;
    dbFigures: Figures;
    read: Figures;
    products: Figures;
    create: Figures;
    stock: { negative: number; mismatched: number; created: number };
  },
  pgb: { tps: number; latencyMs: number },
  durationS: number,
): Report {
  const ratio = (a: number, b: number) => Math.round((a / b) * 1000) / 1000;
  const row = (f: Figures, anchor: string, anchorRate?: number) => [
    f.name,
    fmt(f.reqPerSec),
    fmt(f.p50, 1),
    fmt(f.p99, 1),
    fmt(f.errors),
    mib(f.rssBytes),
    anchor,
    anchorRate ? `${fmt((f.reqPerSec / anchorRate) * 100, 1)}%` : '',
  ];
  const rss = Math.max(m.read.rssBytes ?? 0, m.products.rssBytes ?? 0, m.create.rssBytes ?? 0);
  const readRatio = ratio(m.read.reqPerSec, m.dbFigures.reqPerSec);
  // autocannon drops the answers still in flight when a run ends (up to one per connection, warm-up
  // and measured run), so the database may hold up to that many more orders than 201s were counted.
  const unaccounted = m.stock.created < m.create.ok || m.stock.created - m.create.ok > 2 * CONNECTIONS ? 1 : 0;
  const oversold = m.stock.negative + m.stock.mismatched + unaccounted;
  const goals: Goal[] = [
    { name: 'order read vs database-read anchor', ratio: readRatio, value: `${fmt(readRatio * 100, 1)}%`, target: '≥ 30%', met: readRatio >= 0.3 },
    { name: 'order read p99', ratio: m.read.p99 / 25, value: `${fmt(m.read.p99, 1)} ms`, target: '< 25 ms', met: m.read.p99 < 25 },
    {
      name: 'order creation rate',
      ratio: m.create.reqPerSec / 1000,
      value: `${fmt(m.create.reqPerSec)}/s`,
      target: '≥ 1,000/s',
      met: m.create.reqPerSec >= 1000,
    },
    { name: 'order creation errors', ratio: m.create.errors, value: fmt(m.create.errors), target: '0', met: m.create.errors === 0 },
    {
      name: 'no oversell (products with stock < 0, with stock ≠ units ordered)',
      ratio: oversold,
      value: `${m.stock.negative}, ${m.stock.mismatched}${unaccounted ? ` (orders ${m.stock.created} vs ${m.create.ok} answered 2xx)` : ''}`,
      target: '0, 0',
      met: oversold === 0,
    },
    { name: 'RSS of svc serve under load', ratio: rss / (250 * 2 ** 20), value: `${mib(rss)} MiB`, target: '< 250 MiB', met: rss > 0 && rss < 250 * 2 ** 20 },
    { name: 'order creation vs pgbench tps', ratio: ratio(m.create.reqPerSec, pgb.tps), value: `${fmt(ratio(m.create.reqPerSec, pgb.tps) * 100, 1)}%` },
    {
      name: 'order read vs HTTP ceiling',
      ratio: ratio(m.read.reqPerSec, m.httpFigures.reqPerSec),
      value: `${fmt(ratio(m.read.reqPerSec, m.httpFigures.reqPerSec) * 100, 1)}%`,
    },
  ];
  return {
    title: `api: autocannon, ${CONNECTIONS} connections, ${durationS} s per measurement after ${WARMUP_S} s warm-up; PostgreSQL seeded with ${fmt(USERS)} users, ${fmt(PRODUCTS)} products, ${fmt(ORDERS)} orders × ${ITEMS_PER_ORDER} items`,
    measurements: [],
    table: {
      header: ['measurement', 'req/s', 'p50 ms', 'p99 ms', 'errors', 'RSS MiB', 'anchor', 'of anchor'],
      rows: [
        row(m.httpFigures, ''),
        row(m.dbFigures, 'HTTP ceiling', m.httpFigures.reqPerSec),
        row(m.read, 'database read', m.dbFigures.reqPerSec),
        row(m.products, 'database read', m.dbFigures.reqPerSec),
        row(m.create, 'pgbench tps', pgb.tps),
        [
          `pgbench TPC-B (scale ${PGBENCH_SCALE}, ${PGBENCH_CLIENTS} clients; latency is the average)`,
          fmt(pgb.tps),
          fmt(pgb.latencyMs, 1),
          '',
          '0',
          '',
          '',
          '',
        ],
      ],
    },
    goals,
  };
}
