import { findNearDuplicates } from '../core/dedup.js';
import { findDatasetById, isUuid } from '../store/datasets.js';
import {
  completeDedupRun,
  copyDedupPairs,
  createDedupRun,
  getDedupRun,
  latestDedupRun,
  pruneDedupRuns,
  readClusterMembers,
  readDuplicateGroups,
  type DedupRunRow,
  type StoredDuplicateGroup,
} from '../store/dedup.js';
import { activeJob, createJobParts, deleteJobParts, mergeJobResult, readJobPartResults } from '../store/jobs.js';
import { scoresPerCluster } from '../store/scores.js';
import type { ServiceContext } from './context.js';
import { getDataset, toDataset, type Dataset } from './datasets.js';
import { checkEpsilon } from './duplicates.js';
import { ServiceError } from './errors.js';
import type { DedupPart, DedupPartResult, DedupResult, Job } from './job-kinds.js';
import { JobAbortedError, jobView, queueJob, type JobRun, type JobView, type PartRun } from './jobs.js';

/** How a SemDeDup run splits its work (DedupOptions' defaults). */
export const DEDUP_DEFAULTS = {
  /** Items per part at most, unless one cluster alone is larger: a part is one claim, one fenced write. */
  partItems: 50_000,
  /** Completed runs kept per dataset (older ones, and runs of other versions, are deleted with their pairs). */
  keepRuns: 4,
};

export type DedupOptions = typeof DEDUP_DEFAULTS;

/**
 * Queues SemDeDup of the dataset's active version at ε (default: the dataset's duplicate_epsilon),
 * or returns the run already queued or running at the same ε. One runs per dataset at a time: a
 * request at another ε meanwhile is a conflict naming the running job.
 */
export async function requestDedup(ctx: ServiceContext, datasetName: string, epsilon?: number): Promise<JobView> {
  const dataset = await getDataset(ctx, datasetName);
  const eps = epsilon ?? dataset.settings.duplicateEpsilon;
  checkEpsilon(eps);
  if (dataset.activeVersion === null) noPrototypes(dataset);
  const { job, created } = await ctx.db.transaction((tx) => queueJob(tx, dataset.id, 'dedup', { epsilon: eps }));
  if (!created && job.params.epsilon !== eps) {
    throw new ServiceError('conflict', 'DEDUP_RUNNING', `a dedup of dataset ${dataset.name} at epsilon ${String(job.params.epsilon)} is queued or running; ask again when it is done`, {
      jobId: job.id,
      epsilon: job.params.epsilon,
    });
  }
  if (created) ctx.wakeJobs();
  return jobView(job, dataset.name);
}

function noPrototypes(dataset: Dataset): never {
  throw new ServiceError('conflict', 'NO_PROTOTYPES', `dataset ${dataset.name} has no prototypes yet: ingest more items or request a refit`, { dataset: dataset.name });
}

/**
 * The run's parts: whole clusters packed largest first into parts of at most `partItems` items (a
 * larger cluster is a part of its own). A part's memory is bounded by its largest cluster.
 */
export function dedupParts(version: number, epsilon: number, sizes: readonly { cluster: number; n: number }[], partItems: number): DedupPart[] {
  const bySize = [...sizes].filter((s) => s.n >= 2).sort((a, b) => b.n - a.n || a.cluster - b.cluster);
  const parts: DedupPart[] = [];
  let current: DedupPart | null = null;
  let items = 0;
  for (const { cluster, n } of bySize) {
    if (current === null || items + n > partItems) {
      current = { version, epsilon, clusters: [], sizes: [] };
      parts.push(current);
      items = 0;
    }
    current.clusters.push(cluster);
    current.sizes.push(n);
    items += n;
  }
  return parts;
}

/**
 * The dedup job: SemDeDup (Abbas et al., 2023) of the active version, cluster by cluster. It pins
 * the version and creates its parts (groups of clusters, any replica's worker claims them: dedupPart),
 * works on them, and completes the run when all are done — only if the version is still the active
 * one (a refit's cleanup deletes the scores the parts read: a run that straddled a switch fails
 * with VERSION_SUPERSEDED, and is asked again). A restarted run keeps its parts: only the open
 * ones are done again, and each part's pairs are written once, with its mark done.
 */
