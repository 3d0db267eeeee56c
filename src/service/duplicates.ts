import { findNearDuplicates } from '../core/dedup.js';
import { normalizeRows } from '../core/normalize.js';
import { vectorLiteral } from '../store/database.js';
import { ANN_RERANK_CANDIDATES, annExpression, annIndexKind, annQueryOperand, uuidLiteral } from '../store/datasets.js';
import type { ServiceContext } from './context.js';
import { getDataset, type Dataset } from './datasets.js';
import { ServiceError } from './errors.js';
import { readActiveScores } from './selection.js';

export interface DuplicateGroupView {
  /** The item SemDeDup keeps. */
  kept: string;
  /** External ids of its near-duplicates. */
  duplicates: string[];
}

export interface DuplicateReport {
  version: number;
  epsilon: number;
  groups: DuplicateGroupView[];
  /** Items that would be dropped (all duplicates of all groups). */
  duplicateCount: number;
}

function checkEpsilon(epsilon: number): void {
  if (!(epsilon >= 0 && epsilon <= 2)) throw new ServiceError('invalid', 'INVALID_EPSILON', 'epsilon must be in [0, 2]', { field: 'epsilon' });
}

/** SemDeDup over the whole dataset: near-duplicate groups within each cluster of the active version. */
export async function findDuplicates(ctx: ServiceContext, datasetName: string, epsilon?: number): Promise<DuplicateReport> {
  const dataset = await getDataset(ctx, datasetName);
  const eps = epsilon ?? dataset.settings.duplicateEpsilon;
  checkEpsilon(eps);
  const { version, items } = await readActiveScores(ctx, dataset, true);
  const groups = await findNearDuplicates(items.vectors!, items.n, dataset.dimension, items.clusters, items.scores, { epsilon: eps, kernel: ctx.kernel });
  const views = groups.map((g) => ({ kept: items.externalIds[g.kept], duplicates: g.duplicates.map((d) => items.externalIds[d]) }));
  return { version, epsilon: eps, groups: views, duplicateCount: views.reduce((sum, g) => sum + g.duplicates.length, 0) };
}

export interface NearestStored {
  /** The most similar stored item, or null for an empty dataset. */
  externalId: string | null;
  similarity: number | null;
  /** similarity ≥ 1 − ε. */
  duplicate: boolean;
}

/**
 * The statement `nearestStored` runs (`$1`: the query vectors, text[]), exported so tests can
 * EXPLAIN it. Each query vector is parsed once (the materialised `q`). Indexed items are searched
 * through the dataset's HNSW index with exactly its expression (see `annIndexKind`): on `vector`
 * (d ≤ 2,000) the index order and distances are exact; on `halfvec` (2,001-4,000) the index yields
 * its `ANN_RERANK_CANDIDATES` nearest, re-ranked by the exact float32 `vector` distance, so the
 * similarity reported (and the duplicate decision) never carries halfvec rounding. Pending items
 * are scanned exactly. One statement, so both sources are read from one snapshot: the background
 * indexer moving an item from pending to indexed between two queries would otherwise hide it.
 */
export function nearestStoredSql(dataset: Pick<Dataset, 'id' | 'dimension'>): string {
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
  return `WITH q AS MATERIALIZED (SELECT ord, v::vector(${dim}) AS v FROM unnest($1::text[]) WITH ORDINALITY AS t(v, ord))
     SELECT q.ord, nn.external_id, nn.distance FROM q CROSS JOIN LATERAL (${indexed}) nn
     UNION ALL
     SELECT q.ord, nn.external_id, nn.distance FROM q CROSS JOIN LATERAL (
       SELECT i.external_id, i.embedding <=> q.v AS distance
         FROM ann_pending p JOIN items i ON i.id = p.item_id
        WHERE p.dataset_id = ${ds}
        ORDER BY i.embedding <=> q.v LIMIT 1) nn`;
}

/**
 * For each unit vector, the most similar stored item: the dataset's HNSW index (pgvector, cosine)
 * over indexed items, plus an exact scan of the items stored since the index last caught up, so a
 * just-ingested duplicate is never missed. One round trip for the whole batch. Similarities are
 * exact float32 cosine similarities whatever type the index is built on.
 */
export async function nearestStored(ctx: ServiceContext, dataset: Dataset, vectors: Float32Array, n: number, epsilon?: number): Promise<NearestStored[]> {
  const eps = epsilon ?? dataset.settings.duplicateEpsilon;
  checkEpsilon(eps);
  const dim = dataset.dimension;
  const literals = Array.from({ length: n }, (_, i) => vectorLiteral(vectors.subarray(i * dim, (i + 1) * dim)));
  const rows = await ctx.db.query<{ ord: string; external_id: string; distance: number }>(nearestStoredSql(dataset), [literals]);
  const best: NearestStored[] = Array.from({ length: n }, () => ({ externalId: null, similarity: null, duplicate: false }));
  for (const r of rows) {
    const i = Number(r.ord) - 1;
    const similarity = 1 - Number(r.distance);
    const current = best[i];
    if (current.similarity === null || similarity > current.similarity) {
      best[i] = { externalId: r.external_id, similarity, duplicate: similarity >= 1 - eps - 1e-6 };
    }
  }
  return best;
}

/** Checks new (not stored) embeddings for near-duplicates among a dataset's stored items. */
export async function checkNearDuplicates(ctx: ServiceContext, datasetName: string, embeddings: ArrayLike<number>[], epsilon?: number): Promise<NearestStored[]> {
  const dataset = await getDataset(ctx, datasetName);
  const dim = dataset.dimension;
  const vectors = new Float32Array(embeddings.length * dim);
  embeddings.forEach((e, i) => {
    if (e.length !== dim) throw new ServiceError('invalid', 'DIMENSION_MISMATCH', `embedding ${i} has ${e.length} values, expected ${dim}`, { field: `embeddings/${i}` });
    vectors.set(Array.from(e, Number), i * dim);
  });
  const { invalidRows } = normalizeRows(vectors, embeddings.length, dim, vectors);
  if (invalidRows.length > 0) {
    const i = invalidRows[0];
    throw new ServiceError('invalid', 'INVALID_EMBEDDING', `embedding ${i} is zero or not finite`, { field: `embeddings/${i}` });
  }
  return nearestStored(ctx, dataset, vectors, embeddings.length, epsilon);
}

/**
 * Moves up to `limit` pending items into the HNSW-indexed table (one statement, so a crash leaves
 * them pending). Runs in the background so ingest never pays for HNSW insertion. Returns how many.
 */
export async function indexPendingVectors(ctx: ServiceContext, limit: number): Promise<number> {
  const rows = await ctx.db.query(
    `WITH batch AS (
       DELETE FROM ann_pending WHERE item_id IN (SELECT item_id FROM ann_pending ORDER BY item_id LIMIT $1 FOR UPDATE SKIP LOCKED)
       RETURNING item_id)
     INSERT INTO item_ann (item_id, dataset_id, embedding)
     SELECT i.id, i.dataset_id, i.embedding FROM batch b JOIN items i ON i.id = b.item_id
     ON CONFLICT (item_id) DO UPDATE SET embedding = EXCLUDED.embedding
     RETURNING item_id`,
    [limit],
  );
  return rows.length;
}
