// What an ingest takes and answers, shared by the use cases, both transports and the service
// container (which must not import the use cases that import it).

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

export interface IngestItem {
  externalId: string;
  embedding: ArrayLike<number>;
  metadata?: unknown;
  /** A small JPEG of the image the embedding came from; null or absent for precomputed embeddings. */
  thumbnail?: Uint8Array | null;
}

export type ItemOutcome =
  | { externalId: string; status: 'stored' | 'updated'; score: number | null; cluster: number | null }
  | { externalId: string; status: 'error'; code: string; message: string };

export interface IngestResult {
  items: ItemOutcome[];
  /** Prototype version the batch was scored with (null before the first fit). */
  prototypeVersion: number | null;
  /** A refit or first fit this batch scheduled, if any. */
  scheduledJobId: string | null;
}

export interface IngestCounts {
  stored: number;
  updated: number;
  failed: number;
}

/** How many outcomes stored a new item, replaced one, or failed: the counts every transport reports and records. */
export function countOutcomes(outcomes: readonly ItemOutcome[]): IngestCounts {
  const counts: IngestCounts = { stored: 0, updated: 0, failed: 0 };
  for (const o of outcomes) counts[o.status === 'error' ? 'failed' : o.status]++;
  return counts;
}
