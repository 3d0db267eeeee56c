import { isUtf8 } from 'node:buffer';
import { ServiceError } from './errors.js';
import { EXTERNAL_ID_MAX_LENGTH, METADATA_MAX_BYTES } from './limits.js';
import { textProblem } from './text.js';

/**
 * The binary body of precomputed embeddings (`application/vnd.protoprune.embeddings`), all
 * integers little-endian:
 *
 *   header   magic "PPEB" (4 bytes) · u16 version = 1 · u16 flags = 0 · u32 count · u32 dim
 *   item ×   u16 id length · id (UTF-8) · dim × float32 · u32 metadata length · metadata (UTF-8 JSON object; length 0: none)
 *   count
 *
 * Nothing may follow the last item. A body that breaks this layout is refused as a whole (400
 * MALFORMED_FRAME: bad magic/version/flags, truncation, trailing bytes, an id longer than
 * 4 × EXTERNAL_ID_MAX_LENGTH bytes, metadata longer than METADATA_MAX_BYTES, text that is not
 * UTF-8; DIMENSION_MISMATCH for a header dim other than the dataset's), as is an id with a NUL
 * (INVALID_CHARACTERS, as in JSON). What is wrong with one item's content (an empty or too long
 * id, a NaN, metadata that is not a JSON object) fails that item alone, as in JSON ingest.
 * Vectors are copied as bytes: this assumes a little-endian host, as every supported platform is.
 */
export const EMBEDDING_FRAME_MEDIA_TYPE = 'application/vnd.protoprune.embeddings';
export const FRAME_MAGIC = 'PPEB';
export const FRAME_VERSION = 1;
export const FRAME_HEADER_BYTES = 16;

/** The longest id in bytes: EXTERNAL_ID_MAX_LENGTH code points of at most 4 UTF-8 bytes each. */
const MAX_ID_BYTES = EXTERNAL_ID_MAX_LENGTH * 4;

/** The fewest bytes one item of `dim` values takes (empty id, no metadata). */
export function minItemBytes(dim: number): number {
  return 2 + 4 * dim + 4;
}

/** One decoded item: its vector is row `row` of the batch's `vectors`. */
export interface FrameItem {
  externalId: string;
  metadata?: unknown;
  /** A problem of this item alone (it is not stored). */
  error?: { code: string; message: string };
}

export interface FrameBatch {
  items: FrameItem[];
  /** items.length × dim float32, row-major, as sent (not yet normalised). */
  vectors: Float32Array;
  /** Index of the batch's first item in the body. */
  first: number;
}

export interface FrameHeader {
  count: number;
  dim: number;
}

function malformed(message: string, offset: number): ServiceError {
  return new ServiceError('invalid', 'MALFORMED_FRAME', `the ${EMBEDDING_FRAME_MEDIA_TYPE} body is malformed: ${message}`, { field: 'body', offset });
}

/** Reads the header of `bytes` (at least FRAME_HEADER_BYTES long). */
export function parseFrameHeader(bytes: Uint8Array): FrameHeader {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (Buffer.from(bytes.buffer, bytes.byteOffset, 4).toString('latin1') !== FRAME_MAGIC) throw malformed(`it does not start with the magic "${FRAME_MAGIC}"`, 0);
  const version = view.getUint16(4, true);
  if (version !== FRAME_VERSION) throw malformed(`version ${version} is not supported (only ${FRAME_VERSION})`, 4);
  if (view.getUint16(6, true) !== 0) throw malformed('flags must be 0', 6);
  const count = view.getUint32(8, true);
  const dim = view.getUint32(12, true);
  if (count === 0) throw new ServiceError('invalid', 'NO_ITEMS', 'the body holds no items (count 0)', { field: 'body' });
  if (dim === 0) throw malformed('dim is 0', 12);
  return { count, dim };
}

/**
 * Decodes a frame body arriving in chunks into batches of at most `batchSize` items, each yielded
 * as soon as it is complete (the body is never held whole). `expectedDim` is the dataset's
 * dimension; `maxBytes` bounds the body (413 BODY_TOO_LARGE). Throws a ServiceError at the first
 * malformed byte; batches yielded before it are well-formed.
 */
export async function* readEmbeddingFrames(chunks: AsyncIterable<Uint8Array>, expectedDim: number, batchSize: number, maxBytes: number): AsyncGenerator<FrameBatch> {
  const reader = new FrameReader(expectedDim, batchSize, maxBytes);
  for await (const chunk of chunks) {
    reader.push(chunk);
    for (let batch = reader.take(); batch; batch = reader.take()) yield batch;
  }
  const last = reader.finish();
  if (last) yield last;
}

class FrameReader {
  private buffer: Buffer = Buffer.alloc(0);
  /** Bytes of the body consumed before `buffer` starts. */
  private consumed = 0;
  private received = 0;
  private header: FrameHeader | null = null;
  private decoded = 0;
  private items: FrameItem[] = [];
  private vectors: Float32Array;
  private vectorBytes: Uint8Array;

  constructor(
    private readonly dim: number,
    private readonly batchSize: number,
    private readonly maxBytes: number,
  ) {
    this.vectors = new Float32Array(batchSize * dim);
    this.vectorBytes = new Uint8Array(this.vectors.buffer);
  }

