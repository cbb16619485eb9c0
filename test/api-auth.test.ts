import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createPublicKey } from 'node:crypto';
import { generateKeyPair, importJWK, SignJWT, type JWK } from 'jose';
import { testServer, type TestServer } from './helpers/server.js';
import { query } from './helpers/db.js';
import { assertProblem, type Json } from './helpers/http.js';
import { tempDir } from './helpers/cli.js';
import { generateSigningJwk } from '../src/adapters/jwt.js';
import { sha256 } from '../src/domain/auth/authenticator.js';
import { UserStandings } from '../src/domain/auth/standing.js';
import { TwoLevelCache } from '../src/adapters/two-level-cache.js';
import { NoCache } from '../src/domain/shared/cache.js';
import { AuthService } from '../src/domain/auth/auth.service.js';
import type { DomainError } from '../src/domain/shared/errors.js';

const PASSWORD = 'correct horse battery staple';

async function call(
  ts: TestServer,
  method: 'GET' | 'POST' | 'PATCH' | 'DELETE',
  url: string,
  options: { body?: unknown; headers?: Record<string, string> } = {},
) {
  const res = await ts.server.inject({ method, url, payload: options.body as object, headers: options.headers });
  return { status: res.statusCode, type: res.headers['content-type'], body: (res.body ? res.json() : undefined) as Json };
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

async function login(ts: TestServer, email: string, password = PASSWORD, prefix = '/api/v1') {
  return call(ts, 'POST', `${prefix}/auth/login`, { body: { email, password } });
}

const assertUnauthorized = (res: { status: number; type?: string; body: Json }, detail?: RegExp) => assertProblem(res, 401, 'unauthorized', detail);

/** The server's signing key (the first of JWT_KEYS_FILE), for forging tokens the way an attacker with partial knowledge would. */
function serverJwk(ts: TestServer): JWK {
  return JSON.parse(readFileSync(ts.config.JWT_KEYS_FILE!, 'utf8')).keys[0];
}

/**
 * A token for userId signed with the server's key (or `edit.key`, a key of another kind or from
 * another party, with its `alg` in `edit.header`), with the claims and header edited as given.
 */
async function forge(
  ts: TestServer,
  userId: string,
  edit: { claims?: Json; header?: Json; issuer?: string; audience?: string; exp?: number; key?: Parameters<SignJWT['sign']>[0] } = {},
) {
  const jwk = serverJwk(ts);
  const key = edit.key ?? (await importJWK(jwk, jwk.alg));
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ role: 'user', ...edit.claims })
    .setProtectedHeader({ alg: jwk.alg!, kid: jwk.kid, typ: 'JWT', ...edit.header })
    .setSubject(userId)
    .setIssuer(edit.issuer ?? ts.config.JWT_ISSUER)
    .setAudience(edit.audience ?? ts.config.JWT_AUDIENCE)
    .setIssuedAt(now - 60)
    .setExpirationTime(edit.exp ?? now + 600)
    .setJti('forged')
    .sign(key);
}

const b64json = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');

