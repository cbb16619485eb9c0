import type { FastifyPluginAsync } from 'fastify';
import { V1, V2, type ApiVersion } from '../versions.js';
import { authRoutes } from './auth.js';
import { usersRoutes } from './users.js';
import { productRoutes } from './products.js';
import { orderRoutes } from './orders.js';
import { webhookRoutes } from './webhooks.js';

/** A feature's routes, registered once per API version under its prefix. */
export type VersionedRoutes = (version: ApiVersion) => FastifyPluginAsync;

// Each feature's routes live in src/server/routes/<feature>.ts; add them here.
const features: VersionedRoutes[] = [authRoutes, usersRoutes, productRoutes, orderRoutes, webhookRoutes];

/** Every versioned route, under /api/v1 and /api/v2. */
export const apiRoutes: FastifyPluginAsync = async (server) => {
  for (const version of [V1, V2]) {
    for (const feature of features) await server.register(feature(version), { prefix: version.prefix });
  }
};
