import { findNearDuplicates } from '../core/dedup.js';
import { normalizeRows } from '../core/normalize.js';
import { vectorLiteral } from '../store/database.js';
import type { DistanceKernel, NearestResult } from '../kernels/types.js';
import { ANN_RERANK_CANDIDATES, annExpression, annIndexKind, annQueryOperand, uuidLiteral } from '../store/datasets.js';
import { movePendingToIndex } from '../store/items.js';
import type { PrototypeSet } from '../store/prototypes.js';
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
 * Clusters whose pending (not yet indexed) items a lookup scans for each query vector, at most: the
 * query's PENDING_PROBES most similar prototypes of the active version. A near-duplicate (similarity ≥
 * 1 − ε, ε ≤ 0.05 by default) of the query almost always shares one of them with it;
 * bench/score-backlog.ts measures how often, also on data whose clusters split dense regions (the
 * hard case).
 */
export const PENDING_PROBES = 2;

/**
 * A runner-up cluster is probed only when its prototype is about as similar to the query as the
 * nearest one (within this much cosine similarity): only then can a near-duplicate of the query
 * sit on its side of the boundary. Moving from a query to a near-duplicate at similarity ≥ 0.95
 * changes its similarity to a prototype by at most √(2·0.05) ≈ 0.32, but by ~0.32/√d (≈ 0.014 at
 * d = 512) along a random direction; 0.05 leaves ~3.5 of those. On well-separated clusters
 * almost every query probes one cluster; where clusters split dense regions, most probe two.
 */
export const PENDING_PROBE_MARGIN = 0.05;

/**
 * Pending items scanned at most per probed cluster, the newest first (the ones the index is least
 * likely to have caught up with): a lookup reads at most PENDING_PROBES × PENDING_PER_CLUSTER
 * pending items per query vector, however large the backlog. The scan is complete while a
 * cluster holds no more pending items than this (a backlog up to about this × k items).
 */
export const PENDING_PER_CLUSTER = 128;

/**
 * Above this many query vectors, a native lookup is split into LOOKUP_STATEMENTS statements run side
 * by side on their own connections: the HNSW searches are CPU-bound in the server, one core each.
 */
const LOOKUP_SPLIT_MIN = 64;
const LOOKUP_STATEMENTS = 2;

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
 * The statement `nearestStored` runs (`$1`: the query vectors as text[] of literals, or with
 * `binary` one binary vector[] parameter, see vectorArrayParam), exported so tests can
 * EXPLAIN it. Each query vector is parsed once (the materialised `q`). Indexed items are searched
 * through the dataset's HNSW index with exactly its expression (see `annIndexKind`): on `vector`
 * (d ≤ 2,000) the index order and distances are exact; on `halfvec` (2,001-4,000) the index yields
 * its `ANN_RERANK_CANDIDATES` nearest, re-ranked by the exact float32 `vector` distance, so the
 * similarity reported (and the duplicate decision) never carries halfvec rounding. Pending items
 * are scanned exactly: with `probes`, only those labelled with `probes.version` in one of the query's
 * clusters, the newest PENDING_PER_CLUSTER of each (read backwards along ann_pending's (dataset_id,
 * version, cluster, item_id) index), plus every pending item with another label or none (a version
 * switch relabels them, so that set is small); without, all of them. One statement, so both sources are read from one snapshot: the background indexer moving
 * an item from pending to indexed between two queries would otherwise hide it.
 */
