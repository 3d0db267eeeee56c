/**
 * PostgreSQL's binary COPY format (https://www.postgresql.org/docs/current/sql-copy.html, "Binary
 * Format"), for bulk vector I/O without text parsing: pgvector's binary representation of a vector
 * is uint16 dimension, uint16 unused, then float32 big-endian components.
 */

const SIGNATURE = Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1');

/** The COPY binary header: signature, flags, header-extension length. */
function copyHeader(): Buffer {
  const header = Buffer.alloc(SIGNATURE.length + 8);
  SIGNATURE.copy(header, 0);
  return header;
}

export type BinaryField =
  | { type: 'text'; value: string }
  | { type: 'uuid'; value: string }
  | { type: 'int4'; value: number }
  | { type: 'int8'; value: bigint | number }
  | { type: 'float4'; value: number }
  | { type: 'jsonb'; value: string }
  | { type: 'vector'; value: Float32Array; offset?: number; dim: number }
  | null;

/** Bytes per COPY data message: one write per row cost as much Node time as the rows' encoding. */
const COPY_CHUNK_BYTES = 256 * 1024;

/**
 * A binary COPY stream of `rows`: header, rows, trailer, encoded straight into chunks of about
 * COPY_CHUNK_BYTES. No buffer per row and no joining of rows: allocating, filling and then copying
 * one buffer per row was most of the encoding time of an ingest batch.
 */
export function* binaryCopy(rows: Iterable<readonly BinaryField[]>): Generator<Buffer> {
  const out = new ChunkWriter();
  out.bytes(copyHeader());
  for (const fields of rows) {
    out.row(fields);
    if (out.size >= COPY_CHUNK_BYTES) yield out.take();
  }
  out.int16(-1); // the trailer: a tuple with field count -1
  yield out.take();
}

/** A growable chunk the rows are written into; `take` hands it over and starts a fresh one. */
class ChunkWriter {
  private buf = Buffer.allocUnsafe(COPY_CHUNK_BYTES + 64 * 1024);
  private at = 0;
  // Rows of one stream mostly repeat one uuid (the dataset's): parsed once.
  private uuidText = '';
  private uuidBytes = Buffer.alloc(16);

  get size(): number {
    return this.at;
  }

  take(): Buffer {
    const chunk = this.buf.subarray(0, this.at);
    this.buf = Buffer.allocUnsafe(COPY_CHUNK_BYTES + 64 * 1024);
    this.at = 0;
    return chunk;
  }

  bytes(data: Buffer): void {
    this.reserve(data.length);
    this.at += data.copy(this.buf, this.at);
  }

  int16(value: number): void {
    this.reserve(2);
    this.at = this.buf.writeInt16BE(value, this.at);
  }

  row(fields: readonly BinaryField[]): void {
    this.int16(fields.length);
    for (const f of fields) {
      if (f === null) {
        this.reserve(4);
        this.at = this.buf.writeInt32BE(-1, this.at);
        continue;
      }
      switch (f.type) {
        case 'text':
          this.utf8(f.value, false);
          break;
        case 'jsonb':
          this.utf8(f.value, true);
          break;
        case 'uuid':
          if (f.value !== this.uuidText) {
            this.uuidBytes = Buffer.from(f.value.replace(/-/g, ''), 'hex');
            if (this.uuidBytes.length !== 16) throw new Error(`not a uuid: ${f.value}`);
            this.uuidText = f.value;
          }
          this.reserve(20);
          this.at = this.buf.writeInt32BE(16, this.at);
          this.at += this.uuidBytes.copy(this.buf, this.at);
          break;
        case 'int4':
          this.reserve(8);
          this.at = this.buf.writeInt32BE(4, this.at);
          this.at = this.buf.writeInt32BE(f.value, this.at);
          break;
        case 'float4':
          this.reserve(8);
          this.at = this.buf.writeInt32BE(4, this.at);
          this.at = this.buf.writeFloatBE(f.value, this.at);
          break;
        case 'int8':
          this.reserve(12);
          this.at = this.buf.writeInt32BE(8, this.at);
          this.at = this.buf.writeBigInt64BE(BigInt(f.value), this.at);
          break;
        case 'vector': {
          const bytes = 4 * f.dim;
          this.reserve(8 + bytes);
          this.at = this.buf.writeInt32BE(4 + bytes, this.at);
          this.at = this.buf.writeUInt16BE(f.dim, this.at);
          this.at = this.buf.writeUInt16BE(0, this.at);
          // Copy the little-endian floats in one go, then byte-swap them in place (native, fast).
          this.buf.set(new Uint8Array(f.value.buffer, f.value.byteOffset + (f.offset ?? 0) * 4, bytes), this.at);
          this.buf.subarray(this.at, this.at + bytes).swap32();
          this.at += bytes;
          break;
        }
      }
    }
  }

