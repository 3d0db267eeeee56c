/**
 * Pruning-engine benchmark through the real service layer and database:
 *
 *   BENCH_DATABASE_URL=postgres://… npx tsx bench/engine.ts [--sizes=100000,1000000] [--dim=512] [--k=1000]
 *
 * For each N: ingest N synthetic clustered embeddings (batches of 10,000), a full refit (k-means fit,
 * rescore of every item, COPY of the new version's scores, atomic switch), then incremental batches
 * of 1,000 new embeddings (assign, score, store, fold into the centroids). Prints one table.
 * Without BENCH_DATABASE_URL (or TEST_DATABASE_URL) it runs on the embedded backend, at a smaller
 * default size, and says so. Background HNSW indexing is off so it does not compete for the cores.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { pino } from 'pino';
import type { DatabaseConfig } from '../src/config/index.js';
import { createDataset } from '../src/service/datasets.js';
import { watchJob } from '../src/service/jobs.js';
import { requestRefit } from '../src/service/refit.js';
import { startServiceLayer } from '../src/service/runtime.js';
import { openDatabase } from '../src/store/open.js';
import { SyntheticSphere } from './synthetic.js';
import { ingestItems } from '../src/service/ingest.js';
import type { IngestItem } from '../src/service/ingest-items.js';

const args = new Map(
  process.argv
    .slice(2)
    .map((a) => /^--([\w-]+)=(.*)$/.exec(a))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => [m[1], m[2]] as const),
);
const nativeUrl = process.env.BENCH_DATABASE_URL ?? process.env.TEST_DATABASE_URL;
const sizes = (args.get('sizes') ?? (nativeUrl ? '100000,1000000' : '20000')).split(',').map(Number);
const dim = Number(args.get('dim') ?? 512);
const k = Number(args.get('k') ?? 1000);
const INGEST_BATCH = 10_000;
const INCREMENTAL_BATCHES = 20;

async function adminQuery(sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: nativeUrl });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

async function freshDatabase(): Promise<{ config: DatabaseConfig; cleanup(): Promise<void> }> {
  if (nativeUrl) {
    const schema = `bench_${randomBytes(4).toString('hex')}`;
    await adminQuery(`CREATE SCHEMA ${schema}`);
    const url = new URL(nativeUrl);
    url.searchParams.set('schema', schema);
    return { config: { backend: 'native', url: url.toString(), poolMax: 4 }, cleanup: () => adminQuery(`DROP SCHEMA ${schema} CASCADE`) };
  }
  const dir = await mkdtemp(path.join(tmpdir(), 'protoprune-bench-'));
  return { config: { backend: 'embedded', dataDir: dir }, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

function items(points: Float32Array, count: number, prefix: string, offset: number): IngestItem[] {
  return Array.from({ length: count }, (_, i) => ({
    externalId: `${prefix}-${offset + i}`,
    embedding: points.subarray(i * dim, (i + 1) * dim),
  }));
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
}

interface Row {
  n: number;
  ingestSeconds: number;
  refitSeconds: number;
  fitSeconds: number;
  rescoreWriteSeconds: number;
  switchSeconds: number;
  incrementalMedianMs: number;
  incrementalP90Ms: number;
  peakRssGiB: number;
}

async function benchmark(n: number): Promise<Row> {
  const fresh = await freshDatabase();
  const { db } = await openDatabase(fresh.config);
  const layer = await startServiceLayer(db, pino({ level: 'warn' }), {
    kernelThreads: 2,
    jobs: { pollMs: 50, staleMs: 600_000, annIndexBatch: 0 },
    embedding: null,
  });
  try {
    await createDataset(layer.ctx, { name: 'bench', dimension: dim, k, settings: { minItemsForFit: Number.MAX_SAFE_INTEGER, autoRefit: false } });
    const data = new SyntheticSphere(1000, dim, 7);

    let started = performance.now();
    for (let from = 0; from < n; from += INGEST_BATCH) {
      const count = Math.min(INGEST_BATCH, n - from);
      const result = await ingestItems(layer.ctx, 'bench', items(data.take(count), count, 'item', from));
      if (result.items.some((r) => r.status === 'error')) throw new Error('ingest reported errors');
    }
    const ingestSeconds = (performance.now() - started) / 1000;

    started = performance.now();
    const job = await requestRefit(layer.ctx, 'bench');
    let last;
    for await (const view of watchJob(db, job.id, 100)) last = view;
    const refitSeconds = (performance.now() - started) / 1000;
    if (last?.state !== 'succeeded') throw new Error(`refit ended ${last?.state}: ${last?.error}`);
    const timings = last.result!.timings as Record<string, number>;

    const latencies: number[] = [];
    for (let b = 0; b <= INCREMENTAL_BATCHES; b++) {
      const batch = items(data.take(1000), 1000, 'new', b * 1000);
      const t = performance.now();
      await ingestItems(layer.ctx, 'bench', batch);
      if (b > 0) latencies.push(performance.now() - t); // batch 0 warms the prototype cache
    }
    latencies.sort((a, b) => a - b);
    return {
      n,
      ingestSeconds,
      refitSeconds,
      fitSeconds: timings.fitMs / 1000,
      rescoreWriteSeconds: timings.rescoreWriteMs / 1000,
      switchSeconds: timings.switchMs / 1000,
      incrementalMedianMs: percentile(latencies, 0.5),
      incrementalP90Ms: percentile(latencies, 0.9),
      peakRssGiB: process.resourceUsage().maxRSS / 1024 / 1024,
    };
  } finally {
    await layer.stop();
    await db.close();
    await fresh.cleanup();
  }
}

const backend = nativeUrl ? 'native PostgreSQL' : 'EMBEDDED PGlite (not the target backend)';
console.log(`protoprune engine benchmark — ${backend}, d = ${dim}, k = ${k}, 2 kernel threads`);
const rows: Row[] = [];
for (const n of sizes) {
  console.log(`running N = ${n} …`);
  rows.push(await benchmark(n));
}
const f = (x: number, digits = 1) => x.toFixed(digits);
console.log('');
console.log('| N | ingest (items/s) | refit total (s) | fit (s) | rescore write (s) | switch (s) | +1,000 batch p50 / p90 (ms) | peak RSS (GiB) |');
console.log('|---:|---:|---:|---:|---:|---:|---:|---:|');
for (const r of rows) {
  console.log(
    `| ${r.n.toLocaleString('en')} | ${Math.round(r.n / r.ingestSeconds).toLocaleString('en')} | ${f(r.refitSeconds)} | ${f(r.fitSeconds)} | ${f(r.rescoreWriteSeconds)} | ${f(r.switchSeconds, 2)} | ${f(r.incrementalMedianMs, 0)} / ${f(r.incrementalP90Ms, 0)} | ${f(r.peakRssGiB, 2)} |`,
  );
}
console.log('\nrefit total = request → switched (read embeddings, fit, write scores, score late items, switch, drop old scores).');
console.log('peak RSS is cumulative over the runs above (max resident set of this process).');
