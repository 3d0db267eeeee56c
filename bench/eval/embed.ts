/**
 * Gets Fashion-MNIST into the service: images (PNG, base64 JSON) through POST /v1/datasets/{d}/items
 * on the first run, or — when an embedding cache for the service's model exists — the cached
 * vectors (base64 float32) through the same endpoint. Either way the vectors used afterwards are
 * read back from the service's database, so they are exactly what the service stored.
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { CopyBinaryParser, decodeVectorInto } from '../../src/store/pgcopy.js';
import type { HarnessService } from '../lib/service.js';
import type { ImageSet } from './fashion-mnist.js';

export interface DatasetInfo {
  name: string;
  dimension: number;
  k: number | null;
  model: { name: string; sha256: string } | null;
  activeVersion: number | null;
}

export interface EmbeddedSet {
  dataset: string;
  n: number;
  dim: number;
  /** n × dim, row i = image i (unit vectors, as stored by the service). */
  vectors: Float32Array;
  source: 'images' | 'cache';
  /** Wall time of the ingest requests, seconds. */
  ingestSeconds: number;
  /** From images: this run's time; from the cache: the time and load recorded when the cache was built (if known). */
  imagesIngest: { seconds: number; loadAverage: number[] | null; when: string } | null;
}

export const externalId = (prefix: string, i: number): string => `${prefix}-${String(i).padStart(5, '0')}`;

/** 28×28 grey bytes → PNG file bytes. */
export function pngOf(set: ImageSet, i: number): Promise<Buffer> {
  const size = set.rows * set.cols;
  return sharp(Buffer.from(set.pixels.buffer, set.pixels.byteOffset + i * size, size), { raw: { width: set.cols, height: set.rows, channels: 1 } })
    .png()
    .toBuffer();
}

interface CacheMeta {
  n: number;
  dim: number;
  modelSha256: string;
  modelName: string;
  prefix: string;
  createdAt: string;
  /** How long embedding the images through the service took when the cache was built, and the machine's load then. */
  imagesIngestSeconds?: number;
  loadAverage?: number[];
}

function cachePaths(cacheDir: string, prefix: string, sha256: string): { data: string; meta: string } {
  const stem = path.join(cacheDir, `fashion-mnist-${prefix}-${sha256.slice(0, 16)}`);
  return { data: `${stem}.f32`, meta: `${stem}.json` };
}

async function readCache(cacheDir: string, prefix: string, sha256: string, n: number): Promise<{ vectors: Float32Array; dim: number; meta: CacheMeta } | null> {
  const { data, meta } = cachePaths(cacheDir, prefix, sha256);
  if (!existsSync(data) || !existsSync(meta)) return null;
  const m = JSON.parse(await readFile(meta, 'utf8')) as CacheMeta;
  const bytes = await readFile(data);
  if (m.modelSha256 !== sha256 || m.n < n || bytes.length !== m.n * m.dim * 4) {
    console.log(`  cache ${data} does not match (model, count or size); ignoring it`);
    return null;
  }
  const vectors = new Float32Array(n * m.dim);
  new Uint8Array(vectors.buffer).set(bytes.subarray(0, n * m.dim * 4));
  return { vectors, dim: m.dim, meta: m };
}

async function writeCache(cacheDir: string, prefix: string, info: DatasetInfo, vectors: Float32Array, n: number, imagesIngestSeconds: number): Promise<string> {
  await mkdir(cacheDir, { recursive: true });
  const { data, meta } = cachePaths(cacheDir, prefix, info.model!.sha256);
  await writeFile(`${data}.tmp`, new Uint8Array(vectors.buffer, vectors.byteOffset, vectors.byteLength));
  await rename(`${data}.tmp`, data);
  const m: CacheMeta = {
    n,
    dim: info.dimension,
    modelSha256: info.model!.sha256,
    modelName: info.model!.name,
    prefix,
    createdAt: new Date().toISOString(),
    imagesIngestSeconds,
    loadAverage: os.loadavg(),
  };
  await writeFile(meta, `${JSON.stringify(m, null, 2)}\n`);
  return data;
}

/** Runs `task(i)` for i in [0, count) with at most `concurrency` in flight. */
async function pool(count: number, concurrency: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const workers = Array.from({ length: Math.min(concurrency, count) }, async () => {
    while (next < count) await task(next++);
  });
  await Promise.all(workers);
}

interface IngestAnswer {
  counts: { stored: number; updated: number; failed: number };
  items: { externalId: string; status: string; code?: string; message?: string }[];
}

function checkAnswer(answer: IngestAnswer, expected: number): void {
  if (answer.counts.failed > 0 || answer.counts.stored + answer.counts.updated !== expected) {
    const bad = answer.items.find((item) => item.status === 'error');
    throw new Error(`ingest failed for ${answer.counts.failed} items, e.g. ${JSON.stringify(bad)}`);
  }
}

