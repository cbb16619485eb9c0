import type { MigrationRun } from '../adapters/migrations.js';

interface Printer {
  log(message?: string): void;
  jsonEnabled(): boolean;
}

/** Human output of `svc migrate` and `svc migrate down`. */
export function printRun(cmd: Printer, run: MigrationRun): void {
  if (cmd.jsonEnabled()) return;
  const verb = run.direction === 'up' ? 'apply' : 'revert';
  if (run.dryRun) {
    if (run.migrations.length === 0) return cmd.log(`nothing to ${verb}`);
    for (const m of run.sql ?? []) {
      cmd.log(`-- ${m.name} (${run.direction})`);
      for (const s of m.statements) cmd.log(s.endsWith(';') ? s : `${s};`);
      cmd.log('');
    }
    cmd.log(`-- dry run: would ${verb} ${run.migrations.length} migration(s); nothing was changed`);
    return;
  }
  if (run.migrations.length === 0) return cmd.log(run.direction === 'up' ? 'the schema is up to date; nothing to apply' : 'nothing to revert');
  for (const name of run.migrations) cmd.log(`${run.direction === 'up' ? 'applied' : 'reverted'} ${name}`);
}
