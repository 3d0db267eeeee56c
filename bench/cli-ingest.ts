/**
 * `protoprune ingest-embeddings` against the server's binary path it drives, in one run on native
 * PostgreSQL (BENCH_DATABASE_URL):
 *   (a) raw baseline: the same rows POSTed as binary frames of --batch rows, 2 in flight, encoded
 *       before the clock starts (the server's work alone, no file, no CLI)
 *   (b) the CLI on a .npy file    (c) on a .parquet file of one row group (read in slices)
 *   (d) on an .ndjson file
 * each with the CLI's defaults (--batch 1000, --concurrency 2) into a fresh dataset before its
 * first fit, and the CLI process's peak RSS (/usr/bin/time) beside the file's size: memory must
 * follow the batches in flight, not the file. (a) and (b) alternate for --rounds rounds.
 * Flags: --n=200000 --dim=256 --batch=1000 --rounds=2 --skip-ndjson
 * The CLI, the service and PostgreSQL share the machine's cores.
 */
import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdir, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parquetWriteFile } from 'hyparquet-writer';
import { encodeEmbeddingFrames } from '../clients/typescript/src/frames.js';
import { Rng } from '../src/core/random.js';
import { PROJECT_ROOT } from '../src/paths.js';
import { EMBEDDING_FRAME_MEDIA_TYPE } from '../src/service/embedding-frames.js';
import { Flags } from './lib/args.js';
import { startHarnessService, withSchema, type HarnessService } from './lib/service.js';

const flags = new Flags(process.argv.slice(2), ['n', 'dim', 'batch', 'rounds', 'skip-ndjson']);
const N = flags.int('n', 200_000);
const DIM = flags.int('dim', 256);
const BATCH = flags.int('batch', 1000);
const ROUNDS = flags.int('rounds', 2);
const url = process.env.BENCH_DATABASE_URL ?? process.env.TEST_DATABASE_URL;
if (!url) throw new Error('set BENCH_DATABASE_URL to a native PostgreSQL with pgvector');

