import { findNearDuplicates, SIMILARITY_TOLERANCE } from '../core/dedup.js';
import { findDatasetById, isUuid } from '../store/datasets.js';
import {
  boundaryCounts,
  completeDedupRun,
  copyBoundaryItems,
  insertDedupPairs,
  readBoundaryItems,
  createDedupRun,
  getDedupRun,
  latestDedupRun,
  pruneDedupRuns,
  readClusterMembers,
  readDuplicateGroups,
  type DedupRunRow,
  type StoredDuplicateGroup,
} from '../store/dedup.js';
import { activeJob, countJobParts, createJobParts, deleteJobParts, mergeJobResult, readJobPartParams } from '../store/jobs.js';
import { findPrototypeSetRow, loadPrototypeSet, type PrototypeSet } from '../store/prototypes.js';
import { scoresPerCluster } from '../store/scores.js';
import type { ServiceContext } from './context.js';
import { getDataset, toDataset, type Dataset } from './datasets.js';
import { checkEpsilon, PENDING_PROBE_MARGIN } from './duplicates.js';
import { ServiceError } from './errors.js';
import type { DedupPart, DedupPartResult, DedupResult, Job } from './job-kinds.js';
import { JobAbortedError, jobView, queueJob, type JobRun, type JobView, type PartRun } from './jobs.js';

/** How a SemDeDup run splits its work (DedupOptions' defaults). */
export const DEDUP_DEFAULTS = {
  /** Items per part at most, unless one cluster alone is larger: a part is one claim, one fenced write. */
  partItems: 50_000,
  /** Completed runs kept per dataset (older ones, and runs of other versions, are deleted with their pairs). */
  keepRuns: 4,
  /**
   * A kept item is also compared with the kept items of its second-nearest cluster when that
   * prototype is within this much cosine similarity of its own (the margin of the near-duplicate
   * lookup's probes, PENDING_PROBE_MARGIN, for the same reason: only then can a near-duplicate sit
   * on the other side of the boundary).
   */
  boundaryMargin: PENDING_PROBE_MARGIN,
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
 * A stage's parts: whole clusters packed largest first into parts of at most `partItems` items (a
 * larger cluster is a part of its own). A part's memory is bounded by its largest cluster.
 */
export function dedupParts(stage: DedupPart['stage'], version: number, epsilon: number, sizes: readonly { cluster: number; n: number }[], partItems: number): DedupPart[] {
  // Every cluster with an item: a singleton has nothing to compare within, but can be a boundary item.
  const bySize = [...sizes].filter((s) => s.n >= 1).sort((a, b) => b.n - a.n || a.cluster - b.cluster);
  const parts: DedupPart[] = [];
  let current: DedupPart | null = null;
  let items = 0;
  for (const { cluster, n } of bySize) {
    if (current === null || items + n > partItems) {
      current = { stage, version, epsilon, clusters: [], sizes: [] };
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
 * The dedup job: SemDeDup (Abbas et al., 2023) of the active version, cluster by cluster, in two
 * stages of parts any replica's worker claims (dedupPart). It pins the version and creates the
 * first stage's parts: each cluster compared within itself, and its kept items that lie near the
 * boundary of a neighbouring cluster recorded. Then the second stage: each cluster's kept items
 * compared with the boundary items aimed at it, so a near-duplicate pair split by the clustering
 * is found too. The run completes only if the version is still the active one (a refit's cleanup
 * deletes the scores the parts read: a run that straddled a switch fails with VERSION_SUPERSEDED,
 * and is asked again). A restarted run keeps its parts: only the open ones are done again, and
 * each part's pairs are written once, with its mark done.
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
      await createJobParts(tx, job.id, dedupParts('clusters', pinned, epsilon, sizes, options.partItems));
      await mergeJobResult(tx, run.lease, plan);
    });
  }
  const planMs = Date.now() - started;
  const compareStarted = Date.now();
  await run.runParts((done, total) => run.progress('compare', done, total));
  const compareMs = Date.now() - compareStarted;
  let boundaryItems = job.result.boundaryItems;
  const boundaryStarted = Date.now();
  if (boundaryItems === undefined) {
    const aimed = await run.read((tx) => boundaryCounts(tx, job.id));
    // Cluster sizes as the plan counted them, from the first stage's parts (not a second count over every score row).
    const sizes = new Map<number, number>();
    for (const params of (await readJobPartParams(ctx.db, job.id)) as unknown as DedupPart[]) {
      if (params.stage === 'clusters') params.clusters.forEach((c, i) => sizes.set(c, params.sizes[i]));
    }
    boundaryItems = aimed.reduce((sum, a) => sum + a.n, 0);
    // A boundary part costs about its clusters' members plus the items aimed at them.
    const weights = aimed.map((a) => ({ cluster: a.cluster, n: (sizes.get(a.cluster) ?? 0) + a.n }));
    const firstPart = (await countJobParts(ctx.db, job.id)).total;
    const found = boundaryItems;
    await run.write(async (tx) => {
      await createJobParts(tx, job.id, dedupParts('boundary', plan.version, epsilon, weights, options.partItems), firstPart);
      await mergeJobResult(tx, run.lease, { boundaryItems: found });
    });
  }
  await run.runParts((done, total) => run.progress('boundary', done, total));
  const boundaryMs = Date.now() - boundaryStarted;
  const totals = await run.writeLocked(dataset.id, async (tx, locked) => {
    if (locked.activeVersion !== plan.version) {
      throw new ServiceError('conflict', 'VERSION_SUPERSEDED', `dataset ${dataset.name} switched to version ${locked.activeVersion} while this dedup compared version ${plan.version}`);
    }
    const counted = await completeDedupRun(tx, job.id);
    await pruneDedupRuns(tx, dataset.id, plan.version, options.keepRuns);
    await deleteJobParts(tx, job.id);
    return counted;
  });
  return { ...plan, boundaryItems, ...totals, timings: { planMs, compareMs, boundaryMs, totalMs: Date.now() - started } };
}

