/**
 * `npm run bench -- export-stream`: the score export at millions of rows, in constant memory.
 *
 *   BENCH_DATABASE_URL='postgres://…/db?schema=bench_export_stream' npx tsx bench/export-stream.ts [flags]
 *
 * Native PostgreSQL only. The service runs in this process (bench/lib/service.ts: the real
 * startService, auth on) in a schema of its own (default bench_export_stream, kept for --reuse).
 * For each N of --sizes the dataset is written by SQL, not ingested (as in bench/select-stream.ts):
 * N items with a constant 8-d embedding, external ids `item-<md5>`, metadata {"split": …, "i": …},
 * scores under version 1 uniform in [0, 1) in --k clusters. Then, --runs times:
 *
 *   (a) the raw baseline: `psql -c "\copy (<the export's own query>) TO '/dev/null'"` (binary), the
 *       database's side alone: no decoding, no formatting, no HTTP
 *   (b) REST GET …/scores?format=ndjson read by `curl -o /dev/null` (a process of its own)
 *   (c) the same as CSV
 *   (d) the same as Parquet
 *   (e) gRPC ExportScores read by a client in a child process
 *
 * and prints each time (median) with its ratio to (a), rows per second, and the server process's
 * peak RSS growth during each (sampled every 20 ms). Constant memory means the growth does not
 * follow N. The machine's two cores are shared by PostgreSQL, the server and the client.
 *
 * Flags: --sizes=1000000,10000000 --k=100 --runs=1 --reuse (keep datasets of the same N)
 *        --formats=ndjson,csv,parquet,grpc --grpc-client=… (internal: the child's mode)
 */
import { execFile, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import pg from 'pg';
import { LOADER_OPTIONS, PROTO_FILE } from '../src/grpc/proto.js';
import { createDataset, getDataset } from '../src/service/datasets.js';
import { exportSource } from '../src/store/score-export.js';
import { Flags } from './lib/args.js';
import { schemaOf, startHarnessService, withSchema } from './lib/service.js';

const run = promisify(execFile);
const flags = new Flags(process.argv.slice(2), ['sizes', 'k', 'runs', 'reuse', 'formats', 'grpc-client']);

interface GrpcTarget {
  port: number;
  key: string;
  dataset: string;
}

if (flags.has('grpc-client')) {
  await grpcClient(JSON.parse(flags.string('grpc-client', '{}')) as GrpcTarget);
  process.exit(0);
}

const SIZES = flags.string('sizes', '1000000,10000000').split(',').map(Number);
const K = flags.int('k', 100);
const RUNS = flags.int('runs', 1);
const REUSE = flags.bool('reuse', false);
const FORMATS = flags.string('formats', 'ndjson,csv,parquet,grpc').split(',');
const url = process.env.BENCH_DATABASE_URL ?? process.env.TEST_DATABASE_URL;
if (!url) throw new Error('set BENCH_DATABASE_URL (native PostgreSQL): this benchmark compares against psql');
const databaseUrl = schemaOf(url).schema ? url : withSchema(url, 'bench_export_stream');
const schema = schemaOf(databaseUrl).schema!;

/** The child's side of (e): one ExportScores call, timed from the call to its end. */
async function grpcClient(target: GrpcTarget): Promise<void> {
  const definition = protoLoader.loadSync(PROTO_FILE, LOADER_OPTIONS);
  const Service = (grpc.loadPackageDefinition(definition).protoprune as unknown as { v1: { Protoprune: grpc.ServiceClientConstructor } }).v1.Protoprune;
  const client = new Service(`127.0.0.1:${target.port}`, grpc.credentials.createInsecure(), { 'grpc.max_receive_message_length': -1 }) as grpc.Client &
    Record<string, (request: unknown, metadata: grpc.Metadata) => grpc.ClientReadableStream<{ items: unknown[] }>>;
  const metadata = new grpc.Metadata();
  metadata.set('authorization', `Bearer ${target.key}`);
  const started = performance.now();
  let rows = 0;
  await new Promise<void>((resolve, reject) => {
    const call = client.ExportScores({ dataset: target.dataset }, metadata);
    call.on('data', (message) => (rows += message.items.length));
    call.on('end', resolve);
    call.on('error', reject);
  });
  process.stdout.write(JSON.stringify({ ms: performance.now() - started, rows }));
  client.close();
}

async function withClient<T>(fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: schemaOf(databaseUrl).base, options: `-c search_path=${schema},public` });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

/** Runs `fn` while sampling this process's RSS (the server's: it runs here) every 20 ms. */
async function sampled<T>(fn: () => Promise<T>): Promise<{ ms: number; rssMb: number; value: T }> {
  const before = process.memoryUsage.rss();
  let peak = before;
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage.rss())), 20);
  const started = performance.now();
  try {
    const value = await fn();
    return { ms: performance.now() - started, rssMb: (peak - before) / 2 ** 20, value };
  } finally {
    clearInterval(sampler);
  }
}

