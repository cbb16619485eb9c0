import { SvcCommand } from '../cli/base-command.js';
import { renderTable } from '../cli/render.js';
import type { ConfigEntry } from '../config.js';

export interface ConfigResult {
  file: string | null;
  values: ConfigEntry[];
}

export default class ConfigCommand extends SvcCommand {
  static override summary = 'Print the effective configuration, secrets masked, with where each value came from.';
  static override description =
    'Reads the environment, then the JSON file named by SVC_CONFIG, then defaults, and validates every key. ' +
    'A value that does not parse fails here the same way it fails at start-up. A secret read from the file named by ' +
    '<KEY>_FILE shows that file as its source.';
  static override examples = ['<%= config.bin %> config', 'DATABASE_URL=postgres://svc@127.0.0.1/svc <%= config.bin %> config --json'];

  /** Shows every configuration key's value and source. */
  async run(): Promise<ConfigResult> {
    await this.parse(ConfigCommand);
    const { describeConfig } = await import('../config.js');
    const config = await this.loadConfig();
    const result = { file: config.file ?? null, values: describeConfig(config) };
    this.print(
      renderTable(
        result.values,
        [
          { header: 'key', get: (e) => e.key },
          { header: 'value', get: (e) => (e.value === null ? '(unset)' : e.value) },
          // A secret read through <KEY>_FILE names its file: which mounted secret is in use.
          { header: 'source', get: (e) => (e.secretFile ? `file ${e.secretFile}` : e.source) },
          { header: 'description', get: (e) => e.doc },
        ],
        { width: process.stdout.isTTY ? process.stdout.columns : undefined },
      ),
    );
    if (result.file) this.print(`config file: ${result.file}`);
    return result;
  }
}
