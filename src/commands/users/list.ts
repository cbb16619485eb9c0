import { Flags } from '@oclif/core';
import { SvcCommand } from '../../cli/base-command.js';
import { renderUsers } from '../../cli/users-output.js';
import type { Page } from '../../domain/shared/pagination.js';
import type { UserView } from '../../domain/users/users.service.js';

export default class UsersList extends SvcCommand {
  static override summary = 'List users, newest first, a page at a time.';
  static override description =
    'Prints a table, or with --json the page as {"data": [...], "pagination": {"cursor": ..., "hasMore": ...}}. ' +
    'Pass the cursor to --after for the next page.';
  static override examples = [
    '<%= config.bin %> users list',
    '<%= config.bin %> users list --role admin --status active',
    '<%= config.bin %> users list --search example.com --limit 50 --json',
    '<%= config.bin %> users list --after <cursor from the previous page>',
  ];
  static override flags = {
    role: Flags.string({ summary: 'Only users with this role.', options: ['admin', 'user', 'guest'] }),
    status: Flags.string({ summary: 'Only users with this status.', options: ['active', 'disabled'] }),
    search: Flags.string({ summary: 'Only users whose email or name contains this text (any case).' }),
    limit: Flags.integer({ summary: 'Users per page.', default: 20, min: 1, max: 100 }),
    after: Flags.string({ summary: 'The cursor of the previous page.' }),
  };

  /** Lists one page of users. */
  async run(): Promise<Page<UserView>> {
    const { flags } = await this.parse(UsersList);
    const app = await this.app();
    const page = await app.users.list(await this.ctx(), flags);
    this.print(renderUsers(page.data));
    this.print(page.pagination.hasMore ? `more: --after ${page.pagination.cursor}` : `${page.data.length} user(s)`);
    return page;
  }
}
