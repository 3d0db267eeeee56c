/**
 * `npm run eval`: does pruning by protoprune's prototype scores keep accuracy? (issues 7 and 15)
 *
 *   EVAL_DATABASE_URL='postgres://…/db?schema=bench_eval' npm run eval -- [--dataset=fashion-mnist|mnist] [--variant=dup-longtail] [flags]
 *
 * 1. Starts the real service in this process (startService, auth on, its own admin key).
 * 2. Loads the dataset (`--dataset`, see datasets.ts) and gets the service's embeddings of its
 *    training and test images: PNGs through POST …/items with the default encoder, read back from
 *    the database and cached under bench/.cache keyed by the model's SHA-256 (embed.ts).
 * 3. `--variant=dup-longtail` (variant.ts) builds a training set with a 10× long tail and about 20%
 *    planted near-duplicates (augmented copies, embedded by the service like every other image and
 *    cached by their transforms). The test set is always the plain one.
 * 4. Fills the training dataset (`<svc>-train`, or `<svc>-duplt-train` for the variant) with the
 *    vectors in index order, and asks for one full refit (k = --k, default 100).
 * 5. For dedup-then-prune policies, runs SemDeDup (POST …/duplicates/jobs) at --epsilon.
 * 6. For each kept fraction and policy (policies.ts; `--policies`), the selection comes from
 *    GET …/selection (NDJSON) with `count` = round(fraction × training items), so every policy gets
 *    the same budget; a softmax regression is trained on the selected items' embeddings and labels
 *    and evaluated on the test embeddings. Fits are cached by selection, so a rerun with more
 *    policies computes only the new rows.
 * 7. Writes docs/evaluation-results[-<run>].json and docs/evaluation-accuracy[-<run>].svg for this
 *    run, and renders docs/evaluation.md from every results file in --out.
 *
 * Flags: --dataset=fashion-mnist --variant=none|dup-longtail --policies=<names> --k=100
 *        --fractions=10,20,30,50,70,90,100 --seeds=1,2,3 --lambda=0.0005 --max-iter=2000 --gtol=0.00001
 *        --limit=N --test-limit=N --data=DIR --cache=bench/.cache --no-cache --embed-only
 *        --concurrency=4 --per-request=250 --out=docs --threads=2 --render
 *        --epsilon=ε --dedup-keep=closest|farthest|random
 *        --dedup-sweep=0.01,0.02,0.05 (SemDeDup runs whose findings are reported)
 *        --variant-seed=1 --head-class=N --tail-ratio=10 --dup-share=0.2 --noise-sigma=4 --max-shift=1
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Flags } from '../lib/args.js';
import { ApiError, startHarnessService, type HarnessService } from '../lib/service.js';
import { sourceOf } from './datasets.js';
import { fillDataset, vectorsOf, type VectorSet } from './embed.js';
import { fitStandardizer, SoftmaxRegression, standardize } from './logreg.js';
import { lineChart, type Series } from './plot.js';
import { DEFAULT_POLICIES, expandPolicies, withoutDedup, type ParamValue, type Policy } from './policies.js';
import { renderAll, RUN_ORDER } from './report.js';
import { catalogGroups, groupAccuracy, groupsOf, type DedupSummary, type EvalResults, type Prototypes, type RunResult, type SelectionMeta, type Similarity, type Timings, type VariantSummary } from './results.js';
import { buildDupLongtail, copiesImageSet, type Variant } from './variant.js';
import { Prng } from './rng.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..');
const flags = new Flags(process.argv.slice(2), [
  'dataset',
  'variant',
  'policies',
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
  'epsilon',
  'dedup-keep',
  'variant-seed',
  'head-class',
  'tail-ratio',
  'dup-share',
  'noise-sigma',
  'max-shift',
  'dedup-sweep',
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
const VARIANT = flags.string('variant', 'none');
if (!['none', 'dup-longtail'].includes(VARIANT)) throw new Error(`--variant=${VARIANT}: known variants are none, dup-longtail`);
const EPSILON = flags.has('epsilon') ? flags.number('epsilon', 0.05) : undefined;
const DEDUP_KEEP = flags.has('dedup-keep') ? flags.string('dedup-keep', 'closest') : undefined;
if (DEDUP_KEEP !== undefined && !['closest', 'farthest', 'random'].includes(DEDUP_KEEP)) throw new Error('--dedup-keep must be closest, farthest or random');
const DEDUP_SWEEP = flags.has('dedup-sweep') ? flags.string('dedup-sweep', '').split(',').filter(Boolean).map(Number) : [0.01, 0.02, 0.05];
if (DEDUP_SWEEP.some((e) => !(e >= 0 && e <= 2))) throw new Error('--dedup-sweep: values in [0, 2]');
const POLICY_NAMES = flags.has('policies') ? flags.string('policies', '').split(',').filter(Boolean) : DEFAULT_POLICIES;
if (!POLICY_NAMES.includes('random')) throw new Error('--policies must include random: every other policy is compared with it');
const POLICIES: Policy[] = expandPolicies(POLICY_NAMES, SEEDS, { epsilon: EPSILON, keep: DEDUP_KEEP });

const log = (message: string) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${message}`);

/** docs file names of a run: Fashion-MNIST without a variant keeps the original names. */
export function outputNames(runKey: string): { json: string; svg: string } {
  return runKey === 'fashion-mnist'
    ? { json: 'evaluation-results.json', svg: 'evaluation-accuracy.svg' }
    : { json: `evaluation-results-${runKey}.json`, svg: `evaluation-accuracy-${runKey}.svg` };
}

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

