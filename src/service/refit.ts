import { defaultK, defaultNInit, fitKMeans } from '../core/kmeans.js';
import { scoresFromSimilarity } from '../core/scores.js';
import { relabelPendingBatch } from '../store/ann-index.js';
import { clockAfterDatasetLock, endRelabel, findDatasetById, lockDatasetShared, switchActiveVersion } from '../store/datasets.js';
import type { Sql } from '../store/database.js';
import { itemIdRange, readDatasetEmbeddings, sampleDatasetEmbeddings } from '../store/items.js';
import { countJobParts, createJobParts, deleteJobParts, mergeJobResult, readJobPartResults } from '../store/jobs.js';
import {
  dropSupersededPrototypeSets,
  findPrototypeSetRow,
  insertPrototypeSet,
  loadPrototypeSet,
  nextPrototypeVersion,
  recordFullFit,
  type PrototypeSet,
} from '../store/prototypes.js';
import { copyScores, dropSupersededScores, upsertScores } from '../store/scores.js';
import type { ServiceContext } from './context.js';
import { getDataset, toDataset, type Dataset } from './datasets.js';
import { ServiceError } from './errors.js';
import type { Job, RefitResult, RescorePart, RescorePartResult } from './job-kinds.js';
import { jobView, JobAbortedError, queueJob, type JobRun, type JobView, type PartRun } from './jobs.js';

/** How a refit bounds its memory and splits its rescore (RefitOptions' defaults). */
export const REFIT_DEFAULTS = {
  /**
   * Sample points per centroid the fit reads at most (faiss's max_points_per_centroid is 256; at
   * 256 the full-data objective came out 1.19% worse than a fit on all items at 1M, k = 256; at
   * 512, 0.34% better: bench/scale.ts --compare).
   */
  samplePerCentroid: 512,
  /** Bytes of sampled vectors the fit holds at most (REFIT_SAMPLE_MB). */
  sampleBytes: 512 * 1024 * 1024,
  /** Items per rescore part: a part is one claim, one fenced write. */
  partItems: 100_000,
  /** Items per read within a part (vectors held at once). */
  pageItems: 20_000,
  /** Pending items relabelled per transaction after the switch (ingest waits for none of them). */
  relabelItems: 50_000,
};

export type RefitOptions = typeof REFIT_DEFAULTS;

/** Points the fit reads: all when few, else ~samplePerCentroid per centroid within the byte budget, never fewer than k. */
export function fitSampleSize(n: number, k: number, dim: number, options: RefitOptions = REFIT_DEFAULTS): number {
  const byBudget = Math.floor(options.sampleBytes / (dim * 4));
  return Math.min(n, Math.max(k, Math.min(options.samplePerCentroid * k, byBudget)));
}

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

/**
 * After the switch to `mine`: the pending (not yet indexed) items get their clusters under `mine`
 * in batches of `relabelItems`, each a short fenced transaction holding the dataset lock shared, so
 * ingest goes on meanwhile and lookups probe both versions (the dataset's relabel_version) until
 * the last batch ends the relabel; then the superseded versions go. A run that resumes after a
 * crash starts the relabel again from the lowest id (rows already relabelled are passed over).
 */
async function afterSwitch(ctx: ServiceContext, run: JobRun, datasetId: string, mine: number, previous: number | null, options: RefitOptions): Promise<void> {
  await run.progress('relabel', 0, 1);
  let afterId = 0n;
  for (;;) {
    const batch = await ctx.db.transaction(async (tx) => {
      await lockDatasetShared(tx, datasetId);
      await run.fence(tx);
      const relabelled = await relabelPendingBatch(tx, datasetId, mine, afterId, options.relabelItems);
      if (relabelled.lastId === null) await endRelabel(tx, datasetId, mine);
      return relabelled;
    });
    if (batch.lastId === null) break;
    afterId = batch.lastId;
  }
  await run.progress('cleanup', 0, 1);
  await dropSuperseded(run, datasetId, mine, previous);
}

/**
 * The rescore's parts: ranges of item ids of about `partItems` items each (equal widths over the
 * dataset's id range; ids of other datasets in between only make a range hold fewer).
 */
export function rescoreParts(version: number, range: { n: number; minId: bigint; maxId: bigint }, partItems: number): RescorePart[] {
  const parts = Math.max(1, Math.ceil(range.n / partItems));
  const span = range.maxId - range.minId + 1n;
  const out: RescorePart[] = [];
  for (let p = 0; p < parts; p++) {
    const from = range.minId + (span * BigInt(p)) / BigInt(parts);
    const to = range.minId + (span * BigInt(p + 1)) / BigInt(parts);
    if (to > from) out.push({ version, from: String(from), to: String(to) });
  }
  return out;
}

