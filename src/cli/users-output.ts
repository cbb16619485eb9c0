import type { UserView } from '../domain/users/users.service.js';
import { renderRecord, renderTable } from './render.js';

/** One user as a two-column table. */
export const renderUser = (u: UserView) => renderRecord({ ...u });

/** Users as a table, one row each. */
export const renderUsers = (users: UserView[]) =>
  renderTable(users, [
    { header: 'id', get: (u) => u.id },
    { header: 'email', get: (u) => u.email },
    { header: 'name', get: (u) => u.name },
    { header: 'role', get: (u) => u.role },
    { header: 'status', get: (u) => u.status },
    { header: 'created', get: (u) => u.createdAt },
  ]);