/** Similarities per kernel call at most (rows × columns), bounding a part's scratch memory. */
const SIMILARITY_BLOCK = 512 * 8192;

/**
 * For each row, the best cluster other than its own when that prototype's similarity is within
 * `margin` of its own prototype's (−1 otherwise).
 */
async function secondClusters(ctx: ServiceContext, vectors: Float32Array, n: number, own: number, set: PrototypeSet, margin: number): Promise<Int32Array> {
  const { k, dim } = set;
  const out = new Int32Array(n).fill(-1);
  const block = Math.max(1, Math.floor(SIMILARITY_BLOCK / k));
  for (let start = 0; start < n; start += block) {
    const rows = Math.min(block, n - start);
    const sims = await ctx.kernel.similarities(vectors.subarray(start * dim, (start + rows) * dim), rows, set.centroids, k, dim);
    for (let r = 0; r < rows; r++) {
      let best = -1;
      let bestSim = -Infinity;
      for (let c = 0; c < k; c++) {
        if (c !== own && sims[r * k + c] > bestSim) [best, bestSim] = [c, sims[r * k + c]];
      }
      if (best >= 0 && bestSim >= sims[r * k + own] - margin) out[start + r] = best;
    }
  }
  return out;
}

/**
 * A dedup part. Stage "clusters": each of its clusters read on its own (members, scores and
 * embeddings of the pinned version), compared within itself through the distance kernel; its
 * pairs, and its kept items near a neighbouring cluster, written in one fenced transaction with
 * the mark done. Stage "boundary": each cluster's kept items against the boundary items aimed at
 * it; a pair across the boundary drops the item SemDeDup would visit later (the lower score, then
 * the higher item id), so following duplicates to what they duplicate always ends at a kept item.
 * Holds one cluster's vectors at a time.
 */
export async function dedupPart(ctx: ServiceContext, job: { id: string; datasetId: string | null }, part: DedupPart, run: PartRun, options: DedupOptions = DEDUP_DEFAULTS): Promise<DedupPartResult> {
  const row = job.datasetId ? await findDatasetById(ctx.db, job.datasetId) : undefined;
  if (!row) throw new ServiceError('not_found', 'DATASET_NOT_FOUND', `dataset ${job.datasetId} was deleted`);
  const setRow = await findPrototypeSetRow(ctx.db, row.id, part.version);
  if (!setRow) throw new ServiceError('conflict', 'VERSION_SUPERSEDED', `prototype version ${part.version} of dataset ${row.name} is gone`);
  const dim = row.dimension;
  const pairs = { duplicateIds: [] as bigint[], keptIds: [] as bigint[], similarities: [] as number[] };
  const boundary = { itemIds: [] as bigint[], clusters: [] as number[] };
  const result: DedupPartResult = { items: 0, duplicates: 0, boundary: 0 };
  const set = part.stage === 'clusters' ? await loadPrototypeSet(ctx.db, setRow, dim) : null;
  for (let c = 0; c < part.clusters.length; c++) {
    if (run.signal.aborted) throw new JobAbortedError('shutdown');
    const cluster = part.clusters[c];
    if (set) {
      const members = await readClusterMembers(ctx.db, row.id, part.version, cluster, dim, part.sizes[c] ?? 1024);
      result.items += members.n;
      // One cluster at a time: every member is in "cluster 0" of the core's view.
      const groups = await findNearDuplicates(members.vectors, members.n, dim, new Int32Array(members.n), members.scores, { epsilon: part.epsilon, kernel: ctx.kernel });
      const dropped = new Set<number>();
      for (const group of groups) {
        group.duplicates.forEach((d, j) => {
          dropped.add(d);
          pairs.duplicateIds.push(members.ids[d]);
          pairs.keptIds.push(members.ids[group.kept]);
          pairs.similarities.push(group.similarities[j]);
        });
      }
      const second = await secondClusters(ctx, members.vectors, members.n, cluster, set, options.boundaryMargin);
      for (let i = 0; i < members.n; i++) {
        if (second[i] >= 0 && !dropped.has(i)) {
          boundary.itemIds.push(members.ids[i]);
          boundary.clusters.push(second[i]);
        }
      }
    } else {
      await compareAcross(ctx, job.id, row.id, part, cluster, dim, pairs, result);
    }
  }
  const written = { duplicateIds: BigInt64Array.from(pairs.duplicateIds), keptIds: BigInt64Array.from(pairs.keptIds), similarities: Float32Array.from(pairs.similarities) };
  result.boundary = boundary.itemIds.length;
  await run.finish(async (tx) => {
    // Not COPY: an item re-ingested into another cluster during the run can be a duplicate in two parts (the first one stays).
    result.duplicates = await insertDedupPairs(tx, job.id, written);
    await copyBoundaryItems(tx, job.id, BigInt64Array.from(boundary.itemIds), Int32Array.from(boundary.clusters));
  }, result);
  return result;
}