/**
 * Scores the dataset's items written after `since` under `set` (upserting: one rescored by a part
 * before it was replaced holds its old embedding's score), a page at a time.
 */
async function rescoreChanged(ctx: ServiceContext, tx: Sql | null, run: JobRun, dataset: Dataset, set: PrototypeSet, since: string, pageItems: number): Promise<void> {
  let afterId: bigint | undefined;
  for (;;) {
    const filter = { changedAfter: since, afterId, limit: pageItems };
    const page = tx ? await readDatasetEmbeddings(tx, dataset.id, dataset.dimension, filter) : await run.read((t) => readDatasetEmbeddings(t, dataset.id, dataset.dimension, filter));
    if (page.n === 0) return;
    const nearest = await ctx.kernel.nearest(page.vectors, page.n, set.centroids, set.k, dataset.dimension);
    const write = (t: Sql) => upsertScores(t, dataset.id, set.version, Array.from(page.ids), scoresFromSimilarity(nearest.similarity), nearest.cluster);
    await (tx ? write(tx) : run.write(write));
    afterId = page.ids[page.n - 1];
    if (page.n < pageItems) return;
  }
}

/** Full-data counts and objective (mean distance to the nearest centroid) from the parts' reports. */
function foldPartResults(results: readonly Record<string, unknown>[], k: number): { n: number; counts: Int32Array; objective: number | null } {
  const counts = new Int32Array(k);
  let n = 0;
  let distanceSum = 0;
  for (const r of results as unknown as RescorePartResult[]) {
    n += r.n;
    distanceSum += r.distanceSum;
    r.counts.forEach((c, cluster) => (counts[cluster] += c));
  }
  return { n, counts, objective: n > 0 ? distanceSum / n : null };
}

/**
 * Reads the fit's sample (every item when few) and fits k-means on it. The sample is dropped when
 * this returns: only the centroids go on.
 */
async function fitOnSample(ctx: ServiceContext, run: JobRun, dataset: Dataset, n: number, k: number, options: RefitOptions, timings: Record<string, number>) {
  const { settings } = dataset;
  const dim = dataset.dimension;
  const started = Date.now();
  const wanted = fitSampleSize(n, k, dim, options);
  let sample =
    wanted >= n
      ? await run.read((tx) => readDatasetEmbeddings(tx, dataset.id, dim))
      : await run.read((tx) => sampleDatasetEmbeddings(tx, dataset.id, dim, wanted / n, settings.seed));
  // A Bernoulli sample can come out a little short of k: the first items make up for it then.
  if (sample.n < k && wanted < n) sample = await run.read((tx) => readDatasetEmbeddings(tx, dataset.id, dim, { limit: Math.max(k, wanted) }));
  if (sample.n === 0) throw new ServiceError('conflict', 'NO_ITEMS', `dataset ${dataset.name} has no items to fit`);
  timings.readMs = Date.now() - started;
  const fitStarted = Date.now();
  const fitK = Math.min(k, sample.n);
  // A fit from scratch: restarts while the sample is small enough for them to be cheap (defaultNInit).
  const nInit = defaultNInit(sample.n, fitK);
  // Large samples first converge on a smaller one ("warm-up"), then iterate over the whole sample,
  // and each restart does both again, iterations counting from 0. `done` counts on over all of it —
  // maxIterations per phase and restart, two phases once the first event is a warm-up's (then every
  // restart has one) — so the job's progress never goes back when a phase or a restart begins.
  let phases = 1;
  const fit = await fitKMeans(sample.vectors, sample.n, dim, {
    k: fitK,
    seed: settings.seed,
    kernel: ctx.kernel,
    maxIterations: settings.maxIterations,
    tolerance: settings.tolerance,
    nInit,
    onProgress: (p) => {
      if (run.signal.aborted) throw new JobAbortedError(run.abortReason()!);
      if (p.phase === 'warmup') phases = 2;
      const slot = p.restart * phases + (phases === 2 && p.phase === 'full' ? 1 : 0);
      const done = slot * settings.maxIterations + p.iteration;
      void run.progress(p.phase === 'warmup' ? 'fit-warmup' : 'fit', done, nInit * phases * settings.maxIterations).catch(() => undefined);
    },
  });
  timings.fitMs = Date.now() - fitStarted;
  return { fit, sampleSize: sample.n };
}