  push(chunk: Uint8Array): void {
    this.received += chunk.byteLength;
    if (this.received > this.maxBytes) {
      throw new ServiceError('too_large', 'BODY_TOO_LARGE', `the body exceeds BODY_LIMIT_BYTES (${this.maxBytes} bytes)`, { limit: this.maxBytes });
    }
    if (this.header !== null && this.decoded === this.header.count) throw this.trailing();
    const bytes = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    this.buffer = this.buffer.length === 0 ? bytes : Buffer.concat([this.buffer, bytes]);
    if (this.header === null && this.buffer.length >= FRAME_HEADER_BYTES) this.readHeader();
  }

  private readHeader(): void {
    const header = parseFrameHeader(this.buffer.subarray(0, FRAME_HEADER_BYTES));
    if (header.dim !== this.dim) {
      throw new ServiceError('invalid', 'DIMENSION_MISMATCH', `the body's vectors have ${header.dim} values; the dataset expects ${this.dim}`, { field: 'body', expected: this.dim, got: header.dim });
    }
    const smallest = FRAME_HEADER_BYTES + header.count * minItemBytes(header.dim);
    if (smallest > this.maxBytes) {
      throw new ServiceError('too_large', 'BODY_TOO_LARGE', `${header.count} items of ${header.dim} values take at least ${smallest} bytes, more than BODY_LIMIT_BYTES (${this.maxBytes})`, {
        limit: this.maxBytes,
        count: header.count,
      });
    }
    this.header = header;
    this.advance(FRAME_HEADER_BYTES);
  }

  private advance(n: number): void {
    this.buffer = this.buffer.subarray(n);
    this.consumed += n;
  }

  private trailing(): ServiceError {
    return malformed(`bytes follow the last of the ${this.header!.count} items the header announces`, FRAME_HEADER_BYTES + this.consumed);
  }

  /** The next complete batch, or null until more bytes arrive. */
  take(): FrameBatch | null {
    if (this.header === null) return null;
    while (this.decoded < this.header.count && this.items.length < this.batchSize && this.decodeItem());
    if (this.decoded === this.header.count && this.buffer.length > 0) throw this.trailing();
    if (this.items.length === this.batchSize) return this.flush();
    return null;
  }

  /** The last batch at the end of the body; throws if the body ended early. */
  finish(): FrameBatch | null {
    if (this.header === null) throw malformed(`the body ends within the ${FRAME_HEADER_BYTES}-byte header`, this.buffer.length);
    this.take();
    if (this.decoded < this.header.count) {
      throw malformed(`the body ends after ${this.decoded} of the ${this.header.count} items the header announces`, this.consumed + this.buffer.length);
    }
    return this.items.length > 0 ? this.flush() : null;
  }

  private flush(): FrameBatch {
    const n = this.items.length;
    const batch: FrameBatch = { items: this.items, vectors: this.vectors.subarray(0, n * this.dim), first: this.decoded - n };
    this.items = [];
    // The batch keeps its vectors; the next batch gets fresh memory.
    this.vectors = new Float32Array(this.batchSize * this.dim);
    this.vectorBytes = new Uint8Array(this.vectors.buffer);
    return batch;
  }

  /** Decodes one item if the buffer holds all of it. */
  private decodeItem(): boolean {
    const buf = this.buffer;
    const at = this.consumed;
    if (buf.length < 2) return false;
    const idBytes = buf.readUInt16LE(0);
    if (idBytes > MAX_ID_BYTES) throw malformed(`item ${this.decoded}: id length ${idBytes} exceeds ${MAX_ID_BYTES} bytes`, at);
    const vectorAt = 2 + idBytes;
    const metaLengthAt = vectorAt + 4 * this.dim;
    if (buf.length < metaLengthAt + 4) return false;
    const metaBytes = buf.readUInt32LE(metaLengthAt);
    // Bounded here, so an item never needs more than a few KiB of buffer however the body trickles in.
    if (metaBytes > METADATA_MAX_BYTES) throw malformed(`item ${this.decoded}: metadata length ${metaBytes} exceeds ${METADATA_MAX_BYTES} bytes`, at + metaLengthAt);
    const end = metaLengthAt + 4 + metaBytes;
    if (buf.length < end) return false;

    const idRaw = buf.subarray(2, vectorAt);
    if (!isUtf8(idRaw)) throw malformed(`item ${this.decoded}: the id is not valid UTF-8`, at + 2);
    const externalId = idRaw.toString('utf8');
    if (externalId.includes('\0')) {
      throw new ServiceError('invalid', 'INVALID_CHARACTERS', `body/${this.decoded}/externalId contains a NUL character`, { field: `body/${this.decoded}/externalId` });
    }
    const item: FrameItem = { externalId };
    this.vectorBytes.set(buf.subarray(vectorAt, metaLengthAt), this.items.length * this.dim * 4);
    if (metaBytes > 0) {
      const metaRaw = buf.subarray(metaLengthAt + 4, end);
      if (!isUtf8(metaRaw)) throw malformed(`item ${this.decoded}: the metadata is not valid UTF-8`, at + metaLengthAt + 4);
      item.metadata = parseMetadata(metaRaw.toString('utf8'), item);
    }
    this.items.push(item);
    this.decoded++;
    this.advance(end);
    return true;
  }
}

/** Metadata JSON of one item; a problem becomes the item's error. */
function parseMetadata(text: string, item: FrameItem): unknown {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    item.error = { code: 'INVALID_METADATA', message: 'metadata is not valid JSON' };
    return undefined;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    item.error = { code: 'INVALID_METADATA', message: 'metadata must be a JSON object' };
    return undefined;
  }
  const problem = textProblem(value, 'metadata');
  if (problem) {
    item.error = { code: problem.code, message: problem.message };
    return undefined;
  }
  return value;
}
