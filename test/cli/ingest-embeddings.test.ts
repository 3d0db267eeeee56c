import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { asyncBufferFromFile, parquetMetadataAsync } from 'hyparquet';
import { parquetWriteFile } from 'hyparquet-writer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient, type ProtopruneClient } from '../../clients/typescript/src/index.js';
import { BACKENDS } from '../helpers/backends.js';
import { plantedClusters } from '../helpers/planted.js';
import { startApi, type ApiHarness } from '../http/api-harness.js';
import { PARQUET_SLICE_ROWS, parquetStep } from '../../src/cli/embedding-files.js';
import { runCli, spawnCli } from './cli-harness.js';

const DIM = 6;
const N = 130;

/** A parquet file of an id column (text) and a vector column (list<float>), named `id` and `embedding` unless given. */
function writeParquet(
  filename: string,
  ids: string[],
  vectors: number[][],
  options: { rowGroupSize: number; pageSize?: number; offsetIndex?: boolean; idColumn?: string; vectorColumn?: string },
) {
  const { idColumn = 'id', vectorColumn = 'embedding', offsetIndex = true } = options;
  parquetWriteFile({
    filename,
    columnData: [
      { name: idColumn, data: ids, offsetIndex },
      { name: vectorColumn, data: vectors, offsetIndex },
    ],
    schema: [
      { name: 'root', num_children: 2 },
      { name: idColumn, type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'REQUIRED' },
      { name: vectorColumn, repetition_type: 'REQUIRED', converted_type: 'LIST', num_children: 1 },
      { name: 'list', repetition_type: 'REPEATED', num_children: 1 },
      { name: 'element', type: 'FLOAT', repetition_type: 'REQUIRED' },
    ],
    rowGroupSize: options.rowGroupSize,
    pageSize: options.pageSize,
  });
}

/** A .npy file (format 1.0): the header dict padded so the data starts at a multiple of 64 bytes. */
function npy(values: Float32Array | Float64Array, shape: number[], descr = '<f4', fortranOrder = false): Buffer {
  const dict = `{'descr': '${descr}', 'fortran_order': ${fortranOrder ? 'True' : 'False'}, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`;
  const header = `${dict}${' '.repeat(63 - ((10 + dict.length) % 64))}\n`;
  const preamble = Buffer.alloc(10);
  preamble.writeUInt8(0x93, 0);
  preamble.write('NUMPY', 1, 'latin1');
  preamble.writeUInt8(1, 6);
  preamble.writeUInt8(0, 7);
  preamble.writeUInt16LE(header.length, 8);
  return Buffer.concat([preamble, Buffer.from(header, 'latin1'), Buffer.from(values.buffer, values.byteOffset, values.byteLength)]);
}

