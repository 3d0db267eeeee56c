import type { Sql } from './database.js';

/** A key's request count in its current window, and the time left in that window. */
export interface WindowCount {
  count: number;
  /** Milliseconds until the window ends (≥ 1), by the database's clock. */
  resetMs: number;
}

/**
 * Counts one request of `key` in the shared table `rate_windows` (UNLOGGED: no WAL, no flush at
 * commit) with one upsert: a window starts at a key's first request and lasts `windowMs`; the
 * first request after it starts the next. Every replica counts into the same row, by the
 * database's clock, so their clocks need not agree.
 */
export async function countRequest(db: Sql, key: string, windowMs: number): Promise<WindowCount> {
  const [row] = await db.query<{ count: number; resetMs: number }>(
    `INSERT INTO rate_windows AS w (key, window_start, count) VALUES ($1, now(), 1)
     ON CONFLICT (key) DO UPDATE SET
       window_start = CASE WHEN w.window_start <= now() - $2::float8 * interval '1 millisecond' THEN now() ELSE w.window_start END,
       count = CASE WHEN w.window_start <= now() - $2::float8 * interval '1 millisecond' THEN 1 ELSE w.count + 1 END
     RETURNING count, (extract(epoch FROM w.window_start - now()) * 1000 + $2::float8)::float8 AS "resetMs"`,
    [key, windowMs],
  );
  return { count: row.count, resetMs: Math.min(windowMs, Math.max(1, Math.ceil(Number(row.resetMs)))) };
}

/** Deletes up to `limit` windows that ended (keys not seen for a window), skipping rows in use. */
export async function sweepRateWindows(db: Sql, windowMs: number, limit = 1000): Promise<number> {
  const rows = await db.query(
    `DELETE FROM rate_windows WHERE key IN (
       SELECT key FROM rate_windows WHERE window_start <= now() - $1::float8 * interval '1 millisecond'
        LIMIT ${Math.trunc(limit)} FOR UPDATE SKIP LOCKED)
     RETURNING key`,
    [windowMs],
  );
  return rows.length;
}
