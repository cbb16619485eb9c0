import { Migration } from '@mikro-orm/migrations';

export class Migration20261127113813_stripe_webhooks extends Migration {

  override name = 'Migration20261127113813_stripe_webhooks';

  override up(): void | Promise<void> {
    this.addSql(`create table "stripe_events" ("id" varchar(255) not null, "type" varchar(100) not null, "order_id" varchar(30) null, "outcome" varchar(30) null, "created_at" timestamptz not null, "received_at" timestamptz not null, "processed_at" timestamptz null, primary key ("id"));`);
    this.addSql(`create index "stripe_events_order_id_index" on "stripe_events" ("order_id");`);
    this.addSql(`create index "stripe_events_received_at_index" on "stripe_events" ("received_at");`);

    this.addSql(`create table "order_disputes" ("id" varchar(255) not null, "order_id" varchar(30) not null, "charge_id" varchar(255) null, "amount" bigint not null, "currency" varchar(3) not null, "reason" varchar(100) not null, "status" varchar(50) not null, "status_at" timestamptz not null, "created_at" timestamptz not null, "updated_at" timestamptz not null, primary key ("id"));`);
    this.addSql(`create index "order_disputes_order_id_index" on "order_disputes" ("order_id");`);

    this.addSql(`create index "payments_provider_reference_index" on "payments" ("provider_reference");`);

    this.addSql(`alter table "order_disputes" add constraint "order_disputes_order_id_foreign" foreign key ("order_id") references "orders" ("id") on delete cascade;`);
    this.addSql(`alter table "order_disputes" add constraint "order_disputes_amount_check" check (amount >= 0);`);
  }

  override down(): void | Promise<void> {
    this.addSql(`drop table if exists "stripe_events" cascade;`);
    this.addSql(`drop table if exists "order_disputes" cascade;`);

    this.addSql(`drop index "payments_provider_reference_index";`);
  }

}
