import pg from 'pg';
import type { SqlEntityManager } from '@mikro-orm/sql';
import type { QueueDepth } from '../domain/shared/metrics.js';
import type { Sql } from '../domain/shared/sql.js';
import type { Cache } from '../domain/shared/cache.js';
import type { Database } from './database.js';
import type { PrometheusMetrics } from './prometheus-metrics.js';

/** The most pending outbox rows counted on a scrape: beyond it the gauge says "at least this many". */
export const OUTBOX_COUNT_CAP = 100_000;

/** The node-postgres pool's figures at each scrape (PostgreSQL only: PGlite has one connection and no pool). */
export function watchDatabasePool(metrics: PrometheusMetrics, db: Database, max: number): void {
  if (db.kind !== 'postgresql') return;
  // The pool MikroORM built (it is created on the first use of the connection, not per scrape).
  const pool = async () => {
    const native: unknown = await (db.orm.em as SqlEntityManager).getConnection().getNativeClient();
    return native instanceof pg.Pool ? native : undefined;
  };
  metrics.gauge({
    name: 'svc_db_pool_connections',
    help: "Connections in this process's PostgreSQL pool, by state: active (lent to a statement or transaction) or idle",
    labelNames: ['state'],
    collect: async () => {
      const p = await pool();
      return p
        ? [
            { labels: { state: 'active' }, value: p.totalCount - p.idleCount },
            { labels: { state: 'idle' }, value: p.idleCount },
          ]
        : [];
    },
  });
  metrics.gauge({
    name: 'svc_db_pool_waiting_requests',
    help: 'Requests for a connection waiting because the pool is at its maximum (DATABASE_POOL_MAX)',
    labelNames: [],
    collect: async () => {
      const p = await pool();
      return p ? [{ labels: {}, value: p.waitingCount }] : [];
    },
  });
  metrics.gauge({
    name: 'svc_db_pool_max_connections',
    help: 'The most connections the pool opens (DATABASE_POOL_MAX)',
    labelNames: [],
    collect: () => [{ labels: {}, value: max }],
  });
}

/** The outbox backlog at each scrape: pending rows, counted up to OUTBOX_COUNT_CAP (an index range scan, bounded). */
export function watchOutbox(metrics: PrometheusMetrics, sql: Sql): void {
  metrics.gauge({
    name: 'svc_outbox_pending_events',
    help: `Outbox events not yet published (counted up to ${OUTBOX_COUNT_CAP}); growing means the relay is stopped or the broker refuses them`,
    labelNames: [],
    collect: async () => {
      const [row] = await sql<{ n: number }>(
        `select count(*)::int as n from (select 1 from outbox_events where status = 'pending' limit ${OUTBOX_COUNT_CAP}) pending`,
        [],
      );
      return [{ labels: {}, value: row?.n ?? 0 }];
    },
  });
}

/** The event queues' depth at each scrape, from the transport (RabbitMQ's counts, or the event_deliveries table). */
export function watchQueues(metrics: PrometheusMetrics, depths: () => Promise<QueueDepth[]>): void {
  metrics.gauge({
    name: 'svc_queue_messages',
    help: 'Messages waiting in each consumer queue, by state: ready (due), retrying (waiting out a retry delay), dead (dead-letter queue, for svc recover)',
    labelNames: ['consumer', 'state'],
    collect: async () => (await depths()).map((d) => ({ labels: { consumer: d.consumer, state: d.state }, value: d.messages })),
  });
}

/**
 * svc_cache_requests_total{cache, level, result}: the cache's lookups by level (l1, l2) and result
 * (hit, miss), and `level="none", result="bypass"` for reads that went to the database without
 * looking (Redis unreachable, or no cache). The L1 hit ratio of a cache is
 * rate(hit{level="l1"}) / rate(hit{level="l1"} + miss{level="l1"}); L2 is looked at after an L1 miss.
 */
export function watchCache(metrics: PrometheusMetrics, cache: Cache): void {
  metrics.counterOf({
    name: 'svc_cache_requests_total',
    help: 'Cached reads by cache, level (l1, l2; none for reads that bypassed the cache) and result (hit, miss, bypass)',
    labelNames: ['cache', 'level', 'result'],
    collect: () =>
      Object.entries(cache.stats()).flatMap(([name, s]) => [
        { labels: { cache: name, level: 'l1', result: 'hit' }, value: s.l1.hits },
        { labels: { cache: name, level: 'l1', result: 'miss' }, value: s.l1.misses },
        { labels: { cache: name, level: 'l2', result: 'hit' }, value: s.l2.hits },
        { labels: { cache: name, level: 'l2', result: 'miss' }, value: s.l2.misses },
        { labels: { cache: name, level: 'none', result: 'bypass' }, value: s.bypassed },
      ]),
  });
}
