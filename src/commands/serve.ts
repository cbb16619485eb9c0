import { Flags } from '@oclif/core';
import { SvcCommand } from '../cli/base-command.js';
import type { RunningServer } from '../server/serve.js';

export default class Serve extends SvcCommand {
  static override summary = 'Run the HTTP API.';
  static override description =
    'Serves /api/v1 and /api/v2, /health/live and /health/ready, the OpenAPI document at /api/openapi.json and its docs at /docs; ' +
    'Prometheus /metrics on a port of its own (METRICS_HOST:METRICS_PORT, default 127.0.0.1:9464; METRICS_PORT=off turns it off). ' +
    'Without DATABASE_URL it runs on the embedded database, applying pending migrations itself; on PostgreSQL it refuses to start ' +
    'while migrations are pending (run `svc migrate`, or pass --migrate). Without AMQP_URL it also dispatches events ' +
    'in-process (the outbox relay and every consumer, on the database: orders are paid and completed with nothing else ' +
    'running). SIGTERM stops it cleanly: no new requests, in-flight ones finish (up to SHUTDOWN_TIMEOUT_MS), then the ' +
    'events being handled, pools close, exit 0.';
  static override examples = [
    '<%= config.bin %> serve',
    '<%= config.bin %> serve --port 8080 --host 0.0.0.0',
    'DATABASE_URL=postgres://svc@db/svc JWT_KEYS_FILE=/run/secrets/jwks.json <%= config.bin %> serve --migrate',
  ];
  static override flags = {
    port: Flags.integer({ summary: 'TCP port (overrides PORT; 0 picks a free one).', min: 0, max: 65_535 }),
    host: Flags.string({ summary: 'Address to listen on (overrides HOST).' }),
    migrate: Flags.boolean({ summary: 'Apply pending migrations before serving (PostgreSQL).' }),
  };

  /** Serves until SIGTERM or SIGINT, then drains and exits. */
  async run(): Promise<{ url: string; drained: boolean }> {
    const { flags } = await this.parse(Serve);
    const config = await this.loadConfig();
    if (flags.port !== undefined) config.PORT = flags.port;
    if (flags.host !== undefined) config.HOST = flags.host;
    // Listening from before start-up (see stopSignal); the started server logs a second signal.
    const started: { server?: RunningServer } = {};
    const signal = this.stopSignal(() => started.server?.app.logger);
    const [{ startServer }, { besideApi }] = await Promise.all([import('../server/serve.js'), import('../worker/pipeline.js')]);
    const running = (started.server = await startServer(config, {
      migrate: flags.migrate,
      // Without AMQP_URL the App has the in-process transport: the outbox relay and every consumer
      // run here (with AMQP_URL, svc worker does that on RabbitMQ).
      alongside: besideApi,
    }));
    this.print(`svc serve: listening on ${running.url} (${running.app.db.kind} database: ${running.app.db.location})`);
    const received = await signal;
    running.app.logger.info({ signal: received }, `${received}: stopping`);
    const { drained } = await running.stop();
    running.app.logger.info({ drained }, 'stopped');
    return { url: running.url, drained };
  }
}
