import { lockAnnTable } from './ann-index.js';
import type { Sql } from './database.js';
import { uuidLiteral } from './datasets.js';
import { binaryCopy, CopyBinaryParser, decodeVectorInto, type BinaryField } from './pgcopy.js';

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

/** SQLSTATE unique_violation. */
const UNIQUE_VIOLATION = '23505';

/**
 * Inserts or replaces a batch of items (external ids must be distinct). Must run inside a
 * transaction that holds the dataset lock, so no other writer touches these external ids. A batch
 * of new items only (the common case) is copied straight into `items`, the unique index doing the
 * existence check: only when that COPY hits an existing id is it rolled back (to a savepoint) and
 * the batch split by looking its ids up — new ones copied, replacements through a scratch table
 * and one UPDATE. `updated_at` is the database clock read after the lock was taken (not the
 * transaction's start), so it is later than any refit snapshot taken before this transaction
 * acquired the lock. Returns, in input order, each item's id and whether it was new.
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
  // Batches of one dataset are written side by side (the dataset lock is shared by ingests), so
  // each takes its row locks in one global order — new ids in external id order (unique index
  // entries), existing rows in item id order (below) — and two batches that share ids wait for
  // each other rather than deadlock.
  const inIdOrder = Array.from({ length: n }, (_, i) => i).sort((a, b) => (externalIds[a] < externalIds[b] ? -1 : externalIds[a] > externalIds[b] ? 1 : 0));
  const out = new Array<UpsertedItem>(n);
  // New ids go in by COPY under a savepoint; the per-id lookup runs only when one already exists
  // (it costs one index probe per id, ~5 ms per 1,000, and on a dataset growing faster than
  // autovacuum analyses it, a plan that reads the whole dataset per batch). A concurrent batch may
  // commit one of our "new" ids meanwhile: the COPY then fails, and the lookup runs again.
  let fresh = inIdOrder;
  let replaced: number[] = [];
  let existingIds = new Map<string, bigint>();
  for (;;) {
    await tx.exec('SAVEPOINT upsert_items');
    try {
      const ids = fresh.length > 0 ? await copyNewItems(tx, datasetId, dim, fresh, externalIds, vectors, metadata) : [];
      await tx.exec('RELEASE SAVEPOINT upsert_items');
      fresh.forEach((i, f) => (out[i] = { itemId: ids[f], inserted: true }));
      break;
    } catch (error) {
      if ((error as { code?: unknown } | null)?.code !== UNIQUE_VIOLATION) throw error;
      await tx.exec('ROLLBACK TO SAVEPOINT upsert_items');
    }
    // A join on unnest probes the (dataset_id, external_id) unique index once per id; `= ANY($2)`
    // lets a stale row estimate pick the dataset's updated_at index and filter every item instead.
    const existing = await tx.query<{ id: string; external_id: string }>(
      `SELECT i.id::text AS id, i.external_id FROM unnest($2::text[]) AS e(external_id)
         JOIN items i ON i.dataset_id = $1 AND i.external_id = e.external_id`,
      [datasetId, externalIds],
    );
    existingIds = new Map(existing.map((r) => [r.external_id, BigInt(r.id)]));
    fresh = [];
    replaced = [];
    for (const i of inIdOrder) (existingIds.has(externalIds[i]) ? replaced : fresh).push(i);
  }

  if (replaced.length > 0) {
    await tx.exec(INGEST_SCRATCH);
    function* tuples(): Generator<BinaryField[]> {
      for (const i of replaced) {
        yield [
          { type: 'text', value: externalIds[i] },
          { type: 'vector', value: vectors, offset: i * dim, dim },
          { type: 'jsonb', value: metadata[i] },
        ];
      }
    }
    await tx.copyIn('ingest_batch (external_id, embedding, metadata)', 'binary', binaryCopy(tuples()));
    // The UPDATE's join locks rows in the plan's order; taken first in id order (NO KEY: the
    // indexer's foreign key checks take KEY SHARE on these rows and must not wait).
    await tx.query('SELECT 1 FROM items WHERE id = ANY($1::bigint[]) ORDER BY id FOR NO KEY UPDATE', [replaced.map((i) => String(existingIds.get(externalIds[i])!))]);
    await tx.query(
      `UPDATE items i SET embedding = b.embedding, metadata = b.metadata, updated_at = clock_timestamp()
         FROM ingest_batch b WHERE i.dataset_id = $1 AND i.external_id = b.external_id`,
      [datasetId],
    );
    for (const i of replaced) out[i] = { itemId: existingIds.get(externalIds[i])!, inserted: false };
  }
  return out;
}

/** Copies rows `rows` of the batch into `items` as new items, with ids drawn from its sequence in one round trip; returns their ids. */
async function copyNewItems(
  tx: Sql,
  datasetId: string,
  dim: number,
  rows: readonly number[],
  externalIds: readonly string[],
  vectors: Float32Array,
  metadata: readonly string[],
): Promise<bigint[]> {
  // Ids drawn in order; without concurrent draws they are one range, sent as its ends only
  // (1,000 ids as text cost ~6 ms of formatting and parsing per batch).
  const [alloc] = await tx.query<{ now_us: string; lo: string; ids: string[] | null }>(
    `WITH drawn AS (SELECT nextval(pg_get_serial_sequence('items', 'id')) AS id FROM generate_series(1, $1::int))
     SELECT ((extract(epoch FROM clock_timestamp()) * 1000000)::int8)::text AS now_us, min(id)::text AS lo,
            CASE WHEN max(id) - min(id) + 1 = $1 THEN NULL ELSE array_agg(id ORDER BY id)::text[] END AS ids FROM drawn`,
    [rows.length],
  );
  const writtenAt = BigInt(alloc.now_us) - PG_EPOCH_MICROS;
  const lo = BigInt(alloc.lo);
  const ids = alloc.ids ? alloc.ids.map(BigInt) : Array.from({ length: rows.length }, (_, f) => lo + BigInt(f));
  function* tuples(): Generator<BinaryField[]> {
    for (let f = 0; f < rows.length; f++) {
      const i = rows[f];
      yield [
        { type: 'int8', value: ids[f] },
        { type: 'uuid', value: datasetId },
        { type: 'text', value: externalIds[i] },
        { type: 'vector', value: vectors, offset: i * dim, dim },
        { type: 'jsonb', value: metadata[i] },
        { type: 'int8', value: writtenAt }, // timestamptz on the wire: microseconds since 2000-01-01
      ];
    }
  }
  await tx.copyIn('items (id, dataset_id, external_id, embedding, metadata, updated_at)', 'binary', binaryCopy(tuples()));
  return ids;
}

