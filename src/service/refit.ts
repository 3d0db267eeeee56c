import { defaultK, fitKMeans } from '../core/kmeans.js';
import { scoresFromSimilarity } from '../core/scores.js';
import type { Database, Sql } from '../store/database.js';
import { lockDataset, uuidLiteral, type DatasetRow } from '../store/datasets.js';
import { copyScores, readEmbeddings, upsertScores } from '../store/items.js';
import { enqueueJob, type JobRow } from '../store/jobs.js';
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
async function takeSnapshotTime(db: Database, datasetId: string): Promise<string> {
  return db.transaction(async (tx) => {
    await lockDataset(tx, datasetId);
    const [row] = await tx.query<{ at: Date }>('SELECT clock_timestamp() AS at');
    return row.at.toISOString();
  });
}

function lacksScore(version: number): string {
  return `NOT EXISTS (SELECT 1 FROM item_scores s WHERE s.item_id = items.id AND s.version = ${Number(version)})`;
}

/**
 * After a switch: old scores are garbage, and so are new-version scores the bulk rescore wrote for
 * items deleted while it ran (item_scores has no foreign key); the previous prototype set is kept
 * for reference, older ones go.
 */
async function dropStaleVersions(db: Sql, datasetId: string, active: number, previous: number | null): Promise<void> {
  await db.query('DELETE FROM item_scores WHERE dataset_id = $1 AND version <> $2', [datasetId, active]);
  await db.query(
    'DELETE FROM item_scores s WHERE s.dataset_id = $1 AND s.version = $2 AND NOT EXISTS (SELECT 1 FROM items i WHERE i.id = s.item_id)',
    [datasetId, active],
  );
  await db.query('DELETE FROM prototype_sets WHERE dataset_id = $1 AND version NOT IN ($2, $3)', [datasetId, active, previous ?? active]);
}

/** Scores the items of `where` against `set` and writes them as the set's version (binary COPY). */
async function scoreAndCopy(ctx: ServiceContext, db: Sql, dataset: DatasetRow, set: PrototypeSet, where: string, run: JobRun, phase: string) {
  const dim = dataset.dimension;
  const matrix = await readEmbeddings(db, dim, where);
  for (let from = 0; from < matrix.n; from += RESCORE_CHUNK) {
    const to = Math.min(matrix.n, from + RESCORE_CHUNK);
    const nearest = await ctx.kernel.nearest(matrix.vectors.subarray(from * dim, to * dim), to - from, set.centroids, set.k, dim);
    const ids = matrix.ids.subarray(from, to);
    await copyScores(db, dataset.id, set.version, ids, scoresFromSimilarity(nearest.similarity), nearest.cluster);
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
 * serves meanwhile.
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

  if (setRow && checkpointVersion === dataset.activeVersion) {
    // The switch committed before the crash: only the cleanup was left.
    await dropStaleVersions(db, dataset.id, setRow.version, job.result?.previousVersion as number | null);
    return { version: setRow.version, k: setRow.k, fitItems: setRow.fitItems, objective: setRow.objective, timings };
  }
  const resumed = setRow !== undefined && snapshotAt !== null;
  if (resumed) {
    set = await loadPrototypeSet(db, setRow!, dim);
    ctx.logger.info({ jobId: job.id, version: set.version }, 'resuming refit from its checkpoint');
  } else {
    await run.progress('read', 0, 1);
    snapshotAt = await takeSnapshotTime(db, dataset.id);
    const matrix = await readEmbeddings(db, dim, itemsOf(dataset.id));
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
        if (run.signal.aborted) throw new JobAbortedError();
        // Large datasets first converge on a sample ("warm-up"), then iterate over every item.
        void run.progress(p.phase === 'warmup' ? 'fit-warmup' : 'fit', p.iteration, settings.maxIterations).catch(() => undefined);
      },
    });
    timings.fitMs = Date.now() - fitStarted;
    fitObjective = fit.objectiveHistory[fit.objectiveHistory.length - 1];
    const version = await db.transaction(async (tx) => {
      const v = await nextPrototypeVersion(tx, dataset.id);
      await insertPrototypeSet(tx, { datasetId: dataset.id, version: v, k, dim, centroids: fit.centroids, counts: fit.counts, objective: fitObjective!, fitItems: matrix.n });
      await tx.query(`UPDATE jobs SET result = coalesce(result, '{}'::jsonb) || $2::jsonb WHERE id = $1`, [job.id, JSON.stringify({ version: v, snapshotAt })]);
      return v;
    });
    setRow = (await findPrototypeSetRow(db, dataset.id, version))!;
    set = { ...setRow, dim, centroids: fit.centroids, fitCentroids: fit.centroids, counts: fit.counts };
    const writeStarted = Date.now();
    for (let from = 0; from < matrix.n; from += RESCORE_CHUNK) {
      const to = Math.min(matrix.n, from + RESCORE_CHUNK);
      await copyScores(db, dataset.id, version, matrix.ids, scoresFromSimilarity(fit.similarity), fit.cluster, from, to);
      await run.progress('rescore', to, matrix.n);
    }
    timings.rescoreWriteMs = Date.now() - writeStarted;
  }

  // Items the fit did not see are scored now, outside the lock, so the switch below stays short:
  // those written since the snapshot (a replaced item lost its pending score), and for a resumed
  // job everything its crashed predecessor never wrote. Whatever is written after `lateSince` is
  // scored inside the switch.
  const lateSince = await takeSnapshotTime(db, dataset.id);
  const unseen = resumed ? lacksScore(set.version) : `${changedSince(snapshotAt!)} AND ${lacksScore(set.version)}`;
  await scoreAndCopy(ctx, db, dataset, set, itemsOf(dataset.id, unseen), run, 'rescore');
  const switchStarted = Date.now();
  const previous = await db.transaction(async (tx) => {
    const locked = await lockDataset(tx, dataset.id);
    if (!locked) throw new ServiceError('not_found', 'DATASET_NOT_FOUND', `dataset ${dataset.name} was deleted`);
    const late = await readEmbeddings(tx, dim, itemsOf(dataset.id, changedSince(lateSince)));
    if (late.n > 0) {
      const nearest = await ctx.kernel.nearest(late.vectors, late.n, set.centroids, set.k, dim);
      await upsertScores(tx, dataset.id, set.version, Array.from(late.ids), scoresFromSimilarity(nearest.similarity), nearest.cluster);
    }
    await tx.query('UPDATE datasets SET active_version = $2, updated_at = now() WHERE id = $1', [dataset.id, set.version]);
    await tx.query(`UPDATE jobs SET result = coalesce(result, '{}'::jsonb) || $2::jsonb WHERE id = $1`, [
      job.id,
      JSON.stringify({ previousVersion: locked.activeVersion }),
    ]);
    return locked.activeVersion;
  });
  timings.switchMs = Date.now() - switchStarted;
  ctx.prototypes.forget(dataset.id);
  await run.progress('cleanup', 0, 1);
  await dropStaleVersions(db, dataset.id, set.version, previous);
  timings.totalMs = Date.now() - started;
  return { version: set.version, previousVersion: previous, k: set.k, fitItems: set.fitItems, objective: fitObjective ?? set.objective, timings };
}
