/**
 * Ingest into ONE dataset from 1, 2 and 3 service processes at once, on native PostgreSQL: each
 * replica is a separate process running the ingest use case (`ingestItems`, the path REST and gRPC
 * call) with `--in-flight` batches of `--batch` items at a time, on a dataset already fitted (so
 * every batch is scored and appends its centroid delta; one folder per dataset applies them).
 * The raw baseline of the same run: `COPY items … FORMAT binary` of as many rows from one
 * connection, the floor of the items write alone.
 *
 *   BENCH_DATABASE_URL=postgres://… npm run bench -- ingest-replicas [--n=300000] [--dim=256] [--k=256] [--replicas=1,2,3] [--batch=2000] [--in-flight=2]
 *
 * The machine's 2 cores are shared by PostgreSQL and every replica: the figure is bound by that.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import { pino } from 'pino';
import { createDataset, getDataset } from '../src/service/datasets.js';
import { ingestItems } from '../src/service/ingest.js';
import { watchJob } from '../src/service/jobs.js';
import { requestRefit } from '../src/service/refit.js';
import { startServiceLayer } from '../src/service/runtime.js';
import { openDatabase } from '../src/store/open.js';
import { binaryCopy, type BinaryField } from '../src/store/pgcopy.js';
import { Flags } from './lib/args.js';
import { SyntheticSphere } from './synthetic.js';

const flags = new Flags(process.argv.slice(2), ['n', 'dim', 'k', 'replicas', 'batch', 'in-flight', 'child', 'prefix', 'count', 'seed']);
const DIM = flags.int('dim', 256);
const K = flags.int('k', 256);
const BATCH = flags.int('batch', 2000);
const IN_FLIGHT = flags.int('in-flight', 2);
const FIT_ITEMS = 50_000;
const log = (message: string) => console.error(`[${new Date().toISOString().slice(11, 19)}] ${message}`);

/** A replica: generates its rows, says "ready", waits for "go" on stdin, ingests them, prints its time. */
async function child(url: string): Promise<void> {
  const count = flags.int('count', 0);
  const prefix = flags.string('prefix', 'r');
  const points = new SyntheticSphere(K, DIM, flags.int('seed', 1)).take(count);
  const { db } = await openDatabase({ backend: 'native', url, poolMax: IN_FLIGHT + 2 });
  // The job worker polls rarely: this process is here to ingest (folds run after each batch).
  const layer = await startServiceLayer(db, pino({ level: 'warn' }), { kernelThreads: 1, jobs: { pollMs: 60_000, staleMs: 600_000, annIndexBatch: 0 }, embedding: null });
  console.log('ready');
  await new Promise<void>((resolve) => process.stdin.once('data', () => resolve()));
  process.stdin.destroy(); // or it keeps this process alive
  const started = performance.now();
  let next = 0;
  const lane = async () => {
    while (next < count) {
      const from = next;
      next = Math.min(count, next + BATCH);
      const items = [];
      for (let i = from; i < next; i++) items.push({ externalId: `${prefix}-${i}`, embedding: points.subarray(i * DIM, (i + 1) * DIM) });
      const result = await ingestItems(layer.ctx, 'ingest', items);
      if (result.items.some((r) => r.status !== 'stored')) throw new Error('ingest reported errors');
    }
  };
  await Promise.all(Array.from({ length: IN_FLIGHT }, lane));
  console.log(JSON.stringify({ ms: performance.now() - started }));
  await layer.stop();
  await db.close();
}

