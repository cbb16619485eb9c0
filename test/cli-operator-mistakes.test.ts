import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { svc } from './helpers/cli.js';
import { query, PG_ADMIN_URL, urlFor } from './helpers/db.js';

// Mistakes an operator makes at 3 a.m.: each gets an exit code and a sentence that says what is wrong,
// and changes nothing.

test('a DATABASE_URL naming a database that does not exist exits 6 naming it, and creates no database', async (t) => {
  const name = `svc_t_typo_${randomBytes(4).toString('hex')}`;
  t.after(() => query(PG_ADMIN_URL, `drop database if exists "${name}"`));
  for (const args of [
    ['migrate', 'status', '--json'],
    ['users', 'list', '--json'],
  ]) {
    const res = await svc(args, { env: { DATABASE_URL: urlFor(name) } });
    assert.equal(res.code, 6, res.stdout + res.stderr);
    assert.match(res.json().error.message, new RegExp(`database "${name}" does not exist.*DATABASE_URL`));
  }
  assert.deepEqual(await query(PG_ADMIN_URL, 'select datname from pg_database where datname = $1', [name]), []);
});
