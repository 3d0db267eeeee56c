import { createReadStream } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { asyncBufferFromFile, parquetMetadataAsync, parquetReadObjects, parquetSchema, readOffsetIndex } from 'hyparquet';
import { codePointLength, EXTERNAL_ID_MAX_LENGTH, METADATA_MAX_BYTES } from '../service/limits.js';
import { CliError, EXIT } from './output.js';

export type EmbeddingFormat = 'npy' | 'parquet' | 'ndjson';

/** A row of the file that cannot be sent (no id, a vector of the wrong length, …). */
export interface RowFailure {
  externalId: string;
  code: string;
  message: string;
}

/** A batch of rows read from the file. */
export interface EmbeddingChunk {
  externalIds: string[];
  /** externalIds.length × dimension values, row-major. */
  vectors: Float32Array;
  metadata: (Record<string, unknown> | undefined)[];
  failures: RowFailure[];
  /** How far into the file this chunk ends, in the source's progress unit. */
  progress: number;
}

export interface EmbeddingSource {
  dimension: number;
  /** Rows of .npy and .parquet; bytes of .ndjson (its row count is only known at the end). */
  progressUnit: 'rows' | 'bytes';
  progressTotal: number;
  /** The rows in chunks of at most `batchSize`, read as they are consumed. */
  chunks(batchSize: number): AsyncGenerator<EmbeddingChunk>;
}

export interface RowIdentity {
  /**
   * Ids are this prefix + the row index (from 0); otherwise they come from `idColumn`. A .npy file
   * has no ids: its prefix defaults to the file's name without extension and "/" (rows of
   * part-1.npy are part-1/0, part-1/1, …), so the rows of several files do not collide.
   */
  idPrefix?: string;
  idColumn: string;
  vectorColumn: string;
  /** ndjson: the field holding an item's metadata object. */
  metadataField: string;
}

const EXTENSIONS: Record<string, EmbeddingFormat> = { '.npy': 'npy', '.parquet': 'parquet', '.pq': 'parquet', '.ndjson': 'ndjson', '.jsonl': 'ndjson' };

function formatOfFile(file: string): EmbeddingFormat | undefined {
  return EXTENSIONS[path.extname(file).toLowerCase()];
}

/** The ids of a .npy file's rows when no --id-prefix is given: its name without extension, then "/". */
export function defaultNpyPrefix(file: string): string {
  return `${path.basename(file, path.extname(file))}/`;
}

/**
 * Opens an embeddings file as `format`, by default the one its extension names. What is wrong
 * with the file (unreadable, not the format, no such column, …) is a CliError naming it.
 */
export async function openEmbeddings(file: string, format: EmbeddingFormat | undefined, identity: RowIdentity): Promise<{ format: EmbeddingFormat; source: EmbeddingSource }> {
  const chosen = format ?? formatOfFile(file);
  if (!chosen) throw new CliError(`${file}: unknown embeddings format; name it .npy, .parquet or .ndjson, or pass --format`, EXIT.usage);
  try {
    // Each format is opened more than once (a header first, then the rows): a pipe would lose what the first read took.
    if (!(await stat(file)).isFile()) throw new CliError(`${file}: not a regular file (a pipe or device cannot be read twice); save it to a file first`);
    const source = chosen === 'npy' ? await openNpy(file, identity.idPrefix ?? defaultNpyPrefix(file)) : chosen === 'parquet' ? await openParquet(file, identity) : await openNdjson(file, identity);
    return { format: chosen, source };
  } catch (error) {
    throw error instanceof CliError ? error : new CliError(`cannot read ${file}: ${(error as Error).message}`);
  }
}

/** Collects rows into a chunk of at most `capacity` vectors. */
class ChunkBuilder {
  private externalIds: string[] = [];
  private vectors: Float32Array;
  private metadata: (Record<string, unknown> | undefined)[] = [];
  private failures: RowFailure[] = [];

