import { randomBytes } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { Cache, CachedReadOptions, CacheName, CacheStats } from '../domain/shared/cache.js';
import type { RedisConnection } from './redis.js';

/** L1 (in the process) keeps an entry at most this long, L2 (Redis) this long. */
export const L1_TTL_MS = 5 * 60_000;
export const L2_TTL_SECONDS = 60 * 60;
// A version outlives the entries cached under it; when it is gone a new one is made (a miss, never stale).
export const VERSION_TTL_SECONDS = 2 * L2_TTL_SECONDS;

/** The Redis key of a version (see RedisConnection.key): what an invalidation sets to a new value. */
export const versionKey = (redis: Pick<RedisConnection, 'key'>, version: string) => redis.key('c', 'v', version);

interface L1Entry {
  /** The version the value was read under: served only while it is still the current one. */
  token: string;
  value: unknown;
  size: number;
  /** When it was loaded (before its version was read): for reads with a maxAgeMs. */
  loadedAt: number;
}

// The token of an L1 copy loaded while Redis was unreachable: no version Redis answers is ever ''.
const UNCHECKED = '';

// The cached reads of a turn of the event loop, in one round trip and one script run (see
// RedisConnection.batched): for each, the current version of the entry (made when there is none
// yet, prefixed by the epoch that an instance moves after a Redis outage), and the L2 copy unless
// the caller's L1 copy is already of that version. KEYS: the epoch, then each read's version and
// data keys; ARGV: the versions' TTL, then each read's new version (should it have none) and the
// version of its L1 copy. The answer: each read's version token, then its L2 copy (or nil).
const READ = `
local epoch = redis.call('GET', KEYS[1]) or '0'
local out = {}
for i = 1, (#KEYS - 1) / 2 do
  local version = redis.call('GET', KEYS[2 * i])
  if not version then
    version = ARGV[2 * i]
    redis.call('SET', KEYS[2 * i], version, 'EX', ARGV[1])
  end
  local token = epoch .. ':' .. version
  out[2 * i - 1] = token
  if token == ARGV[2 * i + 1] then
    out[2 * i] = false
  else
    out[2 * i] = redis.call('GET', KEYS[2 * i + 1]) or false
  end
end
return out
`;

interface Read {
  version: string;
  data: string;
  /** The version to make should the entry have none. */
  fresh: string;
  /** The version of the L1 copy ('' without one): its L2 copy is then not sent back. */
  held: string;
}

export interface TwoLevelCacheOptions {
  maxEntries: number;
  maxBytes: number;
  /** L2 and the versions every instance checks; without it, versions live in this process (one instance). */
  redis?: RedisConnection;
  /** The clock of maxAgeMs (milliseconds; Date.now by default; a copy's age is compared across instances through L2). */
  now?: () => number;
}

/**
 * The two-level cache: L1 an LRU in the process (TTL 5 min, bounded by entries and bytes), L2 Redis
 * (TTL 1 h). Correctness across instances comes from versions, not from messages: an entry is
 * stored with the version of what it depends on, read BEFORE the database (so a write that commits
 * during the load leaves the entry under the older version), and served only while that version is
 * current in Redis, which costs one round trip per read (one for all the reads of a turn of the
 * event loop) but cannot serve a copy older than an
 * acknowledged write (pub/sub invalidation could, for the moment the message is in flight). While
 * Redis is unreachable the cache is bypassed: no instance can tell whether its L1 copy is current
 * (reads with a maxAgeMs excepted: see unchecked). Without Redis, the versions live in this process
 * (correct for one instance). A read with a maxAgeMs is also never served a copy older than that,
 * whatever its version: the bound for a write whose invalidation never reached Redis.
 */
export class TwoLevelCache implements Cache {
  private readonly l1: LRUCache<string, L1Entry>;
  /** Without Redis: the current version of each key (forgotten ones get a new one: a miss). */
  private readonly localVersions: LRUCache<string, string>;
  private readonly counters: Record<CacheName, CacheStats> = { products: newStats(), orders: newStats(), users: newStats() };
  private readonly tokenPrefix = randomBytes(6).toString('hex');
  private tokenCounter = 0;
  /** An invalidation that could not reach Redis: the epoch moves once it answers again. */
  private owesEpoch = false;
  /** While the epoch is owed: the next try to move it. */
  private epochRetry: NodeJS.Timeout | undefined;
  private closed = false;
  /** Moves when L1 is emptied: a load begun before then does not put its copy in L1 (see unchecked). */
  private generation = 0;
  private readonly now: () => number;
  private readonly read?: (read: Read) => Promise<[string, string | null]>;

