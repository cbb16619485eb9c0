import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { createHmac } from 'node:crypto';
import { newId, isId, ulid } from '../src/domain/shared/ids.js';
import { CursorCodec } from '../src/domain/shared/pagination.js';
import { DomainError } from '../src/domain/shared/errors.js';
import { maskEmail } from '../src/logger.js';
import { exitCodeFor } from '../src/cli/exit-codes.js';
import { renderTable } from '../src/cli/render.js';

test('ids carry their kind, read unambiguously and sort by creation time', () => {
  assert.equal(ulid(1469918176385).slice(0, 10), '01ARYZ6S41');
  const ids = Array.from({ length: 1000 }, () => newId('ord'));
  assert.ok(ids.every((id) => isId('ord', id)));
  assert.deepEqual([...ids].sort(), ids);
  assert.equal(new Set(ids).size, ids.length);
  assert.doesNotMatch(ids.join(''), /[ILOU]/);
});

test('a cursor round-trips, and anything tampered with, truncated or signed with another key is invalid input', () => {
  const codec = new CursorCodec(Buffer.from('k'.repeat(32)));
  const scope = { list: 'users', filters: { role: 'admin' } };
  const key = { createdAt: new Date('2026-11-20T10:30:00.000Z'), id: newId('usr') };
  const cursor = codec.encode(key, scope);
  assert.deepEqual(codec.decode(cursor, scope), key);
  const [payload, mac] = cursor.split('.') as [string, string];
  // A well-formed cursor for another position, with the original signature: refused.
  const moved = Buffer.from(
    JSON.stringify(['users', JSON.parse(Buffer.from(payload, 'base64url').toString())[1], '2020-01-01T00:00:00.000Z', key.id]),
  ).toString('base64url');
  const other = new CursorCodec(Buffer.from('x'.repeat(32))).encode(key, scope);
  for (const bad of [
    '',
    'not a cursor!',
    payload,
    `${payload}.`,
    cursor.slice(3),
    `${moved}.${mac}`,
    other,
    `${payload}.${mac.slice(0, -1)}${mac.endsWith('A') ? 'B' : 'A'}`,
  ]) {
    assert.throws(
      () => codec.decode(bad, scope, 'after'),
      (err: unknown) =>
        err instanceof DomainError && err.code === 'invalid' && err.details.field === 'after' && /not one this service issued/.test(err.message),
      bad,
    );
  }
});

test('a cursor continues only the list and the filters it came from: elsewhere it is invalid input saying so', () => {
  const codec = new CursorCodec(Buffer.from('k'.repeat(32)));
  const key = { createdAt: new Date('2026-11-20T10:30:00.000Z'), id: newId('ord') };
  const from = new Date('2026-11-01T00:00:00.000Z');
  const orders = codec.encode(key, { list: 'orders', filters: { status: 'pending', createdFrom: from, userId: undefined } });
  // The same filters in another order, a filter not given left out, a date as another Date: the same list.
  assert.deepEqual(codec.decode(orders, { list: 'orders', filters: { createdFrom: new Date(from.getTime()), status: 'pending' } }), key);
  const refused = (cursor: string, scope: Parameters<CursorCodec['decode']>[1], message: RegExp) =>
    assert.throws(
      () => codec.decode(cursor, scope),
      (err: unknown) => err instanceof DomainError && err.code === 'invalid' && err.details.field === 'cursor' && message.test(err.message),
    );
  refused(orders, { list: 'users', filters: { status: 'pending' } }, /^the cursor belongs to another list \(orders\), not to the users list/);
  refused(orders, { list: 'products' }, /belongs to another list \(orders\)/);
  refused(orders, { list: 'orders', filters: { status: 'completed', createdFrom: from } }, /^the cursor was made with other filters/);
  refused(orders, { list: 'orders', filters: { status: 'pending' } }, /other filters/);
  refused(orders, { list: 'orders', filters: { status: 'pending', createdFrom: from, userId: newId('usr') } }, /other filters/);
  // A cursor of the form before cursors named their list (position only), signed with this key: refused.
  const position = Buffer.from(JSON.stringify([key.createdAt.toISOString(), key.id])).toString('base64url');
  const legacy = `${position}.${createHmac('sha256', 'k'.repeat(32)).update(position).digest('base64url').slice(0, 22)}`;
  refused(legacy, { list: 'orders' }, /not one this service issued/);
});

