/**
 * `npm run eval`: does pruning by protoprune's prototype scores keep accuracy? (issue 7)
 *
 *   EVAL_DATABASE_URL='postgres://…/db?schema=bench_eval' npm run eval -- [flags]
 *
 * 1. Starts the real service in this process (startService, auth on, its own admin key).
 * 2. Fashion-MNIST (Debian `dataset-fashion-mnist`): the 60k training images go to dataset
 *    `fmnist-train`, the 10k test images to `fmnist-test`, as PNGs through POST …/items with the
 *    default encoder; the stored vectors are cached under bench/.cache keyed by the model's SHA-256,
 *    and a rerun ingests the cached vectors (base64 float32) instead of the images.
 * 3. One full refit of `fmnist-train` (k = --k, default 100) through POST …/prototypes/refit.
 * 4. For each keep fraction and policy, the selection comes from GET …/selection (NDJSON); a
 *    softmax regression is trained on the selected items' embeddings and labels and evaluated on
 *    the 10k test embeddings.
 * 5. Writes docs/evaluation.md, docs/evaluation-accuracy.svg and docs/evaluation-results.json.
 *
 * Flags: --k=100 --fractions=10,20,30,50,70,90,100 --seeds=1,2,3 --lambda=0.0005 --max-iter=2000 --gtol=0.00001
 *        --limit=60000 --test-limit=10000 --data=/usr/share/datasets/fashion-mnist --cache=bench/.cache
 *        --no-cache --embed-only --concurrency=4 --per-request=250 --out=docs --threads=2
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Flags } from '../lib/args.js';
import { startHarnessService, type HarnessService } from '../lib/service.js';
import { embedSet, type EmbeddedSet } from './embed.js';
import { CLASS_NAMES, FASHION_MNIST_DIR, loadFashionMnist } from './fashion-mnist.js';
import { fitStandardizer, SoftmaxRegression, standardize } from './logreg.js';
import { lineChart, type Series } from './plot.js';
import { writeReport } from './report.js';
import { GROUPS, groupAccuracy, type EvalResults, type Policy, type Prototypes, type RunResult } from './results.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..');
const flags = new Flags(process.argv.slice(2), [
  'k',
  'fractions',
  'seeds',
  'lambda',
  'max-iter',
  'limit',
  'test-limit',
  'data',
  'cache',
  'no-cache',
  'embed-only',
  'concurrency',
  'per-request',
  'out',
  'threads',
  'gtol',
  'render',
]);

const K = flags.int('k', 100);
const FRACTIONS = flags.ints('fractions', [10, 20, 30, 50, 70, 90, 100]).map((p) => p / 100);
const SEEDS = flags.ints('seeds', [1, 2, 3]);
const LAMBDA = flags.number('lambda', 5e-4);
const MAX_ITER = flags.int('max-iter', 2000);
// Ten times tighter than scikit-learn's default for its lbfgs solver (tol = 1e-4 on the max-abs gradient of the mean loss).
const GTOL = flags.number('gtol', 1e-5);
const FTOL = 1e-9;
const THREADS = flags.int('threads', 2);
const CACHE_DIR = path.resolve(flags.string('cache', path.join(repo, 'bench', '.cache')));
const OUT_DIR = path.resolve(flags.string('out', path.join(repo, 'docs')));

const POLICIES: Policy[] = [
  { key: 'hardest', label: 'hardest', params: { order: 'hardest' }, group: 'hardest' },
  { key: 'easiest', label: 'easiest', params: { order: 'easiest' }, group: 'easiest' },
  ...SEEDS.map((seed) => ({ key: `random-${seed}`, label: `random (seed ${seed})`, params: { order: 'random', seed }, group: 'random' })),
  { key: 'stratified', label: 'stratified (CCS)', params: { order: 'stratified' }, group: 'stratified' },
  { key: 'hardest-cluster', label: 'hardest, balance=cluster', params: { order: 'hardest', balance: 'cluster' }, group: 'hardest-cluster' },
];

const log = (message: string) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${message}`);

function indicesOf(ids: string[], prefix: string): Int32Array {
  const out = new Int32Array(ids.length);
  ids.forEach((id, i) => {
    if (!id.startsWith(`${prefix}-`)) throw new Error(`unexpected id ${id}`);
    out[i] = Number(id.slice(prefix.length + 1));
  });
  return out;
}

function selectionHash(indices: Int32Array): string {
  const sorted = Int32Array.from(indices).sort();
  return createHash('sha256').update(new Uint8Array(sorted.buffer)).digest('hex').slice(0, 16);
}

async function loadRunCache(file: string): Promise<Record<string, RunResult>> {
  if (!existsSync(file)) return {};
  try {
    return JSON.parse(await readFile(file, 'utf8')) as Record<string, RunResult>;
  } catch {
    return {};
  }
}

/** Per-item score and cluster of the active version, read from the database for the analysis only. */
async function readScores(svc: HarnessService, dataset: string, prefix: string, n: number) {
  const rows = await svc.running.db.query<{ external_id: string; score: number; cluster: number }>(
    `SELECT i.external_id, s.score, s.cluster FROM items i
       JOIN datasets d ON d.id = i.dataset_id
       JOIN item_scores s ON s.item_id = i.id AND s.dataset_id = d.id AND s.version = d.active_version
      WHERE d.name = $1`,
    [dataset],
  );
  const score = new Float32Array(n).fill(Number.NaN);
  const cluster = new Int32Array(n).fill(-1);
  for (const r of rows) {
    const i = Number(r.external_id.slice(prefix.length + 1));
    score[i] = Number(r.score);
    cluster[i] = Number(r.cluster);
  }
  return { score, cluster };
}

