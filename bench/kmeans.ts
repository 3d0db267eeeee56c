/**
 * Spherical k-means benchmark on synthetic clustered embeddings.
 *
 *   npx tsx bench/kmeans.ts [--n=100000] [--big=1000000] [--dim=512] [--planted=1000] [--k=1000]
 *                           [--threads=2] [--seed=1] [--js-rows=1000] [--check-n=10000] [--check-k=100]
 *
 * --big=0 skips the large run; --check-n=0 skips the check of the JS extrapolation.
 */
import { findNearDuplicates } from '../src/core/dedup.js';
import { miniBatchUpdate } from '../src/core/incremental.js';
import { fitKMeans, type KMeansResult } from '../src/core/kmeans.js';
import { scoresFromSimilarity } from '../src/core/scores.js';
import { select, type SelectionOrder } from '../src/core/selection.js';
import { JsDistanceKernel } from '../src/kernels/js.js';
import { OrtDistanceKernel } from '../src/kernels/ort.js';
import type { DistanceKernel, NearestResult, NearestTwoResult } from '../src/kernels/types.js';
import { Rng } from '../src/core/random.js';
import { SyntheticSphere } from './synthetic.js';

const flags = new Map(
  process.argv.slice(2).map((arg) => {
    const match = /^--([\w-]+)=(.*)$/.exec(arg);
    if (!match) throw new Error(`unrecognised argument ${arg} (expected --name=value)`);
    return [match[1], Number(match[2])] as const;
  }),
);
const flag = (name: string, fallback: number): number => {
  const value = flags.get(name) ?? fallback;
  if (!Number.isInteger(value) || value < 0) throw new Error(`--${name} must be a non-negative integer`);
  return value;
};
const n = flag('n', 100_000);
const big = flag('big', 1_000_000);
const dim = flag('dim', 512);
const planted = flag('planted', 1000);
const k = flag('k', 1000);
const threads = flag('threads', 2);
const seed = flag('seed', 1);
const jsRows = flag('js-rows', 1000);
const checkN = flag('check-n', 10_000);
const checkK = flag('check-k', 100);

type Method = 'nearest' | 'nearestTwo' | 'assignedSimilarity' | 'similarities';
const METHODS: Method[] = ['nearest', 'nearestTwo', 'assignedSimilarity', 'similarities'];

/** Delegates to a kernel and tallies, per method, the seconds spent and the multiply-adds done. */
class TallyingKernel implements DistanceKernel {
  readonly seconds = new Map<Method, number>(METHODS.map((m) => [m, 0]));
  readonly macs = new Map<Method, number>(METHODS.map((m) => [m, 0]));

  constructor(private readonly inner: DistanceKernel) {}

  private async tally<T>(method: Method, macs: number, run: () => Promise<T>): Promise<T> {
    const started = performance.now();
    const result = await run();
    this.seconds.set(method, this.seconds.get(method)! + (performance.now() - started) / 1000);
    this.macs.set(method, this.macs.get(method)! + macs);
    return result;
  }

  nearest(points: Float32Array, rows: number, centroids: Float32Array, count: number, d: number): Promise<NearestResult> {
    return this.tally('nearest', rows * count * d, () => this.inner.nearest(points, rows, centroids, count, d));
  }

  nearestTwo(points: Float32Array, rows: number, centroids: Float32Array, count: number, d: number): Promise<NearestTwoResult> {
    return this.tally('nearestTwo', rows * count * d, () => this.inner.nearestTwo(points, rows, centroids, count, d));
  }

  assignedSimilarity(points: Float32Array, rows: number, centroids: Float32Array, count: number, d: number, cluster: Int32Array): Promise<Float32Array> {
    return this.tally('assignedSimilarity', rows * d, () => this.inner.assignedSimilarity(points, rows, centroids, count, d, cluster));
  }

  similarities(a: Float32Array, na: number, b: Float32Array, nb: number, d: number): Promise<Float32Array> {
    return this.tally('similarities', na * nb * d, () => this.inner.similarities(a, na, b, nb, d));
  }

  kernelSeconds(): number {
    return [...this.seconds.values()].reduce((a, b) => a + b, 0);
  }

  dispose(): Promise<void> {
    return this.inner.dispose();
  }
}

