import { Flags } from '@oclif/core';
import { SvcCommand } from '../../cli/base-command.js';
import type { MigrationRun } from '../../adapters/migrations.js';
import { printRun } from '../../cli/migrations-output.js';

export default class MigrateDown extends SvcCommand {
  static override summary = 'Revert the last applied migration, or every one after --to NAME.';
  static override description = 'Reverts in one transaction. With --to, the named migration stays applied and everything after it is reverted.';
  static override examples = [
    '<%= config.bin %> migrate down',
    '<%= config.bin %> migrate down --to Migration20261125000000_initial',
    '<%= config.bin %> migrate down --dry-run',
  ];
  static override flags = {
    to: Flags.string({ summary: 'Revert every migration applied after this one (which stays applied).' }),
    'dry-run': Flags.boolean({ summary: 'Print the SQL that would run, and revert nothing.' }),
    wait: Flags.integer({ summary: 'Seconds to wait for another running migration before giving up.', default: 300, min: 0, max: 86_400 }),
  };

  /** Reverts migrations. */
  async run(): Promise<MigrationRun> {
    const { flags } = await this.parse(MigrateDown);
    const app = await this.app();
    const result = await app.migrations.down({
      to: flags.to,
      dryRun: flags['dry-run'],
      waitMs: flags.wait * 1000,
      onWait: (holder) => this.logToStderr(`waiting for another migration to finish (${holder})…`),
    });
    printRun(this, result);
    return result;
  }
}
