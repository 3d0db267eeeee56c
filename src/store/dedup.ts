import type { Database, Sql } from './database.js';
import { uuidLiteral } from './datasets.js';
import { binaryCopy, type BinaryField } from './pgcopy.js';
import { readScoredEmbeddingRows, type ScoredEmbeddingMatrix } from './items.js';

/** A SemDeDup run (a dedup job) of one prototype version at one ε. */
export interface DedupRunRow {
  jobId: string;
  datasetId: string;
  version: number;
  epsilon: number;
  /** Totals; null until the run completed. */
  groups: number | null;
  duplicates: number | null;
  completedAt: Date | null;
}

const RUN_COLUMNS = `job_id AS "jobId", dataset_id AS "datasetId", version, epsilon, groups, duplicates, completed_at AS "completedAt"`;

/** Records a run (with its job's first checkpoint); its pairs come with its parts. */
export async function createDedupRun(tx: Sql, run: { jobId: string; datasetId: string; version: number; epsilon: number }): Promise<void> {
  await tx.query('INSERT INTO dedup_runs (job_id, dataset_id, version, epsilon) VALUES ($1, $2, $3, $4) ON CONFLICT (job_id) DO NOTHING', [
    run.jobId,
    run.datasetId,
    run.version,
    run.epsilon,
  ]);
}

/**
 * Marks a run served, with its totals (counted from its pairs), and drops its boundary rows. Items
 * re-ingested while the run compared change their scores, and with them which of a pair SemDeDup
 * keeps: of two items each marked the other's duplicate, the one with the higher item id stays a
 * duplicate, so no pair of them is dropped entirely.
 */
export async function completeDedupRun(tx: Sql, jobId: string): Promise<{ groups: number; duplicates: number }> {
  await tx.query(
    `DELETE FROM dedup_pairs p USING dedup_pairs q
      WHERE p.job_id = $1 AND q.job_id = $1 AND q.duplicate_id = p.kept_id AND q.kept_id = p.duplicate_id AND p.duplicate_id < p.kept_id`,
    [jobId],
  );
  const [totals] = await tx.query<{ groups: number; duplicates: number }>(
    `UPDATE dedup_runs SET completed_at = now(),
            groups = (SELECT count(DISTINCT kept_id)::int FROM dedup_pairs WHERE job_id = $1),
            duplicates = (SELECT count(*)::int FROM dedup_pairs WHERE job_id = $1)
      WHERE job_id = $1 RETURNING groups, duplicates`,
    [jobId],
  );
  await tx.query('DELETE FROM dedup_boundary WHERE job_id = $1', [jobId]);
  return totals;
}

export async function getDedupRun(db: Sql | Database, jobId: string): Promise<DedupRunRow | undefined> {
  const [row] = await db.query<DedupRunRow>(`SELECT ${RUN_COLUMNS} FROM dedup_runs WHERE job_id = $1`, [jobId]);
  return row;
}

/** The newest completed run of the dataset at `version` and `epsilon`. */
export async function latestDedupRun(db: Sql | Database, datasetId: string, version: number, epsilon: number): Promise<DedupRunRow | undefined> {
  const [row] = await db.query<DedupRunRow>(
    `SELECT ${RUN_COLUMNS} FROM dedup_runs WHERE dataset_id = $1 AND version = $2 AND epsilon = $3 AND completed_at IS NOT NULL ORDER BY completed_at DESC LIMIT 1`,
    [datasetId, version, epsilon],
  );
  return row;
}

/**
 * Deletes the dataset's completed runs (and their pairs) beyond the newest `keep`, every completed
 * run of a version other than `activeVersion` (a client paging one finds it gone), and the partial
 * pairs of runs whose job failed or was cancelled.
 */
export async function pruneDedupRuns(tx: Sql, datasetId: string, activeVersion: number, keep: number): Promise<void> {
  await tx.query(
    `DELETE FROM dedup_runs r WHERE r.dataset_id = $1 AND (
       (r.completed_at IS NOT NULL AND (r.version <> $2 OR r.job_id NOT IN (
          SELECT job_id FROM dedup_runs WHERE dataset_id = $1 AND completed_at IS NOT NULL ORDER BY completed_at DESC LIMIT $3)))
       OR (r.completed_at IS NULL AND EXISTS (SELECT 1 FROM jobs j WHERE j.id = r.job_id AND j.state IN ('failed', 'cancelled'))))`,
    [datasetId, activeVersion, keep],
  );
}

/** One cluster's scored items under `version`, in item id order (`ids`: item row ids). */
export type ClusterMembers = ScoredEmbeddingMatrix;

/**
 * Reads one cluster's members with their scores and embeddings (binary COPY over the (dataset,
 * version, cluster, score) index); with `keptBy`, only those that run has not made duplicates.
 */
export async function readClusterMembers(
  db: Sql | Database,
  datasetId: string,
  version: number,
  cluster: number,
  dim: number,
  expected: number,
  keptBy?: string,
): Promise<ClusterMembers> {
  const kept = keptBy ? ` AND NOT EXISTS (SELECT 1 FROM dedup_pairs p WHERE p.job_id = ${uuidLiteral(keptBy)} AND p.duplicate_id = s.item_id)` : '';
  return readScoredEmbeddingRows(
    db,
    dim,
    `(SELECT s.item_id, s.score, i.embedding FROM item_scores s JOIN items i ON i.id = s.item_id
       WHERE s.dataset_id = ${uuidLiteral(datasetId)} AND s.version = ${Number(version)} AND s.cluster = ${Number(cluster)}${kept} ORDER BY s.item_id)`,
    expected,
  );
}

/**
 * The boundary items a run aimed at `cluster` (kept in their own cluster, this one their
 * second-nearest) and not made duplicates since, with scores and embeddings.
 */
