import { OverloadedError } from '../embedding/errors.js';
import { makeThumbnail } from '../embedding/thumbnail.js';
import type { EncoderIdentity } from '../embedding/model.js';
import { decodeBase64Strict, decodeVector } from '../embedding/vectors.js';
import type { Sql } from '../store/database.js';
import type { ServiceContext } from './context.js';
import { getDataset, requireEmbedder, type Dataset } from './datasets.js';
import { ServiceError } from './errors.js';
import type { AnyItem, IngestResult, ItemOutcome } from './ingest-items.js';
import { readEmbeddingFrames, type FrameBatch } from './embedding-frames.js';
import { storeBatch } from './store-batch.js';

/**
 * Refuses images for `dataset` when this server cannot embed them comparably: it has no encoder
 * (NO_ENCODER), or the dataset's vectors came from another one (MODEL_MISMATCH).
 */
export function assertImagesAccepted(ctx: ServiceContext, dataset: Dataset): void {
  checkModel(dataset, requireEmbedder(ctx).identity);
}

function checkModel(dataset: Dataset, identity: EncoderIdentity): void {
  if (dataset.modelSha256 === identity.sha256) return;
  const recorded = dataset.modelName ? `${dataset.modelName} (sha256 ${dataset.modelSha256})` : 'no image model (an embedding-only dataset)';
  throw new ServiceError(
    'conflict',
    'MODEL_MISMATCH',
    `dataset ${dataset.name} was created with ${recorded}; this server embeds images with ${identity.name} (sha256 ${identity.sha256})`,
    { dataset: dataset.name, datasetModel: dataset.modelName, datasetModelSha256: dataset.modelSha256, serverModel: identity.name, serverModelSha256: identity.sha256 },
  );
}

/**
 * The embedding of each item: decoded when it came as bytes or base64, computed by the encoder when
 * it is an image (with a thumbnail, if asked). An item with both or neither of `image` and
 * `embedding`, or an image that fails to decode, gets its error instead; the others are unaffected.
 */
export async function embedItems(ctx: ServiceContext, dataset: Dataset, items: readonly Pick<AnyItem, 'embedding' | 'image'>[], withThumbnails = false) {
  const results = new Array<{ embedding: ArrayLike<number>; thumbnail?: Uint8Array | null } | { error: { code: string; message: string } }>(items.length);
  const imageAt: number[] = [];
  const images: Uint8Array[] = [];
  items.forEach((item, i) => {
    const { image, embedding } = item;
    if ((image === undefined) === (embedding === undefined)) {
      results[i] = { error: { code: 'INVALID_ITEM', message: 'give exactly one of image and embedding' } };
    } else if (image !== undefined) {
      const bytes = typeof image === 'string' ? decodeBase64Strict(image) : image;
      if (bytes === undefined) results[i] = { error: { code: 'INVALID_BASE64', message: 'image is not valid base64' } };
      else {
        imageAt.push(i);
        images.push(bytes);
      }
    } else if (typeof embedding === 'string' || embedding instanceof Uint8Array) {
      const decoded = decodeVector(embedding, dataset.dimension);
      results[i] = 'error' in decoded ? decoded : { embedding: decoded.vector };
    } else {
      results[i] = { embedding: embedding! };
    }
  });
  if (imageAt.length > 0) {
    const embedder = requireEmbedder(ctx);
    checkModel(dataset, embedder.identity);
    // Thumbnails decode on sharp's thread pool while the encoder runs.
    const thumbnails = withThumbnails ? Promise.all(images.map((bytes) => makeThumbnail(bytes, embedder.maxPixels))) : null;
    let embedded;
    try {
      embedded = await embedder.batcher.embed(images);
    } catch (error) {
      await thumbnails;
      if (error instanceof OverloadedError) throw new ServiceError('overloaded', 'OVERLOADED', error.message, { retryAfterMs: error.retryAfterMs });
      throw error;
    }
    const small = await thumbnails;
    embedded.forEach((result, j) => (results[imageAt[j]] = 'error' in result ? result : { embedding: result.embedding, thumbnail: small?.[j] ?? null }));
  }
  return results;
}

/**
 * Ingests a batch of any items (the path of both transports and of background ingest chunks):
 * each is decoded or embedded on its own, then the good ones are stored in one transaction
 * (`storeBatch`); every item keeps its own outcome, in request order.
 */
export async function ingestItems(ctx: ServiceContext, datasetName: string, items: readonly AnyItem[]): Promise<IngestResult> {
  return ingestInto(ctx, await getDataset(ctx, datasetName), items);
}

