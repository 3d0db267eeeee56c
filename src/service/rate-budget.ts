import type { Database } from '../store/database.js';
import { countRequest, sweepRateWindows, type WindowCount } from '../store/rate-windows.js';

/** RATE_LIMIT_PER_MINUTE's window. */
export const RATE_WINDOW_MS = 60_000;

/** The outcome of counting one request against a key's budget. */
export interface RateCharge {
  /** Requests of the key in the current window, this one included (limit + 1 once refused locally). */
  count: number;
  limit: number;
  /** Milliseconds until the window ends and the budget is whole again. */
  resetMs: number;
  allowed: boolean;
}

/** Where request counts live: in process (embedded: one process owns the database) or in `rate_windows` (native). */
interface WindowStore {
  count(key: string): Promise<WindowCount>;
}

/** Fixed windows per key in this process (the embedded backend: no other process serves its database). */
class MemoryWindows implements WindowStore {
  private readonly windows = new Map<string, { start: number; count: number }>();

  constructor(private readonly now: () => number) {}

  async count(key: string): Promise<WindowCount> {
    const now = this.now();
    let window = this.windows.get(key);
    if (!window || now - window.start >= RATE_WINDOW_MS) {
      if (this.windows.size > 10_000) for (const [k, w] of this.windows) if (now - w.start >= RATE_WINDOW_MS) this.windows.delete(k);
      window = { start: now, count: 0 };
      this.windows.set(key, window);
    }
    window.count++;
    return { count: window.count, resetMs: Math.max(1, window.start + RATE_WINDOW_MS - now) };
  }
}

/** Fixed windows per key in the database, shared by every replica (the native backend). */
class SharedWindows implements WindowStore {
  private lastSweep = 0;

  constructor(
    private readonly db: Database,
    private readonly now: () => number,
  ) {}

  async count(key: string): Promise<WindowCount> {
    const now = this.now();
    if (now - this.lastSweep >= RATE_WINDOW_MS) {
      this.lastSweep = now;
      // Off the request's path; a failed sweep (e.g. during shutdown) is retried a window later.
      sweepRateWindows(this.db, RATE_WINDOW_MS).catch(() => undefined);
    }
    return countRequest(this.db, key, RATE_WINDOW_MS);
  }
}

/**
 * RATE_LIMIT_PER_MINUTE: a budget of requests per key (API key, or client address without auth)
 * and fixed one-minute window, shared by both transports (REST and gRPC count into the same
 * windows) and — on the native backend — by every replica on the database (one upsert into the
 * UNLOGGED table `rate_windows` per admitted request). A key found over its budget is refused in
 * process until its window ends, so a client hammering past its limit costs the database nothing.
 */
export class RequestBudget {
  private readonly refusedUntil = new Map<string, number>();
  private readonly store: WindowStore;

  constructor(
    db: Database,
    readonly limitPerMinute: number,
    private readonly now: () => number = Date.now,
  ) {
    this.store = db.backend === 'native' ? new SharedWindows(db, now) : new MemoryWindows(now);
  }

  /** Counts one request of `key`; `allowed` is false past the budget (a limit of 0 allows everything). */
  async charge(key: string): Promise<RateCharge> {
    const limit = this.limitPerMinute;
    if (limit <= 0) return { count: 0, limit, resetMs: 0, allowed: true };
    const now = this.now();
    const until = this.refusedUntil.get(key);
    if (until !== undefined) {
      if (now < until) return { count: limit + 1, limit, resetMs: until - now, allowed: false };
      this.refusedUntil.delete(key);
    }
    const { count, resetMs } = await this.store.count(key);
    if (count <= limit) return { count, limit, resetMs, allowed: true };
    if (this.refusedUntil.size > 10_000) for (const [k, t] of this.refusedUntil) if (t <= now) this.refusedUntil.delete(k);
    this.refusedUntil.set(key, now + resetMs);
    return { count, limit, resetMs, allowed: false };
  }
}

/** THE budget of each limit, one set per service container: every transport asks here and so shares it. */
export class RequestBudgets {
  private readonly byLimit = new Map<number, RequestBudget>();

  constructor(private readonly db: Database) {}

  forLimit(limitPerMinute: number): RequestBudget {
    let budget = this.byLimit.get(limitPerMinute);
    if (!budget) this.byLimit.set(limitPerMinute, (budget = new RequestBudget(this.db, limitPerMinute)));
    return budget;
  }
}
