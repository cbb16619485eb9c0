// Every filter and sort the list endpoints and `svc users list` offer is served by an index: on a
// seeded database (20k orders, 5k users, 5k products), the plan of each statement the services
// actually send has no sequential scan of those tables.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { migratedDatabase, query } from './helpers/db.js';
import { loadConfig } from '../src/config.js';
import { createApp, type App } from '../src/app.js';
import { createLogger } from '../src/logger.js';
import type { Viewer } from '../src/domain/auth/principal.js';

// A table with more rows than this is large: scanning it whole for a page of 20 is the failure.
// (Below it a sequential scan is what PostgreSQL rightly prefers, as for the empty payments table.)
const LARGE = 1_000;

/** The statements (text and values) the services send while `fn` runs, read off node-postgres itself. */
async function statementsOf(fn: () => Promise<unknown>): Promise<{ text: string; values: unknown[] }[]> {
  const seen: { text: string; values: unknown[] }[] = [];
  // eslint-disable-next-line @typescript-eslint/unbound-method -- put back as it was, and called with apply
  const original = pg.Client.prototype.query;
  // node-postgres' query takes (text, values) or ({ text, values, name }); both are recorded.
  pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
    const [first, second] = args as [string | { text: string; values?: unknown[] }, unknown];
    if (typeof first === 'string') seen.push({ text: first, values: Array.isArray(second) ? (second as unknown[]) : [] });
    else if (first && typeof first.text === 'string') seen.push({ text: first.text, values: first.values ?? [] });
    return (original as (...a: unknown[]) => unknown).apply(this, args);
  } as typeof original;
  try {
    await fn();
  } finally {
    pg.Client.prototype.query = original;
  }
  return seen.filter((s) => /^\s*select\b/i.test(s.text) && /\bfrom "?(orders|users|products)"?/i.test(s.text));
}

interface PlanNode {
  'Node Type': string;
  'Relation Name'?: string;
  Plans?: PlanNode[];
}

function seqScans(node: PlanNode): string[] {
  const own = node['Node Type'] === 'Seq Scan' && node['Relation Name'] ? [node['Relation Name']] : [];
  return own.concat(...(node.Plans ?? []).map(seqScans));
}

async function seed(url: string): Promise<void> {
  // Ids in the services' form (three letters, _, 26 upper-case letters or digits): cursors carry them.
  await query(
    url,
    `insert into users (id, email, name, role, status, created_at, updated_at)
     select 'usr_' || lpad(i::text, 26, '0'), 'user' || i || '@example.com', 'User ' || i,
            case when i % 100 = 0 then 'admin' when i % 10 = 0 then 'guest' else 'user' end,
            case when i % 50 = 7 then 'disabled' else 'active' end,
            now() - make_interval(mins => i * 7), now()
     from generate_series(1, 5000) i`,
  );
  await query(
    url,
    `insert into products (id, sku, name, price, currency, stock, active, created_at, updated_at)
     select 'prd_' || lpad(i::text, 26, '0'), 'SKU-' || i, 'Product ' || i, 100 + i, 'USD', 10, i % 10 <> 0,
            now() - make_interval(mins => i * 11), now()
     from generate_series(1, 5000) i`,
  );
  await query(
    url,
    `insert into orders (id, user_id, status, currency, total, refunded_amount, created_at, updated_at)
     select 'ord_' || lpad(i::text, 26, '0'), 'usr_' || lpad((1 + i % 5000)::text, 26, '0'),
            (array['completed','completed','completed','completed','completed','completed','completed','pending','pending','processing','failed','cancelled','refunded'])[1 + i % 13],
            'USD', 1000, 0, now() - make_interval(mins => i * 3), now()
     from generate_series(1, 20000) i`,
  );
  await query(
    url,
    `insert into order_items (id, order_id, product_id, sku, name, unit_price, quantity)
     select 'itm_' || lpad(i::text, 26, '0'), 'ord_' || lpad((1 + i / 2)::text, 26, '0'), 'prd_' || lpad((1 + i % 5000)::text, 26, '0'),
            'SKU-' || (1 + i % 5000), 'Product', 500, 2
     from generate_series(1, 39999) i`,
  );
  await query(url, 'analyze');
}

