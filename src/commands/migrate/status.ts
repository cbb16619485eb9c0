import { SvcCommand } from '../../cli/base-command.js';
import { renderTable } from '../../cli/render.js';
import type { MigrationStatus } from '../../adapters/migrations.js';

export default class MigrateStatus extends SvcCommand {
  static override summary = 'List applied migrations (with times) and pending ones.';
  static override examples = ['<%= config.bin %> migrate status', '<%= config.bin %> migrate status --json'];

  /** Shows which migrations are applied and which are pending. */
  async run(): Promise<MigrationStatus> {
    await this.parse(MigrateStatus);
    const app = await this.app();
    const status = await app.migrations.status();
    const rows = [
      ...status.applied.map((m) => ({ name: m.name, state: 'applied', at: m.executedAt })),
      ...status.pending.map((m) => ({ name: m.name, state: 'pending', at: '' })),
    ];
    this.print(
      renderTable(rows, [
        { header: 'migration', get: (r) => r.name },
        { header: 'state', get: (r) => r.state },
        { header: 'applied at', get: (r) => r.at },
      ]),
    );
    this.print(`${status.applied.length} applied, ${status.pending.length} pending`);
    return status;
  }
}
