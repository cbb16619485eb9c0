import { LockMode, sql } from '@mikro-orm/core';
import type { SqlEntityManager } from '@mikro-orm/sql';
import type { Ctx } from '../shared/context.js';
import { conflict, invalid, notFound } from '../shared/errors.js';
import { afterCursor, decodeCursor, MAX_PAGE_SIZE, toPage, type Page } from '../shared/pagination.js';
import { audit } from '../audit/audit.js';
import { hashPassword, passwordProblem } from './password.js';
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
  after?: string;
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
const EMAIL = /^[^\s@]{1,64}@[^\s@]+\.[^\s@]{2,}$/;

function checkEmail(raw: string): string {
  const email = raw.trim();
  if (!EMAIL.test(email) || email.length > 254) {
    throw invalid(`"${raw}" is not an email address (expected name@example.com)`, { field: 'email' });
  }
  return email;
}

function checkName(raw: string): string {
  const name = raw.trim();
  if (name.length < 1 || name.length > 200) throw invalid('the name must be 1 to 200 characters', { field: 'name' });
  return name;
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

/** User accounts: creation, lookup, listing, roles and status, each write audited. */
export class UsersService {
  /** Creates a user; a taken email (in any letter case) is a conflict naming it. */
  async create(ctx: Ctx, input: CreateUserInput): Promise<UserView> {
    const email = checkEmail(input.email);
    const name = checkName(input.name);
    const role = checkRole(input.role ?? 'user');
    if (input.password !== undefined) {
      const problem = passwordProblem(input.password);
      if (problem) throw invalid(problem, { field: 'password' });
    }
    const passwordHash = input.password === undefined ? null : await hashPassword(input.password);
    return ctx.em.transactional(async (em) => {
      const taken = await em.findOne(User, byEmail(email), { fields: ['id', 'email'] });
      if (taken) throw conflict(`a user with email ${email} already exists (${taken.id})`, { field: 'email', userId: taken.id });
      const user = em.create(User, { email, name, role, passwordHash, status: 'active' });
      audit({ ...ctx, em }, 'user.created', user.id, { email, role });
      await em.flush();
      return toUserView(user);
    });
  }

  /** Finds a user by id (`usr_…`) or email (any letter case). */
  async get(ctx: Ctx, idOrEmail: string): Promise<UserView> {
    return toUserView(await this.find(ctx.em, idOrEmail));
  }

  /** Lists users newest first, filtered, one cursor page at a time. */
  async list(ctx: Ctx, input: ListUsersInput = {}): Promise<Page<UserView>> {
    const limit = input.limit ?? 20;
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_PAGE_SIZE) {
      throw invalid(`the limit must be an integer from 1 to ${MAX_PAGE_SIZE}`, { field: 'limit' });
    }
    const where: Record<string, unknown>[] = [];
    if (input.role !== undefined) where.push({ role: checkRole(input.role) });
    if (input.status !== undefined) where.push({ status: checkStatus(input.status) });
    if (input.search !== undefined && input.search.trim() !== '') {
      const term = `%${input.search.trim().replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
      where.push({ $or: [{ email: { $ilike: term } }, { name: { $ilike: term } }] });
    }
    if (input.after !== undefined) where.push(afterCursor(decodeCursor(input.after, 'after')));
    const rows = await ctx.em.find(User, where.length ? { $and: where } : {}, {
      orderBy: { createdAt: 'desc', id: 'desc' },
      limit: limit + 1,
    });
    return toPage(rows, limit, toUserView);
  }

  /** Changes a user's role; setting the role they already have changes nothing. */
  async setRole(ctx: Ctx, idOrEmail: string, roleInput: string): Promise<UserView> {
    const role = checkRole(roleInput);
    return ctx.em.transactional(async (em) => {
      const user = await this.find(em, idOrEmail, true);
      if (user.role !== role) {
        const from = user.role;
        user.role = role;
        audit({ ...ctx, em }, 'user.role-changed', user.id, { from, to: role });
        await em.flush();
      }
      return toUserView(user);
    });
  }

  /** Disables or re-enables a user; a user already in that status is left as is. */
  async setStatus(ctx: Ctx, idOrEmail: string, statusInput: string): Promise<UserView> {
    const status = checkStatus(statusInput);
    return ctx.em.transactional(async (em) => {
      const user = await this.find(em, idOrEmail, true);
      if (user.status !== status) {
        user.status = status;
        audit({ ...ctx, em }, status === 'disabled' ? 'user.disabled' : 'user.enabled', user.id);
        await em.flush();
      }
      return toUserView(user);
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
