import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import autocannon from 'autocannon';
import { Redis } from 'ioredis';
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
  type Child,
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

/** The Redis the tests use (TEST_REDIS_URL, or the local one): the cache's second level and the shared rate limits. */
const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const RATE_LIMITS_OFF: Env = { RATE_LIMIT_IP_PER_MINUTE: '0', RATE_LIMIT_AUTH_IP_PER_MINUTE: '0', RATE_LIMIT_API_KEY_PER_HOUR: '0' };

/** Drives url with autocannon at 50 connections: a warm-up, then the measured run. */
const drive = (name: string, url: string, durationS: number, options: Partial<autocannon.Options>, pid?: number, afterWarmup?: () => Promise<void>) =>
  driveWith(name, url, { connections: CONNECTIONS, warmupS: WARMUP_S, durationS }, options, pid, afterWarmup);

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

/** The README's bound on svc serve's resident memory. */
const RSS_BOUND = 250 * 2 ** 20;

/** A TCP port free on 127.0.0.1 now (for METRICS_PORT: the bench must know where to scrape). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** What the OTLP sink received: export requests and their bytes (protobuf, not decoded). */
interface Exported {
  requests: number;
  bytes: number;
}

/**
 * A local OpenTelemetry collector that accepts every OTLP/HTTP export and keeps nothing: tracing's
 * cost on svc serve's side (spans made, batched, encoded and sent), not a real collector's.
 */
async function otlpSink(): Promise<{ url: string; exported: Exported; close(): Promise<void> }> {
  const exported: Exported = { requests: 0, bytes: 0 };
  const server = createHttpServer((req, res) => {
    req.on('data', (chunk: Buffer) => (exported.bytes += chunk.length));
    req.on('end', () => {
      if (req.url === '/v1/traces') exported.requests++;
      res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    exported,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

interface CacheCounts {
  hits: number;
  misses: number;
  /** Reads that went to the database without looking: Redis did not answer in time. */
  bypassed: number;
}

/** L1 hits and misses of one cache, and its bypassed reads, from svc serve's /metrics (svc_cache_requests_total). */
async function cacheCounts(metricsUrl: string, cache: 'orders' | 'products'): Promise<CacheCounts> {
  const text = await (await fetch(metricsUrl)).text();
  const counts = { hits: 0, misses: 0, bypassed: 0 };
  for (const line of text.split('\n')) {
    if (!line.startsWith('svc_cache_requests_total{') || !line.includes(`cache="${cache}"`)) continue;
    const value = Number(line.slice(line.lastIndexOf(' ') + 1));
    if (line.includes('level="l1"') && line.includes('result="hit"')) counts.hits += value;
    else if (line.includes('level="l1"') && line.includes('result="miss"')) counts.misses += value;
    else if (line.includes('result="bypass"')) counts.bypassed += value;
  }
  return counts;
}

/** Sends each read once (10 connections), in order: fills svc serve's cache before it is measured. */
async function prime(url: string, reads: { path: string; token: string }[]): Promise<void> {
  let next = 0;
  process.stderr.write(`priming the cache: ${fmt(reads.length)} reads…\n`);
  const r = await autocannon({
    url,
    connections: 10,
    amount: reads.length,
    requests: [
      {
        method: 'GET',
        setupRequest: (req) => {
          const read = reads[next++ % reads.length]!;
          return { ...req, path: read.path, headers: { ...req.headers, authorization: `Bearer ${read.token}` } };
        },
      },
    ],
  });
  if (r.non2xx + r.errors > 0) throw new Error(`priming the cache: ${r.non2xx + r.errors} of ${reads.length} reads failed`);
}

/** Fails the bench early, naming the variable, when Redis (the cache's second level and version store) is not there. */
async function checkRedis(url: string): Promise<void> {
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  try {
    await redis.connect();
    await redis.ping();
  } catch (err) {
    throw new Error(`cannot reach Redis at ${url} (set TEST_REDIS_URL to another server): ${(err as Error).message}`, { cause: err });
  } finally {
    redis.disconnect();
  }
}

/** The cache's epoch under `prefix` (0 before the first move). */
async function redisEpoch(url: string, prefix: string): Promise<number> {
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0 });
  try {
    await redis.connect();
    return Number((await redis.get(`${prefix}:c:epoch`)) ?? 0);
  } finally {
    redis.disconnect();
  }
}

/** Deletes the bench's Redis keys (cache entries, versions, rate-limit windows); they would expire anyway. */
async function dropRedisKeys(url: string, prefix: string): Promise<void> {
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0 });
  try {
    await redis.connect();
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length > 0) await redis.del(...keys);
  } catch {
    // best effort: every key has a TTL
  } finally {
    redis.disconnect();
  }
}

