import { SvcCommand } from '../../cli/base-command.js';
import { userArg } from '../../cli/user-arg.js';
import { renderUser } from '../../cli/users-output.js';
import type { UserView } from '../../domain/users/users.service.js';

export default class UsersShow extends SvcCommand {
  static override summary = 'Show one user by id or email.';
  static override examples = ['<%= config.bin %> users show ada@example.com', '<%= config.bin %> users show usr_01JD3X0000000000000000000 --json'];
  static override args = { user: userArg };

  /** Prints the user. */
  async run(): Promise<UserView> {
    const { args } = await this.parse(UsersShow);
    const app = await this.app();
    const user = await app.users.get(await this.ctx(), args.user);
    this.print(renderUser(user));
    return user;
  }
}
