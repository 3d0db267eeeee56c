/**
 * The issue-7 benchmark suite: every figure next to the raw baseline it competes with.
 *
 *   BENCH_DATABASE_URL='postgres://…/db?schema=bench_suite' npx tsx bench/suite.ts [flags]
 *   (or `npm run bench -- [flags]`)
 *
 * The service runs in this process (`startService`, auth on, a minted admin key) and is driven over
 * its REST API on a loopback port. Cases, in the order they run:
 *   ingest  N×512 precomputed embeddings via POST …/items (base64 float32, 1000 per request, 2 in
 *           flight)                                   vs  psql \copy (binary) of the same rows into `items`
 *   refit   full refit + rescore, k = 1000, via POST …/prototypes/refit until the job succeeds
 *                                                     vs  fitKMeans on the same vectors in memory (ORT kernel)
 *   score   POST …/score with 256 new embeddings, p50/p99 (HNSW index caught up first)
 *                                                     vs  one SQL HNSW top-1 query for the 256 + ORT nearest-centroid
 *   images  M JPEGs (500×375) via POST …/items (base64, 100 per request, 4 in flight)
 *                                                     vs  raw ORT inference of the same model, batch 32, pre-decoded
 *   select  30% of the largest refit dataset as NDJSON (GET …/selection, Accept: application/x-ndjson)
 *                                                     vs  psql \copy (SELECT … ORDER BY score DESC LIMIT n) TO file
 *
 * Flags: --quick (small sizes), --ingest=100000 --refit=100000,1000000 --images=2000 --k=1000 --dim=512
 *        --score-calls=100 --out=docs/performance.md (default: docs/performance.md for full runs,
 *        bench/.cache/performance-quick.md with --quick) --no-docs
 *        --render=docs/performance.json: only rewrite the Markdown from a previous run's JSON (no measurements)
 * Without BENCH_DATABASE_URL (or TEST_DATABASE_URL) it runs on the embedded PGlite backend, marks every
 * figure EMBEDDED, and skips the psql baselines.
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import sharp from 'sharp';
import { fitKMeans } from '../src/core/kmeans.js';
import { ensureDefaultModel } from '../src/embedding/convert/default-model.js';
import { defaultModelSpec, loadModel } from '../src/embedding/model.js';
import { preprocessImage } from '../src/embedding/preprocess.js';
import { OrtDistanceKernel } from '../src/kernels/ort.js';
import { indexPendingVectors } from '../src/service/duplicates.js';
import { annExpression } from '../src/store/datasets.js';
import { binaryCopy, type BinaryField } from '../src/store/pgcopy.js';
import { vectorLiteral } from '../src/store/database.js';
import { jpeg, photoLikeRaw } from '../test/embedding/images.js';
import { Flags } from './lib/args.js';
import { schemaOf, startHarnessService, withSchema, type HarnessService } from './lib/service.js';
import { writePerformanceDoc, type SuiteResults, type SuiteRow } from './suite-report.js';
import { SyntheticSphere } from './synthetic.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..');
const flags = new Flags(process.argv.slice(2), ['quick', 'ingest', 'refit', 'images', 'k', 'dim', 'score-calls', 'out', 'no-docs', 'render']);
const QUICK = flags.bool('quick', false);
const nativeUrl = process.env.BENCH_DATABASE_URL ?? process.env.TEST_DATABASE_URL;
const small = QUICK || !nativeUrl;
const INGEST_N = flags.int('ingest', small ? 10_000 : 100_000);
const REFIT_SIZES = [...flags.ints('refit', small ? [10_000, 50_000] : [100_000, 1_000_000])].sort((a, b) => a - b);
const IMAGES = flags.int('images', small ? 200 : 2000);
const K = flags.int('k', small ? 100 : 1000);
const DIM = flags.int('dim', 512);
const SCORE_CALLS = flags.int('score-calls', small ? 30 : 100);
const SCORE_BATCH = 256;
const SELECT_FRACTION = 0.3;
const OUT = flags.has('out') ? path.resolve(flags.string('out', '')) : path.join(repo, QUICK ? 'bench/.cache/performance-quick.md' : 'docs/performance.md');

const rows: SuiteRow[] = [];
const notes: string[] = [];
const log = (message: string) => console.error(`[${new Date().toISOString().slice(11, 19)}] ${message}`);
const rate = (n: number, seconds: number) => n / seconds;
const fmtRate = (x: number) => `${Math.round(x).toLocaleString('en')}/s`;

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)];
}

async function timed<T>(run: () => Promise<T>): Promise<{ result: T; seconds: number }> {
  const started = performance.now();
  const result = await run();
  return { result, seconds: (performance.now() - started) / 1000 };
}

async function pool(count: number, concurrency: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, count) }, async () => {
      while (next < count) await task(next++);
    }),
  );
}

const b64 = (v: Float32Array) => Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64');

/** One ingest request body of rows [from, to) of `points`. */
function ingestBody(points: Float32Array, prefix: string, from: number, to: number): string {
  const items = [];
  for (let i = from; i < to; i++) items.push({ externalId: `${prefix}-${String(i).padStart(8, '0')}`, embedding: b64(points.subarray(i * DIM, (i + 1) * DIM)) });
  return JSON.stringify({ items });
}

