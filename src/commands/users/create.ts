import { Flags } from '@oclif/core';
import { text } from 'node:stream/consumers';
import { SvcCommand } from '../../cli/base-command.js';
import { renderUser } from '../../cli/users-output.js';
import type { UserView } from '../../domain/users/users.service.js';

export default class UsersCreate extends SvcCommand {
  static override summary = 'Create a user.';
  static override description =
    'The email must be unique in any letter case. With --password-stdin the password (at least 12 characters) is read from ' +
    'standard input and stored as an argon2id hash; without it the user cannot log in with a password until one is set.';
  static override examples = [
    '<%= config.bin %> users create --email ada@example.com --name Ada --role admin',
    'printf \'%s\' "$PASSWORD" | <%= config.bin %> users create --email bob@example.com --name Bob --password-stdin --json',
  ];
  static override flags = {
    email: Flags.string({ summary: 'Email address (unique, any letter case).', required: true }),
    name: Flags.string({ summary: 'Display name.', required: true }),
    role: Flags.string({ summary: 'Role.', options: ['admin', 'user', 'guest'], default: 'user' }),
    'password-stdin': Flags.boolean({ summary: 'Read the password from standard input.' }),
  };

  /** Creates the user and prints it. */
  async run(): Promise<UserView> {
    const { flags } = await this.parse(UsersCreate);
    const password = flags['password-stdin'] ? (await text(process.stdin)).replace(/\r?\n$/, '') : undefined;
    const app = await this.app();
    const user = await app.users.create(await this.ctx(), { email: flags.email, name: flags.name, role: flags.role, password });
    this.print(renderUser(user));
    return user;
  }
}
