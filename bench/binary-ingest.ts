/**
 * Binary embedding ingest against its floor, in one run on native PostgreSQL (BENCH_DATABASE_URL):
 *   (a) raw baseline: psql \copy items (dataset_id, external_id, embedding) FROM file WITH (FORMAT binary)
 *   (b) REST application/vnd.protoprune.embeddings bodies (--per-body items each, sequential)
 *   (c) gRPC IngestItems with packed embeddings (MAX_ITEMS_PER_REQUEST per message, one stream)
 *   (d) REST JSON, base64 float32 (1000 per request, 2 in flight), for reference
 * Each into its own fresh dataset, before the first fit (minItemsForFit above N: items are stored,
 * not scored). Background HNSW indexing is off (ANN_INDEX_BATCH=0), as for the psql rows.
 * (a) and (b) alternate for --rounds rounds; the verdict is the median of the rounds' ratios.
 * Flags: --n=200000 --dim=256 --per-body=20000 --rounds=3 --skip-json --skip-grpc
 * The service, this client and PostgreSQL share the machine's cores.
 */
import { spawn } from 'node:child_process';
import { createWriteStream, readdirSync, readFileSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ApiClient as GrpcClient } from '../test/grpc/client.js';
import { Flags } from './lib/args.js';
import { adminQuery, schemaOf, startHarnessService, withSchema, type HarnessService } from './lib/service.js';
import { encodeEmbeddingFrames } from '../clients/typescript/src/frames.js';
import { EMBEDDING_FRAME_MEDIA_TYPE } from '../src/service/embedding-frames.js';
import { binaryCopy, type BinaryField } from '../src/store/pgcopy.js';

const flags = new Flags(process.argv.slice(2), ['n', 'dim', 'per-body', 'rounds', 'skip-json', 'skip-grpc']);
const N = flags.int('n', 200_000);
const DIM = flags.int('dim', 256);
const PER_BODY = flags.int('per-body', 20_000);
const ROUNDS = flags.int('rounds', 3);
const url = process.env.BENCH_DATABASE_URL ?? process.env.TEST_DATABASE_URL;
if (!url) throw new Error('set BENCH_DATABASE_URL to a native PostgreSQL with pgvector');

const log = (message: string) => console.error(`[binary-ingest] ${message}`);
const externalId = (i: number) => `item-${String(i).padStart(8, '0')}`;

function unitVectors(n: number, dim: number): Float32Array {
  const out = new Float32Array(n * dim);
  for (let i = 0; i < n; i++) {
    let squared = 0;
    for (let j = 0; j < dim; j++) {
      // Box-Muller: Gaussian components make the directions uniform on the sphere.
      const g = Math.sqrt(-2 * Math.log(1 - Math.random())) * Math.cos(2 * Math.PI * Math.random());
      out[i * dim + j] = g;
      squared += g * g;
    }
    const scale = 1 / Math.sqrt(squared);
    for (let j = 0; j < dim; j++) out[i * dim + j] *= scale;
  }
  return out;
}

async function freshDataset(svc: HarnessService, name: string): Promise<string> {
  await svc.api.deleteIfExists(`/v1/datasets/${name}`);
  await svc.api.post('/v1/datasets', { name, dimension: DIM, k: 100, settings: { minItemsForFit: N + 1, autoRefit: false } });
  const [{ id }] = await svc.running.db.query<{ id: string }>('SELECT id::text AS id FROM datasets WHERE name = $1', [name]);
  return id;
}

async function countOf(svc: HarnessService, datasetId: string): Promise<number> {
  const [row] = await svc.running.db.query<{ n: number }>('SELECT count(*)::int AS n FROM items WHERE dataset_id = $1', [datasetId]);
  return row.n;
}

function psqlCopy(databaseUrl: string, command: string): Promise<void> {
  const { base, schema } = schemaOf(databaseUrl);
  const env = { ...process.env, ...(schema ? { PGOPTIONS: `-c search_path=${schema},public` } : {}) };
  return new Promise((resolve, reject) => {
    const child = spawn('psql', [base, '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-c', command], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk) => (stderr += chunk));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`psql exited ${code}: ${stderr}`))));
  });
}

/**
 * CPU seconds used so far by PostgreSQL's processes: their own and, through the postmaster's
 * children counters, those of backends that have exited (psql's, once it disconnects).
 */