/** Stage "boundary" for one cluster: its kept items against the boundary items aimed at it (see dedupPart). */
async function compareAcross(
  ctx: ServiceContext,
  jobId: string,
  datasetId: string,
  part: DedupPart,
  cluster: number,
  dim: number,
  pairs: { duplicateIds: bigint[]; keptIds: bigint[]; similarities: number[] },
  result: DedupPartResult,
): Promise<void> {
  const aimed = await readBoundaryItems(ctx.db, jobId, datasetId, part.version, cluster, dim);
  if (aimed.n === 0) return;
  const kept = await readClusterMembers(ctx.db, datasetId, part.version, cluster, dim, part.sizes[part.clusters.indexOf(cluster)] ?? 1024, jobId);
  result.items += aimed.n + kept.n;
  if (kept.n === 0) return;
  const threshold = 1 - part.epsilon - SIMILARITY_TOLERANCE;
  const block = Math.max(1, Math.min(aimed.n, 512));
  const tile = Math.max(1, Math.floor(SIMILARITY_BLOCK / block));
  const madeDuplicate = new Set<bigint>();
  for (let start = 0; start < aimed.n; start += block) {
    const rows = Math.min(block, aimed.n - start);
    const best = new Float32Array(rows).fill(-Infinity);
    const bestAt = new Int32Array(rows).fill(-1);
    for (let t = 0; t < kept.n; t += tile) {
      const cols = Math.min(tile, kept.n - t);
      const sims = await ctx.kernel.similarities(aimed.vectors.subarray(start * dim, (start + rows) * dim), rows, kept.vectors.subarray(t * dim, (t + cols) * dim), cols, dim);
      for (let r = 0; r < rows; r++) {
        for (let j = 0; j < cols; j++) if (sims[r * cols + j] > best[r]) [best[r], bestAt[r]] = [sims[r * cols + j], t + j];
      }
    }
    for (let r = 0; r < rows; r++) {
      if (!(best[r] >= threshold)) continue;
      const b = start + r;
      const a = bestAt[r];
      // SemDeDup keeps the item farther from its prototype (the higher score; ties: the lower id).
      const keepAimed = aimed.scores[b] > kept.scores[a] || (aimed.scores[b] === kept.scores[a] && aimed.ids[b] < kept.ids[a]);
      const [dup, keep] = keepAimed ? [kept.ids[a], aimed.ids[b]] : [aimed.ids[b], kept.ids[a]];
      if (madeDuplicate.has(dup)) continue;
      madeDuplicate.add(dup);
      pairs.duplicateIds.push(dup);
      pairs.keptIds.push(keep);
      pairs.similarities.push(best[r]);
    }
  }
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

/** A group: the item SemDeDup keeps, its near-duplicates (most similar first) and their cosine similarity to it. */
export type DuplicateGroupView = StoredDuplicateGroup;

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

const INT8_MAX = 2n ** 63n - 1n;

/** A page cursor: the run and the last kept item id of the page before. */
function encodeCursor(jobId: string, keptItemId: bigint): string {
  return `${jobId}.${keptItemId}`;
}

function decodeCursor(cursor: string): { jobId: string; keptItemId: bigint } {
  const match = /^([0-9a-f-]{36})\.(\d{1,19})$/.exec(cursor);
  // Item ids are int8: a larger number was never returned (and would fail in the query).
  if (!match || !isUuid(match[1]) || BigInt(match[2]) > INT8_MAX) throw new ServiceError('invalid', 'INVALID_CURSOR', 'cursor is not one this endpoint returned', { field: 'cursor' });
  return { jobId: match[1], keptItemId: BigInt(match[2]) };
}

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
  return { run: runView(run), groups: page.groups, nextCursor: page.more ? encodeCursor(run.jobId, page.lastKeptItemId!) : null };
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
      if (page.groups.length > 0) yield page.groups;
      if (!page.more) break;
      after = page.lastKeptItemId!;
    }
    // A run pruned mid-stream (newer runs completed) would end the stream short without this.
    if (!(await getDedupRun(ctx.db, run.jobId))) throw new ServiceError('conflict', 'DEDUP_RUN_GONE', `dedup run ${run.jobId} was deleted while it was being read; read the newest run again`);
  }
  return { run: runView(run), groups: chunks() };
}
