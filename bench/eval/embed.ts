/**
 * Gets images into the service and their embeddings out.
 *
 * `vectorsOf` embeds a set of images through the service — PNGs (base64 JSON) through
 * POST /v1/datasets/{d}/items with the default encoder — and reads the stored vectors back from the
 * service's database, so they are exactly what the service stored. They are cached under
 * bench/.cache as `<stem>-<model sha256[0:16]>.f32` (+ `.json` metadata); with a cache for the
 * service's model nothing is embedded again.
 *
 * `fillDataset` (re)creates a dataset from vectors (base64 float32 embeddings through the same
 * endpoint), one request at a time in index order, so the items get ids in index order and the
 * seeded refit sees the same input on every run, whether the vectors came from images or the cache.
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { CopyBinaryParser, decodeVectorInto } from '../../src/store/pgcopy.js';
import type { HarnessService } from '../lib/service.js';
import type { ImageSet } from './fashion-mnist.js';
import type { ImagesIngest } from './results.js';

export interface DatasetInfo {
  name: string;
  dimension: number;
  k: number | null;
  model: { name: string; sha256: string } | null;
  activeVersion: number | null;
}

export interface VectorSet {
  n: number;
  dim: number;
  /** n × dim, row i = image i (unit vectors, as stored by the service). */
  vectors: Float32Array;
  source: 'images' | 'cache';
  /** This run's wall time to get the vectors (embedding, or reading the cache), seconds. */
  seconds: number;
  /** Embedding the images through the service: this run's, or the one recorded when the cache was built (if known). */
  imagesIngest: ImagesIngest | null;
  model: { name: string; sha256: string };
}

export const externalId = (prefix: string, i: number): string => `${prefix}-${String(i).padStart(5, '0')}`;

/** 8-bit grey bytes of image i → PNG file bytes. */
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
  /** What the images are (e.g. the planted copies' transforms). */
  about?: unknown;
}

function cachePaths(cacheDir: string, stem: string, sha256: string): { data: string; meta: string } {
  const base = path.join(cacheDir, `${stem}-${sha256.slice(0, 16)}`);
  return { data: `${base}.f32`, meta: `${base}.json` };
}

