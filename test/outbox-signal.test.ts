import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OutboxSignal } from '../src/adapters/outbox-signal.js';
import type { EventMessage } from '../src/domain/events/events.js';
import type { EventPublisher } from '../src/domain/events/publisher.js';
import { OutboxRelay } from '../src/worker/relay.js';
import { query } from './helpers/db.js';
import { appFor, insertOutbox, silent, waitFor } from './helpers/rabbit.js';

test('on PostgreSQL, a relay that polls every 10 minutes publishes rows another process committed as soon as it signals them', async (t) => {
  const { app, db } = await appFor(t);
  const got: EventMessage[] = [];
  const publisher: EventPublisher = {
    kind: 'test',
    publish: (messages) => {
      got.push(...messages);
      return Promise.resolve();
    },
    check: () => Promise.resolve('ok'),
    close: () => Promise.resolve(),
  };
  const relay = new OutboxRelay({ publisher, context: (input) => app.context(input), logger: silent, pollIntervalMs: 600_000 });
  // Two processes: the writer (svc serve) signals on its pool, the worker listens on a connection of its own.
  const writer = new OutboxSignal({ url: db, run: (text, params) => query(db, text, params), logger: silent });
  const worker = new OutboxSignal({ url: db, run: (text, params) => query(db, text, params), logger: silent });
  t.after(async () => {
    writer.close();
    await listener.close();
    await relay.stop();
  });
  const first = await insertOutbox(db, 3);
  relay.start();
  // Listening starts with one signal of its own (rows may have committed while nobody listened).
  const listener = worker.listen(() => relay.notify());
  await waitFor(() => got.length === 3, 10_000, 'the rows that were there before');
  assert.deepEqual(
    got.map((m) => m.id),
    first,
  );
  // The relay now sleeps for 10 minutes unless signalled: a burst of signals is folded into few passes.
  const second = await insertOutbox(db, 5);
  for (let i = 0; i < 5; i++) writer.notify();
  await waitFor(() => got.length === 8, 10_000, 'the rows signalled');
  assert.deepEqual(
    got.slice(3).map((m) => m.id),
    second,
  );
  const [pending] = await query<{ n: number }>(db, `select count(*)::int as n from outbox_events where status = 'pending'`);
  assert.equal(pending!.n, 0);
});