async function ingestPoints(svc: HarnessService, dataset: string, points: Float32Array, n: number, prebuilt: boolean): Promise<number> {
  const per = 1000;
  const requests = Math.ceil(n / per);
  const bodies = prebuilt ? Array.from({ length: requests }, (_, r) => ingestBody(points, 'item', r * per, Math.min(n, (r + 1) * per))) : null;
  const { seconds } = await timed(() =>
    pool(requests, 2, async (r) => {
      const body = bodies ? bodies[r] : ingestBody(points, 'item', r * per, Math.min(n, (r + 1) * per));
      const answer = await svc.api.post<{ counts: { stored: number; updated: number; failed: number } }>(`/v1/datasets/${dataset}/items`, body);
      if (answer.counts.failed > 0) throw new Error(`${answer.counts.failed} items failed`);
      if (bodies) bodies[r] = '';
    }),
  );
  return seconds;
}

async function createEmbeddingDataset(svc: HarnessService, name: string): Promise<void> {
  await svc.api.deleteIfExists(`/v1/datasets/${name}`);
  await svc.api.post('/v1/datasets', { name, dimension: DIM, k: K, settings: { minItemsForFit: 1_000_000_000, autoRefit: false } });
}

async function datasetId(svc: HarnessService, name: string): Promise<string> {
  const rows = await svc.running.db.query<{ id: string }>('SELECT id::text AS id FROM datasets WHERE name = $1', [name]);
  return rows[0].id;
}

/** Runs psql against the native database (schema via search_path); resolves with its wall time. */
function psql(url: string, commands: string[]): Promise<number> {
  const { base, schema } = schemaOf(url);
  const args = [base, '-X', '-q', '-v', 'ON_ERROR_STOP=1', ...commands.flatMap((c) => ['-c', c])];
  const env = { ...process.env, ...(schema ? { PGOPTIONS: `-c search_path=${schema},public` } : {}) };
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn('psql', args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk) => (stderr += chunk));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve((performance.now() - started) / 1000) : reject(new Error(`psql exited ${code}: ${stderr}`))));
  });
}

async function psqlAvailable(): Promise<boolean> {
  return new Promise((resolve) => {
    const child = spawn('psql', ['--version'], { stdio: 'ignore' });
    child.on('error', () => resolve(false));
    child.on('exit', (code) => resolve(code === 0));
  });
}

// ---------------------------------------------------------------------------------------------