describe.each(BACKENDS)('protoprune ingest-embeddings on the $name backend', (backend) => {
  let h: ApiHarness;
  let client: ProtopruneClient;
  let env: Record<string, string>;
  let dir: string;
  const data = plantedClusters({ seed: 11, clusters: 3, perCluster: 50, dim: DIM, noise: 0.2 });
  const row = (i: number) => Array.from(data.points.subarray(i * DIM, (i + 1) * DIM));

  /** The stored (unit-length) vectors of a dataset by external id. */
  async function storedVectors(dataset: string): Promise<Map<string, number[]>> {
    const rows = await h.service.db.query<{ external_id: string; embedding: string }>(
      'SELECT i.external_id, i.embedding::text AS embedding FROM items i JOIN datasets d ON d.id = i.dataset_id WHERE d.name = $1',
      [dataset],
    );
    return new Map(rows.map((r) => [r.external_id, JSON.parse(r.embedding) as number[]]));
  }

  function expectUnitOf(stored: number[] | undefined, original: number[]) {
    expect(stored).toBeDefined();
    const norm = Math.hypot(...original);
    stored!.forEach((x, j) => expect(x).toBeCloseTo(original[j] / norm, 5));
  }

  beforeAll(async () => {
    h = await startApi(backend);
    const baseUrl = `http://127.0.0.1:${h.service.httpPort}`;
    client = createClient({ baseUrl, apiKey: h.keys.admin });
    env = { PROTOPRUNE_URL: baseUrl, PROTOPRUNE_API_KEY: h.keys.admin };
    dir = await mkdtemp(path.join(tmpdir(), 'protoprune-cli-embeddings-'));
  });
  afterAll(async () => {
    await h?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('.npy (float32, 2-D, C order): ids are --id-prefix + row index, sent in batches; the dataset is created with its dimension', async () => {
    const file = path.join(dir, 'vectors.npy');
    await writeFile(file, npy(data.points.subarray(0, N * DIM), [N, DIM]));
    const result = await spawnCli(['ingest-embeddings', file, '-d', 'npy', '--id-prefix', 'row-', '--batch', '40', '--concurrency', '2'], env);
    expect(result.stderr).toContain('created 6-d embedding dataset npy');
    expect(result.stderr).toMatch(/ingest-embeddings: 130\/130 rows \(100%\)/);
    expect(result.stdout).toMatch(/^ingested 130 6-d rows of .*vectors\.npy into npy in [\d.]+ s: 130 stored, 0 updated, 0 failed\n$/);
    expect(result.code).toBe(0);
    expect((await client.getDataset('npy')).dimension).toBe(DIM);
    const stored = await storedVectors('npy');
    expect(stored.size).toBe(N);
    for (const i of [0, 39, 40, 129]) expectUnitOf(stored.get(`row-${i}`), row(i));
  });

  it('.ndjson: ids and metadata from the fields; bad lines fail alone and make the exit status 1', async () => {
    const lines = [
      ...Array.from({ length: 20 }, (_, i) => JSON.stringify({ id: `n-${i}`, embedding: row(i), metadata: { i } })),
      '',
      'not json',
      JSON.stringify({ id: 'short', embedding: [1, 2, 3] }),
      JSON.stringify({ embedding: row(0) }),
      JSON.stringify({ id: 'nan', embedding: [Number.NaN, ...row(1).slice(1)].map((x) => (Number.isNaN(x) ? 'x' : x)) }),
      JSON.stringify({ id: 'vec', vector: row(2), metadata: { note: 'other field' } }),
      // What the server would refuse for the whole body fails the row alone, before sending:
      JSON.stringify({ id: 'l'.repeat(513), embedding: row(3) }),
      JSON.stringify({ id: 'nul\u0000id', embedding: row(4) }),
      JSON.stringify({ id: 'big-meta', embedding: row(5), metadata: { text: 'm'.repeat(17_000) } }),
    ];
    const file = path.join(dir, 'rows.ndjson');
    await writeFile(file, `${lines.join('\n')}\n`);
    const result = await runCli(['ingest-embeddings', file, '-d', 'nd', '--batch', '8'], env);
    expect(result.code).toBe(1);
    expect(result.stdout).toContain(': 20 stored, 0 updated, 8 failed\n');
    expect(result.stdout).toContain('8 rows failed:\n');
    expect(result.stdout).toContain(`  ${'l'.repeat(513)}  ID_TOO_LONG  `);
    expect(result.stdout).toContain('  "nul\\u0000id"  INVALID_CHARACTERS  ');
    expect(result.stdout).toContain('  big-meta  METADATA_TOO_LARGE  ');
    expect(result.stdout).toContain('  line 22  INVALID_JSON  line 22 is not JSON\n');
    expect(result.stdout).toContain('  short  DIMENSION_MISMATCH  ');
    expect(result.stdout).toContain('  line 24  MISSING_ID  ');
    expect(result.stdout).toContain('  nan  INVALID_VECTOR  value 0 of the vector is not a number\n');
    const stored = await storedVectors('nd');
    expect([...stored.keys()].sort()).toEqual(Array.from({ length: 20 }, (_, i) => `n-${i}`).sort());
    expectUnitOf(stored.get('n-7'), row(7));
    const { data: item } = await client.raw.GET('/v1/datasets/{dataset}/items/{externalId}', { params: { path: { dataset: 'nd', externalId: 'n-7' } } });
    expect(item!.metadata).toEqual({ i: 7 });

    expect(result.stdout).toContain('  vec  INVALID_VECTOR  the vector is not a list of numbers\n');

    const renamedFile = path.join(dir, 'renamed.jsonl');
    await writeFile(renamedFile, [3, 4].map((i) => JSON.stringify({ key: `k-${i}`, vec: row(i) })).join('\n'));
    const renamed = await runCli(['--json', 'ingest-embeddings', renamedFile, '-d', 'nd', '--id-column', 'key', '--vector-column', 'vec'], env);
    expect(renamed.code).toBe(0);
    expect(renamed.stderr).toBe('');
    expect(JSON.parse(renamed.stdout)).toMatchObject({ dataset: 'nd', created: false, format: 'ndjson', dimension: DIM, rows: 2, stored: 2, failed: 0, failures: [] });
  });

  it('.parquet: an id column and a list<float> column over several row groups, batches crossing them', async () => {
    const n = 100;
    const file = path.join(dir, 'table.parquet');
    writeParquet(file, Array.from({ length: n }, (_, i) => `pq-${i}`), Array.from({ length: n }, (_, i) => row(i)), { rowGroupSize: 30, idColumn: 'image_id', vectorColumn: 'features' });
    const result = await spawnCli(['ingest-embeddings', file, '-d', 'pq', '--id-column', 'image_id', '--vector-column', 'features', '--batch', '25'], env);
    expect(result.stdout).toContain('ingested 100 6-d rows');
    expect(result.stdout).toContain(': 100 stored, 0 updated, 0 failed');
    expect(result.code).toBe(0);
    const stored = await storedVectors('pq');
    expect(stored.size).toBe(n);
    for (const i of [0, 29, 30, 99]) expectUnitOf(stored.get(`pq-${i}`), row(i));

    const wrongColumn = await runCli(['ingest-embeddings', file, '-d', 'pq'], env);
    expect(wrongColumn.code).toBe(1);
    expect(wrongColumn.stderr).toBe(`protoprune: ${file}: no column "id", "embedding" (columns: image_id, features); name them with --id-column/--vector-column, or give --id-prefix\n`);
    const again = await runCli(['ingest-embeddings', file, '-d', 'pq', '--vector-column', 'features', '--id-prefix', 'pq-'], env);
    expect(again.stdout).toContain(': 0 stored, 100 updated, 0 failed');
  });

  it('refuses .npy files it cannot read as float32 matrices, and a dimension other than the dataset’s, with one line each', async () => {
    const cases: [string, Buffer, RegExp][] = [
      ['f64.npy', npy(new Float64Array(4), [2, 2], '<f8'), /holds <f8, not little-endian float32 \('<f4'\); save it with arr\.astype\('<f4'\)/],
      ['fortran.npy', npy(new Float32Array(4), [2, 2], '<f4', true), /is in Fortran order/],
      ['flat.npy', npy(new Float32Array(4), [4]), /has shape \(4,\); expected 2-D/],
      ['cut.npy', npy(new Float32Array(4), [2, 2]).subarray(0, 140), /truncated: 2 × 2 float32 need 144 bytes; the file has 140/],
      ['text.npy', Buffer.from('hello'), /not a \.npy file/],
      ['negative.npy', npy(new Float32Array(4), [-2, 2]), /has shape \(-2, 2\); expected 2-D/],
      ['lying-header.npy', Buffer.concat([Buffer.from([0x93, ...Buffer.from('NUMPY'), 2, 0]), Buffer.from([0xff, 0xff, 0xff, 0x7f])]), /the \.npy header claims 2147483647 bytes; the file has 12/],
    ];
    for (const [name, bytes, message] of cases) {
      const file = path.join(dir, name);
      await writeFile(file, bytes);
      const result = await runCli(['ingest-embeddings', file, '-d', 'npy'], env);
      expect(result.code, name).toBe(1);
      expect(result.stderr.split('\n'), name).toHaveLength(2);
      expect(result.stderr, name).toMatch(message);
    }
    const narrow = path.join(dir, 'narrow.npy');
    await writeFile(narrow, npy(new Float32Array([1, 2, 3, 4]), [2, 2]));
    const mismatch = await runCli(['ingest-embeddings', narrow, '-d', 'npy'], env);
    expect(mismatch.code).toBe(1);
    expect(mismatch.stderr).toBe("protoprune: dataset npy holds 6-d vectors; the file's are 2-d\n");
    const device = await runCli(['ingest-embeddings', '/dev/null', '-d', 'npy', '--format', 'ndjson'], env);
    expect(device).toMatchObject({ code: 1, stderr: 'protoprune: /dev/null: not a regular file (a pipe or device cannot be read twice); save it to a file first\n' });
    const unknown = await runCli(['ingest-embeddings', path.join(dir, 'vectors.bin'), '-d', 'npy'], env);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/unknown embeddings format; name it \.npy, \.parquet or \.ndjson, or pass --format/);
  });

  it('.npy without --id-prefix: ids are the file name and the row index, so two files do not collide; a NaN row fails alone', async () => {
    const [first, second] = ['part-1.npy', 'part-2.npy'].map((name) => path.join(dir, name));
    const values = data.points.slice(0, 10 * DIM);
    values[3 * DIM + 1] = Number.NaN;
    await writeFile(first, npy(values, [10, DIM]));
    await writeFile(second, npy(data.points.slice(10 * DIM, 20 * DIM), [10, DIM]));
    const one = await runCli(['--json', 'ingest-embeddings', first, '-d', 'parts', '--batch', '4'], env);
    expect(one.code).toBe(1);
    expect(JSON.parse(one.stdout)).toMatchObject({ rows: 10, stored: 9, failed: 1, failures: [{ externalId: 'part-1/3', code: 'NON_FINITE_VALUE' }] });
    const two = await runCli(['--json', 'ingest-embeddings', second, '-d', 'parts'], env);
    expect(JSON.parse(two.stdout)).toMatchObject({ rows: 10, stored: 10, updated: 0, failed: 0 });
    const stored = await storedVectors('parts');
    expect(stored.size).toBe(19);
    expectUnitOf(stored.get('part-1/0'), row(0));
    expectUnitOf(stored.get('part-2/0'), row(10));
    expect(stored.has('part-1/3')).toBe(false);
  });

  it('.parquet: one row group larger than a read slice is read in slices through its offset index, every row as written', async () => {
    const n = PARQUET_SLICE_ROWS * 2 + 500;
    const file = path.join(dir, 'one-group.parquet');
    writeParquet(file, Array.from({ length: n }, (_, i) => `g-${i}`), Array.from({ length: n }, (_, i) => row(i % data.n)), { rowGroupSize: n, pageSize: 16 * 1024 });
    const buffer = await asyncBufferFromFile(file);
    const metadata = await parquetMetadataAsync(buffer);
    expect(metadata.row_groups).toHaveLength(1);
    expect(await parquetStep(file, buffer, metadata.row_groups[0], 0, ['id', 'embedding'])).toBe(PARQUET_SLICE_ROWS);
    const result = await runCli(['--json', 'ingest-embeddings', file, '-d', 'big-group', '--batch', '1000', '--concurrency', '2'], env);
    expect(result.code).toBe(0);
    expect(JSON.parse(result.stdout)).toMatchObject({ rows: n, stored: n, failed: 0 });
    const stored = await storedVectors('big-group');
    expect(stored.size).toBe(n);
    for (const i of [0, PARQUET_SLICE_ROWS - 1, PARQUET_SLICE_ROWS, 2 * PARQUET_SLICE_ROWS + 1, n - 1]) expectUnitOf(stored.get(`g-${i}`), row(i % data.n));
  }, 120_000);

  it('.parquet: a row group without an offset index is decoded whole, so one above the limit is refused with advice', async () => {
    const file = path.join(dir, 'no-index.parquet');
    writeParquet(file, Array.from({ length: 300 }, (_, i) => `ni-${i}`), Array.from({ length: 300 }, (_, i) => row(i % data.n)), { rowGroupSize: 100, offsetIndex: false });
    const buffer = await asyncBufferFromFile(file);
    const { row_groups: groups } = await parquetMetadataAsync(buffer);
    expect(await Promise.all(groups.map((group, i) => parquetStep(file, buffer, group, i, ['id', 'embedding'])))).toEqual([100, 100, 100]);
    await expect(parquetStep(file, buffer, groups[1], 1, ['id', 'embedding'], 1000)).rejects.toThrow(/row group 1 holds 100 rows .* and no offset index, so it would be decoded whole; write the file with smaller row groups/);
    const indexed = path.join(dir, 'indexed.parquet');
    // (the writer gives a column chunk of several pages an offset index)
    writeParquet(indexed, Array.from({ length: 2000 }, (_, i) => `ix-${i}`), Array.from({ length: 2000 }, (_, i) => row(i % data.n)), { rowGroupSize: 2000, pageSize: 1024 });
    const indexedBuffer = await asyncBufferFromFile(indexed);
    const { row_groups: [group] } = await parquetMetadataAsync(indexedBuffer);
    expect(await parquetStep(indexed, indexedBuffer, group, 0, ['id', 'embedding'])).toBe(2000);
    // Pages are decoded whole: a slice is at least the largest page, and pages too large for the limit are refused.
    const bigPages = path.join(dir, 'big-pages.parquet');
    // 4 slices of rows, the vector column in pages of 1.5 slices (its offset index says so); ids from --id-prefix, so that column alone is read.
    const n = PARQUET_SLICE_ROWS * 4;
    writeParquet(bigPages, Array.from({ length: n }, (_, i) => `bp-${i}`), Array.from({ length: n }, (_, i) => row(i % data.n)), { rowGroupSize: n, pageSize: 1.5 * PARQUET_SLICE_ROWS * DIM * 4 });
    const bigBuffer = await asyncBufferFromFile(bigPages);
    const { row_groups: [bigGroup] } = await parquetMetadataAsync(bigBuffer);
    const step = await parquetStep(bigPages, bigBuffer, bigGroup, 0, ['embedding']);
    expect(step).toBe(1.5 * PARQUET_SLICE_ROWS);
    await expect(parquetStep(bigPages, bigBuffer, bigGroup, 0, ['embedding'], 100_000)).rejects.toThrow(/row group 0 has pages of up to \d+ rows .* write the file with smaller pages/);
  });
});
