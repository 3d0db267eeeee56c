import { defaultK, fitKMeans } from '../core/kmeans.js';
import { scoresFromSimilarity } from '../core/scores.js';
import type { Sql } from '../store/database.js';
import { lockDataset, uuidLiteral, type DatasetRow } from '../store/datasets.js';
import { copyScores, readEmbeddings, relabelPending, upsertScores } from '../store/items.js';
import { enqueueJob, mergeJobResult, type JobRow } from '../store/jobs.js';
import { findPrototypeSetRow, insertPrototypeSet, loadPrototypeSet, nextPrototypeVersion, type PrototypeSet } from '../store/prototypes.js';
import type { ServiceContext } from './context.js';
import { getDataset } from './datasets.js';
import { ServiceError } from './errors.js';
import { REFIT_JOB } from './ingest.js';
import { jobView, JobAbortedError, type JobRun, type JobView } from './jobs.js';
import { resolveSettings } from './settings.js';

/** Rows per COPY of new-version scores; each chunk is one progress step. */
const RESCORE_CHUNK = 50_000;

/** Queues a full refit of the dataset's prototypes (or returns the one already queued or running). */
export async function requestRefit(ctx: ServiceContext, datasetName: string): Promise<JobView> {
  const dataset = await getDataset(ctx, datasetName);
  const { job, created } = await ctx.db.transaction((tx) => enqueueJob(tx, dataset.id, REFIT_JOB, { reason: 'requested' }));
  if (created) ctx.wakeJobs();
  return jobView(job, dataset.name);
}

async function datasetById(db: Sql, id: string): Promise<DatasetRow> {
  const rows = await db.query<DatasetRow>(
    `SELECT id, name, dimension, k, settings, active_version AS "activeVersion" FROM datasets WHERE id = $1`,
    [id],
  );
  if (!rows[0]) throw new ServiceError('not_found', 'DATASET_NOT_FOUND', `dataset ${id} was deleted`);
  return rows[0];
}

/** SQL condition on `items`: the dataset's items, optionally only those matching `condition`. */
function itemsOf(datasetId: string, condition?: string): string {
  return `dataset_id = ${uuidLiteral(datasetId)}${condition ? ` AND (${condition})` : ''}`;
}

function changedSince(isoTime: string): string {
  return `updated_at > '${new Date(isoTime).toISOString()}'::timestamptz`;
}

/**
 * A wall-clock instant after which every item write is visible as `updated_at > instant`: taken
 * while holding the dataset lock, so ingest transactions in flight have committed and later ones
 * stamp their rows after acquiring the lock (see upsertItems).
 */
async function takeSnapshotTime(run: JobRun, datasetId: string): Promise<string> {
  return run.read(async (tx) => {
    await lockDataset(tx, datasetId);
    const [row] = await tx.query<{ at: Date }>('SELECT clock_timestamp() AS at');
    return row.at.toISOString();
  });
}

/**
 * SQL condition on `items`: no score of `version` yet. It names the dataset as item_scores' key
 * (dataset_id, item_id, version) does, so Postgres reads only this dataset's scores through that
 * key; without it, it anti-joined against every score row of every dataset (minutes on a large
 * database).
 */
export function lacksScore(version: number): string {
  return `NOT EXISTS (SELECT 1 FROM item_scores s WHERE s.dataset_id = items.dataset_id AND s.item_id = items.id AND s.version = ${Number(version)})`;
}

/**
 * After this job switched the dataset to `mine` (replacing `previous`): scores of older versions
 * are garbage, and so are `mine`'s scores the bulk rescore wrote for items deleted while it ran
 * (item_scores has no foreign key); the previous prototype set is kept for reference, older ones
 * go. Versions newer than `mine` (a later refit's) and the active one are never touched.
 */
async function dropSuperseded(run: JobRun, datasetId: string, mine: number, previous: number | null): Promise<void> {
  await run.write(async (tx) => {
    const active = `(SELECT active_version FROM datasets WHERE id = $1)`;
    await tx.query(`DELETE FROM item_scores WHERE dataset_id = $1 AND version < $2 AND version IS DISTINCT FROM ${active}`, [datasetId, mine]);
    await tx.query(
      'DELETE FROM item_scores s WHERE s.dataset_id = $1 AND s.version = $2 AND NOT EXISTS (SELECT 1 FROM items i WHERE i.id = s.item_id)',
      [datasetId, mine],
    );
    // SKIP LOCKED: sets a dataset deletion is removing are skipped rather than waited for, as that
    // deletion waits for this run's job row (no deadlock).
    await tx.query(
      `DELETE FROM prototype_sets WHERE id IN (SELECT id FROM prototype_sets
         WHERE dataset_id = $1 AND version < $2 AND version IS DISTINCT FROM $3::int AND version IS DISTINCT FROM ${active}
         FOR UPDATE SKIP LOCKED)`,
      [datasetId, mine, previous],
    );
  });
}