async function ingestCase(svc: HarnessService, tmp: string, usePsql: boolean): Promise<Float32Array> {
  log(`ingest: ${INGEST_N} × ${DIM} embeddings`);
  const points = new SyntheticSphere(1000, DIM, 7).take(INGEST_N);
  await createEmbeddingDataset(svc, 'bench-ingest');
  const seconds = await ingestPoints(svc, 'bench-ingest', points, INGEST_N, true);
  let raw: number | null = null;
  if (usePsql) {
    await createEmbeddingDataset(svc, 'bench-ingest-raw');
    const uuid = await datasetId(svc, 'bench-ingest-raw');
    const file = path.join(tmp, 'ingest.copy');
    const out = createWriteStream(file);
    function* rows(): Generator<BinaryField[]> {
      for (let i = 0; i < INGEST_N; i++) {
        yield [
          { type: 'uuid', value: uuid },
          { type: 'text', value: `item-${String(i).padStart(8, '0')}` },
          { type: 'vector', value: points, offset: i * DIM, dim: DIM },
        ];
      }
    }
    for (const chunk of binaryCopy(rows())) out.write(chunk);
    out.end();
    await new Promise<void>((resolve) => out.on('finish', () => resolve()));
    raw = await psql(nativeUrl!, [`\\copy items (dataset_id, external_id, embedding) FROM '${file}' WITH (FORMAT binary)`]);
    const count = await svc.running.db.query<{ n: string }>('SELECT count(*)::text AS n FROM items WHERE dataset_id = $1', [uuid]);
    if (Number(count[0].n) !== INGEST_N) throw new Error(`psql copied ${count[0].n} rows, expected ${INGEST_N}`);
    await rm(file);
    await svc.api.deleteIfExists('/v1/datasets/bench-ingest-raw');
  }
  rows.push({
    case: `ingest ${INGEST_N.toLocaleString('en')} × ${DIM} embeddings`,
    service: fmtRate(rate(INGEST_N, seconds)),
    serviceDetail: `${seconds.toFixed(1)} s; REST JSON, base64 float32, 1000/request, 2 in flight`,
    raw: raw === null ? 'n/a' : fmtRate(rate(INGEST_N, raw)),
    rawDetail: raw === null ? 'no psql / embedded' : `${raw.toFixed(1)} s; psql \\copy FORMAT binary into items`,
    ratio: raw === null ? null : raw / seconds,
  });
  return points;
}

interface Fitted {
  dataset: string;
  n: number;
  version: number;
  centroids: Float32Array;
}

async function refitCase(svc: HarnessService, dataset: string, points: Float32Array, n: number, ingestSeconds: number | null): Promise<Fitted> {
  log(`refit: ${dataset}, N = ${n}, k = ${K}`);
  const job = await timed(async () => {
    const started = await svc.api.post<{ id: string }>(`/v1/datasets/${dataset}/prototypes/refit`, {});
    return svc.api.waitForJob(started.id, undefined, 200);
  });
  const timings = (job.result.result?.timings ?? {}) as Record<string, number>;
  const version = (job.result.result?.version as number) ?? (await svc.api.get<{ version: number }>(`/v1/datasets/${dataset}/prototypes`)).version;
  const kernel = await OrtDistanceKernel.create({ intraOpNumThreads: svc.config.kernelThreads });
  const raw = await timed(() => fitKMeans(points, n, DIM, { k: K, seed: 0, kernel, maxIterations: 30, tolerance: 1e-4 }));
  await kernel.dispose();
  const s = (ms: number | undefined) => ((ms ?? 0) / 1000).toFixed(1);
  rows.push({
    case: `refit + rescore ${n.toLocaleString('en')} × ${DIM}, k = ${K}`,
    service: `${job.seconds.toFixed(1)} s`,
    serviceDetail: `request → switched; read ${s(timings.readMs)} s, fit ${s(timings.fitMs)} s, score write ${s(timings.rescoreWriteMs)} s, switch ${s(timings.switchMs)} s`,
    raw: `${raw.seconds.toFixed(1)} s`,
    rawDetail: `fitKMeans in memory, same k/seed/tolerance: ${raw.result.warmupIterations > 0 ? `${raw.result.warmupIterations} warm-up + ` : ''}${raw.result.iterations} iterations`,
    ratio: raw.seconds / job.seconds,
  });
  if (ingestSeconds !== null) notes.push(`Setup of the ${n.toLocaleString('en')}-item dataset: REST ingest at ${fmtRate(rate(n, ingestSeconds))} (${ingestSeconds.toFixed(0)} s).`);
  return { dataset, n, version, centroids: raw.result.centroids };
}

