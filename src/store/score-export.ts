import type { Sql } from './database.js';
import { uuidLiteral } from './datasets.js';
import { filterCondition, type ItemFilter } from './metadata-filter.js';
import { decodeCopyRows } from './pgcopy.js';

/** One item of a score export: what a training service joins with its own tables. */
export interface ExportRow {
  externalId: string;
  /** Cosine distance to the nearest prototype of the version. */
  score: number;
  cluster: number;
  /** 100 · (items scoring lower) / (n − 1): 0 the easiest item, 100 the hardest (ties share the lower value). */
  percentile: number;
  /** The external id of the item SemDeDup keeps instead of this one; null when this item is not a duplicate. */
  duplicateOf: string | null;
  /** Cosine similarity to `duplicateOf`. */
  duplicateSimilarity: number | null;
  /** The kept item of this item's near-duplicate group (itself when it is kept with duplicates); null outside any group. */
  duplicateGroup: string | null;
  /** The item's metadata as JSON text. */
  metadata: string;
}

export interface ExportQuery {
  datasetId: string;
  version: number;
  /** Items scored under the version (the percentile's denominator). */
  total: number;
  /** The completed dedup run whose groups the rows report; null: no duplicate columns. */
  dedupJobId: string | null;
  /** Only rows of items whose metadata matches (the percentile stays over every item). */
  filter: ItemFilter | null;
}

function intLiteral(value: number): string {
  if (!Number.isSafeInteger(value)) throw new Error(`not an integer: ${value}`);
  return String(value);
}

/**
 * The export as one query in score order (ties by external id in byte order, as selections break
 * them). The percentile is a running rank() over the score index's order, so the server streams it
 * without holding the partition; duplicate columns come from the run's pairs (one hash of its kept
 * ids). Only validated literals: COPY takes no parameters.
 */
export function exportSource(q: ExportQuery): string {
  const scope = `s.dataset_id = ${uuidLiteral(q.datasetId)} AND s.version = ${intLiteral(q.version)}`;
  const percentile = `(rank() OVER (ORDER BY s.score) - 1) * 100.0::float8 / ${intLiteral(Math.max(1, q.total - 1))}`;
  // Under a filter the rank still runs over every item (a percentile within the dataset), and the
  // rows are filtered after it: the outer ORDER BY is the inner one, so no second sort runs.
  const matches = q.filter === null ? '' : `, ${filterCondition(q.filter)} AS matches`;
  const order = 'ORDER BY s.score, i.external_id COLLATE "C"';
  let source: string;
  if (q.dedupJobId === null) {
    source = `SELECT i.external_id, s.score, s.cluster, ${percentile} AS percentile, NULL::text AS duplicate_of, NULL::real AS similarity, NULL::text AS duplicate_group, i.metadata::text AS metadata${matches}
      FROM item_scores s JOIN items i ON i.id = s.item_id WHERE ${scope}
      ${order}`;
  } else {
    const job = uuidLiteral(q.dedupJobId);
    source = `SELECT i.external_id, s.score, s.cluster, ${percentile} AS percentile, k.external_id AS duplicate_of, p.similarity,
           coalesce(k.external_id, CASE WHEN g.kept_id IS NOT NULL THEN i.external_id END) AS duplicate_group, i.metadata::text AS metadata${matches}
      FROM item_scores s JOIN items i ON i.id = s.item_id
      LEFT JOIN dedup_pairs p ON p.job_id = ${job} AND p.duplicate_id = s.item_id
      LEFT JOIN items k ON k.id = p.kept_id
      LEFT JOIN (SELECT DISTINCT kept_id FROM dedup_pairs WHERE job_id = ${job}) g ON g.kept_id = s.item_id
     WHERE ${scope}
     ${order}`;
  }
  if (q.filter === null) return source;
  return `SELECT e.external_id, e.score, e.cluster, e.percentile, e.duplicate_of, e.similarity, e.duplicate_group, e.metadata
      FROM (${source}) e WHERE e.matches ORDER BY e.score, e.external_id COLLATE "C"`;
}

/** Binary COPY of the export, in score order. */
export function copyScoreExport(db: Sql, q: ExportQuery): AsyncIterable<Buffer> {
  return db.copyOut(`(${exportSource(q)})`, 'binary');
}

const text = (field: Buffer | null) => (field === null ? null : field.toString('utf8'));

/** Decodes the export's binary COPY into batches of rows, 256 KiB of COPY data at a time. */
export function decodeExportRows(chunks: AsyncIterable<Buffer>): AsyncGenerator<ExportRow[]> {
  return decodeCopyRows(
    chunks,
    (f) => ({
      externalId: f[0]!.toString('utf8'),
      score: f[1]!.readFloatBE(0),
      cluster: f[2]!.readInt32BE(0),
      percentile: f[3]!.readDoubleBE(0),
      duplicateOf: text(f[4]),
      duplicateSimilarity: f[5] === null ? null : f[5].readFloatBE(0),
      duplicateGroup: text(f[6]),
      metadata: f[7]!.toString('utf8'),
    }),
    256 * 1024,
  );
}
