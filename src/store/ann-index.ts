import { vectorLiteral, type Database, type Sql } from './database.js';
import { binaryCopy, type BinaryField } from './pgcopy.js';
import { ANN_RERANK_CANDIDATES, annExpression, annIndexKind, annQueryOperand, uuidLiteral, type DatasetRow } from './datasets.js';

/**
 * THE LOCK ORDER of near-duplicate index maintenance. A stored item is found by near-duplicate
 * lookups either through `item_ann` (the dataset's HNSW index) or through `ann_pending` (scanned
 * exactly until the background indexer moves it). Every transaction that writes either table takes
 * its locks in this order, so none can wait for another in a cycle (no deadlock, SQLSTATE 40P01):
 *
 *   1. The dataset lock: shared by ingest batches (`lockDatasetShared`), exclusive with the row
 *      FOR UPDATE (`lockDataset`) for deleteItem, deleteDataset and the refit switch; shared by
 *      the dataset's centroid folder too, after it got its own lock (only ever tried, never waited
 *      for). The indexer takes none (it works across datasets).
 *   2. The `item_ann` table (`lockAnnTable`): ROW EXCLUSIVE as the first statement of the indexer
 *      and, before their first row lock, of ingest with replaced items and of deleteItem;
 *      ACCESS EXCLUSIVE for deleteDataset (DROP INDEX).
 *   3. The items' `ann_pending` rows, in ascending item id: ingest upserts them (ON CONFLICT DO
 *      UPDATE, which locks an existing row — DO NOTHING would not), deleteItem and deleteDataset
 *      delete them, and the indexer and the relabel after a version switch (holding the dataset
 *      lock shared) take them FOR UPDATE SKIP LOCKED, so those two never wait at this step.
 *   4. The items' `item_ann` rows and the `items` rows being deleted: ingest deletes the item_ann
 *      row of a replaced item, deleteItem and deleteDataset delete items rows (cascading to
 *      item_ann), the indexer inserts or updates item_ann rows (its foreign key check takes KEY
 *      SHARE on the items rows).
 *
 * Ingest writes its items rows (COPY of new ones, UPDATE of replaced ones) right after step 1, before
 * 2-4. Concurrent batches take those in one global order of their own (new ids in external id
 * order, existing rows FOR NO KEY UPDATE in item id order: store/items.ts upsertItems), and a
 * batch's later steps touch only its own new items or items whose rows it already locked, so two
 * batches never wait for each other in a cycle. Every other writer of items rows holds step 1
 * exclusively, and the one lock taken on them without it, the indexer's KEY SHARE, does not
 * conflict with NO KEY UPDATE.
 *
 * Consistency (no stale vector in the index): whoever changes an item's vector holds its pending
 * row (3) before it removes the item_ann row (4). The indexer reads `items.embedding` in a statement
 * that starts after it locked the pending rows, so it sees every committed write of those items; a
 * write still in flight must yet lock the item's pending row, so it waits for the indexer to commit
 * and queues the item again (and removes the item_ann row the indexer just wrote). Hence, once the
 * indexer has drained `ann_pending`, `item_ann.embedding = items.embedding` for every item.
 */
export async function lockAnnTable(tx: Sql, mode: 'ROW EXCLUSIVE' | 'ACCESS EXCLUSIVE'): Promise<void> {
  await tx.exec(`LOCK TABLE item_ann IN ${mode} MODE`);
}

/**
 * Bookkeeping after an upsert (in its transaction, under the dataset lock): replaced items lose
 * their scores of other (pending) versions, so a rescore in progress scores them again at its
 * switch; every item is queued for the HNSW index with its cluster under `activeVersion`
 * (`clusters`, index-aligned with `itemIds`; null before the first fit), and replaced items leave
 * the index until re-indexed — in the lock order above.
 */
