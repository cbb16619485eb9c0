/** The caches svc keeps, each with its own hit ratio (`users`: the role and status authentication checks). */
export type CacheName = 'products' | 'orders' | 'users';

/** Hits and misses of one cache, per level, since the process started. */
export interface CacheLevelStats {
  hits: number;
  misses: number;
}

export interface CacheStats {
  l1: CacheLevelStats;
  l2: CacheLevelStats;
  /** Reads that went to the database without looking (Redis unreachable, or the cache off). */
  bypassed: number;
}

/**
 * Cached reads that are never stale after an acknowledged write: every entry depends on a version
 * (an entity, or a collection), a write changes the versions it touches once it has committed
 * (`ctx.changed`, before the response), and an entry is served only while its version is current.
 */
export interface Cache {
  /** The value of `entry` (which depends on `version`), from the cache or from `load` (then cached). */
  get<T>(cache: CacheName, version: string, entry: string, load: () => Promise<T>, options?: CachedReadOptions): Promise<T>;
  /** Makes every entry depending on `versions` stale, on every instance (never throws). */
  invalidate(versions: readonly string[]): Promise<void>;
  /** Hits and misses per cache and level (for the metrics). */
  stats(): Record<CacheName, CacheStats>;
  close(): void;
}

/** How one cached read may be served, beyond its version being current. */
export interface CachedReadOptions {
  /**
   * A copy loaded longer ago than this is never served, whatever its version: the bound on how stale
   * it can be should an invalidation never arrive (a command that could not reach Redis). While Redis
   * is unreachable, a copy younger than this is served (no instance can check its version then)
   * rather than a database read on every call; without it the read goes to the database.
   */
  maxAgeMs?: number;
}

/** The versions reads depend on: one product, the product lists, one order, one user's role and status. */
export const versions = {
  product: (id: string) => `product:${id}`,
  products: 'products',
  order: (id: string) => `order:${id}`,
  user: (id: string) => `user:${id}`,
} as const;

/** No caching: every read loads (commands, and svc serve with CACHE_L1_MAX_ENTRIES=0). */
export class NoCache implements Cache {
  private bypassed = { products: 0, orders: 0, users: 0 };
  get<T>(cache: CacheName, _version: string, _entry: string, load: () => Promise<T>): Promise<T> {
    this.bypassed[cache]++;
    return load();
  }
  invalidate(): Promise<void> {
    return Promise.resolve();
  }
  stats(): Record<CacheName, CacheStats> {
    const none = (bypassed: number): CacheStats => ({ l1: { hits: 0, misses: 0 }, l2: { hits: 0, misses: 0 }, bypassed });
    return { products: none(this.bypassed.products), orders: none(this.bypassed.orders), users: none(this.bypassed.users) };
  }
  close(): void {}
}