/** GET …/selection as NDJSON: the external ids, the prototype version and the answer's X- headers. */
async function fetchSelection(svc: HarnessService, dataset: string, params: Record<string, ParamValue>): Promise<{ ids: string[]; version: number; headers: Record<string, string> }> {
  const query = new URLSearchParams(Object.entries(params).map(([k, v]): [string, string] => [k, String(v)]));
  const response = await fetch(`${svc.base}/v1/datasets/${dataset}/selection?${query}`, { headers: svc.api.headers({ accept: 'application/x-ndjson' }) });
  const text = await response.text();
  if (response.status !== 200) throw new ApiError(response.status, text, `selection ${query}`);
  const ids: string[] = [];
  for (const line of text.split('\n')) if (line) ids.push((JSON.parse(line) as { externalId: string }).externalId);
  const headers: Record<string, string> = {};
  response.headers.forEach((value, name) => {
    if (name.startsWith('x-')) headers[name] = value;
  });
  return { ids, version: Number(response.headers.get('x-prototype-version')), headers };
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

function summarise(values: number[]): Similarity {
  const s = [...values].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.max(0, Math.round(q * (s.length - 1))))];
  return { n: s.length, min: s[0] ?? Number.NaN, p10: at(0.1), median: at(0.5), p90: at(0.9), max: s[s.length - 1] ?? Number.NaN };
}

function dot(v: Float32Array, d: number, a: number, b: number): number {
  let s = 0;
  const oa = a * d;
  const ob = b * d;
  for (let j = 0; j < d; j++) s += v[oa + j] * v[ob + j];
  return s;
}