/** Writes scores of `version` in chunks of RESCORE_CHUNK, each its own fenced COPY and progress step. */
async function copyInChunks(run: JobRun, datasetId: string, version: number, ids: BigInt64Array, scores: Float32Array, clusters: Int32Array, phase: string) {
  for (let from = 0; from < ids.length; from += RESCORE_CHUNK) {
    const to = Math.min(ids.length, from + RESCORE_CHUNK);
    await run.write((tx) => copyScores(tx, datasetId, version, ids, scores, clusters, from, to));
    await run.progress(phase, to, ids.length);
  }
}

/** Scores the items of `where` against `set` and writes them as the set's version (binary COPY). */
async function scoreAndCopy(ctx: ServiceContext, dataset: DatasetRow, set: PrototypeSet, where: string, run: JobRun, phase: string) {
  const dim = dataset.dimension;
  const matrix = await run.read((tx) => readEmbeddings(tx, dim, where));
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
export async function runRefit(ctx: ServiceContext, job: JobRow, run: JobRun): Promise<object> {
  const { db } = ctx;
  const dataset = await datasetById(db, job.datasetId!);
  const settings = resolveSettings(dataset.settings);
  const dim = dataset.dimension;
  const started = Date.now();
  const timings: Record<string, number> = {};
  const checkpointVersion = typeof job.result?.version === 'number' ? job.result.version : null;
  // Items written after this instant were not seen by the fit and are scored before the switch.
  let snapshotAt = typeof job.result?.snapshotAt === 'string' ? job.result.snapshotAt : null;
  let setRow = checkpointVersion !== null ? await findPrototypeSetRow(db, dataset.id, checkpointVersion) : undefined;
  let set: PrototypeSet;
  let fitObjective: number | null = null;

  if (checkpointVersion !== null && job.result && 'previousVersion' in job.result) {
    // The switch committed (it records previousVersion) before the run ended: only the cleanup was left.
    const previous = job.result.previousVersion as number | null;
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
    const matrix = await run.read((tx) => readEmbeddings(tx, dim, itemsOf(dataset.id)));
    timings.readMs = Date.now() - started;
    if (matrix.n === 0) throw new ServiceError('conflict', 'NO_ITEMS', `dataset ${dataset.name} has no items to fit`);
    const k = Math.min(matrix.n, dataset.k ?? defaultK(matrix.n));
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
    await copyInChunks(run, dataset.id, version, matrix.ids, scoresFromSimilarity(fit.similarity), fit.cluster, 'rescore');
    timings.rescoreWriteMs = Date.now() - writeStarted;
  }

  // Items the fit did not see are scored now, outside the lock, so the switch below stays short:
  // those written since the snapshot (a replaced item lost its pending score), and for a resumed
  // job everything its crashed predecessor never wrote. Whatever is written after `lateSince` is
  // scored inside the switch.
  const lateSince = await takeSnapshotTime(run, dataset.id);
  const unseen = resumed ? lacksScore(set.version) : `${changedSince(snapshotAt!)} AND ${lacksScore(set.version)}`;
  await scoreAndCopy(ctx, dataset, set, itemsOf(dataset.id, unseen), run, 'rescore');
  const switchStarted = Date.now();
  const previous = await run.writeLocked(dataset.id, async (tx, locked) => {
    if (locked.activeVersion !== null && locked.activeVersion >= set.version) {
      throw new ServiceError('conflict', 'VERSION_SUPERSEDED', `dataset ${dataset.name} already serves version ${locked.activeVersion}, newer than this refit's ${set.version}`);
    }
    const late = await readEmbeddings(tx, dim, itemsOf(dataset.id, changedSince(lateSince)));
    if (late.n > 0) {
      const nearest = await ctx.kernel.nearest(late.vectors, late.n, set.centroids, set.k, dim);
      await upsertScores(tx, dataset.id, set.version, Array.from(late.ids), scoresFromSimilarity(nearest.similarity), nearest.cluster);
    }
    // Never backwards, whatever else ran: a version only replaces an older one.
    await tx.query('UPDATE datasets SET active_version = $2, updated_at = now() WHERE id = $1 AND (active_version IS NULL OR active_version < $2)', [
      dataset.id,
      set.version,
    ]);
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
