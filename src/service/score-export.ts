import { getDedupRun, latestDedupRun } from '../store/dedup.js';
import { isUuid } from '../store/datasets.js';
import { countScores, streamAtActiveVersion } from '../store/ranked-selection.js';
import { copyScoreExport, decodeExportRows, type ExportRow } from '../store/score-export.js';
import type { ServiceContext } from './context.js';
import { getDataset } from './datasets.js';
import { checkEpsilon } from './duplicates.js';
import { ServiceError } from './errors.js';
import { checkMetadataFilter, type MetadataFilter } from './metadata-filter.js';

export type { ExportRow };

/** Which SemDeDup run the duplicate columns come from. */
export interface ScoreExportRequest {
  /** The newest completed run of the active version at this ε; without it, at the dataset's ε, and no columns when there is none. */
  epsilon?: number;
  /** A named dedup run (its job id) of the active version. */
  jobId?: string;
  /** Only the items whose metadata matches. */
  filter?: MetadataFilter;
}

export interface ScoreExport {
  version: number;
  /** Items scored under the version (the percentiles' population). */
  total: number;
  /** Rows the export carries: items matching the filter (`total` without one). */
  matched: number;
  /** The dedup run the duplicate columns report; null when none. */
  dedupJobId: string | null;
  /** Rows in score order (easiest first), in batches. */
  rows: AsyncIterable<ExportRow[]>;
  /** Ends the export's snapshot transaction now; call it when the consumer goes away (a no-op once done). */
  cancel: () => void;
}

/**
 * Every item's score under the active version, streamed from one snapshot in constant memory:
 * external id, score, cluster, percentile, the duplicate group of a completed SemDeDup run, metadata.
 */
export async function exportScores(ctx: ServiceContext, datasetName: string, request: ScoreExportRequest): Promise<ScoreExport> {
  const dataset = await getDataset(ctx, datasetName);
  if (request.epsilon !== undefined) checkEpsilon(request.epsilon);
  const filter = checkMetadataFilter(request.filter);
  const stream = await streamAtActiveVersion(ctx.db, dataset.id, async (tx, version) => {
    const total = await countScores(tx, dataset.id, version);
    const matched = filter === null ? total : await countScores(tx, dataset.id, version, filter);
    let dedupJobId: string | null = null;
    if (request.jobId !== undefined) {
      const run = isUuid(request.jobId) ? await getDedupRun(tx, request.jobId) : undefined;
      if (!run || run.datasetId !== dataset.id || run.version !== version || run.completedAt === null) {
        throw new ServiceError('not_found', 'DEDUP_RUN_NOT_FOUND', `dataset ${dataset.name} has no completed dedup run ${request.jobId} of version ${version}`, { jobId: request.jobId });
      }
      dedupJobId = run.jobId;
    } else {
      const epsilon = request.epsilon ?? dataset.settings.duplicateEpsilon;
      const run = await latestDedupRun(tx, dataset.id, version, epsilon);
      if (!run && request.epsilon !== undefined) {
        throw new ServiceError('conflict', 'DEDUP_NOT_RUN', `dataset ${dataset.name} has no completed dedup of version ${version} at epsilon ${epsilon}`, { version, epsilon });
      }
      dedupJobId = run?.jobId ?? null;
    }
    return { head: { total, matched, dedupJobId }, chunks: copyScoreExport(tx, { datasetId: dataset.id, version, total, dedupJobId, filter }) };
  });
  if (!stream) {
    throw new ServiceError('conflict', 'NO_PROTOTYPES', `dataset ${dataset.name} has no prototypes yet: ingest more items or request a refit`, { dataset: dataset.name });
  }
  return { version: stream.version, total: stream.head.total, matched: stream.head.matched, dedupJobId: stream.head.dedupJobId, rows: decodeExportRows(stream.chunks), cancel: stream.cancel };
}
