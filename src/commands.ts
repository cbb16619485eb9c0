// Every svc command, by id. oclif loads this map (the "explicit" strategy) instead of scanning a
// folder, which lets the build bundle the commands. File path still equals command id.
import Config from './commands/config.js';
import KeysGenerate from './commands/keys/generate.js';
import Migrate from './commands/migrate.js';
import MigrateCheck from './commands/migrate/check.js';
import MigrateCreate from './commands/migrate/create.js';
import MigrateDown from './commands/migrate/down.js';
import MigrateStatus from './commands/migrate/status.js';
import Serve from './commands/serve.js';
import UsersApiKeysCreate from './commands/users/api-keys/create.js';
import UsersApiKeysList from './commands/users/api-keys/list.js';
import UsersApiKeysRevoke from './commands/users/api-keys/revoke.js';
import UsersCreate from './commands/users/create.js';
import UsersDisable from './commands/users/disable.js';
import UsersEnable from './commands/users/enable.js';
import UsersList from './commands/users/list.js';
import UsersSetRole from './commands/users/set-role.js';
import UsersShow from './commands/users/show.js';
import Worker from './commands/worker.js';

export const COMMANDS = {
  config: Config,
  'keys:generate': KeysGenerate,
  migrate: Migrate,
  'migrate:check': MigrateCheck,
  'migrate:create': MigrateCreate,
  'migrate:down': MigrateDown,
  'migrate:status': MigrateStatus,
  serve: Serve,
  'users:api-keys:create': UsersApiKeysCreate,
  'users:api-keys:list': UsersApiKeysList,
  'users:api-keys:revoke': UsersApiKeysRevoke,
  'users:create': UsersCreate,
  'users:disable': UsersDisable,
  'users:enable': UsersEnable,
  'users:list': UsersList,
  'users:set-role': UsersSetRole,
  'users:show': UsersShow,
  worker: Worker,
};