/** A cached read's figures with the L1 hit ratio svc serve reported over the measured run (bypassed reads count as misses). */
type CachedFigures = Figures & { l1HitRatio: number; bypassed: number };

interface Measured {
  httpFigures: Figures;
  dbFigures: Figures;
  /** Uncached (CACHE_L1_MAX_ENTRIES=0), rate limits and metrics off. */
  read: Figures;
  /** The list and the single product read, uncached, in two interleaved rounds. */
  list: Figures[];
  product: Figures[];
  /** The single product read, uncached, with rate limits (high) and metrics on: interleaved with `product`. */
  limited: Figures[];
  create: Figures;
  stock: { negative: number; mismatched: number; created: number };
  /**
   * With the two-level cache on (Redis), rate limits off, metrics on; the order read in two rounds,
   * interleaved with `traced`.
   */
  cached: { read: CachedFigures[]; product: CachedFigures; list: CachedFigures };
  /** The cached order read on a second cached server with tracing on (every request sampled, exported to a local sink). */
  traced: CachedFigures[];
  /** What that server exported while it ran. */
  exported: Exported;
  /**
   * How often the cache's epoch moved while the cached server ran (each move makes every cached
   * entry stale): svc serve moves it when its connection to Redis comes back, or when an
   * invalidation of its own could not reach Redis.
   */
  epochMoves: number;
}

/**
 * `svc serve` on PostgreSQL under autocannon (50 connections) against anchors measured in the same
 * run with the same load generator: a bare fastify handler (HTTP ceiling), bare fastify + pg reading
 * one order by id (database read), and pgbench TPC-B (database write). Three `svc serve`, each
 * configured through its environment only: uncached with rate limits and metrics off, uncached with
 * both on (limits too high to refuse anything), and with the cache on; and a fourth, cached with
 * tracing on, for what tracing costs.
 */