export async function runDedup(ctx: ServiceContext, job: Job<'dedup'>, run: JobRun, options: DedupOptions = DEDUP_DEFAULTS): Promise<DedupResult> {
  const row = await findDatasetById(ctx.db, job.datasetId!);
  if (!row) throw new ServiceError('not_found', 'DATASET_NOT_FOUND', `dataset ${job.datasetId} was deleted`);
  const dataset = toDataset(row);
  const started = Date.now();
  const epsilon = job.params.epsilon ?? dataset.settings.duplicateEpsilon;
  let plan: Pick<DedupResult, 'version' | 'epsilon' | 'clusters' | 'items' | 'largestCluster'>;
  const { version, clusters, items, largestCluster } = job.result;
  if (version !== undefined && clusters !== undefined && items !== undefined && largestCluster !== undefined) {
    plan = { version, epsilon, clusters, items, largestCluster };
    ctx.logger.info({ jobId: job.id, version }, 'resuming dedup with its open parts');
  } else {
    await run.progress('plan', 0, 1);
    if (dataset.activeVersion === null) noPrototypes(dataset);
    const pinned = dataset.activeVersion;
    const sizes = await run.read((tx) => scoresPerCluster(tx, dataset.id, pinned));
    plan = {
      version: pinned,
      epsilon,
      clusters: sizes.length,
      items: sizes.reduce((sum, s) => sum + s.n, 0),
      largestCluster: sizes.reduce((max, s) => Math.max(max, s.n), 0),
    };
    // Under the dataset's lock: the run's foreign key locks the dataset row, which comes before the job row.
    await run.writeLocked(dataset.id, async (tx) => {
      await createDedupRun(tx, { jobId: job.id, datasetId: dataset.id, version: pinned, epsilon });
      await createJobParts(tx, job.id, dedupParts(pinned, epsilon, sizes, options.partItems));
      await mergeJobResult(tx, run.lease, plan);
    });
  }
  const planMs = Date.now() - started;
  const compareStarted = Date.now();
  await run.runParts((done, total) => run.progress('compare', done, total));
  const compareMs = Date.now() - compareStarted;
  const totals = { groups: 0, duplicates: 0 };
  for (const r of (await readJobPartResults(ctx.db, job.id)) as unknown as DedupPartResult[]) {
    totals.groups += r.groups;
    totals.duplicates += r.duplicates;
  }
  await run.writeLocked(dataset.id, async (tx, locked) => {
    if (locked.activeVersion !== plan.version) {
      throw new ServiceError('conflict', 'VERSION_SUPERSEDED', `dataset ${dataset.name} switched to version ${locked.activeVersion} while this dedup compared version ${plan.version}`);
    }
    await completeDedupRun(tx, job.id, totals);
    await pruneDedupRuns(tx, dataset.id, plan.version, options.keepRuns);
    await deleteJobParts(tx, job.id);
  });
  return { ...plan, ...totals, timings: { planMs, compareMs, totalMs: Date.now() - started } };
}

/**
 * A dedup part: each of its clusters read on its own (members, scores, embeddings of the pinned
 * version), compared within itself through the distance kernel, its pairs kept; all of the part's
 * pairs are written in one fenced COPY with the mark done. Holds one cluster's vectors at a time.
 */
export async function dedupPart(ctx: ServiceContext, job: { id: string; datasetId: string | null }, part: DedupPart, run: PartRun): Promise<DedupPartResult> {
  const row = job.datasetId ? await findDatasetById(ctx.db, job.datasetId) : undefined;
  if (!row) throw new ServiceError('not_found', 'DATASET_NOT_FOUND', `dataset ${job.datasetId} was deleted`);
  const dim = row.dimension;
  const duplicateIds: bigint[] = [];
  const keptIds: bigint[] = [];
  const similarities: number[] = [];
  const result: DedupPartResult = { items: 0, groups: 0, duplicates: 0 };
  for (let c = 0; c < part.clusters.length; c++) {
    if (run.signal.aborted) throw new JobAbortedError('shutdown');
    const members = await readClusterMembers(ctx.db, row.id, part.version, part.clusters[c], dim, part.sizes[c] ?? 1024);
    result.items += members.n;
    // One cluster at a time: every member is in "cluster 0" of the core's view.
    const groups = await findNearDuplicates(members.vectors, members.n, dim, new Int32Array(members.n), members.scores, { epsilon: part.epsilon, kernel: ctx.kernel });
    for (const group of groups) {
      result.groups++;
      group.duplicates.forEach((d, j) => {
        duplicateIds.push(members.itemIds[d]);
        keptIds.push(members.itemIds[group.kept]);
        similarities.push(group.similarities[j]);
      });
    }
  }
  result.duplicates = duplicateIds.length;
  const pairs = { duplicateIds: BigInt64Array.from(duplicateIds), keptIds: BigInt64Array.from(keptIds), similarities: Float32Array.from(similarities) };
  await run.finish((tx) => copyDedupPairs(tx, job.id, pairs), result);
  return result;
}

/** A completed run as clients see it. */
export interface DedupRunView {
  jobId: string;
  version: number;
  epsilon: number;
  groups: number;
  duplicates: number;
  completedAt: Date;
}

export interface DuplicateGroupView {
  /** The item SemDeDup keeps. */
  kept: string;
  /** Its near-duplicates, most similar first, and their cosine similarity to it. */
  duplicates: string[];
  similarities: number[];
}

