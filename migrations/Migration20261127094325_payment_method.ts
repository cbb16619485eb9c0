import { Migration } from '@mikro-orm/migrations';

export class Migration20261127094325_payment_method extends Migration {

  override name = 'Migration20261127094325_payment_method';

  override up(): void | Promise<void> {
    this.addSql(`alter table "orders" add "payment_method" varchar(120) null;`);
  }

  override down(): void | Promise<void> {
    this.addSql(`alter table "orders" drop column "payment_method";`);
  }

}
