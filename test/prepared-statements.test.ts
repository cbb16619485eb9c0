import { test } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { PreparingClient } from '../src/adapters/prepared-statements.js';
import { emptyDatabase } from './helpers/db.js';

test('parameterized statements are prepared once per connection, and one broken by a schema change is prepared again', async (t) => {
  const client = new PreparingClient({ connectionString: await emptyDatabase(t) });
  await client.connect();
  try {
    await client.query('create table things (id int primary key, name text)');
    await client.query("insert into things values (1, 'one'), (2, 'two')");
    const byId = 'select * from things where id = $1';

    assert.deepEqual((await client.query(byId, [1])).rows, [{ id: 1, name: 'one' }]);
    assert.deepEqual((await client.query(byId, [2])).rows, [{ id: 2, name: 'two' }]);
    const prepared = await client.query<{ name: string; statement: string }>('select name, statement from pg_prepared_statements');
    assert.deepEqual(
      prepared.rows.map((r) => r.statement),
      [byId],
      'one server-side statement for both executions',
    );

    // `select *` now returns another row type: PostgreSQL refuses the old plan once, then it is prepared anew.
    await client.query('alter table things add column size int');
    await assert.rejects(client.query(byId, [1]), (err: { code?: string }) => err.code === '0A000');
    assert.deepEqual((await client.query(byId, [1])).rows, [{ id: 1, name: 'one', size: null }]);

    // Statements without parameters are not prepared.
    assert.equal((await client.query('select count(*)::int as n from things')).rows[0].n, 2);
    assert.equal((await client.query('select count(*)::int as n from pg_prepared_statements')).rows[0].n, 2);
  } finally {
    await client.end();
  }
});

test('statements sent through the pool (which passes a callback) are prepared too', async (t) => {
  const pool = new pg.Pool({ connectionString: await emptyDatabase(t), Client: PreparingClient, max: 1 });
  try {
    const byNumber = 'select $1::int * 2 as doubled';
    assert.equal((await pool.query(byNumber, [2])).rows[0].doubled, 4);
    assert.equal((await pool.query(byNumber, [3])).rows[0].doubled, 6);
    const prepared = await pool.query<{ statement: string }>('select statement from pg_prepared_statements');
    assert.deepEqual(
      prepared.rows.map((r) => r.statement),
      [byNumber],
    );
    await assert.rejects(pool.query('select $1::int / 0', [1]), (err: { code?: string }) => err.code === '22012');
  } finally {
    // pg-pool's end() resolves once its clients are told to end, not once they have: wait until each
    // is gone before the test's database is dropped (a connection still open then is terminated by
    // the server, which the pool reports as an error event).
    const open = pool.totalCount;
    let removedCount = 0;
    const removed = new Promise<void>((resolve) => {
      if (open === 0) resolve();
      pool.on('remove', () => {
        if (++removedCount === open) resolve();
      });
    });
    await pool.end();
    await removed;
  }
});
