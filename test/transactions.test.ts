import { test } from 'node:test';
import assert from 'node:assert/strict';
import { testServer } from './helpers/server.js';
import { migratedDatabase, query } from './helpers/db.js';
import { svc } from './helpers/cli.js';
import { audit } from '../src/domain/audit/audit.js';
import { emit } from '../src/domain/events/emit.js';
import type { App } from '../src/app.js';

class Boom extends Error {}

/** Rows as the app itself reads them (the embedded database has no other client). */
const rows = <T>(app: App, text: string, values: unknown[] = []) => app.context({ actor: 'cli:test' }).sql<T>(text, values);

test('audit and emit outside a transaction throw and write nothing', async (t) => {
  const { app } = await testServer(t);
  const ctx = app.context({ actor: 'cli:test' });
  await assert.rejects(audit(ctx, 'user.renamed', 'usr_x'), /the audit row user\.renamed must be written in the transaction of the change/);
  await assert.rejects(emit(ctx, 'order.created', 'ord_x', {}), /the order\.created event must be written in the transaction of the change/);
  assert.deepEqual(await rows(app, 'select (select count(*) from audit_log) as audit, (select count(*) from outbox_events) as events where $1::int = 1', [1]), [
    { audit: 0, events: 0 },
  ]);
});

for (const embedded of [false, true]) {
  const where = embedded ? 'embedded' : 'PostgreSQL';

  test(`a change, its audit row and its event commit together, or none of them when the transaction fails after all were written (${where})`, async (t) => {
    const ts = await testServer(t, { embedded });
    const { app } = ts;
    const ada = await ts.user({ email: 'ada@example.com' });
    const ctx = app.context({ actor: 'cli:test', traceId: '0af7651916cd43dd8448eb211c80319c' });
    const state = async () => ({
      role: (await rows<{ role: string }>(app, 'select role from users where id = $1', [ada.id]))[0]!.role,
      audit: await rows<{ action: string; actor: string }>(app, "select action, actor from audit_log where target = $1 and action <> 'user.created'", [ada.id]),
      events: await rows<{ type: string; payload: unknown; traceparent: string; status: string }>(
        app,
        'select type, payload, traceparent, status from outbox_events where aggregate_id = $1',
        [ada.id],
      ),
    });

    await assert.rejects(
      ctx.transaction(async (tx) => {
        await app.users.setRole(tx, ada.id, 'admin');
        await emit(tx, 'order.created', ada.id, { probe: true });
        // Both are written (the audit row and the event by now, the role at the flush before commit) ...
        assert.equal((await tx.sql('select 1 from outbox_events where aggregate_id = $1', [ada.id])).length, 1);
        assert.equal((await tx.sql("select 1 from audit_log where target = $1 and action = 'user.role-changed'", [ada.id])).length, 1);
        // ... and the transaction fails.
        throw new Boom('after both were written');
      }),
      Boom,
    );
    assert.deepEqual(await state(), { role: 'user', audit: [], events: [] });

    await ctx.transaction(async (tx) => {
      await app.users.setRole(tx, ada.id, 'admin');
      await emit(tx, 'order.created', ada.id, { probe: true });
    });
    const after = await state();
    assert.equal(after.role, 'admin');
    assert.deepEqual(after.audit, [{ action: 'user.role-changed', actor: 'cli:test' }]);
    assert.equal(after.events.length, 1);
    assert.deepEqual(
      { ...after.events[0], traceparent: undefined },
      { type: 'order.created', payload: { probe: true }, traceparent: undefined, status: 'pending' },
    );
    assert.match(after.events[0]!.traceparent, /^00-0af7651916cd43dd8448eb211c80319c-[0-9a-f]{16}-01$/);
  });
}

test('svc users set-role writes its audit row with the role change; a refused change writes none', async (t) => {
  const url = await migratedDatabase(t);
  const env = { DATABASE_URL: url, SVC_ACTOR: 'cli:alice' };
  const created = await svc(['users', 'create', '--email', 'ada@example.com', '--name', 'Ada', '--json'], { env });
  assert.equal(created.code, 0, created.stderr);
  const ada = created.json<{ id: string }>();
  const audits = () =>
    query<{ action: string; actor: string; details: unknown }>(url, "select action, actor, details from audit_log where action <> 'user.created'");

  const refused = await svc(['users', 'set-role', 'ada@example.com', 'owner'], { env });
  assert.equal(refused.code, 2, refused.stderr);
  const missing = await svc(['users', 'set-role', 'nobody@example.com', 'admin'], { env });
  assert.equal(missing.code, 3, missing.stderr);
  assert.deepEqual(await audits(), []);

  const changed = await svc(['users', 'set-role', 'ada@example.com', 'admin'], { env });
  assert.equal(changed.code, 0, changed.stderr);
  assert.deepEqual(await audits(), [{ action: 'user.role-changed', actor: 'cli:alice', details: { from: 'user', to: 'admin' } }]);
  assert.deepEqual(await query(url, 'select role from users where id = $1', [ada.id]), [{ role: 'admin' }]);
});

interface EventRow {
  id: string;
  type: string;
  aggregate_id: string;
  payload: Record<string, unknown>;
  traceparent: string | null;
  status: string;
}