async function readCache(cacheDir: string, stem: string, sha256: string, n: number): Promise<{ vectors: Float32Array; dim: number; meta: CacheMeta } | null> {
  const { data, meta } = cachePaths(cacheDir, stem, sha256);
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

async function writeCache(cacheDir: string, stem: string, prefix: string, info: DatasetInfo, vectors: Float32Array, n: number, imagesIngestSeconds: number, about?: unknown): Promise<string> {
  await mkdir(cacheDir, { recursive: true });
  const { data, meta } = cachePaths(cacheDir, stem, info.model!.sha256);
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
    ...(about === undefined ? {} : { about }),
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

/** Creates `dataset` (after deleting any old one): an image dataset of the server's encoder, no automatic fits. */
async function createDataset(svc: HarnessService, dataset: string, k: number | null): Promise<DatasetInfo> {
  await svc.api.deleteIfExists(`/v1/datasets/${dataset}`);
  const info = await svc.api.post<DatasetInfo>('/v1/datasets', {
    name: dataset,
    ...(k ? { k } : {}),
    settings: { minItemsForFit: 1_000_000_000, autoRefit: false },
  });
  if (!info.model) throw new Error(`dataset ${dataset} was created without an image model`);
  return info;
}

function progressLog(dataset: string, n: number, started: number): (count: number) => void {
  let done = 0;
  let lastLog = started;
  return (count) => {
    done += count;
    const now = performance.now();
    if (now - lastLog > 15_000 || done === n) {
      lastLog = now;
      const rate = done / ((now - started) / 1000);
      console.log(`  ${dataset}: ${done}/${n} (${rate.toFixed(1)}/s${done < n ? `, ~${Math.round((n - done) / rate)} s left` : ''})`);
    }
  };
}

export interface VectorOptions {
  /** Cache file stem, e.g. `fashion-mnist-train`. */
  stem: string;
  /** Service dataset the images are embedded in (left empty or deleted afterwards). */
  dataset: string;
  prefix: string;
  /** The first n images of the set. */
  n: number;
  cacheDir: string;
  useCache: boolean;
  /** Write the cache (only for whole sets, so that a later full run does not find a partial one). */
  writeCache: boolean;
  imagesPerRequest: number;
  concurrency: number;
  /** Stored in the cache's metadata. */
  about?: unknown;
}

/** The service's embeddings of the first n images of `set`: from the cache, or embedded now (and cached). */
export async function vectorsOf(svc: HarnessService, set: ImageSet, options: VectorOptions): Promise<VectorSet> {
  const { dataset, prefix, n } = options;
  const started = performance.now();
  const info = await createDataset(svc, dataset, null);
  const model = info.model!;
  const cached = options.useCache ? await readCache(options.cacheDir, options.stem, model.sha256, n) : null;
  if (cached) {
    if (cached.dim !== info.dimension) throw new Error(`cached dimension ${cached.dim} ≠ dataset dimension ${info.dimension}`);
    await svc.api.deleteIfExists(`/v1/datasets/${dataset}`);
    const m = cached.meta;
    return {
      n,
      dim: cached.dim,
      vectors: cached.vectors,
      source: 'cache',
      seconds: (performance.now() - started) / 1000,
      imagesIngest:
        m.imagesIngestSeconds !== undefined && m.n === n ? { seconds: m.imagesIngestSeconds, loadAverage: m.loadAverage ?? null, when: m.createdAt } : null,
      model,
    };
  }
  console.log(`  ${dataset}: embedding ${n} images through the service (${options.imagesPerRequest} per request, ${options.concurrency} in flight)`);
  const progress = progressLog(dataset, n, started);
  const per = options.imagesPerRequest;
  await pool(Math.ceil(n / per), options.concurrency, async (b) => {
    const from = b * per;
    const to = Math.min(n, from + per);
    const items = [];
    for (let i = from; i < to; i++) items.push({ externalId: externalId(prefix, i), image: (await pngOf(set, i)).toString('base64') });
    checkAnswer(await svc.api.post<IngestAnswer>(`/v1/datasets/${dataset}/items`, { items }), to - from);
    progress(to - from);
  });
  const seconds = (performance.now() - started) / 1000;
  const vectors = await readStoredVectors(svc, dataset, prefix, n, info.dimension);
  if (options.useCache && options.writeCache) {
    const file = await writeCache(options.cacheDir, options.stem, prefix, info, vectors, n, seconds, options.about);
    console.log(`  cached ${n} × ${info.dimension} embeddings in ${file}`);
  }
  return { n, dim: info.dimension, vectors, source: 'images', seconds, imagesIngest: { seconds, loadAverage: os.loadavg(), when: new Date().toISOString() }, model };
}

/** (Re)creates `dataset` holding `vectors` (rows 0..n−1 as `${prefix}-NNNNN`), ingested in index order. Returns the seconds taken. */
export async function fillDataset(svc: HarnessService, options: { dataset: string; prefix: string; k: number | null; vectors: Float32Array; n: number; dim: number }): Promise<number> {
  const { dataset, prefix, vectors, n, dim } = options;
  const started = performance.now();
  const info = await createDataset(svc, dataset, options.k);
  if (info.dimension !== dim) throw new Error(`vectors have dimension ${dim}, dataset ${dataset} ${info.dimension}`);
  console.log(`  ${dataset}: ingesting ${n} embeddings in index order`);
  const progress = progressLog(dataset, n, started);
  const per = 1000;
  for (let from = 0; from < n; from += per) {
    const to = Math.min(n, from + per);
    const items = [];
    for (let i = from; i < to; i++) {
      const row = vectors.subarray(i * dim, (i + 1) * dim);
      items.push({ externalId: externalId(prefix, i), embedding: Buffer.from(row.buffer, row.byteOffset, row.byteLength).toString('base64') });
    }
    checkAnswer(await svc.api.post<IngestAnswer>(`/v1/datasets/${dataset}/items`, { items }), to - from);
    progress(to - from);
  }
  return (performance.now() - started) / 1000;
}
