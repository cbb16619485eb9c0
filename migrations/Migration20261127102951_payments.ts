import { Migration } from '@mikro-orm/migrations';

export class Migration20261127102951_payments extends Migration {

  override name = 'Migration20261127102951_payments';

  override up(): void | Promise<void> {
    this.addSql(`create table "payments" ("id" varchar(30) not null, "order_id" varchar(30) not null, "attempt" int not null, "idempotency_key" varchar(100) not null, "status" text not null default 'pending', "amount" bigint not null, "currency" varchar(3) not null, "provider" varchar(30) not null, "provider_reference" varchar(255) null, "failure_code" varchar(100) null, "failure_reason" varchar(1000) null, "created_at" timestamptz not null, "updated_at" timestamptz not null, primary key ("id"));`);
    this.addSql(`alter table "payments" add constraint "payments_idempotency_key_unique" unique ("idempotency_key");`);
    this.addSql(`alter table "payments" add constraint "payments_order_id_attempt_unique" unique ("order_id", "attempt");`);

    this.addSql(`alter table "payments" add constraint "payments_order_id_foreign" foreign key ("order_id") references "orders" ("id") on delete cascade;`);
    this.addSql(`alter table "payments" add constraint "payments_attempt_check" check (attempt > 0);`);
    this.addSql(`alter table "payments" add constraint "payments_amount_check" check (amount >= 0);`);
    this.addSql(`alter table "payments" add constraint "payments_status_check" check ("status" in ('pending', 'succeeded', 'declined', 'unknown'));`);
  }

  override down(): void | Promise<void> {
    this.addSql(`drop table if exists "payments" cascade;`);
  }

}
