/**
 * `npm run bench -- select-stream`: streaming a hardest-30% selection against the indexed SQL export.
 *
 *   BENCH_DATABASE_URL='postgres://…/db?schema=bench_select_stream' npx tsx bench/select-stream.ts [flags]
 *
 * Native PostgreSQL only. The service runs in this process (bench/lib/service.ts: the real
 * startService, auth on) in a schema of its own (`?schema=`; default bench_select_stream, kept for
 * --reuse). The dataset is written by SQL, not ingested: N items with a constant 8-d embedding (the
 * selection never reads vectors; only the row width matters) and external ids `item-<md5>` (not in
 * score order), their scores under version 1 (uniform in [0, 1), rounded to 1e-6 so some tie) in
 * --k clusters, and the dataset's active version set to 1. Then, --runs times, interleaved:
 *
 *   (a) the raw baseline: `psql -c "\copy (SELECT i.external_id FROM item_scores s JOIN items i …
 *       ORDER BY s.score DESC LIMIT n) TO '/dev/null'"`, the indexed SQL export (no tie-break, no count)
 *   (b) REST GET …/selection?order=hardest&fraction=F&format=ndjson through the server, read by
 *       `curl -o /dev/null` (a process of its own, as psql is)
 *   (c) gRPC Select of the same selection, read by a client in a child process
 *   (d) REST with balance=cluster (per-cluster quotas, also served from the index)
 *   (e) the in-memory path as hardest ran before (computeSelection: every score read, the core,
 *       the chosen ids read back), timed in this process
 *   (f) REST with order=random, which keeps that path, with the server process's peak heap and
 *       RSS growth meanwhile
 *
 * and prints each time (median of the runs) with its ratio to (a). The machine's cores are shared
 * by PostgreSQL, the server and the client: figures are bound by that.
 *
 * Flags: --n=2000000 --fraction=0.3 --k=100 --runs=3 --reuse (keep a dataset of the same N)
 *        --in-memory=true (run (e)) --grpc-client=… (internal: the child process's mode)
 */
