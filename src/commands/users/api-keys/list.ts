import { Args } from '@oclif/core';
import { SvcCommand } from '../../../cli/base-command.js';
import { renderTable } from '../../../cli/render.js';
import type { ApiKeyView } from '../../../domain/auth/api-keys.service.js';

export default class UsersApiKeysList extends SvcCommand {
  static override summary = 'List API keys (never their secrets), newest first.';
  static override description = "Every key, or one user's, with its status and when it was last used (updated at most once a minute).";
  static override examples = ['<%= config.bin %> users api-keys list', '<%= config.bin %> users api-keys list ada@example.com --json'];
  static override args = { user: Args.string({ description: "Only this user's keys: id (usr_…) or email address" }) };

  /** Lists the keys. */
  async run(): Promise<ApiKeyView[]> {
    const { args } = await this.parse(UsersApiKeysList);
    const app = await this.app();
    const keys = await app.apiKeys.list(await this.ctx(), { user: args.user });
    this.print(
      renderTable(keys, [
        { header: 'id', get: (k) => k.id },
        { header: 'name', get: (k) => k.name },
        { header: 'user', get: (k) => k.userId },
        { header: 'status', get: (k) => k.status },
        { header: 'created', get: (k) => k.createdAt },
        { header: 'last used', get: (k) => k.lastUsedAt },
      ]),
    );
    this.print(`${keys.length} key(s)`);
    return keys;
  }
}
