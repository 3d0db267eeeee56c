import { countItems } from '../store/items.js';
import { scoresPerCluster } from '../store/scores.js';
import { countMatchingItems, recentItemWrites, scoreHistogram } from '../store/stats.js';
import type { ServiceContext } from './context.js';
import { getDataset } from './datasets.js';
import { checkMetadataFilter, type MetadataFilter } from './metadata-filter.js';
import { prototypeStatusOf, type PrototypeStatus } from './prototypes.js';

/** Fixed histogram bins: scores (1 − cos) in [0, 1) in steps of 0.025; the last bin also holds everything ≥ 0.975. */
export const HISTOGRAM_BIN_WIDTH = 0.025;
export const HISTOGRAM_BINS = 40;

export interface DatasetStats {
  dataset: string;
  itemCount: number;
  /** Items matching the filter; `itemCount` without one. The counts, histogram and cluster sizes describe these. */
  matched: number;
  /** Items with a score under the active version (all of them once the first fit ran). */
  scoredCount: number;
  prototypeVersion: number | null;
  k: number | null;
  histogram: { binWidth: number; counts: number[] };
  clusterSizes: number[];
  drift: PrototypeStatus['drift'];
  arrivedFraction: number;
  lastRefit: { version: number; fittedAt: Date } | null;
  refitJob: PrototypeStatus['refitJob'];
  /** Items written (stored or replaced), by the hour of their latest write, over the last 24 hours. */
  ingest: { lastHour: number; last24Hours: number; hourly: { hour: Date; items: number }[] };
}

/**
 * What a dashboard polls: counts, the score histogram, cluster sizes, prototype state and ingest
 * activity. Under a metadata filter the item and scored counts, the histogram and the cluster
 * sizes (scored items per cluster) describe the matching items only.
 */
export async function datasetStats(ctx: ServiceContext, datasetName: string, filterInput?: MetadataFilter): Promise<DatasetStats> {
  const filter = checkMetadataFilter(filterInput);
  const dataset = await getDataset(ctx, datasetName);
  const version = dataset.activeVersion;
  const [status, itemCount, matched, bins, perCluster, writes] = await Promise.all([
    prototypeStatusOf(ctx, dataset),
    countItems(ctx.db, dataset.id),
    filter === null ? Promise.resolve(null) : countMatchingItems(ctx.db, dataset.id, filter),
    version === null ? Promise.resolve([]) : scoreHistogram(ctx.db, dataset.id, version, HISTOGRAM_BIN_WIDTH, HISTOGRAM_BINS, filter),
    filter === null || version === null ? Promise.resolve(null) : scoresPerCluster(ctx.db, dataset.id, version, filter),
    recentItemWrites(ctx.db, dataset.id),
  ]);
  const counts = new Array<number>(HISTOGRAM_BINS).fill(0);
  for (const b of bins) counts[b.bin] = b.n;
  let clusterSizes = status.clusterSizes;
  if (perCluster !== null) {
    clusterSizes = new Array<number>(status.k ?? 0).fill(0);
    for (const c of perCluster) if (c.cluster < clusterSizes.length) clusterSizes[c.cluster] = c.n;
  }
  return {
    dataset: dataset.name,
    itemCount: matched ?? itemCount,
    matched: matched ?? itemCount,
    scoredCount: counts.reduce((a, b) => a + b, 0),
    prototypeVersion: status.version,
    k: status.k,
    histogram: { binWidth: HISTOGRAM_BIN_WIDTH, counts },
    clusterSizes,
    drift: status.drift,
    arrivedFraction: status.arrivedFraction,
    lastRefit: status.version === null ? null : { version: status.version, fittedAt: status.fittedAt! },
    refitJob: status.refitJob,
    ingest: {
      lastHour: writes.lastHour,
      last24Hours: writes.last24Hours,
      hourly: writes.hourly.map((h) => ({ hour: new Date(h.hour), items: h.n })),
    },
  };
}