/** Which run to read: a named one (`jobId`), else the newest completed run of the active version at ε. */
export interface DedupRunQuery {
  epsilon?: number;
  jobId?: string;
}

function runView(run: DedupRunRow): DedupRunView {
  return { jobId: run.jobId, version: run.version, epsilon: run.epsilon, groups: run.groups ?? 0, duplicates: run.duplicates ?? 0, completedAt: run.completedAt! };
}

async function resolveRun(ctx: ServiceContext, datasetName: string, query: DedupRunQuery): Promise<DedupRunRow> {
  const dataset = await getDataset(ctx, datasetName);
  if (query.jobId !== undefined) {
    const run = isUuid(query.jobId) ? await getDedupRun(ctx.db, query.jobId) : undefined;
    if (!run || run.datasetId !== dataset.id || run.completedAt === null) {
      throw new ServiceError('not_found', 'DEDUP_RUN_NOT_FOUND', `dataset ${dataset.name} has no completed dedup run ${query.jobId} (runs of replaced versions are deleted)`, { jobId: query.jobId });
    }
    return run;
  }
  const epsilon = query.epsilon ?? dataset.settings.duplicateEpsilon;
  checkEpsilon(epsilon);
  if (dataset.activeVersion === null) noPrototypes(dataset);
  const run = await latestDedupRun(ctx.db, dataset.id, dataset.activeVersion, epsilon);
  if (!run) {
    const pending = await activeJob(ctx.db, dataset.id, 'dedup');
    throw new ServiceError(
      'conflict',
      'DEDUP_NOT_RUN',
      `dataset ${dataset.name} has no completed dedup of version ${dataset.activeVersion} at epsilon ${epsilon}: ` +
        (pending ? `job ${pending.id} is ${pending.state}` : `request one with POST /v1/datasets/{dataset}/duplicates/jobs`),
      { version: dataset.activeVersion, epsilon, jobId: pending?.id ?? null },
    );
  }
  return run;
}

/** A page cursor: the run and the last kept item id of the page before. */
function encodeCursor(jobId: string, keptItemId: bigint): string {
  return `${jobId}.${keptItemId}`;
}

function decodeCursor(cursor: string): { jobId: string; keptItemId: bigint } {
  const match = /^([0-9a-f-]{36})\.(\d{1,19})$/.exec(cursor);
  if (!match || !isUuid(match[1])) throw new ServiceError('invalid', 'INVALID_CURSOR', 'cursor is not one this endpoint returned', { field: 'cursor' });
  return { jobId: match[1], keptItemId: BigInt(match[2]) };
}

const toView = (g: StoredDuplicateGroup): DuplicateGroupView => ({ kept: g.kept, duplicates: g.duplicates, similarities: g.similarities });

/** One page of a run's groups, by kept item; the cursor pins the run it started on. */
export async function duplicatePage(
  ctx: ServiceContext,
  datasetName: string,
  query: DedupRunQuery & { cursor?: string; limit: number },
): Promise<{ run: DedupRunView; groups: DuplicateGroupView[]; nextCursor: string | null }> {
  const position = query.cursor !== undefined ? decodeCursor(query.cursor) : undefined;
  if (position && query.jobId !== undefined && query.jobId !== position.jobId) {
    throw new ServiceError('invalid', 'INVALID_CURSOR', 'cursor belongs to another dedup run than `job`', { field: 'cursor' });
  }
  const run = await resolveRun(ctx, datasetName, position ? { jobId: position.jobId } : query);
  const page = await readDuplicateGroups(ctx.db, run.jobId, position?.keptItemId ?? 0n, query.limit);
  const more = page.lastKeptItemId !== null && (await readDuplicateGroups(ctx.db, run.jobId, page.lastKeptItemId, 1)).lastKeptItemId !== null;
  return { run: runView(run), groups: page.groups.map(toView), nextCursor: more ? encodeCursor(run.jobId, page.lastKeptItemId!) : null };
}

/** Groups read per statement while streaming. */
export const GROUP_CHUNK = 2000;

/** A whole run's groups, by kept item, in chunks of GROUP_CHUNK: constant memory however many. */
export async function streamDuplicates(ctx: ServiceContext, datasetName: string, query: DedupRunQuery): Promise<{ run: DedupRunView; groups: AsyncIterable<DuplicateGroupView[]> }> {
  const run = await resolveRun(ctx, datasetName, query);
  async function* chunks() {
    let after = 0n;
    for (;;) {
      const page = await readDuplicateGroups(ctx.db, run.jobId, after, GROUP_CHUNK);
      if (page.lastKeptItemId === null) return;
      if (page.groups.length > 0) yield page.groups.map(toView);
      after = page.lastKeptItemId;
    }
  }
  return { run: runView(run), groups: chunks() };
}
