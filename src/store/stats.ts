import type { Sql } from './database.js';
import { andFilter, type ItemFilter } from './metadata-filter.js';

/**
 * Items per score bin under `version` (of those matching `filter`): bins of `binWidth` from 0, the
 * last (`bins` − 1) also holding every higher score. Bins without items are left out.
 */
export async function scoreHistogram(db: Sql, datasetId: string, version: number, binWidth: number, bins: number, filter: ItemFilter | null = null): Promise<{ bin: number; n: number }[]> {
  const from = filter === null ? 'item_scores s' : 'item_scores s JOIN items i ON i.id = s.item_id';
  return db.query<{ bin: number; n: number }>(
    `SELECT LEAST(floor(s.score / ${Number(binWidth)})::int, ${Number(bins) - 1}) AS bin, count(*)::int AS n
       FROM ${from} WHERE s.dataset_id = $1 AND s.version = $2${andFilter(filter)} GROUP BY 1`,
    [datasetId, version],
  );
}

/** Items of the dataset whose metadata matches `filter`. */
export async function countMatchingItems(db: Sql, datasetId: string, filter: ItemFilter): Promise<number> {
  const [row] = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM items i WHERE i.dataset_id = $1${andFilter(filter)}`, [datasetId]);
  return row.n;
}

/** Items written (stored or replaced) over the last 24 hours, by the hour of their latest write, and in total over the last hour and day. */
export async function recentItemWrites(db: Sql, datasetId: string): Promise<{ hourly: { hour: Date; n: number }[]; lastHour: number; last24Hours: number }> {
  const [hourly, [recent]] = await Promise.all([
    db.query<{ hour: Date; n: number }>(
      `SELECT date_trunc('hour', updated_at) AS hour, count(*)::int AS n FROM items
        WHERE dataset_id = $1 AND updated_at > now() - interval '24 hours' GROUP BY 1 ORDER BY 1`,
      [datasetId],
    ),
    db.query<{ hour: number; day: number }>(
      `SELECT count(*) FILTER (WHERE updated_at > now() - interval '1 hour')::int AS hour, count(*)::int AS day
         FROM items WHERE dataset_id = $1 AND updated_at > now() - interval '24 hours'`,
      [datasetId],
    ),
  ]);
  return { hourly, lastHour: recent.hour, last24Hours: recent.day };
}