async function scoreCase(svc: HarnessService, fitted: Fitted): Promise<void> {
  log(`score: indexing ${fitted.dataset} into HNSW first`);
  const ctx = svc.running.services.ctx;
  const indexing = await timed(async () => {
    let moved = 0;
    for (let step; (step = await indexPendingVectors(ctx, 2000)) > 0; ) moved += step;
    return moved;
  });
  notes.push(
    `Before the score case, ${indexing.result.toLocaleString('en')} pending items were moved into the HNSW index (the background indexer's statement, 2,000 per step) in ${indexing.seconds.toFixed(0)} s ` +
      `(${fmtRate(rate(indexing.result, indexing.seconds))}).`,
  );
  const sphere = new SyntheticSphere(1000, DIM, 7);
  sphere.take(fitted.n); // skip the stored points: queries are new points from the same distribution
  const warmup = 5;
  const batches = Array.from({ length: SCORE_CALLS + warmup }, () => sphere.take(SCORE_BATCH));
  const latencies: number[] = [];
  for (let c = 0; c < batches.length; c++) {
    const body = JSON.stringify({ items: Array.from({ length: SCORE_BATCH }, (_, i) => ({ externalId: `q${i}`, embedding: b64(batches[c].subarray(i * DIM, (i + 1) * DIM)) })) });
    const t = await timed(() => svc.api.post(`/v1/datasets/${fitted.dataset}/score`, body));
    if (c >= warmup) latencies.push(t.seconds * 1000);
  }
  let rawLatencies: number[] | null = null;
  if (svc.backend === 'native') {
    const uuid = await datasetId(svc, fitted.dataset);
    const client = new pg.Client({ connectionString: schemaOf(nativeUrl!).base, options: `-c search_path=${svc.schema ?? 'public'},public` });
    await client.connect();
    const kernel = await OrtDistanceKernel.create({ intraOpNumThreads: svc.config.kernelThreads });
    const expr = annExpression(DIM, 'a.embedding');
    const sql = `SELECT q.ord, nn.external_id, nn.distance FROM unnest($1::text[]) WITH ORDINALITY AS q(v, ord)
      CROSS JOIN LATERAL (SELECT i.external_id, ${expr} <=> q.v::vector(${DIM}) AS distance
        FROM item_ann a JOIN items i ON i.id = a.item_id WHERE a.dataset_id = '${uuid}'
        ORDER BY ${expr} <=> q.v::vector(${DIM}) LIMIT 1) nn`;
    rawLatencies = [];
    for (let c = 0; c < batches.length; c++) {
      const t = await timed(async () => {
        const literals = Array.from({ length: SCORE_BATCH }, (_, i) => vectorLiteral(batches[c].subarray(i * DIM, (i + 1) * DIM)));
        const result = await client.query(sql, [literals]);
        if (result.rows.length !== SCORE_BATCH) throw new Error(`HNSW query returned ${result.rows.length} rows`);
        await kernel.nearest(batches[c], SCORE_BATCH, fitted.centroids, K, DIM);
      });
      if (c >= warmup) rawLatencies.push(t.seconds * 1000);
    }
    await kernel.dispose();
    await client.end();
  }
  const p = (xs: number[]) => `${percentile(xs, 0.5).toFixed(0)} / ${percentile(xs, 0.99).toFixed(0)} ms`;
  rows.push({
    case: `score ${SCORE_BATCH} embeddings against ${fitted.n.toLocaleString('en')} (p50 / p99)`,
    service: p(latencies),
    serviceDetail: `${SCORE_CALLS} sequential POST …/score calls after ${warmup} warm-up; default policy`,
    raw: rawLatencies ? p(rawLatencies) : 'n/a',
    rawDetail: rawLatencies ? 'one SQL HNSW top-1 query for the batch (pg, text vectors) + ORT nearest of 256 × k' : 'embedded',
    ratio: rawLatencies ? percentile(rawLatencies, 0.5) / percentile(latencies, 0.5) : null,
  });
}