/** How near the planted copies are to their sources, against how near originals are to each other. */
function variantSummary(v: Variant, vectors: Float32Array, d: number): VariantSummary {
  const byKind: Record<string, number[]> = {};
  const all: number[] = [];
  let identical = 0;
  v.copies.forEach((c, j) => {
    const sim = dot(vectors, d, v.copyItem[j], v.sourceItem[j]);
    (byKind[c.transform.kind] ??= []).push(sim);
    all.push(sim);
    const a = vectors.subarray(v.copyItem[j] * d, (v.copyItem[j] + 1) * d);
    const b = vectors.subarray(v.sourceItem[j] * d, (v.sourceItem[j] + 1) * d);
    if (a.every((x, i) => x === b[i])) identical++;
  });
  const originals = Array.from({ length: v.n }, (_, i) => i).filter((i) => !v.planted[i]);
  const rng = new Prng(v.options.seed + 101);
  const sample = rng.shuffle(Int32Array.from(originals)).subarray(0, Math.min(300, originals.length));
  const nearest = Array.from(sample, (a) => {
    let best = -Infinity;
    for (const b of originals) if (b !== a) best = Math.max(best, dot(vectors, d, a, b));
    return best;
  });
  return {
    name: v.name,
    seed: v.options.seed,
    ratio: v.options.ratio,
    share: v.options.share,
    headClass: v.headClass,
    head: v.head,
    tail: v.tail,
    originals: v.originals,
    copies: v.copies.length,
    n: v.n,
    noiseSigma: v.options.noiseSigma,
    maxShift: v.options.maxShift,
    flips: v.options.flips,
    transforms: Object.fromEntries(Object.entries(byKind).map(([k, xs]) => [k, xs.length])),
    copySimilarity: { ...Object.fromEntries(Object.entries(byKind).map(([k, xs]) => [k, summarise(xs)])), all: summarise(all) },
    identicalCopies: identical,
    nearestOriginal: summarise(nearest),
    layoutHash: v.layoutHash,
    copiesHash: v.copiesHash,
  };
}

interface DuplicateGroupLine {
  kept: string;
  duplicates: string[];
}

/** SemDeDup of the training dataset at ε (the dataset's default when undefined), and what it found of the planted copies. */
async function runDedup(svc: HarnessService, dataset: string, variant: Variant | null, epsilon: number | undefined): Promise<DedupSummary> {
  const started = performance.now();
  const job = await svc.api.post<{ id: string }>(`/v1/datasets/${dataset}/duplicates/jobs`, epsilon === undefined ? {} : { epsilon });
  await svc.api.waitForJob(job.id);
  const seconds = (performance.now() - started) / 1000;
  const query = new URLSearchParams({ format: 'ndjson', job: job.id });
  const response = await fetch(`${svc.base}/v1/datasets/${dataset}/duplicates?${query}`, { headers: svc.api.headers({ accept: 'application/x-ndjson' }) });
  const text = await response.text();
  if (response.status !== 200) throw new ApiError(response.status, text, `duplicates ${query}`);
  const groups = text
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as DuplicateGroupLine);
  const index = (id: string) => Number(id.slice('train-'.length));
  const removed = new Set<number>();
  const groupOf = new Map<number, number>();
  groups.forEach((g, gi) => {
    groupOf.set(index(g.kept), gi);
    for (const id of g.duplicates) {
      removed.add(index(id));
      groupOf.set(index(id), gi);
    }
  });
  const summary: DedupSummary = { epsilon: epsilon ?? null, jobId: job.id, seconds, groups: groups.length, removed: removed.size };
  if (variant) {
    let removedCopies = 0;
    for (const i of removed) if (variant.planted[i]) removedCopies++;
    let pairs = 0;
    variant.copies.forEach((_, j) => {
      const a = groupOf.get(variant.copyItem[j]);
      if (a !== undefined && a === groupOf.get(variant.sourceItem[j])) pairs++;
    });
    Object.assign(summary, { removedCopies, removedOriginals: removed.size - removedCopies, pairsInOneGroup: pairs });
  }
  return summary;
}

/** At 100% every policy without dedup keeps everything: one run stands for all (dedup policies run on their own). */
function policiesAt(fraction: number): Policy[] {
  if (fraction < 1) return POLICIES;
  const plain = POLICIES.find((p) => !p.dedup)!;
  return [plain, ...POLICIES.filter((p) => p.dedup)];
}