export async function markChanged(
  tx: Sql,
  datasetId: string,
  itemIds: readonly bigint[],
  replaced: readonly bigint[],
  activeVersion: number | null,
  clusters: Int32Array | null = null,
) {
  if (replaced.length > 0) {
    await tx.query('DELETE FROM item_scores WHERE dataset_id = $1 AND item_id = ANY($2::bigint[]) AND version IS DISTINCT FROM $3', [
      datasetId,
      replaced.map(String),
      activeVersion,
    ]);
    await lockAnnTable(tx, 'ROW EXCLUSIVE');
  }
  const labelled = activeVersion !== null && clusters !== null;
  if (replaced.length === 0) {
    // Only new items: their rows were created by this transaction, so no pending row can exist
    // for them and no other transaction can lock one — a binary COPY, several times cheaper.
    function* tuples(): Generator<BinaryField[]> {
      for (let i = 0; i < itemIds.length; i++) {
        yield [
          { type: 'int8', value: itemIds[i] },
          { type: 'uuid', value: datasetId },
          labelled ? { type: 'int4', value: activeVersion } : null,
          labelled ? { type: 'int4', value: clusters[i] } : null,
        ];
      }
    }
    await tx.copyIn('ann_pending (item_id, dataset_id, version, cluster)', 'binary', binaryCopy(tuples()));
    return;
  }
  await tx.query(
    `INSERT INTO ann_pending (item_id, dataset_id, version, cluster)
     SELECT t.item_id, $2, $3::int, t.cluster FROM unnest($1::bigint[], $4::int[]) AS t(item_id, cluster) ORDER BY t.item_id
     ON CONFLICT (item_id) DO UPDATE SET version = EXCLUDED.version, cluster = EXCLUDED.cluster`,
    [itemIds.map(String), datasetId, labelled ? activeVersion : null, labelled ? Array.from(clusters.subarray(0, itemIds.length)) : null],
  );
  if (replaced.length > 0) await tx.query('DELETE FROM item_ann WHERE item_id = ANY($1::bigint[])', [replaced.map(String)]);
}

/**
 * The background indexer's step: moves up to `limit` pending items (of any dataset) into the
 * HNSW-indexed table, in one transaction (a crash leaves them pending), in the lock order above.
 * The vectors are read by a statement of their own, started after the pending rows were locked
 * (READ COMMITTED: a fresh snapshot), so a replacement committed meanwhile is never missed. Returns
 * how many pending rows it took (an item deleted meanwhile is just dropped).
 */
export async function movePendingToIndex(tx: Sql, limit: number): Promise<number> {
  await lockAnnTable(tx, 'ROW EXCLUSIVE');
  const taken = await tx.query<{ item_id: string }>(
    `DELETE FROM ann_pending WHERE item_id IN (SELECT item_id FROM ann_pending ORDER BY item_id LIMIT $1 FOR UPDATE SKIP LOCKED)
     RETURNING item_id::text AS item_id`,
    [limit],
  );
  if (taken.length === 0) return 0;
  await tx.query(
    `INSERT INTO item_ann (item_id, dataset_id, embedding)
     SELECT i.id, i.dataset_id, i.embedding FROM items i WHERE i.id = ANY($1::bigint[]) ORDER BY i.id
     ON CONFLICT (item_id) DO UPDATE SET embedding = EXCLUDED.embedding`,
    [taken.map((r) => r.item_id)],
  );
  return taken.length;
}

/**
 * After a switch to `version`: gives up to `limit` pending items of the dataset with ids above
 * `afterId` their cluster under `version`, so lookups go back to probing one version's clusters.
 * Called in short transactions holding the dataset lock shared (ingest goes on), in ascending
 * item id; rows another transaction holds are skipped (the indexer is moving them, or an ingest
 * is labelling them itself). A row without a score of `version` keeps its label and is scanned in
 * full until indexed. Does nothing once `version` is no longer active (a later switch relabels).
 * Returns the last item id it looked at (null: nothing left) and how many rows it relabelled.
 *
 * The switch used to relabel every pending row inside its transaction: with a bulk load's whole
 * backlog pending that held the dataset lock for minutes (235 s at 10M items).
 */