async function main(): Promise<void> {
  const url = process.env.EVAL_DATABASE_URL ?? process.env.DATABASE_URL;
  const started = performance.now();
  const loadBefore = os.loadavg();
  log(
    `protoprune evaluation — ${url ? 'native PostgreSQL' : 'EMBEDDED PGlite (set EVAL_DATABASE_URL for native PostgreSQL)'}; ` +
      `${os.availableParallelism()} cores, load ${loadBefore.map((l) => l.toFixed(2)).join(' ')}`,
  );
  const dataDir = flags.string('data', FASHION_MNIST_DIR);
  const train = await loadFashionMnist('train', dataDir);
  const test = await loadFashionMnist('t10k', dataDir);
  // Background HNSW indexing is not needed here (no duplicate lookups) and would compete for the cores.
  const svc = await startHarnessService({ databaseUrl: url, env: { ANN_INDEX_BATCH: '0' } });
  const backend = svc.backend;
  let trainSet!: EmbeddedSet;
  let testSet!: EmbeddedSet;
  let refit: Record<string, unknown> = {};
  let prototypes!: Prototypes;
  let model!: { name: string; sha256: string };
  const selections = new Map<string, Int32Array>();
  let analysis!: Awaited<ReturnType<typeof readScores>>;
  try {
    const common = {
      cacheDir: CACHE_DIR,
      imagesPerRequest: flags.int('per-request', 250),
      concurrency: flags.int('concurrency', 4),
      useCache: !flags.bool('no-cache', false),
    };
    trainSet = await embedSet(svc, train, { ...common, k: K, dataset: 'fmnist-train', prefix: 'train', limit: flags.int('limit', train.n) });
    log(`train: ${trainSet.n} × ${trainSet.dim} via ${trainSet.source} in ${trainSet.ingestSeconds.toFixed(1)} s (${(trainSet.n / trainSet.ingestSeconds).toFixed(1)}/s)`);
    testSet = await embedSet(svc, test, { ...common, k: null, dataset: 'fmnist-test', prefix: 'test', limit: flags.int('test-limit', test.n) });
    log(`test: ${testSet.n} × ${testSet.dim} via ${testSet.source} in ${testSet.ingestSeconds.toFixed(1)} s (${(testSet.n / testSet.ingestSeconds).toFixed(1)}/s)`);
    model = (await svc.api.get<{ model: { name: string; sha256: string } }>('/v1/datasets/fmnist-train')).model;
    if (flags.bool('embed-only', false)) return;

    log(`full refit of fmnist-train, k = ${K}`);
    const job = await svc.api.post<{ id: string }>('/v1/datasets/fmnist-train/prototypes/refit', {});
    refit = (await svc.api.waitForJob(job.id)).result ?? {};
    prototypes = await svc.api.get<Prototypes>('/v1/datasets/fmnist-train/prototypes');
    log(`prototypes v${prototypes.version}, k = ${prototypes.k}, refit timings ${JSON.stringify(refit.timings ?? {})}`);

    for (const fraction of FRACTIONS) {
      for (const policy of policiesAt(fraction)) {
        const { ids, version } = await svc.api.selection('fmnist-train', { ...policy.params, fraction });
        if (version !== prototypes.version) throw new Error(`selection used version ${version}, expected ${prototypes.version}`);
        selections.set(`${policy.key}@${fraction}`, indicesOf(ids, 'train'));
      }
    }
    log(`${selections.size} selections fetched over REST (NDJSON)`);
    analysis = await readScores(svc, 'fmnist-train', 'train', trainSet.n);
  } finally {
    await svc.stop();
  }

  // Training: the service is stopped, the cores are the classifier's.
  const d = trainSet.dim;
  const c = CLASS_NAMES.length;
  const trainLabels = train.labels.subarray(0, trainSet.n);
  const testLabels = test.labels.subarray(0, testSet.n);
  const settingsKey = `v2-k${K}-lambda${LAMBDA}-iter${MAX_ITER}-g${GTOL}-f${FTOL}`;
  const runCacheFile = path.join(CACHE_DIR, `eval-runs-${model.sha256.slice(0, 16)}.json`);
  const runCache = await loadRunCache(runCacheFile);
  const regression = await SoftmaxRegression.create(THREADS);
  const runs: RunResult[] = [];
  const allTest = Int32Array.from({ length: testSet.n }, (_, i) => i);
  try {
    for (const fraction of FRACTIONS) {
      for (const policy of policiesAt(fraction)) {
        const indices = selections.get(`${policy.key}@${fraction}`)!;
        const hash = selectionHash(indices);
        const perClass = new Array<number>(c).fill(0);
        for (const i of indices) perClass[trainLabels[i]]++;
        const cacheKey = `${settingsKey}|${trainSet.n}|${testSet.n}|${hash}`;
        const cached = runCache[cacheKey];
        let run: RunResult;
        if (cached) {
          run = { ...cached, policy: policy.key, group: policy.group, fraction };
        } else {
          const stats = fitStandardizer(trainSet.vectors, d, indices);
          const x = standardize(trainSet.vectors, d, indices, stats);
          const labels = Array.from(indices, (i) => trainLabels[i]);
          const fit = await regression.fit(x, labels, indices.length, d, c, { lambda: LAMBDA, maxIterations: MAX_ITER, gtol: GTOL, ftol: FTOL });
          const xt = standardize(testSet.vectors, d, allTest, stats);
          const predicted = await regression.predict(xt, testSet.n, d, c, fit.w, fit.b);
          let correct = 0;
          const classCorrect = new Array<number>(c).fill(0);
          const classTotal = new Array<number>(c).fill(0);
          for (let i = 0; i < testSet.n; i++) {
            classTotal[testLabels[i]]++;
            if (predicted[i] === testLabels[i]) {
              correct++;
              classCorrect[testLabels[i]]++;
            }
          }
          run = {
            policy: policy.key,
            group: policy.group,
            fraction,
            size: indices.length,
            accuracy: correct / testSet.n,
            iterations: fit.iterations,
            evaluations: fit.evaluations,
            converged: fit.converged,
            reason: fit.reason,
            loss: fit.loss,
            gradMax: fit.gradMax,
            seconds: fit.seconds,
            perClass,
            perClassAccuracy: classCorrect.map((k, j) => k / Math.max(1, classTotal[j])),
            selectionHash: hash,
          };
          runCache[cacheKey] = run;
          await mkdir(CACHE_DIR, { recursive: true });
          await writeFile(runCacheFile, JSON.stringify(runCache));
        }
        runs.push(run);
        log(
          `${policy.label.padEnd(26)} ${String(Math.round(fraction * 100)).padStart(3)}%  n=${String(run.size).padStart(5)}  ` +
            `acc ${(run.accuracy * 100).toFixed(2)}%  ${run.iterations} it (${run.reason}, max|g| ${run.gradMax.toExponential(1)})  ` +
            `${run.seconds.toFixed(1)} s${cached ? ' [cached]' : ''}`,
        );
      }
    }
  } finally {
    await regression.dispose();
  }

  const loadAfter = os.loadavg();
  const results: EvalResults = {
    createdAt: new Date().toISOString(),
    machine: { cores: os.availableParallelism(), cpu: os.cpus()[0]?.model ?? 'unknown', memGiB: Math.round(os.totalmem() / 2 ** 30), loadBefore, loadAfter },
    backend,
    model,
    k: K,
    lambda: LAMBDA,
    maxIterations: MAX_ITER,
    gtol: GTOL,
    ftol: FTOL,
    train: { n: trainSet.n, dim: d, source: trainSet.source, ingestSeconds: trainSet.ingestSeconds, imagesIngest: trainSet.imagesIngest },
    test: { n: testSet.n, source: testSet.source, ingestSeconds: testSet.ingestSeconds, imagesIngest: testSet.imagesIngest },
    prototypes: { version: prototypes.version, k: prototypes.k, clusterSizes: prototypes.clusterSizes, objective: prototypes.objective },
    refit,
    fractions: FRACTIONS,
    seeds: SEEDS,
    policies: POLICIES.map(({ key, label, params, group }) => ({ key, label, params, group })),
    classCounts: Array.from({ length: c }, (_, k) => trainLabels.filter((l) => l === k).length),
    classMeanScore: Array.from({ length: c }, (_, k) => {
      let sum = 0;
      let count = 0;
      trainLabels.forEach((l, i) => {
        if (l === k && Number.isFinite(analysis.score[i])) {
          sum += analysis.score[i];
          count++;
        }
      });
      return sum / Math.max(1, count);
    }),
    clusterPurity: clusterPurity(analysis.cluster, trainLabels, prototypes.k, c),
    runs,
    wallSeconds: (performance.now() - started) / 1000,
  };
  await mkdir(OUT_DIR, { recursive: true });
  await writeFile(path.join(OUT_DIR, 'evaluation-results.json'), `${JSON.stringify(results, null, 1)}\n`);
  await writeFile(path.join(OUT_DIR, 'evaluation-accuracy.svg'), accuracyChart(results));
  await writeReport(results, path.join(OUT_DIR, 'evaluation.md'), path.join(here, 'discussion.md'));
  log(`wrote ${path.relative(process.cwd(), path.join(OUT_DIR, 'evaluation.md'))} (+ .svg, .json) in ${(results.wallSeconds / 60).toFixed(1)} min total`);
}

