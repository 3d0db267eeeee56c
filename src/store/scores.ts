import { fnv1a32, fnv1a32Bytes } from '../core/random.js';
import type { Database, Sql } from './database.js';
import { uuidLiteral } from './datasets.js';
import { andFilter, type ItemFilter } from './metadata-filter.js';
import { binaryCopy, CopyBinaryParser, decodeVectorInto, type BinaryField } from './pgcopy.js';

/** Writes scores of one version (set-based upsert). */
export async function upsertScores(
  tx: Sql,
  datasetId: string,
  version: number,
  itemIds: readonly bigint[],
  scores: Float32Array,
  clusters: Int32Array,
): Promise<void> {
  if (itemIds.length === 0) return;
  await tx.query(
    `INSERT INTO item_scores (dataset_id, version, item_id, score, cluster)
     SELECT $1, $2, unnest($3::bigint[]), unnest($4::real[]), unnest($5::int[])
     ON CONFLICT (dataset_id, version, item_id) DO UPDATE SET score = EXCLUDED.score, cluster = EXCLUDED.cluster`,
    [datasetId, version, itemIds.map(String), Array.from(scores), Array.from(clusters)],
  );
}

/** Bulk-writes scores of a new version with binary COPY (rows must not exist yet). */
export async function copyScores(
  db: Sql,
  datasetId: string,
  version: number,
  itemIds: BigInt64Array,
  scores: Float32Array,
  clusters: Int32Array,
  from = 0,
  to = itemIds.length,
): Promise<number> {
  function* tuples(): Generator<BinaryField[]> {
    for (let i = from; i < to; i++) {
      yield [
        { type: 'uuid', value: datasetId },
        { type: 'int4', value: version },
        { type: 'int8', value: itemIds[i] },
        { type: 'float4', value: scores[i] },
        { type: 'int4', value: clusters[i] },
      ];
    }
  }
  return db.copyIn('item_scores (dataset_id, version, item_id, score, cluster)', 'binary', binaryCopy(tuples()));
}

/** Everything selection and dedup need about one version's scored items, sorted by external id. */
export interface ScoredItems {
  n: number;
  itemIds: BigInt64Array;
  externalIds: string[];
  scores: Float32Array;
  clusters: Int32Array;
  idHashes: Uint32Array;
  /** n × dim embeddings in the same order, when asked for. */
  vectors: Float32Array | null;
}

/**
 * Reads one version's scored items with their external ids, sorted by external id in byte order
 * (COLLATE "C"), via binary COPY; with `dim`, also their embeddings.
 */
export async function readScoredItems(db: Sql, datasetId: string, version: number, dim: number | null = null): Promise<ScoredItems> {
  const externalIds: string[] = [];
  const itemIds: bigint[] = [];
  const scores: number[] = [];
  const clusters: number[] = [];
  const vectorChunks: Float32Array[] = [];
  const parser = new CopyBinaryParser((fields) => {
    itemIds.push(fields[0]!.readBigInt64BE(0));
    externalIds.push(fields[1]!.toString('utf8'));
    scores.push(fields[2]!.readFloatBE(0));
    clusters.push(fields[3]!.readInt32BE(0));
    if (dim !== null) {
      const v = new Float32Array(dim);
      decodeVectorInto(fields[4]!, v, 0);
      vectorChunks.push(v);
    }
  });
  const source = `(SELECT s.item_id, i.external_id, s.score, s.cluster${dim !== null ? ', i.embedding' : ''}
     FROM item_scores s JOIN items i ON i.id = s.item_id
     WHERE s.dataset_id = ${uuidLiteral(datasetId)} AND s.version = ${Number(version)} ORDER BY i.external_id COLLATE "C")`;
  for await (const chunk of db.copyOut(source, 'binary')) parser.push(chunk);
  parser.end();
  const n = externalIds.length;
  const idHashes = new Uint32Array(n);
  for (let i = 0; i < n; i++) idHashes[i] = fnv1a32(externalIds[i]);
  let vectors: Float32Array | null = null;
  if (dim !== null) {
    vectors = new Float32Array(n * dim);
    vectorChunks.forEach((v, i) => vectors!.set(v, i * dim));
  }
  return {
    n,
    itemIds: BigInt64Array.from(itemIds),
    externalIds,
    scores: Float32Array.from(scores),
    clusters: Int32Array.from(clusters),
    idHashes,
    vectors,
  };
}

/** One version's scores without the external id strings: what a selection needs, ~20 bytes per item. */
export interface ScoreColumns {
  n: number;
  /** Item row ids (bigserial values, exact in float64). */
  itemIds: Float64Array;
  scores: Float32Array;
  clusters: Int32Array;
  /** `fnv1a32` of each external id. */
  idHashes: Uint32Array;
}

/**
 * Reads one version's scores sorted by external id in byte order (the order selection breaks ties
 * in), hashing each id as it streams past instead of keeping the string: a million items cost
 * about 20 MB however long their ids are.
 */
