import { Migration } from '@mikro-orm/migrations';

export class Migration20261127130000_user_list_indexes extends Migration {

  override name = 'Migration20261127130000_user_list_indexes';

  override up(): void | Promise<void> {
    this.addSql(`create index "users_role_created_at_id_index" on "users" ("role", "created_at", "id");`);
    this.addSql(`create index "users_status_created_at_id_index" on "users" ("status", "created_at", "id");`);
  }

  override down(): void | Promise<void> {
    this.addSql(`drop index "users_role_created_at_id_index";`);
    this.addSql(`drop index "users_status_created_at_id_index";`);
  }

}