export async function relabelPendingBatch(tx: Sql, datasetId: string, version: number, afterId: bigint, limit: number): Promise<{ lastId: bigint | null; relabelled: number }> {
  const [row] = await tx.query<{ last_id: string | null; n: number }>(
    `WITH batch AS (
       SELECT p.item_id FROM ann_pending p
        WHERE p.dataset_id = $1 AND p.item_id > $3::bigint AND p.version IS DISTINCT FROM $2::int
          AND EXISTS (SELECT 1 FROM datasets d WHERE d.id = $1 AND d.active_version = $2::int)
        ORDER BY p.item_id LIMIT $4 FOR UPDATE SKIP LOCKED),
     relabelled AS (
       UPDATE ann_pending p SET version = s.version, cluster = s.cluster
         FROM batch b JOIN item_scores s ON s.dataset_id = $1 AND s.version = $2::int AND s.item_id = b.item_id
        WHERE p.item_id = b.item_id
       RETURNING 1)
     SELECT (SELECT max(item_id) FROM batch)::text AS last_id, (SELECT count(*) FROM relabelled)::int AS n`,
    [datasetId, version, String(afterId), limit],
  );
  return { lastId: row.last_id === null ? null : BigInt(row.last_id), relabelled: row.n };
}

/**
 * Pending items scanned at most per probed cluster, the newest first (the ones the index is least
 * likely to have caught up with): a lookup reads at most PENDING_PROBES × PENDING_PER_CLUSTER
 * pending items per query vector (PENDING_PROBES: service/duplicates.ts), however large the
 * backlog. The scan is complete while a cluster holds no more pending items than this (a backlog
 * up to about this × k items).
 */
export const PENDING_PER_CLUSTER = 128;

/** Per query vector, the clusters (of one prototype version) whose pending items it scans. */
export interface PendingProbes {
  version: number;
  /** Clusters per query vector. */
  perQuery: number;
  /** n × perQuery cluster ids, row-major in query order; each query's first is its nearest prototype. */
  clusters: Int32Array;
  /** n values: each query's similarity to its nearest prototype (so a caller scoring the queries needs no second MatMul). */
  similarity: Float32Array;
}

/**
 * The near-duplicate lookup statement `nearestStoredCandidates` runs (`$1`: the query vectors as
 * text[] of literals, or with `binary` one binary vector[] parameter, see vectorArrayParam),
 * exported so tests can EXPLAIN it. Each query vector is parsed once (the materialised `q`).
 * Indexed items are searched through the dataset's HNSW index with exactly its expression (see
 * `annIndexKind`): on `vector` (d ≤ 2,000) the index order and distances are exact; on `halfvec` (2,001-4,000) the index yields
 * its `ANN_RERANK_CANDIDATES` nearest, re-ranked by the exact float32 `vector` distance, so the
 * similarity reported (and the duplicate decision) never carries halfvec rounding. Pending items
 * are scanned exactly: with `probes` (one per prototype version: the active one, and the previous
 * one while a relabel after a switch is under way), only those labelled with a probed version in
 * one of the query's clusters of that version, the newest PENDING_PER_CLUSTER of each (read
 * backwards along ann_pending's (dataset_id, version, cluster, item_id) index), plus every pending
 * item with another label or none (the relabel after each switch keeps that set small); without,
 * all of them. One statement, so both sources are read from one snapshot: the background indexer
 * moving an item from pending to indexed between two queries would otherwise hide it.
 */