const eventsOf = (app: App, orderId: string) =>
  rows<EventRow>(app, 'select id, type, aggregate_id, payload, traceparent, status from outbox_events where aggregate_id = $1 order by id', [orderId]);

for (const embedded of [false, true]) {
  const where = embedded ? 'embedded' : 'PostgreSQL';

  test(`an order and its order.created event commit together, a cancel and its order.cancelled too, or neither when the transaction fails (${where})`, async (t) => {
    const ts = await testServer(t, { embedded });
    const { app } = ts;
    const alice = await ts.user({ email: 'alice@example.com' });
    const admin = app.context({ actor: 'cli:test' });
    const pen = await app.products.create(admin, { sku: 'PEN-1', name: 'Pen', price: { amount: 250, currency: 'USD' }, stock: 10 });
    const ctx = app.context({ actor: alice.id, traceId: '4bf92f3577b34da6a3ce929d0e0e4736' });
    const viewer = { userId: alice.id, role: 'user' as const };
    const stock = async () => (await rows<{ stock: number }>(app, 'select stock from products where id = $1', [pen.id]))[0]!.stock;
    const input = { userId: alice.id, items: [{ sku: 'PEN-1', quantity: 3 }], paymentMethod: 'pm_card_visa' };

    // Placed inside a transaction that then fails: neither the order nor its event is there.
    let rolledBack = '';
    await assert.rejects(
      ctx.transaction(async (tx) => {
        const { order } = await app.orders.create(tx, input);
        rolledBack = order.id;
        assert.equal((await tx.sql('select 1 from outbox_events where aggregate_id = $1', [order.id])).length, 1);
        throw new Boom('after both were written');
      }),
      Boom,
    );
    assert.deepEqual(await rows(app, 'select id from orders where id = $1', [rolledBack]), []);
    assert.deepEqual(await eventsOf(app, rolledBack), []);
    assert.equal(await stock(), 10);

    // Placed: exactly one order.created with what a consumer needs to charge it.
    const { order } = await app.orders.create(ctx, input);
    const [created, ...more] = await eventsOf(app, order.id);
    assert.deepEqual(more, []);
    assert.match(created!.id, /^evt_[0-9A-Z]{26}$/);
    assert.match(created!.traceparent!, /^00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-01$/);
    assert.deepEqual(
      { ...created, id: undefined, traceparent: undefined },
      {
        id: undefined,
        type: 'order.created',
        aggregate_id: order.id,
        payload: {
          orderId: order.id,
          userId: alice.id,
          total: 750,
          currency: 'USD',
          paymentMethod: 'pm_card_visa',
          items: [{ productId: pen.id, sku: 'PEN-1', name: 'Pen', unitPrice: 250, quantity: 3 }],
        },
        traceparent: undefined,
        status: 'pending',
      },
    );

    // Cancelled inside a transaction that then fails: still pending, no order.cancelled, stock still taken.
    await assert.rejects(
      ctx.transaction(async (tx) => {
        await app.orders.cancel(tx, { viewer, id: order.id });
        assert.equal((await tx.sql("select 1 from outbox_events where aggregate_id = $1 and type = 'order.cancelled'", [order.id])).length, 1);
        throw new Boom('after both were written');
      }),
      Boom,
    );
    assert.deepEqual(await rows(app, 'select status from orders where id = $1', [order.id]), [{ status: 'pending' }]);
    assert.deepEqual(
      (await eventsOf(app, order.id)).map((e) => e.type),
      ['order.created'],
    );
    assert.equal(await stock(), 7);

    // Cancelled: both.
    await app.orders.cancel(ctx, { viewer, id: order.id });
    const events = await eventsOf(app, order.id);
    assert.deepEqual(
      events.map((e) => [e.type, e.payload]),
      [
        ['order.created', created!.payload],
        ['order.cancelled', { orderId: order.id, userId: alice.id, total: 750, currency: 'USD', paymentMethod: 'pm_card_visa' }],
      ],
    );
    assert.equal(await stock(), 10);
  });
}

test('concurrent repeats of an Idempotency-Key write one order.created; a refused order writes none', async (t) => {
  const ts = await testServer(t);
  const { app } = ts;
  const alice = await ts.user({ email: 'alice@example.com' });
  await app.products.create(app.context({ actor: 'cli:test' }), { sku: 'PEN-1', name: 'Pen', price: { amount: 250, currency: 'USD' }, stock: 10 });
  const input = {
    userId: alice.id,
    items: [{ sku: 'PEN-1', quantity: 1 }],
    paymentMethod: 'pm_card_visa',
    idempotency: { key: 'once-1', principal: alice.id },
  };
  const results = await Promise.all(Array.from({ length: 10 }, () => app.orders.create(app.context({ actor: alice.id }), input)));
  assert.equal(new Set(results.map((r) => r.order.id)).size, 1);
  assert.equal(results.filter((r) => r.replayed).length, 9);
  assert.deepEqual(await rows(app, "select aggregate_id from outbox_events where type = 'order.created' and $1::int = 1", [1]), [
    { aggregate_id: results[0]!.order.id },
  ]);

  await assert.rejects(app.orders.create(app.context({ actor: alice.id }), { ...input, items: [{ sku: 'PEN-1', quantity: 100 }], idempotency: undefined }), {
    code: 'conflict',
  });
  assert.equal((await rows(app, 'select 1 from outbox_events where $1::int = 1', [1])).length, 1);
});
