import { SvcCommand } from '../../cli/base-command.js';
import { userArg } from '../../cli/user-arg.js';
import { renderUser } from '../../cli/users-output.js';
import type { UserView } from '../../domain/users/users.service.js';

export default class UsersEnable extends SvcCommand {
  static override summary = 'Enable a disabled user again (audited).';
  static override examples = ['<%= config.bin %> users enable ada@example.com', '<%= config.bin %> users enable usr_01JD3X0000000000000000000 --json'];
  static override args = { user: userArg };

  /** Sets the user's status to active and prints the user. */
  async run(): Promise<UserView> {
    const { args } = await this.parse(UsersEnable);
    const app = await this.app();
    const user = await app.users.setStatus(await this.ctx(), args.user, 'active');
    this.print(renderUser(user));
    return user;
  }
}
