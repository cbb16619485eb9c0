import { Args, Flags } from '@oclif/core';
import { SvcCommand } from '../../../cli/base-command.js';
import { renderRecord } from '../../../cli/render.js';
import type { CreatedApiKey } from '../../../domain/auth/api-keys.service.js';

export default class UsersApiKeysCreate extends SvcCommand {
  static override summary = 'Create an API key for a user and print its secret once.';
  static override description =
    'The key acts as its user, with that user\'s role, when sent as "Authorization: Bearer <secret>". Only a SHA-256 of the ' +
    'secret is stored: copy it now, it cannot be shown again. The creation is audited (api-key.created).';
  static override examples = [
    '<%= config.bin %> users api-keys create ada@example.com --name billing-sync',
    '<%= config.bin %> users api-keys create usr_01JD3X0000000000000000000 --json | jq -r .secret',
  ];
  static override args = { user: Args.string({ description: 'User id (usr_…) or email address the key acts as', required: true }) };
  static override flags = {
    name: Flags.string({ summary: 'What the key is for (1 to 100 characters).', default: 'default' }),
  };

  /** Creates the key and prints its secret with a warning that it will not be shown again. */
  async run(): Promise<CreatedApiKey> {
    const { args, flags } = await this.parse(UsersApiKeysCreate);
    const app = await this.app();
    const key = await app.apiKeys.create(await this.ctx(), { user: args.user, name: flags.name });
    this.print(renderRecord({ id: key.id, name: key.name, userId: key.userId, createdAt: key.createdAt }));
    this.print(`\nsecret: ${key.secret}\n\nCopy the secret now: it is not stored and will not be shown again.`);
    return key;
  }
}
