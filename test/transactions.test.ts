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
