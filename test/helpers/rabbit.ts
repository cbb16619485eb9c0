import { randomBytes } from 'node:crypto';
import type { TestContext } from 'node:test';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import amqp from 'amqplib';
import { RabbitMq, type RabbitMqOptions } from '../../src/adapters/rabbitmq.js';
import { tcpProxy } from './tcp-proxy.js';
import { createApp, type App } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/logger.js';
import type { ConsumerSpec } from '../../src/domain/events/transport.js';
import { newId } from '../../src/domain/shared/ids.js';
import { migratedDatabase, query } from './db.js';

/** The RabbitMQ tests run against (CI and development machines have one on 127.0.0.1). */
export const AMQP_URL = process.env.TEST_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
export const silent = createLogger('silent');

/** A name prefix of this test's own for exchanges and queues. */
export const testPrefix = () => `svc_t_${randomBytes(5).toString('hex')}`;

/**
 * A RabbitMq adapter on this test's own prefix; when the test ends it is closed and every queue it
 * declared (work, wait and dead-letter queues) and its exchange are deleted.
 */
export async function rabbitFor(t: TestContext, options: Partial<RabbitMqOptions> & { url?: string } = {}): Promise<RabbitMq> {
  const prefix = options.prefix ?? testPrefix();
  const rabbit = await RabbitMq.connect(options.url ?? AMQP_URL, {
    logger: silent,
    reconnect: { initialMs: 20, maxMs: 200 },
    ...options,
    prefix,
  });
  const declare = rabbit.declare.bind(rabbit);
  const specs: ConsumerSpec[] = [];
  rabbit.declare = (spec) => {
    specs.push(spec);
    return declare(spec);
  };
  t.after(async () => {
    await rabbit.close();
    await deleteTopology(rabbit, specs);
  });
  return rabbit;
}

async function deleteTopology(rabbit: RabbitMq, specs: ConsumerSpec[]): Promise<void> {
  const conn = await amqp.connect(AMQP_URL);
  try {
    const ch = await conn.createChannel();
    for (const spec of specs) {
      const q = rabbit.queues(spec);
      for (const name of [q.work, q.dead, ...q.retries.map((r) => r.queue)]) await ch.deleteQueue(name);
    }
    await ch.deleteExchange(rabbit.exchange);
  } finally {
    await conn.close();
  }
}

/** A plain amqplib channel for a test to look at queues with; closed when the test ends. */
export async function rawChannel(t: TestContext): Promise<amqp.Channel> {
  const conn = await amqp.connect(AMQP_URL);
  t.after(() => conn.close().catch(() => {}));
  const ch = await conn.createChannel();
  ch.on('error', () => {});
  return ch;
}

/** An App on a database of this test's own (migrated), closed when the test ends. */
export async function appFor(t: TestContext): Promise<{ app: App; db: string }> {
  const db = await migratedDatabase(t);
  const app = await createApp(loadConfig({ DATABASE_URL: db, SVC_DATA_DIR: join(tmpdir(), 'svc-unused'), LOG_LEVEL: 'silent' }), { logger: silent });
  t.after(() => app.close());
  return { app, db };
}

/** Polls `predicate` until it holds, failing after `timeoutMs`: for state that announces nothing (database rows, queue depths). */
export async function waitFor(predicate: () => boolean | Promise<boolean>, timeoutMs = 10_000, what = 'the condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await predicate()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Inserts `count` pending outbox rows of `type`; returns their ids in creation order. */
export async function insertOutbox(db: string, count: number, type = 'order.created'): Promise<string[]> {
  const ids = Array.from({ length: count }, () => newId('evt'));
  await query(
    db,
    `insert into outbox_events (id, type, aggregate_id, payload, traceparent, status, attempts, available_at, created_at)
     select id, $2, 'ord_' || lpad(n::text, 26, '0'), jsonb_build_object('n', n), $3, 'pending', 0, now(), clock_timestamp()
     from unnest($1::text[]) with ordinality as u(id, n)`,
    [ids, type, '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'],
  );
  return ids;
}

/**
 * A TCP proxy on a free loopback port in front of RabbitMQ, which a test can take down (every
 * connection through it cut) and bring back on the same port: RabbitMQ going away and returning.
 */
export async function rabbitProxy(t: TestContext): Promise<{ url: string; down(): Promise<void>; up(): Promise<void> }> {
  const target = new URL(AMQP_URL);
  const proxy = await tcpProxy(t, target.hostname, Number(target.port || 5672));
  const url = new URL(AMQP_URL);
  url.port = String(proxy.port);
  return { url: url.toString(), down: proxy.down, up: proxy.up };
}
