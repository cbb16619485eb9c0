import { Args } from '@oclif/core';
import { SvcCommand } from '../../cli/base-command.js';
import { userArg } from '../../cli/user-arg.js';
import { renderUser } from '../../cli/users-output.js';
import type { UserView } from '../../domain/users/users.service.js';

export default class UsersSetRole extends SvcCommand {
  static override summary = "Change a user's role (audited).";
  static override examples = [
    '<%= config.bin %> users set-role ada@example.com admin',
    '<%= config.bin %> users set-role usr_01JD3X0000000000000000000 guest --json',
  ];
  static override args = {
    user: userArg,
    role: Args.string({ description: 'The new role', options: ['admin', 'user', 'guest'], required: true }),
  };

  /** Sets the role and prints the user. */
  async run(): Promise<UserView> {
    const { args } = await this.parse(UsersSetRole);
    const app = await this.app();
    const user = await app.users.setRole(await this.ctx(), args.user, args.role);
    this.print(renderUser(user));
    return user;
  }
}
