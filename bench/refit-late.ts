/**
 * A refit while items arrive, against the same refit on a quiet dataset, on native PostgreSQL:
 *
 *   BENCH_DATABASE_URL=postgres://… npx tsx bench/refit-late.ts [--ballast=1000000] [--n=30000] [--dim=128] [--k=100] [--late=3000] [--runs=3]
 *   (npm run bench -- refit-late …)
 *
 * The database first gets a second dataset of `--ballast` items, each with a score (real ingest,
 * auto-fitted), so item_scores holds over a million rows of another dataset: the late-item query
 * once anti-joined against every score row of every dataset (a 0.94 s refit took 96.8 s with 3,000
 * late items next to 1.1M score rows). Then, on a dataset of `--n` items, `--runs` refits with
 * nothing arriving, and `--runs` refits during each of which `--late` new items are ingested in
 * batches of 500 (they start as soon as the job runs, so they land while it reads, fits and
 * rescores; what lands after its snapshot is scored as late items). It prints each refit's wall
 * time (request → succeeded), how many items arrived while it ran, the p50 of both and their ratio
 * (target ≤ 2), and the plan of the late-item query.
 */
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import pg from 'pg';
import { pino } from 'pino';
import { createDataset, getDataset } from '../src/service/datasets.js';
import { watchJob, type JobView } from '../src/service/jobs.js';
import { requestRefit } from '../src/service/refit.js';
import { startServiceLayer, type ServiceLayer } from '../src/service/runtime.js';
import { openDatabase } from '../src/store/open.js';
import { Flags } from './lib/args.js';
import { SyntheticSphere } from './synthetic.js';
import { ingestItems } from '../src/service/ingest.js';
import type { IngestItem } from '../src/service/ingest-items.js';

const flags = new Flags(process.argv.slice(2), ['ballast', 'n', 'dim', 'k', 'late', 'runs']);
const nativeUrl = process.env.BENCH_DATABASE_URL ?? process.env.TEST_DATABASE_URL;
if (!nativeUrl) throw new Error('refit-late measures native PostgreSQL: set BENCH_DATABASE_URL (or TEST_DATABASE_URL)');
const BALLAST = flags.int('ballast', 1_000_000);
const N = flags.int('n', 30_000);
const DIM = flags.int('dim', 128);
const K = flags.int('k', 100);
const LATE = flags.int('late', 3_000);
const RUNS = flags.int('runs', 3);
const BATCH = 10_000;
const LATE_BATCH = 500;

const log = (message: string) => console.error(`[${new Date().toISOString().slice(11, 19)}] ${message}`);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function items(data: SyntheticSphere, dim: number, count: number, prefix: string, offset: number): IngestItem[] {
  const points = data.take(count);
  return Array.from({ length: count }, (_, i) => ({ externalId: `${prefix}-${offset + i}`, embedding: points.subarray(i * dim, (i + 1) * dim) }));
}

async function ingestAll(layer: ServiceLayer, dataset: string, data: SyntheticSphere, dim: number, count: number, prefix: string): Promise<void> {
  for (let from = 0; from < count; from += BATCH) {
    const result = await ingestItems(layer.ctx, dataset, items(data, dim, Math.min(BATCH, count - from), prefix, from));
    if (result.items.some((r) => r.status === 'error')) throw new Error(`ingest into ${dataset} reported errors`);
  }
}

