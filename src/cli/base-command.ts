import { Command, Errors } from '@oclif/core';
import type { App } from '../app.js';
import type { Config } from '../config.js';
import type { Ctx } from '../domain/shared/context.js';
import { EXIT, exitCodeFor } from './exit-codes.js';

interface ErrorReport {
  code: string;
  message: string;
  exitCode: number;
  details?: Record<string, unknown>;
}

// oclif's parse errors come as several lines ("The following errors occurred:", one per problem,
// "Missing 2 required args:" followed by one `name  description` line per argument, "See more help
// with --help"); keep the problems, on one line: `Missing 1 required arg: user (User id … or email address)`.
function parseErrorMessage(message: string): string {
  const lines = message
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !/^The following errors? occurred:?$/.test(l) && !/^See more help with/.test(l));
  const problems: string[] = [];
  let listing = false;
  for (const line of lines) {
    const arg = listing ? /^(\S+)(?:\s{2,}(.+))?$/.exec(line) : null;
    if (arg) {
      const named = arg[2] ? `${arg[1]} (${arg[2]})` : arg[1]!;
      const last = problems.length - 1;
      problems[last] = problems[last]!.endsWith(':') ? `${problems[last]} ${named}` : `${problems[last]}, ${named}`;
      continue;
    }
    listing = /^Missing \d+ required args?:$/.test(line);
    problems.push(line);
  }
  return problems.join('; ');
}

/**
 * What every svc command shares: `--json`, a lazily built App (so `--help` and bad flags never touch
 * the database), and one mapping from errors to messages and exit codes.
 */
export abstract class SvcCommand extends Command {
  static override enableJsonFlag = true;

  private appInstance?: App;
  private schemaReady?: Promise<unknown>;

  /** Loads and validates the configuration (a bad value exits 78 naming the key). */
  protected async loadConfig(): Promise<Config> {
    const { loadConfig } = await import('../config.js');
    return loadConfig();
  }

  /** The composition root, built on first use and closed when the command ends. */
  protected async app(): Promise<App> {
    if (!this.appInstance) {
      const config = await this.loadConfig();
      const { createApp } = await import('../app.js');
      this.appInstance = await createApp(config);
    }
    return this.appInstance;
  }

  /**
   * A unit-of-work context acting as the operator (SVC_ACTOR or cli:<os user>), on a current schema:
   * the embedded default applies pending migrations first (as svc serve does), PostgreSQL with
   * migrations pending stops the command (exit 4, run `svc migrate`) before it reads or writes.
   */
  protected async ctx(): Promise<Ctx> {
    const app = await this.app();
    this.schemaReady ??= app.migrations.prepareSchema();
    await this.schemaReady;
    return app.context({ actor: app.config.SVC_ACTOR });
  }

  /**
   * The first SIGTERM or SIGINT, for long-running commands (serve, worker). Call it before start-up:
   * its listeners stay for the whole shutdown, so a signal that arrives while the command starts
   * stops it once it has started instead of killing it halfway, and a second signal never kills the
   * drain (Ctrl-C on a terminal reaches the process twice when bin/run.js forwards it); that one is
   * logged through `logger()` once there is one.
   */
  protected stopSignal(logger: () => { info(obj: object, msg: string): void } | undefined): Promise<NodeJS.Signals> {
    let stopping = false;
    return new Promise((resolve) => {
      const onSignal = (signal: NodeJS.Signals) => {
        if (stopping) {
          logger()?.info({ signal }, `${signal}: already stopping`);
          return;
        }
        stopping = true;
        resolve(signal);
      };
      process.on('SIGTERM', onSignal);
      process.on('SIGINT', onSignal);
    });
  }

  /** Prints human output unless --json is on (then oclif prints the returned result). */
  protected print(text: string): void {
    if (!this.jsonEnabled()) this.log(text);
  }

  override async catch(err: Error & { oclif?: { exit?: number } }): Promise<void> {
    const report = await this.report(err);
    process.exitCode = report.exitCode;
    let hint = report.code === 'invalid' && err instanceof Errors.CLIError ? `\nSee more help with --help` : '';
    if (report.exitCode === EXIT.internal) {
      // Unexpected: the stack is for whoever debugs it, as a JSON log line on stderr where logs are
      // collected (not a terminal), or when asked for. A person at a terminal gets one line.
      const level = this.appInstance?.config.LOG_LEVEL ?? process.env.LOG_LEVEL?.trim();
      if (!process.stderr.isTTY || level === 'debug' || level === 'trace') {
        const { createLogger } = await import('../logger.js');
        (this.appInstance?.logger ?? createLogger('error')).error({ err }, 'command failed');
      } else {
        report.message = report.message.replace(/\s+/g, ' ').trim();
        hint = ' (an unexpected error; run it again with LOG_LEVEL=debug for the details)';
      }
    } else {
      // An expected failure: its message is the operator's. What lies under it (PostgreSQL's own
      // detail of a refused change, say) is for LOG_LEVEL=debug.
      this.appInstance?.logger.debug({ err }, 'command refused');
    }
    if (this.jsonEnabled()) {
      this.logJson({ error: report });
      return;
    }
    // The log lines of this turn first (the logger writes them at its end): stderr keeps its order.
    const { flushLogs } = await import('../logger.js');
    flushLogs();
    // A message may quote what was typed or stored (an id, an email, a file's name): its control
    // characters are shown escaped, never run by the terminal. (--json output is JSON-escaped already.)
    const { escapeControlCharacters } = await import('../domain/shared/text.js');
    process.stderr.write(`Error: ${escapeControlCharacters(report.message)}${hint}\n`);
  }

  override async finally(err: Error | undefined): Promise<void> {
    try {
      await this.appInstance?.close();
    } finally {
      await super.finally(err);
    }
  }

  /**
   * Invalid input whose field is one of this command's flags names the flag as the operator typed it
   * (`--name: the name must not ...`): the services name fields, and a flag is named as its field.
   */
  private namingFlag(code: string, message: string, details: Record<string, unknown> | undefined): string {
    const field = details?.field;
    if (code !== 'invalid' || typeof field !== 'string' || !Object.hasOwn(this.ctor.flags ?? {}, field) || message.includes(`--${field}`)) return message;
    return `--${field}: ${message}`;
  }

  private async report(err: Error & { oclif?: { exit?: number } }): Promise<ErrorReport> {
    const { ConfigError } = await import('../config.js');
    const { DomainError } = await import('../domain/shared/errors.js');
    const { translateDatabaseError } = await import('../adapters/database.js');
    if (err instanceof ConfigError) {
      return { code: 'config', message: err.message, exitCode: EXIT.config, details: { key: err.key } };
    }
    const translated = translateDatabaseError(err);
    if (translated instanceof DomainError) {
      const e = translated;
      return { code: e.code, message: this.namingFlag(e.code, e.message, e.details), exitCode: exitCodeFor(e.code), details: e.details };
    }
    if (err instanceof Errors.CLIError && (err.oclif?.exit === 2 || err.name.includes('Parse') || /flag|argument/i.test(err.message))) {
      return { code: 'invalid', message: parseErrorMessage(err.message), exitCode: EXIT.invalid };
    }
    if (err instanceof Errors.ExitError) {
      return { code: 'exit', message: err.message, exitCode: err.oclif.exit ?? EXIT.internal };
    }
    return { code: 'internal', message: err.message || String(err), exitCode: EXIT.internal };
  }
}
