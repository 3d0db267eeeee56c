import { applyCentroidDelta, centroidDrift, shouldRefit } from '../core/incremental.js';
import { datasetsWithDeltas, deleteCentroidDeltas, readCentroidDeltas, tryBecomeFolder } from '../store/centroid-deltas.js';
import { lockDatasetShared } from '../store/datasets.js';
import { saveMiniBatch, type PrototypeSet } from '../store/prototypes.js';
import type { Logger } from 'pino';
import type { Database } from '../store/database.js';
import type { PrototypeCache } from './prototype-cache.js';
import { classifyDatabaseError, ServiceError } from './errors.js';
import { queueJob } from './jobs.js';
import { resolveSettings, type DatasetSettings } from './settings.js';

/** Deltas one fold reads per statement, and at most per transaction (more are left to the next round). */
const FOLD_PAGE = 32;
const FOLD_MAX = 512;
/** Retries of a fold that found another folder busy, or failed: 100 ms, 200 ms, … then left to the sweep. */
const RETRY_BASE_MS = 100;
const RETRY_ATTEMPTS = 6;

interface FoldedDataset {
  id: string;
  name: string;
  settings: DatasetSettings;
}

type RoundOutcome = { kind: 'busy' } | { kind: 'done'; folded: number; more: boolean; set: PrototypeSet | null; dataset: FoldedDataset | null };

interface DatasetFolds {
  /** The round callers arriving now share: it has not started yet. */
  next: Promise<string | null> | null;
  /** The round running or queued last (rounds of one dataset run one after another). */
  tail: Promise<unknown>;
}

/** What the folder uses: the context's database, prototype cache, logger and job wake-up (it is part of the context). */
export interface FoldDependencies {
  db: Database;
  prototypes: PrototypeCache;
  logger: Logger;
  wakeJobs(): void;
}

/**
 * The dataset folders: ingest batches append centroid deltas (store/centroid-deltas.ts) and this
 * applies them, in id order, to the active prototype set — one folder per dataset at a time across
 * all replicas (an advisory lock taken without waiting). A process folds after each of its batches
 * committed; its concurrent batches share one round. A round that finds another process folding
 * retries shortly (that folder may have read the deltas before ours committed); deltas left by a
 * process that died are folded by the next batch or by the job worker's idle sweep. After a fold,
 * the drift decides on a refit, as each batch's fold did before.
 */
export class CentroidFolds {
  constructor(private readonly deps: FoldDependencies) {}

  private readonly datasets = new Map<string, DatasetFolds>();
  private readonly retries = new Map<string, NodeJS.Timeout>();
  private stopped = false;

  /**
   * Folds the dataset's pending deltas in a round that starts after this call (so it covers every
   * delta committed before). Resolves with the id of a refit it queued, else null (also when another
   * process folds them); never rejects: the batch is stored whatever happens here.
   */
  fold(datasetId: string): Promise<string | null> {
    return this.enqueue(datasetId, 0);
  }

  private enqueue(datasetId: string, attempt: number): Promise<string | null> {
    let state = this.datasets.get(datasetId);
    if (!state) {
      state = { next: null, tail: Promise.resolve() };
      this.datasets.set(datasetId, state);
    }
    if (state.next) return state.next;
    const current = state;
    const round = current.tail.then(() => {
      current.next = null; // callers from now on need a later round
      return this.runRound(datasetId, attempt);
    });
    const settled = round.then(() => undefined); // runRound never rejects
    current.next = round;
    current.tail = settled;
    void settled.then(() => {
      if (current.tail === settled && current.next === null && this.datasets.get(datasetId) === current) this.datasets.delete(datasetId);
    });
    return round;
  }

  /** Folds the deltas of datasets no process is folding (the worker's idle work); returns whether it folded any. */
  async sweep(limit = 16): Promise<boolean> {
    let folded = false;
    for (const datasetId of await datasetsWithDeltas(this.deps.db, limit)) {
      const outcome = await this.round(datasetId);
      if (outcome.kind === 'done' && outcome.folded > 0) folded = true;
    }
    return folded;
  }

  /** Cancels the pending retries; later rounds only run when asked for. */
  stop(): void {
    this.stopped = true;
    for (const timer of this.retries.values()) clearTimeout(timer);
    this.retries.clear();
  }