  constructor(private readonly options: TwoLevelCacheOptions) {
    this.now = options.now ?? Date.now;
    this.l1 = new LRUCache<string, L1Entry>({
      max: options.maxEntries,
      maxSize: options.maxBytes,
      sizeCalculation: (entry) => Math.max(1, entry.size),
      ttl: L1_TTL_MS,
    });
    this.localVersions = new LRUCache<string, string>({ max: Math.max(1_000, options.maxEntries * 2) });
    const redis = options.redis;
    if (redis) {
      const epoch = redis.key('c', 'epoch');
      this.read = redis.batched<Read, [string, string | null]>({
        name: 'svcCacheRead',
        lua: READ,
        encode: (reads) => ({
          keys: [epoch, ...reads.flatMap((r) => [r.version, r.data])],
          args: [VERSION_TTL_SECONDS, ...reads.flatMap((r) => [r.fresh, r.held])],
        }),
        decode: (reply, reads) => reads.map((_, i) => [reply[2 * i] as string, (reply[2 * i + 1] as string | null) ?? null]),
      });
      // After the connection was lost, writes may have committed whose invalidation never reached
      // Redis (this instance's or another's), and a restarted Redis may hold older versions: every
      // instance that sees Redis come back moves the epoch, which makes every L1 and L2 entry of
      // before stale. After commands only timed out on a connection that stayed up (a busy machine:
      // the answer was read past the 250 ms timeout), Redis kept its versions: only an instance
      // whose own invalidation failed moves it. Moving it there too emptied every instance's cache
      // dozens of times a minute under load (npm run bench -- api), just when it was needed most.
      redis.onReconnect((dropped) => {
        if (dropped || this.owesEpoch) void this.moveEpoch();
      });
    }
  }

  async get<T>(cache: CacheName, version: string, entry: string, load: () => Promise<T>, options: CachedReadOptions = {}): Promise<T> {
    const stats = this.counters[cache];
    const redis = this.options.redis;
    // Taken before the version is read, so a copy's age is never less than that of what it shows.
    const started = this.now();
    const young = (loadedAt: number) => options.maxAgeMs === undefined || started - loadedAt < options.maxAgeMs;
    if (!redis) return this.getLocal(stats, version, entry, load, started, young);
    if (!redis.available()) return this.unchecked(stats, entry, load, started, options.maxAgeMs);
    if (this.owesEpoch) await this.moveEpoch();
    // L1 emptied meanwhile (this instance's invalidation failed): what was read before is not kept.
    const generation = this.generation;
    const held = this.l1.get(entry);
    let token: string;
    let data: string | null;
    try {
      [token, data] = await this.read!({
        version: versionKey(redis, version),
        data: redis.key('c', 'd', entry),
        fresh: this.newToken(),
        // A copy too old to serve is not held: the L2 copy (maybe loaded since by another instance) comes back.
        held: held && young(held.loadedAt) ? held.token : '',
      });
      redis.succeeded();
    } catch (err) {
      redis.failed(err as Error);
      return this.unchecked(stats, entry, load, started, options.maxAgeMs);
    }
    if (held && held.token === token && young(held.loadedAt)) {
      stats.l1.hits++;
      return held.value as T;
    }
    stats.l1.misses++;
    if (data) {
      // `a`: when the copy was loaded (by whichever instance), for reads with a maxAgeMs.
      const stored = JSON.parse(data) as { t: string; v: T; a: number };
      if (stored.t === token && young(stored.a)) {
        stats.l2.hits++;
        if (generation === this.generation) this.l1.set(entry, { token, value: stored.v, size: data.length, loadedAt: stored.a });
        return stored.v;
      }
    }
    stats.l2.misses++;
    const value = await load();
    const json = JSON.stringify({ t: token, v: value, a: started });
    if (generation === this.generation) this.l1.set(entry, { token, value, size: json.length, loadedAt: started });
    // Not awaited: a failed store only means the next read loads again.
    redis.client.set(redis.key('c', 'd', entry), json, 'EX', L2_TTL_SECONDS).catch(() => undefined);
    return value;
  }

