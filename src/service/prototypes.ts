import { centroidDrift } from '../core/incremental.js';
import { activeJob } from '../store/jobs.js';
import { scoresPerCluster } from '../store/scores.js';
import type { ServiceContext } from './context.js';
import { getDataset, type Dataset } from './datasets.js';
import { jobView, type JobView } from './jobs.js';

export interface PrototypeStatus {
  /** Active prototype version; null before the first fit. */
  version: number | null;
  k: number | null;
  /** Items per cluster under the active version (index = cluster id). */
  clusterSizes: number[];
  /** Mini-batch updates applied since the full fit. */
  revision: number;
  fitItems: number;
  itemsSinceFit: number;
  /** Items arrived since the full fit / all items. */
  arrivedFraction: number;
  /** Centroid movement since the full fit (1 − cos), mean and max over centroids. */
  drift: { mean: number; max: number };
  objective: number | null;
  fittedAt: Date | null;
  /** The refit queued or running, if any. */
  refitJob: JobView | null;
}

export async function prototypeStatus(ctx: ServiceContext, datasetName: string): Promise<PrototypeStatus> {
  return prototypeStatusOf(ctx, await getDataset(ctx, datasetName));
}

/** `prototypeStatus` of a dataset already looked up. */
export async function prototypeStatusOf(ctx: ServiceContext, dataset: Dataset): Promise<PrototypeStatus> {
  const job = await activeJob(ctx.db, dataset.id, 'refit');
  const refitJob = job ? jobView(job, dataset.name) : null;
  if (dataset.activeVersion === null) {
    return { version: null, k: null, clusterSizes: [], revision: 0, fitItems: 0, itemsSinceFit: 0, arrivedFraction: 0, drift: { mean: 0, max: 0 }, objective: null, fittedAt: null, refitJob };
  }
  const set = await ctx.prototypes.get(ctx.db, dataset.id, dataset.activeVersion, dataset.dimension);
  const sizes = await scoresPerCluster(ctx.db, dataset.id, set.version);
  const clusterSizes = new Array<number>(set.k).fill(0);
  for (const s of sizes) clusterSizes[s.cluster] = s.n;
  const drift = centroidDrift(set.fitCentroids, set.centroids, set.k, set.dim);
  return {
    version: set.version,
    k: set.k,
    clusterSizes,
    revision: set.revision,
    fitItems: set.fitItems,
    itemsSinceFit: set.itemsSinceFit,
    arrivedFraction: set.itemsSinceFit / (set.fitItems + set.itemsSinceFit),
    drift: { mean: drift.mean, max: drift.max },
    objective: set.objective,
    fittedAt: set.createdAt,
    refitJob,
  };
}