export async function run(options: BenchOptions): Promise<Report> {
  if (process.versions.node.split('.')[0] !== '24')
    throw new Error(`the api benchmark needs Node 24 but runs on ${process.version}; start it with npm run bench`);
  ensureBuilt();
  const durationS = options.durationS ?? 10;
  await checkRedis(REDIS_URL);
  const redisPrefix = `svcbench-${randomBytes(6).toString('hex')}`;
  const scratch = mkdtempSync(join(tmpdir(), 'svc-bench-api-'));
  try {
    const measured = await withDatabase('svc_bench_api', async (url): Promise<Measured> => {
      const base: Env = {
        ...process.env,
        LOG_LEVEL: 'warn',
        SVC_CONFIG: undefined,
        SVC_DATA_DIR: join(scratch, 'data'),
        // The load comes from one address: the rate limits are off unless a measurement turns them on.
        ...RATE_LIMITS_OFF,
      };
      process.stderr.write('migrating the bench database with svc migrate…\n');
      await exec(process.execPath, [BIN, 'migrate'], { ...base, DATABASE_URL: url });
      const seededAt = await seed(url);
      const keysFile = join(scratch, 'jwks.json');
      writeFileSync(keysFile, JSON.stringify({ keys: [await generateSigningJwk()] }), { mode: 0o600 });
      const users = await loadUsers(url, keysFile);
      const orderIds = users.flatMap((u) => u.orders);
      const productIds = (await admin((c) => c.query<{ id: string }>('select id from products'), url)).rows.map((r) => r.id);

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
      // At the default log level, as deployed: one JSON line per request on stderr (read by this
      // process). As deployed beside svc worker: with AMQP_URL, svc serve leaves the events to the
      // workers (it never connects); without it, it would also pay the orders it creates, in-process.
      // With REDIS_URL, as several instances run: the cache's versions and the rate limits live there.
      const serveEnv = (extra: Env): Env => ({
        ...base,
        DATABASE_URL: url,
        JWT_KEYS_FILE: keysFile,
        LOG_LEVEL: 'info',
        AMQP_URL: 'amqp://127.0.0.1:5672',
        REDIS_URL,
        REDIS_PREFIX: redisPrefix,
        ...extra,
      });
      const startServe = (name: string, extra: Env) => startChild(name, [...nodeArgs, BIN, 'serve', '--port', '0'], serveEnv(extra));
      const auth = (req: autocannon.Request, user: LoadUser) => ({ ...req.headers, authorization: `Bearer ${user.token}` });
      const orderRead = (server: Child, name: string, afterWarmup?: () => Promise<void>) =>
        drive(
          name,
          server.url,
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
          server.pid,
          afterWarmup,
        );
      const productList = (server: Child, name: string, afterWarmup?: () => Promise<void>) =>
        drive(
          name,
          server.url,
          durationS,
          {
            requests: [{ method: 'GET', setupRequest: (req) => ({ ...req, path: '/api/v1/products?limit=20', headers: auth(req, pick(users)) }) }],
          },
          server.pid,
          afterWarmup,
        );
      const productRead = (server: Child, name: string, afterWarmup?: () => Promise<void>) =>
        drive(
          name,
          server.url,
          durationS,
          {
            requests: [{ method: 'GET', setupRequest: (req) => ({ ...req, path: `/api/v1/products/${pick(productIds)}`, headers: auth(req, pick(users)) }) }],
          },
          server.pid,
          afterWarmup,
        );

      // Uncached: CACHE_L1_MAX_ENTRIES=0 is the configuration that turns the cache off. "plain" has
      // the rate limits and metrics off too; "limited" has them on, with limits no run reaches.
      const plain = await startServe('svc serve (uncached)', { CACHE_L1_MAX_ENTRIES: '0', METRICS_PORT: 'off' });
      let uncached: Pick<Measured, 'read' | 'list' | 'product' | 'limited' | 'create' | 'stock'>;
      try {
        const limited = await startServe('svc serve (uncached, rate limits and metrics on)', {
          CACHE_L1_MAX_ENTRIES: '0',
          METRICS_PORT: String(await freePort()),
          RATE_LIMIT_IP_PER_MINUTE: '1000000',
          RATE_LIMIT_AUTH_IP_PER_MINUTE: '1000000',
          RATE_LIMIT_API_KEY_PER_HOUR: '10000000',
        });
        const list: Figures[] = [];
        const product: Figures[] = [];
        const withLimits: Figures[] = [];
        try {
          // Interleaved (list, A, B, list, A, B): the machine's speed swings between runs minutes apart.
          for (const round of [1, 2]) {
            list.push(await productList(plain, `uncached GET /api/v1/products?limit=20 (round ${round})`));
            product.push(await productRead(plain, `uncached GET /api/v1/products/{id}, limits and metrics off (A${round})`));
            withLimits.push(await productRead(limited, `uncached GET /api/v1/products/{id}, limits and metrics on (B${round})`));
          }
        } finally {
          await limited.stop();
        }
        const read = await orderRead(plain, 'uncached GET /api/v1/orders/{id} (own order, with items)');
        const create = await drive(
          `svc POST /api/v1/orders (${ITEMS_PER_ORDER} items)`,
          plain.url,
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
          plain.pid,
        );
        uncached = { read, list, product, limited: withLimits, create, stock: await checkStock(url, seededAt) };
      } finally {
        await plain.stop();
      }

      // Cached: the two-level cache as configured by default (L1 in the process, L2 and the versions
      // in Redis), metrics on to read its hit counts, rate limits off. Beside it, the same with
      // tracing on: every request sampled (always_on), its spans exported over OTLP to a sink in this
      // process. Both share the Redis prefix, as two instances do. The traced one starts first, so
      // that with SVC_BENCH_CPU_PROF the last profile written is still the untraced cached server's.
      const sink = await otlpSink();
      const epochBefore = await redisEpoch(REDIS_URL, redisPrefix);
      const startCached = async (name: string, extra: Env) => {
        const port = await freePort();
        const server = await startServe(name, { METRICS_PORT: String(port), ...extra });
        return { server, metricsUrl: `http://127.0.0.1:${port}/metrics` };
      };
      const traced = await startCached('svc serve (cached, tracing on)', { OTEL_EXPORTER_OTLP_ENDPOINT: sink.url, OTEL_TRACES_SAMPLER: 'always_on' });
      try {
        const warm = await startCached('svc serve (cached)', {});
        try {
          const withHitRatio = async (
            { server, metricsUrl }: { server: Child; metricsUrl: string },
            cache: 'orders' | 'products',
            measure: (server: Child, name: string, afterWarmup: () => Promise<void>) => Promise<Figures>,
            name: string,
          ): Promise<CachedFigures> => {
            let before: CacheCounts = { hits: 0, misses: 0, bypassed: 0 };
            const figures = await measure(server, name, async () => {
              before = await cacheCounts(metricsUrl, cache);
            });
            const after = await cacheCounts(metricsUrl, cache);
            const hits = after.hits - before.hits;
            const bypassed = after.bypassed - before.bypassed;
            const reads = hits + after.misses - before.misses + bypassed;
            return { ...figures, l1HitRatio: reads > 0 ? hits / reads : 0, bypassed };
          };
          // Every order of the load users and every product read once: the measured runs read a warm
          // cache (each holds 10,000 entries by default; the load reads 10,000 orders and 1,000 products).
          // The traced server reads orders only.
          const token = users[0]!.token;
          const orderReads = users.flatMap((u) => u.orders.map((id) => ({ path: `/api/v1/orders/${id}`, token: u.token })));
          await prime(warm.server.url, [
            ...orderReads,
            { path: '/api/v1/products?limit=20', token },
            ...productIds.map((id) => ({ path: `/api/v1/products/${id}`, token })),
          ]);
          await prime(traced.server.url, orderReads);
          const read: CachedFigures[] = [];
          const withTracing: CachedFigures[] = [];
          // Interleaved (off, on, off, on), as the rate limits' pair is.
          for (const round of [1, 2]) {
            read.push(await withHitRatio(warm, 'orders', orderRead, `cached GET /api/v1/orders/{id} (own order, with items), tracing off (C${round})`));
            withTracing.push(await withHitRatio(traced, 'orders', orderRead, `cached GET /api/v1/orders/{id}, tracing on (T${round})`));
          }
          const cached = {
            read,
            product: await withHitRatio(warm, 'products', productRead, 'cached GET /api/v1/products/{id}'),
            list: await withHitRatio(warm, 'products', productList, 'cached GET /api/v1/products?limit=20'),
          };
          return {
            httpFigures,
            dbFigures,
            ...uncached,
            cached,
            traced: withTracing,
            exported: sink.exported,
            epochMoves: (await redisEpoch(REDIS_URL, redisPrefix)) - epochBefore,
          };
        } finally {
          await warm.server.stop();
        }
      } finally {
        await traced.server.stop();
        await sink.close();
      }
    });
    const pgb = await pgbench(durationS);
    return report(measured, pgb, durationS);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
    await dropRedisKeys(REDIS_URL, redisPrefix);
  }
}