test('authentication on PostgreSQL', async (t) => {
  const ts = await testServer(t);
  const db = ts.databaseUrl!;
  const ada = await ts.user({ email: 'ada@example.com', password: PASSWORD });

  await t.test('register creates a user with the user role and answers 201 with the version shape', async () => {
    const v1 = await call(ts, 'POST', '/api/v1/auth/register', { body: { email: 'grace@example.com', password: PASSWORD, name: 'Grace' } });
    assert.equal(v1.status, 201);
    assert.deepEqual(Object.keys(v1.body).sort(), ['createdAt', 'email', 'id', 'name', 'role', 'updatedAt']);
    assert.deepEqual({ email: v1.body.email, name: v1.body.name, role: v1.body.role }, { email: 'grace@example.com', name: 'Grace', role: 'user' });
    const [row] = await query<{ password_hash: string }>(db, 'select password_hash from users where id = $1', [v1.body.id]);
    assert.match(row!.password_hash, /^\$argon2id\$/);

    const v2 = await call(ts, 'POST', '/api/v2/auth/register', { body: { email: 'linus@example.com', password: PASSWORD, name: 'Linus' } });
    assert.equal(v2.status, 201);
    assert.equal(v2.body.status, 'active');
    assert.equal(v2.body.passwordHash, undefined);

    const loggedIn = await login(ts, 'GRACE@example.com');
    assert.equal(loggedIn.status, 200);
  });

  await t.test('register refuses a taken email (any case) with 409 naming the field but not the account, before hashing the password', async () => {
    const hashed = ts.app.passwords.stats().completed;
    const taken = await call(ts, 'POST', '/api/v1/auth/register', { body: { email: 'ADA@example.com', password: PASSWORD, name: 'Ada 2' } });
    assertProblem(taken, 409, 'conflict', /^an account with this email already exists; log in, or register with another email$/, 'email');
    assert.doesNotMatch(JSON.stringify(taken.body), new RegExp(`${ada.id}|usr_`), 'an anonymous caller is not told which account it is');
    assert.equal(ts.app.passwords.stats().completed, hashed, 'a taken email costs no password hash');
  });

  await t.test('concurrent registrations of one new email: one is created, the others get the same clean 409', async () => {
    const answers = await Promise.all(
      Array.from({ length: 5 }, (_, i) =>
        call(ts, 'POST', '/api/v1/auth/register', { body: { email: i % 2 ? 'Race@Example.com' : 'race@example.com', password: PASSWORD, name: 'Race' } }),
      ),
    );
    assert.deepEqual(answers.map((a) => a.status).sort(), [201, 409, 409, 409, 409]);
    for (const lost of answers.filter((a) => a.status === 409)) {
      // Whether the other registration committed before or during this one: no id, no index or SQL.
      assertProblem(lost, 409, 'conflict', /^an account with this email already exists; log in, or register with another email$/, 'email');
    }
    const rows = await query(db, "select 1 from users where lower(email) = 'race@example.com'");
    assert.equal(rows.length, 1);
  });

  await t.test('register answers 400 naming the field for bad bodies', async () => {
    const cases: [Json, string][] = [
      [{ email: 'not-an-email', password: PASSWORD, name: 'X' }, 'email'],
      [{ email: `${'a'.repeat(250)}@example.com`, password: PASSWORD, name: 'X' }, 'email'],
      [{ email: 'short@example.com', password: 'eleven char', name: 'X' }, 'password'],
      [{ email: 'long@example.com', password: 'x'.repeat(257), name: 'X' }, 'password'],
      [{ email: 'noname@example.com', password: PASSWORD, name: '' }, 'name'],
      [{ email: 'noname@example.com', password: PASSWORD }, 'name'],
      [{ email: 'num@example.com', password: 123456789012345, name: 'X' }, 'password'],
    ];
    for (const [body, field] of cases) {
      const res = await call(ts, 'POST', '/api/v1/auth/register', { body });
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.equal(res.body.field, field, JSON.stringify(res.body));
    }
    const [{ n }] = (await query<{ n: string }>(
      db,
      "select count(*) as n from users where email like '%noname%' or email like 'short%' or email like 'long%'",
    )) as [{ n: string }];
    assert.equal(Number(n), 0);
  });

  await t.test('login answers exactly accessToken, refreshToken, tokenType Bearer and expiresIn, and the token works', async () => {
    const res = await login(ts, 'ada@example.com');
    assert.equal(res.status, 200);
    assert.deepEqual(Object.keys(res.body).sort(), ['accessToken', 'expiresIn', 'refreshToken', 'tokenType']);
    assert.equal(res.body.tokenType, 'Bearer');
    assert.equal(res.body.expiresIn, ts.config.ACCESS_TOKEN_TTL_SECONDS);
    assert.match(res.body.refreshToken, /^rt_[A-Za-z0-9_-]{43}$/);
    const me = await call(ts, 'GET', '/api/v1/users/me', { headers: bearer(res.body.accessToken) });
    assert.equal(me.status, 200);
    assert.equal(me.body.id, ada.id);
    // Only a hash of the refresh token is stored.
    const stored = await query(db, 'select 1 from refresh_tokens where token_hash = $1', [res.body.refreshToken]);
    assert.equal(stored.length, 0);
  });

  await t.test('a wrong password and an unknown email both answer 401 "invalid email or password", each after one password hash', async () => {
    // The same work either way: an unknown email is verified against a decoy hash, so the answer's
    // time does not tell whether the account exists. Counted, not timed (a busy machine makes times noise).
    const hashesFor = async (email: string) => {
      const before = ts.app.passwords.stats().completed;
      const res = await login(ts, email, 'not the password at all');
      assertUnauthorized(res, /^invalid email or password$/);
      return ts.app.passwords.stats().completed - before;
    };
    assert.equal(await hashesFor('ada@example.com'), 1);
    assert.equal(await hashesFor('nobody@example.com'), 1);
    const noPassword = await ts.user({ email: 'nopass@example.com' });
    assert.equal(await hashesFor(noPassword.email), 1);
  });

  await t.test('a disabled user gets 403 saying the account is disabled, only with the right password', async () => {
    const bob = await ts.user({ email: 'bob@example.com', password: PASSWORD });
    await ts.app.users.setStatus(ts.app.context({ actor: 'cli:test' }), bob.id, 'disabled');
    const res = await login(ts, 'bob@example.com');
    assert.equal(res.status, 403);
    assert.match(res.body.detail, /account is disabled/);
    assertUnauthorized(await login(ts, 'bob@example.com', 'wrong password!!'), /^invalid email or password$/);
  });

  await t.test('five wrong passwords lock the email: 429 with Retry-After, even with the right password; other emails are unaffected', async () => {
    const gina = await ts.user({ email: 'gina@example.com', password: PASSWORD });
    // The email is matched in any case, as login matches it.
    for (let i = 0; i < 5; i++) assertUnauthorized(await login(ts, i % 2 ? 'Gina@Example.com' : gina.email, 'wrong password'), /^invalid email or password$/);
    const locked = await ts.server.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email: gina.email, password: PASSWORD } });
    assert.equal(locked.statusCode, 429);
    assert.equal(locked.headers['content-type'], 'application/problem+json; charset=utf-8');
    const body = locked.json();
    assert.equal(body.code, 'rate_limited');
    assert.match(body.detail, /^too many failed logins for this email; try again in \d+ s$/);
    const retryAfter = Number(locked.headers['retry-after']);
    // The next attempt comes back when the oldest of the five has decayed: 15 minutes after it.
    assert.ok(retryAfter > 840 && retryAfter <= 900, `Retry-After ${locked.headers['retry-after']}`);
    assert.ok(body.detail.includes(`${retryAfter} s`));
    assert.equal((await login(ts, 'ada@example.com')).status, 200, 'another email logs in');

    // An email with no account is counted and locked alike: the lock says nothing about accounts.
    for (let i = 0; i < 5; i++) assertUnauthorized(await login(ts, 'ghost@example.com', 'wrong password'));
    assert.equal((await login(ts, 'ghost@example.com', 'wrong password')).status, 429);
    // Emails are not stored, only a hash of them.
    const keys = await query<{ key: string }>(db, 'select key from login_throttles');
    assert.ok(keys.length >= 2 && keys.every((k) => /^[0-9a-f]{64}$/.test(k.key)), JSON.stringify(keys));
  });

  await t.test('a burst of 30 concurrent wrong passwords for one email gets 5 of them checked; the other 25 answer 429 with Retry-After', async () => {
    const jay = await ts.user({ email: 'jay@example.com', password: PASSWORD });
    const answers = await Promise.all(
      Array.from({ length: 30 }, () =>
        ts.server.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email: jay.email, password: 'wrong password' } }),
      ),
    );
    const statuses = answers.map((a) => a.statusCode);
    assert.equal(statuses.filter((s) => s === 401).length, 5, statuses.join(' '));
    assert.equal(statuses.filter((s) => s === 429).length, 25, statuses.join(' '));
    assert.ok(answers.filter((a) => a.statusCode === 429).every((a) => Number(a.headers['retry-after']) >= 1));
    assert.equal((await login(ts, jay.email)).status, 429, 'the right password too, afterwards');
  });

  await t.test(
    'an attacker gets at most 8 attempts in any hour against one email, and 4 an hour once the first 5 are spent, however they time them',
    async () => {
      let clock = Date.parse('2026-11-20T10:00:00Z');
      const auth = new AuthService(ts.app.users, ts.app.passwords, ts.server.svc.tokens, { refreshTtlSeconds: 3600, now: () => new Date(clock) });
      const kim = await ts.user({ email: 'kim@example.com', password: PASSWORD });
      const attempt = async (password = 'wrong password') => {
        try {
          await auth.login(ts.app.context({ actor: 'anonymous' }), { email: kim.email, password });
          return { status: 200 };
        } catch (err) {
          const { code, details } = err as DomainError;
          return { status: code === 'unauthorized' ? 401 : code === 'rate_limited' ? 429 : 500, retryAfter: details.retryAfterSeconds as number | undefined };
        }
      };
      // Once a minute for three hours (trying more often gets no more: a refused attempt costs nothing and counts nothing).
      const checked: number[] = [];
      for (let minute = 0; minute < 180; minute++) {
        clock = Date.parse('2026-11-20T10:00:00Z') + minute * 60_000;
        const res = await attempt();
        if (res.status === 401) checked.push(minute);
        else assert.equal(res.status, 429, `minute ${minute}`);
        // A refusal says exactly when the next attempt will be checked.
        if (minute === 5 || minute === 14) assert.equal(res.retryAfter, (15 - minute) * 60, `Retry-After at minute ${minute}`);
      }
      assert.deepEqual(checked.slice(0, 8), [0, 1, 2, 3, 4, 15, 30, 45], 'five at once, then one every 15 minutes');
      const inHour = (start: number) => checked.filter((m) => m >= start && m < start + 60).length;
      assert.deepEqual([inHour(0), inHour(60), inHour(120)], [8, 4, 4]);
      assert.equal(Math.max(...Array.from({ length: 121 }, (_, start) => inHour(start))), 8, 'no hour, wherever it starts, holds more than 8');

      // Waiting is what brings attempts back, one per 15 minutes: after an hour's rest, four (not a fresh five).
      clock += 60 * 60_000;
      const afterRest = [];
      for (let i = 0; i < 5; i++) afterRest.push((await attempt()).status);
      assert.deepEqual(afterRest, [401, 401, 401, 401, 429]);
      // The right password, once an attempt is allowed, logs in and clears the count: five at once again.
      clock += 15 * 60_000;
      assert.equal((await attempt(PASSWORD)).status, 200);
      assert.deepEqual(await query(db, 'select 1 from login_throttles where key = $1', [sha256(kim.email)]), [], 'a success clears the count');
      const fresh = [];
      for (let i = 0; i < 6; i++) fresh.push((await attempt()).status);
      assert.deepEqual(fresh, [401, 401, 401, 401, 401, 429]);
    },
  );

  await t.test('login bodies are validated: missing fields and extra properties are 400', async () => {
    assert.equal((await call(ts, 'POST', '/api/v1/auth/login', { body: { email: 'ada@example.com' } })).body.field, 'password');
    const extra = await call(ts, 'POST', '/api/v1/auth/login', { body: { email: 'ada@example.com', password: PASSWORD, role: 'admin' } });
    assert.equal(extra.status, 400);
    assert.equal(extra.body.field, 'role');
  });

  await t.test('refresh rotates: new tokens come back, and the presented token cannot be used again', async () => {
    const first = (await login(ts, 'ada@example.com')).body;
    const second = await call(ts, 'POST', '/api/v2/auth/refresh', { body: { refreshToken: first.refreshToken } });
    assert.equal(second.status, 200);
    assert.deepEqual(Object.keys(second.body).sort(), ['accessToken', 'expiresIn', 'refreshToken', 'tokenType']);
    assert.notEqual(second.body.refreshToken, first.refreshToken);
    assert.equal((await call(ts, 'GET', '/api/v1/users/me', { headers: bearer(second.body.accessToken) })).status, 200);
    const third = await call(ts, 'POST', '/api/v1/auth/refresh', { body: { refreshToken: second.body.refreshToken } });
    assert.equal(third.status, 200);
    const family = await query<{ n: string }>(db, 'select count(distinct family_id) as n from refresh_tokens where token_hash = any($1)', [
      [first.refreshToken, second.body.refreshToken, third.body.refreshToken].map(sha256),
    ]);
    assert.equal(Number(family[0]!.n), 1);
  });

  await t.test('reusing a used refresh token revokes its whole family: the newest token of it fails too', async () => {
    const first = (await login(ts, 'ada@example.com')).body;
    const second = (await call(ts, 'POST', '/api/v1/auth/refresh', { body: { refreshToken: first.refreshToken } })).body;
    const reuse = await call(ts, 'POST', '/api/v1/auth/refresh', { body: { refreshToken: first.refreshToken } });
    assertUnauthorized(reuse, /already used.*revoked/);
    assertUnauthorized(await call(ts, 'POST', '/api/v1/auth/refresh', { body: { refreshToken: second.refreshToken } }), /revoked/);
    const audit = await query(db, "select 1 from audit_log where action = 'refresh-token.reused' and target = $1", [ada.id]);
    assert.equal(audit.length, 1);
    // Another session of the same user is untouched.
    const other = (await login(ts, 'ada@example.com')).body;
    assert.equal((await call(ts, 'POST', '/api/v1/auth/refresh', { body: { refreshToken: other.refreshToken } })).status, 200);
  });

  await t.test('concurrent refreshes of one token: exactly one succeeds, and the race counts as reuse', async () => {
    const { refreshToken } = (await login(ts, 'ada@example.com')).body;
    const responses = await Promise.all(
      Array.from({ length: 10 }, () =>
        fetch(`${ts.url}/api/v1/auth/refresh`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ refreshToken }) }),
      ),
    );
    const statuses = responses.map((r) => r.status).sort();
    assert.deepEqual(statuses, [200, 401, 401, 401, 401, 401, 401, 401, 401, 401]);
    const winner = (await responses.find((r) => r.status === 200)!.json()) as Json;
    await Promise.all(responses.filter((r) => r.status !== 200).map((r) => r.body?.cancel() ?? Promise.resolve()));
    assertUnauthorized(await call(ts, 'POST', '/api/v1/auth/refresh', { body: { refreshToken: winner.refreshToken } }), /revoked/);
  });

  await t.test('an expired, unknown or malformed refresh token is 401; a missing one is 400', async () => {
    const { refreshToken } = (await login(ts, 'ada@example.com')).body;
    await query(db, "update refresh_tokens set expires_at = now() - interval '1 second' where token_hash = $1", [sha256(refreshToken)]);
    assertUnauthorized(await call(ts, 'POST', '/api/v1/auth/refresh', { body: { refreshToken } }), /expired/);
    assertUnauthorized(await call(ts, 'POST', '/api/v1/auth/refresh', { body: { refreshToken: `rt_${'A'.repeat(43)}` } }), /not valid/);
    assertUnauthorized(await call(ts, 'POST', '/api/v1/auth/refresh', { body: { refreshToken: 'garbage' } }), /not valid/);
    const missing = await call(ts, 'POST', '/api/v1/auth/refresh', { body: {} });
    assert.equal(missing.status, 400);
    assert.equal(missing.body.field, 'refreshToken');
  });

  await t.test('a disabled user cannot refresh', async () => {
    const carol = await ts.user({ email: 'carol@example.com', password: PASSWORD });
    const { refreshToken } = (await login(ts, carol.email)).body;
    await ts.app.users.setStatus(ts.app.context({ actor: 'cli:test' }), carol.id, 'disabled');
    assertUnauthorized(await call(ts, 'POST', '/api/v1/auth/refresh', { body: { refreshToken } }), /disabled/);
  });

  await t.test("an access token acts with the user's role and status as they are now: an admin's change applies at once", async () => {
    const admin = await ts.user({ email: 'root@example.com', role: 'admin' });
    const asAdmin = await ts.auth(admin);
    const dave = await ts.user({ email: 'dave@example.com', password: PASSWORD });
    const asDave = bearer((await login(ts, dave.email)).body.accessToken);
    assert.equal((await call(ts, 'GET', '/api/v1/users/me', { headers: asDave })).status, 200);
    const change = async (body: Json) => assert.equal((await call(ts, 'PATCH', `/api/v1/users/${dave.id}`, { headers: asAdmin, body })).status, 200);

    await change({ role: 'guest' });
    const write = await call(ts, 'POST', '/api/v1/orders', { headers: asDave, body: { paymentMethod: 'pm_card_visa', items: [{ sku: 'ANY', quantity: 1 }] } });
    assert.equal(write.status, 403);
    assert.match(write.body.detail, /guest role may not write/);
    await change({ role: 'admin' });
    assert.equal((await call(ts, 'GET', '/api/v1/users', { headers: asDave })).status, 200);
    await change({ status: 'disabled' });
    assertUnauthorized(await call(ts, 'GET', '/api/v1/users/me', { headers: asDave }), /the user is disabled/);
    await change({ status: 'active', role: 'user' });
    assert.equal((await call(ts, 'GET', '/api/v1/users/me', { headers: asDave })).body.role, 'user');

    const erin = await ts.user({ email: 'erin@example.com' });
    const asErin = await ts.auth(erin);
    assert.equal((await call(ts, 'GET', '/api/v1/users/me', { headers: asErin })).status, 200);
    assert.equal((await call(ts, 'DELETE', `/api/v1/users/${erin.id}`, { headers: asAdmin })).status, 204);
    assertUnauthorized(await call(ts, 'GET', '/api/v1/users/me', { headers: asErin }), /user no longer exists/);
  });

  await t.test(
    'a change through UsersService (svc users, another instance) applies at once; one whose invalidation never arrived once the cached standing is USER_STANDING_TTL_SECONDS old',
    async () => {
      const frank = await ts.user({ email: 'frank@example.com' });
      const ctx = () => ts.app.context({ actor: 'cli:test' });
      let now = 1_000_000;
      const standings = new UserStandings(new TwoLevelCache({ maxEntries: 100, maxBytes: 1 << 20, now: () => now }), 5_000);
      assert.deepEqual(await standings.get(ctx().sql, frank.id), { role: 'user', status: 'active' });
      // Written past the services, so nothing moves the user's version: an invalidation that never arrived.
      await ctx().sql("update users set status = 'disabled' where id = $1", [frank.id]);
      now += 4_999;
      assert.equal((await standings.get(ctx().sql, frank.id))?.status, 'active', 'still the cached standing');
      now += 1;
      assert.equal((await standings.get(ctx().sql, frank.id))?.status, 'disabled', 'read again after the TTL');
      assert.equal(await new UserStandings(new NoCache(), 0).get(ctx().sql, 'usr_00000000000000000000000000'), undefined);

      // The server's: a change through the service moves the user's version before it returns.
      assert.equal(ts.config.USER_STANDING_TTL_SECONDS, 5);
      await ts.app.users.setStatus(ctx(), frank.id, 'active');
      const asFrank = await ts.auth(frank);
      assert.equal((await call(ts, 'GET', '/api/v1/users/me', { headers: asFrank })).status, 200);
      await ts.app.users.setStatus(ctx(), frank.id, 'disabled');
      assertUnauthorized(await call(ts, 'GET', '/api/v1/users/me', { headers: asFrank }), /disabled/);
      await ts.app.users.setStatus(ctx(), frank.id, 'active');
      assert.equal((await call(ts, 'GET', '/api/v1/users/me', { headers: asFrank })).status, 200);
    },
  );

  await t.test('logout revokes the session, answers 204, and is idempotent', async () => {
    const first = (await login(ts, 'ada@example.com')).body;
    const second = (await call(ts, 'POST', '/api/v1/auth/refresh', { body: { refreshToken: first.refreshToken } })).body;
    const out = await ts.server.inject({ method: 'POST', url: '/api/v1/auth/logout', payload: { refreshToken: second.refreshToken } });
    assert.equal(out.statusCode, 204);
    assert.equal(out.body, '');
    assertUnauthorized(await call(ts, 'POST', '/api/v1/auth/refresh', { body: { refreshToken: second.refreshToken } }), /revoked/);
    assert.equal((await call(ts, 'POST', '/api/v1/auth/logout', { body: { refreshToken: second.refreshToken } })).status, 204);
    assert.equal((await call(ts, 'POST', '/api/v1/auth/logout', { body: { refreshToken: 'not-a-token' } })).status, 204);
    assert.equal((await call(ts, 'POST', '/api/v1/auth/logout', { body: { refreshToken: 'x', other: 1 } })).status, 400);
  });

  await t.test('forged and broken access tokens are 401 problem documents', async (st) => {
    const now = Math.floor(Date.now() / 1000);
    const jwk = serverJwk(ts);
    const valid = await ts.token(ada);
    const [h, p, s] = valid.split('.') as [string, string, string];
    const rsa = await generateKeyPair('RS256', { extractable: true });
    const { d: _private, ...publicJwk } = jwk;
    const admin = { role: 'admin' };
    const publicPem = createPublicKey({ key: publicJwk, format: 'jwk' }).export({ type: 'spki', format: 'pem' });
    const attacks: [string, string, RegExp][] = [
      [
        'alg none',
        `${b64json({ alg: 'none', typ: 'JWT', kid: jwk.kid })}.${b64json({ sub: ada.id, role: 'admin', iss: ts.config.JWT_ISSUER, aud: ts.config.JWT_AUDIENCE, exp: now + 600, iat: now, jti: 'x' })}.`,
        /algorithm none/,
      ],
      [
        'HS256 signed with the public key',
        await forge(ts, ada.id, { claims: admin, header: { alg: 'HS256' }, key: Buffer.from(publicPem as string) }),
        /algorithm HS256/,
      ],
      ['RS256 claimed for an EdDSA kid', await forge(ts, ada.id, { claims: admin, header: { alg: 'RS256' }, key: rsa.privateKey }), /algorithm RS256/],
      ['expired', await forge(ts, ada.id, { exp: now - 5 }), /expired/],
      ['wrong audience', await forge(ts, ada.id, { audience: 'another-api' }), /aud claim/],
      ['wrong issuer', await forge(ts, ada.id, { issuer: 'someone-else' }), /iss claim/],
      ['unknown kid', await forge(ts, ada.id, { header: { kid: 'not-a-key' } }), /unknown key/],
      ['no kid', await forge(ts, ada.id, { header: { kid: undefined } }), /unknown key/],
      ['tampered payload', `${h}.${b64json({ ...JSON.parse(Buffer.from(p, 'base64url').toString()), role: 'admin' })}.${s}`, /not valid/],
      ['not a JWT', 'abc.def', /malformed/],
    ];
    for (const [name, token, detail] of attacks) {
      await st.test(name, async () => {
        const res = await call(ts, 'GET', '/api/v1/users/me', { headers: bearer(token) });
        assertUnauthorized(res, detail);
        assert.ok(!JSON.stringify(res.body).includes(ada.email), 'a rejected token reveals nothing about the user');
      });
    }
    // The forge helper itself makes tokens the server accepts: the attacks above fail for the reason named.
    assert.equal((await call(ts, 'GET', '/api/v1/users/me', { headers: bearer(await forge(ts, ada.id)) })).status, 200);
    assertUnauthorized(await call(ts, 'GET', '/api/v1/users/me'), /needs a bearer token/);
    assertUnauthorized(await call(ts, 'GET', '/api/v1/users/me', { headers: { authorization: `Basic ${valid}` } }), /Bearer/);
  });

  await t.test('an API key works as a bearer credential as its user; revoked, wrong or malformed keys are 401', async () => {
    const ctx = ts.app.context({ actor: 'cli:test' });
    const key = await ts.app.apiKeys.create(ctx, { user: ada.id, name: 'sync' });
    assert.match(key.secret, /^svc_key_[0-9A-Z]{26}_[A-Za-z0-9_-]{43}$/);
    const me = await call(ts, 'GET', '/api/v2/users/me', { headers: bearer(key.secret) });
    assert.equal(me.status, 200);
    assert.equal(me.body.id, ada.id);
    const [used] = await query<{ last_used_at: Date | null; secret_hash: string }>(db, 'select last_used_at, secret_hash from api_keys where id = $1', [
      key.id,
    ]);
    assert.ok(used!.last_used_at, 'last_used_at is recorded');
    assert.ok(!key.secret.includes(used!.secret_hash));

    const wrongSecret = `${key.secret.slice(0, -4)}AAAA`;
    assertUnauthorized(await call(ts, 'GET', '/api/v1/users/me', { headers: bearer(wrongSecret) }), /not valid/);
    assertUnauthorized(await call(ts, 'GET', '/api/v1/users/me', { headers: bearer('svc_key_123_short') }), /malformed/);

    await ts.app.apiKeys.revoke(ctx, key.id);
    assertUnauthorized(await call(ts, 'GET', '/api/v1/users/me', { headers: bearer(key.secret) }), /revoked/);
  });
});