const service = await startHarnessService({ databaseUrl, env: { ANN_INDEX_BATCH: '0' } });
const here = fileURLToPath(import.meta.url);
const report: string[] = [];
try {
  const ctx = service.running.services.ctx;
  for (const n of SIZES) {
    const name = `bench-export-${n}`;
    const existing = await getDataset(ctx, name).catch(() => null);
    const count = existing ? await withClient(async (c) => Number((await c.query('SELECT count(*) AS n FROM item_scores WHERE dataset_id = $1 AND version = 1', [existing.id])).rows[0].n)) : -1;
    let datasetId: string;
    if (REUSE && existing && count === n && existing.activeVersion === 1) {
      datasetId = existing.id;
      console.log(`reusing ${name}: ${n} items`);
    } else {
      if (existing) await service.api.deleteIfExists(`/v1/datasets/${name}`);
      datasetId = (await createDataset(ctx, { name, dimension: 8, k: K, settings: { autoRefit: false, minItemsForFit: n + 1 } })).id;
      const setup = await sampled(() =>
        withClient(async (c) => {
          await c.query(
            `INSERT INTO items (dataset_id, external_id, embedding, metadata)
             SELECT $1, 'item-' || md5(g::text), '[0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5]'::vector,
                    jsonb_build_object('split', CASE WHEN g % 5 = 0 THEN 'val' ELSE 'train' END, 'i', g)
               FROM generate_series(1, $2::int) g`,
            [datasetId, n],
          );
          await c.query(
            `INSERT INTO item_scores (dataset_id, version, item_id, score, cluster)
             SELECT dataset_id, 1, id, round(random()::numeric, 6)::real, floor(random() * $2::int)::int FROM items WHERE dataset_id = $1`,
            [datasetId, K],
          );
          await c.query('UPDATE datasets SET active_version = 1 WHERE id = $1', [datasetId]);
          await c.query('VACUUM ANALYZE items');
          await c.query('VACUUM ANALYZE item_scores');
        }),
      );
      console.log(`wrote ${n} items and scores by SQL in ${(setup.ms / 1000).toFixed(1)} s`);
    }
    const baselineSql = exportSource({ datasetId, version: 1, total: n, dedupJobId: null, filter: null }).replace(/\s+/g, ' ');
    const psqlEnv = { ...process.env, PGOPTIONS: `-c search_path=${schema},public` };
    const curl = async (format: string): Promise<number> => {
      const { stdout } = await run('curl', ['-sS', '-f', '-o', '/dev/null', '-w', '%{size_download}', '-H', `authorization: Bearer ${service.key}`, `${service.base}/v1/datasets/${name}/scores?format=${format}`], {
        maxBuffer: 1 << 20,
      });
      return Number(stdout);
    };
    const grpcCall = () =>
      new Promise<number>((resolve, reject) => {
        const target: GrpcTarget = { port: service.running.grpc.port, key: service.key, dataset: name };
        const child = spawn(process.execPath, [...process.execArgv, here, `--grpc-client=${JSON.stringify(target)}`], { stdio: ['ignore', 'pipe', 'inherit'] });
        let out = '';
        child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
        child.on('error', reject);
        child.on('exit', (code) => {
          if (code !== 0) return reject(new Error(`grpc client exited with ${code}`));
          const { rows } = JSON.parse(out) as { rows: number };
          return rows === n ? resolve(rows) : reject(new Error(`gRPC exported ${rows} rows, expected ${n}`));
        });
      });

    const times: Record<string, number[]> = { baseline: [] };
    const rss: Record<string, number> = {};
    const bytes: Record<string, number> = {};
    for (let r = 0; r < RUNS; r++) {
      const baseline = await sampled(() => run('psql', [schemaOf(databaseUrl).base, '-v', 'ON_ERROR_STOP=1', '-c', `\\copy (${baselineSql}) TO '/dev/null' (FORMAT binary)`], { env: psqlEnv }));
      if (!baseline.value.stdout.includes(`COPY ${n}`)) throw new Error(`baseline: ${baseline.value.stdout}`);
      times.baseline.push(baseline.ms);
      for (const format of FORMATS) {
        const one = await sampled(() => (format === 'grpc' ? grpcCall() : curl(format)));
        (times[format] ??= []).push(one.ms);
        rss[format] = Math.max(rss[format] ?? 0, one.rssMb);
        if (format !== 'grpc') bytes[format] = one.value;
      }
      console.log(`N ${n} run ${r + 1}: ` + Object.entries(times).map(([label, list]) => `${label} ${(list[list.length - 1] / 1000).toFixed(1)} s`).join(', '));
    }
    const base = median(times.baseline);
    report.push(`\nN = ${n.toLocaleString('en-US')} rows, k = ${K}, median of ${RUNS} run(s) (2 cores shared by PostgreSQL, server and client)`);
    report.push(`${'path'.padEnd(44)} ${'time'.padStart(8)}  ${'vs (a)'.padStart(6)}  ${'rows/s'.padStart(9)}  ${'size'.padStart(9)}  server RSS growth`);
    const labels: Record<string, string> = {
      baseline: '(a) psql \\copy binary, the same query',
      ndjson: '(b) REST NDJSON',
      csv: '(c) REST CSV',
      parquet: '(d) REST Parquet',
      grpc: '(e) gRPC ExportScores',
    };
    for (const [label, list] of Object.entries(times)) {
      const ms = median(list);
      const size = bytes[label] === undefined ? '' : `${(bytes[label] / 2 ** 20).toFixed(0)} MiB`;
      const growth = rss[label] === undefined ? '' : `+${rss[label].toFixed(0)} MiB`;
      report.push(`${labels[label].padEnd(44)} ${(ms / 1000).toFixed(1).padStart(6)} s  ${(ms / base).toFixed(2).padStart(5)}×  ${Math.round(n / (ms / 1000)).toLocaleString('en-US').padStart(9)}  ${size.padStart(9)}  ${growth}`);
    }
  }
  console.log(report.join('\n'));
} finally {
  await service.stop();
}
