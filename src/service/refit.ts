import { defaultK, fitKMeans } from '../core/kmeans.js';
import { scoresFromSimilarity } from '../core/scores.js';
import { relabelPending } from '../store/ann-index.js';
import { clockAfterDatasetLock, findDatasetById, switchActiveVersion } from '../store/datasets.js';
import { readDatasetEmbeddings, type EmbeddingFilter } from '../store/items.js';
import { mergeJobResult } from '../store/jobs.js';
import {
  dropSupersededPrototypeSets,
  findPrototypeSetRow,
  insertPrototypeSet,
  loadPrototypeSet,
  nextPrototypeVersion,
  type PrototypeSet,
} from '../store/prototypes.js';
import { copyScores, dropSupersededScores, upsertScores } from '../store/scores.js';
import type { ServiceContext } from './context.js';
import { getDataset, toDataset, type Dataset } from './datasets.js';
import { ServiceError } from './errors.js';
import type { Job, RefitResult } from './job-kinds.js';
import { jobView, JobAbortedError, queueJob, type JobRun, type JobView } from './jobs.js';

/** Rows per COPY of new-version scores; each chunk is one progress step. */
const RESCORE_CHUNK = 50_000;

/** Queues a full refit of the dataset's prototypes (or returns the one already queued or running). */
export async function requestRefit(ctx: ServiceContext, datasetName: string): Promise<JobView> {
  const dataset = await getDataset(ctx, datasetName);
  const { job, created } = await ctx.db.transaction((tx) => queueJob(tx, dataset.id, 'refit', { reason: 'requested' }));
  if (created) ctx.wakeJobs();
  return jobView(job, dataset.name);
}

/**
 * A wall-clock instant after which every item write is visible as `updated_at > instant`: taken
 * while holding the dataset lock, so ingest transactions in flight have committed and later ones
 * stamp their rows after acquiring the lock (see upsertItems).
 */
async function takeSnapshotTime(run: JobRun, datasetId: string): Promise<string> {
  return run.read(async (tx) => (await clockAfterDatasetLock(tx, datasetId)).toISOString());
}

/**
 * After this job switched the dataset to `mine` (replacing `previous`): scores of older versions
 * are garbage, and so are `mine`'s scores the bulk rescore wrote for items deleted while it ran;
 * the previous prototype set is kept for reference, older ones go. Versions newer than `mine` (a
 * later refit's) and the active one are never touched.
 */
async function dropSuperseded(run: JobRun, datasetId: string, mine: number, previous: number | null): Promise<void> {
  await run.write(async (tx) => {
    await dropSupersededScores(tx, datasetId, mine);
    await dropSupersededPrototypeSets(tx, datasetId, mine, previous);
  });
}

/** Writes scores of `version` in chunks of RESCORE_CHUNK, each its own fenced COPY and progress step. */
async function writeScoresInChunks(run: JobRun, datasetId: string, version: number, ids: BigInt64Array, scores: Float32Array, clusters: Int32Array, phase: string) {
  for (let from = 0; from < ids.length; from += RESCORE_CHUNK) {
    const to = Math.min(ids.length, from + RESCORE_CHUNK);
    await run.write((tx) => copyScores(tx, datasetId, version, ids, scores, clusters, from, to));
    await run.progress(phase, to, ids.length);
  }
}

/** Scores the dataset's items of `filter` against `set` and writes them as the set's version (binary COPY). */
async function scoreAndCopy(ctx: ServiceContext, dataset: Dataset, set: PrototypeSet, filter: EmbeddingFilter, run: JobRun, phase: string) {
  const dim = dataset.dimension;
  const matrix = await run.read((tx) => readDatasetEmbeddings(tx, dataset.id, dim, filter));
  for (let from = 0; from < matrix.n; from += RESCORE_CHUNK) {
    const to = Math.min(matrix.n, from + RESCORE_CHUNK);
    const nearest = await ctx.kernel.nearest(matrix.vectors.subarray(from * dim, to * dim), to - from, set.centroids, set.k, dim);
    const ids = matrix.ids.subarray(from, to);
    await run.write((tx) => copyScores(tx, dataset.id, set.version, ids, scoresFromSimilarity(nearest.similarity), nearest.cluster));
    await run.progress(phase, to, matrix.n);
  }
  return matrix.n;
}

/**
 * The refit job: full spherical k-means over every stored embedding, stored as a new prototype
 * version; every item rescored for that version beside the active one; then one short transaction
 * (holding the dataset lock, so no ingest interleaves) scores the items that arrived meanwhile and
 * switches the active version. Readers see all-old or all-new scores, never a mix.
 *
 * Crash safety: the new set is stored together with a checkpoint in the job, and scores are only
 * ever added for a version that is not active yet. A restarted job finds the checkpoint, keeps the
 * fitted set and scores only the items still missing — no manual cleanup, and the previous version
 * serves meanwhile. Every write is fenced by the run's lease (JobRun.write): a run whose job was
 * taken over writes nothing more, so two runs of one refit never both switch or clean up.
 */
