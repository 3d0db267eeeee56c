/**
 * protoprune's spherical k-means against faiss's on scikit-learn's digits (1,797 × 64, rows
 * L2-normalised, labels dropped), k = 10:
 *
 *   npx tsx bench/kmeans-reference.ts [--seeds=8] [--niter=25] [--python=/usr/bin/python3]
 *                                     [--digits=/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz]
 *                                     [--cost] [--cost-dim=512] [--cost-n=2000,5000,10000,20000,50000,100000]
 *   (npm run bench -- kmeans-reference …)
 *
 * Needs the Debian packages python3-faiss and python3-sklearn (the data file is sklearn's). faiss
 * runs `faiss.Kmeans(d, k, niter, seed, spherical=True)` for seeds 0 … seeds − 1 in
 * bench/kmeans_reference.py; protoprune fits the same rows with nInit = 1 for the same seeds, and
 * with the default nInit (`defaultNInit`). Every fit is scored here by the same code: the mean of
 * 1 − cos to the nearest centroid, in float64. The table gives each objective / faiss's best.
 *
 * --cost times one fit and the default restarts on synthetic data (bench/synthetic.ts, k =
 * `defaultK(n)`) at --cost-dim: the measurement behind `defaultNInit`'s budget.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { defaultK, defaultNInit, fitKMeans } from '../src/core/kmeans.js';
import { OrtDistanceKernel } from '../src/kernels/ort.js';
import { Flags } from './lib/args.js';
import { SyntheticSphere } from './synthetic.js';

const flags = new Flags(process.argv.slice(2), ['seeds', 'niter', 'python', 'digits', 'cost', 'cost-dim', 'cost-n']);
const seeds = Array.from({ length: flags.int('seeds', 8) }, (_, s) => s);
const niter = flags.int('niter', 25);
// The Debian package installs faiss for the system interpreter, which a pyenv `python3` is not.
const python = flags.string('python', '/usr/bin/python3');
const digitsFile = flags.string('digits', '/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz');
const K = 10;

/** sklearn's digits.csv.gz: 64 pixel columns, then the label; rows L2-normalised, label dropped. */
function loadDigits(file: string): { points: Float32Array; n: number; dim: number } {
  const rows = gunzipSync(readFileSync(file))
    .toString('utf8')
    .trim()
    .split('\n')
    .map((line) => line.split(',').map(Number));
  const dim = rows[0].length - 1;
  const points = new Float32Array(rows.length * dim);
  rows.forEach((row, i) => {
    if (row.length !== dim + 1 || row.some((v) => !Number.isFinite(v))) throw new Error(`${file}: row ${i} is not ${dim + 1} numbers`);
    let squared = 0;
    for (let j = 0; j < dim; j++) squared += row[j] * row[j];
    for (let j = 0; j < dim; j++) points[i * dim + j] = row[j] / Math.sqrt(squared);
  });
  return { points, n: rows.length, dim };
}

/** Mean 1 − cos to the nearest of `k` centroids (re-normalised, in case a fit leaves them a few ulps off), in float64. */
function objective(points: Float32Array, n: number, dim: number, centroids: ArrayLike<number>, k: number): number {
  const unit = new Float64Array(k * dim);
  for (let c = 0; c < k; c++) {
    let squared = 0;
    for (let j = 0; j < dim; j++) squared += centroids[c * dim + j] ** 2;
    for (let j = 0; j < dim; j++) unit[c * dim + j] = centroids[c * dim + j] / Math.sqrt(squared);
  }
  let total = 0;
  for (let i = 0; i < n; i++) {
    let best = -Infinity;
    for (let c = 0; c < k; c++) {
      let dot = 0;
      for (let j = 0; j < dim; j++) dot += points[i * dim + j] * unit[c * dim + j];
      best = Math.max(best, dot);
    }
    total += 1 - best;
  }
  return total / n;
}

interface FaissFit {
  seed: number;
  centroids: number[];
  seconds: number;
}

function faissFits(points: Float32Array, n: number, dim: number): { version: string; fits: FaissFit[] } {
  const script = path.join(path.dirname(fileURLToPath(import.meta.url)), 'kmeans_reference.py');
  const args = [script, String(n), String(dim), String(K), String(niter), ...seeds.map(String)];
  const result = spawnSync(python, args, { input: Buffer.from(points.buffer, points.byteOffset, points.byteLength), maxBuffer: 1 << 28 });
  if (result.error) throw new Error(`${python}: ${result.error.message} (install python3-faiss, or pass --python)`);
  if (result.status !== 0) throw new Error(`${python} ${script} failed:\n${result.stderr.toString()}`);
  const parsed = JSON.parse(result.stdout.toString()) as { faiss: string; fits: FaissFit[] };
  return { version: parsed.faiss, fits: parsed.fits };
}

