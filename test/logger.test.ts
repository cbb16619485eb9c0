import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Logger } from 'pino';
import { capturedLogs } from './helpers/logs.js';

type Json = Record<string, any>;

/** The real logger writing into memory: everything written, and the lines parsed. */
function capture(): { logger: Logger; raw: () => string; lines: () => Json[] } {
  const { logger, lines, text } = capturedLogs('info');
  return { logger, raw: text, lines: () => lines };
}

/** `leaf` inside `levels` nested objects: { l1: { l2: … { l<levels>: leaf } } }. */
function nest(levels: number, leaf: unknown): Json {
  let value = leaf;
  for (let i = levels; i >= 1; i--) value = { [`l${i}`]: value };
  return value as Json;
}

/** Follows l1, l2 … l<levels> down a logged line. */
function dig(line: Json, levels: number): unknown {
  let value: unknown = line;
  for (let i = 1; i <= levels; i++) value = (value as Json)[`l${i}`];
  return value;
}

test('a secret and an email five levels deep are redacted and masked; ten levels deep the subtree is truncated, never written as is', () => {
  const { logger, raw, lines } = capture();
  logger.info(nest(5, { password: 'pw-five-levels', token: 'tok-five', email: 'five.levels@example.com' }), 'five');
  logger.info(nest(10, { password: 'pw-ten-levels', email: 'ten.levels@example.com' }), 'ten');
  // The same, nested in arrays (the array itself is one level under the line).
  logger.info({ list: [[[[[{ secret: 'arr-five', to: 'array.five@example.com' }]]]]] }, 'arrays five');
  logger.info({ list: [[[[[[[[[[{ authorization: 'Bearer arr-ten', to: 'array.ten@example.com' }]]]]]]]]]] }, 'arrays ten');

  const [five, ten, arraysFive, arraysTen] = lines() as [Json, Json, Json, Json];
  assert.deepEqual(dig(five, 5), { password: '[redacted]', token: '[redacted]', email: 'f***@e***.com' });
  assert.deepEqual(arraysFive.list[0][0][0][0][0], { secret: '[redacted]', to: 'a***@e***.com' });
  // Ten levels down is past the bound: the walk stops with a marker instead of the raw object.
  assert.ok(JSON.stringify(ten).includes('"[truncated]"'), JSON.stringify(ten));
  assert.ok(JSON.stringify(arraysTen).includes('"[truncated]"'), JSON.stringify(arraysTen));
  assert.doesNotMatch(raw(), /pw-five|tok-five|arr-five|pw-ten|arr-ten|five\.levels@|ten\.levels@|array\.five@|array\.ten@/);
});

test('an error is logged masked wherever it is: its message (also as the line message), its fields and its cause chain', () => {
  const { logger, raw, lines } = capture();
  // Given no message, the line's message is the error's.
  logger.error(new Error('no account for error.msg@example.com'));
  logger.error({ err: new Error('mail to err.key@example.com bounced') });
  // A database error (fields of its own: code, detail) as the cause of a domain error, itself
  // carrying a cause with a secret field, the whole chain five levels down a line.
  const root = Object.assign(new Error('connection reset'), { password: 'cause-pw' });
  const pg = Object.assign(new Error('duplicate key value violates unique constraint', { cause: root }), {
    code: '23505',
    detail: 'Key (lower(email))=(deep.cause@example.com) already exists.',
  });
  logger.error(nest(5, new Error('email deep.cause@example.com is already taken', { cause: pg })), 'request failed');

  const [bare, keyed, deep] = lines() as [Json, Json, Json];
  assert.equal(bare.msg, 'no account for e***@e***.com');
  assert.equal(bare.err.message, 'no account for e***@e***.com');
  assert.equal(keyed.msg, 'mail to e***@e***.com bounced');
  const err = dig(deep, 5) as Json;
  assert.equal(err.type, 'Error');
  assert.equal(err.message, 'email d***@e***.com is already taken');
  // The cause keeps its own fields (the operator's clue), masked.
  assert.equal(err.cause.code, '23505');
  assert.equal(err.cause.detail, 'Key (lower(email))=(d***@e***.com) already exists.');
  assert.equal(err.cause.cause.message, 'connection reset');
  assert.equal(err.cause.cause.password, '[redacted]');
  assert.doesNotMatch(raw(), /error\.msg@|err\.key@|deep\.cause@|cause-pw/);
});

test('a cyclic object is logged once with the cycle marked, and a secret inside it stays redacted', () => {
  const { logger, raw, lines } = capture();
  const session: Json = { id: 'ses_1', token: 'cyclic-token', owner: { email: 'cyclic@example.com' } };
  session.self = session;
  session.owner.session = session;
  const err = new Error('loop');
  (err as Error & { cause: unknown }).cause = err;
  logger.info({ session, err }, 'cycle');
  const [line] = lines() as [Json];
  assert.equal(line.session.self, '[circular]');
  assert.equal(line.session.owner.session, '[circular]');
  assert.equal(line.session.token, '[redacted]');
  assert.equal(line.err.cause, '[circular]');
  assert.doesNotMatch(raw(), /cyclic-token|cyclic@/);
});

test('a password hash inside text (PostgreSQL\'s "Failing row contains" detail) is redacted in fields and messages', () => {
  const { logger, raw, lines } = capture();
  const hash = '$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo';
  const pg = Object.assign(new Error('new row for relation "users" violates check constraint'), {
    code: '23514',
    detail: `Failing row contains (usr_1, ada@example.com, Ada, ${hash}, user, active).`,
  });
  logger.info({ err: pg }, 'the database refused the change');
  logger.warn(`row was (${hash})`);
  const [first, second] = lines() as [Json, Json];
  assert.match(first.err.detail, /Failing row contains \(usr_1, a\*\*\*@e\*\*\*\.com, Ada, \[redacted\], user, active\)\./);
  assert.equal(second.msg, 'row was ([redacted])');
  assert.doesNotMatch(raw(), /argon2id\$v=19/);
});
