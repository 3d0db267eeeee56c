/**
 * The scale benchmark on native PostgreSQL: for each N, a dataset of N × `--dim` synthetic unit
 * vectors (`--planted` groups) is ingested through the ingest use case (before any fit: items
 * only), then refitted at k = `--k` by a separate service process per replica count in
 * `--replicas` (the first requests the refit; the others only lend their workers to its rescore
 * parts). Printed per N: ingest rate, refit wall time and phases (sample read, fit, rescore,
 * switch, the pending items' relabel and cleanup after it), rescore rate per replica count, and the refit process's peak RSS (VmHWM), which must
 * not grow with N. With `--compare`, the refit's full-data objective (fitted on a sample) is
 * compared with k-means fitted on every item in this process (same k, seed and iterations).
 * With `--dedup`, SemDeDup then runs as a job in a fresh service process (time, peak RSS, groups);
 * `--duplicates=F` makes a fraction F of the N items planted near-duplicates (cosine 0.98–0.999
 * to a source item), and the run must put each one in a group with its source (recall).
 *
 *   BENCH_DATABASE_URL=postgres://… npm run bench -- scale [--sizes=1000000,4000000] [--dim=256] [--k=1000] [--replicas=1,2,3] [--compare] [--keep] [--dedup] [--duplicates=0.1]
 *
 * `--replicas=0` refits nothing: with `--keep` and `--dedup`, SemDeDup runs on the version an earlier run fitted.
 *
 * The machine's cores are shared by PostgreSQL, the refit processes and this one.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { pino } from 'pino';
import { fitKMeans } from '../src/core/kmeans.js';
import { OrtDistanceKernel } from '../src/kernels/ort.js';
import { createContext } from '../src/service/context.js';
import { createDataset, getDataset } from '../src/service/datasets.js';
import { ingestItems } from '../src/service/ingest.js';
import { getJobView, watchJob } from '../src/service/jobs.js';
import { requestRefit } from '../src/service/refit.js';
import { requestDedup } from '../src/service/dedup.js';
import { Rng } from '../src/core/random.js';
import { startServiceLayer } from '../src/service/runtime.js';
import { readDatasetEmbeddings } from '../src/store/items.js';
import { openDatabase } from '../src/store/open.js';
import { Flags } from './lib/args.js';
import { SyntheticSphere } from './synthetic.js';

const flags = new Flags(process.argv.slice(2), ['sizes', 'dim', 'k', 'planted', 'replicas', 'compare', 'keep', 'dedup', 'duplicates', 'child', 'role']);
const DIM = flags.int('dim', 256);
const K = flags.int('k', 1000);
const BATCH = 10_000;
const log = (message: string) => console.error(`[${new Date().toISOString().slice(11, 19)}] ${message}`);

/** Peak resident set of this process (kB), as the kernel counts it. */
function peakRssKb(): number {
  const line = readFileSync('/proc/self/status', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('VmHWM:'));
  return Number(line?.replace(/\D+/g, '') ?? 0);
}

/** A replica: a service layer with its job worker. The lead requests the refit and prints its result. */
async function child(url: string, role: string): Promise<void> {
  const { db } = await openDatabase({ backend: 'native', url, poolMax: 6 });
  const layer = await startServiceLayer(db, pino({ level: 'warn' }), { kernelThreads: 2, jobs: { pollMs: 20, staleMs: 600_000, annIndexBatch: 0 }, embedding: null });
  if (role === 'helper') {
    process.on('SIGTERM', () => void layer.stop().then(() => db.close()).then(() => process.exit(0)));
    return;
  }
  const started = performance.now();
  const job = role === 'dedup' ? await requestDedup(layer.ctx, 'scale') : await requestRefit(layer.ctx, 'scale');
  let last;
  for await (const view of watchJob(db, job.id, 100)) last = view;
  const wallMs = performance.now() - started;
  if (last?.state !== 'succeeded') throw new Error(`${job.kind} ended ${last?.state}: ${last?.error}`);
  console.log(JSON.stringify({ wallMs, result: last.result, peakRssKb: peakRssKb() }));
  await layer.stop();
  await db.close();
}

