import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfig, ConfigError, describeConfig, configSchema, SECRET_FILE_KEYS } from '../src/config.js';
import { ROOT, svc, tempDir } from './helpers/cli.js';

test('with nothing set, every key takes its default and the embedded database is chosen', () => {
  const config = loadConfig({}, '/srv/app');
  assert.equal(config.DATABASE_URL, undefined);
  assert.equal(config.SVC_DATA_DIR, './.svc');
  assert.equal(config.dataDir, '/srv/app/.svc');
  assert.equal(config.DATABASE_POOL_MAX, 20);
  assert.equal(config.LOG_LEVEL, 'info');
  assert.match(config.SVC_ACTOR, /^cli:/);
  assert.ok(Object.values(config.sources).every((s) => s === 'default'));
});

test('an invalid value fails naming the key, the value and the expected form', () => {
  const cases: [Record<string, string>, RegExp][] = [
    [{ DATABASE_POOL_MAX: 'lots' }, /^DATABASE_POOL_MAX="lots" in the environment is invalid: expected an integer from 1 to 200$/],
    [{ DATABASE_POOL_MAX: '0' }, /DATABASE_POOL_MAX="0" .*from 1 to 200/],
    [{ LOG_LEVEL: 'loud' }, /LOG_LEVEL="loud" .*one of fatal, error, warn, info, debug, trace, silent/],
    [{ DATABASE_URL: 'localhost:5432' }, /DATABASE_URL=localhost:5432 .*expected a PostgreSQL URL/],
    [{ DATABASE_URL: 'svc:hunter2@db:5432/svc' }, /DATABASE_URL=svc:\*\*\*\*@db:5432\/svc .*expected a PostgreSQL URL/],
    [{ SVC_ACTOR: 'two words' }, /SVC_ACTOR="two words" .*without spaces/],
    [{ EVENT_DELIVERY_LEASE_MS: '500' }, /EVENT_DELIVERY_LEASE_MS="500" .*from 1000 to 600000/],
  ];
  for (const [env, message] of cases) {
    assert.throws(
      () => loadConfig(env),
      (err: unknown) => err instanceof ConfigError && message.test(err.message),
      JSON.stringify(env),
    );
  }
});

test('a password in DATABASE_URL never shows in messages or in svc config', () => {
  assert.throws(
    () => loadConfig({ DATABASE_URL: 'mysql://root:hunter2@db/x' }),
    (err: Error) => !err.message.includes('hunter2'),
  );
  const config = loadConfig({ DATABASE_URL: 'postgres://svc:hunter2@db.internal:5432/svc' });
  const entry = describeConfig(config).find((e) => e.key === 'DATABASE_URL')!;
  assert.equal(entry.value, 'postgres://svc:****@db.internal:5432/svc');
  assert.equal(entry.source, 'env');
});

test('the config file named by SVC_CONFIG is read under the environment', (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'svc.json');
  writeFileSync(file, JSON.stringify({ LOG_LEVEL: 'debug', DATABASE_POOL_MAX: 7 }));
  const config = loadConfig({ SVC_CONFIG: file, DATABASE_POOL_MAX: '9' });
  assert.equal(config.LOG_LEVEL, 'debug');
  assert.equal(config.sources.LOG_LEVEL, 'file');
  assert.equal(config.DATABASE_POOL_MAX, 9);
  assert.equal(config.sources.DATABASE_POOL_MAX, 'env');

  writeFileSync(file, JSON.stringify({ DATABSE_URL: 'postgres://x/y' }));
  assert.throws(() => loadConfig({ SVC_CONFIG: file }), /DATABSE_URL in .* is not a configuration key/);
  writeFileSync(file, '{ not json');
  assert.throws(() => loadConfig({ SVC_CONFIG: file }), /is not valid JSON/);
  writeFileSync(file, JSON.stringify({ LOG_LEVEL: 'chatty' }));
  assert.throws(() => loadConfig({ SVC_CONFIG: file }), /LOG_LEVEL="chatty" in .*svc\.json is invalid/);
});

