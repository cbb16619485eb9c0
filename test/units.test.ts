import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { newId, isId, ulid } from '../src/domain/shared/ids.js';
import { decodeCursor, encodeCursor } from '../src/domain/shared/pagination.js';
import { DomainError } from '../src/domain/shared/errors.js';
import { maskEmail } from '../src/logger.js';
import { exitCodeFor } from '../src/cli/exit-codes.js';

test('ids carry their kind, read unambiguously and sort by creation time', () => {
  assert.equal(ulid(1469918176385).slice(0, 10), '01ARYZ6S41');
  const ids = Array.from({ length: 1000 }, () => newId('ord'));
  assert.ok(ids.every((id) => isId('ord', id)));
  assert.deepEqual([...ids].sort(), ids);
  assert.equal(new Set(ids).size, ids.length);
  assert.doesNotMatch(ids.join(''), /[ILOU]/);
});

test('a cursor round-trips, and anything tampered with is invalid input', () => {
  const key = { createdAt: new Date('2026-11-20T10:30:00.000Z'), id: newId('usr') };
  assert.deepEqual(decodeCursor(encodeCursor(key)), key);
  const forged = Buffer.from(JSON.stringify(['2026-11-20T10:30:00.000Z', "usr_x' or 1=1 --"])).toString('base64url');
  for (const bad of ['', 'not a cursor!', encodeCursor(key).slice(3), forged, Buffer.from('{"a":1}').toString('base64url')]) {
    assert.throws(() => decodeCursor(bad), (err: unknown) => err instanceof DomainError && err.code === 'invalid', bad);
  }
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
});
