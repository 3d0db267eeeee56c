import { createHash, randomUUID } from 'node:crypto';
import type { Sql } from './database.js';

/**
 * Stored selections: the ordered item ids a paged selection's first page computed, one bytea of
 * 8 bytes per id (big-endian int8, STORAGE EXTERNAL), so a page reads `substring(item_ids …)` —
 * only the TOAST chunks it covers — on whichever replica serves it.
 */
export interface StoredSelection {
  id: string;
  datasetId: string;
  version: number;
  requestHash: string;
  total: number;
  size: number;
  summary: SelectionSummary;
  /** Milliseconds until the row expires, by the database's clock (≤ 0: expired). */
  remainingMs: number;
}

/** What a selection's first page reported beyond its counts; later pages report the same. */
export interface SelectionSummary {
  /** Items that matched the selection's metadata filter (absent: no filter, every item). */
  matched?: number;
  /** The dedup step of a dedup-then-prune selection (absent: none). */
  dedup?: { jobId: string; epsilon: number; keep: 'farthest' | 'closest' | 'random' | 'highest' | 'lowest'; dropped: number };
  /** The policy that ran and the imbalance report, as the service reports them (JSON). */
  policy?: object;
  imbalance?: object | null;
}

export interface NewSelection {
  datasetId: string;
  version: number;
  /** SHA-256 (hex) of the request's parameters. */
  requestHash: string;
  total: number;
  summary: SelectionSummary;
  /** Item row ids in policy order (bigserial values, exact in float64). */
  itemIds: Float64Array;
}

const BYTES_PER_ID = 8;
const TWO_32 = 2 ** 32;

/** Item ids as big-endian int8 (positive and below 2^53, so two uint32 halves suffice). */
export function encodeItemIds(ids: ArrayLike<number>): Buffer {
  const bytes = Buffer.allocUnsafe(ids.length * BYTES_PER_ID);
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i];
    bytes.writeUInt32BE(Math.floor(id / TWO_32), i * BYTES_PER_ID);
    bytes.writeUInt32BE(id % TWO_32, i * BYTES_PER_ID + 4);
  }
  return bytes;
}

export function decodeItemIds(bytes: Uint8Array): Float64Array {
  if (bytes.byteLength % BYTES_PER_ID !== 0) throw new Error(`stored selection slice of ${bytes.byteLength} bytes is not whole ids`);
  const view = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const ids = new Float64Array(bytes.byteLength / BYTES_PER_ID);
  for (let i = 0; i < ids.length; i++) ids[i] = view.readUInt32BE(i * BYTES_PER_ID) * TWO_32 + view.readUInt32BE(i * BYTES_PER_ID + 4);
  return ids;
}

/** What identifies a selection's content: parameters, version, total and the ordered ids. */
function digestOf(input: NewSelection, bytes: Buffer): string {
  return createHash('sha256').update(`${input.requestHash}\n${input.version}\n${input.total}\n`).update(bytes).digest('hex');
}

/**
 * Stores a selection (or, when an identical one — same dataset, parameters, version, total and
 * ids — is stored already, extends that one) and returns its id. Then sweeps, bounded: expired
 * rows, rows of deleted datasets, and this dataset's rows beyond the `keepPerDataset` most
 * recently used. Rows another transaction holds are skipped (SKIP LOCKED), never waited for.
 */
export async function saveSelection(db: Sql, input: NewSelection, ttlMs: number, keepPerDataset: number): Promise<string> {
  const bytes = encodeItemIds(input.itemIds);
  const digest = digestOf(input, bytes);
  // Repeated first pages of an unchanged dataset compute the same ids: reuse the row, skip the upload.
  let [row] = await db.query<{ id: string }>(
    `UPDATE selections SET expires_at = now() + $3::float8 * interval '1 millisecond', summary = $4::jsonb
      WHERE dataset_id = $1 AND digest = $2 RETURNING id::text`,
    [input.datasetId, digest, ttlMs, JSON.stringify(input.summary)],
  );
  if (!row) {
    [row] = await db.query<{ id: string }>(
      `INSERT INTO selections (id, dataset_id, version, request_hash, digest, total, size, item_ids, summary, expires_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $10::jsonb, now() + $9::float8 * interval '1 millisecond')
       ON CONFLICT (dataset_id, digest) DO UPDATE SET expires_at = EXCLUDED.expires_at, summary = EXCLUDED.summary
       RETURNING id::text`,
      [randomUUID(), input.datasetId, input.version, input.requestHash, digest, input.total, input.itemIds.length, bytes, ttlMs, JSON.stringify(input.summary)],
    );
  }
  await sweepSelections(db, input.datasetId, keepPerDataset);
  return row.id;
}

/** Rows deleted per sweep, at most (a sweep runs with every stored selection). */
const SWEEP_BATCH = 64;

export async function sweepSelections(db: Sql, datasetId: string, keepPerDataset: number): Promise<number> {
  const rows = await db.query(
    `DELETE FROM selections WHERE id IN (
       SELECT id FROM selections WHERE id IN (
         (SELECT s.id FROM selections s
           WHERE s.expires_at < now() OR NOT EXISTS (SELECT 1 FROM datasets d WHERE d.id = s.dataset_id)
           LIMIT ${SWEEP_BATCH})
         UNION ALL
         (SELECT id FROM selections WHERE dataset_id = $1 ORDER BY expires_at DESC, created_at DESC OFFSET $2 LIMIT ${SWEEP_BATCH})
       ) FOR UPDATE SKIP LOCKED)
     RETURNING id`,
    [datasetId, keepPerDataset],
  );
  return rows.length;
}

/**
 * The stored selection `id` (unexpired) and its ids at positions [from, from + count), clipped to
 * its size; undefined when there is no such row or it expired.
 */
export async function readSelectionSlice(db: Sql, id: string, from: number, count: number): Promise<{ selection: StoredSelection; itemIds: Float64Array } | undefined> {
  const [row] = await db.query<Omit<StoredSelection, 'remainingMs'> & { remainingMs: number; ids: Uint8Array }>(
    `SELECT id::text, dataset_id::text AS "datasetId", version, request_hash AS "requestHash", total, size, summary,
            (extract(epoch FROM expires_at - now()) * 1000)::float8 AS "remainingMs",
            substring(item_ids FROM $2::int FOR $3::int) AS ids
       FROM selections WHERE id = $1 AND expires_at > now()`,
    [id, from * BYTES_PER_ID + 1, count * BYTES_PER_ID],
  );
  if (!row) return undefined;
  const { ids, ...selection } = row;
  return { selection: { ...selection, remainingMs: Number(selection.remainingMs) }, itemIds: decodeItemIds(ids) };
}

/** Pushes the expiry of an unexpired row to `ttlMs` from now. */
export async function touchSelection(db: Sql, id: string, ttlMs: number): Promise<void> {
  await db.query(`UPDATE selections SET expires_at = now() + $2::float8 * interval '1 millisecond' WHERE id = $1 AND expires_at > now()`, [id, ttlMs]);
}
