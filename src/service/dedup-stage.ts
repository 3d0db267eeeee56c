import { getDedupRun, latestDedupRun } from '../store/dedup.js';
import { stageDedupDrops, type DedupKeep } from '../store/dedup-stage.js';
import { isUuid } from '../store/datasets.js';
import type { Sql } from '../store/database.js';
import type { ItemFilter } from '../store/metadata-filter.js';
import type { Dataset } from './datasets.js';
import { checkEpsilon } from './duplicates.js';
import { ServiceError } from './errors.js';
import { checkPath } from './metadata-filter.js';

export type { DedupKeep };
export const DEDUP_KEEPS: readonly DedupKeep[] = ['farthest', 'closest', 'random', 'highest', 'lowest'];

/**
 * The dedup step of a dedup-then-prune selection: near-duplicate groups of a completed SemDeDup
 * run (the newest of the active version at `epsilon`, or the run of `jobId`) keep one member each,
 * and the policy runs over what remains.
 */
export interface DedupRequest {
  /** In [0, 2]; default the dataset's duplicateEpsilon. */
  epsilon?: number;
  /** A dedup job's id: its run instead of the newest at epsilon. */
  jobId?: string;
  /**
   * Which member of a group stays: `farthest` from its prototype (SemDeDup's own choice, the
   * default), `closest`, `random` (by the selection's seed), or the `highest` / `lowest` number in
   * metadata field `keepField` (members without a number there lose).
   */
  keep?: DedupKeep;
  keepField?: string;
}

/** What the dedup step did, as a selection reports it. */
export interface DedupOutcome {
  jobId: string;
  epsilon: number;
  keep: DedupKeep;
  /** Items (of those matching the filter) the step dropped before the policy ran. */
  dropped: number;
}

function invalid(field: string, message: string): never {
  throw new ServiceError('invalid', 'INVALID_DEDUP', message, { field });
}

/** Validates a dedup step's parameters. */
export function checkDedupRequest(d: DedupRequest): void {
  if (d.epsilon !== undefined) checkEpsilon(d.epsilon);
  if (d.keep !== undefined && !DEDUP_KEEPS.includes(d.keep)) invalid('dedupKeep', `dedupKeep must be one of ${DEDUP_KEEPS.join(', ')}`);
  const byField = d.keep === 'highest' || d.keep === 'lowest';
  if (byField) checkPath(d.keepField, 'dedupKeepField', 'INVALID_DEDUP');
  else if (d.keepField !== undefined) invalid('dedupKeepField', 'dedupKeepField goes with dedupKeep=highest or lowest');
  if (d.jobId !== undefined && d.epsilon !== undefined) invalid('dedupJob', 'give epsilon or a dedup job, not both');
}

/**
 * Runs the dedup step in the selection's snapshot `tx` (version `version`): finds the run, stages
 * its drops among the items matching `filter`, and returns what it did.
 */
export async function stageDedup(tx: Sql, dataset: Dataset, version: number, request: DedupRequest, seed: number, filter: ItemFilter | null): Promise<DedupOutcome> {
  let run;
  if (request.jobId !== undefined) {
    run = isUuid(request.jobId) ? await getDedupRun(tx, request.jobId) : undefined;
    if (!run || run.datasetId !== dataset.id || run.version !== version || run.completedAt === null) {
      throw new ServiceError('not_found', 'DEDUP_RUN_NOT_FOUND', `dataset ${dataset.name} has no completed dedup run ${request.jobId} of version ${version}`, { jobId: request.jobId });
    }
  } else {
    const epsilon = request.epsilon ?? dataset.settings.duplicateEpsilon;
    run = await latestDedupRun(tx, dataset.id, version, epsilon);
    if (!run) {
      throw new ServiceError(
        'conflict',
        'DEDUP_NOT_RUN',
        `dataset ${dataset.name} has no completed dedup of version ${version} at epsilon ${epsilon}: request one with POST /v1/datasets/{dataset}/duplicates/jobs`,
        { version, epsilon },
      );
    }
  }
  const keep = request.keep ?? 'farthest';
  const field = request.keepField === undefined ? null : request.keepField.split('.');
  const dropped = await stageDedupDrops(tx, { jobId: run.jobId, datasetId: dataset.id, version, keep, field, seed, filter });
  return { jobId: run.jobId, epsilon: run.epsilon, keep, dropped };
}