  constructor(
    private readonly dimension: number,
    private readonly capacity: number,
  ) {
    this.vectors = new Float32Array(capacity * dimension);
  }

  /** Rows or failures: a file whose every row fails still goes in bounded chunks, with progress. */
  get full(): boolean {
    return this.externalIds.length + this.failures.length >= this.capacity;
  }

  get empty(): boolean {
    return this.externalIds.length === 0 && this.failures.length === 0;
  }

  /** Adds one row, or its failure: `vector` is checked here. */
  add(externalId: string | undefined, vector: unknown, metadata?: Record<string, unknown>, rowLabel = externalId ?? ''): void {
    if (externalId === undefined || externalId === '') {
      this.failures.push({ externalId: rowLabel, code: 'MISSING_ID', message: 'the row has no id' });
      return;
    }
    // What the server would refuse for the whole body (or change in transit) fails the row alone here.
    const problem = rowProblem(externalId, metadata) ?? this.copyVector(vector);
    if (problem) {
      this.failures.push({ externalId, ...problem });
      return;
    }
    this.externalIds.push(externalId);
    this.metadata.push(metadata);
  }

  fail(failure: RowFailure): void {
    this.failures.push(failure);
  }

  take(progress: number): EmbeddingChunk {
    const chunk = {
      externalIds: this.externalIds,
      vectors: this.vectors.subarray(0, this.externalIds.length * this.dimension),
      metadata: this.metadata,
      failures: this.failures,
      progress,
    };
    this.externalIds = [];
    this.vectors = new Float32Array(this.capacity * this.dimension);
    this.metadata = [];
    this.failures = [];
    return chunk;
  }

  private copyVector(vector: unknown): { code: string; message: string } | null {
    if (!Array.isArray(vector) && !ArrayBuffer.isView(vector)) return { code: 'INVALID_VECTOR', message: 'the vector is not a list of numbers' };
    const values = vector as ArrayLike<unknown>;
    if (values.length !== this.dimension) return { code: 'DIMENSION_MISMATCH', message: `the vector has ${values.length} values; the file's first has ${this.dimension}` };
    const at = this.externalIds.length * this.dimension;
    for (let j = 0; j < this.dimension; j++) {
      const value = values[j];
      if (typeof value !== 'number') return { code: 'INVALID_VECTOR', message: `value ${j} of the vector is not a number` };
      this.vectors[at + j] = value;
    }
    return null;
  }
}

/** A problem of a row's id or metadata that would make the server refuse the whole frame body, or alter the id. */
function rowProblem(externalId: string, metadata: Record<string, unknown> | undefined): { code: string; message: string } | null {
  if (/\u0000|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(externalId)) return { code: 'INVALID_CHARACTERS', message: 'the id holds a NUL or a lone surrogate' };
  if (codePointLength(externalId) > EXTERNAL_ID_MAX_LENGTH) return { code: 'ID_TOO_LONG', message: `the id is longer than ${EXTERNAL_ID_MAX_LENGTH} characters` };
  if (metadata !== undefined && Buffer.byteLength(JSON.stringify(metadata)) > METADATA_MAX_BYTES) {
    return { code: 'METADATA_TOO_LARGE', message: `the metadata is over ${METADATA_MAX_BYTES} bytes of JSON` };
  }
  return null;
}

const NPY_MAGIC = Buffer.from([0x93, ...Buffer.from('NUMPY')]);
/** A .npy header is a short Python dict; numpy pads it to 64 bytes. */
const NPY_MAX_HEADER_BYTES = 64 * 1024;

