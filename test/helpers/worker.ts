import { spawn } from 'node:child_process';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import amqp from 'amqplib';
import { RabbitMq } from '../../src/adapters/rabbitmq.js';
import { DEFAULT_RETRY_DELAYS_MS } from '../../src/worker/consumer.js';
import { BIN, ROOT, tempDir } from './cli.js';
import { AMQP_URL, silent } from './rabbit.js';

export interface WorkerProcess {
  /** The health endpoints' base URL, from the "worker started" log line. */
  healthUrl: string;
  pid: number;
  kill(signal: NodeJS.Signals): void;
  stdout(): string;
  stderr(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves when stderr has a line matching pattern (already printed or still to come). */
  waitForStderr(pattern: RegExp): Promise<void>;
}

/**
 * Starts `svc worker ARGS` (the built binary, LOG_LEVEL info) and resolves once it logs "worker
 * started"; rejects with its output when it exits first. Killed (SIGKILL) when the test ends if it
 * still runs.
 */
export function svcWorker(t: TestContext, args: string[], env: Record<string, string>): Promise<WorkerProcess> {
  const childEnv: Record<string, string> = {};
  for (const [k, v] of Object.entries({ ...process.env, SVC_DATA_DIR: join(tempDir(t), 'data'), ...env, LOG_LEVEL: 'info' }))
    if (v !== undefined) childEnv[k] = v;
  const child = spawn(process.execPath, [BIN, 'worker', ...args], { cwd: ROOT, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  const watchers: { pattern: RegExp; resolve: () => void }[] = [];
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal })),
  );
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return new Promise((resolve, reject) => {
    let started = false;
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
      for (const w of [...watchers]) {
        if (w.pattern.test(stderr)) {
          watchers.splice(watchers.indexOf(w), 1);
          w.resolve();
        }
      }
      const m = started ? null : /"msg":"worker started[^"]*health on (http:\/\/[^"\s]+)"/.exec(stderr);
      if (!m) return;
      started = true;
      resolve({
        healthUrl: m[1]!,
        pid: child.pid!,
        kill: (s) => child.kill(s),
        stdout: () => stdout,
        stderr: () => stderr,
        exited,
        waitForStderr: (pattern) =>
          pattern.test(stderr) ? Promise.resolve() : new Promise<void>((resolveWait) => watchers.push({ pattern, resolve: resolveWait })),
      });
    });
    child.on('error', reject);
    void exited.then(({ code, signal }) => reject(new Error(`svc worker exited (${code ?? signal}) before starting:\n${stdout}\n${stderr}`)));
  });
}

/**
 * Deletes what svc worker declared on a test's prefix when the test ends: its consumers' queues (with
 * the default retry delays, or those given) and the exchange.
 */
export function removeExchangeAfter(t: TestContext, prefix: string, retryDelaysMs: readonly number[] = DEFAULT_RETRY_DELAYS_MS): void {
  t.after(async () => {
    const rabbit = await RabbitMq.connect(AMQP_URL, { logger: silent, prefix });
    const conn = await amqp.connect(AMQP_URL);
    try {
      const ch = await conn.createChannel();
      // Deleting a queue that was never declared succeeds.
      for (const name of ['payments', 'receipts', 'mail']) {
        const q = rabbit.queues({ name, retryDelaysMs });
        for (const queue of [q.work, q.dead, ...q.retries.map((r) => r.queue)]) await ch.deleteQueue(queue);
      }
      await ch.deleteExchange(`${prefix}.events`);
    } finally {
      await conn.close();
      await rabbit.close();
    }
  });
}