test('svc config prints every key with its source, secrets masked; --json too', async () => {
  const env = { DATABASE_URL: 'postgres://svc:s3cret@127.0.0.1:5432/svc', LOG_LEVEL: 'warn' };
  const human = await svc(['config'], { env });
  assert.equal(human.code, 0, human.stderr);
  assert.match(human.stdout, /DATABASE_URL\s+│ postgres:\/\/svc:\*\*\*\*@127\.0\.0\.1:5432\/svc\s+│ env/);
  assert.match(human.stdout, /SVC_DATA_DIR\s+│ \.\/\.svc\s+│ default/);
  assert.doesNotMatch(human.stdout + human.stderr, /s3cret/);

  const json = await svc(['config', '--json'], { env });
  const doc = json.json();
  assert.equal(doc.file, null);
  const byKey = Object.fromEntries(doc.values.map((e: { key: string }) => [e.key, e]));
  assert.deepEqual(Object.keys(byKey), Object.keys(configSchema));
  assert.equal(byKey.LOG_LEVEL.source, 'env');
  assert.equal(byKey.DATABASE_POOL_MAX.value, 20);
  // What svc uses when a key is unset, not null: the spans' service.name is svc.
  assert.deepEqual([byKey.OTEL_SERVICE_NAME.value, byKey.OTEL_SERVICE_NAME.source], ['svc', 'default']);
  assert.ok(doc.values.every((e: { doc: string }) => e.doc.length > 10));
  assert.doesNotMatch(json.stdout, /s3cret/);
});

test('svc config with an invalid value exits 78 naming the key', async () => {
  const res = await svc(['config'], { env: { DATABASE_STATEMENT_TIMEOUT_MS: '-5' } });
  assert.equal(res.code, 78);
  assert.match(res.stderr, /DATABASE_STATEMENT_TIMEOUT_MS="-5" in the environment is invalid: expected an integer from 0 to 3600000/);
});

test('DATABASE_PREPARED_STATEMENTS is on by default, read as a yes or no, and refused otherwise naming the key', async () => {
  assert.equal(loadConfig({}).DATABASE_PREPARED_STATEMENTS, true);
  for (const off of ['false', 'off', 'No', '0']) assert.equal(loadConfig({ DATABASE_PREPARED_STATEMENTS: off }).DATABASE_PREPARED_STATEMENTS, false, off);
  for (const on of ['true', 'ON', 'yes', '1']) assert.equal(loadConfig({ DATABASE_PREPARED_STATEMENTS: on }).DATABASE_PREPARED_STATEMENTS, true, on);
  const shown = await svc(['config'], { env: { DATABASE_PREPARED_STATEMENTS: 'off' } });
  assert.match(shown.stdout, /DATABASE_PREPARED_STATEMENTS\s+│ false\s+│ env/);
  const bad = await svc(['config', '--json'], { env: { DATABASE_PREPARED_STATEMENTS: 'maybe' } });
  assert.equal(bad.code, 78);
  assert.equal(bad.json().error.details.key, 'DATABASE_PREPARED_STATEMENTS');
  assert.match(bad.json().error.message, /expected true or false \(also on\/off, yes\/no, 1\/0\)/);
});