async function imageCase(svc: HarnessService): Promise<void> {
  log(`images: generating ${IMAGES} distinct 500×375 JPEGs`);
  sharp.cache(false);
  const images: Buffer[] = [];
  for (let i = 0; i < IMAGES; i++) images.push(await jpeg(500, 375, await photoLikeRaw(500, 375, 1000 + i), 90));
  await svc.api.deleteIfExists('/v1/datasets/bench-images');
  await svc.api.post('/v1/datasets', { name: 'bench-images', settings: { minItemsForFit: 1_000_000_000, autoRefit: false } });
  const per = 100;
  const bodies = Array.from({ length: Math.ceil(IMAGES / per) }, (_, r) =>
    JSON.stringify({ items: images.slice(r * per, (r + 1) * per).map((img, i) => ({ externalId: `img-${r * per + i}`, image: img.toString('base64') })) }),
  );
  log('images: through the service');
  const service = await timed(() =>
    pool(bodies.length, 4, async (r) => {
      const answer = await svc.api.post<{ counts: { failed: number } }>('/v1/datasets/bench-images/items', bodies[r]);
      if (answer.counts.failed > 0) throw new Error(`${answer.counts.failed} images failed`);
    }),
  );
  log('images: raw ORT inference');
  const modelsDir = svc.config.embedding.modelsDir;
  const ensured = await ensureDefaultModel(modelsDir);
  const encoder = await loadModel({ ...defaultModelSpec(modelsDir), sha256: ensured.sha256 }, { intraOpNumThreads: svc.config.embedding.threads, worker: false });
  const batch = 32;
  const tensor = new Float32Array(batch * encoder.inputElements);
  for (let i = 0; i < batch; i++) tensor.set(await preprocessImage(images[i % images.length], encoder.spec), i * encoder.inputElements);
  await encoder.embed(tensor, batch); // warm-up
  const runs = Math.ceil(IMAGES / batch);
  const raw = await timed(async () => {
    for (let r = 0; r < runs; r++) await encoder.embed(tensor, batch);
  });
  await encoder.close();
  rows.push({
    case: `image ingest ${IMAGES.toLocaleString('en')} JPEGs (500×375)`,
    service: fmtRate(rate(IMAGES, service.seconds)),
    serviceDetail: `${service.seconds.toFixed(1)} s; REST JSON base64, 100/request, 4 in flight: decode, embed (batches of ${svc.config.embedding.maxBatch}), thumbnail, store`,
    raw: fmtRate(rate(runs * batch, raw.seconds)),
    rawDetail: `${raw.seconds.toFixed(1)} s; ORT session.run on pre-decoded batches of ${batch}, ${svc.config.embedding.threads} threads`,
    ratio: rate(IMAGES, service.seconds) / rate(runs * batch, raw.seconds),
  });
}

