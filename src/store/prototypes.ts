import type { Sql } from './database.js';
import { CopyBinaryParser, copyHeader, copyTrailer, decodeVectorInto, encodeTuple } from './pgcopy.js';

export interface PrototypeSetRow {
  setId: bigint;
  version: number;
  k: number;
  fitItems: number;
  objective: number | null;
  revision: number;
  itemsSinceFit: number;
  createdAt: Date;
}

export interface PrototypeSet extends PrototypeSetRow {
  dim: number;
  /** k × dim current (incrementally updated) unit centroids. */
  centroids: Float32Array;
  /** k × dim centroids as of the full fit, the reference for drift. */
  fitCentroids: Float32Array;
  /** Items folded into each centroid. */
  counts: Int32Array;
}

const SET_COLUMNS = `id::text AS "setId", version, k, fit_items::float8 AS "fitItems", objective, revision,
  items_since_fit::float8 AS "itemsSinceFit", created_at AS "createdAt"`;

/** Rows come back with the id as text (see SET_COLUMNS). */
function toRow(r: Omit<PrototypeSetRow, 'setId'> & { setId: string | bigint }): PrototypeSetRow {
  return { ...r, setId: BigInt(r.setId) };
}

export async function findPrototypeSetRow(db: Sql, datasetId: string, version: number): Promise<PrototypeSetRow | undefined> {
  const rows = await db.query<PrototypeSetRow>(`SELECT ${SET_COLUMNS} FROM prototype_sets WHERE dataset_id = $1 AND version = $2`, [
    datasetId,
    version,
  ]);
  return rows[0] && toRow(rows[0]);
}

/** Stores a freshly fitted prototype set as `version` (centroids double as the drift reference). */
export async function insertPrototypeSet(
  tx: Sql,
  input: { datasetId: string; version: number; k: number; dim: number; centroids: Float32Array; counts: Int32Array; objective: number; fitItems: number },
): Promise<bigint> {
  const [row] = await tx.query<{ id: string }>(
    `INSERT INTO prototype_sets (dataset_id, version, k, fit_items, objective) VALUES ($1, $2, $3, $4, $5) RETURNING id::text`,
    [input.datasetId, input.version, input.k, input.fitItems, input.objective],
  );
  const setId = BigInt(row.id);
  async function* tuples() {
    yield copyHeader();
    for (let c = 0; c < input.k; c++) {
      const vector = { type: 'vector' as const, value: input.centroids, offset: c * input.dim, dim: input.dim };
      yield encodeTuple([{ type: 'int8', value: setId }, { type: 'int4', value: c }, vector, vector, { type: 'int8', value: input.counts[c] }]);
    }
    yield copyTrailer();
  }
  await tx.copyIn('prototypes (set_id, cluster, centroid, fit_centroid, count)', 'binary', tuples());
  return setId;
}

/** Loads a whole prototype set (centroids via binary COPY). */
export async function loadPrototypeSet(db: Sql, row: PrototypeSetRow, dim: number): Promise<PrototypeSet> {
  const centroids = new Float32Array(row.k * dim);
  const fitCentroids = new Float32Array(row.k * dim);
  const counts = new Int32Array(row.k);
  const parser = new CopyBinaryParser((fields) => {
    const c = fields[0]!.readInt32BE(0);
    decodeVectorInto(fields[1]!, centroids, c * dim);
    decodeVectorInto(fields[2]!, fitCentroids, c * dim);
    counts[c] = Number(fields[3]!.readBigInt64BE(0));
  });
  const source = `(SELECT cluster, centroid, fit_centroid, count FROM prototypes WHERE set_id = ${BigInt(row.setId)})`;
  for await (const chunk of db.copyOut(source, 'binary')) parser.push(chunk);
  parser.end();
  return { ...row, dim, centroids, fitCentroids, counts };
}

const CENTROID_SCRATCH = `CREATE TEMP TABLE IF NOT EXISTS centroid_updates (
  cluster integer, centroid vector, count bigint) ON COMMIT DELETE ROWS`;

/**
 * Persists a mini-batch update: the touched centroids and their counts (binary COPY + one UPDATE),
 * and bumps the set's revision and arrived-item count. Runs inside the ingest transaction.
 */
export async function saveMiniBatch(
  tx: Sql,
  setId: bigint,
  dim: number,
  touched: readonly number[],
  centroids: Float32Array,
  counts: Int32Array,
  arrived: number,
): Promise<number> {
  if (touched.length > 0) {
    await tx.exec(CENTROID_SCRATCH);
    async function* tuples() {
      yield copyHeader();
      for (const c of touched) {
        yield encodeTuple([
          { type: 'int4', value: c },
          { type: 'vector', value: centroids, offset: c * dim, dim },
          { type: 'int8', value: counts[c] },
        ]);
      }
      yield copyTrailer();
    }
    await tx.copyIn('centroid_updates (cluster, centroid, count)', 'binary', tuples());
    await tx.query(
      `UPDATE prototypes p SET centroid = u.centroid, count = u.count FROM centroid_updates u
        WHERE p.set_id = $1 AND p.cluster = u.cluster`,
      [String(setId)],
    );
  }
  const [row] = await tx.query<{ revision: number }>(
    `UPDATE prototype_sets SET revision = revision + 1, items_since_fit = items_since_fit + $2, updated_at = now()
      WHERE id = $1 RETURNING revision`,
    [String(setId), arrived],
  );
  return row.revision;
}

export async function nextPrototypeVersion(db: Sql, datasetId: string): Promise<number> {
  const [row] = await db.query<{ next: number }>('SELECT coalesce(max(version), 0) + 1 AS next FROM prototype_sets WHERE dataset_id = $1', [
    datasetId,
  ]);
  return row.next;
}