export function nearestStoredSql(
  dataset: Pick<DatasetRow, 'id' | 'dimension'>,
  probes?: readonly PendingProbes[],
  queries?: { from: number; to: number },
  binary = false,
): string {
  const dim = dataset.dimension;
  const ds = uuidLiteral(dataset.id);
  const expr = annExpression(dim, 'a.embedding');
  const byIndex = `ORDER BY ${expr} <=> ${annQueryOperand(dim, 'q.v')}`;
  const indexed =
    annIndexKind(dim) === 'vector'
      ? `SELECT i.external_id, ${expr} <=> q.v AS distance
           FROM item_ann a JOIN items i ON i.id = a.item_id
          WHERE a.dataset_id = ${ds}
          ${byIndex} LIMIT 1`
      : `SELECT i.external_id, c.distance
           FROM (SELECT a.item_id, a.embedding <=> q.v AS distance FROM item_ann a
                  WHERE a.dataset_id = ${ds}
                  ${byIndex} LIMIT ${ANN_RERANK_CANDIDATES}) c
           JOIN items i ON i.id = c.item_id
          ORDER BY c.distance, i.external_id LIMIT 1`;
  const pending = (where: string) => `SELECT q.ord, nn.external_id, nn.distance FROM q CROSS JOIN LATERAL (
       SELECT i.external_id, i.embedding <=> q.v AS distance
         FROM ann_pending p JOIN items i ON i.id = p.item_id
        WHERE p.dataset_id = ${ds} AND ${where}
        ORDER BY i.embedding <=> q.v LIMIT 1) nn`;
  const probeColumns: string[] = [];
  const pendingParts: string[] = [];
  const versions: number[] = [];
  (probes ?? []).forEach((probe, index) => {
    const m = probe.perQuery;
    const version = Number(probe.version);
    if (!Number.isInteger(m) || m < 1 || !Number.isInteger(version) || versions.includes(version)) throw new RangeError('invalid pending probes');
    versions.push(version);
    const from = queries?.from ?? 0;
    const to = queries?.to ?? probe.clusters.length / m;
    // Trusted integers only: the statement keeps its single parameter.
    const clusters = Array.from(probe.clusters.subarray(from * m, to * m), (c) => String(c | 0)).join(',');
    probeColumns.push(`, ('{${clusters}}'::int[])[((t.ord - 1) * ${m} + 1)::int : (t.ord * ${m})::int] AS probes${index}`);
    pendingParts.push(`SELECT q.ord, nn.external_id, nn.distance FROM q CROSS JOIN LATERAL (
       SELECT i.external_id, i.embedding <=> q.v AS distance
         FROM unnest(q.probes${index}) AS c(cluster)
         CROSS JOIN LATERAL (SELECT p.item_id FROM ann_pending p
                              WHERE p.dataset_id = ${ds} AND p.version = ${version} AND p.cluster = c.cluster
                              ORDER BY p.item_id DESC LIMIT ${PENDING_PER_CLUSTER}) p
         JOIN items i ON i.id = p.item_id
        ORDER BY i.embedding <=> q.v LIMIT 1) nn`);
  });
  // The rest: unlabelled rows and those of other versions, as ranges of the index's version column.
  const bounds = [...versions].sort((x, y) => x - y);
  const others = ['p.version IS NULL', ...bounds.map((v, j) => (j === 0 ? `p.version < ${v}` : `(p.version > ${bounds[j - 1]} AND p.version < ${v})`))];
  if (bounds.length > 0) others.push(`p.version > ${bounds[bounds.length - 1]}`);
  pendingParts.push(pending(bounds.length > 0 ? `(${others.join(' OR ')})` : 'TRUE'));
  const probeColumn = probeColumns.join('');
  return `WITH q AS MATERIALIZED (SELECT t.ord, t.v::vector(${dim}) AS v${probeColumn} FROM unnest($1::${binary ? 'vector' : 'text'}[]) WITH ORDINALITY AS t(v, ord))
     SELECT q.ord, nn.external_id, nn.distance FROM q CROSS JOIN LATERAL (${indexed}) nn
     UNION ALL
     ${pendingParts.join('\n     UNION ALL\n     ')}`;
}