/** Runs `replicas` processes ingesting `n` new items between them; returns the wall time from "go" to the last one done. */
async function ingestWith(url: string, replicas: number, n: number, round: number): Promise<{ ms: number; activeBackends: number; lockWaiting: number }> {
  const script = fileURLToPath(import.meta.url);
  const share = Math.ceil(n / replicas);
  const children = Array.from({ length: replicas }, (_, r) =>
    spawn(
      process.execPath,
      ['--import', 'tsx', script, `--child=${url}`, `--prefix=x${round}r${r}`, `--count=${Math.min(share, n - r * share)}`, `--seed=${round * 10 + r + 2}`, `--dim=${DIM}`, `--k=${K}`, `--batch=${BATCH}`, `--in-flight=${IN_FLIGHT}`],
      { stdio: ['pipe', 'pipe', 'inherit'] },
    ),
  );
  const lines = children.map((c) => {
    let out = '';
    const ready = new Promise<void>((resolve) => c.stdout.on('data', (d) => ((out += d), out.includes('ready') && resolve())));
    const exit = new Promise<number | null>((resolve) => c.on('exit', resolve));
    return { ready, exit };
  });
  await Promise.all(lines.map((l) => l.ready));
  const sampler = new WaitSampler(url);
  await sampler.start();
  const started = performance.now();
  for (const c of children) c.stdin.end('go\n');
  const codes = await Promise.all(lines.map((l) => l.exit));
  const ms = performance.now() - started;
  const waits = await sampler.stop();
  if (codes.some((code) => code !== 0)) throw new Error(`a replica exited ${codes.join(', ')}`);
  return { ms, ...waits };
}

/**
 * Samples pg_stat_activity every 100 ms while the replicas ingest: how many of the database's
 * backends are active, and how many of those wait for a lock (the old row lock showed here).
 */
class WaitSampler {
  private readonly client: pg.Client;
  private timer: NodeJS.Timeout | undefined;
  private samples = 0;
  private active = 0;
  private locked = 0;

  constructor(url: string) {
    this.client = new pg.Client({ connectionString: url.replace(/\?.*$/, '') });
  }

  async start(): Promise<void> {
    await this.client.connect();
    const sample = async () => {
      const { rows } = await this.client.query<{ active: number; locked: number }>(
        `SELECT count(*)::int AS active, count(*) FILTER (WHERE wait_event_type = 'Lock')::int AS locked FROM pg_stat_activity
          WHERE datname = current_database() AND backend_type = 'client backend' AND state = 'active' AND pid <> pg_backend_pid()`,
      );
      this.samples++;
      this.active += rows[0].active;
      this.locked += rows[0].locked;
      this.timer = setTimeout(() => void sample(), 100);
    };
    await sample();
  }

  async stop(): Promise<{ activeBackends: number; lockWaiting: number }> {
    clearTimeout(this.timer);
    await this.client.end();
    return { activeBackends: this.active / this.samples, lockWaiting: this.locked / this.samples };
  }
}

/** The floor: binary COPY of the same rows into items from one connection. */
async function copyBaseline(url: string, datasetId: string, n: number): Promise<number> {
  const client = new pg.Client({ connectionString: url.replace(/\?.*$/, '') });
  await client.connect();
  const schema = new URL(url).searchParams.get('schema')!;
  await client.query(`SET search_path = ${schema}, public`);
  const points = new SyntheticSphere(K, DIM, 99).take(n);
  function* rows(): Generator<BinaryField[]> {
    for (let i = 0; i < n; i++) {
      yield [{ type: 'uuid', value: datasetId }, { type: 'text', value: `copy-${i}` }, { type: 'vector', value: points, offset: i * DIM, dim: DIM }, { type: 'jsonb', value: '{}' }];
    }
  }
  // Encoded before the clock starts, in ~256 KiB CopyData messages, as the service sends them.
  const chunks = [...binaryCopy(rows())];
  const started = performance.now();
  await new Promise<void>((resolve, reject) => {
    const stream = client.query(copyFrom('COPY items (dataset_id, external_id, embedding, metadata) FROM STDIN WITH (FORMAT binary)'));
    stream.on('finish', () => resolve());
    stream.on('error', reject);
    for (const chunk of chunks) stream.write(chunk);
    stream.end();
  });
  const ms = performance.now() - started;
  await client.end();
  return ms;
}