export async function readBoundaryItems(db: Sql | Database, jobId: string, datasetId: string, version: number, cluster: number, dim: number): Promise<ClusterMembers> {
  return readScoredEmbeddingRows(
    db,
    dim,
    `(SELECT b.item_id, s.score, i.embedding FROM dedup_boundary b
        JOIN item_scores s ON s.dataset_id = ${uuidLiteral(datasetId)} AND s.version = ${Number(version)} AND s.item_id = b.item_id
        JOIN items i ON i.id = b.item_id
       WHERE b.job_id = ${uuidLiteral(jobId)} AND b.cluster = ${Number(cluster)}
         AND NOT EXISTS (SELECT 1 FROM dedup_pairs p WHERE p.job_id = b.job_id AND p.duplicate_id = b.item_id)
       ORDER BY b.item_id)`,
    256,
  );
}

/** Near-duplicate pairs of one run: duplicate item, the kept item it duplicates, their similarity. */
export interface DedupPairs {
  duplicateIds: BigInt64Array;
  keptIds: BigInt64Array;
  similarities: Float32Array;
}

/** Records boundary items (kept in their cluster; `clusters[i]` is item i's second-nearest). */
export async function copyBoundaryItems(tx: Sql, jobId: string, itemIds: BigInt64Array, clusters: Int32Array): Promise<void> {
  if (itemIds.length === 0) return;
  function* tuples(): Generator<BinaryField[]> {
    for (let i = 0; i < itemIds.length; i++) {
      yield [
        { type: 'uuid', value: jobId },
        { type: 'int4', value: clusters[i] },
        { type: 'int8', value: itemIds[i] },
      ];
    }
  }
  await tx.copyIn('dedup_boundary (job_id, cluster, item_id)', 'binary', binaryCopy(tuples()));
}

/** Boundary items per cluster they are aimed at. */
export async function boundaryCounts(db: Sql | Database, jobId: string): Promise<{ cluster: number; n: number }[]> {
  return db.query<{ cluster: number; n: number }>('SELECT cluster, count(*)::int AS n FROM dedup_boundary WHERE job_id = $1 GROUP BY cluster', [jobId]);
}

/**
 * Adds cross-boundary pairs; an item already a duplicate in this run stays the duplicate it was
 * (first writer wins). Returns how many were added.
 */
export async function insertDedupPairs(tx: Sql, jobId: string, pairs: DedupPairs): Promise<number> {
  if (pairs.duplicateIds.length === 0) return 0;
  const [row] = await tx.query<{ n: number }>(
    `WITH added AS (
       INSERT INTO dedup_pairs (job_id, duplicate_id, kept_id, similarity)
       SELECT $1, p.d, p.k, p.s FROM unnest($2::bigint[], $3::bigint[], $4::real[]) AS p(d, k, s)
       ON CONFLICT (job_id, duplicate_id) DO NOTHING RETURNING 1)
     SELECT count(*)::int AS n FROM added`,
    [jobId, Array.from(pairs.duplicateIds, String), Array.from(pairs.keptIds, String), Array.from(pairs.similarities)],
  );
  return row.n;
}

/** A group as stored: the kept item and its duplicates, most similar first (external ids). */
export interface StoredDuplicateGroup {
  /** The kept item's external id. */
  kept: string;
  duplicates: string[];
  similarities: number[];
}

/** A page of groups, the keyset after it (null: nothing was left after `afterKeptId`), and whether more follow. */
export interface DuplicateGroupPage {
  groups: StoredDuplicateGroup[];
  lastKeptItemId: bigint | null;
  more: boolean;
}

/**
 * Up to `limit` groups of a run, by kept item id after `afterKeptId`. Items deleted since the run
 * drop out: a deleted kept item takes its group along, a deleted duplicate leaves its group (so a
 * page can hold fewer groups than `limit` and still not be the last).
 */
export async function readDuplicateGroups(db: Sql | Database, jobId: string, afterKeptId: bigint, limit: number): Promise<DuplicateGroupPage> {
  // One kept id beyond the page tells whether another page follows.
  const rows = await db.query<{ kept_id: string; more: boolean; kept: string | null; duplicates: string[] | null; similarities: number[] | null }>(
    `WITH ids AS (
       SELECT DISTINCT kept_id FROM dedup_pairs WHERE job_id = $1 AND kept_id > $2 ORDER BY kept_id LIMIT $3 + 1),
     page AS (SELECT kept_id FROM ids ORDER BY kept_id LIMIT $3)
     SELECT p.kept_id::text AS kept_id, (SELECT count(*) FROM ids) > $3 AS more, k.external_id AS kept,
            array_agg(d.external_id ORDER BY x.similarity DESC, x.duplicate_id) FILTER (WHERE d.id IS NOT NULL) AS duplicates,
            array_agg(x.similarity::float8 ORDER BY x.similarity DESC, x.duplicate_id) FILTER (WHERE d.id IS NOT NULL) AS similarities
     FROM page p
     JOIN dedup_pairs x ON x.job_id = $1 AND x.kept_id = p.kept_id
     LEFT JOIN items k ON k.id = p.kept_id
     LEFT JOIN items d ON d.id = x.duplicate_id
     GROUP BY p.kept_id, k.external_id
     ORDER BY p.kept_id`,
    [jobId, String(afterKeptId), limit],
  );
  const groups = rows
    .filter((r) => r.kept !== null && r.duplicates !== null)
    .map((r) => ({ kept: r.kept!, duplicates: r.duplicates!, similarities: r.similarities!.map(Number) }));
  return { groups, lastKeptItemId: rows.length > 0 ? BigInt(rows[rows.length - 1].kept_id) : null, more: rows[0]?.more ?? false };
}
