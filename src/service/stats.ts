import { countItems } from '../store/items.js';
import { recentItemWrites, scoreHistogram } from '../store/stats.js';
import type { ServiceContext } from './context.js';
import { getDataset } from './datasets.js';
import { prototypeStatusOf, type PrototypeStatus } from './prototypes.js';

/** Fixed histogram bins: scores (1 − cos) in [0, 1) in steps of 0.025; the last bin also holds everything ≥ 0.975. */
export const HISTOGRAM_BIN_WIDTH = 0.025;
export const HISTOGRAM_BINS = 40;

export interface DatasetStats {
  dataset: string;
  itemCount: number;
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

/** What a dashboard polls: counts, the score histogram, cluster sizes, prototype state and ingest activity. */
export async function datasetStats(ctx: ServiceContext, datasetName: string): Promise<DatasetStats> {
  const dataset = await getDataset(ctx, datasetName);
  const [status, itemCount, bins, writes] = await Promise.all([
    prototypeStatusOf(ctx, dataset),
    countItems(ctx.db, dataset.id),
    dataset.activeVersion === null ? Promise.resolve([]) : scoreHistogram(ctx.db, dataset.id, dataset.activeVersion, HISTOGRAM_BIN_WIDTH, HISTOGRAM_BINS),
    recentItemWrites(ctx.db, dataset.id),
  ]);
  const counts = new Array<number>(HISTOGRAM_BINS).fill(0);
  for (const b of bins) counts[b.bin] = b.n;
  return {
    dataset: dataset.name,
    itemCount,
    scoredCount: counts.reduce((a, b) => a + b, 0),
    prototypeVersion: status.version,
    k: status.k,
    histogram: { binWidth: HISTOGRAM_BIN_WIDTH, counts },
    clusterSizes: status.clusterSizes,
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
