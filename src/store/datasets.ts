import type { Dataset as PrismaDataset } from '../generated/prisma/client.js';
import type { Database, Sql } from './database.js';

export interface DatasetRow {
  id: string;
  name: string;
  dimension: number;
  modelName: string | null;
  modelSha256: string | null;
  k: number | null;
  settings: Record<string, unknown>;
  activeVersion: number | null;
  /** The previous version while pending items may still carry its clusters (see relabelPendingBatch), else null. */
  relabelVersion: number | null;
  createdAt: Date;
  updatedAt: Date;
}

const COLUMNS = `id, name, dimension, model_name AS "modelName", model_sha256 AS "modelSha256", k, settings,
  active_version AS "activeVersion", relabel_version AS "relabelVersion", created_at AS "createdAt", updated_at AS "updatedAt"`;

/** Name of the dataset's partial HNSW index over item_ann (cosine, fixed dimension). */
export function annIndexName(datasetId: string): string {
  return `item_ann_hnsw_${datasetId.replace(/-/g, '')}`;
}

/**
 * pgvector's HNSW limits: an index tuple must fit one 8 kB page, so HNSW holds `vector` (float32)
 * up to 2,000 dimensions and `halfvec` (float16) up to 4,000. Stored vectors stay `vector`.
 */
export const HNSW_VECTOR_MAX_DIMENSION = 2000;
export const HNSW_HALFVEC_MAX_DIMENSION = 4000;

/**
 * How many nearest candidates a halfvec index scan hands to the exact float32 re-rank. halfvec
 * keeps ~3 significant digits, so only items whose distances to the query differ by less than its
 * rounding (~1e-5 for near-duplicates) can swap order. Kept small: it is below pgvector's default
 * `hnsw.ef_search` (40), so the scan does no extra work, and the planner charges an index scan per
 * row fetched (one or two pages per halfvec tuple), so a larger limit only delays the point at
 * which it prefers the index over a sequential scan of a small dataset.
 */
export const ANN_RERANK_CANDIDATES = 10;

/** The pgvector type a dataset's HNSW index is built on. */
export type AnnIndexKind = 'vector' | 'halfvec';

/**
 * THE rule for a dataset's near-duplicate index, from its dimension: d ≤ 2,000 indexes the float32
 * `vector` itself (index distances are exact); 2,001-4,000 indexes a `halfvec` cast (index order
 * is approximate, so queries re-rank candidates by the exact `vector` distance). Above 4,000 no
 * HNSW index is possible: dataset creation refuses such dimensions.
 */
export function annIndexKind(dimension: number): AnnIndexKind {
  if (!Number.isInteger(dimension) || dimension < 1 || dimension > HNSW_HALFVEC_MAX_DIMENSION) {
    throw new RangeError(`no HNSW index for dimension ${dimension} (pgvector: at most ${HNSW_HALFVEC_MAX_DIMENSION}, as halfvec)`);
  }
  return dimension <= HNSW_VECTOR_MAX_DIMENSION ? 'vector' : 'halfvec';
}

/** The expression the HNSW index is built on; queries must use the same one to hit the index. */
export function annExpression(dimension: number, column = 'embedding'): string {
  return `(${column}::${annIndexKind(dimension)}(${dimension}))`;
}

/** A query vector (an SQL expression of type `vector` or text) cast to the index's type, for `ORDER BY annExpression <=> this`. */
export function annQueryOperand(dimension: number, value: string): string {
  return `${value}::${annIndexKind(dimension)}(${dimension})`;
}