async function timedRefit(layer: ServiceLayer, lateItems: number, data: SyntheticSphere, round: number): Promise<{ seconds: number; arrivedWhileRunning: number }> {
  const started = performance.now();
  const job = await requestRefit(layer.ctx, 'target');
  let feeding: Promise<void> | null = null;
  let fed = 0;
  let last: JobView | undefined;
  for await (const view of watchJob(layer.ctx.db, job.id, 20)) {
    last = view;
    if (view.state === 'running' && lateItems > 0 && !feeding) {
      feeding = (async () => {
        for (let from = 0; from < lateItems; from += LATE_BATCH) {
          await ingestItems(layer.ctx, 'target', items(data, DIM, LATE_BATCH, `late${round}`, from));
          fed += LATE_BATCH;
        }
      })();
    }
  }
  const seconds = (performance.now() - started) / 1000;
  const arrivedWhileRunning = fed;
  await feeding;
  if (last?.state !== 'succeeded') throw new Error(`refit ended ${last?.state}: ${last?.error}`);
  return { seconds, arrivedWhileRunning };
}

async function main(): Promise<void> {
  const schema = `bench_late_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: nativeUrl });
  await admin.connect();
  await admin.query(`CREATE SCHEMA ${schema}`);
  const url = new URL(nativeUrl!);
  url.searchParams.set('schema', schema);
  const { db } = await openDatabase({ backend: 'native', url: url.toString(), poolMax: 6 });
  const layer = await startServiceLayer(db, pino({ level: 'warn' }), { kernelThreads: 2, jobs: { pollMs: 20, staleMs: 600_000, annIndexBatch: 0 }, embedding: null });
  try {
    log(`ballast: ${BALLAST.toLocaleString('en')} scored items of another dataset (d = 8)`);
    await createDataset(layer.ctx, { name: 'ballast', dimension: 8, k: 16, settings: { minItemsForFit: 1000 } });
    await ingestAll(layer, 'ballast', new SyntheticSphere(16, 8, 3), 8, BALLAST, 'b');
    const [{ n: scoreRows }] = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM item_scores');
    log(`item_scores now holds ${scoreRows.toLocaleString('en')} rows`);

    log(`target: ${N.toLocaleString('en')} × ${DIM}, k = ${K}`);
    await createDataset(layer.ctx, { name: 'target', dimension: DIM, k: K, settings: { minItemsForFit: Number.MAX_SAFE_INTEGER, autoRefit: false } });
    const data = new SyntheticSphere(K, DIM, 11);
    await ingestAll(layer, 'target', data, DIM, N, 't');
    await timedRefit(layer, 0, data, -1); // the first fit, and warm caches
    await db.exec('ANALYZE');

    const quiet: number[] = [];
    const busy: { seconds: number; arrivedWhileRunning: number }[] = [];
    for (let r = 0; r < RUNS; r++) {
      quiet.push((await timedRefit(layer, 0, data, r)).seconds);
      log(`quiet refit ${r + 1}: ${quiet[r].toFixed(2)} s`);
      busy.push(await timedRefit(layer, LATE, data, r));
      log(`refit with ${LATE} items arriving ${r + 1}: ${busy[r].seconds.toFixed(2)} s (${busy[r].arrivedWhileRunning} arrived while it ran)`);
    }
    const q = median(quiet);
    const b = median(busy.map((x) => x.seconds));
    console.log(`\nrefit with late items — ${os.availableParallelism()} cores (shared by PostgreSQL, the service and the ingesting client), item_scores ${scoreRows.toLocaleString('en')} rows of another dataset`);
    console.log(`| refit of ${N.toLocaleString('en')} × ${DIM}, k = ${K} | runs (s) | p50 (s) |`);
    console.log('|---|---|---:|');
    console.log(`| quiet | ${quiet.map((x) => x.toFixed(2)).join(', ')} | ${q.toFixed(2)} |`);
    console.log(`| ${LATE.toLocaleString('en')} items ingested during it | ${busy.map((x) => `${x.seconds.toFixed(2)} (${x.arrivedWhileRunning} arrived)`).join(', ')} | ${b.toFixed(2)} |`);
    console.log(`\nratio ${(b / q).toFixed(2)}× (target ≤ 2×)`);
  } finally {
    await layer.stop();
    await db.close();
    await admin.query(`DROP SCHEMA ${schema} CASCADE`);
    await admin.end();
  }
}

await main();