test('a token signed by the second key of the set is still accepted (key rotation)', async (t) => {
  const dir = tempDir(t);
  const [current, previous] = [await generateSigningJwk('EdDSA'), await generateSigningJwk('RS256')];
  const file = join(dir, 'jwks.json');
  writeFileSync(file, JSON.stringify({ keys: [current, previous] }));
  const ts = await testServer(t, { env: { JWT_KEYS_FILE: file } });
  const user = await ts.user({ email: 'rot@example.com', password: PASSWORD });

  const old = await forge(ts, user.id, { header: { alg: previous.alg, kid: previous.kid }, key: await importJWK(previous, previous.alg) });
  const me = await call(ts, 'GET', '/api/v1/users/me', { headers: bearer(old) });
  assert.equal(me.status, 200);
  assert.equal(me.body.id, user.id);

  const issued = (await login(ts, user.email)).body.accessToken as string;
  const header = JSON.parse(Buffer.from(issued.split('.')[0]!, 'base64url').toString());
  assert.deepEqual({ alg: header.alg, kid: header.kid }, { alg: 'EdDSA', kid: current.kid });
});

test("a login turned away with 503 (too many password hashes in progress) does not use up one of the email's attempts", async (t) => {
  const ts = await testServer(t, { env: { PASSWORD_HASH_CONCURRENCY: '1', PASSWORD_HASH_QUEUE: '0' } });
  const email = 'busy@example.com';
  // The one hashing slot is taken by a verification made slow on purpose (its PHC string asks for
  // 40 passes), so the logins sent meanwhile find the hasher full.
  const slow = `$argon2id$v=19$m=19456,t=40,p=1$${Buffer.alloc(16).toString('base64').replace(/=+$/, '')}$${Buffer.alloc(32).toString('base64').replace(/=+$/, '')}`;
  const holding = ts.app.passwords.verify('whatever', slow);
  const statuses = (await Promise.all(Array.from({ length: 5 }, () => login(ts, email, 'wrong password')))).map((r) => r.status);
  assert.equal(await holding, false);
  // None was checked: each was turned away (503), or refused while the others still held their
  // places in the count (429, which counts nothing either).
  assert.ok(statuses.includes(503) && statuses.every((s) => s === 503 || s === 429), statuses.join(' '));
  // The email has all of its five attempts left.
  for (let i = 0; i < 5; i++) assertUnauthorized(await login(ts, email, 'wrong password'), /^invalid email or password$/);
  assert.equal((await login(ts, email, 'wrong password')).status, 429);
});

