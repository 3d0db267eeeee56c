import { normalizeInto } from '../core/normalize.js';
import { centroidDelta } from '../core/incremental.js';
import { scoresFromSimilarity } from '../core/scores.js';
import { lockDatasetShared } from '../store/datasets.js';
import { markChanged } from '../store/ann-index.js';
import { appendCentroidDelta } from '../store/centroid-deltas.js';
import type { Sql } from '../store/database.js';
import { holdsAtLeast, saveThumbnails, upsertItems, type UpsertedItem } from '../store/items.js';
import { copyScores, upsertScores } from '../store/scores.js';
import type { ServiceContext } from './context.js';
import type { Dataset } from './datasets.js';
import type { IngestItem, IngestResult, ItemOutcome } from './ingest-items.js';
import { ServiceError } from './errors.js';
import { queueJob } from './jobs.js';
import { codePointLength, EXTERNAL_ID_MAX_LENGTH, METADATA_MAX_BYTES } from './limits.js';

interface ValidItem {
  index: number;
  externalId: string;
  metadata: string;
  thumbnail: Uint8Array | null;
}

/** Checks every item on its own; returns the valid ones (normalised into `vectors`) and the errors. */
function validate(dataset: Dataset, items: readonly IngestItem[]): { valid: ValidItem[]; vectors: Float32Array; outcomes: ItemOutcome[] } {
  const dim = dataset.dimension;
  const outcomes = new Array<ItemOutcome>(items.length);
  const lastIndex = new Map<string, number>();
  items.forEach((item, i) => lastIndex.set(item.externalId, i));
  const valid: ValidItem[] = [];
  const scratch = new Float32Array(items.length * dim);
  const fail = (i: number, code: string, message: string) => {
    outcomes[i] = { externalId: String(items[i].externalId ?? ''), status: 'error', code, message };
  };
  items.forEach((item, i) => {
    const { externalId, embedding } = item;
    if (typeof externalId !== 'string' || externalId.length === 0 || codePointLength(externalId) > EXTERNAL_ID_MAX_LENGTH) {
      return fail(i, 'INVALID_EXTERNAL_ID', `externalId must be a string of 1-${EXTERNAL_ID_MAX_LENGTH} characters`);
    }
    if (lastIndex.get(externalId) !== i) return fail(i, 'DUPLICATE_EXTERNAL_ID', 'the same externalId appears later in this batch; the last one is stored');
    const problem = normalizeInto(embedding, dim, dataset.name, scratch, valid.length * dim);
    if (problem) return fail(i, problem.code, problem.message);
    const metadata = item.metadata === undefined ? '{}' : JSON.stringify(item.metadata);
    if (item.metadata !== undefined && (typeof item.metadata !== 'object' || item.metadata === null || Array.isArray(item.metadata))) {
      return fail(i, 'INVALID_METADATA', 'metadata must be a JSON object');
    }
    if (Buffer.byteLength(metadata) > METADATA_MAX_BYTES) return fail(i, 'INVALID_METADATA', `metadata exceeds ${METADATA_MAX_BYTES} bytes`);
    valid.push({ index: i, externalId, metadata, thumbnail: item.thumbnail ?? null });
  });
  return { valid, vectors: scratch.subarray(0, valid.length * dim), outcomes };
}

/**
 * Stores a batch of embeddings: each item is validated alone (a bad one fails alone), normalised,
 * assigned to the active prototypes and scored, then all valid items are written set-based (new
 * ones with one COPY) with the batch's centroid delta — in one transaction that holds the dataset
 * lock shared, so batches of one dataset (from any replica) are written side by side and only a
 * version switch waits for them. After the commit the dataset's folder applies the deltas to the
 * centroids (mini-batch k-means, service/centroid-folds.ts); past the drift thresholds it
 * schedules a refit.
 * `fence` (a background ingest job's lease check) runs in that transaction before its first write.
 */