test('the provider keys are parsed and shown in svc config --json, secrets masked', async () => {
  const env = {
    AMQP_URL: 'amqps://svc:rabbit-pass@mq.internal:5671/prod',
    STRIPE_SECRET_KEY: 'sk_live_51Hsecretsecretsecret',
    STRIPE_WEBHOOK_SECRET: 'whsec_webhooksecretwebhooksecret',
    STRIPE_API_URL: 'http://127.0.0.1:12111/',
    SENDGRID_API_KEY: 'SG.sendgridsecret.sendgridsecret',
    SENDGRID_API_URL: 'http://127.0.0.1:3030',
    MAIL_FROM: 'Shop <orders@shop.example>',
    S3_BUCKET: 'svc-receipts',
    S3_ENDPOINT: 'http://127.0.0.1:4569',
    S3_REGION: 'eu-west-1',
    S3_FORCE_PATH_STYLE: 'yes',
    PUBLIC_URL: 'https://api.shop.example/',
    RECEIPT_URL_TTL_SECONDS: '600',
    OUTBOX_RETENTION_HOURS: '24',
  };
  const res = await svc(['config', '--json'], { env });
  assert.equal(res.code, 0, res.stderr);
  const byKey = Object.fromEntries(res.json().values.map((e: { key: string; value: unknown; source: string }) => [e.key, e]));
  const shown = Object.fromEntries(Object.keys(env).map((k) => [k, byKey[k].value]));
  assert.deepEqual(shown, {
    AMQP_URL: 'amqps://svc:****@mq.internal:5671/prod',
    STRIPE_SECRET_KEY: 'sk_live_****',
    STRIPE_WEBHOOK_SECRET: 'whsec_****',
    STRIPE_API_URL: 'http://127.0.0.1:12111',
    SENDGRID_API_KEY: 'SG.****',
    SENDGRID_API_URL: 'http://127.0.0.1:3030',
    MAIL_FROM: 'Shop <orders@shop.example>',
    S3_BUCKET: 'svc-receipts',
    S3_ENDPOINT: 'http://127.0.0.1:4569',
    S3_REGION: 'eu-west-1',
    S3_FORCE_PATH_STYLE: true,
    PUBLIC_URL: 'https://api.shop.example',
    RECEIPT_URL_TTL_SECONDS: 600,
    OUTBOX_RETENTION_HOURS: 24,
  });
  for (const key of Object.keys(env)) assert.equal(byKey[key].source, 'env', key);
  assert.doesNotMatch(res.stdout + res.stderr, /rabbit-pass|secretsecret|webhooksecret|sendgridsecret/);

  const defaults = loadConfig({});
  assert.equal(defaults.MAIL_FROM, 'svc <no-reply@localhost>');
  assert.equal(defaults.S3_REGION, 'us-east-1');
  assert.equal(defaults.S3_FORCE_PATH_STYLE, false);
  assert.equal(defaults.RECEIPT_URL_TTL_SECONDS, 300);
  assert.equal(defaults.OUTBOX_RETENTION_HOURS, 168);
  assert.equal(defaults.PROCESSED_MESSAGES_RETENTION_HOURS, 336);
  assert.equal(defaults.STRIPE_EVENTS_RETENTION_HOURS, 720);
  assert.equal(loadConfig({ OUTBOX_RETENTION_HOURS: '720', PROCESSED_MESSAGES_RETENTION_HOURS: '721' }).PROCESSED_MESSAGES_RETENTION_HOURS, 721);
  for (const key of ['AMQP_URL', 'STRIPE_SECRET_KEY', 'SENDGRID_API_KEY', 'S3_BUCKET', 'PUBLIC_URL'] as const) assert.equal(defaults[key], undefined, key);
});

