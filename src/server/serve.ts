import type { FastifyInstance } from 'fastify';
import type { Config } from '../config.js';
import { createApp, type App } from '../app.js';
import { AccessTokens, loadSigningKeys } from '../adapters/jwt.js';
import { DomainError } from '../domain/shared/errors.js';
import { buildServer } from './server.js';

export interface RunningServer {
  app: App;
  server: FastifyInstance;
  /** http://host:port as bound (port 0 resolved). */
  url: string;
  /** Migrations applied at start-up (embedded mode, or --migrate). */
  migrated: string[];
  /**
   * Stops cleanly: no new connections, in-flight requests finish (up to SHUTDOWN_TIMEOUT_MS, then
   * their connections are closed), then the database is closed. Resolves to whether it drained.
   */
  stop(): Promise<{ drained: boolean }>;
}

/**
 * Starts the API. On the embedded default it applies pending migrations itself; on PostgreSQL it
 * refuses to start while migrations are pending unless `migrate` is set.
 */
export async function startServer(config: Config, options: { migrate?: boolean } = {}): Promise<RunningServer> {
  const app = await createApp(config);
  try {
    const pending = await app.migrations.status().then((s) => s.pending.map((m) => m.name));
    let migrated: string[] = [];
    if (pending.length > 0) {
      if (app.db.kind === 'postgresql' && !options.migrate) {
        throw new DomainError(
          'conflict',
          `${pending.length} migration(s) are pending (${pending.join(', ')}); run \`svc migrate\` first, or start with --migrate`,
          { pending },
        );
      }
      migrated = (await app.migrations.up()).migrations;
      app.logger.info({ migrations: migrated }, `applied ${migrated.length} pending migration(s)`);
    }
    const tokens = new AccessTokens(await loadSigningKeys(config, app.logger), {
      issuer: config.JWT_ISSUER,
      audience: config.JWT_AUDIENCE,
      ttlSeconds: config.ACCESS_TOKEN_TTL_SECONDS,
    });
    const server = await buildServer(app, { tokens });
    await server.listen({ port: config.PORT, host: config.HOST });
    const address = server.server.address();
    const port = typeof address === 'object' && address ? address.port : config.PORT;
    const host = config.HOST.includes(':') ? `[${config.HOST}]` : config.HOST;
    const url = `http://${host}:${port}`;
    app.logger.info({ url, database: app.db.kind, location: app.db.location }, `listening on ${url}`);
    return {
      app,
      server,
      url,
      migrated,
      async stop() {
        let drained = true;
        const timer = setTimeout(() => {
          drained = false;
          app.logger.warn({ timeoutMs: config.SHUTDOWN_TIMEOUT_MS }, 'in-flight requests did not finish in time; closing their connections');
          server.server.closeAllConnections();
        }, config.SHUTDOWN_TIMEOUT_MS);
        try {
          // Stops accepting, lets in-flight requests finish, answers 503 to new ones on kept-alive sockets.
          await server.close();
        } finally {
          clearTimeout(timer);
          await app.close();
        }
        return { drained };
      },
    };
  } catch (err) {
    await app.close();
    throw err;
  }
}
