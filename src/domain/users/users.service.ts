import { LockMode, sql, UniqueConstraintViolationException } from '@mikro-orm/core';
import type { SqlEntityManager } from '@mikro-orm/sql';
import type { Ctx } from '../shared/context.js';
import { conflict, invalid, notFound, type DomainError } from '../shared/errors.js';
import { versions } from '../shared/cache.js';
import { afterCursor, pageLimit, toPage, type Page } from '../shared/pagination.js';
import { checkName, refuseControlCharacters } from '../shared/text.js';
import { audit } from '../audit/audit.js';
import { passwordProblem, type PasswordHasher } from './password.js';
import { Order } from '../orders/order.entity.js';
import { User, USER_ROLES, USER_STATUSES, type UserRole, type UserStatus } from './user.entity.js';

/** A user as operators and clients see it: never the password hash. */
export interface UserView {
  id: string;
  email: string;
  name: string;
  role: UserRole;
  status: UserStatus;
  createdAt: string;
  updatedAt: string;
}

export interface CreateUserInput {
  email: string;
  name: string;
  role?: string;
  password?: string;
}

export interface ListUsersInput {
  role?: string;
  status?: string;
  search?: string;
  limit?: number;
  /** Cursor from `svc users list --after`; a bad one is reported as the field `after`. */
  after?: string;
  /** Cursor from the API's `?cursor=`; a bad one is reported as the field `cursor`. */
  cursor?: string;
}

export interface UpdateUserInput {
  name?: string;
  role?: string;
  status?: string;
  /** The user making the change (an admin through the API): they may not demote or disable themselves. */
  actingUserId?: string;
}

export const toUserView = (u: User): UserView => ({
  id: u.id,
  email: u.email,
  name: u.name,
  role: u.role,
  status: u.status,
  createdAt: u.createdAt.toISOString(),
  updatedAt: u.updatedAt.toISOString(),
});

// Deliberately simple: one @, a dot in the domain, no spaces. Deliverability is checked by sending mail.
// The view of a changed user is taken after its UPDATE: updatedAt is set by the flush, and a view
// taken before it would show the time of the previous change.
async function flushed(tx: Ctx, user: User): Promise<User> {
  await tx.em.flush();
  return user;
}

const EMAIL = /^[^\s@]{1,64}@[^\s@]+\.[^\s@]{2,}$/;

function checkEmail(raw: string): string {
  // An email is stored and listed to operators; checked first, so the form's refusal below never quotes a control character.
  refuseControlCharacters(raw, 'email');
  const email = raw.trim();
  if (!EMAIL.test(email) || email.length > 254) {
    throw invalid(`"${raw}" is not an email address (expected name@example.com)`, { field: 'email' });
  }
  return email;
}

function checkRole(raw: string): UserRole {
  if (!(USER_ROLES as readonly string[]).includes(raw)) {
    throw invalid(`"${raw}" is not a role; expected one of ${USER_ROLES.join(', ')}`, { field: 'role' });
  }
  return raw as UserRole;
}

function checkStatus(raw: string): UserStatus {
  if (!(USER_STATUSES as readonly string[]).includes(raw)) {
    throw invalid(`"${raw}" is not a status; expected one of ${USER_STATUSES.join(', ')}`, { field: 'status' });
  }
  return raw as UserStatus;
}

const byEmail = (email: string) => ({ [sql`lower(email)`]: email.toLowerCase() });

/** The conflict a taken email answers, given the account that holds it (when known): whom it names depends on who asks. */
type TakenEmail = (email: string, holderId: string | undefined) => DomainError;

// Operators (svc users create) may know which account holds the email.
const takenForOperator: TakenEmail = (email, holderId) =>
  holderId
    ? conflict(`a user with email ${email} already exists (${holderId})`, { field: 'email', userId: holderId })
    : conflict(`a user with email ${email} already exists`, { field: 'email' });

// Someone signing up learns that the email is taken, which they need to know, and nothing more.
const takenForSignUp: TakenEmail = () => conflict('an account with this email already exists; log in, or register with another email', { field: 'email' });

