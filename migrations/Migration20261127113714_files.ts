import { Migration } from '@mikro-orm/migrations';

export class Migration20261127113714_files extends Migration {

  override name = 'Migration20261127113714_files';

  override up(): void | Promise<void> {
    this.addSql(`create table "files" ("id" varchar(30) not null, "kind" text not null, "order_id" varchar(30) not null, "key" varchar(512) not null, "content_type" varchar(100) not null, "size" bigint not null, "sha256" varchar(64) not null, "created_at" timestamptz not null, primary key ("id"));`);
    this.addSql(`alter table "files" add constraint "files_key_unique" unique ("key");`);
    this.addSql(`alter table "files" add constraint "files_order_id_kind_unique" unique ("order_id", "kind");`);

    this.addSql(`alter table "files" add constraint "files_order_id_foreign" foreign key ("order_id") references "orders" ("id") on delete cascade;`);
    this.addSql(`alter table "files" add constraint "files_size_check" check (size >= 0);`);
    this.addSql(`alter table "files" add constraint "files_kind_check" check ("kind" in ('receipt'));`);
  }

  override down(): void | Promise<void> {
    this.addSql(`drop table if exists "files" cascade;`);
  }

}