async function selectCase(svc: HarnessService, fitted: Fitted, tmp: string, usePsql: boolean): Promise<void> {
  log(`select: ${SELECT_FRACTION * 100}% of ${fitted.dataset}`);
  const expected = Math.floor(SELECT_FRACTION * fitted.n + 0.5);
  const service = await timed(async () => {
    const response = await fetch(`${svc.base}/v1/datasets/${fitted.dataset}/selection?order=hardest&fraction=${SELECT_FRACTION}`, {
      headers: svc.api.headers({ accept: 'application/x-ndjson' }),
    });
    if (response.status !== 200 || !response.body) throw new Error(`selection answered ${response.status}`);
    const hash = createHash('sha256');
    let count = 0;
    let rest = '';
    const decoder = new TextDecoder();
    for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
      const text = rest + decoder.decode(chunk, { stream: true });
      const lines = text.split('\n');
      rest = lines.pop()!;
      for (const line of lines) {
        hash.update(`${(JSON.parse(line) as { externalId: string }).externalId}\n`);
        count++;
      }
    }
    return { count, digest: hash.digest('hex') };
  });
  if (service.result.count !== expected) throw new Error(`selection streamed ${service.result.count} ids, expected ${expected}`);
  let raw: number | null = null;
  let same = '';
  if (usePsql) {
    const uuid = await datasetId(svc, fitted.dataset);
    const file = path.join(tmp, 'select.txt');
    raw = await psql(nativeUrl!, [
      `\\copy (SELECT i.external_id FROM item_scores s JOIN items i ON i.id = s.item_id WHERE s.dataset_id = '${uuid}' AND s.version = ${fitted.version} ` +
        `ORDER BY s.score DESC, i.external_id COLLATE "C" LIMIT ${expected}) TO '${file}'`,
    ]);
    const text = await readFile(file, 'utf8');
    const digest = createHash('sha256').update(text).digest('hex');
    same = digest === service.result.digest ? 'same ids in the same order' : 'ids DIFFER from the service’s';
    await rm(file);
  }
  rows.push({
    case: `stream ${SELECT_FRACTION * 100}% of ${fitted.n.toLocaleString('en')} (${expected.toLocaleString('en')} ids)`,
    service: `${service.seconds.toFixed(2)} s`,
    serviceDetail: `GET …/selection?order=hardest, NDJSON, to the last byte (${fmtRate(rate(expected, service.seconds))})`,
    raw: raw === null ? 'n/a' : `${raw.toFixed(2)} s`,
    rawDetail: raw === null ? 'no psql / embedded' : `psql \\copy (SELECT … ORDER BY score DESC, external_id LIMIT n) TO file; ${same}`,
    ratio: raw === null ? null : raw / service.seconds,
  });
}