/** The header of a .npy file: a little-endian float32 matrix in C order is all we take. */
async function readNpyHeader(file: string): Promise<{ rows: number; dimension: number; dataOffset: number }> {
  const handle = await open(file, 'r');
  try {
    const { size } = await handle.stat();
    const preamble = Buffer.alloc(12);
    await handle.read(preamble, 0, 12, 0);
    if (!preamble.subarray(0, 6).equals(NPY_MAGIC)) throw new CliError(`${file}: not a .npy file (it does not start with \\x93NUMPY)`);
    const major = preamble[6];
    if (major < 1 || major > 3) throw new CliError(`${file}: .npy format version ${major} is not supported`);
    const headerStart = major === 1 ? 10 : 12;
    const headerLength = major === 1 ? preamble.readUInt16LE(8) : preamble.readUInt32LE(8);
    if (headerLength > Math.min(size - headerStart, NPY_MAX_HEADER_BYTES)) throw new CliError(`${file}: the .npy header claims ${headerLength} bytes; the file has ${size}`);
    const headerBytes = Buffer.alloc(headerLength);
    await handle.read(headerBytes, 0, headerLength, headerStart);
    const header = headerBytes.toString(major === 3 ? 'utf8' : 'latin1');
    const descr = /'descr'\s*:\s*'([^']*)'/.exec(header)?.[1];
    const fortran = /'fortran_order'\s*:\s*(True|False)/.exec(header)?.[1];
    const shape = /'shape'\s*:\s*\(([^)]*)\)/.exec(header)?.[1];
    if (descr === undefined || fortran === undefined || shape === undefined) throw new CliError(`${file}: unreadable .npy header ${JSON.stringify(header.trim())}`);
    if (descr !== '<f4') throw new CliError(`${file}: the array holds ${descr}, not little-endian float32 ('<f4'); save it with arr.astype('<f4')`);
    if (fortran === 'True') throw new CliError(`${file}: the array is in Fortran order; save it in C order (np.ascontiguousarray)`);
    const dims = shape.split(',').map((d) => d.trim()).filter(Boolean).map(Number);
    if (dims.length !== 2 || dims.some((d) => !Number.isSafeInteger(d) || d < 0)) throw new CliError(`${file}: the array has shape (${shape}); expected 2-D (rows, dimension)`);
    const [rows, dimension] = dims;
    if (dimension === 0) throw new CliError(`${file}: the array's vectors have 0 values`);
    const dataOffset = headerStart + headerLength;
    if (size < dataOffset + rows * dimension * 4) throw new CliError(`${file}: truncated: ${rows} × ${dimension} float32 need ${dataOffset + rows * dimension * 4} bytes; the file has ${size}`);
    return { rows, dimension, dataOffset };
  } finally {
    await handle.close();
  }
}

async function openNpy(file: string, idPrefix: string): Promise<EmbeddingSource> {
  const { rows, dimension, dataOffset } = await readNpyHeader(file);
  return {
    dimension,
    progressUnit: 'rows',
    progressTotal: rows,
    async *chunks(batchSize) {
      const handle = await open(file, 'r');
      try {
        for (let start = 0; start < rows; start += batchSize) {
          const count = Math.min(batchSize, rows - start);
          // '<f4' is little-endian, as the hosts Node runs on here: the bytes are the values.
          const vectors = new Float32Array(count * dimension);
          await handle.read(new Uint8Array(vectors.buffer), 0, vectors.byteLength, dataOffset + start * dimension * 4);
          const externalIds = Array.from({ length: count }, (_, i) => `${idPrefix}${start + i}`);
          yield { externalIds, vectors, metadata: [], failures: [], progress: start + count };
        }
      } finally {
        await handle.close();
      }
    },
  };
}

const idText = (value: unknown): string | undefined =>
  typeof value === 'string' ? value : typeof value === 'number' || typeof value === 'bigint' ? String(value) : undefined;

/** Rows decoded at once from a row group that has an offset index (its pages can be read alone). */
export const PARQUET_SLICE_ROWS = 16_384;
/**
 * The most uncompressed bytes decoded at once (a row group without an offset index is decoded
 * whole, a page always is); as JS arrays of numbers that takes about three times as much memory,
 * so a file that would need more is refused rather than read.
 */
const PARQUET_DECODE_MAX_BYTES = 256 * 1024 * 1024;

type ParquetGroup = Awaited<ReturnType<typeof parquetMetadataAsync>>['row_groups'][number];
type ParquetFile = Awaited<ReturnType<typeof asyncBufferFromFile>>;