test('the list statements of orders, products and users use indexes on a seeded database, whatever the filters', async (t) => {
  const url = await migratedDatabase(t);
  await seed(url);
  const config = loadConfig({ DATABASE_URL: url, LOG_LEVEL: 'silent' });
  const app: App = await createApp(config, { logger: createLogger('silent') });
  t.after(() => app.close());
  const ctx = () => app.context({ actor: 'cli:test' });
  const admin: Viewer = { userId: 'usr_00000000000000000000000100', role: 'admin' };
  const user: Viewer = { userId: 'usr_00000000000000000000000042', role: 'user' };
  const week = { createdFrom: new Date(Date.now() - 14 * 86_400_000), createdTo: new Date(Date.now() - 7 * 86_400_000) };

  // What the API (GET /orders, /products, /users with their query parameters) and `svc users list` ask
  // for; each is also asked for its next page (the cursor's keyset condition).
  type List = (cursor?: string) => Promise<{ pagination: { cursor: string | null } }>;
  const lists: [string, List][] = [
    ['orders, all (admin)', (cursor) => app.orders.list(ctx(), { viewer: admin, cursor })],
    ['orders, status=failed', (cursor) => app.orders.list(ctx(), { viewer: admin, status: 'failed', cursor })],
    ['orders, status=completed', (cursor) => app.orders.list(ctx(), { viewer: admin, status: 'completed', cursor })],
    ['orders, userId', (cursor) => app.orders.list(ctx(), { viewer: admin, userId: user.userId, cursor })],
    ['orders, userId and status', (cursor) => app.orders.list(ctx(), { viewer: admin, userId: user.userId, status: 'pending', cursor })],
    ['orders, created in a week', (cursor) => app.orders.list(ctx(), { viewer: admin, ...week, cursor })],
    ['orders, status and a week', (cursor) => app.orders.list(ctx(), { viewer: admin, status: 'refunded', ...week, cursor })],
    ['orders, a user their own', (cursor) => app.orders.list(ctx(), { viewer: user, cursor })],
    ['products, all (admin)', (cursor) => app.products.list(ctx(), { viewer: admin, cursor })],
    ['products, active=true', (cursor) => app.products.list(ctx(), { viewer: admin, active: true, cursor })],
    ['products, active=false', (cursor) => app.products.list(ctx(), { viewer: admin, active: false, cursor })],
    ['products, a user', (cursor) => app.products.list(ctx(), { viewer: user, cursor })],
    ['users, all', (cursor) => app.users.list(ctx(), { cursor })],
    ['users, role=admin', (cursor) => app.users.list(ctx(), { role: 'admin', cursor })],
    ['users, role=guest', (cursor) => app.users.list(ctx(), { role: 'guest', cursor })],
    ['users, status=disabled', (cursor) => app.users.list(ctx(), { status: 'disabled', cursor })],
    ['users, role and status', (cursor) => app.users.list(ctx(), { role: 'user', status: 'disabled', cursor })],
    // Not checked: `search` (svc users list --search) is a substring match (ILIKE '%term%' on email and
    // name) and reads every user; an index for it needs pg_trgm, which the embedded database does not load.
  ];
  const pages: [string, () => Promise<unknown>][] = [];
  for (const [name, list] of lists) {
    pages.push([name, () => list()]);
    const cursor = (await list()).pagination.cursor;
    if (cursor) pages.push([`${name}, next page`, () => list(cursor)]);
  }

  const explainer = new pg.Client({ connectionString: url });
  await explainer.connect();
  explainer.on('error', () => {});
  t.after(() => explainer.end());
  const large = (
    await query<{ relname: string }>(url, `select relname from pg_class where relkind = 'r' and relnamespace = 'public'::regnamespace and reltuples > $1`, [
      LARGE,
    ])
  ).map((r) => r.relname);
  assert.deepEqual(large.sort(), ['order_items', 'orders', 'products', 'users']);
  const failures: string[] = [];
  for (const [name, list] of pages) {
    const statements = await statementsOf(list);
    assert.ok(statements.length > 0, `${name}: no list statement was captured`);
    for (const { text, values } of statements) {
      const { rows } = await explainer.query<{ 'QUERY PLAN': [{ Plan: PlanNode }] }>(`explain (format json) ${text}`, values);
      const scans = seqScans(rows[0]!['QUERY PLAN'][0].Plan).filter((table) => large.includes(table));
      if (scans.length) failures.push(`${name}: sequential scan of ${scans.join(', ')} in: ${text}`);
    }
  }
  assert.deepEqual(failures, []);
});