const mean = (figures: Figures[]) => figures.reduce((sum, f) => sum + f.reqPerSec, 0) / figures.length;
/** Mean CPU µs per request, NaN when /proc could not be read. */
const meanCpu = (figures: Figures[]) => figures.reduce((sum, f) => sum + (f.cpuUsPerRequest ?? NaN), 0) / figures.length;

function report(m: Measured, pgb: { tps: number; latencyMs: number }, durationS: number): Report {
  const ratio = (a: number, b: number) => Math.round((a / b) * 1000) / 1000;
  const pct = (r: number) => `${fmt(r * 100, 1)}%`;
  const row = (f: Figures, anchor: string, anchorRate?: number, hitRatio?: number) => [
    f.name,
    fmt(f.reqPerSec),
    fmt(f.p50, 1),
    fmt(f.p99, 1),
    fmt(f.errors),
    mib(f.rssBytes),
    f.cpuUsPerRequest === undefined ? '' : fmt(f.cpuUsPerRequest),
    hitRatio === undefined ? '' : pct(hitRatio),
    anchor,
    anchorRate ? pct(f.reqPerSec / anchorRate) : '',
  ];
  const served = [m.read, ...m.list, ...m.product, ...m.limited, m.create, ...m.cached.read, ...m.traced, m.cached.product, m.cached.list];
  const peak = served.reduce((top, f) => ((f.rssBytes ?? 0) > (top.rssBytes ?? 0) ? f : top));
  const rss = peak.rssBytes ?? 0;
  const readErrors = served.filter((f) => f !== m.create).reduce((sum, f) => sum + f.errors, 0);
  const readRatio = ratio(m.read.reqPerSec, m.dbFigures.reqPerSec);
  const singleVsList = ratio(mean(m.product), mean(m.list));
  const cachedVsCeiling = ratio(mean(m.cached.read), m.httpFigures.reqPerSec);
  // What the rate limits and metrics take from the uncached read: 1 - B/A over the interleaved rounds.
  const overhead = Math.round((1 - mean(m.limited) / mean(m.product)) * 1000) / 1000;
  const cpuVsCeiling = Math.round((meanCpu([m.httpFigures]) / meanCpu(m.cached.read)) * 1000) / 1000;
  // What tracing takes from the cached order read: 1 - T/C over the interleaved rounds.
  const tracingCost = Math.round((1 - mean(m.traced) / mean(m.cached.read)) * 1000) / 1000;
  const tracingCpu = Math.round((meanCpu(m.traced) / meanCpu(m.cached.read) - 1) * 1000) / 1000;
  const cpuOverhead = Math.round((meanCpu(m.limited) / meanCpu(m.product) - 1) * 1000) / 1000;
  // autocannon drops the answers still in flight when a run ends (up to one per connection, warm-up
  // and measured run), so the database may hold up to that many more orders than 201s were counted.
  const unaccounted = m.stock.created < m.create.ok || m.stock.created - m.create.ok > 2 * CONNECTIONS ? 1 : 0;
  const oversold = m.stock.negative + m.stock.mismatched + unaccounted;
  const goals: Goal[] = [
    {
      name: 'single product read vs product list (uncached, mean of 2 rounds)',
      ratio: singleVsList,
      value: pct(singleVsList),
      target: '≥ 100%',
      met: singleVsList >= 1,
    },
    {
      name: 'cached order read vs HTTP ceiling (mean of 2 rounds)',
      ratio: cachedVsCeiling,
      value: pct(cachedVsCeiling),
      target: '≥ 50%',
      met: cachedVsCeiling >= 0.5,
    },
    {
      name: "the same in svc serve's CPU per request (ceiling's / cached order read's)",
      ratio: cpuVsCeiling,
      value: Number.isNaN(cpuVsCeiling) ? 'n/a' : `${pct(cpuVsCeiling)} (${fmt(meanCpu([m.httpFigures]))} vs ${fmt(meanCpu(m.cached.read))} µs)`,
    },
    {
      name: 'cost of rate limits + metrics on the uncached product read (1 - B/A)',
      ratio: overhead,
      value: pct(overhead),
      target: '≤ 10%',
      met: overhead <= 0.1,
    },
    {
      name: `peak RSS of svc serve, every measurement (highest: ${peak.name})`,
      ratio: rss / RSS_BOUND,
      value: `${mib(rss)} MiB`,
      target: '< 250 MiB',
      met: served.every((f) => f.rssBytes !== undefined && f.rssBytes > 0 && f.rssBytes < RSS_BOUND),
    },
    {
      name: "the same in svc serve's CPU per request (B/A - 1; steadier on a busy machine)",
      ratio: cpuOverhead,
      value: Number.isNaN(cpuOverhead) ? 'n/a' : `${pct(cpuOverhead)} (${fmt(meanCpu(m.product))} → ${fmt(meanCpu(m.limited))} µs)`,
    },
    {
      name: 'cost of tracing (always on, OTLP to a local sink) on the cached order read (1 - T/C)',
      ratio: tracingCost,
      value: pct(tracingCost),
    },
    {
      name: "the same in svc serve's CPU per request (T/C - 1)",
      ratio: tracingCpu,
      value: Number.isNaN(tracingCpu) ? 'n/a' : `${pct(tracingCpu)} (${fmt(meanCpu(m.cached.read))} → ${fmt(meanCpu(m.traced))} µs)`,
    },
    { name: 'uncached order read vs database-read anchor', ratio: readRatio, value: pct(readRatio), target: '≥ 30%', met: readRatio >= 0.3 },
    { name: 'uncached order read p99', ratio: m.read.p99 / 25, value: `${fmt(m.read.p99, 1)} ms`, target: '< 25 ms', met: m.read.p99 < 25 },
    { name: 'errors in the read measurements (429s included)', ratio: readErrors, value: fmt(readErrors), target: '0', met: readErrors === 0 },
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
    { name: 'order creation vs pgbench tps', ratio: ratio(m.create.reqPerSec, pgb.tps), value: pct(ratio(m.create.reqPerSec, pgb.tps)) },
    {
      name: 'uncached order read vs HTTP ceiling',
      ratio: ratio(m.read.reqPerSec, m.httpFigures.reqPerSec),
      value: pct(ratio(m.read.reqPerSec, m.httpFigures.reqPerSec)),
    },
    {
      name: 'cached vs uncached: order read, product read, product list',
      ratio: ratio(mean(m.cached.read), m.read.reqPerSec),
      value: [ratio(mean(m.cached.read), m.read.reqPerSec), ratio(m.cached.product.reqPerSec, mean(m.product)), ratio(m.cached.list.reqPerSec, mean(m.list))]
        .map((r) => `${fmt(r, 2)}x`)
        .join(', '),
    },
  ];
  return {
    title: `api: autocannon, ${CONNECTIONS} connections, ${durationS} s per measurement after ${WARMUP_S} s warm-up; PostgreSQL seeded with ${fmt(USERS)} users, ${fmt(PRODUCTS)} products, ${fmt(ORDERS)} orders × ${ITEMS_PER_ORDER} items`,
    measurements: [],
    table: {
      header: ['measurement', 'req/s', 'p50 ms', 'p99 ms', 'errors', 'RSS MiB', 'CPU µs/req', 'L1 hits', 'anchor', 'of anchor'],
      rows: [
        row(m.httpFigures, ''),
        row(m.dbFigures, 'HTTP ceiling', m.httpFigures.reqPerSec),
        row(m.read, 'database read', m.dbFigures.reqPerSec),
        ...m.list.flatMap((list, i) => [
          row(list, 'database read', m.dbFigures.reqPerSec),
          row(m.product[i]!, 'the list', list.reqPerSec),
          row(m.limited[i]!, `A${i + 1}`, m.product[i]!.reqPerSec),
        ]),
        row(m.create, 'pgbench tps', pgb.tps),
        ...m.cached.read.flatMap((read, i) => [
          row(read, 'HTTP ceiling', m.httpFigures.reqPerSec, read.l1HitRatio),
          row(m.traced[i]!, `C${i + 1}`, read.reqPerSec, m.traced[i]!.l1HitRatio),
        ]),
        row(m.cached.product, 'HTTP ceiling', m.httpFigures.reqPerSec, m.cached.product.l1HitRatio),
        row(m.cached.list, 'HTTP ceiling', m.httpFigures.reqPerSec, m.cached.list.l1HitRatio),
        [
          `pgbench TPC-B (scale ${PGBENCH_SCALE}, ${PGBENCH_CLIENTS} clients; latency is the average)`,
          fmt(pgb.tps),
          fmt(pgb.latencyMs, 1),
          '',
          '0',
          '',
          '',
          '',
          '',
          '',
        ],
      ],
    },
    goals,
    notes: [
      'uncached: CACHE_L1_MAX_ENTRIES=0; A: RATE_LIMIT_*=0 and METRICS_PORT=off; B: limits of 1,000,000 a minute per address (nothing refused) and METRICS_PORT set',
      'cached: the default cache (L1 in the process, L2 and versions in Redis), primed with every order and product read once; L1 hits = svc_cache_requests_total l1 hits / (l1 hits + l1 misses + bypassed) over the measured run, from /metrics',
      `cached reads that bypassed the cache (Redis unanswered within its 250 ms timeout): ${[...m.cached.read, ...m.traced, m.cached.product, m.cached.list].map((f) => fmt(f.bypassed)).join(', ')} (order C1, C2, T1, T2, product, list); epoch moves while the cached servers ran (each empties the cache): ${fmt(m.epochMoves)}`,
      `tracing: T is a second cached server with OTEL_EXPORTER_OTLP_ENDPOINT set to a sink in the bench process and OTEL_TRACES_SAMPLER=always_on, primed with the order reads, run interleaved with C (C1, T1, C2, T2); the sink received ${fmt(m.exported.requests)} exports, ${mib(m.exported.bytes)} MiB`,
      `RSS is the peak of /proc/<pid>/status VmRSS over each measured run, bound ${mib(RSS_BOUND)} MiB (README); CPU µs/req is the server's user + system time over the measured run (/proc/<pid>/stat) per request`,
    ],
  };
}
