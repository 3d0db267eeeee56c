import type { Sql } from './database.js';

/**
 * Subset manifests: a manifest row (what made the subset) and its ordered external ids in chunk
 * rows (`manifest_ids`, one text[] per chunk, chunk 0 first). The chunks are written before their
 * manifest row, in the same transaction (see the migration for why).
 */
export interface ManifestRow {
  id: string;
  datasetId: string;
  datasetName: string;
  name: string | null;
  description: string | null;
  kind: 'selection' | 'export';
  encoderName: string | null;
  encoderSha256: string | null;
  prototypeVersion: number;
  k: number | null;
  seed: number;
  parameters: Record<string, unknown>;
  summary: Record<string, unknown>;
  count: number;
  sha256: string;
  createdByKeyId: string | null;
  createdAt: Date;
}

export type NewManifestRow = Omit<ManifestRow, 'createdAt'>;

const COLUMNS = `id::text, dataset_id::text AS "datasetId", dataset_name AS "datasetName", name, description, kind,
  encoder_name AS "encoderName", encoder_sha256 AS "encoderSha256", prototype_version AS "prototypeVersion", k,
  seed::float8 AS seed, parameters, summary, count, sha256, created_by_key_id::text AS "createdByKeyId", created_at AS "createdAt"`;

/** Writes chunk `chunk` of a manifest's ids (one row: set-based, never a row per id). */
export async function insertManifestChunk(tx: Sql, manifestId: string, chunk: number, ids: readonly string[]): Promise<void> {
  await tx.query('INSERT INTO manifest_ids (manifest_id, chunk, ids) VALUES ($1, $2, $3::text[])', [manifestId, chunk, ids]);
}

/** Writes the manifest row (after its chunks). A dataset deleted meanwhile fails the foreign key (23503). */
export async function insertManifest(tx: Sql, m: NewManifestRow): Promise<ManifestRow> {
  const [row] = await tx.query<ManifestRow>(
    `INSERT INTO manifests (id, dataset_id, dataset_name, name, description, kind, encoder_name, encoder_sha256,
                            prototype_version, k, seed, parameters, summary, count, sha256, created_by_key_id)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::bigint, $12::jsonb, $13::jsonb, $14, $15, $16)
     RETURNING ${COLUMNS}`,
    [
      m.id,
      m.datasetId,
      m.datasetName,
      m.name,
      m.description,
      m.kind,
      m.encoderName,
      m.encoderSha256,
      m.prototypeVersion,
      m.k,
      String(m.seed),
      JSON.stringify(m.parameters),
      JSON.stringify(m.summary),
      m.count,
      m.sha256,
      m.createdByKeyId,
    ],
  );
  return row;
}

export async function findManifest(db: Sql, id: string): Promise<ManifestRow | undefined> {
  const [row] = await db.query<ManifestRow>(`SELECT ${COLUMNS} FROM manifests WHERE id = $1`, [id]);
  return row;
}

/** The ids of chunk `chunk` of a manifest; undefined past its last chunk (or once it is deleted). */
export async function readManifestChunk(db: Sql, manifestId: string, chunk: number): Promise<string[] | undefined> {
  const [row] = await db.query<{ ids: string[] }>('SELECT ids FROM manifest_ids WHERE manifest_id = $1 AND chunk = $2', [manifestId, chunk]);
  return row?.ids;
}

/** A position in a dataset's manifests, newest first: the last manifest of the previous page. */
export interface ManifestKeyset {
  createdAt: Date;
  id: string;
}

/** Up to `limit` of the dataset's manifests, newest first, after `after`. */
export async function listManifests(db: Sql, datasetId: string, after: ManifestKeyset | null, limit: number): Promise<ManifestRow[]> {
  return db.query<ManifestRow>(
    `SELECT ${COLUMNS} FROM manifests
      WHERE dataset_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) < ($2::timestamptz, $3::uuid))
      ORDER BY created_at DESC, id DESC LIMIT $4`,
    [datasetId, after?.createdAt.toISOString() ?? null, after?.id ?? null, limit],
  );
}

/** Deletes a manifest with its chunks; false when there was none. */
export async function deleteManifest(db: Sql, id: string): Promise<boolean> {
  const rows = await db.query('DELETE FROM manifests WHERE id = $1 RETURNING id', [id]);
  return rows.length > 0;
}
