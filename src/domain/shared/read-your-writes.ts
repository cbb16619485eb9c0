/**
 * Read your own writes with read replicas: after an actor writes, its reads go to the primary for a
 * window longer than the replicas' lag; everyone else's lag-tolerant reads go to a replica. Kept in
 * this process: with several API instances, a caller's next read may reach another instance, so the
 * window is per instance (a shared store would carry it across).
 */
export class ReadYourWrites {
  private readonly lastWrite = new Map<string, number>();
  private nextPrune = 0;

  constructor(
    private readonly windowMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** `actor` has written (or is about to answer a write): its reads go to the primary for the window. */
  wrote(actor: string): void {
    const now = this.now();
    this.lastWrite.delete(actor);
    this.lastWrite.set(actor, now);
    if (now >= this.nextPrune) this.prune(now);
  }

  /** Whether `actor` may read from a replica now. */
  mayReadReplica(actor: string): boolean {
    const at = this.lastWrite.get(actor);
    return at === undefined || this.now() - at >= this.windowMs;
  }

  // Entries are kept in write order (re-inserted on each write): the expired ones are at the front.
  private prune(now: number): void {
    for (const [actor, at] of this.lastWrite) {
      if (now - at < this.windowMs) break;
      this.lastWrite.delete(actor);
    }
    this.nextPrune = now + this.windowMs;
  }
}