test('register, login, refresh and logout on the embedded default', async (t) => {
  const ts = await testServer(t, { embedded: true });
  // The same email twice at once: whichever commits first is created.
  const [reg, twin] = (
    await Promise.all(
      ['emb@example.com', 'EMB@example.com'].map((email) => call(ts, 'POST', '/api/v1/auth/register', { body: { email, password: PASSWORD, name: 'Emb' } })),
    )
  ).sort((a, b) => a.status - b.status);
  assert.equal(reg!.status, 201);
  assertProblem(twin!, 409, 'conflict', /^an account with this email already exists; log in, or register with another email$/, 'email');
  const first = await login(ts, 'emb@example.com');
  assert.equal(first.status, 200);
  assert.equal(first.body.tokenType, 'Bearer');
  const me = await call(ts, 'GET', '/api/v2/users/me', { headers: bearer(first.body.accessToken) });
  assert.deepEqual({ id: me.body.id, status: me.body.status }, { id: reg!.body.id, status: 'active' });

  const second = await call(ts, 'POST', '/api/v1/auth/refresh', { body: { refreshToken: first.body.refreshToken } });
  assert.equal(second.status, 200);
  assertUnauthorized(await call(ts, 'POST', '/api/v1/auth/refresh', { body: { refreshToken: first.body.refreshToken } }), /already used/);
  assertUnauthorized(await call(ts, 'POST', '/api/v1/auth/refresh', { body: { refreshToken: second.body.refreshToken } }), /revoked/);

  const again = (await login(ts, 'emb@example.com')).body;
  assert.equal((await call(ts, 'POST', '/api/v1/auth/logout', { body: { refreshToken: again.refreshToken } })).status, 204);
  assertUnauthorized(await call(ts, 'POST', '/api/v1/auth/refresh', { body: { refreshToken: again.refreshToken } }), /revoked/);
  assertUnauthorized(await login(ts, 'emb@example.com', 'wrong password!!'), /^invalid email or password$/);
  for (let i = 0; i < 4; i++) assertUnauthorized(await login(ts, 'emb@example.com', 'wrong password!!'));
  assert.equal((await login(ts, 'emb@example.com')).status, 429, 'the login throttle works on the embedded database too');
});