test('a bad provider value fails naming the key, without showing a secret', () => {
  const cases: [Record<string, string>, string, RegExp][] = [
    [{ AMQP_URL: 'http://guest:guestpass@mq:5672' }, 'AMQP_URL', /AMQP_URL=http:\/\/guest:\*\*\*\*@mq:5672\/? .*expected an AMQP URL/],
    [{ STRIPE_SECRET_KEY: 'pk_live_publishablekey' }, 'STRIPE_SECRET_KEY', /STRIPE_SECRET_KEY=\*\*\*\* .*expected a Stripe API key/],
    [{ STRIPE_SECRET_KEY: 'sk_test_1', STRIPE_WEBHOOK_SECRET: 'not-a-whsec' }, 'STRIPE_SECRET_KEY', /sk_test_\*\*\*\*/],
    [{ STRIPE_SECRET_KEY: 'sk_test_12345678', STRIPE_WEBHOOK_SECRET: 'not-a-whsec' }, 'STRIPE_WEBHOOK_SECRET', /STRIPE_WEBHOOK_SECRET=\*\*\*\* .*whsec_/],
    [{ STRIPE_SECRET_KEY: 'sk_test_12345678', STRIPE_API_URL: 'ftp://x' }, 'STRIPE_API_URL', /expected an http:\/\/ or https:\/\/ URL/],
    [{ SENDGRID_API_KEY: 'sendgrid-key-without-prefix' }, 'SENDGRID_API_KEY', /SENDGRID_API_KEY=\*\*\*\* .*SG\./],
    [{ MAIL_FROM: 'nobody' }, 'MAIL_FROM', /MAIL_FROM="nobody" .*an email address/],
    [{ MAIL_FROM: 'Shop <orders@shop.example' }, 'MAIL_FROM', /MAIL_FROM=/],
    [{ S3_BUCKET: 'Bad_Bucket' }, 'S3_BUCKET', /S3_BUCKET="Bad_Bucket" .*S3 bucket name/],
    [{ S3_BUCKET: 'ok-bucket', S3_FORCE_PATH_STYLE: 'sometimes' }, 'S3_FORCE_PATH_STYLE', /true or false/],
    [{ PUBLIC_URL: 'api.example.com' }, 'PUBLIC_URL', /PUBLIC_URL="api\.example\.com" .*http:\/\/ or https:\/\//],
    [{ RECEIPT_URL_TTL_SECONDS: '5' }, 'RECEIPT_URL_TTL_SECONDS', /from 30 to 604800/],
    [{ OUTBOX_RETENTION_HOURS: '0' }, 'OUTBOX_RETENTION_HOURS', /from 1 to 8760/],
  ];
  for (const [env, key, message] of cases) {
    assert.throws(
      () => loadConfig(env),
      (err: unknown) =>
        err instanceof ConfigError && err.key === key && message.test(err.message) && !/publishablekey|without-prefix|guestpass/.test(err.message),
      JSON.stringify(env),
    );
  }
});

test('keys that need another key fail naming both: a webhook secret without a Stripe key, SendGrid without MAIL_FROM, S3 settings without a bucket, an inbox kept no longer than the outbox', async () => {
  const cases: [Record<string, string>, string, RegExp][] = [
    [{ STRIPE_WEBHOOK_SECRET: 'whsec_12345678' }, 'STRIPE_WEBHOOK_SECRET', /STRIPE_WEBHOOK_SECRET is set but STRIPE_SECRET_KEY is not/],
    [{ STRIPE_API_URL: 'http://127.0.0.1:12111' }, 'STRIPE_API_URL', /STRIPE_API_URL is set but STRIPE_SECRET_KEY is not/],
    [{ SENDGRID_API_URL: 'http://127.0.0.1:3030' }, 'SENDGRID_API_URL', /SENDGRID_API_URL is set but SENDGRID_API_KEY is not/],
    [{ S3_ENDPOINT: 'http://127.0.0.1:4569' }, 'S3_ENDPOINT', /S3_ENDPOINT is set but S3_BUCKET is not/],
    [{ S3_REGION: 'eu-west-1' }, 'S3_REGION', /S3_REGION is set but S3_BUCKET is not/],
    [{ SENDGRID_API_KEY: 'SG.12345678.abc' }, 'MAIL_FROM', /MAIL_FROM is required with SENDGRID_API_KEY/],
    [
      { PROCESSED_MESSAGES_RETENTION_HOURS: '168' },
      'PROCESSED_MESSAGES_RETENTION_HOURS',
      /PROCESSED_MESSAGES_RETENTION_HOURS \(168\) must exceed OUTBOX_RETENTION_HOURS \(168\) by at least 1: .*raise PROCESSED_MESSAGES_RETENTION_HOURS to 169/,
    ],
    [{ OUTBOX_RETENTION_HOURS: '720' }, 'OUTBOX_RETENTION_HOURS', /PROCESSED_MESSAGES_RETENTION_HOURS \(336\) must exceed OUTBOX_RETENTION_HOURS \(720\)/],
    [
      { STRIPE_EVENTS_RETENTION_HOURS: '72' },
      'STRIPE_EVENTS_RETENTION_HOURS',
      /STRIPE_EVENTS_RETENTION_HOURS \(72\) must exceed 72: Stripe retries a webhook delivery for up to 3 days/,
    ],
  ];
  for (const [env, key, message] of cases) {
    assert.throws(
      () => loadConfig(env),
      (err: unknown) => err instanceof ConfigError && err.key === key && message.test(err.message),
      JSON.stringify(env),
    );
  }
  const res = await svc(['config', '--json'], { env: { SENDGRID_API_KEY: 'SG.sendgridsecret.x' } });
  assert.equal(res.code, 78);
  assert.equal(res.json().error.details.key, 'MAIL_FROM');
  assert.doesNotMatch(res.stdout + res.stderr, /sendgridsecret/);
  const withFrom = await svc(['config', '--json'], { env: { SENDGRID_API_KEY: 'SG.sendgridsecret.x', MAIL_FROM: 'orders@shop.example' } });
  assert.equal(withFrom.code, 0, withFrom.stderr);
});

test('the README configuration table lists every key, with its default', () => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const defaults = loadConfig({}, '/');
  for (const key of Object.keys(configSchema) as (keyof typeof configSchema)[]) {
    const row = new RegExp(`^\\| \`${key}\` \\| ([^|]+) \\|`, 'm').exec(readme);
    assert.ok(row, `README has no row for ${key}`);
    const value = defaults[key];
    if (value !== undefined && key !== 'SVC_ACTOR')
      assert.ok(row[1]!.includes(String(value)), `README gives ${key} the default ${row[1]}, the code ${String(value)}`);
  }
});

