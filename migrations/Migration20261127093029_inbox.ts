import { Migration } from '@mikro-orm/migrations';

export class Migration20261127093029_inbox extends Migration {

  override name = 'Migration20261127093029_inbox';

  override up(): void | Promise<void> {
    this.addSql(`create table "processed_messages" ("consumer" varchar(60) not null, "message_id" varchar(64) not null, "processed_at" timestamptz not null, primary key ("consumer", "message_id"));`);
    this.addSql(`create index "processed_messages_processed_at_index" on "processed_messages" ("processed_at");`);
  }

  override down(): void | Promise<void> {
    this.addSql(`drop table if exists "processed_messages" cascade;`);
  }

}
