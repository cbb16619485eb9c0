import type { UserRole } from '../users/user.entity.js';

export type Permission = 'read' | 'write' | 'delete';

/** The brief's RBAC: admin read/write/delete, user read/write, guest read. */
export const PERMISSIONS: Record<UserRole, readonly Permission[]> = {
  admin: ['read', 'write', 'delete'],
  user: ['read', 'write'],
  guest: ['read'],
};

/** Who is calling the API: a user with an access token, or an API client with a key acting as its user. */
export interface Principal {
  kind: 'user' | 'api_key';
  userId: string;
  role: UserRole;
  /** `key_…` when authenticated with an API key. */
  keyId?: string;
}

/** Who is asking, for reads scoped to their owner: users see their own, admins see all. */
export type Viewer = Pick<Principal, 'userId' | 'role'>;

export const can = (principal: Principal, permission: Permission) => PERMISSIONS[principal.role].includes(permission);

/** The actor recorded in audit rows and logs: the API key when there is one, else the user. */
export const actorOf = (principal: Principal) => principal.keyId ?? principal.userId;
