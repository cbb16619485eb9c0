import { Migration } from '@mikro-orm/migrations';

export class Migration20261125025914_auth_and_idempotency extends Migration {

  override name = 'Migration20261125025914_auth_and_idempotency';

  override up(): void | Promise<void> {
    this.addSql(`create table "idempotency_keys" ("principal" varchar(60) not null, "key" varchar(255) not null, "request_hash" varchar(64) not null, "status_code" int not null, "response_body" jsonb not null, "created_at" timestamptz not null, "expires_at" timestamptz not null, primary key ("principal", "key"));`);
    this.addSql(`create index "idempotency_keys_expires_at_index" on "idempotency_keys" ("expires_at");`);

    this.addSql(`create table "refresh_tokens" ("id" varchar(30) not null, "user_id" varchar(30) not null, "family_id" varchar(30) not null, "token_hash" varchar(64) not null, "expires_at" timestamptz not null, "used_at" timestamptz null, "revoked_at" timestamptz null, "created_at" timestamptz not null, primary key ("id"));`);
    this.addSql(`create index "refresh_tokens_user_id_index" on "refresh_tokens" ("user_id");`);
    this.addSql(`create index "refresh_tokens_family_id_index" on "refresh_tokens" ("family_id");`);
    this.addSql(`alter table "refresh_tokens" add constraint "refresh_tokens_token_hash_unique" unique ("token_hash");`);

    this.addSql(`create table "api_keys" ("id" varchar(30) not null, "user_id" varchar(30) not null, "name" varchar(100) not null, "secret_hash" varchar(64) not null, "created_at" timestamptz not null, "last_used_at" timestamptz null, "revoked_at" timestamptz null, primary key ("id"));`);
    this.addSql(`create index "api_keys_user_id_index" on "api_keys" ("user_id");`);

    this.addSql(`alter table "refresh_tokens" add constraint "refresh_tokens_user_id_foreign" foreign key ("user_id") references "users" ("id") on delete cascade;`);

    this.addSql(`alter table "api_keys" add constraint "api_keys_user_id_foreign" foreign key ("user_id") references "users" ("id") on delete cascade;`);
  }

  override down(): void | Promise<void> {
    this.addSql(`drop table if exists "idempotency_keys" cascade;`);
    this.addSql(`drop table if exists "refresh_tokens" cascade;`);
    this.addSql(`drop table if exists "api_keys" cascade;`);
  }

}
