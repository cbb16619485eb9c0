import { Migration } from '@mikro-orm/migrations';

export class Migration20261128070000_payment_sent_at extends Migration {

  override name = 'Migration20261128070000_payment_sent_at';

  override up(): void | Promise<void> {
    this.addSql(`alter table "payments" add column "sent_at" timestamptz null;`);
  }

  override down(): void | Promise<void> {
    this.addSql(`alter table "payments" drop column "sent_at";`);
  }

}