/** The most rows one page of the column chunk holds, from its offset index. */
async function largestPageRows(file: ParquetFile, chunk: ParquetGroup['columns'][number], groupRows: number): Promise<number> {
  const start = Number(chunk.offset_index_offset);
  const bytes = await file.slice(start, start + Number(chunk.offset_index_length));
  const firsts = readOffsetIndex({ view: new DataView(bytes), offset: 0 }).page_locations.map((page) => Number(page.first_row_index));
  return Math.max(...firsts.map((first, i) => (i + 1 < firsts.length ? firsts[i + 1] : groupRows) - first));
}

/**
 * Rows to decode at once from `group`: slices when its columns have an offset index (at least a
 * page: hyparquet decodes a page whole), else the group whole. Refused when what would be decoded
 * at once — a slice and a page it starts in, or the group — is over `maxBytes` uncompressed.
 */
export async function parquetStep(file: string, buffer: ParquetFile, group: ParquetGroup, index: number, columns: readonly string[], maxBytes = PARQUET_DECODE_MAX_BYTES): Promise<number> {
  const rows = Number(group.num_rows);
  const chunks = group.columns.filter((chunk) => chunk.meta_data && columns.includes(chunk.meta_data.path_in_schema[0]));
  const bytesPerRow = chunks.reduce((sum, chunk) => sum + Number(chunk.meta_data!.total_uncompressed_size), 0) / Math.max(1, rows);
  const mib = (b: number) => `${Math.round(b / 2 ** 20)} MiB`;
  if (chunks.every((chunk) => chunk.offset_index_offset !== undefined && chunk.offset_index_length)) {
    const page = Math.max(...(await Promise.all(chunks.map((chunk) => largestPageRows(buffer, chunk, rows)))));
    const step = Math.min(rows, Math.max(PARQUET_SLICE_ROWS, page));
    if ((step + page) * bytesPerRow > maxBytes) {
      throw new CliError(
        `${file}: row group ${index} has pages of up to ${page} rows (about ${mib(page * bytesPerRow)} uncompressed each), too large to decode in bounded memory; ` +
          'write the file with smaller pages (e.g. pyarrow data_page_size=1_048_576)',
      );
    }
    return step;
  }
  if (rows * bytesPerRow > maxBytes) {
    throw new CliError(
      `${file}: row group ${index} holds ${rows} rows (${mib(rows * bytesPerRow)} uncompressed) and no offset index, so it would be decoded whole; ` +
        'write the file with smaller row groups (e.g. pyarrow row_group_size=100_000) or with an offset index (pyarrow write_page_index=True)',
    );
  }
  return rows;
}