test("an API key on the embedded default authenticates as its user with the user's current role; a disabled user's key is 401", async (t) => {
  const ts = await testServer(t, { embedded: true });
  const ctx = ts.app.context({ actor: 'cli:test' });
  const kim = await ts.user({ email: 'kim@example.com', role: 'admin' });
  const key = await ts.app.apiKeys.create(ctx, { user: kim.id, name: 'ops' });
  const me = await call(ts, 'GET', '/api/v2/users/me', { headers: bearer(key.secret) });
  assert.deepEqual({ status: me.status, id: me.body.id, role: me.body.role }, { status: 200, id: kim.id, role: 'admin' });
  // Admin-only: the key acts with its user's role.
  assert.equal((await call(ts, 'GET', '/api/v1/users', { headers: bearer(key.secret) })).status, 200);
  const [listed] = (await ts.app.apiKeys.list(ctx, { user: kim.id })).filter((k) => k.id === key.id);
  assert.ok(listed?.lastUsedAt, 'last_used_at is recorded');
  await ts.app.users.update(ctx, kim.id, { role: 'user' });
  assertProblem(await call(ts, 'GET', '/api/v1/users', { headers: bearer(key.secret) }), 403, 'forbidden');
  await ts.app.users.setStatus(ctx, kim.id, 'disabled');
  assertUnauthorized(await call(ts, 'GET', '/api/v1/users/me', { headers: bearer(key.secret) }), /the API key's user is disabled/);
});
