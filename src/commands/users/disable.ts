import { SvcCommand } from '../../cli/base-command.js';
import { userArg } from '../../cli/user-arg.js';
import { renderUser } from '../../cli/users-output.js';
import type { UserView } from '../../domain/users/users.service.js';

export default class UsersDisable extends SvcCommand {
  static override summary = 'Disable a user (audited); they can no longer log in.';
  static override examples = ['<%= config.bin %> users disable ada@example.com', '<%= config.bin %> users disable usr_01JD3X0000000000000000000 --json'];
  static override args = { user: userArg };

  /** Sets the user's status to disabled and prints the user. */
  async run(): Promise<UserView> {
    const { args } = await this.parse(UsersDisable);
    const app = await this.app();
    const user = await app.users.setStatus(await this.ctx(), args.user, 'disabled');
    this.print(renderUser(user));
    return user;
  }
}