/** User accounts: creation, lookup, listing, roles and status, each write audited. */
export class UsersService {
  constructor(private readonly passwords: PasswordHasher) {}

  /** Creates a user for an operator; a taken email (in any letter case) is a conflict naming the account that has it. */
  async create(ctx: Ctx, input: CreateUserInput): Promise<UserView> {
    return this.insert(ctx, input, takenForOperator);
  }

  /** Creates an account with the user role for someone signing up themselves; a taken email is a conflict that names no account. */
  async signUp(ctx: Ctx, input: { email: string; name: string; password: string }): Promise<UserView> {
    return this.insert(ctx, { ...input, role: 'user' }, takenForSignUp);
  }

  private async insert(ctx: Ctx, input: CreateUserInput, taken: TakenEmail): Promise<UserView> {
    const email = checkEmail(input.email);
    const name = checkName(input.name);
    const role = checkRole(input.role ?? 'user');
    if (input.password !== undefined) {
      const problem = passwordProblem(input.password);
      if (problem) throw invalid(problem, { field: 'password' });
    }
    // The cheap checks come first: a taken email costs no password hash (19 MiB and a tenth of a second).
    const holder = await ctx.em.findOne(User, byEmail(email), { fields: ['id'] });
    if (holder) throw taken(email, holder.id);
    const passwordHash = input.password === undefined ? null : await this.passwords.hash(input.password);
    try {
      return await ctx.transaction(async (tx) => {
        const user = tx.em.create(User, { email, name, role, passwordHash, status: 'active' });
        await audit(tx, 'user.created', user.id, { email, role });
        return toUserView(user);
      });
    } catch (err) {
      // Taken by a concurrent registration since the check above: the unique index on lower(email) decides.
      if (err instanceof UniqueConstraintViolationException) {
        const winner = await ctx.em.findOne(User, byEmail(email), { fields: ['id'] });
        throw taken(email, winner?.id);
      }
      throw err;
    }
  }

  /** Finds a user by id (`usr_…`) or email (any letter case). */
  async get(ctx: Ctx, idOrEmail: string): Promise<UserView> {
    return toUserView(await this.find(ctx.em, idOrEmail));
  }

