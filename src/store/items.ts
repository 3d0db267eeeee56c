import { fnv1a32, fnv1a32Bytes } from '../core/random.js';
import type { Sql } from './database.js';
import { uuidLiteral } from './datasets.js';
import { CopyBinaryParser, copyHeader, copyTrailer, decodeVectorInto, encodeTuple } from './pgcopy.js';

export interface UpsertedItem {
  itemId: bigint;
  /** False when an item with this external id existed and was replaced. */
  inserted: boolean;
}

/** Per-connection scratch table replacements of an ingest batch land in (emptied at commit). */
const INGEST_SCRATCH = `CREATE TEMP TABLE IF NOT EXISTS ingest_batch (
  external_id text, embedding vector, metadata jsonb) ON COMMIT DELETE ROWS`;

/** PostgreSQL's binary timestamps count microseconds from 2000-01-01 UTC. */
const PG_EPOCH_MICROS = 946_684_800_000_000n;

/**
 * Inserts or replaces a batch of items (external ids must be distinct). Must run inside a
 * transaction that holds the dataset lock, so no other writer touches these external ids. New items
 * (the common case) are copied straight into `items` with ids drawn from its sequence in one round
 * trip; replacements go through a scratch table and one UPDATE. `updated_at` is the database clock
 * read after the lock was taken (not the transaction's start), so it is later than any refit
 * snapshot taken before this transaction acquired the lock. Returns, in input order, each item's id
 * and whether it was new.
 */
export async function upsertItems(
  tx: Sql,
  datasetId: string,
  dim: number,
  externalIds: readonly string[],
  vectors: Float32Array,
  metadata: readonly string[],
): Promise<UpsertedItem[]> {
  const n = externalIds.length;
  const out = new Array<UpsertedItem>(n);
  // A join on unnest probes the (dataset_id, external_id) unique index once per id; `= ANY($2)`
  // lets a stale row estimate pick the dataset's updated_at index and filter every item instead.
  const existing = await tx.query<{ id: string; external_id: string }>(
    `SELECT i.id::text AS id, i.external_id FROM unnest($2::text[]) AS e(external_id)
       JOIN items i ON i.dataset_id = $1 AND i.external_id = e.external_id`,
    [datasetId, externalIds],
  );
  const existingIds = new Map(existing.map((r) => [r.external_id, BigInt(r.id)]));
  const fresh: number[] = [];
  const replaced: number[] = [];
  for (let i = 0; i < n; i++) (existingIds.has(externalIds[i]) ? replaced : fresh).push(i);

  if (fresh.length > 0) {
    const [alloc] = await tx.query<{ now_us: string; ids: string[] }>(
      `SELECT ((extract(epoch FROM clock_timestamp()) * 1000000)::int8)::text AS now_us,
              array(SELECT nextval(pg_get_serial_sequence('items', 'id')) FROM generate_series(1, $1::int))::text[] AS ids`,
      [fresh.length],
    );
    const writtenAt = BigInt(alloc.now_us) - PG_EPOCH_MICROS;
    const ids = alloc.ids.map(BigInt);
    async function* tuples() {
      yield copyHeader();
      for (let f = 0; f < fresh.length; f++) {
        const i = fresh[f];
        yield encodeTuple([
          { type: 'int8', value: ids[f] },
          { type: 'uuid', value: datasetId },
          { type: 'text', value: externalIds[i] },
          { type: 'vector', value: vectors, offset: i * dim, dim },
          { type: 'jsonb', value: metadata[i] },
          { type: 'int8', value: writtenAt }, // timestamptz on the wire: microseconds since 2000-01-01
        ]);
      }
      yield copyTrailer();
    }
    await tx.copyIn('items (id, dataset_id, external_id, embedding, metadata, updated_at)', 'binary', tuples());
    fresh.forEach((i, f) => (out[i] = { itemId: ids[f], inserted: true }));
  }

  if (replaced.length > 0) {
    await tx.exec(INGEST_SCRATCH);
    async function* tuples() {
      yield copyHeader();
      for (const i of replaced) {
        yield encodeTuple([
          { type: 'text', value: externalIds[i] },
          { type: 'vector', value: vectors, offset: i * dim, dim },
          { type: 'jsonb', value: metadata[i] },
        ]);
      }
      yield copyTrailer();
    }
    await tx.copyIn('ingest_batch (external_id, embedding, metadata)', 'binary', tuples());
    await tx.query(
      `UPDATE items i SET embedding = b.embedding, metadata = b.metadata, updated_at = clock_timestamp()
         FROM ingest_batch b WHERE i.dataset_id = $1 AND i.external_id = b.external_id`,
      [datasetId],
    );
    for (const i of replaced) out[i] = { itemId: existingIds.get(externalIds[i])!, inserted: false };
  }
  return out;
}

