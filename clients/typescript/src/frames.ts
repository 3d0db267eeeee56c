/** The media type of precomputed embeddings as binary frames. */
export const EMBEDDING_FRAME_MEDIA_TYPE = 'application/vnd.protoprune.embeddings';

/** A batch of precomputed embeddings: row i of `vectors` (row-major, `dimension` wide) belongs to `externalIds[i]`. */
export interface EmbeddingBatch {
  externalIds: readonly string[];
  vectors: Float32Array;
  dimension: number;
  /** Per row: a metadata object, or undefined for none. */
  metadata?: ReadonlyArray<Record<string, unknown> | undefined>;
}

const encoder = new TextEncoder();
/** The longest id in UTF-8 bytes the server reads (512 code points of at most 4 bytes): a longer one makes it refuse the whole body. */
const MAX_ID_BYTES = 2048;
/** Float32 bytes can be copied as they lie in memory on a little-endian host (every common one). */
const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * Encodes a batch as the server's binary body, little-endian throughout:
 * header "PPEB" · u16 version 1 · u16 flags 0 · u32 count · u32 dim, then per item
 * u16 id length · UTF-8 id · dim × float32 · u32 metadata length · UTF-8 JSON metadata.
 */
export function encodeEmbeddingFrames(batch: EmbeddingBatch): Uint8Array {
  const { externalIds, vectors, dimension } = batch;
  const count = externalIds.length;
  if (vectors.length !== count * dimension) {
    throw new RangeError(`${count} ids of dimension ${dimension} need ${count * dimension} values; got ${vectors.length}`);
  }
  const ids = externalIds.map((id) => {
    const bytes = encoder.encode(id);
    if (bytes.length > MAX_ID_BYTES) throw new RangeError(`external id ${JSON.stringify(id.slice(0, 40))}… is ${bytes.length} UTF-8 bytes; the server refuses a body holding an id over ${MAX_ID_BYTES}`);
    return bytes;
  });
  const metadata = externalIds.map((_, i) => {
    const value = batch.metadata?.[i];
    return value === undefined ? new Uint8Array(0) : encoder.encode(JSON.stringify(value));
  });
  let size = 16;
  for (let i = 0; i < count; i++) size += 2 + ids[i].length + 4 * dimension + 4 + metadata[i].length;
  const bytes = new Uint8Array(size);
  const view = new DataView(bytes.buffer);
  bytes.set(encoder.encode('PPEB'), 0);
  view.setUint16(4, 1, true);
  view.setUint16(6, 0, true);
  view.setUint32(8, count, true);
  view.setUint32(12, dimension, true);
  let at = 16;
  for (let i = 0; i < count; i++) {
    view.setUint16(at, ids[i].length, true);
    bytes.set(ids[i], at + 2);
    at += 2 + ids[i].length;
    if (LITTLE_ENDIAN_HOST) {
      bytes.set(new Uint8Array(vectors.buffer, vectors.byteOffset + i * dimension * 4, dimension * 4), at);
      at += dimension * 4;
    } else {
      for (let j = 0; j < dimension; j++, at += 4) view.setFloat32(at, vectors[i * dimension + j], true);
    }
    view.setUint32(at, metadata[i].length, true);
    bytes.set(metadata[i], at + 4);
    at += 4 + metadata[i].length;
  }
  return bytes;
}