const vectorOids = new WeakMap<object, Promise<number>>();

/** The `vector` type's oid in this database (asked once per database handle). */
function vectorTypeOid(db: Pick<Sql, 'query'>): Promise<number> {
  let oid = vectorOids.get(db);
  if (!oid) {
    oid = db.query<{ oid: number }>("SELECT 'vector'::regtype::oid::int AS oid").then((rows) => Number(rows[0].oid));
    oid.catch(() => vectorOids.delete(db));
    vectorOids.set(db, oid);
  }
  return oid;
}

/**
 * Rows [from, to) as one binary `vector[]` parameter (PostgreSQL's array send format around
 * pgvector's): the server decodes it without parsing text, and Node formats no decimal strings —
 * for 256 × 512 values that saves tens of milliseconds of CPU on each side.
 */
function vectorArrayParam(oid: number, vectors: Float32Array, from: number, to: number, dim: number): Buffer {
  const n = to - from;
  const element = 4 + 4 * dim;
  const buf = Buffer.allocUnsafe(20 + n * (4 + element));
  let at = buf.writeInt32BE(1, 0); // dimensions
  at = buf.writeInt32BE(0, at); // no nulls
  at = buf.writeUInt32BE(oid, at); // element type
  at = buf.writeInt32BE(n, at); // length
  at = buf.writeInt32BE(1, at); // lower bound
  for (let i = from; i < to; i++) {
    at = buf.writeInt32BE(element, at);
    at = buf.writeUInt16BE(dim, at);
    at = buf.writeUInt16BE(0, at);
    Buffer.from(vectors.buffer, vectors.byteOffset + i * dim * 4, dim * 4).copy(buf, at);
    buf.subarray(at, at + dim * 4).swap32(); // float32 little-endian in memory, big-endian on the wire
    at += dim * 4;
  }
  return buf;
}

/** A candidate for a query vector's most similar stored item (one per source the statement searches). */
export interface StoredNeighbour {
  /** Index of the query vector. */
  query: number;
  externalId: string;
  /** Cosine distance (1 − similarity), exact float32. */
  distance: number;
}

/**
 * Runs the lookup statement (nearestStoredSql) for query vectors [from, to) of `vectors` (n × dim,
 * unit length) in a transaction of its own; on native PostgreSQL the vectors go as one binary
 * parameter. JIT is off (the statement's cost estimate crosses the JIT thresholds, and compiling
 * costs 70-270 ms, more than the lookup) and so is memoize (it would copy every pending candidate's
 * 2 kB row into a cache that rarely hits). A query may get several candidates, or none for an empty
 * dataset.
 */
export async function nearestStoredCandidates(
  db: Pick<Database, 'backend' | 'query' | 'transaction'>,
  dataset: Pick<DatasetRow, 'id' | 'dimension'>,
  vectors: Float32Array,
  queries: { from: number; to: number },
  probes?: readonly PendingProbes[],
): Promise<StoredNeighbour[]> {
  const { from, to } = queries;
  const dim = dataset.dimension;
  const oid = db.backend === 'native' ? await vectorTypeOid(db) : null;
  const param =
    oid !== null
      ? vectorArrayParam(oid, vectors, from, to, dim)
      : Array.from({ length: to - from }, (_, i) => vectorLiteral(vectors.subarray((from + i) * dim, (from + i + 1) * dim)));
  const rows = await db.transaction(async (tx) => {
    await tx.exec('SET LOCAL jit = off; SET LOCAL enable_memoize = off');
    return tx.query<{ ord: string; external_id: string; distance: number }>(nearestStoredSql(dataset, probes, queries, oid !== null), [param]);
  });
  return rows.map((r) => ({ query: from + Number(r.ord) - 1, externalId: r.external_id, distance: Number(r.distance) }));
}
