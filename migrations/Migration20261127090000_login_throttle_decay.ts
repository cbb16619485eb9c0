import { Migration } from '@mikro-orm/migrations';

export class Migration20261127090000_login_throttle_decay extends Migration {

  override name = 'Migration20261127090000_login_throttle_decay';

  override up(): void | Promise<void> {
    // A decaying count of login attempts per email instead of failures in a fixed window: the count
    // is (drained_at - now) / 15 minutes. A count already on record carries over (up to the 5 that
    // lock), so an email locked before the upgrade stays locked after it.
    this.addSql(`alter table "login_throttles" add column "drained_at" timestamptz null;`);
    this.addSql(`update "login_throttles" set "drained_at" = "last_failed_at" + least("failures", 5) * interval '15 minutes';`);
    this.addSql(`alter table "login_throttles" alter column "drained_at" set not null;`);
    this.addSql(`alter table "login_throttles" drop column "failures", drop column "window_started_at", drop column "last_failed_at";`);
  }

  override down(): void | Promise<void> {
    // The old columns cannot be rebuilt from a decaying count: the counts start again (they are minutes long).
    this.addSql(`delete from "login_throttles";`);
    this.addSql(`alter table "login_throttles" drop column "drained_at";`);
    this.addSql(`alter table "login_throttles" add column "failures" int not null, add column "window_started_at" timestamptz not null, add column "last_failed_at" timestamptz not null;`);
  }

}
