import { select, type SelectionOrder } from '../core/selection.js';
import type { Sql } from '../store/database.js';
import { readScoredItems, type ScoredItems } from '../store/items.js';
import type { ServiceContext } from './context.js';
import { getDataset, type Dataset } from './datasets.js';
import { ServiceError } from './errors.js';

export interface SelectionRequest {
  order: SelectionOrder;
  /** Keep this fraction of the dataset, in (0, 1]. Exactly one of fraction and count. */
  fraction?: number;
  /** Keep this many items (clamped to the dataset size). */
  count?: number;
  balance?: 'none' | 'cluster';
  seed?: number;
  /** `stratified`: fraction of the hardest items set aside as likely outliers (CCS β). */
  outlierFraction?: number;
  /** `stratified`: number of equal-width score bins. */
  bins?: number;
}

export interface Selection {
  /** The prototype version whose scores decided the selection. */
  version: number;
  /** Items in the dataset (scored under that version). */
  total: number;
  /** Selected external ids, in the policy's order. */
  externalIds: string[];
}

function invalid(field: string, message: string): never {
  throw new ServiceError('invalid', 'INVALID_SELECTION', message, { field });
}

function checkRequest(r: SelectionRequest): void {
  if ((r.fraction === undefined) === (r.count === undefined)) invalid('fraction', 'give exactly one of fraction and count');
  if (r.fraction !== undefined && !(r.fraction > 0 && r.fraction <= 1)) invalid('fraction', 'fraction must be in (0, 1]');
  if (r.count !== undefined && !(Number.isInteger(r.count) && r.count >= 0)) invalid('count', 'count must be a non-negative integer');
  if (r.seed !== undefined && !Number.isSafeInteger(r.seed)) invalid('seed', 'seed must be an integer');
  if (r.outlierFraction !== undefined && !(r.outlierFraction >= 0 && r.outlierFraction < 1)) invalid('outlierFraction', 'outlierFraction must be in [0, 1)');
  if (r.bins !== undefined && !(Number.isInteger(r.bins) && r.bins >= 1 && r.bins <= 10_000)) invalid('bins', 'bins must be an integer from 1 to 10000');
}

/**
 * Reads the active version and its scores in one REPEATABLE READ snapshot: a version switch
 * committing meanwhile cannot mix versions or remove the scores being read.
 */
export async function readActiveScores(ctx: ServiceContext, dataset: Dataset, withVectors = false): Promise<{ version: number; items: ScoredItems }> {
  return ctx.db.transaction(async (tx: Sql) => {
    await tx.query('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ');
    const [row] = await tx.query<{ version: number | null }>('SELECT active_version AS version FROM datasets WHERE id = $1', [dataset.id]);
    if (!row || row.version === null) {
      throw new ServiceError('conflict', 'NO_PROTOTYPES', `dataset ${dataset.name} has no prototypes yet: ingest more items or request a refit`, {
        dataset: dataset.name,
      });
    }
    const items = await readScoredItems(tx, dataset.id, row.version, withVectors ? dataset.dimension : null);
    return { version: row.version, items };
  });
}

/** Selects external ids of a dataset by a pruning policy (deterministic; ties broken by external id). */
export async function selectItems(ctx: ServiceContext, datasetName: string, request: SelectionRequest): Promise<Selection> {
  checkRequest(request);
  const dataset = await getDataset(ctx, datasetName);
  const { version, items } = await readActiveScores(ctx, dataset);
  const chosen = select(
    { scores: items.scores, clusters: items.clusters, idHashes: items.idHashes },
    {
      order: request.order,
      budget: request.fraction !== undefined ? { fraction: request.fraction } : { count: request.count! },
      balance: request.balance ?? 'none',
      seed: request.seed ?? 0,
      outlierFraction: request.outlierFraction,
      bins: request.bins,
    },
  );
  const externalIds = new Array<string>(chosen.length);
  for (let i = 0; i < chosen.length; i++) externalIds[i] = items.externalIds[chosen[i]];
  return { version, total: items.n, externalIds };
}