  private async getLocal<T>(
    stats: CacheStats,
    version: string,
    entry: string,
    load: () => Promise<T>,
    started: number,
    young: (loadedAt: number) => boolean,
  ): Promise<T> {
    let token = this.localVersions.get(version);
    if (token === undefined) {
      token = this.newToken();
      this.localVersions.set(version, token);
    }
    const held = this.l1.get(entry);
    if (held && held.token === token && young(held.loadedAt)) {
      stats.l1.hits++;
      return held.value as T;
    }
    stats.l1.misses++;
    const value = await load();
    this.l1.set(entry, { token, value, size: JSON.stringify(value ?? null).length, loadedAt: started });
    return value;
  }

  /**
   * A read while Redis is unreachable, when no version can be checked: to the database, except for
   * reads with a maxAgeMs, which are served from an L1 copy younger than that (the bound they
   * accept), so that authentication does not add a database read to every request during an
   * outage. A copy loaded now is kept unchecked (never served once Redis answers again), and not
   * at all if L1 was emptied meanwhile (this instance's own invalidation failed: see invalidate).
   */
  private async unchecked<T>(stats: CacheStats, entry: string, load: () => Promise<T>, started: number, maxAgeMs: number | undefined): Promise<T> {
    if (maxAgeMs === undefined) {
      stats.bypassed++;
      return load();
    }
    const held = this.l1.get(entry);
    if (held && started - held.loadedAt < maxAgeMs) {
      stats.l1.hits++;
      return held.value as T;
    }
    stats.bypassed++;
    const generation = this.generation;
    const value = await load();
    if (generation === this.generation) this.l1.set(entry, { token: UNCHECKED, value, size: JSON.stringify(value ?? null).length, loadedAt: started });
    return value;
  }

  async invalidate(keys: readonly string[]): Promise<void> {
    if (keys.length === 0) return;
    const unique = [...new Set(keys)];
    const redis = this.options.redis;
    if (!redis) {
      for (const key of unique) this.localVersions.set(key, this.newToken());
      return;
    }
    try {
      if (!redis.available()) throw new Error('Redis is unreachable');
      const batch = redis.client.multi();
      for (const key of unique) batch.set(versionKey(redis, key), this.newToken(), 'EX', VERSION_TTL_SECONDS);
      const results = await batch.exec();
      const failed = results?.find(([err]) => err)?.[0];
      if (!results || failed) throw failed ?? new Error('the invalidation was not applied');
      redis.succeeded();
    } catch (err) {
      // The write has committed: it is not undone, its invalidation is owed (see moveEpoch), and
      // paid as soon as Redis answers, not at this instance's next cached read (svc worker has none).
      // Meanwhile this instance's own copies go: those that reads with a maxAgeMs are served while
      // Redis is unreachable would otherwise show it the state before its own write.
      this.owesEpoch = true;
      this.emptyL1();
      redis.failed(err as Error);
      this.retryEpoch();
    }
  }

  /** Tries to move the owed epoch every 200 ms until it has moved (or the cache is closed). */
  private retryEpoch(): void {
    if (this.epochRetry || !this.owesEpoch || this.closed) return;
    this.epochRetry = setTimeout(() => {
      this.epochRetry = undefined;
      if (!this.owesEpoch) return;
      void this.moveEpoch().then(() => this.retryEpoch());
    }, 200);
    this.epochRetry.unref();
  }

  /** Makes every cached entry of every instance stale (after an outage; see the constructor). */
  private async moveEpoch(): Promise<void> {
    const redis = this.options.redis!;
    try {
      this.owesEpoch = true;
      await redis.client.incr(redis.key('c', 'epoch'));
      this.owesEpoch = false;
      redis.succeeded();
    } catch (err) {
      redis.failed(err as Error);
    }
  }

  /**
   * A version no other write or instance makes: a random per-process prefix and a counter, so a
   * version that Redis lost (evicted, expired, restarted) is never made again by chance.
   */
  private newToken(): string {
    return `${this.tokenPrefix}.${(this.tokenCounter++).toString(36)}`;
  }

  stats(): Record<CacheName, CacheStats> {
    const copy = (s: CacheStats): CacheStats => ({ l1: { ...s.l1 }, l2: { ...s.l2 }, bypassed: s.bypassed });
    return { products: copy(this.counters.products), orders: copy(this.counters.orders), users: copy(this.counters.users) };
  }

  /** Empties L1 (a write this cache cannot see happened: another process changed the embedded database). */
  clearLocal(): void {
    this.emptyL1();
    this.localVersions.clear();
  }

  private emptyL1(): void {
    this.generation++;
    this.l1.clear();
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.epochRetry);
    this.l1.clear();
  }
}

function newStats(): CacheStats {
  return { l1: { hits: 0, misses: 0 }, l2: { hits: 0, misses: 0 }, bypassed: 0 };
}
