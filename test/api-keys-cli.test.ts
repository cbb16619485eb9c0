import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { svc, tempDir } from './helpers/cli.js';
import { query } from './helpers/db.js';
import { testServer } from './helpers/server.js';
import { sha256 } from '../src/domain/auth/authenticator.js';

test('svc users api-keys on PostgreSQL, used against svc serve on the same database', async (t) => {
  const ts = await testServer(t);
  const db = ts.databaseUrl!;
  const env = { DATABASE_URL: db, SVC_ACTOR: 'cli:alice' };
  const run = (...args: string[]) => svc(args, { env });
  const ada = await ts.user({ email: 'ada@example.com', role: 'admin' });
  const bob = await ts.user({ email: 'bob@example.com' });
  const me = (secret: string) => ts.server.inject({ method: 'GET', url: '/api/v1/users/me', headers: { authorization: `Bearer ${secret}` } });
  let adaKey: { id: string; secret: string };

  await t.test('create prints the secret once with a warning, and the key authenticates as its user', async () => {
    const res = await run('users', 'api-keys', 'create', 'ada@example.com', '--name', 'billing-sync');
    assert.equal(res.code, 0, res.stderr);
    const secret = /secret: (svc_key_[0-9A-Z]{26}_[A-Za-z0-9_-]{43})\n/.exec(res.stdout)?.[1];
    assert.ok(secret, res.stdout);
    assert.match(res.stdout, /will not be shown again/);
    assert.match(res.stdout, /│ name\s+│ billing-sync/);
    const id = secret.slice(4, 34);
    adaKey = { id, secret };

    const answer = await me(secret);
    assert.equal(answer.statusCode, 200);
    assert.equal(answer.json().id, ada.id);

    const [stored] = await query<{ secret_hash: string; user_id: string }>(db, 'select secret_hash, user_id from api_keys where id = $1', [id]);
    assert.equal(stored!.secret_hash, sha256(secret.slice(35)));
    assert.equal(stored!.user_id, ada.id);
    const [audit] = await query<{ actor: string; target: string }>(db, "select actor, target from audit_log where action = 'api-key.created'");
    assert.deepEqual(audit, { actor: 'cli:alice', target: id });
  });

  await t.test('create --json prints {id, name, userId, secret, createdAt}; the name defaults to "default"', async () => {
    const res = await run('users', 'api-keys', 'create', bob.id, '--json');
    assert.equal(res.code, 0, res.stderr);
    const key = res.json();
    assert.deepEqual(Object.keys(key).sort(), ['createdAt', 'id', 'name', 'secret', 'userId']);
    assert.deepEqual({ name: key.name, userId: key.userId }, { name: 'default', userId: bob.id });
    assert.ok(key.secret.startsWith(`svc_${key.id}_`));
    assert.equal((await me(key.secret)).json().id, bob.id);
  });

  await t.test('create refuses an unknown user (exit 3) and bad input (exit 2), and writes nothing', async () => {
    const unknown = await run('users', 'api-keys', 'create', 'nobody@example.com', '--json');
    assert.equal(unknown.code, 3);
    assert.equal(unknown.json().error.code, 'not_found');
    const longName = await run('users', 'api-keys', 'create', 'ada@example.com', '--name', 'x'.repeat(101));
    assert.equal(longName.code, 2);
    assert.match(longName.stderr, /1 to 100 characters/);
    const noUser = await run('users', 'api-keys', 'create');
    assert.equal(noUser.code, 2);
    assert.match(noUser.stderr, /user/i);
    // `svc users api-keys list` would send an escape sequence in a name to the terminal of whoever lists the keys.
    for (const name of ['\u001b[2J\u001b]0;owned\u0007ci', 'ci\u009b31m', 'ci\tdeploy']) {
      const control = await run('users', 'api-keys', 'create', 'ada@example.com', '--name', name, '--json');
      assert.equal(control.code, 2, control.stdout);
      assert.match(control.json().error.message, /^--name: the name must not contain a control character \(U\+00(1B|9B|09) at position \d+\)$/);
      assert.equal(control.json().error.details.field, 'name');
      const table = await run('users', 'api-keys', 'create', 'ada@example.com', '--name', name);
      assert.equal(table.code, 2);
      assert.match(table.stderr, /^Error: --name: the name must not contain a control character/);
      assert.doesNotMatch(table.stderr.replace(/\n/g, ''), /\p{Cc}/u, 'no control character reaches the terminal');
    }
    assert.equal((await query(db, 'select id from api_keys')).length, 2);
  });

  await t.test("list shows every key or one user's, never a secret", async () => {
    const all = await run('users', 'api-keys', 'list', '--json');
    assert.equal(all.code, 0, all.stderr);
    assert.equal(all.json().length, 2);
    for (const k of all.json()) {
      assert.deepEqual(Object.keys(k).sort(), ['createdAt', 'id', 'lastUsedAt', 'name', 'revokedAt', 'status', 'userId']);
      assert.equal(k.status, 'active');
      assert.ok(k.lastUsedAt, 'each key was used once above');
    }
    const ada1 = await run('users', 'api-keys', 'list', 'ADA@example.com', '--json');
    assert.deepEqual(
      ada1.json().map((k: { id: string }) => k.id),
      [adaKey.id],
    );
    const table = await run('users', 'api-keys', 'list');
    assert.equal(table.code, 0);
    assert.match(table.stdout, new RegExp(adaKey.id));
    assert.match(table.stdout, /billing-sync/);
    assert.match(table.stdout, /2 key\(s\)/);
    assert.doesNotMatch(table.stdout + all.stdout, /svc_key_/);
    const unknown = await run('users', 'api-keys', 'list', 'usr_00000000000000000000000000');
    assert.equal(unknown.code, 3);
  });

  await t.test('revoke stops the key at once, is audited once, and revoking again succeeds without a change', async () => {
    const res = await run('users', 'api-keys', 'revoke', adaKey.id, '--json');
    assert.equal(res.code, 0, res.stderr);
    assert.equal(res.json().status, 'revoked');
    assert.ok(res.json().revokedAt);
    const answer = await me(adaKey.secret);
    assert.equal(answer.statusCode, 401);
    assert.match(answer.json().detail, /revoked/);

    const again = await run('users', 'api-keys', 'revoke', adaKey.id);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /│ status\s+│ revoked/);
    const audit = await query<{ actor: string }>(db, "select actor from audit_log where action = 'api-key.revoked' and target = $1", [adaKey.id]);
    assert.deepEqual(audit, [{ actor: 'cli:alice' }]);
  });

  await t.test('revoke of an unknown key exits 3, of a malformed id exits 2', async () => {
    const unknown = await run('users', 'api-keys', 'revoke', 'key_00000000000000000000000000', '--json');
    assert.equal(unknown.code, 3);
    assert.match(unknown.json().error.message, /no API key with id key_0+/);
    const malformed = await run('users', 'api-keys', 'revoke', adaKey.secret);
    assert.equal(malformed.code, 2);
    assert.match(malformed.stderr, new RegExp(`that is an API key's secret, not its id; its id is ${adaKey.id}`));
    const junk = await run('users', 'api-keys', 'revoke', 'ada@example.com');
    assert.equal(junk.code, 2);
    assert.match(junk.stderr, /"ada@example.com" is not an API key id/);
    assert.doesNotMatch(malformed.stderr, new RegExp(adaKey.secret.slice(35)), 'nothing echoes a secret pasted by mistake');
  });
});

