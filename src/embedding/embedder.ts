import sharp from 'sharp';
import type { Config } from '../config/index.js';
import { EmbeddingBatcher } from './batcher.js';
import { loadDefaultEncoder, loadModel, type EncoderIdentity, type ImageEncoder } from './model.js';

/** What the encoder is and how it is batched (the `embedding` part of the configuration). */
export type EmbedderOptions = Config['embedding'];

/** The server's image encoder behind its micro-batcher. */
export interface Embedder {
  identity: EncoderIdentity;
  dim: number;
  /** Decompression-bomb guard of every decode (IMAGE_MAX_PIXELS). */
  maxPixels: number;
  batcher: EmbeddingBatcher;
  close(): Promise<void>;
}

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