/** `ingestItems` into a dataset already resolved; `fence` (a background ingest's lease check) runs in the write's transaction. */
export async function ingestInto(ctx: ServiceContext, dataset: Dataset, items: readonly AnyItem[], fence?: (tx: Sql) => Promise<void>): Promise<IngestResult> {
  const embedded = await embedItems(ctx, dataset, items, true);
  const outcomes = new Array<ItemOutcome>(items.length);
  const good: number[] = [];
  embedded.forEach((result, i) => {
    if ('error' in result) outcomes[i] = { externalId: items[i].externalId, status: 'error', code: result.error.code, message: result.error.message };
    else good.push(i);
  });
  const stored = await storeBatch(
    ctx,
    dataset,
    good.map((i) => {
      const { embedding, thumbnail } = embedded[i] as { embedding: ArrayLike<number>; thumbnail?: Uint8Array | null };
      return { externalId: items[i].externalId, embedding, metadata: items[i].metadata, thumbnail: thumbnail ?? null };
    }),
    fence,
  );
  good.forEach((i, j) => (outcomes[i] = stored.items[j]));
  return { ...stored, items: outcomes };
}

/** Vector bytes per stored batch of a binary body: ~2 MiB (2048 items of 256 values), one transaction each. */
const FRAME_BATCH_BYTES = 2 * 1024 * 1024;

/** Items per batch of a binary body for vectors of `dim` values. */
export function frameBatchSize(dim: number): number {
  return Math.max(1, Math.floor(FRAME_BATCH_BYTES / (4 * dim)));
}

/**
 * Batches of one binary body written at once: two keep both of this machine's cores busy (one
 * PostgreSQL backend each), where one at a time left the database half idle.
 */
export const FRAME_WRITES_IN_FLIGHT = 2;

/**
 * Ingests a binary body of precomputed embeddings (see embedding-frames.ts) as it arrives: each
 * batch of `frameBatchSize` items goes through `ingestInto` (one transaction) while the next one
 * is read and decoded, and the vectors reach `storeBatch` as Float32Array views of the batch. A
 * malformed body fails the request at the first bad byte; the batches stored before it stay stored
 * (`details.stored` counts their items; ingest is idempotent by external id, so re-sending is safe).
 */
export async function ingestFrames(ctx: ServiceContext, datasetName: string, body: AsyncIterable<Uint8Array>, maxBytes: number): Promise<IngestResult> {
  const dataset = await getDataset(ctx, datasetName);
  const outcomes: ItemOutcome[] = [];
  let prototypeVersion = dataset.activeVersion;
  let lastFirst = -1;
  let scheduledJobId: string | null = null;

  const store = async (batch: FrameBatch) => {
    const dim = dataset.dimension;
    const good: AnyItem[] = [];
    const goodAt: number[] = [];
    batch.items.forEach((item, j) => {
      const at = batch.first + j;
      if (item.error) outcomes[at] = { externalId: item.externalId, status: 'error', ...item.error };
      else {
        good.push({ externalId: item.externalId, embedding: batch.vectors.subarray(j * dim, (j + 1) * dim), metadata: item.metadata });
        goodAt.push(at);
      }
    });
    if (good.length === 0) return;
    const result = await ingestInto(ctx, dataset, good);
    goodAt.forEach((at, j) => (outcomes[at] = result.items[j]));
    // The version the body's last batch was stored under (batches finish out of order).
    if (batch.first >= lastFirst) [lastFirst, prototypeVersion] = [batch.first, result.prototypeVersion];
    scheduledJobId ??= result.scheduledJobId;
  };

  // Batches are written while the next is decoded, FRAME_WRITES_IN_FLIGHT at a time (each its own
  // transaction and connection: batches of one dataset do not wait for each other, and their row
  // locks are taken in one order, so even overlapping ids cannot deadlock). A batch repeating an id
  // of one in flight waits for it: the later item of a body must win.
  const writing = new Map<Promise<void>, Set<string>>();
  // The first write that failed: the body fails with it, however the loop was busy when it did.
  let failed: { error: unknown } | undefined;
  const check = () => {
    if (failed) throw failed.error;
  };
  try {
    for await (const batch of readEmbeddingFrames(body, dataset.dimension, frameBatchSize(dataset.dimension), maxBytes)) {
      check();
      const ids = new Set(batch.items.map((item) => item.externalId));
      const overlaps = [...writing.values()].some((other) => [...ids].some((id) => other.has(id)));
      if (overlaps) await Promise.allSettled(writing.keys());
      while (writing.size >= FRAME_WRITES_IN_FLIGHT) await Promise.race(writing.keys()).catch(() => undefined);
      check();
      const write: Promise<void> = store(batch)
        .catch((error: unknown) => {
          failed ??= { error };
        })
        .finally(() => writing.delete(write));
      writing.set(write, ids);
    }
    await Promise.allSettled(writing.keys());
    check();
  } catch (error) {
    await Promise.allSettled(writing.keys());
    const stored = outcomes.reduce((n, o) => (o && o.status !== 'error' ? n + 1 : n), 0);
    if (error instanceof ServiceError && stored > 0) throw new ServiceError(error.kind, error.code, error.message, { ...error.details, stored }, { cause: error });
    throw error;
  }
  return { items: outcomes, prototypeVersion, scheduledJobId };
}