import { execFile, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import pg from 'pg';
import { LOADER_OPTIONS, PROTO_FILE } from '../src/grpc/proto.js';
import { createDataset, getDataset } from '../src/service/datasets.js';
import { computeSelection, selectedExternalIds } from '../src/service/selection.js';
import { Flags } from './lib/args.js';
import { schemaOf, startHarnessService, withSchema } from './lib/service.js';

const run = promisify(execFile);
const flags = new Flags(process.argv.slice(2), ['n', 'fraction', 'k', 'runs', 'reuse', 'in-memory', 'grpc-client']);

if (flags.has('grpc-client')) {
  await grpcClient(JSON.parse(flags.string('grpc-client', '{}')) as GrpcTarget);
  process.exit(0);
}

const N = flags.int('n', 2_000_000);
const FRACTION = flags.number('fraction', 0.3);
const K = flags.int('k', 100);
const RUNS = flags.int('runs', 3);
const REUSE = flags.bool('reuse', false);
const IN_MEMORY = flags.bool('in-memory', true);
const DATASET = 'bench-select';
const url = process.env.BENCH_DATABASE_URL ?? process.env.TEST_DATABASE_URL;
if (!url) throw new Error('set BENCH_DATABASE_URL (native PostgreSQL): this benchmark compares against psql');
const databaseUrl = schemaOf(url).schema ? url : withSchema(url, 'bench_select_stream');
const schema = schemaOf(databaseUrl).schema!;

interface GrpcTarget {
  port: number;
  key: string;
  dataset: string;
  fraction: number;
}

/** The child's side of (c): one Select call, timed from the call to its end. */
async function grpcClient(target: GrpcTarget): Promise<void> {
  const definition = protoLoader.loadSync(PROTO_FILE, LOADER_OPTIONS);
  const Service = (grpc.loadPackageDefinition(definition).protoprune as unknown as { v1: { Protoprune: grpc.ServiceClientConstructor } }).v1.Protoprune;
  const client = new Service(`127.0.0.1:${target.port}`, grpc.credentials.createInsecure(), { 'grpc.max_receive_message_length': -1 }) as grpc.Client &
    Record<string, (request: unknown, metadata: grpc.Metadata) => grpc.ClientReadableStream<{ externalIds: string[] }>>;
  const metadata = new grpc.Metadata();
  metadata.set('authorization', `Bearer ${target.key}`);
  const started = performance.now();
  let ids = 0;
  await new Promise<void>((resolve, reject) => {
    const call = client.Select({ dataset: target.dataset, order: 'SELECTION_ORDER_HARDEST', fraction: target.fraction }, metadata);
    call.on('data', (message) => (ids += message.externalIds.length));
    call.on('end', resolve);
    call.on('error', reject);
  });
  process.stdout.write(JSON.stringify({ ms: performance.now() - started, ids }));
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

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const started = performance.now();
  const value = await fn();
  return { ms: performance.now() - started, value };
}

const service = await startHarnessService({ databaseUrl, env: { ANN_INDEX_BATCH: '0' } });
try {
  const ctx = service.running.services.ctx;
  const existing = await getDataset(ctx, DATASET).catch(() => null);
  const count = existing ? await withClient(async (c) => Number((await c.query('SELECT count(*) AS n FROM items WHERE dataset_id = $1', [existing.id])).rows[0].n)) : -1;
  let datasetId: string;
  if (REUSE && existing && count === N && existing.activeVersion === 1) {
    datasetId = existing.id;
    console.log(`reusing ${DATASET}: ${N} items`);
  } else {
    if (existing) await service.api.deleteIfExists(`/v1/datasets/${DATASET}`);
    datasetId = (await createDataset(ctx, { name: DATASET, dimension: 8, k: K, settings: { autoRefit: false, minItemsForFit: N + 1 } })).id;
    const setup = await timed(() =>
      withClient(async (c) => {
        await c.query(
          `INSERT INTO items (dataset_id, external_id, embedding)
           SELECT $1, 'item-' || md5(g::text), '[0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5]'::vector FROM generate_series(1, $2::int) g`,
          [datasetId, N],
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
    console.log(`wrote ${N} items and scores by SQL in ${(setup.ms / 1000).toFixed(1)} s`);
  }
  const size = Math.min(N, Math.round(FRACTION * N));
  const baselineSql = `SELECT i.external_id FROM item_scores s JOIN items i ON i.id = s.item_id WHERE s.dataset_id = '${datasetId}' AND s.version = 1 ORDER BY s.score DESC LIMIT ${size}`;
  const psqlEnv = { ...process.env, PGOPTIONS: `-c search_path=${schema},public` };
  const selectionUrl = (extra: string) => `${service.base}/v1/datasets/${DATASET}/selection?fraction=${FRACTION}&format=ndjson${extra.includes('order=') ? '' : '&order=hardest'}${extra}`;
  const here = fileURLToPath(import.meta.url);

  const curl = async (extra: string): Promise<number> => {
    const { stdout } = await run('curl', ['-sS', '-f', '-o', '/dev/null', '-w', '%{size_download}', '-H', `authorization: Bearer ${service.key}`, selectionUrl(extra)], {
      maxBuffer: 1 << 20,
    });
    return Number(stdout);
  };
  const grpcCall = () =>
    new Promise<{ ms: number; ids: number }>((resolve, reject) => {
      const target: GrpcTarget = { port: service.running.grpc.port, key: service.key, dataset: DATASET, fraction: FRACTION };
      const child = spawn(process.execPath, [...process.execArgv, here, `--grpc-client=${JSON.stringify(target)}`], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
      child.on('error', reject);
      child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out) as { ms: number; ids: number }) : reject(new Error(`grpc client exited with ${code}`))));
    });

  /** The old path, as every order ran before: all scores read, the core, the chosen ids read back. */
  const inMemoryHardest = async (expected: number): Promise<void> => {
    const handle = await computeSelection(ctx, DATASET, { order: 'hardest', fraction: FRACTION });
    let ids = 0;
    for await (const chunk of selectedExternalIds(ctx, handle.itemIds)) ids += chunk.length;
    if (ids !== expected) throw new Error(`in-memory path returned ${ids} ids, expected ${expected}`);
  };
  /** Runs `fn` while sampling this process's memory (the server's, since it runs here) every 10 ms. */
  const sampleMemory = async (fn: () => Promise<unknown>): Promise<{ ms: number; heapMb: number; rssMb: number }> => {
    const before = process.memoryUsage();
    let heap = 0;
    let rss = 0;
    const sampler = setInterval(() => {
      const m = process.memoryUsage();
      heap = Math.max(heap, m.heapUsed + m.arrayBuffers - before.heapUsed - before.arrayBuffers);
      rss = Math.max(rss, m.rss - before.rss);
    }, 10);
    const { ms } = await timed(fn);
    clearInterval(sampler);
    return { ms, heapMb: heap / 2 ** 20, rssMb: rss / 2 ** 20 };
  };
  const times: Record<string, number[]> = { baseline: [], rest: [], grpc: [], cluster: [], inMemory: [], random: [] };
  let memory = { heapMb: 0, rssMb: 0 };
  for (let r = 0; r < RUNS; r++) {
    const baseline = await timed(() => run('psql', [schemaOf(databaseUrl).base, '-v', 'ON_ERROR_STOP=1', '-c', `\\copy (${baselineSql}) TO '/dev/null'`], { env: psqlEnv }));
    if (!baseline.value.stdout.includes(`COPY ${size}`)) throw new Error(`baseline: ${baseline.value.stdout}`);
    times.baseline.push(baseline.ms);
    const rest = await timed(() => curl(''));
    times.rest.push(rest.ms);
    const grpcRun = await grpcCall();
    if (grpcRun.ids !== size) throw new Error(`gRPC returned ${grpcRun.ids} ids, expected ${size}`);
    times.grpc.push(grpcRun.ms);
    times.cluster.push((await timed(() => curl('&balance=cluster'))).ms);
    if (IN_MEMORY) {
      times.inMemory.push((await timed(() => inMemoryHardest(size))).ms);
      const sampled = await sampleMemory(() => curl('&order=random'));
      times.random.push(sampled.ms);
      memory = { heapMb: Math.max(memory.heapMb, sampled.heapMb), rssMb: Math.max(memory.rssMb, sampled.rssMb) };
    }
    console.log(`run ${r + 1}: ` + Object.entries(times).map(([name, list]) => `${name} ${list.length ? (list[list.length - 1] / 1000).toFixed(2) : '-'} s`).join(', '));
  }
  const base = median(times.baseline);
  console.log(`\nN = ${N}, hardest ${FRACTION} = ${size} ids, k = ${K}, median of ${RUNS} runs (2 cores shared by PostgreSQL, server and clients)`);
  const rows: [string, number[]][] = [
    ['(a) psql \\copy, indexed SQL export (baseline)', times.baseline],
    ['(b) REST ndjson, hardest', times.rest],
    ['(c) gRPC Select, hardest', times.grpc],
    ['(d) REST ndjson, hardest, balance=cluster', times.cluster],
    ['(e) in-memory path (computeSelection), hardest', times.inMemory],
    ['(f) REST ndjson, random (in-memory path)', times.random],
  ];
  for (const [label, list] of rows) {
    if (list.length === 0) continue;
    const ms = median(list);
    console.log(`${label.padEnd(50)} ${(ms / 1000).toFixed(2).padStart(7)} s  ${(ms / base).toFixed(2)}×`);
  }
  if (IN_MEMORY) console.log(`(f) server process during the random selection: peak heap + array buffers +${memory.heapMb.toFixed(0)} MB (${((memory.heapMb * 2 ** 20) / N).toFixed(1)} B/item), RSS +${memory.rssMb.toFixed(0)} MB`);
} finally {
  await service.stop();
}