test('svc keys generate writes a 0600 key set, refuses to overwrite, and rotates with --add', async (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'jwks.json');
  const run = (...args: string[]) => svc(args, { cwd: dir });

  const first = await run('keys', 'generate', '--out', file);
  assert.equal(first.code, 0, first.stderr);
  const kid = /^kid: (\S+)$/m.exec(first.stdout)?.[1];
  assert.ok(kid, first.stdout);
  assert.equal(statSync(file).mode & 0o777, 0o600);
  const set = JSON.parse(readFileSync(file, 'utf8'));
  assert.deepEqual(
    set.keys.map((k: { kid: string; alg: string; use: string }) => [k.kid, k.alg, k.use]),
    [[kid, 'EdDSA', 'sig']],
  );

  const before = readFileSync(file, 'utf8');
  const again = await run('keys', 'generate', '--out', file, '--json');
  assert.equal(again.code, 4);
  assert.match(again.json().error.message, /already exists; pass --add .* or --force/);
  assert.equal(readFileSync(file, 'utf8'), before);

  // A server on the first key issues a token; after rotation a restarted server still accepts it.
  const serverA = await testServer(t, { env: { JWT_KEYS_FILE: file } });
  const user = await serverA.user({ email: 'rotate@example.com' });
  const oldToken = await serverA.token(user);

  const added = await run('keys', 'generate', '--out', file, '--add', '--alg', 'RS256', '--json');
  assert.equal(added.code, 0, added.stderr);
  const result = added.json();
  assert.deepEqual({ alg: result.alg, file: result.file, keys: result.keys }, { alg: 'RS256', file, keys: 2 });
  assert.deepEqual(
    JSON.parse(readFileSync(file, 'utf8')).keys.map((k: { kid: string }) => k.kid),
    [result.kid, kid],
  );
  assert.equal(statSync(file).mode & 0o777, 0o600);

  const serverB = await testServer(t, { env: { JWT_KEYS_FILE: file, DATABASE_URL: serverA.databaseUrl! } });
  const stillValid = await serverB.server.inject({ method: 'GET', url: '/api/v1/users/me', headers: { authorization: `Bearer ${oldToken}` } });
  assert.equal(stillValid.statusCode, 200);
  assert.equal(stillValid.json().id, user.id);
  const newToken = await serverB.token(user);
  assert.equal(JSON.parse(Buffer.from(newToken.split('.')[0]!, 'base64url').toString()).kid, result.kid);

  const forced = await run('keys', 'generate', '--out', file, '--force');
  assert.equal(forced.code, 0, forced.stderr);
  assert.equal(JSON.parse(readFileSync(file, 'utf8')).keys.length, 1);

  const elsewhere = tempDir(t);
  const relative = await svc(['keys', 'generate'], { cwd: elsewhere });
  assert.equal(relative.code, 0, relative.stderr);
  assert.equal(statSync(join(elsewhere, 'jwks.json')).mode & 0o777, 0o600);

  const missing = await run('keys', 'generate', '--out', join(dir, 'nope.json'), '--add');
  assert.equal(missing.code, 3);
  assert.match(missing.stderr, /does not exist; run without --add/);
  const notJwks = join(dir, 'not-jwks.json');
  writeFileSync(notJwks, '{"hello": 1}');
  const bad = await run('keys', 'generate', '--out', notJwks, '--add');
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /is not a JSON Web Key Set/);
  assert.equal(readFileSync(notJwks, 'utf8'), '{"hello": 1}');
  const badAlg = await run('keys', 'generate', '--out', join(dir, 'x.json'), '--alg', 'HS256');
  assert.equal(badAlg.code, 2);
  assert.match(badAlg.stderr, /HS256/);
  const both = await run('keys', 'generate', '--out', file, '--add', '--force');
  assert.equal(both.code, 2);
});

test('svc keys generate --out a place it cannot write exits 2 naming --out and the reason, with --json too', async (t) => {
  const dir = tempDir(t);
  const inMissingFolder = await svc(['keys', 'generate', '--out', join(dir, 'no-such-folder', 'jwks.json'), '--json'], { cwd: dir });
  assert.equal(inMissingFolder.code, 2, inMissingFolder.stderr);
  assert.deepEqual(inMissingFolder.json().error.details, { field: 'out' });
  assert.match(inMissingFolder.json().error.message, /cannot write .*no-such-folder.*jwks\.json: the folder .* does not exist/);
  assert.doesNotMatch(inMissingFolder.stderr, /"stack"/);

  // A folder is not a key file, with --force neither.
  for (const extra of [[], ['--force']]) {
    const folder = await svc(['keys', 'generate', '--out', dir, ...extra], { cwd: dir });
    assert.equal(folder.code, 2, folder.stderr);
    assert.match(folder.stderr, /is a folder; name a file in it/);
  }
});