export function nearestStoredSql(
  dataset: Pick<Dataset, 'id' | 'dimension'>,
  probes?: PendingProbes,
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
  let probeColumn = '';
  let pendingParts: string[];
  if (probes) {
    const m = probes.perQuery;
    const version = Number(probes.version);
    if (!Number.isInteger(m) || m < 1 || !Number.isInteger(version)) throw new RangeError('invalid pending probes');
    const from = queries?.from ?? 0;
    const to = queries?.to ?? probes.clusters.length / m;
    // Trusted integers only: the statement keeps its single parameter.
    const clusters = Array.from(probes.clusters.subarray(from * m, to * m), (c) => String(c | 0)).join(',');
    probeColumn = `, ('{${clusters}}'::int[])[((t.ord - 1) * ${m} + 1)::int : (t.ord * ${m})::int] AS probes`;
    pendingParts = [
      `SELECT q.ord, nn.external_id, nn.distance FROM q CROSS JOIN LATERAL (
       SELECT i.external_id, i.embedding <=> q.v AS distance
         FROM unnest(q.probes) AS c(cluster)
         CROSS JOIN LATERAL (SELECT p.item_id FROM ann_pending p
                              WHERE p.dataset_id = ${ds} AND p.version = ${version} AND p.cluster = c.cluster
                              ORDER BY p.item_id DESC LIMIT ${PENDING_PER_CLUSTER}) p
         JOIN items i ON i.id = p.item_id
        ORDER BY i.embedding <=> q.v LIMIT 1) nn`,
      pending(`(p.version IS NULL OR p.version < ${version} OR p.version > ${version})`),
    ];
  } else {
    pendingParts = [pending('TRUE')];
  }
  return `WITH q AS MATERIALIZED (SELECT t.ord, t.v::vector(${dim}) AS v${probeColumn} FROM unnest($1::${binary ? 'vector' : 'text'}[]) WITH ORDINALITY AS t(v, ord))
     SELECT q.ord, nn.external_id, nn.distance FROM q CROSS JOIN LATERAL (${indexed}) nn
     UNION ALL
     ${pendingParts.join('\n     UNION ALL\n     ')}`;
}

/**
 * For each unit vector, the clusters whose pending items it scans: its most similar prototype (the
 * lowest index on exact ties, as `DistanceKernel.nearest`), and up to `perQuery` − 1 runners-up
 * whose similarity is within `margin` of it (most similar first; −1 fills the slots of runners-up
 * too far away, which match no pending row).
 */
export async function pendingProbes(
  kernel: DistanceKernel,
  vectors: Float32Array,
  n: number,
  set: PrototypeSet,
  perQuery = PENDING_PROBES,
  margin = PENDING_PROBE_MARGIN,
): Promise<PendingProbes> {
  const { k, dim } = set;
  const m = Math.max(1, Math.min(perQuery, k));
  const clusters = new Int32Array(n * m);
  const similarity = new Float32Array(n);
  const block = 1024;
  const bestSim = new Float32Array(m);
  for (let start = 0; start < n; start += block) {
    const rows = Math.min(block, n - start);
    const sims = await kernel.similarities(vectors.subarray(start * dim, (start + rows) * dim), rows, set.centroids, k, dim);
    for (let r = 0; r < rows; r++) {
      const out = (start + r) * m;
      bestSim.fill(-Infinity);
      const row = r * k;
      for (let c = 0; c < k; c++) {
        const s = sims[row + c];
        if (!(s > bestSim[m - 1])) continue;
        let j = m - 1;
        while (j > 0 && s > bestSim[j - 1]) {
          bestSim[j] = bestSim[j - 1];
          clusters[out + j] = clusters[out + j - 1];
          j--;
        }
        bestSim[j] = s;
        clusters[out + j] = c;
      }
      similarity[start + r] = bestSim[0];
      for (let j = 1; j < m; j++) if (!(bestSim[j] >= bestSim[0] - margin)) clusters[out + j] = -1;
    }
  }
  return { version: set.version, perQuery: m, clusters, similarity };
}

/** Each query's nearest prototype, read off its probes (the MatMul they came from, not a second one). */
export function nearestOfProbes(probes: PendingProbes): NearestResult {
  const n = probes.similarity.length;
  const cluster = new Int32Array(n);
  for (let i = 0; i < n; i++) cluster[i] = probes.clusters[i * probes.perQuery];
  return { cluster, similarity: probes.similarity };
}

const vectorOids = new WeakMap<object, Promise<number>>();

