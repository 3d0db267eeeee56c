/**
 * `npm run bench`: the issue-7 benchmark suite (bench/suite.ts: every figure next to its raw
 * baseline; writes docs/performance.md). Set BENCH_DATABASE_URL (or TEST_DATABASE_URL) to a native
 * PostgreSQL; without it the suite runs on the embedded backend at small sizes and says so.
 *
 *   npm run bench                          the full suite
 *   npm run bench -- --quick               small sizes (see bench/suite.ts for every flag)
 *   npm run bench -- kmeans [flags]        one of the older micro-benchmarks: kmeans, embedding, engine
 *   npm run bench -- load [flags]          mixed REST traffic at 100 connections × 60 s: backpressure (bench/load.ts)
 *   npm run bench -- score-backlog [flags] score latency and near-duplicate recall with 0 and 50k items awaiting the HNSW index (bench/score-backlog.ts)
 *   npm run bench -- refit-late [flags]    a refit while 3,000 items arrive against a quiet one, next to 1M score rows of another dataset (bench/refit-late.ts)
 *   npm run bench -- scale [flags]         1M/4M/10M × 256: ingest rate, refit phases, rescore over 1-3 replicas, peak RSS (bench/scale.ts)
 *   npm run bench -- select-stream [flags] hardest 30% streamed from the score index against psql \copy of the same query (bench/select-stream.ts)
 *   npm run bench -- export-stream [flags] the score export at 1M and 10M rows as NDJSON, CSV, Parquet and gRPC against psql \copy of its query, with the server's RSS (bench/export-stream.ts)
 *   npm run bench -- binary-ingest [flags] embeddings over REST frames, gRPC packed and JSON against psql \copy binary of the same rows (bench/binary-ingest.ts)
 *   npm run bench -- ingest-replicas [flags] one fitted dataset ingested by 1, 2 and 3 service processes at once, beside binary COPY (bench/ingest-replicas.ts)
 *   npm run bench -- cli-ingest [flags]    protoprune ingest-embeddings on .npy/.parquet/.ndjson against the REST frames it sends, pre-encoded, with the CLI's peak RSS (bench/cli-ingest.ts)
 *   npm run bench -- kmeans-reference [flags] our k-means objective on sklearn's digits against faiss's, single seeds and default restarts (bench/kmeans-reference.ts)
 *   npm run bench -- all                   the suite, then kmeans, embedding and engine with their defaults
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const named: Record<string, string> = {
  suite: 'suite.ts',
  kmeans: 'kmeans.ts',
  embedding: 'embedding.ts',
  engine: 'engine.ts',
  load: 'load.ts',
  'score-backlog': 'score-backlog.ts',
  'refit-late': 'refit-late.ts',
  scale: 'scale.ts',
  'select-stream': 'select-stream.ts',
  'export-stream': 'export-stream.ts',
  'binary-ingest': 'binary-ingest.ts',
  'ingest-replicas': 'ingest-replicas.ts',
  'kmeans-reference': 'kmeans-reference.ts',
  'cli-ingest': 'cli-ingest.ts',
};
const [first, ...rest] = process.argv.slice(2);
let benches: { file: string; args: string[] }[];
if (first === 'all') benches = ['suite.ts', 'kmeans.ts', 'embedding.ts', 'engine.ts'].map((file) => ({ file, args: rest }));
else if (first !== undefined && first in named) benches = [{ file: named[first], args: rest }];
else benches = [{ file: 'suite.ts', args: process.argv.slice(2) }];

let failed = false;
for (const bench of benches) {
  console.log(`\n=== bench/${bench.file} ===`);
  const result = spawnSync(process.execPath, ['--import', 'tsx', path.join(here, bench.file), ...bench.args], { stdio: 'inherit' });
  failed ||= result.status !== 0;
}
process.exit(failed ? 1 : 0);