/**
 * The refit job: spherical k-means on a sample of the stored embeddings (all of them when few;
 * else about REFIT_DEFAULTS.samplePerCentroid per centroid within a byte budget: memory does not
 * grow with the dataset), stored as a new prototype version; every item rescored for that version
 * beside the active one, in parts any replica's worker claims (rescorePart: read a range of items
 * a page at a time → nearest centroid → COPY); then one short transaction (holding the dataset
 * lock, so no ingest interleaves) scores the items that arrived meanwhile and switches the active
 * version. Readers see all-old or all-new scores, never a mix.
 *
 * Crash safety: the new set is stored together with a checkpoint in the job and the rescore's
 * parts, and scores are only ever added for a version that is not active yet. A restarted job
 * finds the checkpoint, keeps the fitted set and works on the parts still open — no manual
 * cleanup, and the previous version serves meanwhile. Every write is fenced by the run's lease
 * (JobRun.write) or the part's claim: a run whose job was taken over writes nothing more, so two
 * runs of one refit never both switch or clean up, and each part is written once.
 */
export async function runRefit(ctx: ServiceContext, job: Job<'refit'>, run: JobRun, options: RefitOptions = REFIT_DEFAULTS): Promise<RefitResult> {
  const { db } = ctx;
  const row = await findDatasetById(db, job.datasetId!);
  if (!row) throw new ServiceError('not_found', 'DATASET_NOT_FOUND', `dataset ${job.datasetId} was deleted`);
  const dataset = toDataset(row);
  const { settings } = dataset;
  const dim = dataset.dimension;
  const started = Date.now();
  const timings: Record<string, number> = {};
  const checkpointVersion = job.result.version ?? null;
  // Items written after this instant may have been missed by the parts and are rescored before the switch.
  let snapshotAt = job.result.snapshotAt ?? null;
  let setRow = checkpointVersion !== null ? await findPrototypeSetRow(db, dataset.id, checkpointVersion) : undefined;
  let set: PrototypeSet;
  let sampleItems = job.result.sampleItems;

  if (checkpointVersion !== null && job.result.previousVersion !== undefined) {
    // The switch committed (it records previousVersion) before the run ended: only the cleanup was left.
    const previous = job.result.previousVersion;
    await afterSwitch(ctx, run, dataset.id, checkpointVersion, previous, options);
    await run.write((tx) => deleteJobParts(tx, job.id));
    return { version: checkpointVersion, previousVersion: previous, k: setRow?.k, fitItems: setRow?.fitItems, sampleItems, objective: setRow?.objective, timings };
  }
  // A checkpoint without parts was written by a version of the service that rescored in one pass:
  // its set is fitted again (the partial scores of its version go with the cleanup after the switch).
  if (setRow !== undefined && snapshotAt !== null && (await countJobParts(db, job.id)).total > 0) {
    set = await loadPrototypeSet(db, setRow, dim);
    ctx.logger.info({ jobId: job.id, version: set.version }, 'resuming refit from its checkpoint');
  } else {
    await run.progress('read', 0, 1);
    snapshotAt = await takeSnapshotTime(run, dataset.id);
    const range = await run.read((tx) => itemIdRange(tx, dataset.id));
    if (!range) throw new ServiceError('conflict', 'NO_ITEMS', `dataset ${dataset.name} has no items to fit`);
    const k = Math.min(range.n, dataset.k ?? Math.min(settings.maxK, defaultK(range.n)));
    const { fit, sampleSize } = await fitOnSample(ctx, run, dataset, range.n, k, options, timings);
    sampleItems = sampleSize;
    const fitObjective = fit.objectiveHistory[fit.objectiveHistory.length - 1];
    // Under the dataset's lock: the insert's foreign key locks the dataset row, which must come
    // before the job row (the order of a dataset deletion). The parts are created with the set.
    const version = await run.writeLocked(dataset.id, async (tx) => {
      const v = await nextPrototypeVersion(tx, dataset.id);
      await insertPrototypeSet(tx, { datasetId: dataset.id, version: v, k: fit.k, dim, centroids: fit.centroids, counts: fit.counts, objective: fitObjective, fitItems: sampleItems! });
      await createJobParts(tx, job.id, rescoreParts(v, range, options.partItems));
      await mergeJobResult(tx, run.lease, { version: v, snapshotAt, sampleItems });
      return v;
    });
    setRow = (await findPrototypeSetRow(db, dataset.id, version))!;
    set = { ...setRow, dim, centroids: fit.centroids, fitCentroids: fit.centroids, counts: fit.counts };
  }

  // The rescore, in parts: this run works on them beside every other replica's worker.
  const rescoreStarted = Date.now();
  await run.runParts((done, total) => run.progress('rescore', done, total));
  timings.rescoreWriteMs = Date.now() - rescoreStarted;
  const full = foldPartResults(await readJobPartResults(db, job.id), set.k);

  // Items written since the snapshot may have been read by their part before they were written
  // (or replaced): they are scored again now, outside the lock, so the switch below stays short.
  // Whatever is written after `lateSince` is scored inside the switch.
  const lateSince = await takeSnapshotTime(run, dataset.id);
  await rescoreChanged(ctx, null, run, dataset, set, snapshotAt!, options.pageItems);
  const switchStarted = Date.now();
  const previous = await run.writeLocked(dataset.id, async (tx, locked) => {
    if (locked.activeVersion !== null && locked.activeVersion >= set.version) {
      throw new ServiceError('conflict', 'VERSION_SUPERSEDED', `dataset ${dataset.name} already serves version ${locked.activeVersion}, newer than this refit's ${set.version}`);
    }
    await rescoreChanged(ctx, tx, run, dataset, set, lateSince, options.pageItems);
    // The set's counts and objective over every item, not just the sample it was fitted on.
    await recordFullFit(tx, set.setId, full.counts, full.objective, full.n);
    // Never backwards, whatever else ran: a version only replaces an older one.
    await switchActiveVersion(tx, dataset.id, set.version); // pending items are relabelled after it (afterSwitch)
    await mergeJobResult(tx, run.lease, { previousVersion: locked.activeVersion });
    return locked.activeVersion;
  });
  timings.switchMs = Date.now() - switchStarted;
  ctx.prototypes.forget(dataset.id);
  const relabelStarted = Date.now();
  await afterSwitch(ctx, run, dataset.id, set.version, previous, options);
  timings.relabelCleanupMs = Date.now() - relabelStarted;
  await run.write((tx) => deleteJobParts(tx, job.id));
  timings.totalMs = Date.now() - started;
  return { version: set.version, previousVersion: previous, k: set.k, fitItems: full.n, sampleItems, objective: full.objective, timings };
}