  /** A text or jsonb field: the bytes are written first and their length after (no second pass to measure them). */
  private utf8(value: string, jsonb: boolean): void {
    this.reserve(5 + 3 * value.length); // at most 3 UTF-8 bytes per UTF-16 unit
    const lengthAt = this.at;
    let at = lengthAt + 4;
    if (jsonb) at = this.buf.writeUInt8(1, at); // jsonb binary format version
    at += this.buf.write(value, at, 'utf8');
    this.buf.writeInt32BE(at - lengthAt - 4, lengthAt);
    this.at = at;
  }

  private reserve(bytes: number): void {
    if (this.at + bytes <= this.buf.length) return;
    const grown = Buffer.allocUnsafe(Math.max(2 * this.buf.length, this.at + bytes));
    this.buf.copy(grown, 0, 0, this.at);
    this.buf = grown;
  }
}

/**
 * Incremental parser of a binary COPY ... TO STDOUT stream. Feed it chunks; it calls `onTuple` with
 * the raw field buffers (null for SQL NULL) of every complete tuple. Field buffers are views into
 * the internal buffer and are only valid during the callback.
 */
export class CopyBinaryParser {
  private pending: Buffer = Buffer.alloc(0);
  private headerDone = false;
  private finished = false;

  constructor(private readonly onTuple: (fields: Array<Buffer | null>) => void) {}

  push(chunk: Buffer): void {
    let buf = this.pending.length > 0 ? Buffer.concat([this.pending, chunk]) : chunk;
    let at = 0;
    if (!this.headerDone) {
      if (buf.length < SIGNATURE.length + 8) {
        this.pending = buf;
        return;
      }
      if (!buf.subarray(0, SIGNATURE.length).equals(SIGNATURE)) throw new Error('not a binary COPY stream');
      at = SIGNATURE.length + 8 + buf.readUInt32BE(SIGNATURE.length + 4);
      this.headerDone = true;
    }
    const fields: Array<Buffer | null> = [];
    while (!this.finished && buf.length - at >= 2) {
      const count = buf.readInt16BE(at);
      if (count === -1) {
        this.finished = true;
        at += 2;
        break;
      }
      let cursor = at + 2;
      fields.length = 0;
      let complete = true;
      for (let i = 0; i < count; i++) {
        if (buf.length - cursor < 4) {
          complete = false;
          break;
        }
        const len = buf.readInt32BE(cursor);
        cursor += 4;
        if (len === -1) {
          fields.push(null);
          continue;
        }
        if (buf.length - cursor < len) {
          complete = false;
          break;
        }
        fields.push(buf.subarray(cursor, cursor + len));
        cursor += len;
      }
      if (!complete) break;
      this.onTuple(fields);
      at = cursor;
    }
    this.pending = at < buf.length ? Buffer.from(buf.subarray(at)) : Buffer.alloc(0);
    buf = this.pending;
  }

  /** Throws when the stream ended in the middle of a tuple or without its trailer. */
  end(): void {
    if (!this.finished) throw new Error('binary COPY stream ended before its trailer');
  }
}

/** Decodes pgvector's binary form into `target` at `offset`; returns the dimension. */
export function decodeVectorInto(field: Buffer, target: Float32Array, offset: number): number {
  const dim = field.readUInt16BE(0);
  if (field.length < 4 + dim * 4) throw new Error(`vector field holds ${field.length} bytes, expected ${4 + dim * 4}`);
  // Write the big-endian bytes straight into the target's memory, then byte-swap them there.
  const destination = Buffer.from(target.buffer, target.byteOffset + offset * 4, dim * 4);
  field.copy(destination, 0, 4, 4 + dim * 4);
  destination.swap32();
  return dim;
}

/**
 * Decodes a binary COPY into batches of rows, `slice` bytes of COPY data at a time (PGlite hands
 * the whole COPY over as one buffer, so the batches stay small either way).
 */
export async function* decodeCopyRows<T>(chunks: AsyncIterable<Buffer>, row: (fields: (Buffer | null)[]) => T, slice: number): AsyncGenerator<T[]> {
  let batch: T[] = [];
  const parser = new CopyBinaryParser((fields) => batch.push(row(fields)));
  for await (const chunk of chunks) {
    for (let at = 0; at < chunk.length; at += slice) {
      parser.push(chunk.subarray(at, at + slice));
      if (batch.length > 0) {
        yield batch;
        batch = [];
      }
    }
  }
  parser.end();
}
