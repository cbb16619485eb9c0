import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { loadConfig, type Config } from '../../src/config.js';
import { generateSigningJwk } from '../../src/adapters/jwt.js';
import { startServer } from '../../src/server/serve.js';
import { besideApi } from '../../src/worker/pipeline.js';
import type { App, AppOverrides } from '../../src/app.js';
import type { UserRole } from '../../src/domain/users/user.entity.js';
import type { UserView } from '../../src/domain/users/users.service.js';
import { migratedDataDir, migratedDatabase, newMigratedDatabase } from './db.js';
import { NO_RATE_LIMITS, tempDir } from './cli.js';

export interface TestServer {
  server: FastifyInstance;
  app: App;
  config: Config;
  /** http://127.0.0.1:<port> for real HTTP (fetch, autocannon); `server.inject` needs no socket. */
  url: string;
  /** http://127.0.0.1:<port>/metrics when the test set METRICS_PORT (0 picks a free one). */
  metricsUrl?: string;
  /** The PostgreSQL URL, or undefined on the embedded default. */
  databaseUrl?: string;
  /** Creates a user directly through the users service (as an operator would). */
  user(input: { email: string; role?: UserRole; name?: string; password?: string }): Promise<UserView>;
  /** A signed access token for a user, as /auth/login would issue. */
  token(user: Pick<UserView, 'id' | 'role'>): Promise<string>;
  /** `{ authorization: 'Bearer …' }` for inject/fetch. */
  auth(user: Pick<UserView, 'id' | 'role'>): Promise<{ authorization: string }>;
}

/**
 * Starts svc serve in this process on a port picked by the OS: on its own PostgreSQL database
 * (cloned from the migrated template, with a generated JWKS file), or with `embedded: true` on an
 * embedded data folder of its own (copied from the migrated template). Stopped when the test ends.
 */
export async function testServer(
  t: TestContext,
  options: {
    embedded?: boolean;
    env?: Record<string, string>;
    overrides?: Omit<AppOverrides, 'role'>;
    /** Runs the event pipeline beside the API as svc serve does without AMQP_URL (stopped before the App closes). */
    pipeline?: boolean;
  } = {},
): Promise<TestServer> {
  const dir = tempDir(t);
  const env: Record<string, string> = {
    // Embedded: a copy of the migrated template (svc serve would migrate a fresh folder itself, as
    // test/in-process-pipeline.test.ts and test/first-use.test.ts check).
    SVC_DATA_DIR: options.embedded ? await migratedDataDir(dir) : join(dir, 'data'),
    LOG_LEVEL: 'silent',
    PORT: '0',
    HOST: '127.0.0.1',
    SVC_ACTOR: 'cli:test',
    // Tests drive many requests from one address: the rate limits are off unless a test sets them.
    ...NO_RATE_LIMITS,
  };
  let databaseUrl: string | undefined;
  let dropDatabase: (() => Promise<unknown>) | undefined;
  if (!options.embedded) {
    ({ url: databaseUrl, drop: dropDatabase } = await newMigratedDatabase());
    const keys = join(dir, 'jwks.json');
    writeFileSync(keys, JSON.stringify({ keys: [await generateSigningJwk()] }));
    Object.assign(env, { DATABASE_URL: databaseUrl, JWT_KEYS_FILE: keys });
  }
  // A run of the tests can turn prepared statements off for every API test, as behind PgBouncer
  // (`DATABASE_PREPARED_STATEMENTS=false npm test`; test/api-orders-unprepared.test.ts does it for one file).
  if (process.env.DATABASE_PREPARED_STATEMENTS) env.DATABASE_PREPARED_STATEMENTS = process.env.DATABASE_PREPARED_STATEMENTS;
  let config: Config;
  let running: Awaited<ReturnType<typeof startServer>>;
  try {
    config = loadConfig({ ...env, ...options.env });
    running = await startServer(config, { overrides: options.overrides, alongside: options.pipeline ? besideApi : undefined });
  } catch (err) {
    await dropDatabase?.();
    throw err;
  }
  // The database goes after the server has stopped: dropped first, it would end the connections of
  // work still running (the pipeline's) from under it.
  t.after(async () => {
    try {
      await running.stop();
    } finally {
      await dropDatabase?.();
    }
  });
  const ts: TestServer = {
    server: running.server,
    app: running.app,
    config,
    url: running.url,
    metricsUrl: running.metricsUrl,
    databaseUrl,
    user: ({ email, role = 'user', name = email.split('@')[0]!, password }) =>
      running.app.users.create(running.app.context({ actor: 'cli:test' }), { email, name, role, password }),
    token: (user) => running.server.svc.tokens.sign({ sub: user.id, role: user.role }),
    auth: async (user) => ({ authorization: `Bearer ${await ts.token(user)}` }),
  };
  return ts;
}

/** A JWKS file with one new signing key, in a folder of this test's own (JWT_KEYS_FILE). */
export async function jwksFile(t: TestContext): Promise<string> {
  const file = join(tempDir(t), 'jwks.json');
  writeFileSync(file, JSON.stringify({ keys: [await generateSigningJwk()] }));
  return file;
}

/** Environment for `svc serve` on a migrated PostgreSQL database of this test's own (it starts faster than the embedded one). */
export async function postgresServeEnv(t: TestContext): Promise<{ DATABASE_URL: string; JWT_KEYS_FILE: string }> {
  return { DATABASE_URL: await migratedDatabase(t), JWT_KEYS_FILE: await jwksFile(t) };
}
