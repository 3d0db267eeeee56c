import type { Sql } from './database.js';
import { binaryCopy, CopyBinaryParser, decodeVectorInto, type BinaryField } from './pgcopy.js';

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

const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** k × d centroids in PostgreSQL's binary float4 layout (big-endian), as stored in prototype_sets.centroids. */
export function encodeCentroids(centroids: Float32Array): Buffer {
  const bytes = Buffer.alloc(centroids.byteLength);
  bytes.set(new Uint8Array(centroids.buffer, centroids.byteOffset, centroids.byteLength));
  return LITTLE_ENDIAN_HOST ? bytes.swap32() : bytes;
}

export function decodeCentroids(stored: Uint8Array, into: Float32Array): void {
  if (stored.byteLength !== into.byteLength) throw new Error(`stored centroids hold ${stored.byteLength} bytes, expected ${into.byteLength}`);
  const bytes = Buffer.alloc(stored.byteLength); // Buffer.alloc is 4-byte aligned
  bytes.set(stored);
  if (LITTLE_ENDIAN_HOST) bytes.swap32();
  into.set(new Float32Array(bytes.buffer, bytes.byteOffset, into.length));
}

/** Per-centroid counts as big-endian int8, as stored in prototype_sets.counts. */
function encodeCounts(counts: Int32Array): Buffer {
  const bytes = Buffer.alloc(counts.length * 8);
  for (let c = 0; c < counts.length; c++) bytes.writeBigInt64BE(BigInt(counts[c]), c * 8);
  return bytes;
}

function decodeCounts(stored: Uint8Array, into: Int32Array): void {
  const bytes = Buffer.from(stored.buffer, stored.byteOffset, stored.byteLength);
  if (bytes.byteLength !== into.length * 8) throw new Error(`stored counts hold ${bytes.byteLength} bytes, expected ${into.length * 8}`);
  for (let c = 0; c < into.length; c++) into[c] = Number(bytes.readBigInt64BE(c * 8));
}

/** Stores a freshly fitted prototype set as `version`: its state, and its centroids as the drift reference. */
export async function insertPrototypeSet(
  tx: Sql,
  input: { datasetId: string; version: number; k: number; dim: number; centroids: Float32Array; counts: Int32Array; objective: number; fitItems: number },
): Promise<bigint> {
  const [row] = await tx.query<{ id: string }>(
    `INSERT INTO prototype_sets (dataset_id, version, k, fit_items, objective, centroids, counts) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id::text`,
    [input.datasetId, input.version, input.k, input.fitItems, input.objective, encodeCentroids(input.centroids.subarray(0, input.k * input.dim)), encodeCounts(input.counts.subarray(0, input.k))],
  );
  const setId = BigInt(row.id);
  function* tuples(): Generator<BinaryField[]> {
    for (let c = 0; c < input.k; c++) {
      yield [{ type: 'int8', value: setId }, { type: 'int4', value: c }, { type: 'vector', value: input.centroids, offset: c * input.dim, dim: input.dim }];
    }
  }
  await tx.copyIn('prototypes (set_id, cluster, fit_centroid)', 'binary', binaryCopy(tuples()));
  return setId;
}

/**
 * Records what the rescore measured over every item for a set fitted on a sample: per-centroid
 * counts (the weights of later mini-batch folds), the mean distance and the item count.
 */
export async function recordFullFit(tx: Sql, setId: bigint, counts: Int32Array, objective: number | null, fitItems: number): Promise<void> {
  await tx.query('UPDATE prototype_sets SET counts = $2, objective = coalesce($3, objective), fit_items = $4, updated_at = now() WHERE id = $1', [
    String(setId),
    encodeCounts(counts),
    objective,
    fitItems,
  ]);
}

/** Loads a whole prototype set: its current state (one row) and the fitted centroids (binary COPY). */
export async function loadPrototypeSet(db: Sql, row: PrototypeSetRow, dim: number): Promise<PrototypeSet> {
  const centroids = new Float32Array(row.k * dim);
  const fitCentroids = new Float32Array(row.k * dim);
  const counts = new Int32Array(row.k);
  const [state] = await db.query<{ centroids: Uint8Array; counts: Uint8Array }>('SELECT centroids, counts FROM prototype_sets WHERE id = $1', [
    String(row.setId),
  ]);
  decodeCentroids(state.centroids, centroids);
  decodeCounts(state.counts, counts);
  const parser = new CopyBinaryParser((fields) => decodeVectorInto(fields[1]!, fitCentroids, fields[0]!.readInt32BE(0) * dim));
  const source = `(SELECT cluster, fit_centroid FROM prototypes WHERE set_id = ${BigInt(row.setId)})`;
  for await (const chunk of db.copyOut(source, 'binary')) parser.push(chunk);
  parser.end();
  return { ...row, dim, centroids, fitCentroids, counts };
}

/**
 * Persists folded centroid deltas: the set's centroids and counts (one row, rewritten whole:
 * cheaper than updating each touched centroid's row), its revision and its arrived-item count.
 * Runs in the dataset folder's transaction.
 */
export async function saveMiniBatch(tx: Sql, setId: bigint, centroids: Float32Array, counts: Int32Array, arrived: number): Promise<number> {
  const [row] = await tx.query<{ revision: number }>(
    `UPDATE prototype_sets SET centroids = $2, counts = $3, revision = revision + 1, items_since_fit = items_since_fit + $4, updated_at = now()
      WHERE id = $1 RETURNING revision`,
    [String(setId), encodeCentroids(centroids), encodeCounts(counts), arrived],
  );
  return row.revision;
}

/**
 * After a switch to `current` from `previous`: deletes the sets of older versions except `previous`
 * (kept for reference) and the active one. Sets a dataset deletion is removing are skipped (SKIP
 * LOCKED) rather than waited for, as that deletion waits for the caller's job row (no deadlock).
 */
export async function dropSupersededPrototypeSets(tx: Sql, datasetId: string, current: number, previous: number | null): Promise<void> {
  await tx.query(
    `DELETE FROM prototype_sets WHERE id IN (SELECT id FROM prototype_sets
       WHERE dataset_id = $1 AND version < $2 AND version IS DISTINCT FROM $3::int
         AND version IS DISTINCT FROM (SELECT active_version FROM datasets WHERE id = $1)
       FOR UPDATE SKIP LOCKED)`,
    [datasetId, current, previous],
  );
}

export async function nextPrototypeVersion(db: Sql, datasetId: string): Promise<number> {
  const [row] = await db.query<{ next: number }>('SELECT coalesce(max(version), 0) + 1 AS next FROM prototype_sets WHERE dataset_id = $1', [
    datasetId,
  ]);
  return row.next;
}
