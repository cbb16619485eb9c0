import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfig, ConfigError, describeConfig, configSchema } from '../src/config.js';
import { svc, tempDir } from './helpers/cli.js';

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