export async function readScoreColumns(db: Sql, datasetId: string, version: number, expectedRows = 1 << 14, filter: ItemFilter | null = null): Promise<ScoreColumns> {
  // Sized right (a count in the same snapshot), the columns are allocated once and never copied.
  let capacity = Math.max(1, expectedRows);
  let n = 0;
  let itemIds = new Float64Array(capacity);
  let scores = new Float32Array(capacity);
  let clusters = new Int32Array(capacity);
  let idHashes = new Uint32Array(capacity);
  const grow = () => {
    capacity *= 2;
    const move = <T extends Float64Array | Float32Array | Int32Array | Uint32Array>(from: T, to: T): T => (to.set(from), to);
    itemIds = move(itemIds, new Float64Array(capacity));
    scores = move(scores, new Float32Array(capacity));
    clusters = move(clusters, new Int32Array(capacity));
    idHashes = move(idHashes, new Uint32Array(capacity));
  };
  const parser = new CopyBinaryParser((fields) => {
    if (n === capacity) grow();
    itemIds[n] = Number(fields[0]!.readBigInt64BE(0));
    idHashes[n] = fnv1a32Bytes(fields[1]!);
    scores[n] = fields[2]!.readFloatBE(0);
    clusters[n] = fields[3]!.readInt32BE(0);
    n++;
  });
  const source = `(SELECT s.item_id, i.external_id, s.score, s.cluster
     FROM item_scores s JOIN items i ON i.id = s.item_id
     WHERE s.dataset_id = ${uuidLiteral(datasetId)} AND s.version = ${Number(version)}${andFilter(filter)} ORDER BY i.external_id COLLATE "C")`;
  for await (const chunk of db.copyOut(source, 'binary')) parser.push(chunk);
  parser.end();
  if (n === capacity) return { n, itemIds, scores, clusters, idHashes };
  return { n, itemIds: itemIds.slice(0, n), scores: scores.slice(0, n), clusters: clusters.slice(0, n), idHashes: idHashes.slice(0, n) };
}

/**
 * Runs `read` against the dataset's active version in one REPEATABLE READ snapshot, so a version
 * switch committing meanwhile cannot mix versions or remove the scores being read. Undefined when
 * the dataset has no active version (no prototypes yet) or no longer exists.
 */
export async function readAtActiveVersion<T>(
  db: Pick<Database, 'transaction'>,
  datasetId: string,
  read: (tx: Sql, version: number) => Promise<T>,
): Promise<{ version: number; value: T } | undefined> {
  return db.transaction(async (tx) => {
    await tx.query('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ');
    const [row] = await tx.query<{ version: number | null }>('SELECT active_version AS version FROM datasets WHERE id = $1', [datasetId]);
    if (!row || row.version === null) return undefined;
    return { version: row.version, value: await read(tx, row.version) };
  });
}

/** Per cluster (clusters without items left out): items scored under `version` matching `filter`, and their mean score. */
export async function clusterScoreStats(db: Sql, datasetId: string, version: number, filter: ItemFilter | null): Promise<{ cluster: number; n: number; mean: number }[]> {
  const from = filter === null ? 'item_scores s' : 'item_scores s JOIN items i ON i.id = s.item_id';
  return db.query<{ cluster: number; n: number; mean: number }>(
    `SELECT s.cluster, count(*)::int AS n, avg(s.score)::float8 AS mean FROM ${from} WHERE s.dataset_id = $1 AND s.version = $2${andFilter(filter)} GROUP BY s.cluster`,
    [datasetId, version],
  );
}

/** Items scored under `version`, per cluster (clusters without items are left out), of those matching `filter`. */
export async function scoresPerCluster(db: Sql, datasetId: string, version: number, filter: ItemFilter | null = null): Promise<{ cluster: number; n: number }[]> {
  const sql =
    filter === null
      ? 'SELECT cluster, count(*)::int AS n FROM item_scores WHERE dataset_id = $1 AND version = $2 GROUP BY cluster'
      : `SELECT s.cluster, count(*)::int AS n FROM item_scores s JOIN items i ON i.id = s.item_id WHERE s.dataset_id = $1 AND s.version = $2${andFilter(filter)} GROUP BY s.cluster`;
  return db.query<{ cluster: number; n: number }>(sql, [datasetId, version]);
}

/**
 * After a switch to `current`: deletes the scores of older versions (except the active one, should
 * it be older) and `current`'s scores of items deleted meanwhile (item_scores has no foreign key).
 */
export async function dropSupersededScores(tx: Sql, datasetId: string, current: number): Promise<void> {
  await tx.query(
    'DELETE FROM item_scores WHERE dataset_id = $1 AND version < $2 AND version IS DISTINCT FROM (SELECT active_version FROM datasets WHERE id = $1)',
    [datasetId, current],
  );
  await tx.query(
    'DELETE FROM item_scores s WHERE s.dataset_id = $1 AND s.version = $2 AND NOT EXISTS (SELECT 1 FROM items i WHERE i.id = s.item_id)',
    [datasetId, current],
  );
}