  private async runRound(datasetId: string, attempt: number): Promise<string | null> {
    try {
      const outcome = await this.round(datasetId);
      if (outcome.kind === 'busy') {
        this.retry(datasetId, attempt);
        return null;
      }
      if (outcome.more) this.retry(datasetId, -1);
      if (!outcome.set || !outcome.dataset || outcome.folded === 0) return null;
      return await scheduleRefitIfDrifted(this.deps, outcome.dataset, outcome.set);
    } catch (error) {
      // An outage, or a version replaced while the fold read it: the deltas wait for the retry.
      const expected = classifyDatabaseError(error) || (error instanceof ServiceError && error.kind === 'conflict');
      this.deps.logger[expected ? 'debug' : 'warn']({ err: error, datasetId, attempt }, 'centroid fold failed; retrying');
      this.retry(datasetId, attempt);
      return null;
    }
  }

  private retry(datasetId: string, attempt: number): void {
    if (this.stopped || this.retries.has(datasetId)) return;
    if (attempt + 1 >= RETRY_ATTEMPTS) {
      this.deps.logger.warn({ datasetId }, 'centroid deltas left for the next fold (another folder held them, or folding failed)');
      return;
    }
    const timer = setTimeout(
      () => {
        this.retries.delete(datasetId);
        void this.enqueue(datasetId, attempt + 1);
      },
      RETRY_BASE_MS * 2 ** Math.max(0, attempt),
    );
    timer.unref();
    this.retries.set(datasetId, timer);
  }

  /** One fold transaction: the active set's oldest deltas applied, written as one revision, and deleted. */
  private async round(datasetId: string): Promise<RoundOutcome> {
    const outcome = await this.deps.db.transaction(async (tx): Promise<RoundOutcome> => {
      if (!(await tryBecomeFolder(tx, datasetId))) return { kind: 'busy' };
      // Shared, as an ingest batch holds it: a deletion or a version switch (exclusive) never runs
      // beside a fold, so their row locks on the set and its deltas cannot cross the fold's.
      const row = await lockDatasetShared(tx, datasetId);
      if (!row || row.activeVersion === null) return { kind: 'done', folded: 0, more: false, set: null, dataset: null };
      const dataset = { ...row, settings: resolveSettings(row.settings) };
      const set = await this.deps.prototypes.get(tx, datasetId, row.activeVersion, dataset.dimension);
      let { centroids, counts } = set;
      let arrived = 0;
      const folded: bigint[] = [];
      let more = true;
      while (more && folded.length < FOLD_MAX) {
        const deltas = await readCentroidDeltas(tx, set.setId, dataset.dimension, FOLD_PAGE, folded.at(-1) ?? -1n);
        for (const delta of deltas) {
          ({ centroids, counts } = applyCentroidDelta(centroids, counts, set.k, dataset.dimension, delta));
          arrived += delta.items;
          folded.push(delta.id);
        }
        more = deltas.length === FOLD_PAGE;
      }
      await deleteCentroidDeltas(tx, datasetId, set.setId, folded);
      if (folded.length === 0) return { kind: 'done', folded: 0, more: false, set, dataset };
      const revision = await saveMiniBatch(tx, set.setId, centroids, counts, arrived);
      return { kind: 'done', folded: folded.length, more, set: { ...set, centroids, counts, revision, itemsSinceFit: set.itemsSinceFit + arrived }, dataset };
    });
    if (outcome.kind === 'done' && outcome.folded > 0 && outcome.set) this.deps.prototypes.put(datasetId, outcome.set);
    return outcome;
  }
}

/** Queues a refit once the prototypes drifted past the dataset's thresholds; returns its id when this call created it. */
async function scheduleRefitIfDrifted(deps: FoldDependencies, dataset: FoldedDataset, set: PrototypeSet): Promise<string | null> {
  if (!dataset.settings.autoRefit) return null;
  const drift = centroidDrift(set.fitCentroids, set.centroids, set.k, set.dim);
  const arrived = set.itemsSinceFit / (set.fitItems + set.itemsSinceFit);
  const decision = shouldRefit(drift, arrived, dataset.settings.refit);
  if (!decision.refit) return null;
  const reason = decision.reasons.join(',');
  const { job, created } = await deps.db.transaction((tx) => queueJob(tx, dataset.id, 'refit', { reason }));
  if (!created) return null;
  deps.logger.info({ dataset: dataset.name, jobId: job.id, reason }, 'refit scheduled');
  deps.wakeJobs();
  return job.id;
}