interface RefitRun {
  wallMs: number;
  result: { fitItems: number; sampleItems: number; objective: number; k: number; timings: Record<string, number> };
  peakRssKb: number;
}

interface DedupRun {
  wallMs: number;
  result: { jobId?: string; items: number; largestCluster: number; groups: number; duplicates: number; timings: Record<string, number> };
  peakRssKb: number;
}

/**
 * Which items are planted near-duplicates: with a fraction F of duplicates, every `stride`-th
 * source item (stride = round((1 − F) / F)) has one twin, `d<k>` next to `i<k>`.
 */
function duplicateStride(fraction: number): number {
  return fraction > 0 ? Math.max(1, Math.round((1 - fraction) / fraction)) : 0;
}

/** A unit vector near `source` (cosine about 0.98–0.999): source + Gaussian noise of norm U(0.05, 0.2). */
function twinOf(source: Float32Array, rng: Rng): Float32Array {
  const dim = source.length;
  const sigma = (0.05 + 0.15 * rng.next()) / Math.sqrt(dim);
  const out = new Float32Array(dim);
  let squared = 0;
  for (let j = 0; j < dim; j++) {
    const u = 1 - rng.next();
    const g = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rng.next());
    squared += (out[j] = source[j] + sigma * g) ** 2;
  }
  for (let j = 0; j < dim; j++) out[j] /= Math.sqrt(squared);
  return out;
}

/** Runs one refit (or, for role "dedup", one SemDeDup run) with `replicas` service processes; returns the lead's report. */
async function refitWith(url: string, replicas: number, role = 'lead'): Promise<RefitRun> {
  const script = fileURLToPath(import.meta.url);
  const start = (role: string) => spawn(process.execPath, ['--import', 'tsx', script, `--child=${url}`, `--role=${role}`], { stdio: ['ignore', 'pipe', 'inherit'] });
  const helpers = Array.from({ length: replicas - 1 }, () => start('helper'));
  await new Promise((r) => setTimeout(r, helpers.length > 0 ? 3000 : 0)); // helpers booted and polling
  const lead = start(role);
  let out = '';
  lead.stdout.on('data', (d) => (out += d));
  const code = await new Promise<number | null>((resolve) => lead.on('exit', resolve));
  for (const h of helpers) h.kill('SIGTERM');
  await Promise.all(helpers.map((h) => new Promise((r) => (h.exitCode !== null ? r(null) : h.on('exit', r)))));
  if (code !== 0) throw new Error(`refit process exited ${code}`);
  return JSON.parse(out.trim().split('\n').pop()!) as RefitRun;
}