/** The `vector` type's oid in this database (asked once per database handle). */
function vectorTypeOid(db: ServiceContext['db']): Promise<number> {
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
export function vectorArrayParam(oid: number, vectors: Float32Array, from: number, to: number, dim: number): Buffer {
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

/**
 * For each unit vector, the most similar stored item: the dataset's HNSW index (pgvector, cosine)
 * over indexed items, plus an exact scan of the items stored since the index last caught up that
 * lie in the query's PENDING_PROBES nearest clusters (the newest PENDING_PER_CLUSTER of each; all
 * pending items before the first fit), so a just-ingested duplicate is found at a cost that does
 * not grow with the backlog. Similarities are exact
 * float32 cosine similarities whatever type the index is built on. `known.set` (the active
 * prototype set) saves a lookup and `known.probes` (pendingProbes of these vectors against it) a
 * MatMul, when the caller has them; `known.probesPerQuery` is for benchmarks. Each statement runs with JIT off (its cost estimate
 * crosses the JIT thresholds, and compiling costs 70-270 ms, more than the lookup) and without
 * memoize (it would copy every pending candidate's 2 kB row into a cache that rarely hits).
 */
export async function nearestStored(
  ctx: ServiceContext,
  dataset: Dataset,
  vectors: Float32Array,
  n: number,
  epsilon?: number,
  known: { set?: PrototypeSet; probes?: PendingProbes; probesPerQuery?: number } = {},
): Promise<NearestStored[]> {
  const eps = epsilon ?? dataset.settings.duplicateEpsilon;
  checkEpsilon(eps);
  const dim = dataset.dimension;
  const best: NearestStored[] = Array.from({ length: n }, () => ({ externalId: null, similarity: null, duplicate: false }));
  if (n === 0) return best;
  let probes = known.probes?.version === dataset.activeVersion ? known.probes : undefined;
  if (!probes && dataset.activeVersion !== null) {
    const { set } = known;
    const active = set?.version === dataset.activeVersion ? set : await ctx.prototypes.get(ctx.db, dataset.id, dataset.activeVersion, dim).catch(() => undefined);
    // Without the set (deleted by a switch meanwhile), every pending item is scanned: slower, still exact.
    if (active) probes = await pendingProbes(ctx.kernel, vectors, n, active, known.probesPerQuery);
  }
  const parts = ctx.db.backend === 'native' && n >= LOOKUP_SPLIT_MIN ? LOOKUP_STATEMENTS : 1;
  const per = Math.ceil(n / parts);
  const ranges = Array.from({ length: parts }, (_, p) => ({ from: p * per, to: Math.min(n, (p + 1) * per) })).filter((r) => r.from < r.to);
  const oid = ctx.db.backend === 'native' ? await vectorTypeOid(ctx.db) : null;
  const answers = await Promise.all(
    ranges.map(({ from, to }) => {
      const param =
        oid !== null
          ? vectorArrayParam(oid, vectors, from, to, dim)
          : Array.from({ length: to - from }, (_, i) => vectorLiteral(vectors.subarray((from + i) * dim, (from + i + 1) * dim)));
      return ctx.db.transaction(async (tx) => {
        await tx.exec('SET LOCAL jit = off; SET LOCAL enable_memoize = off');
        return tx.query<{ ord: string; external_id: string; distance: number }>(nearestStoredSql(dataset, probes, { from, to }, oid !== null), [param]);
      });
    }),
  );
  answers.forEach((rows, part) => {
    for (const r of rows) {
      const i = ranges[part].from + Number(r.ord) - 1;
      const similarity = 1 - Number(r.distance);
      const current = best[i];
      if (current.similarity === null || similarity > current.similarity) {
        best[i] = { externalId: r.external_id, similarity, duplicate: similarity >= 1 - eps - 1e-6 };
      }
    }
  });
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
 * Moves up to `limit` pending items into the HNSW-indexed table (one transaction, so a crash leaves
 * them pending; the lock order and why no stale vector survives: store/items.ts). Runs in the
 * background so ingest never pays for HNSW insertion. Returns how many.
 */
export async function indexPendingVectors(ctx: ServiceContext, limit: number): Promise<number> {
  return ctx.db.transaction((tx) => movePendingToIndex(tx, limit));
}
