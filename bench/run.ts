/**
 * `npm run bench`: every benchmark in turn. Set BENCH_DATABASE_URL (or TEST_DATABASE_URL) to a native
 * PostgreSQL for the database figures; without it they run on the embedded backend and say so.
 * Extra arguments are passed to each benchmark (e.g. `npm run bench -- --sizes=100000`).
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const benches = [
  { file: 'kmeans.ts', args: [] as string[] },
  { file: 'embedding.ts', args: [] as string[] },
  { file: 'engine.ts', args: process.argv.slice(2) },
];
let failed = false;
for (const bench of benches) {
  console.log(`\n=== bench/${bench.file} ===`);
  const result = spawnSync(process.execPath, ['--import', 'tsx', path.join(here, bench.file), ...bench.args], { stdio: 'inherit' });
  failed ||= result.status !== 0;
}
process.exit(failed ? 1 : 0);