/**
 * THE LOCK ORDER of near-duplicate index maintenance. A stored item is found by near-duplicate
 * lookups either through `item_ann` (the dataset's HNSW index) or through `ann_pending` (scanned
 * exactly until the background indexer moves it). Every transaction that writes either table takes
 * its locks in this order, so none can wait for another in a cycle (no deadlock, SQLSTATE 40P01):
 *
 *   1. The dataset row (`lockDataset`, FOR UPDATE): ingest, deleteItem, deleteDataset and the
 *      refit switch. The indexer takes none (it works across datasets).
 *   2. The `item_ann` table (`lockAnnTable`): ROW EXCLUSIVE as the first statement of the indexer
 *      and, before their first row lock, of ingest with replaced items and of deleteItem;
 *      ACCESS EXCLUSIVE for deleteDataset (DROP INDEX).
 *   3. The items' `ann_pending` rows, in ascending item id: ingest upserts them (ON CONFLICT DO
 *      UPDATE, which locks an existing row — DO NOTHING would not), deleteItem and deleteDataset
 *      delete them, the refit switch relabels them, and the indexer takes them FOR UPDATE SKIP
 *      LOCKED, so the indexer never waits at this step.
 *   4. The items' `item_ann` rows and the `items` rows being deleted: ingest deletes the item_ann
 *      row of a replaced item, deleteItem and deleteDataset delete items rows (cascading to
 *      item_ann), the indexer inserts or updates item_ann rows (its foreign key check takes KEY
 *      SHARE on the items rows).
 *
 * Ingest writes its items rows (COPY of new ones, UPDATE of replaced ones) right after step 1, before
 * 2-4; that stays outside the order because every other writer of items rows holds step 1 first and
 * the one lock taken on them without it, the indexer's KEY SHARE, does not conflict with an UPDATE
 * of non-key columns.
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
 * At a version switch (in its transaction, under the dataset lock, after the new version's scores
 * are complete): pending items take their cluster under `version`, so lookups keep scanning only
 * the query's nearest clusters. A row without a score of `version` keeps its old label and is
 * scanned in full until indexed. Returns how many rows were relabelled.
 *
 * The statement joins two whole sets (a dataset's pending rows, its scores of `version`), so it
 * runs without nested loops: right after a first fit both tables were just filled and not yet
 * analysed, the planner believed the new version had no scores and chose a nested loop over
 * sequential scans — 100,000 pending items took minutes, under the dataset lock. A hash or merge
 * join is linear whatever the statistics say.
 */
export async function relabelPending(tx: Sql, datasetId: string, version: number): Promise<number> {
  const [{ was }] = await tx.query<{ was: string }>("SELECT current_setting('enable_nestloop') AS was");
  await tx.query("SELECT set_config('enable_nestloop', 'off', true)");
  const [row] = await tx.query<{ n: number }>(
    `WITH relabelled AS (
       UPDATE ann_pending p SET version = s.version, cluster = s.cluster FROM item_scores s
        WHERE p.dataset_id = $1 AND p.version IS DISTINCT FROM $2::int
          AND s.dataset_id = $1 AND s.item_id = p.item_id AND s.version = $2::int
       RETURNING 1)
     SELECT count(*)::int AS n FROM relabelled`,
    [datasetId, version],
  );
  await tx.query("SELECT set_config('enable_nestloop', $1, true)", [was]); // the rest of the switch plans as usual
  return row.n;
}

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
  async function* tuples() {
    yield copyHeader();
    for (let i = from; i < to; i++) {
      yield encodeTuple([
        { type: 'uuid', value: datasetId },
        { type: 'int4', value: version },
        { type: 'int8', value: itemIds[i] },
        { type: 'float4', value: scores[i] },
        { type: 'int4', value: clusters[i] },
      ]);
    }
    yield copyTrailer();
  }
  return db.copyIn('item_scores (dataset_id, version, item_id, score, cluster)', 'binary', tuples());
}

/** Embeddings of many items, row-major, with their ids. */
export interface EmbeddingMatrix {
  ids: BigInt64Array;
  vectors: Float32Array;
  n: number;
}

/**
 * Streams embeddings out with binary COPY into one growing Float32Array (no per-row objects, no
 * text parsing). `where` is a trusted SQL condition on `items`.
 */