const seconds = (started: number): number => (performance.now() - started) / 1000;
const range = (values: number[]): string => `${Math.min(...values).toFixed(4)}–${Math.max(...values).toFixed(4)}`;

async function reference(kernel: OrtDistanceKernel): Promise<void> {
  const { points, n, dim } = loadDigits(digitsFile);
  const faiss = faissFits(points, n, dim);
  const faissObjectives = faiss.fits.map((fit) => objective(points, n, dim, fit.centroids, K));
  const faissBest = Math.min(...faissObjectives);
  const nInit = defaultNInit(n, K);
  const single: number[] = [];
  const restarted: number[] = [];
  let singleSeconds = 0;
  let restartedSeconds = 0;
  for (const seed of seeds) {
    let started = performance.now();
    const one = await fitKMeans(points, n, dim, { k: K, seed, kernel, nInit: 1 });
    singleSeconds += seconds(started);
    single.push(objective(points, n, dim, one.centroids, K));
    started = performance.now();
    const many = await fitKMeans(points, n, dim, { k: K, seed, kernel, nInit });
    restartedSeconds += seconds(started);
    restarted.push(objective(points, n, dim, many.centroids, K));
  }

  console.log(`digits ${n} × ${dim} (L2-normalised), k = ${K}; faiss ${faiss.version} Kmeans(spherical, niter = ${niter}); protoprune defaults (maxIterations 30, tolerance 1e-4)`);
  console.log(`objective = mean(1 − cos to the nearest centroid); faiss's best of ${seeds.length} seeds = ${faissBest.toFixed(6)}; every column / that best\n`);
  console.log(`| seed | faiss | protoprune nInit = 1 | protoprune default nInit = ${nInit} |`);
  console.log('|---:|---:|---:|---:|');
  seeds.forEach((seed, s) => {
    console.log(`| ${seed} | ${(faissObjectives[s] / faissBest).toFixed(4)} | ${(single[s] / faissBest).toFixed(4)} | ${(restarted[s] / faissBest).toFixed(4)} |`);
  });
  const ratios = (values: number[]) => values.map((v) => v / faissBest);
  console.log(`| range | ${range(ratios(faissObjectives))} | ${range(ratios(single))} | ${range(ratios(restarted))} |`);
  const faissSeconds = faiss.fits.reduce((sum, fit) => sum + fit.seconds, 0);
  console.log(`| mean fit time | ${((1000 * faissSeconds) / seeds.length).toFixed(0)} ms | ${((1000 * singleSeconds) / seeds.length).toFixed(0)} ms | ${((1000 * restartedSeconds) / seeds.length).toFixed(0)} ms |`);
  const worstFaiss = Math.max(...faissObjectives);
  const within = restarted[0] <= worstFaiss;
  console.log(`\ndefault nInit (seed ${seeds[0]}): ${(restarted[0] / faissBest).toFixed(4)} × faiss's best — ${within ? 'within' : 'OUTSIDE'} faiss's single-seed range (worst ${(worstFaiss / faissBest).toFixed(4)})`);
}

/** Seconds of one fit and of `defaultNInit` restarts on synthetic data, per n (k = defaultK(n)). */
async function cost(kernel: OrtDistanceKernel): Promise<void> {
  const dim = flags.int('cost-dim', 512);
  console.log(`\ncost of the default restarts, synthetic sphere at d = ${dim}, k = defaultK(n), 1 fit vs defaultNInit fits (seed 1)\n`);
  console.log('| n | k | n·k | nInit | 1 fit (s) | iterations | nInit fits (s) |');
  console.log('|---:|---:|---:|---:|---:|---:|---:|');
  for (const n of flags.ints('cost-n', [2000, 5000, 10_000, 20_000, 50_000, 100_000])) {
    const k = defaultK(n);
    const points = new SyntheticSphere(k, dim, 1).take(n);
    const nInit = defaultNInit(n, k);
    let started = performance.now();
    const one = await fitKMeans(points, n, dim, { k, seed: 1, kernel });
    const oneSeconds = seconds(started);
    started = performance.now();
    if (nInit > 1) await fitKMeans(points, n, dim, { k, seed: 1, kernel, nInit });
    const allSeconds = nInit > 1 ? seconds(started) : oneSeconds;
    console.log(`| ${n} | ${k} | ${(n * k).toExponential(1)} | ${nInit} | ${oneSeconds.toFixed(2)} | ${one.iterations} | ${allSeconds.toFixed(2)} |`);
  }
}

const kernel = await OrtDistanceKernel.create({ intraOpNumThreads: 2 });
try {
  await reference(kernel);
  if (flags.bool('cost', false)) await cost(kernel);
} finally {
  await kernel.dispose();
}
