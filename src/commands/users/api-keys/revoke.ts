import { Args } from '@oclif/core';
import { SvcCommand } from '../../../cli/base-command.js';
import { renderRecord } from '../../../cli/render.js';
import type { ApiKeyView } from '../../../domain/auth/api-keys.service.js';

export default class UsersApiKeysRevoke extends SvcCommand {
  static override summary = 'Revoke an API key: it stops authenticating at once.';
  static override description = 'Audited (api-key.revoked). Revoking a key that is already revoked changes nothing and succeeds.';
  static override examples = [
    '<%= config.bin %> users api-keys revoke key_01JD3X0000000000000000000',
    '<%= config.bin %> users api-keys revoke key_01JD3X0000000000000000000 --json',
  ];
  static override args = { keyId: Args.string({ name: 'KEY_ID', description: 'The key id (key_…), as `svc users api-keys list` shows it', required: true }) };

  /** Revokes the key and prints it. */
  async run(): Promise<ApiKeyView> {
    const { args } = await this.parse(UsersApiKeysRevoke);
    const app = await this.app();
    const key = await app.apiKeys.revoke(await this.ctx(), args.keyId);
    this.print(renderRecord({ ...key }));
    return key;
  }
}