async function main(): Promise<void> {
  const started = performance.now();
  const loadBefore = os.loadavg();
  let url: string | undefined;
  let schema: string | null = null;
  if (nativeUrl) {
    schema = schemaOf(nativeUrl).schema ?? `bench_${randomBytes(4).toString('hex')}`;
    url = withSchema(nativeUrl, schema);
  }
  const usePsql = Boolean(url) && (await psqlAvailable());
  log(`protoprune benchmark suite — ${url ? `native PostgreSQL (schema ${schema})` : 'EMBEDDED PGlite'}; load ${loadBefore.map((l) => l.toFixed(2)).join(' ')}`);
  log(`sizes: ingest ${INGEST_N}, refit ${REFIT_SIZES.join(', ')}, images ${IMAGES}, k ${K}, dim ${DIM}, score calls ${SCORE_CALLS}`);
  const tmp = path.join(os.tmpdir(), `protoprune-suite-${process.pid}`);
  await mkdir(tmp, { recursive: true });
  // Background HNSW indexing off: it would compete for the cores; the score case indexes explicitly.
  const svc = await startHarnessService({ databaseUrl: url, env: { ANN_INDEX_BATCH: '0' } });
  const versions = await svc.running.db.query<{ server: string; vector: string | null }>(
    "SELECT current_setting('server_version') AS server, (SELECT extversion FROM pg_extension WHERE extname = 'vector') AS vector",
  );
  const postgres = `PostgreSQL ${versions[0].server}, pgvector ${versions[0].vector ?? '?'}`;
  const datasets = ['bench-ingest', 'bench-ingest-raw', 'bench-images', ...REFIT_SIZES.map((n) => `bench-refit-${n}`)];
  try {
    const ingested = await ingestCase(svc, tmp, usePsql);
    let largest: Fitted | null = null;
    for (const [index, n] of REFIT_SIZES.entries()) {
      let dataset: string;
      let points: Float32Array;
      let ingestSeconds: number | null = null;
      if (n === INGEST_N) {
        dataset = 'bench-ingest';
        points = ingested;
      } else {
        dataset = `bench-refit-${n}`;
        log(`setup: ingesting ${n} × ${DIM} into ${dataset}`);
        points = new SyntheticSphere(1000, DIM, 11).take(n);
        await createEmbeddingDataset(svc, dataset);
        ingestSeconds = await ingestPoints(svc, dataset, points, n, false);
      }
      const fitted = await refitCase(svc, dataset, points, n, ingestSeconds);
      if (index === 0) await scoreCase(svc, fitted);
      if (index === 0) await imageCase(svc);
      largest = fitted;
    }
    if (largest) await selectCase(svc, largest, tmp, usePsql);
  } finally {
    for (const name of datasets) await svc.api.deleteIfExists(`/v1/datasets/${name}`).catch(() => undefined);
    await svc.stop();
    if (nativeUrl && !schemaOf(nativeUrl).schema && schema) {
      const { adminQuery } = await import('./lib/service.js');
      await adminQuery(nativeUrl, `DROP SCHEMA ${schema} CASCADE`);
    }
    await rm(tmp, { recursive: true, force: true });
  }
  const results: SuiteResults = {
    createdAt: new Date().toISOString(),
    backend: url ? 'native' : 'embedded',
    postgres,
    machine: { cores: os.availableParallelism(), cpu: os.cpus()[0]?.model ?? 'unknown', memGiB: Math.round(os.totalmem() / 2 ** 30), loadBefore, loadAfter: os.loadavg() },
    sizes: { ingest: INGEST_N, refit: REFIT_SIZES, images: IMAGES, k: K, dim: DIM, scoreCalls: SCORE_CALLS, scoreBatch: SCORE_BATCH, quick: QUICK },
    command: `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`,
    rows,
    notes,
    peakRssGiB: process.resourceUsage().maxRSS / 2 ** 20,
    wallSeconds: (performance.now() - started) / 1000,
  };
  const table = tableLines(results);
  console.log(`\n${table.join('\n')}\n`);
  for (const note of notes) console.log(`- ${note}`);
  if (!flags.bool('no-docs', false)) {
    await mkdir(path.dirname(OUT), { recursive: true });
    await writePerformanceDoc(results, OUT, table);
    await writeFile(OUT.replace(/\.md$/, '.json'), `${JSON.stringify(results, null, 1)}\n`);
    log(`wrote ${path.relative(process.cwd(), OUT)} and its .json`);
  }
}

export function tableLines(results: SuiteResults): string[] {
  const mark = results.backend === 'embedded' ? ' [EMBEDDED]' : '';
  return [
    `| case${mark} | protoprune | raw baseline | protoprune ÷ raw (speed) | protoprune detail | baseline detail |`,
    '|---|---:|---:|---:|---|---|',
    ...results.rows.map(
      (r) => `| ${r.case} | ${r.service} | ${r.raw} | ${r.ratio === null ? '–' : `${r.ratio.toFixed(2)}×`} | ${r.serviceDetail} | ${r.rawDetail} |`,
    ),
  ];
}

if (flags.has('render')) {
  const file = path.resolve(flags.string('render', ''));
  const results = JSON.parse(await readFile(file, 'utf8')) as SuiteResults;
  const out = file.replace(/\.json$/, '.md');
  await writePerformanceDoc(results, out, tableLines(results));
  log(`rewrote ${path.relative(process.cwd(), out)} from ${path.relative(process.cwd(), file)}`);
} else {
  await main();
}