/** The HNSW operator class (cosine) of the index. */
export function annOperatorClass(dimension: number): 'vector_cosine_ops' | 'halfvec_cosine_ops' {
  return annIndexKind(dimension) === 'vector' ? 'vector_cosine_ops' : 'halfvec_cosine_ops';
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function isUuid(text: string): boolean {
  return UUID.test(text);
}

/** A dataset id as a SQL literal, for statements that take no parameters (DDL, COPY). */
export function uuidLiteral(id: string): string {
  if (!UUID.test(id)) throw new Error(`not a uuid: ${id}`);
  return `'${id}'`;
}

/**
 * Inserts the dataset row and creates its HNSW index in the same transaction, so a dataset never
 * exists without its index. Throws the driver's unique-violation (23505) on a duplicate name.
 */
export async function insertDataset(
  tx: Sql,
  input: { name: string; dimension: number; k: number | null; settings: object; modelName: string | null; modelSha256: string | null },
): Promise<DatasetRow> {
  const [row] = await tx.query<DatasetRow>(
    `INSERT INTO datasets (id, name, dimension, k, settings, model_name, model_sha256)
     VALUES (gen_random_uuid(), $1, $2, $3, $4, $5, $6) RETURNING ${COLUMNS}`,
    [input.name, input.dimension, input.k, JSON.stringify(input.settings), input.modelName, input.modelSha256],
  );
  await tx.exec(
    `CREATE INDEX "${annIndexName(row.id)}" ON item_ann USING hnsw (${annExpression(row.dimension)} ${annOperatorClass(row.dimension)})
     WHERE dataset_id = ${uuidLiteral(row.id)}`,
  );
  return row;
}

function fromPrisma(row: PrismaDataset): DatasetRow {
  return { ...row, settings: (row.settings ?? {}) as Record<string, unknown> };
}

export async function findDatasetByName(db: Database, name: string): Promise<DatasetRow | undefined> {
  const row = await db.prisma.dataset.findUnique({ where: { name } });
  return row ? fromPrisma(row) : undefined;
}

export async function findDatasetById(db: Sql, id: string): Promise<DatasetRow | undefined> {
  const rows = await db.query<DatasetRow>(`SELECT ${COLUMNS} FROM datasets WHERE id = $1`, [id]);
  return rows[0];
}

export async function listDatasets(db: Database): Promise<DatasetRow[]> {
  return (await db.prisma.dataset.findMany({ orderBy: { name: 'asc' } })).map(fromPrisma);
}

/**
 * The advisory lock space of the dataset locks (the second key is hashtext(dataset id); two
 * datasets that share a hash only wait for each other now and then). An advisory lock and not the
 * row's FOR SHARE: PostgreSQL grants FOR SHARE past a waiting FOR UPDATE, so a steady stream of
 * ingests would starve a version switch; the lock manager queues a shared request behind a waiting
 * exclusive one.
 */
const DATASET_LOCK_SPACE = 0x70700001;

/**
 * Takes the dataset lock exclusively for the rest of the transaction, then the row FOR UPDATE:
 * version switches, refit snapshots, item and dataset deletion. Waits for every ingest batch in
 * flight and holds off new ones.
 */
export async function lockDataset(tx: Sql, id: string): Promise<DatasetRow | undefined> {
  await tx.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [DATASET_LOCK_SPACE, id]);
  const rows = await tx.query<DatasetRow>(`SELECT ${COLUMNS} FROM datasets WHERE id = $1 FOR UPDATE`, [id]);
  return rows[0];
}

/**
 * Takes the dataset lock shared for the rest of the transaction, then reads the row: ingest
 * batches of one dataset run side by side, each sees the active version an exclusive holder
 * (a switch) committed before, and none is in flight while one holds it.
 */
export async function lockDatasetShared(tx: Sql, id: string): Promise<DatasetRow | undefined> {
  await tx.query('SELECT pg_advisory_xact_lock_shared($1, hashtext($2))', [DATASET_LOCK_SPACE, id]);
  const rows = await tx.query<DatasetRow>(`SELECT ${COLUMNS} FROM datasets WHERE id = $1`, [id]);
  return rows[0];
}

/**
 * Takes the dataset lock, then reads the database clock: every item write committed before is
 * visible, and every later one stamps `updated_at` after this instant (upsertItems stamps its rows
 * after acquiring the lock).
 */
export async function clockAfterDatasetLock(tx: Sql, id: string): Promise<Date> {
  await lockDataset(tx, id);
  const [row] = await tx.query<{ at: Date }>('SELECT clock_timestamp() AS at');
  return row.at;
}

/**
 * Makes `version` the dataset's active one, unless the active one is as new or newer (a version
 * never goes backwards). The version it replaces becomes `relabel_version` until the pending items
 * carry clusters of the new one (relabelPendingBatch, endRelabel).
 */
export async function switchActiveVersion(tx: Sql, id: string, version: number): Promise<void> {
  await tx.query(
    `UPDATE datasets SET active_version = $2, relabel_version = active_version, updated_at = now()
      WHERE id = $1 AND (active_version IS NULL OR active_version < $2)`,
    [id, version],
  );
}

/** Ends the relabel after a switch to `version` (unless a later switch started its own). */
export async function endRelabel(tx: Sql, id: string, version: number): Promise<void> {
  await tx.query('UPDATE datasets SET relabel_version = NULL WHERE id = $1 AND active_version = $2', [id, version]);
}

/** Deletes the dataset, its items, scores, prototypes and jobs, and its HNSW index. */
export async function deleteDataset(tx: Sql, id: string): Promise<boolean> {
  // The lock order of ingest, deleteItem and the background indexer (defined in store/ann-index.ts),
  // so none of them deadlock: the dataset row, then item_ann exclusively (DROP INDEX needs it; an
  // indexer step holds it from its first statement), then the pending rows, then the items (whose
  // deletion cascades to item_ann). ann_pending and item_scores carry no foreign keys (bulk-write
  // speed), so their rows go explicitly.
  if (!(await lockDataset(tx, id))) return false;
  await tx.exec('LOCK TABLE item_ann IN ACCESS EXCLUSIVE MODE');
  await tx.query('DELETE FROM ann_pending WHERE dataset_id = $1', [id]);
  const rows = await tx.query('DELETE FROM datasets WHERE id = $1 RETURNING id', [id]);
  if (rows.length === 0) return false;
  await tx.query('DELETE FROM item_scores WHERE dataset_id = $1', [id]);
  await tx.exec(`DROP INDEX IF EXISTS "${annIndexName(id)}"`);
  return true;
}