export async function readEmbeddings(db: Sql, dim: number, where: string, expected = 1024): Promise<EmbeddingMatrix> {
  let capacity = Math.max(1, expected);
  let ids = new BigInt64Array(capacity);
  let vectors = new Float32Array(capacity * dim);
  let n = 0;
  const parser = new CopyBinaryParser((fields) => {
    if (n === capacity) {
      capacity *= 2;
      const grownIds = new BigInt64Array(capacity);
      grownIds.set(ids);
      ids = grownIds;
      const grown = new Float32Array(capacity * dim);
      grown.set(vectors);
      vectors = grown;
    }
    ids[n] = fields[0]!.readBigInt64BE(0);
    const got = decodeVectorInto(fields[1]!, vectors, n * dim);
    if (got !== dim) throw new Error(`stored vector has dimension ${got}, dataset has ${dim}`);
    n++;
  });
  for await (const chunk of db.copyOut(`(SELECT id, embedding FROM items WHERE ${where} ORDER BY id)`, 'binary')) parser.push(chunk);
  parser.end();
  return { ids: ids.subarray(0, n), vectors: vectors.subarray(0, n * dim), n };
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
export async function readScoreColumns(db: Sql, datasetId: string, version: number): Promise<ScoreColumns> {
  let capacity = 1 << 14;
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
     WHERE s.dataset_id = ${uuidLiteral(datasetId)} AND s.version = ${Number(version)} ORDER BY i.external_id COLLATE "C")`;
  for await (const chunk of db.copyOut(source, 'binary')) parser.push(chunk);
  parser.end();
  return { n, itemIds: itemIds.slice(0, n), scores: scores.slice(0, n), clusters: clusters.slice(0, n), idHashes: idHashes.slice(0, n) };
}

/** External ids of item rows, in the order given; ids of rows deleted meanwhile come back as null. */
export async function externalIdsOf(db: Sql, itemIds: ArrayLike<number>): Promise<(string | null)[]> {
  const rows = await db.query<{ id: number; external_id: string }>('SELECT id::float8 AS id, external_id FROM items WHERE id = ANY($1::bigint[])', [
    Array.from(itemIds, String),
  ]);
  const byId = new Map(rows.map((r) => [Number(r.id), r.external_id]));
  return Array.from(itemIds, (id) => byId.get(id) ?? null);
}

export interface ItemRow {
  externalId: string;
  metadata: Record<string, unknown>;
  createdAt: Date;
  updatedAt: Date;
  /** Score under `version`, null when the item has none (no prototypes yet). */
  score: number | null;
  cluster: number | null;
}

export async function findItem(db: Sql, datasetId: string, externalId: string, version: number | null): Promise<ItemRow | undefined> {
  const rows = await db.query<ItemRow>(
    `SELECT i.external_id AS "externalId", i.metadata, i.created_at AS "createdAt", i.updated_at AS "updatedAt", s.score, s.cluster
       FROM items i LEFT JOIN item_scores s ON s.dataset_id = i.dataset_id AND s.item_id = i.id AND s.version = $3
      WHERE i.dataset_id = $1 AND i.external_id = $2`,
    [datasetId, externalId, version],
  );
  return rows[0];
}

/**
 * Deletes one item with its scores of every version and its nearest-neighbour entries. Must run
 * inside a transaction holding the dataset lock, so an ingest or version switch cannot interleave;
 * the rest follows the lock order above (item_ann table, pending row, then the item).
 */
export async function deleteItem(tx: Sql, datasetId: string, externalId: string): Promise<boolean> {
  const rows = await tx.query<{ id: string }>('SELECT id::text AS id FROM items WHERE dataset_id = $1 AND external_id = $2', [datasetId, externalId]);
  if (rows.length === 0) return false;
  const id = rows[0].id;
  await lockAnnTable(tx, 'ROW EXCLUSIVE');
  // item_scores and ann_pending carry no foreign keys (bulk-write speed); item_ann cascades.
  await tx.query('DELETE FROM ann_pending WHERE item_id = $1::bigint', [id]);
  await tx.query('DELETE FROM items WHERE id = $1::bigint', [id]);
  await tx.query('DELETE FROM item_scores WHERE dataset_id = $1 AND item_id = $2::bigint', [datasetId, id]);
  return true;
}

/**
 * Stores the thumbnails of an upserted batch (index-aligned with it); a replaced item without a
 * new thumbnail loses its old one, which showed another image.
 */
export async function saveThumbnails(tx: Sql, upserted: readonly UpsertedItem[], thumbnails: readonly (Uint8Array | null)[]): Promise<void> {
  const ids: string[] = [];
  const data: Buffer[] = [];
  const stale: string[] = [];
  upserted.forEach((u, i) => {
    const thumbnail = thumbnails[i];
    if (thumbnail) {
      ids.push(String(u.itemId));
      data.push(Buffer.from(thumbnail.buffer, thumbnail.byteOffset, thumbnail.byteLength));
    } else if (!u.inserted) {
      stale.push(String(u.itemId));
    }
  });
  if (ids.length > 0) {
    await tx.query(
      `INSERT INTO item_thumbnails (item_id, data) SELECT unnest($1::bigint[]), unnest($2::bytea[])
       ON CONFLICT (item_id) DO UPDATE SET data = EXCLUDED.data`,
      [ids, data],
    );
  }
  if (stale.length > 0) await tx.query('DELETE FROM item_thumbnails WHERE item_id = ANY($1::bigint[])', [stale]);
}

export async function findThumbnail(db: Sql, datasetId: string, externalId: string): Promise<Uint8Array | undefined> {
  const rows = await db.query<{ data: Uint8Array }>(
    'SELECT t.data FROM item_thumbnails t JOIN items i ON i.id = t.item_id WHERE i.dataset_id = $1 AND i.external_id = $2',
    [datasetId, externalId],
  );
  return rows[0]?.data;
}
