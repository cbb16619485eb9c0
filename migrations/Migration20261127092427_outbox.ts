import { Migration } from '@mikro-orm/migrations';

export class Migration20261127092427_outbox extends Migration {

  override name = 'Migration20261127092427_outbox';

  override up(): void | Promise<void> {
    this.addSql(`create table "outbox_events" ("id" varchar(30) not null, "type" varchar(80) not null, "aggregate_id" varchar(30) not null, "payload" jsonb not null, "traceparent" varchar(55) null, "status" text not null default 'pending', "attempts" int not null default 0, "available_at" timestamptz not null, "last_error" text null, "created_at" timestamptz not null, "published_at" timestamptz null, primary key ("id"));`);
    this.addSql(`create index "outbox_events_status_available_at_index" on "outbox_events" ("status", "available_at");`);
    this.addSql(`create index "outbox_events_published_at_index" on "outbox_events" ("published_at");`);
    this.addSql(`create index "outbox_events_aggregate_id_created_at_index" on "outbox_events" ("aggregate_id", "created_at");`);

    this.addSql(`alter table "outbox_events" add constraint "outbox_events_status_check" check ("status" in ('pending', 'published'));`);
  }

  override down(): void | Promise<void> {
    this.addSql(`drop table if exists "outbox_events" cascade;`);
  }

}