  /** Lists users newest first, filtered, one cursor page at a time. */
  async list(ctx: Ctx, input: ListUsersInput = {}): Promise<Page<UserView>> {
    const limit = pageLimit(input.limit);
    const where: Record<string, unknown>[] = [];
    if (input.role !== undefined) where.push({ role: checkRole(input.role) });
    if (input.status !== undefined) where.push({ status: checkStatus(input.status) });
    let search: string | undefined;
    if (input.search !== undefined && input.search.trim() !== '') {
      refuseControlCharacters(input.search, 'search');
      search = input.search.trim();
      const term = `%${search.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
      where.push({ $or: [{ email: { $ilike: term } }, { name: { $ilike: term } }] });
    }
    const scope = { list: 'users', filters: { role: input.role, status: input.status, search } };
    const cursors = await ctx.cursors();
    if (input.after !== undefined) where.push(afterCursor(cursors.decode(input.after, scope, 'after')));
    if (input.cursor !== undefined) where.push(afterCursor(cursors.decode(input.cursor, scope, 'cursor')));
    const rows = await ctx.em.find(User, where.length ? { $and: where } : {}, {
      orderBy: { createdAt: 'desc', id: 'desc' },
      limit: limit + 1,
    });
    return toPage(rows, limit, toUserView, cursors, scope, (user) => user);
  }

  /** Changes a user's role; setting the role they already have changes nothing. */
  async setRole(ctx: Ctx, idOrEmail: string, roleInput: string): Promise<UserView> {
    const role = checkRole(roleInput);
    return ctx.transaction(async (tx) => {
      const user = await this.find(tx.em, idOrEmail, true);
      if (user.role !== role) {
        const from = user.role;
        user.role = role;
        await audit(tx, 'user.role-changed', user.id, { from, to: role });
      }
      // Even unchanged: running the command again tells the instances a change they missed.
      await tx.changed(versions.user(user.id));
      return toUserView(await flushed(tx, user));
    });
  }

  /** Disables or re-enables a user; a user already in that status is left as is. */
  async setStatus(ctx: Ctx, idOrEmail: string, statusInput: string): Promise<UserView> {
    const status = checkStatus(statusInput);
    return ctx.transaction(async (tx) => {
      const user = await this.find(tx.em, idOrEmail, true);
      if (user.status !== status) {
        user.status = status;
        await audit(tx, status === 'disabled' ? 'user.disabled' : 'user.enabled', user.id);
      }
      // Even unchanged: running the command again tells the instances a change they missed.
      await tx.changed(versions.user(user.id));
      return toUserView(await flushed(tx, user));
    });
  }

  /** Changes a user's name, role and/or status in one audited transaction; unchanged fields write nothing. */
  async update(ctx: Ctx, idOrEmail: string, input: UpdateUserInput): Promise<UserView> {
    const name = input.name === undefined ? undefined : checkName(input.name);
    const role = input.role === undefined ? undefined : checkRole(input.role);
    const status = input.status === undefined ? undefined : checkStatus(input.status);
    return ctx.transaction(async (tx) => {
      const user = await this.find(tx.em, idOrEmail, true);
      const self = input.actingUserId !== undefined && input.actingUserId === user.id;
      if (self && role !== undefined && role !== user.role) {
        throw conflict(`you cannot change your own role (${user.role}); ask another admin to do it`, { field: 'role' });
      }
      if (self && status === 'disabled' && user.status !== 'disabled') {
        throw conflict('you cannot disable your own account; ask another admin to do it', { field: 'status' });
      }
      if (name !== undefined && name !== user.name) {
        await audit(tx, 'user.renamed', user.id, { from: user.name, to: name });
        user.name = name;
      }
      if (role !== undefined && role !== user.role) {
        await audit(tx, 'user.role-changed', user.id, { from: user.role, to: role });
        user.role = role;
      }
      if (status !== undefined && status !== user.status) {
        await audit(tx, status === 'disabled' ? 'user.disabled' : 'user.enabled', user.id);
        user.status = status;
      }
      // Authentication reads the role and status through the cache (UserStandings).
      if (role !== undefined || status !== undefined) await tx.changed(versions.user(user.id));
      return toUserView(await flushed(tx, user));
    });
  }

  /**
   * Deletes a user who has never ordered (their refresh tokens and API keys go with them); a user
   * with orders is a conflict: disable them instead, so the order history keeps its owner.
   */
  async delete(ctx: Ctx, idOrEmail: string, options: { actingUserId?: string } = {}): Promise<void> {
    await ctx.transaction(async (tx) => {
      const user = await this.find(tx.em, idOrEmail, true);
      if (options.actingUserId === user.id) throw conflict('you cannot delete your own account; ask another admin to do it');
      const orders = await tx.em.count(Order, { user: user.id });
      if (orders > 0) {
        throw conflict(`user ${user.id} has ${orders} order(s) and cannot be deleted; disable the account instead (status "disabled")`, {
          userId: user.id,
          orders,
        });
      }
      await audit(tx, 'user.deleted', user.id, { email: user.email, role: user.role });
      tx.em.remove(user);
      await tx.changed(versions.user(user.id));
    });
  }

  private async find(em: SqlEntityManager, idOrEmail: string, forUpdate = false): Promise<User> {
    const key = idOrEmail.trim();
    const where = key.startsWith('usr_') ? { id: key } : byEmail(key);
    const user = await em.findOne(User, where, forUpdate ? { lockMode: LockMode.PESSIMISTIC_WRITE } : {});
    if (!user) throw notFound(`no user with ${key.startsWith('usr_') ? 'id' : 'email'} ${key}`, { user: key });
    return user;
  }
}
