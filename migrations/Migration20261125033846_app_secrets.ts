import { Migration } from '@mikro-orm/migrations';

export class Migration20261125033846_app_secrets extends Migration {

  override name = 'Migration20261125033846_app_secrets';

  override up(): void | Promise<void> {
    this.addSql(`create table "app_secrets" ("name" varchar(40) not null, "value" varchar(128) not null, "created_at" timestamptz not null, primary key ("name"));`);
    // The cursor signing key: 244 bits from PostgreSQL's strong random source (two v4 UUIDs).
    this.addSql(`insert into "app_secrets" ("name", "value", "created_at") values ('cursor', replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), now());`);
  }

  override down(): void | Promise<void> {
    this.addSql(`drop table if exists "app_secrets" cascade;`);
  }

}
