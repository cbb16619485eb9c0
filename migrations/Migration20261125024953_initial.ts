import { Migration } from '@mikro-orm/migrations';

export class Migration20261125024953_initial extends Migration {

  override name = 'Migration20261125024953_initial';

  override up(): void | Promise<void> {
    this.addSql(`create table "audit_log" ("id" varchar(30) not null, "actor" varchar(120) not null, "action" varchar(80) not null, "target" varchar(120) not null, "details" jsonb not null default '{}', "trace_id" varchar(64) null, "created_at" timestamptz not null, primary key ("id"));`);
    this.addSql(`create index "audit_log_target_created_at_index" on "audit_log" ("target", "created_at");`);
    this.addSql(`create index "audit_log_created_at_index" on "audit_log" ("created_at");`);

    this.addSql(`create table "products" ("id" varchar(30) not null, "sku" varchar(64) not null, "name" varchar(200) not null, "price" bigint not null, "currency" varchar(3) not null, "stock" int not null default 0, "active" boolean not null default true, "created_at" timestamptz not null, "updated_at" timestamptz not null, primary key ("id"));`);
    this.addSql(`alter table "products" add constraint "products_sku_unique" unique ("sku");`);
    this.addSql(`create index "products_created_at_id_index" on "products" ("created_at", "id");`);

    this.addSql(`create table "users" ("id" varchar(30) not null, "email" varchar(254) not null, "name" varchar(200) not null, "role" text not null default 'user', "password_hash" varchar(255) null, "status" text not null default 'active', "created_at" timestamptz not null, "updated_at" timestamptz not null, primary key ("id"));`);
    this.addSql(`create index "users_created_at_id_index" on "users" ("created_at", "id");`);
    this.addSql(`create unique index "users_email_lower_unique" on "users" (lower("email"));`);

    this.addSql(`create table "orders" ("id" varchar(30) not null, "user_id" varchar(30) not null, "status" text not null default 'pending', "currency" varchar(3) not null, "total" bigint not null, "refunded_amount" bigint not null default '0', "created_at" timestamptz not null, "updated_at" timestamptz not null, primary key ("id"));`);
    this.addSql(`create index "orders_user_id_created_at_id_index" on "orders" ("user_id", "created_at", "id");`);
    this.addSql(`create index "orders_created_at_id_index" on "orders" ("created_at", "id");`);
    this.addSql(`create index "orders_status_index" on "orders" ("status");`);

    this.addSql(`create table "order_items" ("id" varchar(30) not null, "order_id" varchar(30) not null, "product_id" varchar(30) not null, "sku" varchar(64) not null, "name" varchar(200) not null, "unit_price" bigint not null, "quantity" int not null, primary key ("id"));`);
    this.addSql(`create index "order_items_order_id_index" on "order_items" ("order_id");`);
    this.addSql(`create index "order_items_product_id_index" on "order_items" ("product_id");`);

    this.addSql(`alter table "products" add constraint "products_price_check" check (price >= 0);`);
    this.addSql(`alter table "products" add constraint "products_stock_check" check (stock >= 0);`);

    this.addSql(`alter table "users" add constraint "users_role_check" check ("role" in ('admin', 'user', 'guest'));`);
    this.addSql(`alter table "users" add constraint "users_status_check" check ("status" in ('active', 'disabled'));`);

    this.addSql(`alter table "orders" add constraint "orders_user_id_foreign" foreign key ("user_id") references "users" ("id") on delete restrict;`);
    this.addSql(`alter table "orders" add constraint "orders_total_check" check (total >= 0);`);
    this.addSql(`alter table "orders" add constraint "orders_refunded_amount_check" check (refunded_amount >= 0 and refunded_amount <= total);`);
    this.addSql(`alter table "orders" add constraint "orders_status_check" check ("status" in ('pending', 'processing', 'completed', 'failed', 'cancelled', 'refunded'));`);

    this.addSql(`alter table "order_items" add constraint "order_items_order_id_foreign" foreign key ("order_id") references "orders" ("id") on delete cascade;`);
    this.addSql(`alter table "order_items" add constraint "order_items_product_id_foreign" foreign key ("product_id") references "products" ("id") on delete restrict;`);
    this.addSql(`alter table "order_items" add constraint "order_items_unit_price_check" check (unit_price >= 0);`);
    this.addSql(`alter table "order_items" add constraint "order_items_quantity_check" check (quantity > 0);`);
  }

  override down(): void | Promise<void> {
    this.addSql(`alter table "order_items" drop constraint "order_items_product_id_foreign";`);
    this.addSql(`alter table "orders" drop constraint "orders_user_id_foreign";`);
    this.addSql(`alter table "order_items" drop constraint "order_items_order_id_foreign";`);

    this.addSql(`drop table if exists "audit_log" cascade;`);
    this.addSql(`drop table if exists "products" cascade;`);
    this.addSql(`drop table if exists "users" cascade;`);
    this.addSql(`drop table if exists "orders" cascade;`);
    this.addSql(`drop table if exists "order_items" cascade;`);
  }

}
