import { fnv1a32 } from '../core/random.js';
import { percentileOf, scoresFromSimilarity } from '../core/scores.js';
import { decideKeep, DEFAULT_SELECTION_ORDER, selectWithRule, type KeepRule, type SelectionOrder } from '../core/selection.js';
import type { ServiceContext } from './context.js';
import { getDataset } from './datasets.js';
import { nearestOfProbes, nearestStored, pendingProbes } from './duplicates.js';
import { ServiceError } from './errors.js';
import type { Distribution } from './score-distributions.js';
import { checkSelectionRequest, selectionOptions, type SelectionRequest } from './selection.js';
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
  policy: { order: SelectionOrder; fraction: number; balance: 'none' | 'cluster'; seed: number; epsilon: number };
  /** Stored items the decisions and percentiles were taken against: those matching the policy's filter (all without one); null when no candidate was scored. */
  matched: number | null;
  items: CandidateScore[];
}

function ruleFor(distribution: Distribution, policy: Required<Omit<ScorePolicy, 'epsilon' | 'outlierFraction' | 'bins' | 'filter'>> & ScorePolicy): KeepRule {
  const key = JSON.stringify([policy.order, policy.fraction, policy.balance, policy.seed, policy.outlierFraction, policy.bins]);
  let rule = distribution.rules.get(key);
  if (!rule) {
    const { columns } = distribution;
    rule = selectWithRule({ scores: columns.scores, clusters: columns.clusters, idHashes: columns.idHashes }, selectionOptions(policy)).rule;
    distribution.rules.set(key, rule);
  }
  return rule;
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
    const rule = ruleFor(distribution, policy);
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
  return { prototypeVersion: version, policy: { order: policy.order, fraction: policy.fraction, balance: policy.balance, seed: policy.seed, epsilon }, matched, items: results };
}