/** `count` synthetic clustered unit vectors (see SyntheticSphere). */
function syntheticEmbeddings(count: number): Float32Array {
  return new SyntheticSphere(planted, dim, seed).take(count);
}

async function timed<T>(run: () => Promise<T>): Promise<{ result: T; seconds: number }> {
  const started = performance.now();
  const result = await run();
  return { result, seconds: (performance.now() - started) / 1000 };
}

/**
 * Multiply-adds per second of each JS kernel method, measured on calls shaped like a fit's; the
 * better of two runs, so that the first, unoptimised run does not count.
 */
async function jsRates(points: Float32Array, centroids: Float32Array, clusters: number): Promise<Map<Method, number>> {
  const js = new JsDistanceKernel();
  const rate = async (macs: number, run: () => Promise<unknown>): Promise<number> =>
    macs / Math.min((await timed(run)).seconds, (await timed(run)).seconds);
  const rows = Math.min(jsRows, points.length / dim);
  const assignedRows = Math.min(100_000, points.length / dim);
  // A k-means++ round: a handful of candidates against the seeding sample.
  const sampleRows = Math.min(8000, points.length / dim);
  const nearest = await rate(rows * clusters * dim, () => js.nearestTwo(points, rows, centroids, clusters, dim));
  return new Map<Method, number>([
    ['nearest', nearest],
    ['nearestTwo', nearest],
    ['assignedSimilarity', await rate(assignedRows * dim, () => js.assignedSimilarity(points, assignedRows, centroids, clusters, dim, new Int32Array(assignedRows)))],
    ['similarities', await rate(8 * sampleRows * dim, () => js.similarities(points, 8, points, sampleRows, dim))],
  ]);
}

/** Fit time with the JS kernel: the ORT fit's non-kernel time plus its kernel work at JS rates. */
function extrapolateJs(ortSeconds: number, tally: TallyingKernel, rates: Map<Method, number>): number {
  let jsKernelSeconds = 0;
  for (const method of METHODS) jsKernelSeconds += tally.macs.get(method)! / rates.get(method)!;
  return ortSeconds - tally.kernelSeconds() + jsKernelSeconds;
}

const table: [string, string, string][] = [];
const report = (what: string, value: string, note = ''): void => {
  table.push([what, value, note]);
  console.error(`  ${what}: ${value}${note ? ` (${note})` : ''}`);
};
const secs = (s: number): string => `${s.toFixed(2)} s`;
const fitNote = (fit: KMeansResult): string =>
  `${fit.warmupIterations > 0 ? `${fit.warmupIterations} warm-up + ` : ''}${fit.iterations} iterations${fit.converged ? ', converged' : ', hit maxIterations'}, ` +
  `objective ${fit.objectiveHistory[fit.objectiveHistory.length - 1].toFixed(4)}`;

