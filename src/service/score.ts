import { fnv1a32 } from '../core/random.js';
import { percentileOf, scoresFromSimilarity } from '../core/scores.js';
import { chooseAutoPolicy, type AutoPolicy } from '../core/auto-policy.js';
import { buildHierarchy, hierarchicalQuotas } from '../core/hierarchical.js';
import { budgetSize, decideKeep, DEFAULT_SELECTION_ORDER, selectWithRule, type KeepRule, type RequestedOrder, type SelectionOrder } from '../core/selection.js';
import type { PrototypeSet } from '../store/prototypes.js';
import type { ServiceContext } from './context.js';
import { getDataset } from './datasets.js';
import { nearestOfProbes, nearestStored, pendingProbes } from './duplicates.js';
import { ServiceError } from './errors.js';
import type { Distribution } from './score-distributions.js';
import { checkSelectionRequest, selectionOptions, type AppliedPolicy, type SelectionRequest } from './selection.js';
import { embedItems } from './ingest.js';
import { checkMetadataFilter } from './metadata-filter.js';
import { normalizeInto } from '../core/normalize.js';
import type { AnyItem } from './ingest-items.js';

/** A new item to score: an embedding or an image, encoded as for ingest (see `AnyItem`). */
export type ScoreCandidate = Omit<AnyItem, 'metadata'>;

/** The policy a candidate's keep/skip decision follows, as for a selection (default: hardest 30%). */
export type ScorePolicy = Omit<SelectionRequest, 'count' | 'dedup'> & { epsilon?: number };

export const DEFAULT_SCORE_POLICY = { order: DEFAULT_SELECTION_ORDER, fraction: 0.3 };

export type CandidateScore =
  | {
      externalId: string;
      status: 'scored';
      score: number;
      cluster: number;
      /** Fraction of the dataset's items (those matching the policy's filter) whose score is ≤ this one (1 = harder than everything stored). */
      percentile: number;
      nearest: { externalId: string; similarity: number } | null;
      /** The nearest stored item is within the near-duplicate threshold (similarity ≥ 1 − ε). */
      duplicate: boolean;
      /** `skip` when the policy would prune it or it nearly duplicates a stored item. */
      decision: 'keep' | 'skip';
      reason: 'policy-keep' | 'policy-prune' | 'near-duplicate';
    }
  | { externalId: string; status: 'error'; code: string; message: string };

export interface ScoreResult {
  prototypeVersion: number;
  /** The policy the decisions followed: `auto` resolved (and what it measured) once a candidate was scored. */
  policy: { order: RequestedOrder; fraction: number; balance: 'none' | 'cluster'; seed: number; epsilon: number; auto: AutoPolicy | null };
  /** Stored items the decisions and percentiles were taken against: those matching the policy's filter (all without one); null when no candidate was scored. */
  matched: number | null;
  items: CandidateScore[];
}

type ResolvedScorePolicy = Required<Omit<ScorePolicy, 'epsilon' | 'outlierFraction' | 'bins' | 'filter'>> & ScorePolicy;

/**
 * The keep rule of the policy over the stored distribution, cached per policy: `auto` resolved
 * from the distribution's clusters as a selection resolves it, `hierarchical` from the prototypes.
 */
async function ruleFor(ctx: ServiceContext, distribution: Distribution, policy: ResolvedScorePolicy, set: PrototypeSet): Promise<{ rule: KeepRule; applied: AppliedPolicy }> {
  const key = JSON.stringify([policy.order, policy.fraction, policy.balance, policy.seed, policy.outlierFraction, policy.bins]);
  const cached = distribution.rules.get(key);
  if (cached) return cached;
  const { columns } = distribution;
  const sizes = new Int32Array(set.k);
  const sums = new Float64Array(set.k);
  for (let i = 0; i < columns.n; i++) {
    sizes[columns.clusters[i]]++;
    sums[columns.clusters[i]] += columns.scores[i];
  }
  const size = budgetSize({ fraction: policy.fraction }, columns.n);
  let applied: AppliedPolicy = { order: policy.order as SelectionOrder, balance: policy.balance, auto: null };
  if (policy.order === 'auto') {
    const auto = chooseAutoPolicy(sizes, Float64Array.from(sums, (sum, c) => (sizes[c] > 0 ? sum / sizes[c] : 0)), size);
    applied = { order: auto.order, balance: auto.balance, auto };
  }
  const options = selectionOptions({ ...policy, order: applied.order, balance: applied.balance });
  if (applied.order === 'hierarchical') {
    const tree = await buildHierarchy(set.centroids, set.k, set.dim, sizes, { seed: policy.seed, kernel: ctx.kernel });
    options.quotas = hierarchicalQuotas(tree, size);
  }
  const entry = { rule: selectWithRule({ scores: columns.scores, clusters: columns.clusters, idHashes: columns.idHashes }, options).rule, applied };
  distribution.rules.set(key, entry);
  return entry;
}

