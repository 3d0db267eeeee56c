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
  createdAt: Date;
  updatedAt: Date;
}

const COLUMNS = `id, name, dimension, model_name AS "modelName", model_sha256 AS "modelSha256", k, settings,
  active_version AS "activeVersion", created_at AS "createdAt", updated_at AS "updatedAt"`;

/** Name of the dataset's partial HNSW index over item_ann (cosine, fixed dimension). */
export function annIndexName(datasetId: string): string {
  return `item_ann_hnsw_${datasetId.replace(/-/g, '')}`;
}

/** The expression the HNSW index is built on; queries must use the same one to hit the index. */
export function annExpression(dimension: number, column = 'embedding'): string {
  return `(${column}::vector(${dimension}))`;
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
    `CREATE INDEX "${annIndexName(row.id)}" ON item_ann USING hnsw (${annExpression(row.dimension)} vector_cosine_ops)
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

export async function listDatasets(db: Database): Promise<DatasetRow[]> {
  return (await db.prisma.dataset.findMany({ orderBy: { name: 'asc' } })).map(fromPrisma);
}

/** Locks the dataset row for the rest of the transaction: ingest batches and version switches of one dataset serialise here. */
export async function lockDataset(tx: Sql, id: string): Promise<DatasetRow | undefined> {
  const rows = await tx.query<DatasetRow>(`SELECT ${COLUMNS} FROM datasets WHERE id = $1 FOR UPDATE`, [id]);
  return rows[0];
}

/** Deletes the dataset, its items, scores, prototypes and jobs, and its HNSW index. */
export async function deleteDataset(tx: Sql, id: string): Promise<boolean> {
  // Lock order shared with ingest and the background indexer, so none of them deadlock: the dataset
  // row (ingest takes it first), then item_ann (DROP INDEX needs it exclusively; the indexer holds it
  // from the start of its statement), then rows (items, ann_pending).
  if (!(await lockDataset(tx, id))) return false;
  await tx.exec('LOCK TABLE item_ann IN ACCESS EXCLUSIVE MODE');
  const rows = await tx.query('DELETE FROM datasets WHERE id = $1 RETURNING id', [id]);
  if (rows.length === 0) return false;
  // These two tables carry no foreign keys (bulk-write speed), so their rows go explicitly.
  await tx.query('DELETE FROM item_scores WHERE dataset_id = $1', [id]);
  await tx.query('DELETE FROM ann_pending WHERE dataset_id = $1', [id]);
  await tx.exec(`DROP INDEX IF EXISTS "${annIndexName(id)}"`);
  return true;
}
