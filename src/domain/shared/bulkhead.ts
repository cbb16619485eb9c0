import { DomainError } from './errors.js';

/** What a bulkhead is doing, and what it has done since it was made. */
export interface BulkheadStats {
  running: number;
  queued: number;
  completed: number;
  refused: number;
}

/**
 * Runs at most `concurrency` tasks at once and lets at most `queue` more wait their turn, first
 * come first served; a task beyond that is refused at once with `unavailable` and the seconds after
 * which the backlog has likely drained (`retryAfterSeconds`, for a 503 with Retry-After), so a flood
 * costs neither unbounded memory nor an unbounded wait.
 */
export class Bulkhead {
  private running = 0;
  private readonly waiting: (() => void)[] = [];
  private completed = 0;
  private refused = 0;
  // Running average of a task's duration, for Retry-After; starts at a guess, learns from each task.
  private averageMs: number;

  constructor(
    /** What the tasks are, plural, for the refusal's message ("password hashes"). */
    readonly name: string,
    readonly limits: { concurrency: number; queue: number },
    typicalMs = 100,
  ) {
    this.averageMs = typicalMs;
  }

  /** Runs the task when a place is free, or refuses it at once when the queue is full. */
  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.running < this.limits.concurrency) {
      this.running++;
    } else if (this.waiting.length < this.limits.queue) {
      // The task that finishes hands its place over (running stays as it is): see below.
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    } else {
      this.refused++;
      const seconds = Math.max(1, Math.ceil(((this.waiting.length + this.running) * this.averageMs) / this.limits.concurrency / 1000));
      throw new DomainError('unavailable', `too many ${this.name} in progress; try again in ${seconds} s`, { retryAfterSeconds: seconds });
    }
    const started = performance.now();
    try {
      return await task();
    } finally {
      this.averageMs = 0.8 * this.averageMs + 0.2 * (performance.now() - started);
      this.completed++;
      const next = this.waiting.shift();
      if (next) next();
      else this.running--;
    }
  }

  stats(): BulkheadStats {
    return { running: this.running, queued: this.waiting.length, completed: this.completed, refused: this.refused };
  }
}