/** Embeddings of many items, row-major, with their ids. */
export interface EmbeddingMatrix {
  ids: BigInt64Array;
  vectors: Float32Array;
  n: number;
}

/**
 * Streams embeddings out with binary COPY into one growing Float32Array (no per-row objects, no
 * text parsing). `where` is a trusted SQL condition on `items`; `limit` caps the rows (in id order).
 */
export async function readEmbeddings(db: Sql, dim: number, where: string, limit?: number): Promise<EmbeddingMatrix> {
  const cap = limit !== undefined ? ` LIMIT ${Math.floor(limit)}` : '';
  return readEmbeddingRows(db, dim, `(SELECT id, embedding FROM items WHERE ${where} ORDER BY id${cap})`, limit ?? 1024);
}

/** Decodes a COPY of (id, embedding) rows of `source`, a trusted query. */
function readEmbeddingRows(db: Sql, dim: number, source: string, expected: number): Promise<EmbeddingMatrix> {
  return decodeEmbeddingRows(db, dim, source, expected, false);
}

/** Embeddings with a score per row (SemDeDup's cluster members). */
export interface ScoredEmbeddingMatrix extends EmbeddingMatrix {
  scores: Float32Array;
}

/** Decodes a COPY of (id, score, embedding) rows of `source`, a trusted query (see readEmbeddings). */
export function readScoredEmbeddingRows(db: Pick<Sql, 'copyOut'>, dim: number, source: string, expected: number): Promise<ScoredEmbeddingMatrix> {
  return decodeEmbeddingRows(db, dim, source, expected, true) as Promise<ScoredEmbeddingMatrix>;
}

/** The columns grow by doubling (sized by `expected`, so normally never). */
async function decodeEmbeddingRows(db: Pick<Sql, 'copyOut'>, dim: number, source: string, expected: number, scored: boolean): Promise<EmbeddingMatrix | ScoredEmbeddingMatrix> {
  let capacity = Math.max(1, expected);
  let ids = new BigInt64Array(capacity);
  let scores = new Float32Array(scored ? capacity : 0);
  let vectors = new Float32Array(capacity * dim);
  let n = 0;
  const vectorField = scored ? 2 : 1;
  const parser = new CopyBinaryParser((fields) => {
    if (n === capacity) {
      capacity *= 2;
      ids = grown(ids, new BigInt64Array(capacity));
      if (scored) scores = grown(scores, new Float32Array(capacity));
      vectors = grown(vectors, new Float32Array(capacity * dim));
    }
    ids[n] = fields[0]!.readBigInt64BE(0);
    if (scored) scores[n] = fields[1]!.readFloatBE(0);
    const got = decodeVectorInto(fields[vectorField]!, vectors, n * dim);
    if (got !== dim) throw new Error(`stored vector has dimension ${got}, dataset has ${dim}`);
    n++;
  });
  for await (const chunk of db.copyOut(source, 'binary')) parser.push(chunk);
  parser.end();
  const matrix = { ids: ids.subarray(0, n), vectors: vectors.subarray(0, n * dim), n };
  return scored ? { ...matrix, scores: scores.subarray(0, n) } : matrix;
}

function grown<T extends BigInt64Array | Float32Array>(from: T, to: T): T {
  to.set(from as never);
  return to;
}

/** Which of a dataset's items `readDatasetEmbeddings` reads: all, or only those matching every given condition. */
export interface EmbeddingFilter {
  /** Written (stored or replaced) after this instant (ISO 8601). */
  changedAfter?: string;
  /** Item ids above this one (a page's keyset). */
  afterId?: bigint;
  /** Item ids below this one (the end of a range). */
  beforeId?: bigint;
  /** At most this many rows, the lowest ids first. */
  limit?: number;
}

