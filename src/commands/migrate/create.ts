import { Args, Flags } from '@oclif/core';
import { SvcCommand } from '../../cli/base-command.js';

export default class MigrateCreate extends SvcCommand {
  static override summary = 'Write a new migration from the difference between the entities and the database (for developers).';
  static override description =
    'Compares the entities with the schema of the database you point it at (apply pending migrations first), and writes ' +
    'the SQL that closes the gap into migrations/<timestamp>_NAME.ts. Review it, then commit it.';
  static override examples = ['<%= config.bin %> migrate create add-refunds', '<%= config.bin %> migrate create backfill-totals --blank'];
  static override args = {
    name: Args.string({ description: 'What the migration does, in a few words joined by - or _', required: true }),
  };
  static override flags = {
    blank: Flags.boolean({ summary: 'Write an empty migration to fill in by hand.' }),
  };

  /** Generates a migration file. */
  async run(): Promise<{ file: string; statements: string[] }> {
    const { args, flags } = await this.parse(MigrateCreate);
    const app = await this.app();
    const result = await app.migrations.create(args.name, { blank: flags.blank });
    this.print(`wrote ${result.file} (${result.statements.length} statement(s)); review it, then commit it`);
    return result;
  }
}