function vectorTiming(v: VectorSet) {
  return { n: v.n, source: v.source, seconds: v.seconds, imagesSeconds: v.imagesIngest?.seconds ?? null, loadAverage: v.imagesIngest?.loadAverage ?? null };
}

async function main(): Promise<void> {
  const url = process.env.EVAL_DATABASE_URL ?? process.env.DATABASE_URL;
  const started = performance.now();
  const loadBefore = os.loadavg();
  const source = sourceOf(flags.string('dataset', 'fashion-mnist'));
  const runKey = VARIANT === 'none' ? source.key : `${source.key}-${VARIANT}`;
  log(
    `protoprune evaluation of ${runKey} — ${url ? 'native PostgreSQL' : 'EMBEDDED PGlite (set EVAL_DATABASE_URL for native PostgreSQL)'}; ` +
      `${os.availableParallelism()} cores, load ${loadBefore.map((l) => l.toFixed(2)).join(' ')}`,
  );
  log(`policies: ${POLICIES.map((p) => p.key).join(', ')}`);
  const data = await source.load(flags.has('data') ? flags.string('data', '') : undefined);
  const c = source.classNames.length;
  // Background HNSW indexing is not needed here (no duplicate lookups) and would compete for the cores.
  const svc = await startHarnessService({ databaseUrl: url, env: { ANN_INDEX_BATCH: '0' } });
  const backend = svc.backend;
  const trainName = VARIANT === 'none' ? `${source.service}-train` : `${source.service}-duplt-train`;
  let plainTrain!: VectorSet;
  let testSet!: VectorSet;
  let copySet: VectorSet | null = null;
  let variant: Variant | null = null;
  let vectors!: Float32Array;
  let trainLabels!: Uint8Array;
  let n = 0;
  let d = 0;
  let fillSeconds = 0;
  let refitSeconds = 0;
  let refit: Record<string, unknown> = {};
  let prototypes!: Prototypes;
  let dedup: DedupSummary | null = null;
  const dedupSweep: DedupSummary[] = [];
  const selections = new Map<string, Int32Array>();
  const selectionMeta: Record<string, SelectionMeta> = {};
  const skipped = new Map<string, { group: string; status: number; message: string; fractions?: number[] }>();
  const refused = new Map<string, { group: string; status: number; message: string; fractions: number[] }>();
  let analysis!: Awaited<ReturnType<typeof readScores>>;
  try {
    const common = {
      cacheDir: CACHE_DIR,
      imagesPerRequest: flags.int('per-request', 250),
      concurrency: flags.int('concurrency', 4),
      useCache: !flags.bool('no-cache', false),
    };
    const nTrain = Math.min(data.train.n, flags.int('limit', data.train.n));
    const nTest = Math.min(data.test.n, flags.int('test-limit', data.test.n));
    plainTrain = await vectorsOf(svc, data.train, { ...common, stem: `${source.key}-train`, dataset: `${source.service}-train`, prefix: 'train', n: nTrain, writeCache: nTrain === data.train.n });
    log(`train: ${plainTrain.n} × ${plainTrain.dim} from ${plainTrain.source} in ${plainTrain.seconds.toFixed(1)} s`);
    testSet = await vectorsOf(svc, data.test, { ...common, stem: `${source.key}-test`, dataset: `${source.service}-test`, prefix: 'test', n: nTest, writeCache: nTest === data.test.n });
    log(`test: ${testSet.n} × ${testSet.dim} from ${testSet.source} in ${testSet.seconds.toFixed(1)} s`);
    d = plainTrain.dim;
    if (VARIANT === 'dup-longtail') {
      variant = buildDupLongtail(data.train, nTrain, c, {
        seed: flags.int('variant-seed', 1),
        ratio: flags.int('tail-ratio', 10),
        share: flags.number('dup-share', 0.2),
        ...(flags.has('head-class') ? { headClass: flags.int('head-class', 0) } : {}),
        flips: source.flips,
        noiseSigma: flags.number('noise-sigma', 4),
        maxShift: flags.int('max-shift', 1),
      });
      log(
        `variant dup-longtail: head class ${variant.headClass} (${source.classNames[variant.headClass]}) ${variant.head} originals, ${variant.tail} per other class; ` +
          `${variant.copies.length} planted copies; ${variant.n} training items`,
      );
      const copyImages = copiesImageSet(data.train, variant.copies);
      copySet = await vectorsOf(svc, copyImages, {
        ...common,
        stem: `${source.key}-copies-${variant.copiesHash.slice(0, 16)}`,
        dataset: `${source.service}-copies`,
        prefix: 'copy',
        n: copyImages.n,
        writeCache: true,
        about: { dataset: source.key, variant: variant.options, copies: variant.copies.length },
      });
      await svc.api.deleteIfExists(`/v1/datasets/${source.service}-copies`);
      log(`copies: ${copySet.n} from ${copySet.source} in ${copySet.seconds.toFixed(1)} s`);
      n = variant.n;
      vectors = new Float32Array(n * d);
      variant.items.forEach((it, i) => {
        const from = it.copy >= 0 ? copySet!.vectors.subarray(it.copy * d, (it.copy + 1) * d) : plainTrain.vectors.subarray(it.source * d, (it.source + 1) * d);
        vectors.set(from, i * d);
      });
      trainLabels = variant.labels;
    } else {
      n = plainTrain.n;
      vectors = plainTrain.vectors;
      trainLabels = data.train.labels.subarray(0, n);
    }
    if (flags.bool('embed-only', false)) return;

    fillSeconds = await fillDataset(svc, { dataset: trainName, prefix: 'train', k: K, vectors, n, dim: d });
    log(`${trainName}: ${n} vectors ingested in ${fillSeconds.toFixed(1)} s`);
    log(`full refit of ${trainName}, k = ${K}`);
    const refitStarted = performance.now();
    const job = await svc.api.post<{ id: string }>(`/v1/datasets/${trainName}/prototypes/refit`, {});
    refit = (await svc.api.waitForJob(job.id)).result ?? {};
    refitSeconds = (performance.now() - refitStarted) / 1000;
    prototypes = await svc.api.get<Prototypes>(`/v1/datasets/${trainName}/prototypes`);
    log(`prototypes v${prototypes.version}, k = ${prototypes.k}, refit ${refitSeconds.toFixed(1)} s, server timings ${JSON.stringify(refit.timings ?? {})}`);

    if (POLICIES.some((p) => p.dedup) || flags.has('dedup-sweep')) {
      try {
        // What SemDeDup finds at a few ε (cheap next to the fits): a basis for choosing --epsilon.
        const info = await svc.api.get<{ settings?: { duplicateEpsilon?: number } }>(`/v1/datasets/${trainName}`);
        const effective = EPSILON ?? info.settings?.duplicateEpsilon;
        for (const epsilon of DEDUP_SWEEP.filter((e) => e !== effective)) {
          const one = await runDedup(svc, trainName, variant, epsilon);
          dedupSweep.push(one);
          log(`dedup sweep ε = ${epsilon}: ${one.removed} removed, ${one.seconds.toFixed(1)} s${variant ? `; ${one.pairsInOneGroup} of ${variant.copies.length} planted pairs in one group` : ''}`);
        }
        // Last, so it is the newest completed run at its ε when the selections ask for it.
        log(`SemDeDup of ${trainName} at ε = ${EPSILON ?? "the dataset's default"} (used by the dedup policies)`);
        dedup = await runDedup(svc, trainName, variant, EPSILON);
        if (dedup.epsilon === null && effective !== undefined) dedup.epsilon = effective;
        dedupSweep.push(dedup);
        log(`dedup: ${dedup.removed} items removed in ${dedup.groups} groups, ${dedup.seconds.toFixed(1)} s${variant ? `; ${dedup.pairsInOneGroup} of ${variant.copies.length} planted pairs found` : ''}`);
      } catch (error) {
        const status = error instanceof ApiError ? error.status : 0;
        for (const p of POLICIES.filter((x) => x.dedup)) skipped.set(p.group, { group: p.group, status, message: `SemDeDup failed: ${String((error as Error).message).slice(0, 300)}` });
        log(`dedup failed, skipping the dedup policies: ${(error as Error).message}`);
      }
    }

    for (const fraction of FRACTIONS) {
      const budget = Math.min(n, Math.round(fraction * n));
      for (const policy of policiesAt(fraction)) {
        if (skipped.has(policy.group)) continue;
        const t0 = performance.now();
        try {
          const answer = await fetchSelection(svc, trainName, { ...policy.params, count: budget });
          if (answer.version !== prototypes.version) throw new Error(`selection used version ${answer.version}, expected ${prototypes.version}`);
          const indices = indicesOf(answer.ids, 'train');
          if (policy.dedup) {
            // A server that silently drops unknown parameters would answer the plain policy: compare.
            const base = await fetchSelection(svc, trainName, { ...withoutDedup(policy.params), count: budget }).catch(() => null);
            if (base && selectionHash(indicesOf(base.ids, 'train')) === selectionHash(indices)) {
              skipped.set(policy.group, { group: policy.group, status: 200, message: 'the server ignored the dedup parameters (same selection as without them)' });
              log(`${policy.key}: the server ignored dedup=true; skipping ${policy.group}`);
              continue;
            }
          }
          selections.set(`${policy.key}@${fraction}`, indices);
          selectionMeta[`${policy.key}@${fraction}`] = { size: indices.length, budget, seconds: (performance.now() - t0) / 1000, headers: answer.headers };
        } catch (error) {
          if (!(error instanceof ApiError) || ![400, 404, 409, 422].includes(error.status)) throw error;
          // Refused at this fraction (an unknown order or parameter is refused at every one).
          const entry = refused.get(policy.group) ?? { group: policy.group, status: error.status, message: error.body.slice(0, 300), fractions: [] };
          if (!entry.fractions.includes(fraction)) entry.fractions.push(fraction);
          refused.set(policy.group, entry);
          log(`${policy.key} at ${Math.round(fraction * 100)}%: HTTP ${error.status}: ${error.body.slice(0, 200)}`);
        }
      }
    }
    for (const [key] of selections) if (skipped.has(POLICIES.find((p) => key.startsWith(`${p.key}@`))!.group)) selections.delete(key);
    for (const entry of refused.values()) if (!skipped.has(entry.group)) skipped.set(entry.group, entry);
    log(`${selections.size} selections fetched over REST (NDJSON)`);
    analysis = await readScores(svc, trainName, 'train', n);
  } finally {
    await svc.stop();
  }
  if (flags.bool('embed-only', false)) {
    log('embeddings ready (--embed-only)');
    return;
  }

  // Training: the service is stopped, the cores are the classifier's.
  const testLabels = data.test.labels.subarray(0, testSet.n);
  const settingsKey = `v2-k${K}-lambda${LAMBDA}-iter${MAX_ITER}-g${GTOL}-f${FTOL}`;
  const sha = plainTrain.model.sha256.slice(0, 16);
  // Fashion-MNIST keeps the file name it had before datasets were selectable (its keys stay valid).
  const runCacheFile = path.join(CACHE_DIR, runKey === 'fashion-mnist' ? `eval-runs-${sha}.json` : `eval-runs-${runKey}-${variant ? `${variant.layoutHash.slice(0, 12)}-` : ''}${sha}.json`);
  const runCache = await loadRunCache(runCacheFile);
  const regression = await SoftmaxRegression.create(THREADS);
  const runs: RunResult[] = [];
  const allTest = Int32Array.from({ length: testSet.n }, (_, i) => i);
  const inSelection = new Uint8Array(n);
  try {
    for (const fraction of FRACTIONS) {
      for (const policy of policiesAt(fraction)) {
        const indices = selections.get(`${policy.key}@${fraction}`);
        if (!indices) continue;
        const hash = selectionHash(indices);
        const perClass = new Array<number>(c).fill(0);
        for (const i of indices) perClass[trainLabels[i]]++;
        const cacheKey = `${settingsKey}|${n}|${testSet.n}|${hash}`;
        const cached = runCache[cacheKey];
        let run: RunResult;
        if (cached) {
          run = { ...cached, policy: policy.key, group: policy.group, fraction, cached: true };
        } else {
          const stats = fitStandardizer(vectors, d, indices);
          const x = standardize(vectors, d, indices, stats);
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
        if (variant) {
          inSelection.fill(0);
          let kept = 0;
          for (const i of indices) {
            inSelection[i] = 1;
            kept += variant.planted[i];
          }
          let pairs = 0;
          for (let j = 0; j < variant.copies.length; j++) pairs += inSelection[variant.copyItem[j]] & inSelection[variant.sourceItem[j]];
          run.planted = { kept, pairsBothKept: pairs };
        }
        runs.push(run);
        log(
          `${policy.label.padEnd(30)} ${String(Math.round(fraction * 100)).padStart(3)}%  n=${String(run.size).padStart(5)}  ` +
            `acc ${(run.accuracy * 100).toFixed(2)}%  ${run.iterations} it (${run.reason}, max|g| ${run.gradMax.toExponential(1)})  ` +
            `${run.seconds.toFixed(1)} s${cached ? ' [cached]' : ''}${run.planted ? `  planted kept ${run.planted.kept}` : ''}`,
        );
      }
    }
  } finally {
    await regression.dispose();
  }

  const timings: Timings = {
    trainImages: vectorTiming(plainTrain),
    testImages: vectorTiming(testSet),
    ...(copySet ? { copyImages: vectorTiming(copySet) } : {}),
    fillSeconds,
    refitSeconds,
    dedupSeconds: dedup?.seconds ?? null,
    selections: {},
    training: {},
  };
  for (const policy of POLICIES) {
    for (const fraction of FRACTIONS) {
      const meta = selectionMeta[`${policy.key}@${fraction}`];
      if (meta) {
        const s = (timings.selections[policy.group] ??= { requests: 0, seconds: 0 });
        s.requests++;
        s.seconds += meta.seconds;
      }
    }
  }
  for (const run of runs) {
    const t = (timings.training[run.group] ??= { fits: 0, cached: 0, seconds: 0 });
    t.fits++;
    if (run.cached) t.cached++;
    t.seconds += run.seconds;
  }

  const loadAfter = os.loadavg();
  const results: EvalResults = {
    createdAt: new Date().toISOString(),
    machine: { cores: os.availableParallelism(), cpu: os.cpus()[0]?.model ?? 'unknown', memGiB: Math.round(os.totalmem() / 2 ** 30), loadBefore, loadAfter },
    backend,
    model: plainTrain.model,
    runKey,
    command: `npm run eval -- ${process.argv.slice(2).join(' ')}`.trim(),
    dataset: {
      key: source.key,
      title: source.title,
      classNames: source.classNames,
      description: source.describe(data.train.n, data.test.n),
      origin: data.origin,
      serviceDataset: trainName,
      install: source.install,
    },
    variant: variant ? variantSummary(variant, vectors, d) : null,
    k: K,
    lambda: LAMBDA,
    maxIterations: MAX_ITER,
    gtol: GTOL,
    ftol: FTOL,
    train: { n, dim: d, source: plainTrain.source, ingestSeconds: plainTrain.seconds, imagesIngest: plainTrain.imagesIngest },
    test: { n: testSet.n, source: testSet.source, ingestSeconds: testSet.seconds, imagesIngest: testSet.imagesIngest },
    prototypes: { version: prototypes.version, k: prototypes.k, clusterSizes: prototypes.clusterSizes, objective: prototypes.objective },
    refit,
    fractions: FRACTIONS,
    seeds: SEEDS,
    policies: POLICIES.map(({ key, label, params, group }) => ({ key, label, params, group })),
    groups: catalogGroups(),
    skipped: [...skipped.values()],
    selectionMeta,
    dedup,
    dedupSweep,
    classCounts: Array.from({ length: c }, (_, k) => trainLabels.filter((l) => l === k).length),
    testClassCounts: Array.from({ length: c }, (_, k) => testLabels.filter((l) => l === k).length),
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
    timings,
    wallSeconds: (performance.now() - started) / 1000,
  };
  await mkdir(OUT_DIR, { recursive: true });
  const names = outputNames(runKey);
  await writeFile(path.join(OUT_DIR, names.json), `${JSON.stringify(results, null, 1)}\n`);
  await writeFile(path.join(OUT_DIR, names.svg), accuracyChart(results));
  await renderDocs(OUT_DIR);
  log(`wrote ${path.relative(process.cwd(), path.join(OUT_DIR, names.json))} (+ .svg) and evaluation.md in ${(results.wallSeconds / 60).toFixed(1)} min total`);
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

export function runTitle(r: EvalResults): string {
  const title = r.dataset?.title ?? 'Fashion-MNIST';
  return r.variant ? `${title}, dup-longtail variant` : title;
}

function accuracyChart(results: EvalResults): string {
  const series: Series[] = groupsOf(results).map((g) => ({
    label: g.seeded ? `${g.label} (mean, min–max)` : g.label,
    colour: g.colour,
    dash: g.dash,
    points: results.fractions.flatMap((f) => {
      const a = groupAccuracy(results, g.group, f);
      return a ? [{ x: f * 100, y: a.mean * 100, ...(a.runs > 1 ? { low: a.min * 100, high: a.max * 100 } : {}) }] : [];
    }),
  }));
  return lineChart(series, {
    title: `${runTitle(results)}: test accuracy vs kept fraction (k = ${results.k})`,
    xLabel: 'training items kept (%)',
    yLabel: 'test accuracy (%)',
    xTicks: results.fractions.map((f) => f * 100),
    yFormat: (y) => y.toFixed(1),
  });
}

/** Every results file in `dir`, in report order (Fashion-MNIST first). */
async function readAllResults(dir: string): Promise<EvalResults[]> {
  const files = (await readdir(dir)).filter((f) => /^evaluation-results(-.+)?\.json$/.test(f));
  const all: EvalResults[] = [];
  for (const f of files) all.push(JSON.parse(await readFile(path.join(dir, f), 'utf8')) as EvalResults);
  const rank = (r: EvalResults) => {
    const i = RUN_ORDER.indexOf(r.runKey ?? 'fashion-mnist');
    return i < 0 ? RUN_ORDER.length : i;
  };
  return all.sort((a, b) => rank(a) - rank(b) || (a.runKey ?? '').localeCompare(b.runKey ?? ''));
}

async function renderDocs(dir: string): Promise<void> {
  const all = await readAllResults(dir);
  for (const r of all) await writeFile(path.join(dir, outputNames(r.runKey ?? 'fashion-mnist').svg), accuracyChart(r));
  await renderAll(all, path.join(dir, 'evaluation.md'), here, (r) => outputNames(r.runKey ?? 'fashion-mnist').svg);
}

if (flags.has('render')) {
  // Rewrites the Markdown and the plots from the results files in --out (no measurements).
  await renderDocs(OUT_DIR);
  log(`rewrote ${path.relative(process.cwd(), path.join(OUT_DIR, 'evaluation.md'))} from the results files in ${path.relative(process.cwd(), OUT_DIR) || '.'}`);
} else {
  await main();
}