/** At 100% every policy keeps everything: one run stands for all. */
function policiesAt(fraction: number): Policy[] {
  return fraction >= 1 ? [POLICIES[0]] : POLICIES;
}

function clusterPurity(cluster: Int32Array, labels: ArrayLike<number>, k: number, c: number): number {
  const counts = new Int32Array(k * c);
  let total = 0;
  for (let i = 0; i < cluster.length; i++) {
    if (cluster[i] < 0) continue;
    counts[cluster[i] * c + labels[i]]++;
    total++;
  }
  let majority = 0;
  for (let j = 0; j < k; j++) majority += Math.max(...counts.subarray(j * c, (j + 1) * c));
  return majority / Math.max(1, total);
}

function accuracyChart(results: EvalResults): string {
  const series: Series[] = GROUPS.map((g) => ({
    label: g.label,
    colour: g.colour,
    dash: g.dash,
    points: results.fractions.flatMap((f) => {
      const a = groupAccuracy(results, g.group, f);
      return a ? [{ x: f * 100, y: a.mean * 100, ...(a.runs > 1 ? { low: a.min * 100, high: a.max * 100 } : {}) }] : [];
    }),
  }));
  return lineChart(series, {
    title: `Fashion-MNIST: test accuracy vs kept fraction (k = ${results.k})`,
    xLabel: 'training items kept (%)',
    yLabel: 'test accuracy (%)',
    xTicks: results.fractions.map((f) => f * 100),
    yFormat: (y) => y.toFixed(1),
  });
}

if (flags.has('render')) {
  // Rewrites the Markdown and the plot from a previous run's results (no measurements).
  const given = flags.string('render', 'true');
  const file = path.resolve(given === 'true' ? path.join(OUT_DIR, 'evaluation-results.json') : given);
  const results = JSON.parse(await readFile(file, 'utf8')) as EvalResults;
  const dir = path.dirname(file);
  await writeFile(path.join(dir, 'evaluation-accuracy.svg'), accuracyChart(results));
  await writeReport(results, path.join(dir, 'evaluation.md'), path.join(here, 'discussion.md'));
  log(`rewrote ${path.relative(process.cwd(), path.join(dir, 'evaluation.md'))} from ${path.relative(process.cwd(), file)}`);
} else {
  await main();
}