/** Reads the stored vectors of a dataset in external-id order (ids are `${prefix}-NNNNN`). */
export async function readStoredVectors(svc: HarnessService, dataset: string, prefix: string, n: number, dim: number): Promise<Float32Array> {
  const db = svc.running.db;
  const rows = await db.query<{ id: string }>('SELECT id::text AS id FROM datasets WHERE name = $1', [dataset]);
  if (rows.length !== 1) throw new Error(`dataset ${dataset} not found in the database`);
  const uuid = rows[0].id;
  if (!/^[0-9a-f-]{36}$/.test(uuid)) throw new Error(`unexpected dataset id ${uuid}`);
  const vectors = new Float32Array(n * dim);
  const seen = new Uint8Array(n);
  const parser = new CopyBinaryParser((fields) => {
    const id = fields[0]!.toString('utf8');
    const index = Number(id.slice(prefix.length + 1));
    if (!id.startsWith(`${prefix}-`) || !Number.isInteger(index) || index < 0 || index >= n) throw new Error(`unexpected external id ${id}`);
    const got = decodeVectorInto(fields[1]!, vectors, index * dim);
    if (got !== dim) throw new Error(`stored vector of ${id} has dimension ${got}, expected ${dim}`);
    seen[index] = 1;
  });
  for await (const chunk of db.copyOut(`(SELECT external_id, embedding FROM items WHERE dataset_id = '${uuid}')`, 'binary')) parser.push(chunk);
  parser.end();
  const missing = seen.indexOf(0);
  if (missing >= 0) throw new Error(`item ${externalId(prefix, missing)} is missing from ${dataset}`);
  return vectors;
}

export interface EmbedOptions {
  dataset: string;
  prefix: string;
  k: number | null;
  cacheDir: string;
  imagesPerRequest: number;
  concurrency: number;
  /** Only the first `limit` images (quick runs). */
  limit: number;
  useCache: boolean;
}

/** (Re)creates `dataset` and fills it with the images of `set` (or their cached embeddings). */
export async function embedSet(svc: HarnessService, set: ImageSet, options: EmbedOptions): Promise<EmbeddedSet> {
  const { api } = svc;
  const { dataset, prefix } = options;
  const n = Math.min(set.n, options.limit);
  await api.deleteIfExists(`/v1/datasets/${dataset}`);
  // An image dataset of the server's encoder; no automatic fits while it fills (the evaluation
  // asks for one full refit afterwards).
  const info = await api.post<DatasetInfo>('/v1/datasets', {
    name: dataset,
    ...(options.k ? { k: options.k } : {}),
    settings: { minItemsForFit: 1_000_000_000, autoRefit: false },
  });
  if (!info.model) throw new Error(`dataset ${dataset} was created without an image model`);
  const cached = options.useCache ? await readCache(options.cacheDir, prefix, info.model.sha256, n) : null;
  const started = performance.now();
  let done = 0;
  let lastLog = started;
  const progress = (count: number) => {
    done += count;
    const now = performance.now();
    if (now - lastLog > 15_000 || done === n) {
      lastLog = now;
      const rate = done / ((now - started) / 1000);
      console.log(`  ${dataset}: ${done}/${n} (${rate.toFixed(1)}/s${done < n ? `, ~${Math.round((n - done) / rate)} s left` : ''})`);
    }
  };
  if (cached) {
    if (cached.dim !== info.dimension) throw new Error(`cached dimension ${cached.dim} ≠ dataset dimension ${info.dimension}`);
    console.log(`  ${dataset}: ingesting ${n} cached embeddings (model sha256 ${info.model.sha256.slice(0, 16)}…) instead of images`);
    const dim = cached.dim;
    const per = 1000;
    // One request at a time: items get ids in index order, so the refit reads them in the same
    // order on every rerun and k-means (seeded) gives the same prototypes.
    await pool(Math.ceil(n / per), 1, async (b) => {
      const from = b * per;
      const to = Math.min(n, from + per);
      const items = [];
      for (let i = from; i < to; i++) {
        const row = cached.vectors.subarray(i * dim, (i + 1) * dim);
        items.push({ externalId: externalId(prefix, i), embedding: Buffer.from(row.buffer, row.byteOffset, row.byteLength).toString('base64') });
      }
      checkAnswer(await api.post<IngestAnswer>(`/v1/datasets/${dataset}/items`, { items }), to - from);
      progress(to - from);
    });
  } else {
    console.log(`  ${dataset}: embedding ${n} images through the service (${options.imagesPerRequest} per request, ${options.concurrency} in flight)`);
    const per = options.imagesPerRequest;
    await pool(Math.ceil(n / per), options.concurrency, async (b) => {
      const from = b * per;
      const to = Math.min(n, from + per);
      const items = [];
      for (let i = from; i < to; i++) items.push({ externalId: externalId(prefix, i), image: (await pngOf(set, i)).toString('base64') });
      checkAnswer(await api.post<IngestAnswer>(`/v1/datasets/${dataset}/items`, { items }), to - from);
      progress(to - from);
    });
  }
  const ingestSeconds = (performance.now() - started) / 1000;
  const vectors = await readStoredVectors(svc, dataset, prefix, n, info.dimension);
  if (!cached && n === set.n && options.useCache) {
    const file = await writeCache(options.cacheDir, prefix, info, vectors, n, ingestSeconds);
    console.log(`  cached ${n} × ${info.dimension} embeddings in ${file}`);
  }
  const imagesIngest = cached
    ? cached.meta.imagesIngestSeconds !== undefined && cached.meta.n === n
      ? { seconds: cached.meta.imagesIngestSeconds, loadAverage: cached.meta.loadAverage ?? null, when: cached.meta.createdAt }
      : null
    : { seconds: ingestSeconds, loadAverage: os.loadavg(), when: new Date().toISOString() };
  return { dataset, n, dim: info.dimension, vectors, source: cached ? 'cache' : 'images', ingestSeconds, imagesIngest };
}
