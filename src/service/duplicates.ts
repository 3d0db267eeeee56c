import type { DistanceKernel, NearestResult } from '../kernels/types.js';
import { movePendingToIndex, nearestStoredCandidates, type PendingProbes } from '../store/ann-index.js';
import type { PrototypeSet } from '../store/prototypes.js';
import type { ServiceContext } from './context.js';
import type { Dataset } from './datasets.js';
import { ServiceError } from './errors.js';

/** Validates a near-duplicate threshold (ε ∈ [0, 2]; cosine similarity ≥ 1 − ε is a duplicate). */
export function checkEpsilon(epsilon: number): void {
  if (!(epsilon >= 0 && epsilon <= 2)) throw new ServiceError('invalid', 'INVALID_EPSILON', 'epsilon must be in [0, 2]', { field: 'epsilon' });
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
 * Above this many query vectors, a native lookup is split into LOOKUP_STATEMENTS statements run side
 * by side on their own connections: the HNSW searches are CPU-bound in the server, one core each.
 */
const LOOKUP_SPLIT_MIN = 64;
const LOOKUP_STATEMENTS = 2;

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

/**
 * For each unit vector, the most similar stored item: the dataset's HNSW index (pgvector, cosine)
 * over indexed items, plus an exact scan of the items stored since the index last caught up that
 * lie in the query's PENDING_PROBES nearest clusters (the newest PENDING_PER_CLUSTER of each; all
 * pending items before the first fit; the clusters of the previous version too while the refit
 * relabels pending items after its switch), so a just-ingested duplicate is found at a cost that does
 * not grow with the backlog. Similarities are exact
 * float32 cosine similarities whatever type the index is built on. `known.set` (the active
 * prototype set) saves a lookup and `known.probes` (pendingProbes of these vectors against it) a
 * MatMul, when the caller has them; `known.probesPerQuery` is for benchmarks. The statements and
 * how they run: nearestStoredSql and nearestStoredCandidates (store/ann-index.ts).
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
  const best: NearestStored[] = Array.from({ length: n }, () => ({ externalId: null, similarity: null, duplicate: false }));
  if (n === 0) return best;
  const probes: PendingProbes[] = [];
  // Probed: the active version's clusters, and while a relabel after a switch is under way the
  // previous version's, which pending items may still carry. Without a set (deleted by a switch
  // meanwhile), the items labelled with its version are scanned in full: slower, still exact.
  for (const version of [dataset.activeVersion, dataset.relabelVersion]) {
    if (version === null || probes.some((p) => p.version === version)) continue;
    if (known.probes?.version === version) {
      probes.push(known.probes);
      continue;
    }
    const set = known.set?.version === version ? known.set : await ctx.prototypes.get(ctx.db, dataset.id, version, dataset.dimension).catch(() => undefined);
    if (set) probes.push(await pendingProbes(ctx.kernel, vectors, n, set, known.probesPerQuery));
  }
  const parts = ctx.db.backend === 'native' && n >= LOOKUP_SPLIT_MIN ? LOOKUP_STATEMENTS : 1;
  const per = Math.ceil(n / parts);
  const ranges = Array.from({ length: parts }, (_, p) => ({ from: p * per, to: Math.min(n, (p + 1) * per) })).filter((r) => r.from < r.to);
  const answers = await Promise.all(ranges.map((range) => nearestStoredCandidates(ctx.db, dataset, vectors, range, probes)));
  for (const candidates of answers) {
    for (const c of candidates) {
      const similarity = 1 - c.distance;
      const current = best[c.query];
      if (current.similarity === null || similarity > current.similarity) {
        best[c.query] = { externalId: c.externalId, similarity, duplicate: similarity >= 1 - eps - 1e-6 };
      }
    }
  }
  return best;
}

/**
 * Moves up to `limit` pending items into the HNSW-indexed table (one transaction, so a crash leaves
 * them pending; the lock order and why no stale vector survives: store/ann-index.ts). Runs in the
 * background so ingest never pays for HNSW insertion. Returns how many.
 */
export async function indexPendingVectors(ctx: ServiceContext, limit: number): Promise<number> {
  return ctx.db.transaction((tx) => movePendingToIndex(tx, limit));
}
