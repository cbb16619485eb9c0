import { Migration } from '@mikro-orm/migrations';

export class Migration20261127113805_event_deliveries extends Migration {

  override name = 'Migration20261127113805_event_deliveries';

  override up(): void | Promise<void> {
    this.addSql(`create table "event_deliveries" ("id" varchar(30) not null, "consumer" varchar(60) not null, "message_id" varchar(64) not null, "body" text not null, "status" text not null default 'pending', "attempts" int not null default 0, "unsettled" int not null default 0, "available_at" timestamptz not null, "lease_owner" varchar(60) null, "last_error" text null, "first_failed_at" timestamptz null, "dead_at" timestamptz null, "created_at" timestamptz not null, primary key ("id"));`);
    this.addSql(`create index "event_deliveries_consumer_status_available_at_index" on "event_deliveries" ("consumer", "status", "available_at");`);
    this.addSql(`alter table "event_deliveries" add constraint "event_deliveries_consumer_message_id_unique" unique ("consumer", "message_id");`);

    this.addSql(`alter table "event_deliveries" add constraint "event_deliveries_status_check" check ("status" in ('pending', 'dead'));`);
  }

  override down(): void | Promise<void> {
    this.addSql(`drop table if exists "event_deliveries" cascade;`);
  }

}
