import type { CentroidDelta } from '../core/incremental.js';
import type { Sql } from './database.js';
import { decodeCentroids, encodeCentroids } from './prototypes.js';

/** The advisory lock space of the dataset folders (the second key is hashtext(dataset id)). */
const FOLD_LOCK_SPACE = 0x70700002;

/** Appends an ingest batch's centroid delta against prototype set `setId` (in the batch's transaction). */
export async function appendCentroidDelta(tx: Sql, datasetId: string, setId: bigint, delta: CentroidDelta): Promise<void> {
  await tx.query('INSERT INTO centroid_deltas (dataset_id, set_id, items, clusters, counts, sums) VALUES ($1, $2, $3, $4, $5, $6)', [
    datasetId,
    String(setId),
    delta.items,
    Array.from(delta.clusters),
    Array.from(delta.counts),
    encodeCentroids(delta.sums),
  ]);
}

/**
 * Makes this transaction the dataset's folder, if no other transaction is (never waits: a folder
 * paused by its process must not hold up ingest; the deltas wait for the next fold instead).
 */
export async function tryBecomeFolder(tx: Sql, datasetId: string): Promise<boolean> {
  const [row] = await tx.query<{ locked: boolean }>('SELECT pg_try_advisory_xact_lock($1, hashtext($2)) AS locked', [FOLD_LOCK_SPACE, datasetId]);
  return row.locked;
}

export interface StoredCentroidDelta extends CentroidDelta {
  id: bigint;
}

/** Up to `limit` deltas of set `setId` after delta `afterId`, oldest first. */
export async function readCentroidDeltas(tx: Sql, setId: bigint, dim: number, limit: number, afterId: bigint): Promise<StoredCentroidDelta[]> {
  const rows = await tx.query<{ id: string; items: number; clusters: number[]; counts: number[]; sums: Uint8Array }>(
    'SELECT id::text AS id, items, clusters, counts, sums FROM centroid_deltas WHERE set_id = $1 AND id > $3 ORDER BY id LIMIT $2',
    [String(setId), limit, String(afterId)],
  );
  return rows.map((r) => {
    const sums = new Float32Array(r.clusters.length * dim);
    decodeCentroids(r.sums, sums);
    return { id: BigInt(r.id), items: r.items, clusters: Int32Array.from(r.clusters), counts: Int32Array.from(r.counts), sums };
  });
}

/** Deletes folded deltas, and the dataset's deltas against sets other than the active one (a refit replaced them). */
export async function deleteCentroidDeltas(tx: Sql, datasetId: string, activeSetId: bigint, folded: readonly bigint[]): Promise<void> {
  await tx.query('DELETE FROM centroid_deltas WHERE id = ANY($1::bigint[]) OR (dataset_id = $2 AND set_id <> $3)', [folded.map(String), datasetId, String(activeSetId)]);
}

/** Datasets with deltas not folded yet (their folder's process died, or lost the race to another folder). */
export async function datasetsWithDeltas(db: Sql, limit: number): Promise<string[]> {
  const rows = await db.query<{ dataset_id: string }>('SELECT DISTINCT dataset_id FROM centroid_deltas LIMIT $1', [limit]);
  return rows.map((r) => r.dataset_id);
}
