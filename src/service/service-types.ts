import type { EmbeddingBatcher } from '../embedding/batcher.js';
import type { EncoderIdentity } from '../embedding/model.js';

// Types the service container (context.ts) shares with the use cases. They live here, in a module
// that imports no use case, so the container does not import the modules that import it.

/** The server's image encoder behind its micro-batcher. */
export interface Embedder {
  identity: EncoderIdentity;
  dim: number;
  /** Decompression-bomb guard of every decode (IMAGE_MAX_PIXELS). */
  maxPixels: number;
  batcher: EmbeddingBatcher;
  close(): Promise<void>;
}

/**
 * One item of a mixed ingest: exactly one of a precomputed embedding and an encoded image. An
 * embedding is numbers, or little-endian float32 as bytes or base64 text; an image is its file's
 * bytes or their base64 text.
 */
export interface AnyItem {
  externalId: string;
  embedding?: ArrayLike<number> | string;
  image?: Uint8Array | string;
  metadata?: unknown;
}
