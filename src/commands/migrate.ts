import { Flags } from '@oclif/core';
import { SvcCommand } from '../cli/base-command.js';
import type { MigrationRun } from '../adapters/migrations.js';
import { printRun } from '../cli/migrations-output.js';

export default class Migrate extends SvcCommand {
  static override summary = 'Apply pending schema migrations.';
  static override description =
    'Applies every pending migration in one transaction: if one fails, none is applied and the schema stays as it was. ' +
    'On PostgreSQL an advisory lock makes a second `svc migrate` wait for the first (and then find nothing to do). ' +
    'Without DATABASE_URL it migrates the embedded database in SVC_DATA_DIR.';
  static override examples = [
    '<%= config.bin %> migrate',
    '<%= config.bin %> migrate --dry-run',
    'DATABASE_URL=postgres://svc@127.0.0.1/svc <%= config.bin %> migrate --json',
  ];
  static override flags = {
    'dry-run': Flags.boolean({ summary: 'Print the SQL the pending migrations would run, and apply nothing.' }),
    wait: Flags.integer({ summary: 'Seconds to wait for another running migration before giving up.', default: 300, min: 0, max: 86_400 }),
  };

  /** Applies pending migrations, or prints their SQL with --dry-run. */
  async run(): Promise<MigrationRun> {
    const { flags } = await this.parse(Migrate);
    const app = await this.app();
    const result = await app.migrations.up({
      dryRun: flags['dry-run'],
      waitMs: flags.wait * 1000,
      onWait: (holder) => this.logToStderr(`waiting for another migration to finish (${holder})…`),
    });
    printRun(this, result);
    return result;
  }
}