test('emails are masked for logs, keeping enough to tell them apart', () => {
  assert.equal(maskEmail('ada@example.com'), 'a***@e***.com');
  assert.equal(maskEmail('user ada.lovelace@mail.example.org signed up'), 'user a***@m***.org signed up');
});

test('each error code has its own exit code; invalid input is 2', () => {
  assert.equal(exitCodeFor('invalid'), 2);
  assert.equal(exitCodeFor('not_found'), 3);
  assert.equal(exitCodeFor('conflict'), 4);
  assert.equal(exitCodeFor('unavailable'), 6);
  assert.equal(exitCodeFor('internal'), 1);
});

test('the logger writes JSON with emails masked and secrets redacted', async () => {
  const lines: string[] = [];
  const sink = new Writable({ write: (chunk, _enc, done) => (lines.push(chunk.toString()), done()) });
  const { createLoggerTo } = await import('../src/logger.js');
  const logger = createLoggerTo('info', sink);
  logger.info({ email: 'ada@example.com', password: 'hunter2hunter2', nested: { to: 'bob@example.org' } }, 'welcome mail to ada@example.com');
  const line = JSON.parse(lines[0]!);
  assert.equal(line.email, 'a***@e***.com');
  assert.equal(line.password, '[redacted]');
  assert.equal(line.nested.to, 'b***@e***.org');
  assert.equal(line.msg, 'welcome mail to a***@e***.com');
  assert.equal(line.level, 'info');
  // Secrets by key at any depth (headers included, whatever their case) and in a child's bindings.
  logger
    .child({ token: 'abc.def.ghi', email: 'eve@example.net' })
    .info({ req: { headers: { Authorization: 'Bearer abc', cookie: 's=1' } }, user: { passwordHash: '$argon2id$x' } }, 'sign-in');
  const child = JSON.parse(lines[1]!);
  assert.equal(child.token, '[redacted]');
  assert.equal(child.email, 'e***@e***.net');
  assert.deepEqual(child.req.headers, { Authorization: '[redacted]', cookie: '[redacted]' });
  assert.equal(child.user.passwordHash, '[redacted]');
  assert.doesNotMatch(lines.join(''), /hunter2|abc\.def|Bearer abc|argon2/);
  // A time logs as its ISO text, not as an empty object.
  logger.info({ since: new Date('2026-11-25T07:00:00.000Z') }, 'held');
  assert.equal(JSON.parse(lines[2]!).since, '2026-11-25T07:00:00.000Z');
});

test('a table for a terminal (svc config) wraps its last column at word boundaries to the width, losing no word; without a width its rows are as long as their text', () => {
  const doc = 'PostgreSQL connection URL; unset means the embedded database (PGlite) in SVC_DATA_DIR, created on first use and announced once';
  const rows = [
    { key: 'DATABASE_URL', doc },
    { key: 'PORT', doc: 'TCP port' },
  ];
  const columns = [
    { header: 'key', get: (r: (typeof rows)[number]) => r.key },
    { header: 'description', get: (r: (typeof rows)[number]) => r.doc },
  ];
  const narrow = renderTable(rows, columns, { width: 60 });
  assert.ok(
    narrow.split('\n').every((line) => line.length <= 60),
    narrow,
  );
  const words = narrow.replace(/[│┌┐└┘├┤┬┴┼─]/g, ' ').split(/\s+/);
  for (const word of doc.split(' ')) assert.ok(words.includes(word), `${word} is shown whole`);
  const wide = renderTable(rows, columns);
  assert.ok(wide.split('\n').some((line) => line.includes(doc)));
  assert.equal(renderTable(rows, columns, { width: 400 }), wide);
});