export async function runRefit(ctx: ServiceContext, job: Job<'refit'>, run: JobRun): Promise<RefitResult> {
  const { db } = ctx;
  const row = await findDatasetById(db, job.datasetId!);
  if (!row) throw new ServiceError('not_found', 'DATASET_NOT_FOUND', `dataset ${job.datasetId} was deleted`);
  const dataset = toDataset(row);
  const { settings } = dataset;
  const dim = dataset.dimension;
  const started = Date.now();
  const timings: Record<string, number> = {};
  const checkpointVersion = job.result.version ?? null;
  // Items written after this instant were not seen by the fit and are scored before the switch.
  let snapshotAt = job.result.snapshotAt ?? null;
  let setRow = checkpointVersion !== null ? await findPrototypeSetRow(db, dataset.id, checkpointVersion) : undefined;
  let set: PrototypeSet;
  let fitObjective: number | null = null;

  if (checkpointVersion !== null && job.result.previousVersion !== undefined) {
    // The switch committed (it records previousVersion) before the run ended: only the cleanup was left.
    const previous = job.result.previousVersion;
    await run.progress('cleanup', 0, 1);
    await dropSuperseded(run, dataset.id, checkpointVersion, previous);
    return { version: checkpointVersion, previousVersion: previous, k: setRow?.k, fitItems: setRow?.fitItems, objective: setRow?.objective, timings };
  }
  const resumed = setRow !== undefined && snapshotAt !== null;
  if (resumed) {
    set = await loadPrototypeSet(db, setRow!, dim);
    ctx.logger.info({ jobId: job.id, version: set.version }, 'resuming refit from its checkpoint');
  } else {
    await run.progress('read', 0, 1);
    snapshotAt = await takeSnapshotTime(run, dataset.id);
    const matrix = await run.read((tx) => readDatasetEmbeddings(tx, dataset.id, dim));
    timings.readMs = Date.now() - started;
    if (matrix.n === 0) throw new ServiceError('conflict', 'NO_ITEMS', `dataset ${dataset.name} has no items to fit`);
    const k = Math.min(matrix.n, dataset.k ?? Math.min(settings.maxK, defaultK(matrix.n)));
    const fitStarted = Date.now();
    const fit = await fitKMeans(matrix.vectors, matrix.n, dim, {
      k,
      seed: settings.seed,
      kernel: ctx.kernel,
      maxIterations: settings.maxIterations,
      tolerance: settings.tolerance,
      onProgress: (p) => {
        if (run.signal.aborted) throw new JobAbortedError(run.abortReason()!);
        // Large datasets first converge on a sample ("warm-up"), then iterate over every item.
        void run.progress(p.phase === 'warmup' ? 'fit-warmup' : 'fit', p.iteration, settings.maxIterations).catch(() => undefined);
      },
    });
    timings.fitMs = Date.now() - fitStarted;
    fitObjective = fit.objectiveHistory[fit.objectiveHistory.length - 1];
    // Under the dataset's lock: the insert's foreign key locks the dataset row, which must come
    // before the job row (the order of a dataset deletion).
    const version = await run.writeLocked(dataset.id, async (tx) => {
      const v = await nextPrototypeVersion(tx, dataset.id);
      await insertPrototypeSet(tx, { datasetId: dataset.id, version: v, k, dim, centroids: fit.centroids, counts: fit.counts, objective: fitObjective!, fitItems: matrix.n });
      await mergeJobResult(tx, run.lease, { version: v, snapshotAt });
      return v;
    });
    setRow = (await findPrototypeSetRow(db, dataset.id, version))!;
    set = { ...setRow, dim, centroids: fit.centroids, fitCentroids: fit.centroids, counts: fit.counts };
    const writeStarted = Date.now();
    await writeScoresInChunks(run, dataset.id, version, matrix.ids, scoresFromSimilarity(fit.similarity), fit.cluster, 'rescore');
    timings.rescoreWriteMs = Date.now() - writeStarted;
  }

  // Items the fit did not see are scored now, outside the lock, so the switch below stays short:
  // those written since the snapshot (a replaced item lost its pending score), and for a resumed
  // job everything its crashed predecessor never wrote. Whatever is written after `lateSince` is
  // scored inside the switch.
  const lateSince = await takeSnapshotTime(run, dataset.id);
  const unseen: EmbeddingFilter = resumed ? { unscoredIn: set.version } : { changedAfter: snapshotAt!, unscoredIn: set.version };
  await scoreAndCopy(ctx, dataset, set, unseen, run, 'rescore');
  const switchStarted = Date.now();
  const previous = await run.writeLocked(dataset.id, async (tx, locked) => {
    if (locked.activeVersion !== null && locked.activeVersion >= set.version) {
      throw new ServiceError('conflict', 'VERSION_SUPERSEDED', `dataset ${dataset.name} already serves version ${locked.activeVersion}, newer than this refit's ${set.version}`);
    }
    const late = await readDatasetEmbeddings(tx, dataset.id, dim, { changedAfter: lateSince });
    if (late.n > 0) {
      const nearest = await ctx.kernel.nearest(late.vectors, late.n, set.centroids, set.k, dim);
      await upsertScores(tx, dataset.id, set.version, Array.from(late.ids), scoresFromSimilarity(nearest.similarity), nearest.cluster);
    }
    // Never backwards, whatever else ran: a version only replaces an older one.
    await switchActiveVersion(tx, dataset.id, set.version);
    await relabelPending(tx, dataset.id, set.version); // pending items' clusters under the new version (near-duplicate lookups)
    await mergeJobResult(tx, run.lease, { previousVersion: locked.activeVersion });
    return locked.activeVersion;
  });
  timings.switchMs = Date.now() - switchStarted;
  ctx.prototypes.forget(dataset.id);
  await run.progress('cleanup', 0, 1);
  await dropSuperseded(run, dataset.id, set.version, previous);
  timings.totalMs = Date.now() - started;
  return { version: set.version, previousVersion: previous, k: set.k, fitItems: set.fitItems, objective: fitObjective ?? set.objective, timings };
}