/**
 * A rescore part: the dataset's items with ids in the part's range, read a page at a time, each
 * scored against the part's version; all of the part's scores are written in one fenced COPY with
 * the mark done, and it reports per-cluster counts and the summed distance back to its job.
 */
export async function rescorePart(ctx: ServiceContext, job: { id: string; datasetId: string | null }, part: RescorePart, run: PartRun, options: RefitOptions = REFIT_DEFAULTS): Promise<RescorePartResult> {
  const row = job.datasetId ? await findDatasetById(ctx.db, job.datasetId) : undefined;
  if (!row) throw new ServiceError('not_found', 'DATASET_NOT_FOUND', `dataset ${job.datasetId} was deleted`);
  const dim = row.dimension;
  const setRow = await findPrototypeSetRow(ctx.db, row.id, part.version);
  if (!setRow) throw new ServiceError('not_found', 'VERSION_NOT_FOUND', `prototype version ${part.version} of dataset ${row.name} is gone`);
  const set = await loadPrototypeSet(ctx.db, setRow, dim);
  const ids: bigint[] = [];
  const scoreChunks: Float32Array[] = [];
  const clusterChunks: Int32Array[] = [];
  const counts = new Array<number>(set.k).fill(0);
  let distanceSum = 0;
  let afterId = BigInt(part.from) - 1n;
  for (;;) {
    if (run.signal.aborted) throw new JobAbortedError('shutdown');
    const page = await readDatasetEmbeddings(ctx.db, row.id, dim, { afterId, beforeId: BigInt(part.to), limit: options.pageItems });
    if (page.n === 0) break;
    const nearest = await ctx.kernel.nearest(page.vectors, page.n, set.centroids, set.k, dim);
    const scores = scoresFromSimilarity(nearest.similarity);
    for (let i = 0; i < page.n; i++) {
      ids.push(page.ids[i]);
      counts[nearest.cluster[i]]++;
      distanceSum += scores[i];
    }
    scoreChunks.push(scores);
    clusterChunks.push(nearest.cluster);
    afterId = page.ids[page.n - 1];
    if (page.n < options.pageItems) break;
  }
  const result: RescorePartResult = { n: ids.length, counts, distanceSum };
  const scores = concat(Float32Array, scoreChunks, ids.length);
  const clusters = concat(Int32Array, clusterChunks, ids.length);
  await run.finish((tx) => copyScores(tx, row.id, part.version, BigInt64Array.from(ids), scores, clusters).then(() => undefined), result);
  return result;
}

function concat<T extends Float32Array | Int32Array>(make: new (n: number) => T, chunks: readonly T[], n: number): T {
  const out = new make(n);
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}
