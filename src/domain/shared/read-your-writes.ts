/**
 * Where callers' recent writes are recorded, for read your own writes with read replicas: in this
 * process (ReadYourWrites), or shared by every svc serve instance (Redis, with REDIS_URL).
 */
export interface WriteWindows {
  /** `actor` has written (or is about to answer a write): its reads go to the primary for the window. Never throws. */
  wrote(actor: string): void | Promise<void>;
  /** Whether `actor` may read from a replica now. Never throws: when it cannot tell, false (the primary). */
  mayReadReplica(actor: string): boolean | Promise<boolean>;
}

/**
 * Read your own writes with read replicas: after an actor writes, its reads go to the primary for a
 * window longer than the replicas' lag; everyone else's lag-tolerant reads go to a replica. Kept in
 * this process; with several API instances RedisReadYourWrites shares it (a caller's next read may
 * reach another instance).
 */
export class ReadYourWrites implements WriteWindows {
  private readonly lastWrite = new Map<string, number>();
  private nextPrune = 0;

  constructor(
    readonly windowMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * `actor` has written (or is about to answer a write): its reads go to the primary for the window.
   * `at` is when, for a write learnt from elsewhere (another instance's, through Redis).
   */
  wrote(actor: string, at = this.now()): void {
    const now = this.now();
    if ((this.lastWrite.get(actor) ?? -Infinity) > at) return;
    this.lastWrite.delete(actor);
    this.lastWrite.set(actor, at);
    if (now >= this.nextPrune) this.prune(now);
  }

  /** Whether `actor` may read from a replica now. */
  mayReadReplica(actor: string): boolean {
    const at = this.lastWrite.get(actor);
    return at === undefined || this.now() - at >= this.windowMs;
  }

  /** The actors whose window is still open, with the milliseconds left of it. */
  open(): [actor: string, remainingMs: number][] {
    const now = this.now();
    return [...this.lastWrite].map(([actor, at]): [string, number] => [actor, at + this.windowMs - now]).filter(([, left]) => left > 0);
  }

  // Entries are kept in write order (re-inserted on each write), so the expired ones are at the front
  // (a write learnt from elsewhere may be a little older than the one before it: it is then pruned a
  // round later, and mayReadReplica checks the time anyway).
  private prune(now: number): void {
    for (const [actor, at] of this.lastWrite) {
      if (now - at < this.windowMs) break;
      this.lastWrite.delete(actor);
    }
    this.nextPrune = now + this.windowMs;
  }
}