async function main(): Promise<void> {
  const nativeUrl = process.env.BENCH_DATABASE_URL ?? process.env.TEST_DATABASE_URL;
  if (!nativeUrl) throw new Error('the scale bench measures native PostgreSQL: set BENCH_DATABASE_URL (or TEST_DATABASE_URL)');
  const sizes = flags.string('sizes', '1000000,4000000,10000000').split(',').map(Number);
  const replicaCounts = flags.string('replicas', '1').split(',').map(Number);
  const planted = flags.int('planted', K);
  const duplicates = Number(flags.string('duplicates', '0'));
  const stride = duplicateStride(duplicates);
  const rows: string[] = [];
  const dedupRows: string[] = [];
  for (const n of sizes) {
    // --keep: the ingested dataset stays in a schema named after its shape, and a later run reuses it.
    const keep = flags.has('keep');
    const schema = keep ? `bench_scale_${n}_d${DIM}_k${K}${stride ? `_dup${stride}` : ''}` : `bench_scale_${randomBytes(4).toString('hex')}`;
    const admin = new pg.Client({ connectionString: nativeUrl });
    await admin.connect();
    const reused = keep && (await admin.query('SELECT 1 FROM information_schema.schemata WHERE schema_name = $1', [schema])).rowCount === 1;
    if (!reused) await admin.query(`CREATE SCHEMA ${schema}`);
    const url = new URL(nativeUrl);
    url.searchParams.set('schema', schema);
    try {
      const { db } = await openDatabase({ backend: 'native', url: url.toString(), poolMax: 6 });
      const kernel = await OrtDistanceKernel.create({ intraOpNumThreads: 2 });
      const ctx = createContext(db, kernel, pino({ level: 'warn' }));
      let ingestPerSecond = Number.NaN;
      if (reused) {
        const [{ count }] = (await admin.query(`SELECT count(*)::int AS count FROM ${schema}.items`)).rows as { count: number }[];
        if (count !== n) throw new Error(`schema ${schema} holds ${count} items, not ${n} (an interrupted --keep run): drop it`);
        log(`N = ${n.toLocaleString('en')}: reusing the items of schema ${schema} (--keep)`);
      } else {
        await createDataset(ctx, { name: 'scale', dimension: DIM, k: K, settings: { minItemsForFit: Number.MAX_SAFE_INTEGER, autoRefit: false } });
        const data = new SyntheticSphere(planted, DIM, 7);
        log(`N = ${n.toLocaleString('en')}: ingesting ${DIM}-d items`);
        const ingestStarted = performance.now();
        // Source items, and after every stride-th one its twin, until N items in all.
        const twinRng = new Rng(11);
        let written = 0;
        for (let from = 0; written < n; ) {
          const items: { externalId: string; embedding: Float32Array }[] = [];
          while (items.length < BATCH && written < n) {
            const embedding = data.take(1);
            items.push({ externalId: `i${from}`, embedding });
            written++;
            if (stride > 0 && from % stride === 0 && written < n) {
              items.push({ externalId: `d${from}`, embedding: twinOf(embedding, twinRng) });
              written++;
            }
            from++;
          }
          const result = await ingestItems(ctx, 'scale', items);
          if (result.items.some((r) => r.status === 'error')) throw new Error('ingest reported errors');
        }
        ingestPerSecond = n / ((performance.now() - ingestStarted) / 1000);
        log(`ingested at ${Math.round(ingestPerSecond).toLocaleString('en')} items/s; VACUUM ANALYZE`);
        await db.exec('VACUUM ANALYZE items');
      }
      const runs: { replicas: number; run: RefitRun }[] = [];
      // --replicas=0: no refit (with --keep and --dedup, SemDeDup of the version a previous run fitted).
      for (const replicas of replicaCounts.filter((r) => r > 0)) {
        log(`refit with ${replicas} replica(s)`);
        const run = await refitWith(url.toString(), replicas);
        log(`  ${JSON.stringify(run)}`);
        runs.push({ replicas, run });
      }
      if (flags.has('dedup')) {
        log('SemDeDup as a job (one replica)');
        const run = (await refitWith(url.toString(), 1, 'dedup')) as unknown as DedupRun;
        log(`  ${JSON.stringify(run)}`);
        let recall = '–';
        if (stride > 0) {
          // A planted pair is found when following "duplicate of" from the twin and from its source
          // ends at the same kept item (one of them kept, both duplicates of a third, or a chain
          // across a cluster boundary).
          const { rows: pairs } = await admin.query(
            `SELECT d.external_id AS dup, k.external_id AS kept FROM ${schema}.dedup_pairs x
               JOIN ${schema}.items k ON k.id = x.kept_id JOIN ${schema}.items d ON d.id = x.duplicate_id
              WHERE x.job_id = (SELECT job_id FROM ${schema}.dedup_runs ORDER BY completed_at DESC LIMIT 1)`,
          );
          const keptOf = new Map((pairs as { dup: string; kept: string }[]).map((p) => [p.dup, p.kept]));
          const root = (id: string) => {
            for (let hops = 0; keptOf.has(id) && hops < 1000; hops++) id = keptOf.get(id)!;
            return id;
          };
          const { rows: twins } = await admin.query(`SELECT external_id AS twin FROM ${schema}.items WHERE external_id LIKE 'd%'`);
          const total = twins.length;
          const found = (twins as { twin: string }[]).filter(({ twin }) => root(twin) === root(`i${twin.slice(1)}`)).length;
          recall = `${found.toLocaleString('en')} of ${total.toLocaleString('en')} (${((found / total) * 100).toFixed(2)}%)`;
        }
        const r = run.result;
        dedupRows.push(
          `| ${n.toLocaleString('en')} | ${(run.wallMs / 1000).toFixed(1)} | ${Math.round(r.items / (run.wallMs / 1000)).toLocaleString('en')} | ${r.largestCluster.toLocaleString('en')} | ${r.groups.toLocaleString('en')} | ${r.duplicates.toLocaleString('en')} | ${recall} | ${(run.peakRssKb / 1024 / 1024).toFixed(2)} |`,
        );
      }
      let compare = '';
      if (flags.has('compare')) {
        const dataset = await getDataset(ctx, 'scale');
        log('fitting on every item in this process (--compare)');
        const all = await readDatasetEmbeddings(db, dataset.id, DIM);
        const full = await fitKMeans(all.vectors, all.n, DIM, { k: K, seed: dataset.settings.seed, kernel, maxIterations: dataset.settings.maxIterations, tolerance: dataset.settings.tolerance });
        const fullObjective = full.objectiveHistory[full.objectiveHistory.length - 1];
        const sampled = runs[0].run.result.objective;
        compare = ` | ${fullObjective.toFixed(5)} | ${sampled.toFixed(5)} (${(((sampled - fullObjective) / fullObjective) * 100).toFixed(2)}%)`;
        console.log(`\nobjective (mean cosine distance over all ${all.n.toLocaleString('en')} items): fit on all ${fullObjective.toFixed(5)}, fit on a sample of ${runs[0].run.result.sampleItems.toLocaleString('en')} ${sampled.toFixed(5)} → ${(sampled / fullObjective).toFixed(4)}×`);
      }
      for (const { replicas, run } of runs) {
        const t = run.result.timings;
        const rescoreRate = run.result.fitItems / (t.rescoreWriteMs / 1000);
        rows.push(
          `| ${n.toLocaleString('en')} | ${Number.isNaN(ingestPerSecond) ? 'reused' : Math.round(ingestPerSecond).toLocaleString('en')} | ${replicas} | ${(run.wallMs / 1000).toFixed(1)} | ${((t.readMs ?? 0) / 1000).toFixed(1)} / ${((t.fitMs ?? 0) / 1000).toFixed(1)} / ${(t.rescoreWriteMs / 1000).toFixed(1)} / ${(t.switchMs / 1000).toFixed(1)} / ${((t.relabelCleanupMs ?? 0) / 1000).toFixed(1)} | ${Math.round(rescoreRate).toLocaleString('en')} | ${run.result.sampleItems.toLocaleString('en')} | ${(run.peakRssKb / 1024 / 1024).toFixed(2)}${runs[0] === runs.find((r) => r.run === run) ? compare : ''} |`,
        );
      }
      await kernel.dispose();
      await db.close();
    } finally {
      if (!keep) await admin.query(`DROP SCHEMA ${schema} CASCADE`);
      await admin.end();
    }
  }
  console.log(`\nscale — ${os.availableParallelism()} cores shared by PostgreSQL, the refit processes and the ingesting one; d = ${DIM}, k = ${K}`);
  console.log(`| N | ingest (items/s) | replicas | refit wall (s) | sample read / fit / rescore / switch / relabel+cleanup (s) | rescore (items/s) | sample | peak RSS of the refit process (GiB)${flags.has('compare') ? ' | objective fit on all | fit on sample' : ''} |`);
  console.log(`|---:|---:|---:|---:|---|---:|---:|---:|${flags.has('compare') ? '---:|---:|' : ''}`);
  for (const row of rows) console.log(row);
  if (dedupRows.length > 0) {
    console.log(`\nSemDeDup job at the dataset's ε (0.05), one replica${stride ? `; ${duplicates} of the items are planted near-duplicates` : ''}`);
    console.log('| N | dedup wall (s) | items/s | largest cluster | groups | duplicates | planted pairs found | peak RSS of the dedup process (GiB) |');
    console.log('|---:|---:|---:|---:|---:|---:|---|---:|');
    for (const row of dedupRows) console.log(row);
  }
}

const childUrl = flags.string('child', '');
(childUrl ? child(childUrl, flags.string('role', 'lead')) : main()).catch((error) => {
  console.error(error);
  process.exit(1);
});
