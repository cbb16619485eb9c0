import { SvcCommand } from '../../cli/base-command.js';
import { EXIT } from '../../cli/exit-codes.js';
import type { SchemaCheck } from '../../adapters/migrations.js';

export default class MigrateCheck extends SvcCommand {
  static override summary = 'Exit non-zero (8) when the entities and the database schema disagree, printing the difference.';
  static override description =
    'Run it in CI after `svc migrate`: a difference means an entity changed without a migration, or a migration is not applied. ' +
    'The difference is printed as the SQL that would bring the database to the entities.';
  static override examples = ['<%= config.bin %> migrate check', '<%= config.bin %> migrate check --json'];

  /** Compares entities and schema. */
  async run(): Promise<SchemaCheck> {
    await this.parse(MigrateCheck);
    const app = await this.app();
    const result = await app.migrations.check();
    if (result.inSync) {
      this.print('the database schema matches the entities');
    } else {
      this.print(`the database schema differs from the entities; this SQL would reconcile them:\n${result.difference.join('\n')}`);
      process.exitCode = EXIT.checkFailed;
    }
    return result;
  }
}