test('every secret can come from the file named by <KEY>_FILE, its trailing line break removed, shown masked with the file as its source', async (t) => {
  const dir = tempDir(t);
  const secret = (name: string, content: string) => {
    const file = join(dir, name);
    writeFileSync(file, content, { mode: 0o600 });
    return file;
  };
  assert.deepEqual([...SECRET_FILE_KEYS].sort(), [
    'AMQP_URL',
    'DATABASE_REPLICA_URLS',
    'DATABASE_URL',
    'REDIS_URL',
    'S3_ENDPOINT',
    'SENDGRID_API_KEY',
    'SENDGRID_API_URL',
    'STRIPE_API_URL',
    'STRIPE_SECRET_KEY',
    'STRIPE_WEBHOOK_SECRET',
  ]);
  const env = {
    DATABASE_URL_FILE: secret('database_url', 'postgres://svc:pg-file-pass@db:5432/svc\n'),
    AMQP_URL_FILE: secret('amqp_url', 'amqp://svc:mq-file-pass@mq:5672\r\n'),
    STRIPE_SECRET_KEY_FILE: secret('stripe', 'sk_live_filesecretfilesecret\n\n'),
    STRIPE_WEBHOOK_SECRET_FILE: secret('whsec', 'whsec_filewebhookfilewebhook'),
    SENDGRID_API_KEY_FILE: secret('sendgrid', 'SG.filesendgrid.filesendgrid\n'),
    MAIL_FROM: 'orders@shop.example',
  };
  const config = loadConfig(env);
  assert.equal(config.DATABASE_URL, 'postgres://svc:pg-file-pass@db:5432/svc');
  assert.equal(config.AMQP_URL, 'amqp://svc:mq-file-pass@mq:5672');
  assert.equal(config.STRIPE_SECRET_KEY, 'sk_live_filesecretfilesecret');
  assert.equal(config.STRIPE_WEBHOOK_SECRET, 'whsec_filewebhookfilewebhook');
  assert.equal(config.SENDGRID_API_KEY, 'SG.filesendgrid.filesendgrid');
  assert.equal(config.sources.DATABASE_URL, 'secret-file');
  assert.equal(config.secretFiles.DATABASE_URL, env.DATABASE_URL_FILE);

  const json = await svc(['config', '--json'], { env });
  assert.equal(json.code, 0, json.stderr);
  const byKey = Object.fromEntries(json.json().values.map((e: { key: string }) => [e.key, e]));
  assert.deepEqual(byKey.DATABASE_URL, {
    key: 'DATABASE_URL',
    value: 'postgres://svc:****@db:5432/svc',
    source: 'secret-file',
    secretFile: env.DATABASE_URL_FILE,
    doc: configSchema.DATABASE_URL.doc,
  });
  assert.equal(byKey.STRIPE_SECRET_KEY.value, 'sk_live_****');
  assert.equal(byKey.MAIL_FROM.source, 'env');
  assert.equal(byKey.MAIL_FROM.secretFile, undefined);
  const human = await svc(['config'], { env });
  assert.match(human.stdout, new RegExp(`SENDGRID_API_KEY\\s+│ SG\\.\\*\\*\\*\\*\\s+│ file ${env.SENDGRID_API_KEY_FILE}`));
  assert.doesNotMatch(json.stdout + json.stderr + human.stdout + human.stderr, /file-pass|filesecret|filewebhook|filesendgrid/);
});

