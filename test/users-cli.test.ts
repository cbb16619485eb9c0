import { test } from 'node:test';
import assert from 'node:assert/strict';
import { migratedDatabase, query } from './helpers/db.js';
import { svc } from './helpers/cli.js';
import { verifyPassword } from '../src/domain/users/password.js';
import { CursorCodec } from '../src/domain/shared/pagination.js';

const counts = async (url: string) => {
  const [row] = await query<{ users: string; audit: string }>(url, 'select (select count(*) from users) as users, (select count(*) from audit_log) as audit');
  return { users: Number(row!.users), audit: Number(row!.audit) };
};

test('svc users on PostgreSQL', async (t) => {
  const url = await migratedDatabase(t);
  const env = { DATABASE_URL: url, SVC_ACTOR: 'cli:alice' };
  const run = (...args: string[]) => svc(args, { env });

  await t.test('create prints the user, and --json prints it as a document', async () => {
    const res = await run('users', 'create', '--email', 'ada@example.com', '--name', 'Ada', '--role', 'admin', '--json');
    assert.equal(res.code, 0, res.stderr);
    const user = res.json();
    assert.match(user.id, /^usr_[0-9A-Z]{26}$/);
    assert.deepEqual(
      { email: user.email, name: user.name, role: user.role, status: user.status },
      { email: 'ada@example.com', name: 'Ada', role: 'admin', status: 'active' },
    );
    assert.equal(user.passwordHash, undefined);

    const table = await run('users', 'create', '--email', 'grace@example.com', '--name', 'Grace');
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /grace@example\.com/);
    assert.match(table.stdout, /│ role\s+│ user/);
  });

  await t.test('every write records an audit row with the operator as actor', async () => {
    const rows = await query<{ actor: string; action: string; target: string }>(
      url,
      "select actor, action, target from audit_log where action = 'user.created' order by created_at",
    );
    assert.equal(rows.length, 2);
    assert.deepEqual(
      rows.map((r) => r.actor),
      ['cli:alice', 'cli:alice'],
    );
    const [ada] = await query<{ id: string }>(url, "select id from users where email = 'ada@example.com'");
    assert.equal(rows[0]!.target, ada!.id);
  });

  await t.test('a duplicate email in another letter case is a conflict naming the email, and writes nothing', async () => {
    const before = await counts(url);
    const res = await run('users', 'create', '--email', 'ADA@Example.com', '--name', 'Imposter');
    assert.equal(res.code, 4);
    assert.match(res.stderr, /a user with email ADA@Example\.com already exists \(usr_/);
    assert.deepEqual(await counts(url), before);

    const json = await run('users', 'create', '--email', 'ada@example.com', '--name', 'Imposter', '--json');
    assert.equal(json.code, 4);
    assert.equal(json.json().error.code, 'conflict');
    assert.equal(json.json().error.details.field, 'email');
  });

  await t.test('bad input exits 2 with a message naming it, and writes nothing', async () => {
    const before = await counts(url);
    const badEmail = await run('users', 'create', '--email', 'not-an-email', '--name', 'X');
    assert.equal(badEmail.code, 2);
    assert.match(badEmail.stderr, /"not-an-email" is not an email address/);

    const badRole = await run('users', 'create', '--email', 'x@example.com', '--name', 'X', '--role', 'root');
    assert.equal(badRole.code, 2);
    assert.match(badRole.stderr, /--role=root.*admin, user, guest/);

    const missing = await run('users', 'create', '--name', 'X', '--json');
    assert.equal(missing.code, 2);
    assert.equal(missing.json().error.code, 'invalid');
    assert.match(missing.json().error.message, /email/);

    const unknownFlag = await run('users', 'list', '--colour', 'red');
    assert.equal(unknownFlag.code, 2);
    assert.match(unknownFlag.stderr, /--colour/);

    const badLimit = await run('users', 'list', '--limit', '1000');
    assert.equal(badLimit.code, 2);
    assert.match(badLimit.stderr, /limit|1000/);

    // An email is shown by every list of users: an escape sequence in it would run on the operator's terminal.
    for (const email of ['eve\u001b[2J@example.com', 'eve@example.com\u009b31m', 'eve\u0007@example.com']) {
      const control = await run('users', 'create', '--email', email, '--name', 'Eve', '--json');
      assert.equal(control.code, 2, control.stdout);
      assert.match(control.json().error.message, /^--email: the email must not contain a control character \(U\+00(1B|9B|07) at position \d+\)$/);
      assert.equal(control.json().error.details.field, 'email');
    }
    const controlName = await run('users', 'create', '--email', 'eve@example.com', '--name', 'Eve\u001b[31m');
    assert.equal(controlName.code, 2);
    assert.match(controlName.stderr, /^Error: --name: the name must not contain a control character \(U\+001B at position 4\)/);
    assert.equal(controlName.stderr.includes('\u001b'), false, 'no escape sequence reaches the terminal');
    assert.deepEqual(await counts(url), before);
  });

  await t.test('--password-stdin stores an argon2id hash of the password, never the password', async () => {
    const res = await svc(['users', 'create', '--email', 'bob@example.com', '--name', 'Bob', '--password-stdin', '--json'], {
      env,
      input: 'correct horse battery staple\n',
    });
    assert.equal(res.code, 0, res.stderr);
    const [row] = await query<{ password_hash: string }>(url, 'select password_hash from users where id = $1', [res.json().id]);
    assert.match(row!.password_hash, /^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
    assert.equal(await verifyPassword('correct horse battery staple', row!.password_hash), true);
    assert.equal(await verifyPassword('wrong horse battery staple', row!.password_hash), false);
    assert.doesNotMatch(res.stdout + res.stderr, /horse/);

    const before = await counts(url);
    const short = await svc(['users', 'create', '--email', 'carol@example.com', '--name', 'Carol', '--password-stdin'], { env, input: 'short' });
    assert.equal(short.code, 2);
    assert.match(short.stderr, /at least 12 characters/);
    assert.deepEqual(await counts(url), before);
  });

  await t.test('show finds a user by id or by email in any case; an unknown one exits 3', async () => {
    const byEmail = await run('users', 'show', 'GRACE@example.com', '--json');
    assert.equal(byEmail.code, 0, byEmail.stderr);
    const byId = await run('users', 'show', byEmail.json().id, '--json');
    assert.deepEqual(byId.json(), byEmail.json());

    const missing = await run('users', 'show', 'nobody@example.com');
    assert.equal(missing.code, 3);
    assert.match(missing.stderr, /no user with email nobody@example\.com/);
  });

  await t.test('set-role, disable and enable change the user and audit each change', async () => {
    const role = await run('users', 'set-role', 'grace@example.com', 'guest', '--json');
    assert.equal(role.code, 0, role.stderr);
    assert.equal(role.json().role, 'guest');
    const disabled = await run('users', 'disable', 'grace@example.com', '--json');
    assert.equal(disabled.json().status, 'disabled');
    const again = await run('users', 'disable', 'grace@example.com', '--json');
    assert.equal(again.code, 0);
    const enabled = await run('users', 'enable', role.json().id, '--json');
    assert.equal(enabled.json().status, 'active');

    const audit = await query<{ action: string; details: Record<string, unknown> }>(
      url,
      'select action, details from audit_log where target = $1 order by created_at, id',
      [role.json().id],
    );
    assert.deepEqual(
      audit.map((a) => a.action),
      ['user.created', 'user.role-changed', 'user.disabled', 'user.enabled'],
    );
    assert.deepEqual(audit[1]!.details, { from: 'user', to: 'guest' });

    const badRole = await run('users', 'set-role', 'grace@example.com', 'superuser');
    assert.equal(badRole.code, 2);
    const unknown = await run('users', 'disable', 'usr_01ARYZ6S41TSV4RRFFQ69G5FAV');
    assert.equal(unknown.code, 3);
  });

  await t.test("list prints the brief's page document and filters by role, status and search", async () => {
    const all = await run('users', 'list', '--json');
    assert.equal(all.code, 0, all.stderr);
    const page = all.json();
    assert.deepEqual(Object.keys(page), ['data', 'pagination']);
    assert.deepEqual(page.pagination, { cursor: null, hasMore: false });
    assert.deepEqual(
      page.data.map((u: { email: string }) => u.email),
      ['bob@example.com', 'grace@example.com', 'ada@example.com'],
    );

    const admins = await run('users', 'list', '--role', 'admin', '--json');
    assert.deepEqual(
      admins.json().data.map((u: { email: string }) => u.email),
      ['ada@example.com'],
    );
    const search = await run('users', 'list', '--search', 'GRA', '--json');
    assert.deepEqual(
      search.json().data.map((u: { email: string }) => u.email),
      ['grace@example.com'],
    );
    const percent = await run('users', 'list', '--search', '%', '--json');
    assert.deepEqual(percent.json().data, []);

    const table = await run('users', 'list');
    assert.match(table.stdout, /│ id\s+│ email\s+│ name\s+│ role\s+│ status\s+│ created/);
    assert.match(table.stdout, /3 user\(s\)/);
  });

  await t.test('cursor paging walks every user exactly once; a tampered cursor exits 2', async () => {
    for (let i = 0; i < 4; i++) {
      const res = await run('users', 'create', '--email', `page${i}@example.com`, '--name', `Page ${i}`);
      assert.equal(res.code, 0, res.stderr);
    }
    const seen: string[] = [];
    let after: string | undefined;
    for (let pages = 0; pages < 10; pages++) {
      const res = await run('users', 'list', '--limit', '2', '--json', ...(after ? ['--after', after] : []));
      assert.equal(res.code, 0, res.stderr);
      const page = res.json();
      seen.push(...page.data.map((u: { id: string }) => u.id));
      if (!page.pagination.hasMore) break;
      assert.equal(page.data.length, 2);
      after = page.pagination.cursor;
    }
    assert.equal(seen.length, 7);
    assert.equal(new Set(seen).size, 7);

    const tampered = await run('users', 'list', '--after', `${after!.slice(0, -2)}xx`, '--json');
    assert.equal(tampered.code, 2);
    assert.match(tampered.json().error.message, /cursor/);
  });

  await t.test("a cursor of another list (the API's orders) or of other filters exits 2 saying so, naming --after", async () => {
    const roleUser = await run('users', 'list', '--role', 'user', '--limit', '1', '--json');
    assert.equal(roleUser.code, 0, roleUser.stderr);
    const cursor: string = roleUser.json().pagination.cursor;
    const next = await run('users', 'list', '--role', 'user', '--limit', '1', '--after', cursor, '--json');
    assert.equal(next.code, 0, next.stderr);

    const otherFilters = await run('users', 'list', '--after', cursor, '--json');
    assert.equal(otherFilters.code, 2);
    assert.match(otherFilters.json().error.message, /^--after: the cursor was made with other filters/);
    assert.equal(otherFilters.json().error.details.field, 'after');
    const table = await run('users', 'list', '--role', 'admin', '--after', cursor);
    assert.equal(table.code, 2);
    assert.match(table.stderr, /other filters/);

    // A cursor as GET /api/v2/orders hands it out on this database (signed with its key), at an order as new as a user.
    const [secret] = await query<{ value: string }>(url, "select value from app_secrets where name = 'cursor'");
    const [newest] = await query<{ created_at: Date }>(url, 'select created_at from users order by created_at desc limit 1');
    const orders = new CursorCodec(Buffer.from(secret!.value, 'utf8')).encode(
      { createdAt: newest!.created_at, id: 'ord_01ARYZ6S41TSV4RRFFQ69G5FAV' },
      { list: 'orders', filters: { userId: 'usr_01ARYZ6S41TSV4RRFFQ69G5FAV' } },
    );
    const anotherList = await run('users', 'list', '--after', orders, '--json');
    assert.equal(anotherList.code, 2);
    assert.match(anotherList.json().error.message, /^--after: the cursor belongs to another list \(orders\), not to the users list/);
    assert.equal(anotherList.json().error.details.field, 'after');
  });
});
