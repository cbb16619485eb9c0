import { Migration } from '@mikro-orm/migrations';

export class Migration20261125062752_login_throttles extends Migration {

  override name = 'Migration20261125062752_login_throttles';

  override up(): void | Promise<void> {
    this.addSql(`create table "login_throttles" ("key" varchar(64) not null, "failures" int not null, "window_started_at" timestamptz not null, "last_failed_at" timestamptz not null, primary key ("key"));`);
  }

  override down(): void | Promise<void> {
    this.addSql(`drop table if exists "login_throttles" cascade;`);
  }

}