async function openParquet(file: string, identity: RowIdentity): Promise<EmbeddingSource> {
  const buffer = await asyncBufferFromFile(file);
  const metadata = await parquetMetadataAsync(buffer);
  const names = parquetSchema(metadata).children.map((column) => column.element.name);
  const wanted = identity.idPrefix === undefined ? [identity.idColumn, identity.vectorColumn] : [identity.vectorColumn];
  const missing = wanted.filter((name) => !names.includes(name));
  if (missing.length > 0) {
    throw new CliError(`${file}: no column ${missing.map((m) => JSON.stringify(m)).join(', ')} (columns: ${names.join(', ')}); name them with --id-column/--vector-column, or give --id-prefix`);
  }
  const total = Number(metadata.num_rows);
  if (total === 0) throw new CliError(`${file}: the file holds no rows`);
  // Every group is checked before anything is read, so a file that cannot be read in bounded memory fails before it uploads.
  const steps = await Promise.all(metadata.row_groups.map((group, i) => parquetStep(file, buffer, group, i, wanted)));
  const read = (columns: string[], rowStart: number, rowEnd: number) => parquetReadObjects({ file: buffer, metadata, columns, rowStart, rowEnd, useOffsetIndex: true });
  const [first] = await read([identity.vectorColumn], 0, 1);
  const firstVector = first[identity.vectorColumn] as ArrayLike<unknown> | null;
  if (!firstVector || typeof firstVector.length !== 'number' || firstVector.length === 0) {
    throw new CliError(`${file}: column ${identity.vectorColumn} does not hold lists of numbers`);
  }
  const dimension = firstVector.length;
  return {
    dimension,
    progressUnit: 'rows',
    progressTotal: total,
    async *chunks(batchSize) {
      const builder = new ChunkBuilder(dimension, batchSize);
      let groupStart = 0;
      for (const [g, group] of metadata.row_groups.entries()) {
        const groupEnd = groupStart + Number(group.num_rows);
        for (let sliceStart = groupStart; sliceStart < groupEnd; sliceStart += steps[g]) {
          const rows = await read(wanted, sliceStart, Math.min(groupEnd, sliceStart + steps[g]));
          for (let i = 0; i < rows.length; i++) {
            const index = sliceStart + i;
            const externalId = identity.idPrefix === undefined ? idText(rows[i][identity.idColumn]) : `${identity.idPrefix}${index}`;
            builder.add(externalId, rows[i][identity.vectorColumn], undefined, `row ${index}`);
            if (builder.full) yield builder.take(index + 1);
          }
        }
        groupStart = groupEnd;
      }
      if (!builder.empty) yield builder.take(total);
    },
  };
}

/** The first non-empty line of a text file and its number (1-based); the file is read only that far. */
async function firstLine(file: string): Promise<{ line: string; number: number } | undefined> {
  const stream = createReadStream(file);
  try {
    let number = 0;
    for await (const line of createInterface({ input: stream, crlfDelay: Infinity })) {
      number++;
      if (line.trim() !== '') return { line, number };
    }
    return undefined;
  } finally {
    stream.destroy();
  }
}

async function openNdjson(file: string, identity: RowIdentity): Promise<EmbeddingSource> {
  const { size } = await stat(file);
  const first = await firstLine(file);
  if (!first) throw new CliError(`${file}: the file holds no rows`);
  let firstRecord: Record<string, unknown>;
  try {
    firstRecord = JSON.parse(first.line) as Record<string, unknown>;
  } catch {
    throw new CliError(`${file}: line ${first.number} is not JSON`);
  }
  const firstVector = firstRecord?.[identity.vectorColumn];
  if (!Array.isArray(firstVector) || firstVector.length === 0) {
    throw new CliError(`${file}: line ${first.number} has no field ${JSON.stringify(identity.vectorColumn)} holding a list of numbers (name it with --vector-column)`);
  }
  const dimension = firstVector.length;
  return {
    dimension,
    progressUnit: 'bytes',
    progressTotal: size,
    async *chunks(batchSize) {
      const builder = new ChunkBuilder(dimension, batchSize);
      const stream = createReadStream(file);
      let index = 0;
      let number = 0;
      try {
        for await (const line of createInterface({ input: stream, crlfDelay: Infinity })) {
          number++;
          if (line.trim() === '') continue;
          const rowIndex = index++;
          const label = `line ${number}`;
          let record: Record<string, unknown>;
          try {
            record = JSON.parse(line) as Record<string, unknown>;
          } catch {
            builder.fail({ externalId: label, code: 'INVALID_JSON', message: `${label} is not JSON` });
            continue;
          }
          const externalId = identity.idPrefix === undefined ? idText(record?.[identity.idColumn]) : `${identity.idPrefix}${rowIndex}`;
          const metadata = record?.[identity.metadataField];
          const isObject = typeof metadata === 'object' && metadata !== null && !Array.isArray(metadata);
          builder.add(externalId, record?.[identity.vectorColumn], isObject ? (metadata as Record<string, unknown>) : undefined, label);
          if (builder.full) yield builder.take(stream.bytesRead);
        }
        if (!builder.empty) yield builder.take(size);
      } finally {
        stream.destroy();
      }
    },
  };
}
