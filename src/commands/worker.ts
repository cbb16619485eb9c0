import { Flags } from '@oclif/core';
import { SvcCommand } from '../cli/base-command.js';
import type { RunningWorker } from '../worker/worker.js';

export default class Worker extends SvcCommand {
  static override summary = 'Process the event queues: consumers, the outbox relay, housekeeping.';
  static override description =
    'Runs the consumers (all of them, or those named by --queues) on RabbitMQ (AMQP_URL), or without it on the database ' +
    'itself (the in-process pipeline, as svc serve runs it; on the embedded database only while svc serve does not hold ' +
    'it: exit 6), the outbox relay that publishes committed events (unless --no-relay) and housekeeping, beside any number ' +
    'of svc serve. /health/live and /health/ready (503 naming the failing ' +
    'dependency) and Prometheus /metrics (unless METRICS_PORT=off) answer on HOST:--health-port. Refuses to start while migrations are pending (exit 4); RabbitMQ or ' +
    'PostgreSQL unreachable at start exits 6 naming AMQP_URL or DATABASE_URL. SIGTERM or SIGINT stops it cleanly: no new ' +
    'messages, those in flight finish and are acknowledged (up to SHUTDOWN_TIMEOUT_MS), the relay finishes its batch, ' +
    'connections close, exit 0.';
  static override examples = [
    'AMQP_URL=amqp://svc:secret@rabbitmq:5672 DATABASE_URL=postgres://svc@db/svc <%= config.bin %> worker',
    '<%= config.bin %> worker --concurrency 20 --health-port 9091',
    '<%= config.bin %> worker --queues payments --no-relay',
  ];
  static override flags = {
    concurrency: Flags.integer({ summary: 'Messages handled at once per consumer (its prefetch).', default: 10, min: 1, max: 1_000 }),
    queues: Flags.string({ summary: 'Run only these consumers (comma-separated names); all by default.' }),
    relay: Flags.boolean({
      summary: 'Run the outbox relay (publishes committed events); --no-relay leaves it to other workers.',
      default: true,
      allowNo: true,
    }),
    'health-port': Flags.integer({
      summary: 'Port of /health/live, /health/ready and /metrics on HOST (0 picks a free one).',
      default: 9091,
      min: 0,
      max: 65_535,
    }),
  };

  /** Works until SIGTERM or SIGINT, then drains and exits. */
  async run(): Promise<{ stopped: NodeJS.Signals; drained: boolean }> {
    const { flags } = await this.parse(Worker);
    const queues = flags.queues
      ?.split(',')
      .map((q) => q.trim())
      .filter(Boolean);
    // A wrong name is a usage error (exit 2) before the configuration or any service is looked at.
    if (queues) (await import('../worker/pipeline.js')).checkQueues(queues);
    const config = await this.loadConfig();
    // Listening from before start-up (see stopSignal); the started worker logs a second signal.
    const started: { worker?: RunningWorker } = {};
    const signal = this.stopSignal(() => started.worker?.app.logger);
    const { startWorker } = await import('../worker/worker.js');
    const running = (started.worker = await startWorker(config, {
      concurrency: flags.concurrency,
      queues,
      relay: flags.relay,
      healthPort: flags['health-port'],
    }));
    this.print(
      `svc worker: started (consumers: ${running.consumers.length ? running.consumers.join(', ') : 'none'}; relay ${running.relay ? 'on' : 'off'}; health on ${running.healthUrl})`,
    );
    const received = await signal;
    running.app.logger.info({ signal: received }, `${received}: stopping`);
    const { drained } = await running.stop();
    running.app.logger.info({ drained }, 'stopped');
    return { stopped: received, drained };
  }
}
