import sharp from 'sharp';
import { EmbeddingBatcher } from '../embedding/batcher.js';
import { OverloadedError } from '../embedding/errors.js';
import type { Config } from '../config/index.js';
import { loadDefaultEncoder, loadModel, type EncoderIdentity, type ImageEncoder } from '../embedding/model.js';
import type { Sql } from '../store/database.js';
import type { ServiceContext } from './context.js';
import type { AnyItem, Embedder } from './service-types.js';
import { createDataset, getDataset, type CreateDatasetInput, type Dataset } from './datasets.js';
import { ServiceError } from './errors.js';
import { storeEmbeddings, type IngestResult, type ItemOutcome } from './ingest.js';
import { decodeBase64Strict, decodeVector } from '../embedding/vectors.js';
import { makeThumbnail } from '../embedding/thumbnail.js';

/** What the encoder is and how it is batched (the `embedding` part of the configuration). */
export type EmbedderOptions = Config['embedding'];

/** Re-exported: the REST transport imports it from here. */
export type { AnyItem };

/** Loads the configured encoder (converting the default one on first start) and its batcher. */
export async function startEmbedder(options: EmbedderOptions): Promise<Embedder> {
  // libvips' operation cache only helps when the same image is processed twice; here it just holds memory.
  sharp.cache(false);
  const load = { intraOpNumThreads: options.threads };
  const encoder: ImageEncoder = options.custom ? await loadModel(options.custom, load) : await loadDefaultEncoder(options.modelsDir, load);
  const batcher = new EmbeddingBatcher(encoder, {
    maxBatch: options.maxBatch,
    maxWaitMs: options.maxWaitMs,
    maxQueuedImages: options.queueLimit,
    preprocess: { limitInputPixels: options.maxPixels },
  });
  return {
    identity: encoder.identity,
    dim: encoder.dim,
    maxPixels: options.maxPixels,
    batcher,
    async close() {
      await batcher.close();
      await encoder.close();
    },
  };
}

function embedderOf(ctx: ServiceContext): Embedder {
  if (!ctx.embedder) throw new ServiceError('unavailable', 'NO_ENCODER', 'this server has no image encoder loaded');
  return ctx.embedder;
}

/** Creates a dataset for images embedded by this server's encoder (dimension and model identity recorded). */
export async function createImageDataset(ctx: ServiceContext, input: Omit<CreateDatasetInput, 'dimension' | 'model'>): Promise<Dataset> {
  const embedder = embedderOf(ctx);
  return createDataset(ctx, { ...input, dimension: embedder.dim, model: embedder.identity });
}

/** Refuses images for a dataset whose vectors came from another encoder: they would not be comparable. */
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

export interface ImageItem {
  externalId: string;
  image: Uint8Array;
  metadata?: unknown;
}

/**
 * Embeds and stores a batch of images: each image is decoded and embedded on its own (a corrupt,
 * truncated, oversized or unsupported one fails alone with its code), then the embeddings go
 * through the same path as precomputed ones.
 */
export async function ingestImages(ctx: ServiceContext, datasetName: string, items: readonly ImageItem[]): Promise<IngestResult> {
  embedderOf(ctx);
  return ingestItems(ctx, datasetName, items);
}

/**
 * Embeds the images of a batch (if any) and stores everything in one ingest. An item with both or
 * neither of `image` and `embedding`, or an image that fails to decode, fails alone.
 */
export async function embedAny(ctx: ServiceContext, dataset: Dataset, items: readonly Pick<AnyItem, 'embedding' | 'image'>[], withThumbnails = false) {
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
    const embedder = embedderOf(ctx);
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

export async function ingestItems(
  ctx: ServiceContext,
  datasetName: string,
  items: readonly AnyItem[],
  fence?: (tx: Sql) => Promise<void>,
): Promise<IngestResult> {
  const dataset = await getDataset(ctx, datasetName);
  const embedded = await embedAny(ctx, dataset, items, true);
  const outcomes = new Array<ItemOutcome>(items.length);
  const good: number[] = [];
  embedded.forEach((result, i) => {
    if ('error' in result) outcomes[i] = { externalId: items[i].externalId, status: 'error', code: result.error.code, message: result.error.message };
    else good.push(i);
  });
  const stored = await storeEmbeddings(
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