export async function storeBatch(ctx: ServiceContext, dataset: Dataset, items: readonly IngestItem[], fence?: (tx: Sql) => Promise<void>): Promise<IngestResult> {
  const phases: Record<string, number> = {};
  let mark = performance.now();
  const lap = (name: string) => {
    const now = performance.now();
    phases[name] = Math.round((now - mark) * 10) / 10;
    mark = now;
  };
  const dim = dataset.dimension;
  const { valid, vectors, outcomes } = validate(dataset, items);
  lap('validate');
  if (valid.length === 0) return { items: outcomes, prototypeVersion: dataset.activeVersion, scheduledJobId: null };

  const committed = await ctx.db.transaction(async (tx) => {
    const locked = await lockDatasetShared(tx, dataset.id);
    lap('lock');
    if (!locked) throw new ServiceError('not_found', 'DATASET_NOT_FOUND', `dataset ${dataset.name} does not exist`, { name: dataset.name });
    await fence?.(tx);
    const version = locked.activeVersion;
    let scores: Float32Array | null = null;
    let clusters: Int32Array | null = null;
    if (version !== null) {
      const set = await ctx.prototypes.get(tx, dataset.id, version, dim);
      lap('prototypes');
      const nearest = await ctx.kernel.nearest(vectors, valid.length, set.centroids, set.k, dim);
      scores = scoresFromSimilarity(nearest.similarity);
      clusters = nearest.cluster;
      lap('assign');
      await appendCentroidDelta(tx, dataset.id, set.setId, centroidDelta(vectors, valid.length, dim, nearest.cluster, set.k));
      lap('delta');
    }
    const upserted = await upsertItems(
      tx,
      dataset.id,
      dim,
      valid.map((v) => v.externalId),
      vectors,
      valid.map((v) => v.metadata),
    );
    lap('upsertItems');
    const itemIds = upserted.map((u) => u.itemId);
    if (version !== null) await saveBatchScores(tx, dataset.id, version, upserted, scores!, clusters!);
    lap('upsertScores');
    await markChanged(tx, dataset.id, itemIds, upserted.filter((u) => !u.inserted).map((u) => u.itemId), version, clusters);
    lap('markChanged');
    await saveThumbnails(tx, upserted, valid.map((v) => v.thumbnail));
    return { version, upserted, scores, clusters };
  });
  lap('commit');

  valid.forEach((v, j) => {
    outcomes[v.index] = {
      externalId: v.externalId,
      status: committed.upserted[j].inserted ? 'stored' : 'updated',
      score: committed.scores ? committed.scores[j] : null,
      cluster: committed.clusters ? committed.clusters[j] : null,
    };
  });
  const scheduledJobId = committed.version === null ? await scheduleFirstFit(ctx, dataset) : await ctx.folds.fold(dataset.id);
  lap('fold');
  ctx.logger.debug({ dataset: dataset.name, items: valid.length, phasesMs: phases }, 'ingest batch');
  return { items: outcomes, prototypeVersion: committed.version, scheduledJobId };
}

/**
 * Scores of an ingested batch under the active version: new items' rows cannot exist yet, so they
 * go in with one binary COPY; replaced items' rows are upserted.
 */
async function saveBatchScores(tx: Sql, datasetId: string, version: number, upserted: readonly UpsertedItem[], scores: Float32Array, clusters: Int32Array) {
  const fresh: number[] = [];
  const replaced: number[] = [];
  upserted.forEach((u, j) => (u.inserted ? fresh : replaced).push(j));
  if (fresh.length > 0) {
    await copyScores(
      tx,
      datasetId,
      version,
      BigInt64Array.from(fresh, (j) => upserted[j].itemId),
      Float32Array.from(fresh, (j) => scores[j]),
      Int32Array.from(fresh, (j) => clusters[j]),
    );
  }
  if (replaced.length > 0) {
    await upsertScores(
      tx,
      datasetId,
      version,
      replaced.map((j) => upserted[j].itemId),
      Float32Array.from(replaced, (j) => scores[j]),
      Int32Array.from(replaced, (j) => clusters[j]),
    );
  }
}

/** Schedules the first fit once enough items arrived. */
async function scheduleFirstFit(ctx: ServiceContext, dataset: Dataset): Promise<string | null> {
  // Not count(*): that read the whole dataset after every batch (O(n²) over a large first ingest).
  if (!(await holdsAtLeast(ctx.db, dataset.id, dataset.settings.minItemsForFit))) return null;
  const { job, created } = await ctx.db.transaction((tx) => queueJob(tx, dataset.id, 'refit', { reason: 'first-fit' }));
  if (created) {
    ctx.logger.info({ dataset: dataset.name, jobId: job.id, reason: 'first-fit' }, 'refit scheduled');
    ctx.wakeJobs();
  }
  return created ? job.id : null;
}