/**
 * "Should we annotate these?": scores new images or embeddings against the active prototypes
 * without storing them. Per item: score, nearest cluster, percentile within the dataset, the most
 * similar stored item, and keep/skip under a selection policy — the decision the same selection
 * over the stored items would make for an item like this one.
 */
export async function scoreBatch(ctx: ServiceContext, datasetName: string, candidates: readonly ScoreCandidate[], policyInput: Partial<ScorePolicy> = {}): Promise<ScoreResult> {
  const dataset = await getDataset(ctx, datasetName);
  const policy = {
    order: policyInput.order ?? DEFAULT_SCORE_POLICY.order,
    fraction: policyInput.fraction ?? DEFAULT_SCORE_POLICY.fraction,
    balance: policyInput.balance ?? 'none',
    seed: policyInput.seed ?? 0,
    outlierFraction: policyInput.outlierFraction,
    bins: policyInput.bins,
    filter: policyInput.filter,
  } as const;
  checkSelectionRequest(policy);
  const filter = checkMetadataFilter(policy.filter);
  const epsilon = policyInput.epsilon ?? dataset.settings.duplicateEpsilon;
  const version = dataset.activeVersion;
  if (version === null) {
    throw new ServiceError('conflict', 'NO_PROTOTYPES', `dataset ${dataset.name} has no prototypes yet: ingest more items or request a refit`, { dataset: dataset.name });
  }

  const dim = dataset.dimension;
  const embedded = await embedItems(ctx, dataset, candidates);
  const results = new Array<CandidateScore>(candidates.length);
  const good: number[] = [];
  const vectors = new Float32Array(candidates.length * dim);
  embedded.forEach((result, i) => {
    const externalId = candidates[i].externalId;
    const fail = (code: string, message: string) => (results[i] = { externalId, status: 'error', code, message });
    if ('error' in result) return fail(result.error.code, result.error.message);
    const problem = normalizeInto(result.embedding, dim, dataset.name, vectors, good.length * dim);
    if (problem) return fail(problem.code, problem.message);
    good.push(i);
  });

  let matched: number | null = null;
  let applied: AppliedPolicy | null = null;
  if (good.length > 0) {
    const n = good.length;
    const unit = vectors.subarray(0, n * dim);
    const set = await ctx.prototypes.get(ctx.db, dataset.id, version, dim);
    // One MatMul against the prototypes gives both each item's score and the clusters whose
    // not-yet-indexed items the near-duplicate lookup scans.
    const probes = await pendingProbes(ctx.kernel, unit, n, set);
    const nearest = nearestOfProbes(probes);
    const [neighbours, distribution] = await Promise.all([nearestStored(ctx, dataset, unit, n, epsilon, { set, probes }), ctx.scoreDistributions.get(ctx.db, dataset.id, version, filter)]);
    matched = distribution.columns.n;
    const scores = scoresFromSimilarity(nearest.similarity);
    const resolved = await ruleFor(ctx, distribution, policy, set);
    const { rule } = resolved;
    applied = resolved.applied;
    good.forEach((i, j) => {
      const externalId = candidates[i].externalId;
      const neighbour = neighbours[j];
      const kept = decideKeep(rule, scores[j], nearest.cluster[j], fnv1a32(externalId));
      results[i] = {
        externalId,
        status: 'scored',
        score: scores[j],
        cluster: nearest.cluster[j],
        percentile: percentileOf(distribution.sorted, scores[j]),
        nearest: neighbour.externalId === null ? null : { externalId: neighbour.externalId, similarity: neighbour.similarity! },
        duplicate: neighbour.duplicate,
        decision: neighbour.duplicate || !kept ? 'skip' : 'keep',
        reason: neighbour.duplicate ? 'near-duplicate' : kept ? 'policy-keep' : 'policy-prune',
      };
    });
  }
  return {
    prototypeVersion: version,
    policy: { order: applied?.order ?? policy.order, fraction: policy.fraction, balance: applied?.balance ?? policy.balance, seed: policy.seed, epsilon, auto: applied?.auto ?? null },
    matched,
    items: results,
  };
}
