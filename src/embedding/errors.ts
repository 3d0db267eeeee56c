/** Machine-readable reasons an image could not be embedded (per image; never fails a whole call). */
export type ImageErrorCode = 'UNSUPPORTED_FORMAT' | 'CORRUPT_IMAGE' | 'IMAGE_TOO_LARGE' | 'EMPTY_IMAGE';

/**
 * Per-item failure codes of the embedding pipeline: the image codes above plus
 * `INFERENCE_FAILED` (the model run for the item's batch threw) and `INVALID_EMBEDDING`
 * (the model produced a zero or non-finite feature vector, which cannot be L2-normalised).
 */
export type EmbedErrorCode = ImageErrorCode | 'INFERENCE_FAILED' | 'INVALID_EMBEDDING';

export interface EmbedErrorInfo {
  code: EmbedErrorCode;
  message: string;
}

/** A single image failed to decode or preprocess. */
export class ImageError extends Error {
  override readonly name = 'ImageError';
  constructor(
    readonly code: ImageErrorCode,
    message: string,
  ) {
    super(message);
  }

  toJSON(): { code: ImageErrorCode; message: string } {
    return { code: this.code, message: this.message };
  }
}

/** The micro-batcher's queue is full: retry the whole call after `retryAfterMs`. */
export class OverloadedError extends Error {
  override readonly name = 'OverloadedError';
  readonly code = 'OVERLOADED' as const;
  constructor(
    readonly retryAfterMs: number,
    message = `embedding queue is full; retry after ${retryAfterMs} ms`,
  ) {
    super(message);
  }
}

/** The batcher was closed; no new work is accepted. */
export class BatcherClosedError extends Error {
  override readonly name = 'BatcherClosedError';
  readonly code = 'CLOSED' as const;
  constructor(message = 'embedding batcher is closed') {
    super(message);
  }
}

/** A model specification (or the options it was built from) is invalid or does not match the model. */
export class ModelSpecError extends Error {
  override readonly name = 'ModelSpecError';
  constructor(
    readonly problems: string[],
    context = 'invalid embedding model spec',
  ) {
    super(`${context}: ${problems.join('; ')}`);
  }
}
