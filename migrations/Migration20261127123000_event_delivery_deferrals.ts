import { Migration } from '@mikro-orm/migrations';

export class Migration20261127123000_event_delivery_deferrals extends Migration {

  override name = 'Migration20261127123000_event_delivery_deferrals';

  override up(): void | Promise<void> {
    this.addSql(`alter table "event_deliveries" add "deferrals" int not null default 0, add "first_deferred_at" timestamptz null;`);
  }

  override down(): void | Promise<void> {
    this.addSql(`alter table "event_deliveries" drop column "deferrals", drop column "first_deferred_at";`);
  }

}