async function main(): Promise<void> {
  const total = Math.max(n, big, checkN);
  console.error(`generating ${total} × ${dim} points around ${planted} centres…`);
  const generated = await timed(async () => syntheticEmbeddings(total));
  const points = generated.result;
  console.error(`  generated in ${secs(generated.seconds)}`);
  const ort = await OrtDistanceKernel.create({ intraOpNumThreads: threads });

  if (checkN > 0) {
    // Small enough to run the JS kernel for real: checks the extrapolation used below.
    const tally = new TallyingKernel(ort);
    const viaOrt = await timed(() => fitKMeans(points, checkN, dim, { k: checkK, seed, kernel: tally }));
    const rates = await jsRates(points, viaOrt.result.centroids, checkK);
    const viaJs = await timed(() => fitKMeans(points, checkN, dim, { k: checkK, seed, kernel: new JsDistanceKernel() }));
    report(`fit N=${checkN} k=${checkK}, ORT`, secs(viaOrt.seconds), fitNote(viaOrt.result));
    report(`fit N=${checkN} k=${checkK}, JS measured`, secs(viaJs.seconds), fitNote(viaJs.result));
    report(`fit N=${checkN} k=${checkK}, JS extrapolated`, secs(extrapolateJs(viaOrt.seconds, tally, rates)), 'same model as below, as a check');
  }

  if (n > 0) {
    const tally = new TallyingKernel(ort);
    const viaOrt = await timed(() => fitKMeans(points, n, dim, { k, seed, kernel: tally }));
    report(`fit N=${n} k=${k}, ORT`, secs(viaOrt.seconds), `${fitNote(viaOrt.result)}; ${secs(tally.kernelSeconds())} in the kernel`);
    const rates = await jsRates(points, viaOrt.result.centroids, k);
    const jsSeconds = extrapolateJs(viaOrt.seconds, tally, rates);
    report(
      `fit N=${n} k=${k}, JS`,
      secs(jsSeconds),
      `EXTRAPOLATED: the ORT fit's kernel work at JS rates measured on ${jsRows}-row calls; ${(jsSeconds / viaOrt.seconds).toFixed(0)}× slower`,
    );
  }

  if (big > 0) {
    const tally = new TallyingKernel(ort);
    const iterationTimes: string[] = [];
    const started = performance.now();
    const fit = await timed(() =>
      fitKMeans(points, big, dim, {
        k,
        seed,
        kernel: tally,
        onProgress: (p) =>
          iterationTimes.push(`${p.phase === 'warmup' ? 'w' : ''}${p.iteration}:${((performance.now() - started) / 1000).toFixed(1)}s/${p.recomputed}`),
      }),
    );
    report(`fit N=${big} k=${k}, ORT`, secs(fit.seconds), `${fitNote(fit.result)}; ${secs(tally.kernelSeconds())} in the kernel`);
    console.error(`  progress ([w = warm-up] iteration:elapsed/points recomputed): ${iterationTimes.join(' ')}`);

    const nearest = await timed(() => ort.nearest(points, big, fit.result.centroids, k, dim));
    report(`nearest N=${big} k=${k}, ORT`, secs(nearest.seconds), `${((2 * big * k * dim) / nearest.seconds / 1e9).toFixed(0)} GFLOP/s`);

    const batchRows = 1000;
    const batch = points.subarray(0, batchRows * dim);
    const assignTimes: number[] = [];
    const updateTimes: number[] = [];
    for (let repeat = 0; repeat < 7; repeat++) {
      const assign = await timed(() => ort.nearest(batch, batchRows, fit.result.centroids, k, dim));
      const update = await timed(async () =>
        miniBatchUpdate(fit.result.centroids, fit.result.counts, k, dim, batch, batchRows, assign.result.cluster),
      );
      assignTimes.push(assign.seconds);
      updateTimes.push(update.seconds);
    }
    const median = (values: number[]): number => [...values].sort((a, b) => a - b)[values.length >> 1];
    report(
      `mini-batch update of ${batchRows}`,
      `${(median(updateTimes) * 1000).toFixed(1)} ms`,
      `median of 7; plus ${(median(assignTimes) * 1000).toFixed(1)} ms to assign the batch`,
    );

    const scores = scoresFromSimilarity(fit.result.similarity);
    const rng = new Rng(seed);
    const idHashes = Uint32Array.from({ length: big }, () => rng.nextUint32());
    for (const order of ['hardest', 'random', 'stratified'] as SelectionOrder[]) {
      for (const balance of ['none', 'cluster'] as const) {
        const selection = await timed(async () =>
          select({ scores, clusters: fit.result.cluster, idHashes }, { order, balance, budget: { fraction: 0.5 }, seed }),
        );
        report(`select ${order}, balance=${balance}, N=${big}`, `${(selection.seconds * 1000).toFixed(0)} ms`);
      }
    }
    const dedup = await timed(() => findNearDuplicates(points, big, dim, fit.result.cluster, scores, { epsilon: 0.05, kernel: ort }));
    report(`SemDeDup ε=0.05, N=${big}`, secs(dedup.seconds), `${dedup.result.length} groups`);
  }
  await ort.dispose();

  report('peak RSS', `${(process.resourceUsage().maxRSS / 1024 / 1024).toFixed(2)} GiB`);
  const widths = [0, 1, 2].map((c) => Math.max(...table.map((row) => row[c].length), ['measurement', 'value', 'notes'][c].length));
  const line = (row: string[]): string => `| ${row.map((cell, c) => cell.padEnd(widths[c])).join(' | ')} |`;
  console.log(`\nd=${dim}, ${planted} planted centres, ORT intraOpNumThreads=${threads}, seed=${seed}`);
  console.log(line(['measurement', 'value', 'notes']));
  console.log(line(widths.map((w) => '-'.repeat(w))));
  for (const row of table) console.log(line(row));
}

await main();