const log = (message: string) => console.error(`[cli-ingest] ${message}`);
const MiB = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MiB`;

function gaussianRows(n: number, dim: number): Float32Array {
  const rng = new Rng(7);
  const out = new Float32Array(n * dim);
  for (let i = 0; i < out.length; i++) out[i] = Math.sqrt(-2 * Math.log(1 - rng.next())) * Math.cos(2 * Math.PI * rng.next());
  return out;
}

function npy(values: Float32Array, rows: number, dim: number): Buffer {
  const dict = `{'descr': '<f4', 'fortran_order': False, 'shape': (${rows}, ${dim}), }`;
  const header = `${dict}${' '.repeat(63 - ((10 + dict.length) % 64))}\n`;
  const preamble = Buffer.alloc(10);
  preamble.writeUInt8(0x93, 0);
  preamble.write('NUMPY', 1, 'latin1');
  preamble.writeUInt8(1, 6);
  preamble.writeUInt16LE(header.length, 8);
  return Buffer.concat([preamble, Buffer.from(header, 'latin1'), Buffer.from(values.buffer, values.byteOffset, values.byteLength)]);
}

async function freshDataset(svc: HarnessService, name: string): Promise<void> {
  await svc.api.deleteIfExists(`/v1/datasets/${name}`);
  await svc.api.post('/v1/datasets', { name, dimension: DIM, k: 100, settings: { minItemsForFit: N + 1, autoRefit: false } });
}

async function itemCount(svc: HarnessService, name: string): Promise<number> {
  const [row] = await svc.running.db.query<{ n: number }>('SELECT count(*)::int AS n FROM items i JOIN datasets d ON d.id = i.dataset_id WHERE d.name = $1', [name]);
  return row.n;
}

/** Runs the CLI under /usr/bin/time: its wall time, peak RSS and JSON summary. */
function runCli(svc: HarnessService, args: string[]): Promise<{ seconds: number; peakRssBytes: number; summary: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn('/usr/bin/time', ['-f', 'PEAK_RSS_KB %M', process.execPath, path.join(PROJECT_ROOT, 'bin', 'protoprune.mjs'), '--json', ...args], {
      cwd: PROJECT_ROOT,
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', PROTOPRUNE_URL: svc.base, PROTOPRUNE_API_KEY: svc.key },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    child.stderr.on('data', (chunk) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (code) => {
      const seconds = (performance.now() - started) / 1000;
      const peak = /PEAK_RSS_KB (\d+)/.exec(stderr);
      if (code !== 0 || !peak) return reject(new Error(`protoprune ${args.join(' ')} exited ${code}: ${stderr.slice(0, 500)}`));
      resolve({ seconds, peakRssBytes: Number(peak[1]) * 1024, summary: JSON.parse(stdout) as Record<string, unknown> });
    });
  });
}

async function main(): Promise<void> {
  const databaseUrl = withSchema(url!, `bench_cli_${process.pid}`);
  const tmp = path.join(os.tmpdir(), `protoprune-cli-bench-${process.pid}`);
  await mkdir(tmp, { recursive: true });
  log(`N = ${N} × ${DIM}, batches of ${BATCH}, load ${os.loadavg().map((l) => l.toFixed(1)).join(' / ')}`);
  const points = gaussianRows(N, DIM);
  const ids = Array.from({ length: N }, (_, i) => `vectors/${i}`);
  const files = { npy: path.join(tmp, 'vectors.npy'), parquet: path.join(tmp, 'vectors.parquet'), ndjson: path.join(tmp, 'vectors.ndjson') };
  await writeFile(files.npy, npy(points, N, DIM));
  const row = (i: number) => Array.from(points.subarray(i * DIM, (i + 1) * DIM));
  parquetWriteFile({
    filename: files.parquet,
    columnData: [
      { name: 'id', data: ids },
      { name: 'embedding', data: Array.from({ length: N }, (_, i) => row(i)) },
    ],
    schema: [
      { name: 'root', num_children: 2 },
      { name: 'id', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'REQUIRED' },
      { name: 'embedding', repetition_type: 'REQUIRED', converted_type: 'LIST', num_children: 1 },
      { name: 'list', repetition_type: 'REPEATED', num_children: 1 },
      { name: 'element', type: 'FLOAT', repetition_type: 'REQUIRED' },
    ],
    rowGroupSize: N,
  });
  if (!flags.has('skip-ndjson')) {
    const out = createWriteStream(files.ndjson);
    for (let i = 0; i < N; i++) if (!out.write(`${JSON.stringify({ id: ids[i], embedding: row(i) })}\n`)) await new Promise<void>((resolve) => out.once('drain', () => resolve()));
    await new Promise<void>((resolve) => out.end(resolve));
  }
  const bodies: Uint8Array[] = [];
  for (let at = 0; at < N; at += BATCH) {
    const end = Math.min(N, at + BATCH);
    bodies.push(encodeEmbeddingFrames({ externalIds: ids.slice(at, end), vectors: points.subarray(at * DIM, end * DIM), dimension: DIM }));
  }

  const svc = await startHarnessService({ databaseUrl, env: { ANN_INDEX_BATCH: '0' } });
  const results: { name: string; seconds: number; detail: string }[] = [];
  const ratios: number[] = [];
  try {
    const cli = async (format: keyof typeof files, label: string) => {
      await freshDataset(svc, 'cli');
      const run = await runCli(svc, ['ingest-embeddings', files[format], '-d', 'cli', '--batch', String(BATCH)]);
      if (run.summary.stored !== N || (await itemCount(svc, 'cli')) !== N) throw new Error(`${format}: not every row stored: ${JSON.stringify(run.summary).slice(0, 300)}`);
      const size = (await stat(files[format])).size;
      results.push({ name: label, seconds: run.seconds, detail: `file ${MiB(size)}, CLI peak RSS ${MiB(run.peakRssBytes)} (process start included)` });
      return run.seconds;
    };
    for (let round = 1; round <= ROUNDS; round++) {
      await freshDataset(svc, 'raw');
      const started = performance.now();
      let next = 0;
      await Promise.all(
        [0, 1].map(async () => {
          while (next < bodies.length) {
            const body = bodies[next++];
            const response = await fetch(`${svc.base}/v1/datasets/raw/items?results=errors`, { method: 'POST', headers: svc.api.headers({ 'content-type': EMBEDDING_FRAME_MEDIA_TYPE }), body });
            if (response.status !== 200) throw new Error(`raw: HTTP ${response.status} ${(await response.text()).slice(0, 300)}`);
            await response.arrayBuffer();
          }
        }),
      );
      const raw = (performance.now() - started) / 1000;
      if ((await itemCount(svc, 'raw')) !== N) throw new Error('raw: not every row stored');
      results.push({ name: `(a) raw: REST frames, pre-encoded, 2 in flight, round ${round}`, seconds: raw, detail: `${bodies.length} bodies of ${BATCH}` });
      await svc.api.deleteIfExists('/v1/datasets/raw');
      const npySeconds = await cli('npy', `(b) protoprune ingest-embeddings .npy, round ${round}`);
      ratios.push(npySeconds / raw);
    }
    await cli('parquet', '(c) protoprune ingest-embeddings .parquet (one row group)');
    if (!flags.has('skip-ndjson')) await cli('ndjson', '(d) protoprune ingest-embeddings .ndjson');
  } finally {
    await svc.api.deleteIfExists('/v1/datasets/cli').catch(() => undefined);
    await svc.stop();
    await rm(tmp, { recursive: true, force: true });
  }
  console.log(`\nprotoprune ingest-embeddings, ${N} × ${DIM} float32 (native PostgreSQL; CLI, service and PostgreSQL share ${os.cpus().length} cores)\n`);
  console.log('| path | seconds | rows/s | detail |\n| --- | ---: | ---: | --- |');
  for (const r of results) console.log(`| ${r.name} | ${r.seconds.toFixed(2)} | ${Math.round(N / r.seconds).toLocaleString('en-US')} | ${r.detail} |`);
  const sorted = [...ratios].sort((a, b) => a - b);
  const middle = sorted.length / 2;
  const median = sorted.length % 2 === 1 ? sorted[Math.floor(middle)] : (sorted[middle - 1] + sorted[middle]) / 2;
  console.log(`\nCLI .npy / raw, per round: ${ratios.map((r) => `${r.toFixed(2)}×`).join(', ')}; median ${median.toFixed(2)}× the raw time`);
}

await main();
