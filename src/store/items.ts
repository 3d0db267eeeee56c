import { lockAnnTable } from './ann-index.js';
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

/**
 * SQL condition on `items`: no score of `version` yet. It names the dataset as item_scores' key
 * (dataset_id, item_id, version) does, so Postgres reads only this dataset's scores through that
 * key; without it, it anti-joined against every score row of every dataset (minutes on a large
 * database). `version + 0` keeps the (dataset_id, version, score) index out of the probe: right
 * after a refit's bulk COPY the statistics still say the new version has no scores, and the
 * planner probed that index for every late item, reading the version's whole index range each
 * time (minutes for a few thousand late items next to a million scores). Through the key, each
 * probe reads one item's few score rows whatever the statistics say.
 */
export function lacksScore(version: number): string {
  return `NOT EXISTS (SELECT 1 FROM item_scores s WHERE s.dataset_id = items.dataset_id AND s.item_id = items.id AND s.version + 0 = ${Number(version)})`;
}

/** Which of a dataset's items `readDatasetEmbeddings` reads: all, or only those matching every given condition. */
export interface EmbeddingFilter {
  /** Written (stored or replaced) after this instant (ISO 8601). */
  changedAfter?: string;
  /** Without a score of this version yet. */
  unscoredIn?: number;
}

/** The embeddings of a dataset's items (see `readEmbeddings`), optionally narrowed by `filter`. */
export async function readDatasetEmbeddings(db: Sql, datasetId: string, dim: number, filter: EmbeddingFilter = {}): Promise<EmbeddingMatrix> {
  const conditions = [`dataset_id = ${uuidLiteral(datasetId)}`];
  if (filter.changedAfter !== undefined) conditions.push(`updated_at > '${new Date(filter.changedAfter).toISOString()}'::timestamptz`);
  if (filter.unscoredIn !== undefined) conditions.push(lacksScore(filter.unscoredIn));
  return readEmbeddings(db, dim, conditions.map((c) => `(${c})`).join(' AND '));
}

/** How many items the dataset holds. */
export async function countItems(db: Sql, datasetId: string): Promise<number> {
  const [row] = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM items WHERE dataset_id = $1', [datasetId]);
  return row.n;
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