async function main(): Promise<void> {
  const nativeUrl = process.env.BENCH_DATABASE_URL ?? process.env.TEST_DATABASE_URL;
  if (!nativeUrl) throw new Error('set BENCH_DATABASE_URL to a native PostgreSQL with pgvector');
  const n = flags.int('n', 300_000);
  const replicaCounts = flags.string('replicas', '1,2,3').split(',').map(Number);
  const schema = `bench_ingest_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: nativeUrl });
  await admin.connect();
  await admin.query(`CREATE SCHEMA ${schema}`);
  const url = new URL(nativeUrl);
  url.searchParams.set('schema', schema);
  try {
    const { db } = await openDatabase({ backend: 'native', url: url.toString(), poolMax: 4 });
    const layer = await startServiceLayer(db, pino({ level: 'warn' }), { kernelThreads: 2, jobs: { pollMs: 20, staleMs: 600_000, annIndexBatch: 0 }, embedding: null });
    await createDataset(layer.ctx, { name: 'ingest', dimension: DIM, k: K, settings: { minItemsForFit: Number.MAX_SAFE_INTEGER, autoRefit: false } });
    log(`fitting on ${FIT_ITEMS.toLocaleString('en')} items (k = ${K})`);
    const fit = new SyntheticSphere(K, DIM, 1).take(FIT_ITEMS);
    for (let from = 0; from < FIT_ITEMS; from += 10_000) {
      await ingestItems(layer.ctx, 'ingest', Array.from({ length: 10_000 }, (_, i) => ({ externalId: `fit-${from + i}`, embedding: fit.subarray((from + i) * DIM, (from + i + 1) * DIM) })));
    }
    const job = await requestRefit(layer.ctx, 'ingest');
    for await (const view of watchJob(db, job.id, 100)) if (view.state === 'failed') throw new Error(view.error ?? 'fit failed');
    const dataset = await getDataset(layer.ctx, 'ingest');
    await layer.stop();
    await db.exec('VACUUM ANALYZE');

    const results: { replicas: number; ms: number; activeBackends: number; lockWaiting: number }[] = [];
    for (const [round, replicas] of replicaCounts.entries()) {
      log(`${replicas} replica(s) ingesting ${n.toLocaleString('en')} items into one dataset`);
      const run = await ingestWith(url.toString(), replicas, n, round);
      log(`  ${Math.round(n / (run.ms / 1000)).toLocaleString('en')} items/s`);
      results.push({ replicas, ...run });
    }
    const [left] = await db.query<{ deltas: number; since: number }>(
      `SELECT (SELECT count(*)::int FROM centroid_deltas) AS deltas, (SELECT items_since_fit::int FROM prototype_sets WHERE dataset_id = $1 AND version = 1) AS since`,
      [dataset.id],
    );
    log(`centroid deltas left unfolded: ${left.deltas}; items folded since the fit: ${left.since.toLocaleString('en')} of ${(n * replicaCounts.length).toLocaleString('en')}`);
    const copyMs = await copyBaseline(url.toString(), dataset.id, n);
    await db.close();

    const one = results.find((r) => r.replicas === 1) ?? results[0];
    console.log(`\ningest into one fitted dataset — ${os.availableParallelism()} cores shared by PostgreSQL and every replica; d = ${DIM}, k = ${K}, ${BATCH} items per batch, ${IN_FLIGHT} in flight per replica`);
    console.log('| replicas | items/s | × one replica | × binary COPY of the rows | active backends (mean) | of them waiting for a lock |');
    console.log('|---:|---:|---:|---:|---:|---:|');
    for (const r of results) {
      const rate = n / (r.ms / 1000);
      console.log(`| ${r.replicas} | ${Math.round(rate).toLocaleString('en')} | ${(one.ms / r.ms).toFixed(2)} | ${(copyMs / r.ms).toFixed(2)} | ${r.activeBackends.toFixed(2)} | ${r.lockWaiting.toFixed(2)} |`);
    }
    console.log(`| COPY (baseline) | ${Math.round(n / (copyMs / 1000)).toLocaleString('en')} | | 1.00 | | |`);
  } finally {
    await admin.query(`DROP SCHEMA ${schema} CASCADE`);
    await admin.end();
  }
}

const childUrl = flags.string('child', '');
(childUrl ? child(childUrl) : main()).catch((error) => {
  console.error(error);
  process.exit(1);
});