test('<KEY>_FILE beside <KEY>, an unreadable file or a bad value in it fail naming the variable and the file, without the secret', (t) => {
  const dir = tempDir(t);
  const good = join(dir, 'database_url');
  writeFileSync(good, 'postgres://svc:pg-file-pass@db:5432/svc\n');
  const bad = join(dir, 'stripe');
  writeFileSync(bad, 'pk_live_publishablekey\n');
  const folder = join(dir, 'a-folder');
  mkdirSync(folder);
  const cases: [Record<string, string>, string, RegExp][] = [
    [{ DATABASE_URL: 'postgres://db/svc', DATABASE_URL_FILE: good }, 'DATABASE_URL', /^DATABASE_URL and DATABASE_URL_FILE are both set: set only one of them$/],
    [{ AMQP_URL_FILE: join(dir, 'missing') }, 'AMQP_URL', new RegExp(`^AMQP_URL_FILE: cannot read ${join(dir, 'missing')}: no such file$`)],
    [{ AMQP_URL_FILE: folder }, 'AMQP_URL', new RegExp(`^AMQP_URL_FILE: cannot read ${folder}: it is a folder$`)],
    [
      { STRIPE_SECRET_KEY_FILE: bad },
      'STRIPE_SECRET_KEY',
      new RegExp(`^STRIPE_SECRET_KEY=\\*\\*\\*\\* in ${bad} \\(STRIPE_SECRET_KEY_FILE\\) is invalid: expected a Stripe API key`),
    ],
  ];
  if (process.getuid?.() !== 0) {
    // root reads a file whatever its mode
    const locked = join(dir, 'locked');
    writeFileSync(locked, 'amqp://svc:x@mq', { mode: 0o000 });
    chmodSync(locked, 0o000);
    cases.push([{ AMQP_URL_FILE: locked }, 'AMQP_URL', /AMQP_URL_FILE: cannot read .*locked: permission denied$/]);
  }
  for (const [env, key, message] of cases) {
    assert.throws(
      () => loadConfig(env),
      (err: unknown) => err instanceof ConfigError && err.key === key && message.test(err.message) && !/pg-file-pass|publishablekey/.test(err.message),
      JSON.stringify(env),
    );
  }
  // A relative path is read from the working folder, as the other paths are.
  writeFileSync(join(dir, 'relative'), 'amqp://svc:x@mq:5672\n');
  assert.equal(loadConfig({ AMQP_URL_FILE: 'relative' }, dir).AMQP_URL, 'amqp://svc:x@mq:5672');
  // Only secrets are read from files: LOG_LEVEL_FILE is not a configuration variable.
  assert.equal(loadConfig({ LOG_LEVEL_FILE: good }).LOG_LEVEL, 'info');
});