/** The embeddings of a dataset's items in id order (see `readEmbeddings`), optionally narrowed by `filter`. */
export async function readDatasetEmbeddings(db: Sql, datasetId: string, dim: number, filter: EmbeddingFilter = {}): Promise<EmbeddingMatrix> {
  const conditions = [`dataset_id = ${uuidLiteral(datasetId)}`];
  if (filter.changedAfter !== undefined) conditions.push(`updated_at > '${new Date(filter.changedAfter).toISOString()}'::timestamptz`);
  if (filter.afterId !== undefined) conditions.push(`id > ${BigInt(filter.afterId)}`);
  if (filter.beforeId !== undefined) conditions.push(`id < ${BigInt(filter.beforeId)}`);
  return readEmbeddings(db, dim, conditions.map((c) => `(${c})`).join(' AND '), filter.limit);
}

/** A dataset's item count and the range of its item ids (null when it has no items). */
export async function itemIdRange(db: Sql, datasetId: string): Promise<{ n: number; minId: bigint; maxId: bigint } | null> {
  const [row] = await db.query<{ n: number; min: string | null; max: string | null }>(
    'SELECT count(*)::int AS n, min(id)::text AS min, max(id)::text AS max FROM items WHERE dataset_id = $1',
    [datasetId],
  );
  return row.min === null ? null : { n: row.n, minId: BigInt(row.min), maxId: BigInt(row.max!) };
}

/**
 * A seeded Bernoulli sample of the dataset's embeddings: each item is in it with probability
 * `fraction`, decided by a hash of its external id and the seed (the same items, in the same order,
 * for the same seed). The ids are picked from the (dataset_id, external_id) index first, so only the
 * sampled rows' vectors are read.
 */
export async function sampleDatasetEmbeddings(db: Sql, datasetId: string, dim: number, fraction: number, seed: number): Promise<EmbeddingMatrix> {
  const threshold = Math.floor(Math.min(1, Math.max(0, fraction)) * 2 ** 31);
  const salt = BigInt.asIntN(64, BigInt(Math.trunc(seed)) * 0x9e3779b97f4a7c15n);
  // Drawn and ordered by external id, not by the internal id: internal ids come from a sequence every
  // dataset shares, so the same items ingested again (another dataset, a rebuilt database, another
  // ingest order) would otherwise give another sample, and the same seed other prototypes.
  const source = `(WITH picked AS MATERIALIZED (
      SELECT id, external_id FROM items WHERE dataset_id = ${uuidLiteral(datasetId)} AND (hashtextextended(external_id, ${salt}) & 2147483647) < ${threshold})
    SELECT i.id, i.embedding FROM picked p JOIN items i ON i.id = p.id ORDER BY p.external_id COLLATE "C")`;
  return readEmbeddingRows(db, dim, source, 1024);
}

/** How many items the dataset holds. */
export async function countItems(db: Sql, datasetId: string): Promise<number> {
  const [row] = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM items WHERE dataset_id = $1', [datasetId]);
  return row.n;
}

/**
 * Whether the dataset holds at least `n` items: reads at most `n` index entries, not the whole
 * dataset — and first the span of its item ids (two index probes): ids are unique, so a span
 * shorter than `n` answers no at once (a large first fit's threshold is not counted after every batch).
 */
export async function holdsAtLeast(db: Sql, datasetId: string, n: number): Promise<boolean> {
  const [span] = await db.query<{ span: string | null }>(
    'SELECT ((SELECT max(id) FROM items WHERE dataset_id = $1) - (SELECT min(id) FROM items WHERE dataset_id = $1) + 1)::text AS span',
    [datasetId],
  );
  if (span.span === null || BigInt(span.span) < BigInt(n)) return false;
  const [row] = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM (SELECT 1 FROM items WHERE dataset_id = $1 LIMIT $2) s', [datasetId, n]);
  return row.n >= n;
}

/** External ids of item rows, in the order given; ids of rows deleted meanwhile come back as null. */
export async function externalIdsOf(db: Sql, itemIds: ArrayLike<number>): Promise<(string | null)[]> {
  const rows = await db.query<{ id: number; external_id: string }>('SELECT id::float8 AS id, external_id FROM items WHERE id = ANY($1::bigint[])', [
    Array.from(itemIds, String),
  ]);
  const byId = new Map(rows.map((r) => [Number(r.id), r.external_id]));
  return Array.from(itemIds, (id) => byId.get(id) ?? null);
}

/** The external ids of `externalIds` the dataset holds, in no particular order (one indexed probe per id). */
export async function existingExternalIds(db: Sql, datasetId: string, externalIds: readonly string[]): Promise<string[]> {
  const rows = await db.query<{ external_id: string }>('SELECT external_id FROM items WHERE dataset_id = $1 AND external_id = ANY($2::text[])', [
    datasetId,
    externalIds,
  ]);
  return rows.map((r) => r.external_id);
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
 * the rest follows the lock order (store/ann-index.ts: item_ann table, pending row, then the item).
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
