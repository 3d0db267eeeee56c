/**
 * PostgreSQL's binary COPY format (https://www.postgresql.org/docs/current/sql-copy.html, "Binary
 * Format"), for bulk vector I/O without text parsing: pgvector's binary representation of a vector
 * is uint16 dimension, uint16 unused, then float32 big-endian components.
 */

const SIGNATURE = Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1');

/** The COPY binary header: signature, flags, header-extension length. */
export function copyHeader(): Buffer {
  const header = Buffer.alloc(SIGNATURE.length + 8);
  SIGNATURE.copy(header, 0);
  return header;
}

/** The COPY binary trailer (a tuple with field count -1). */
export function copyTrailer(): Buffer {
  const trailer = Buffer.alloc(2);
  trailer.writeInt16BE(-1, 0);
  return trailer;
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

function fieldLength(field: BinaryField): number {
  if (field === null) return 0;
  switch (field.type) {
    case 'text':
      return Buffer.byteLength(field.value, 'utf8');
    case 'jsonb':
      return 1 + Buffer.byteLength(field.value, 'utf8');
    case 'uuid':
      return 16;
    case 'int4':
    case 'float4':
      return 4;
    case 'int8':
      return 8;
    case 'vector':
      return 4 + 4 * field.dim;
  }
}

/** Encodes one tuple of the binary COPY stream. */
export function encodeTuple(fields: BinaryField[]): Buffer {
  let size = 2;
  for (const f of fields) size += 4 + fieldLength(f);
  const buf = Buffer.allocUnsafe(size);
  let at = buf.writeInt16BE(fields.length, 0);
  for (const f of fields) {
    if (f === null) {
      at = buf.writeInt32BE(-1, at);
      continue;
    }
    at = buf.writeInt32BE(fieldLength(f), at);
    switch (f.type) {
      case 'text':
        at += buf.write(f.value, at, 'utf8');
        break;
      case 'jsonb':
        at = buf.writeUInt8(1, at); // jsonb binary format version
        at += buf.write(f.value, at, 'utf8');
        break;
      case 'uuid':
        at += buf.write(f.value.replace(/-/g, ''), at, 'hex');
        break;
      case 'int4':
        at = buf.writeInt32BE(f.value, at);
        break;
      case 'float4':
        at = buf.writeFloatBE(f.value, at);
        break;
      case 'int8':
        at = buf.writeBigInt64BE(BigInt(f.value), at);
        break;
      case 'vector': {
        at = buf.writeUInt16BE(f.dim, at);
        at = buf.writeUInt16BE(0, at);
        const base = f.offset ?? 0;
        // Copy the little-endian floats in one go, then byte-swap them in place (native, fast).
        const bytes = Buffer.from(f.value.buffer, f.value.byteOffset + base * 4, f.dim * 4);
        bytes.copy(buf, at);
        buf.subarray(at, at + f.dim * 4).swap32();
        at += f.dim * 4;
        break;
      }
    }
  }
  return buf;
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

/** Bytes per COPY data message: one write per row cost as much Node time as the rows' encoding. */
const COPY_CHUNK_BYTES = 256 * 1024;

/** Joins encoded COPY rows into chunks of about COPY_CHUNK_BYTES. */
export async function* inChunks(rows: Iterable<Buffer>): AsyncGenerator<Buffer> {
  let pending: Buffer[] = [];
  let size = 0;
  for (const row of rows) {
    pending.push(row);
    size += row.length;
    if (size >= COPY_CHUNK_BYTES) {
      yield Buffer.concat(pending, size);
      pending = [];
      size = 0;
    }
  }
  if (size > 0) yield Buffer.concat(pending, size);
}
