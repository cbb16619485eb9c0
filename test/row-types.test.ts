import { test } from 'node:test';
import assert from 'node:assert/strict';
import { testServer } from './helpers/server.js';
import { query } from '../src/domain/shared/sql.js';

// int8, numeric (a sum of int8), timestamptz, json, jsonb and an aggregate, as services read them.
const STATEMENT = `select 9007199254740991::int8 as big, sum(x)::numeric as sum, count(*) as n,
  timestamptz '2026-11-25 12:31:02.123+05:30' as at, array[timestamptz '2026-11-25 07:01:02Z'] as ats,
  json_build_object('a', 1) as j, '{"b": [2]}'::jsonb as jb, json_agg(x order by x) as agg
  from (values (1::bigint), (2::bigint)) v(x) where $1::int = 1`;

const EXPECTED = {
  big: Number.MAX_SAFE_INTEGER,
  sum: 3,
  n: 2,
  at: new Date('2026-11-25T07:01:02.123Z'),
  ats: [new Date('2026-11-25T07:01:02.000Z')],
  j: { a: 1 },
  jb: { b: [2] },
  agg: [1, 2],
};

for (const embedded of [false, true]) {
  const where = embedded ? 'embedded' : 'PostgreSQL';
  test(`raw rows have numbers, Dates and parsed JSON on the pool and in a transaction (${where})`, async (t) => {
    const { app } = await testServer(t, { embedded });
    const ctx = app.context({ actor: 'cli:test' });
    const [pooled] = await ctx.sql<Record<string, unknown>>(STATEMENT, [1]);
    assert.deepEqual(pooled, EXPECTED);
    const [inTransaction] = await ctx.em.transactional((em) => query<Record<string, unknown>>(em, STATEMENT, [1]));
    assert.deepEqual(inTransaction, EXPECTED);
  });

  test(`an int8 beyond 2^53 fails its statement instead of losing digits (${where})`, async (t) => {
    const { app } = await testServer(t, { embedded });
    const ctx = app.context({ actor: 'cli:test' });
    await assert.rejects(ctx.sql('select 9007199254740993::int8 as big where $1::int = 1', [1]), /beyond 2\^53/);
    // The connection is still usable.
    assert.deepEqual(await ctx.sql('select 1::int8 as one where $1::int = 1', [1]), [{ one: 1 }]);
  });
}