function postgresCpuSeconds(): number {
  let ticks = 0;
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    } catch {
      continue; // exited meanwhile
    }
    const close = stat.lastIndexOf(')');
    if (stat.slice(stat.indexOf('(') + 1, close) !== 'postgres') continue;
    const fields = stat.slice(close + 2).split(' '); // fields from the 3rd (state) on
    ticks += Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14]); // utime stime cutime cstime
  }
  return ticks / 100; // USER_HZ
}

/** CPU seconds a path used: this process (the service and the bench client) and PostgreSQL. */
interface CpuSplit {
  node: number;
  postgres: number;
}
let lastCpu: CpuSplit = { node: 0, postgres: 0 };

async function timed(run: () => Promise<void>): Promise<number> {
  const started = performance.now();
  const postgres = postgresCpuSeconds();
  const own = process.cpuUsage();
  await run();
  await new Promise((resolve) => setTimeout(resolve, 50)); // psql's backend reaped by the postmaster
  const used = process.cpuUsage(own);
  lastCpu = { node: (used.user + used.system) / 1e6, postgres: postgresCpuSeconds() - postgres };
  return (performance.now() - started) / 1000;
}

async function main(): Promise<void> {
  const schema = `bench_binary_${process.pid}`;
  const databaseUrl = withSchema(url!, schema);
  const tmp = path.join(os.tmpdir(), `protoprune-binary-${process.pid}`);
  await mkdir(tmp, { recursive: true });
  const load = os.loadavg().map((l) => l.toFixed(1)).join(' / ');
  log(`N = ${N} × ${DIM}, load ${load}`);
  const points = unitVectors(N, DIM);
  const ids = Array.from({ length: N }, (_, i) => externalId(i));
  const svc = await startHarnessService({ databaseUrl, env: { ANN_INDEX_BATCH: '0' } });
  const maxPerMessage = svc.config.api.maxItemsPerRequest;
  const results: { name: string; seconds: number; detail: string; cpu: CpuSplit }[] = [];
  const ratios: number[] = [];
  try {
    // (a) and (b) alternate for --rounds rounds, each into fresh datasets (dropped after the round,
    // so every round writes into tables of the same size): the machine's speed drifts (CPU steal
    // on this VM), and a ratio of neighbouring runs is what compares the paths.
    const file = path.join(tmp, 'items.copy');
    const bodies: Buffer[] = [];
    for (let at = 0; at < N; at += PER_BODY) {
      const end = Math.min(N, at + PER_BODY);
      bodies.push(Buffer.from(encodeEmbeddingFrames({ externalIds: ids.slice(at, end), vectors: points.subarray(at * DIM, end * DIM), dimension: DIM })));
    }
    for (let round = 1; round <= ROUNDS; round++) {
      // (a) psql \copy of the same rows; the file is written before the clock starts.
      const rawId = await freshDataset(svc, 'raw');
      const out = createWriteStream(file);
      function* rows(): Generator<BinaryField[]> {
        for (let i = 0; i < N; i++) yield [{ type: 'uuid', value: rawId }, { type: 'text', value: ids[i] }, { type: 'vector', value: points, offset: i * DIM, dim: DIM }];
      }
      for (const chunk of binaryCopy(rows())) out.write(chunk);
      out.end();
      await new Promise<void>((resolve) => out.on('finish', () => resolve()));
      const raw = await timed(() => psqlCopy(databaseUrl, `\\copy items (dataset_id, external_id, embedding) FROM '${file}' WITH (FORMAT binary)`));
      if ((await countOf(svc, rawId)) !== N) throw new Error('psql did not copy every row');
      results.push({ name: `(a) psql \\copy FORMAT binary into items, round ${round}`, seconds: raw, detail: 'one COPY, one transaction', cpu: lastCpu });
      await rm(file);
      await svc.api.deleteIfExists('/v1/datasets/raw');

      // (b) REST binary frames; bodies encoded before the clock starts.
      const binId = await freshDataset(svc, 'rest-binary');
      const rest = await timed(async () => {
        for (const body of bodies) {
          const response = await fetch(`${svc.base}/v1/datasets/rest-binary/items?results=errors`, {
            method: 'POST',
            headers: svc.api.headers({ 'content-type': EMBEDDING_FRAME_MEDIA_TYPE }),
            body,
          });
          const answer = (await response.json()) as { counts?: { failed: number } };
          if (response.status !== 200 || answer.counts?.failed) throw new Error(`binary ingest: HTTP ${response.status} ${JSON.stringify(answer).slice(0, 300)}`);
        }
      });
      if ((await countOf(svc, binId)) !== N) throw new Error('binary REST did not store every item');
      results.push({
        name: `(b) REST ${EMBEDDING_FRAME_MEDIA_TYPE}, round ${round}`,
        seconds: rest,
        detail: `${bodies.length} bodies of ${PER_BODY} items (${(bodies[0].length / 2 ** 20).toFixed(1)} MiB), sequential, results=errors`,
        cpu: lastCpu,
      });
      ratios.push(raw / rest);
      await svc.api.deleteIfExists('/v1/datasets/rest-binary');
    }
    bodies.length = 0;

    // (c) gRPC packed embeddings, one client stream.
    if (!flags.has('skip-grpc')) {
      const grpcId = await freshDataset(svc, 'grpc-packed');
      const client = new GrpcClient(svc.running.grpc.port, svc.key);
      const messages: { dataset: string; packed: { externalIds: string[]; vectorsF32le: Buffer } }[] = [];
      for (let at = 0; at < N; at += maxPerMessage) {
        const end = Math.min(N, at + maxPerMessage);
        messages.push({ dataset: 'grpc-packed', packed: { externalIds: ids.slice(at, end), vectorsF32le: Buffer.from(points.buffer, at * DIM * 4, (end - at) * DIM * 4) } });
      }
      const grpc = await timed(async () => {
        const answer = await client.ingest(messages);
        if (answer.failed > 0) throw new Error(`${answer.failed} gRPC items failed`);
      });
      client.raw.close();
      if ((await countOf(svc, grpcId)) !== N) throw new Error('gRPC did not store every item');
      results.push({ name: '(c) gRPC IngestItems, packed', seconds: grpc, detail: `${messages.length} messages of ${maxPerMessage} in one stream`, cpu: lastCpu });
    }

    // (d) JSON base64 for reference.
    if (!flags.has('skip-json')) {
      await freshDataset(svc, 'rest-json');
      const per = Math.min(1000, maxPerMessage);
      const jsonBodies: string[] = [];
      for (let at = 0; at < N; at += per) {
        const items = [];
        for (let i = at; i < Math.min(N, at + per); i++) items.push({ externalId: ids[i], embedding: Buffer.from(points.buffer, i * DIM * 4, DIM * 4).toString('base64') });
        jsonBodies.push(JSON.stringify({ items }));
      }
      let next = 0;
      const json = await timed(async () => {
        await Promise.all(
          [0, 1].map(async () => {
            while (next < jsonBodies.length) await svc.api.post('/v1/datasets/rest-json/items', jsonBodies[next++]);
          }),
        );
      });
      results.push({ name: '(d) REST JSON, base64 float32', seconds: json, detail: `${jsonBodies.length} requests of ${per}, 2 in flight`, cpu: lastCpu });
    }
  } finally {
    for (const name of ['raw', 'rest-binary', 'grpc-packed', 'rest-json']) await svc.api.deleteIfExists(`/v1/datasets/${name}`).catch(() => undefined);
    await svc.stop();
    await adminQuery(url!, `DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await rm(tmp, { recursive: true, force: true });
  }
  const rawSeconds = results.filter((r) => r.name.startsWith('(a)')).map((r) => r.seconds).sort((x, y) => x - y);
  const rawRate = N / rawSeconds[rawSeconds.length >> 1]; // the median psql run
  console.log(`\nbinary ingest, ${N.toLocaleString('en')} × ${DIM} random unit vectors, native PostgreSQL, before the first fit; load ${load} → ${os.loadavg().map((l) => l.toFixed(1)).join(' / ')}`);
  console.log('| path | time | items/s | ÷ psql \\copy | CPU s: this process / PostgreSQL | detail |\n|---|---:|---:|---:|---:|---|');
  for (const r of results) {
    const itemsPerSecond = N / r.seconds;
    const cpu = `${r.cpu.node.toFixed(1)} / ${r.cpu.postgres.toFixed(1)}`;
    console.log(`| ${r.name} | ${r.seconds.toFixed(1)} s | ${Math.round(itemsPerSecond).toLocaleString('en')} | ${(itemsPerSecond / rawRate).toFixed(2)}× | ${cpu} | ${r.detail} |`);
  }
  const sorted = [...ratios].sort((x, y) => x - y);
  console.log(`\n(b) ÷ (a) per round: ${ratios.map((r) => `${r.toFixed(2)}×`).join(', ')}; median ${sorted[sorted.length >> 1].toFixed(2)}× (target ≥ 0.5×). Other rows ÷ the median psql run.`);
}

void main();
