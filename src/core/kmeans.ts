import type { DistanceKernel } from '../kernels/types.js';
import { mix32, Rng } from './random.js';
import { argsort } from './sort.js';

export interface KMeansOptions {
  /** Number of clusters, 1 ≤ k ≤ n (see `defaultK`). */
  k: number;
  /** Any integer; the same seed, data and kernel configuration give bit-identical results. */
  seed: number;
  kernel: DistanceKernel;
  /** Cap on Lloyd iterations per phase, warm-up and full (default 30; 0 = assign to the seeds only). */
  maxIterations?: number;
  /**
   * Stop once every centroid moved by less than this cosine distance (1 − cos) in an iteration
   * (default 1e-4, about 0.8°: past that, iterations only shuffle a few boundary points).
   */
  tolerance?: number;
  /** Points k-means++ seeds from (default `defaultInitSampleSize(n, k)`); must be in [k, n]. */
  initSampleSize?: number;
  /**
   * Points of the warm-up fit (default `defaultWarmupSampleSize(n, k)`; 0 = none, else in [k, n]):
   * k-means++ and Lloyd on a uniform sample first, whose centroids then seed Lloyd on all points.
   */
  warmupSampleSize?: number;
  /**
   * Start from these k × dim unit rows instead of k-means++ (and without warm-up), e.g. to
   * warm-start a refit from the incrementally updated centroids.
   */
  initialCentroids?: Float32Array;
  /**
   * Complete fits to run, each seeded by `restartSeed(seed, restart)` (default 1, see
   * `defaultNInit`): the one with the lowest final objective is kept, the earliest on ties. Single
   * fits end in different local optima, a few percent apart on small data. Ignored with
   * `initialCentroids`: a warm start is one fit.
   */
  nInit?: number;
  /** Called after the initial assignment (iteration 0) and after every Lloyd iteration, of every restart. */
  onProgress?: (progress: KMeansProgress) => void;
}

export interface KMeansProgress {
  /** Which of the `nInit` fits is running (from 0); each has its own phases, iterations counting from 0. */
  restart: number;
  /** `warmup` while fitting the warm-up sample, then `full` for all points. */
  phase: 'warmup' | 'full';
  /** Lloyd iterations completed in this phase; 0 is the assignment to the initial centroids. */
  iteration: number;
  /** Mean cosine distance of the points to their assigned centroids. */
  objective: number;
  /** Largest centroid move (1 − cos) in this iteration; Infinity for iteration 0. */
  maxShift: number;
  /** Empty clusters repaired before this iteration's centroid update. */
  repaired: number;
  /** Points whose nearest centroid went through the kernel; the rest were proven unchanged by bounds. */
  recomputed: number;
  /** Points whose cluster changed. */
  reassigned: number;
}

export interface KMeansResult {
  k: number;
  dim: number;
  /** k × dim row-major unit centroids. */
  centroids: Float32Array;
  /** Nearest centroid of each point. */
  cluster: Int32Array;
  /** Cosine similarity of each point to its centroid. */
  similarity: Float32Array;
  /** Points per cluster; one is empty only if no point could repair it or it emptied in the last iteration. */
  counts: Int32Array;
  /** Objective after the initial assignment, then after each iteration, of the kept restart; never increases. */
  objectiveHistory: Float64Array;
  /** Lloyd iterations over all points (of the kept restart, as are the next two). */
  iterations: number;
  /** Lloyd iterations of the warm-up fit (0 without one). */
  warmupIterations: number;
  /** Whether the tolerance was reached (as opposed to `maxIterations`). */
  converged: boolean;
  /** Fits that ran: `nInit`, or 1 with `initialCentroids`. */
  restarts: number;
  /** Final objective of each restart in order; the result is the first lowest. */
  restartObjectives: Float64Array;
}

/** One complete fit: a `KMeansResult` but for what `fitKMeans` adds once a restart is chosen. */
type SingleFit = Omit<KMeansResult, 'k' | 'dim' | 'similarity' | 'restarts' | 'restartObjectives'>;

/** A fit's options, validated and with their defaults filled in. */
interface FitSettings {
  k: number;
  kernel: DistanceKernel;
  maxIterations: number;
  tolerance: number;
  sampleSize: number;
  warmupSize: number;
  initialCentroids: Float32Array | undefined;
}

const DEFAULT_MAX_ITERATIONS = 30;
const DEFAULT_TOLERANCE = 1e-4;
/**
 * Allowance for float32 rounding in kernel dot products (and rows a few ulps off unit norm) when
 * turning similarities into angle bounds; it only makes the bounds more conservative.
 */
const SIMILARITY_SLACK = 1e-5;
/** Candidate rows gathered per kernel call when only some points need recomputing (32 MiB at d = 512). */
const GATHER_ROWS = 16384;
/**
 * Centroids whose similarity to every point is measured exactly after an update, so that a few far
 * movers (new or repaired clusters, unstable splits) do not loosen every point's lower bound.
 */
const BIG_MOVERS = 32;
/**
 * That n × 32 pass reads every point once, costing about as much as recomputing a few percent of
 * them against all k centroids; it runs only if it could spare at least this fraction.
 */
const BIG_MOVER_PASS_MIN_SPARED = 0.05;
/** A point this close to its centroid cannot usefully repair an empty cluster. */
const REPAIR_MIN_DISTANCE = 1e-6;
/** Restarts × n × k that `defaultNInit` allows (see there for the measured cost). */
const RESTART_BUDGET = 4_000_000;
/** Most restarts `defaultNInit` gives: past a handful, the best objective barely moves. */
const MAX_DEFAULT_RESTARTS = 8;

/**
 * Default number of clusters for `n` points when the caller gives none:
 * `min(n, clamp(round(sqrt(n / 2)), 2, 1000))` — the classic √(n/2) rule of thumb, at least 2 so
 * there is structure to prune by, at most 1000 to bound fit time, and never more than the number
 * of points.
 */
export function defaultK(n: number): number {
  if (!Number.isInteger(n) || n < 0) throw new RangeError(`n must be a non-negative integer, got ${n}`);
  return Math.min(n, Math.max(2, Math.min(1000, Math.round(Math.sqrt(n / 2)))));
}

/**
 * Points k-means++ seeds from: `min(n, max(k, min(16384, max(4096, 8k))))` — about 8 candidates
 * per centroid, at least 4096, and at most 16384 unless k itself is larger. Seeding costs one
 * sample × sample similarity product plus O(sample × k × ln k) work, independent of n: about 2 s
 * for k = 1000 at d = 512 on 2 cores.
 */
export function defaultInitSampleSize(n: number, k: number): number {
  return Math.min(n, Math.max(k, Math.min(16384, Math.max(4096, 8 * k))));
}

/**
 * Points of the warm-up fit: 256·k (FAISS's default training-set size per centroid) when n is more
 * than twice that, else 0. On 1M points with k = 1000 the early, centroid-shuffling iterations then
 * run on a quarter of the data, and Lloyd on all points starts close enough to its optimum that
 * most points never need a full recomputation.
 */
export function defaultWarmupSampleSize(n: number, k: number): number {
  const size = 256 * k;
  return n > 2 * size ? size : 0;
}

/**
 * Default number of restarts (`nInit`) for a fit of `n` points into `k` clusters:
 * `clamp(floor(4·10⁶ / (n·k)), 1, 8)` — 8 up to n·k = 500,000, then fewer, and 1 from n·k > 2·10⁶
 * (e.g. 20,000 points at the default k = 100 get 2; 1M × 256 at k = 1000, whose fit takes minutes,
 * gets 1).
 *
 * Restarts pay off on small data: single fits end in local optima a few percent apart (digits,
 * 1,797 × 64 at k = 10: seeds 0–7 land 0.4–4.1% above faiss's best of 8, one seed in 64 6.8%; the
 * best of 8 restarts 0.02%), and there they are cheap. But each costs a whole fit: k-means++ seeding
 * (a Gram matrix of min(n, 4096 … 16384) sampled rows, ~0.5 s at d = 512 from n = 4096 on) plus
 * Lloyd iterations of n·k·d each, so their number is bounded by the n·k they add. Measured at
 * d = 512 on 2 shared cores (`npx tsx bench/kmeans-reference.ts --cost`, default k; timings vary
 * up to 2× between runs): 2,000 points, 8 restarts in 1.8 s (one fit 0.27 s); 5,000, 8 in 5.8 s
 * (0.87 s); 10,000, 5 in 2.2 s (1.1 s); 20,000, 2 in 1.4 s (0.62 s); from 50,000 on (1.3 s, 2.5 s
 * at 100,000) one fit — restarts add at most ~5 s. The cap of 8: on digits the best of 8 restarts
 * is within 0.02% of the best of 64.
 */
export function defaultNInit(n: number, k: number): number {
  return Math.max(1, Math.min(MAX_DEFAULT_RESTARTS, Math.floor(RESTART_BUDGET / (n * k))));
}

/**
 * Seed of restart `restart` of a fit seeded `seed`: `seed` itself for restart 0 (so nInit = 1 is
 * the plain fit), else `mix32(mix32(seed) ⊕ restart)` — distinct across restarts ≥ 1 (mix32 is a
 * bijection), and a hash rather than `seed + restart`, so the restarts of seed s do not repeat the
 * fits of seeds s + 1, s + 2, ….
 */
export function restartSeed(seed: number, restart: number): number {
  return restart === 0 ? seed : mix32((mix32(seed >>> 0) ^ restart) >>> 0);
}

/**
 * Spherical k-means on `n` L2-normalised rows (row-major, `dim` columns): seeded k-means++ on a
 * uniform sample, then Lloyd iterations with centroids = normalised member sums. For large n the
 * seeds are first refined by the same procedure on a uniform warm-up sample (see
 * `defaultWarmupSampleSize`); Lloyd on all points then runs to the same tolerance. With `nInit` > 1
 * all of this runs once per restart, and the fit with the lowest final objective is returned.
 *
 * Each assignment is the exact nearest centroid, but most points skip the kernel: as in Hamerly's
 * algorithm (2010), each point keeps an upper bound on the angle to its centroid and a lower bound
 * on the angle to every other centroid, both moved by the centroids' angular shifts, and only points
 * whose bounds overlap are recomputed. Angles are a metric on the sphere, so the triangle inequality
 * makes this exact (rows must be unit-norm). Member sums are updated incrementally in float64.
 *
 * Empty clusters are repaired before an update by moving in the point farthest from its centroid
 * (from a cluster that keeps other members); that point's distance drops to 0, so the objective
 * still never increases.
 */
export async function fitKMeans(
  points: Float32Array,
  n: number,
  dim: number,
  options: KMeansOptions,
): Promise<KMeansResult> {
  const { k, seed, kernel, onProgress } = options;
  const maxIterations = options.maxIterations ?? DEFAULT_MAX_ITERATIONS;
  const tolerance = options.tolerance ?? DEFAULT_TOLERANCE;
  const nInit = options.nInit ?? 1;
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`n must be a positive integer, got ${n}`);
  if (!Number.isInteger(dim) || dim < 1) throw new RangeError(`dim must be a positive integer, got ${dim}`);
  if (points.length < n * dim) throw new RangeError(`points holds ${points.length} values, expected ${n * dim}`);
  if (!Number.isInteger(k) || k < 1 || k > n) throw new RangeError(`k must be an integer in [1, ${n}], got ${k}`);
  if (!Number.isInteger(maxIterations) || maxIterations < 0) {
    throw new RangeError(`maxIterations must be a non-negative integer, got ${maxIterations}`);
  }
  if (!(tolerance >= 0)) throw new RangeError(`tolerance must be non-negative, got ${tolerance}`);
  if (!Number.isInteger(nInit) || nInit < 1) throw new RangeError(`nInit must be a positive integer, got ${nInit}`);
  const sampleSize = options.initSampleSize ?? defaultInitSampleSize(n, k);
  if (!Number.isInteger(sampleSize) || sampleSize < k || sampleSize > n) {
    throw new RangeError(`initSampleSize must be an integer in [${k}, ${n}], got ${sampleSize}`);
  }

  const warmupSize = options.warmupSampleSize ?? defaultWarmupSampleSize(n, k);
  if (!Number.isInteger(warmupSize) || (warmupSize !== 0 && (warmupSize < k || warmupSize > n))) {
    throw new RangeError(`warmupSampleSize must be 0 or an integer in [${k}, ${n}], got ${warmupSize}`);
  }
  const { initialCentroids } = options;
  if (initialCentroids) {
    if (initialCentroids.length !== k * dim) {
      throw new RangeError(`initialCentroids must hold k × dim = ${k * dim} values, got ${initialCentroids.length}`);
    }
    for (let c = 0; c < k; c++) {
      let squared = 0;
      for (let j = 0; j < dim; j++) squared += initialCentroids[c * dim + j] ** 2;
      if (!(squared > 0 && Number.isFinite(squared))) throw new RangeError(`initialCentroids row ${c} is zero or not finite`);
    }
  }

  const settings: FitSettings = { k, kernel, maxIterations, tolerance, sampleSize, warmupSize, initialCentroids };
  const restarts = initialCentroids ? 1 : nInit;
  const restartObjectives = new Float64Array(restarts);
  let kept: SingleFit | undefined;
  let keptObjective = Infinity;
  for (let restart = 0; restart < restarts; restart++) {
    const report = onProgress && ((progress: Omit<KMeansProgress, 'restart'>) => onProgress({ restart, ...progress }));
    const fit = await fitOnce(points, n, dim, settings, restartSeed(seed, restart), report);
    restartObjectives[restart] = fit.objectiveHistory[fit.objectiveHistory.length - 1];
    // Strictly lower only: on a tie the earlier restart stays.
    if (!kept || restartObjectives[restart] < keptObjective) {
      kept = fit;
      keptObjective = restartObjectives[restart];
    }
  }
  // Only the kept fit's similarities are needed; the other restarts' state is dropped as they end.
  const best = kept!;
  const similarity = await kernel.assignedSimilarity(points, n, best.centroids, k, dim, best.cluster);
  return { k, dim, ...best, similarity, restarts, restartObjectives };
}

/** One complete fit from `seed`: initial centroids (given, k-means++ or a warm-up fit), then Lloyd on all points. */
async function fitOnce(
  points: Float32Array,
  n: number,
  dim: number,
  settings: FitSettings,
  seed: number,
  onProgress: ((progress: Omit<KMeansProgress, 'restart'>) => void) | undefined,
): Promise<SingleFit> {
  const { k, kernel, maxIterations, tolerance, sampleSize, warmupSize, initialCentroids } = settings;
  const rng = new Rng(seed);
  let centroids: Float32Array;
  let warmupIterations = 0;
  if (initialCentroids) {
    centroids = Float32Array.from(initialCentroids);
  } else if (warmupSize > 0 && warmupSize < n) {
    const warmup = await fitOnce(
      gatherRows(points, dim, uniformSample(n, warmupSize, rng)),
      warmupSize,
      dim,
      { ...settings, sampleSize: Math.min(sampleSize, warmupSize), warmupSize: 0 },
      rng.nextUint32(),
      onProgress && ((progress) => onProgress({ ...progress, phase: 'warmup' })),
    );
    centroids = warmup.centroids;
    warmupIterations = warmup.iterations;
  } else {
    centroids = await kMeansPlusPlus(points, n, dim, k, sampleSize, rng, kernel);
  }

  const lloyd = new LloydState(points, n, dim, k, kernel);
  await lloyd.assignAll(centroids);
  const history = [lloyd.objective(centroids)];
  onProgress?.({ phase: 'full', iteration: 0, objective: history[0], maxShift: Infinity, repaired: 0, recomputed: n, reassigned: 0 });

  let iterations = 0;
  let converged = false;
  while (iterations < maxIterations) {
    const repaired = await lloyd.repairEmptyClusters(centroids);
    const update = lloyd.updatedCentroids(centroids);
    centroids = update.centroids;
    iterations++;
    const { recomputed, reassigned } = await lloyd.reassign(centroids, update.shiftAngles);
    const objective = lloyd.objective(centroids);
    history.push(objective);
    onProgress?.({ phase: 'full', iteration: iterations, objective, maxShift: update.maxShift, repaired, recomputed, reassigned });
    if (repaired === 0 && update.maxShift < tolerance) {
      converged = true;
      break;
    }
  }

  return {
    centroids,
    cluster: lloyd.cluster,
    counts: lloyd.counts,
    objectiveHistory: Float64Array.from(history),
    iterations,
    warmupIterations,
    converged,
  };
}

/**
 * Seeded greedy k-means++ over a uniform sample of the points: each round draws 2 + ⌊ln k⌋
 * candidates by D² sampling (D² ∝ 1 − cos on the sphere) and keeps the one that lowers the total
 * D² most, as scikit-learn does; plain k-means++ too often seeds two centroids in one cluster.
 */
async function kMeansPlusPlus(
  points: Float32Array,
  n: number,
  dim: number,
  k: number,
  sampleSize: number,
  rng: Rng,
  kernel: DistanceKernel,
): Promise<Float32Array> {
  const sample = sampleSize === n ? points : gatherRows(points, dim, uniformSample(n, sampleSize, rng));
  const similarityRows = await SampleSimilarities.create(sample, sampleSize, dim, kernel);
  const trials = 2 + Math.floor(Math.log(k));
  const centroids = new Float32Array(k * dim);
  const distance = new Float64Array(sampleSize).fill(Infinity);
  const chosen = new Uint8Array(sampleSize);
  const choose = (c: number, pick: number, sims: Float32Array, offset: number): void => {
    centroids.set(sample.subarray(pick * dim, (pick + 1) * dim), c * dim);
    chosen[pick] = 1;
    for (let i = 0; i < sampleSize; i++) distance[i] = chosen[i] ? 0 : Math.min(distance[i], Math.max(0, 1 - sims[offset + i]));
  };

  const first = Int32Array.of(rng.nextInt(sampleSize));
  choose(0, first[0], await similarityRows.rows(first), 0);
  for (let c = 1; c < k; c++) {
    let total = 0;
    for (let i = 0; i < sampleSize; i++) total += distance[i];
    if (!(total > 0)) {
      // Every remaining point duplicates a seed, so D² sampling has nothing to weigh: pick uniformly.
      const pick = Int32Array.of(uniformUnchosen(chosen, sampleSize - c, rng));
      choose(c, pick[0], await similarityRows.rows(pick), 0);
      continue;
    }
    const candidates = weightedPicks(distance, total, trials, rng);
    const sims = await similarityRows.rows(candidates);
    let best = 0;
    let bestPotential = Infinity;
    for (let t = 0; t < trials; t++) {
      let potential = 0;
      for (let i = 0; i < sampleSize; i++) potential += Math.min(distance[i], Math.max(0, 1 - sims[t * sampleSize + i]));
      if (potential < bestPotential) {
        bestPotential = potential;
        best = t;
      }
    }
    choose(c, candidates[best], sims, best * sampleSize);
  }
  return centroids;
}

/** Gram matrices up to this many entries (256 MiB) are precomputed for k-means++. */
const GRAM_MAX_ENTRIES = 1 << 26;
const GRAM_BLOCK_ROWS = 1024;

/**
 * Similarities of sample rows to the whole sample. k-means++ asks for a few rows per round; each
 * kernel call would re-read the whole sample from memory, so when the sample's Gram matrix fits in
 * `GRAM_MAX_ENTRIES` it is computed once up front (one efficient matrix product) and rows are read
 * from it.
 */
class SampleSimilarities {
  private constructor(
    private readonly sample: Float32Array,
    private readonly size: number,
    private readonly dim: number,
    private readonly kernel: DistanceKernel,
    private readonly gram: Float32Array | undefined,
  ) {}

  static async create(sample: Float32Array, size: number, dim: number, kernel: DistanceKernel): Promise<SampleSimilarities> {
    if (size * size > GRAM_MAX_ENTRIES) return new SampleSimilarities(sample, size, dim, kernel, undefined);
    const gram = new Float32Array(size * size);
    for (let start = 0; start < size; start += GRAM_BLOCK_ROWS) {
      const rows = Math.min(GRAM_BLOCK_ROWS, size - start);
      gram.set(await kernel.similarities(sample.subarray(start * dim), rows, sample, size, dim), start * size);
    }
    return new SampleSimilarities(sample, size, dim, kernel, gram);
  }

  /** `indices.length × size` similarities, row by row. */
  async rows(indices: Int32Array): Promise<Float32Array> {
    const { gram, size } = this;
    if (!gram) return this.kernel.similarities(gatherRows(this.sample, this.dim, indices), indices.length, this.sample, size, this.dim);
    const out = new Float32Array(indices.length * size);
    indices.forEach((index, r) => out.set(gram.subarray(index * size, (index + 1) * size), r * size));
    return out;
  }
}

/** A uniform `size`-subset of [0, n), ascending (Floyd's algorithm). */
function uniformSample(n: number, size: number, rng: Rng): Int32Array {
  const taken = new Uint8Array(n);
  for (let j = n - size; j < n; j++) {
    const t = rng.nextInt(j + 1);
    taken[taken[t] ? j : t] = 1;
  }
  const indices = new Int32Array(size);
  for (let i = 0, m = 0; i < n; i++) if (taken[i]) indices[m++] = i;
  return indices;
}

function gatherRows(points: Float32Array, dim: number, indices: Int32Array): Float32Array {
  const rows = new Float32Array(indices.length * dim);
  for (let r = 0; r < indices.length; r++) rows.set(points.subarray(indices[r] * dim, (indices[r] + 1) * dim), r * dim);
  return rows;
}

/** `count` independent draws with probability ∝ weight, in ascending index order (one pass). */
function weightedPicks(weights: Float64Array, total: number, count: number, rng: Rng): Int32Array {
  const targets = Float64Array.from({ length: count }, () => rng.next() * total).sort();
  const picks = new Int32Array(count);
  let cumulative = 0;
  let t = 0;
  let last = 0;
  for (let i = 0; i < weights.length && t < count; i++) {
    if (weights[i] <= 0) continue;
    cumulative += weights[i];
    last = i;
    while (t < count && targets[t] < cumulative) picks[t++] = i;
  }
  // Float rounding of the running total can leave a sliver at the end.
  while (t < count) picks[t++] = last;
  return picks;
}

function uniformUnchosen(chosen: Uint8Array, unchosen: number, rng: Rng): number {
  let target = rng.nextInt(unchosen);
  for (let i = 0; i < chosen.length; i++) {
    if (!chosen[i] && target-- === 0) return i;
  }
  throw new Error('no unchosen point left');
}

/** Angle bounds from kernel similarities, widened by `SIMILARITY_SLACK`. */
function angleAbove(similarity: number): number {
  return Math.acos(Math.min(1, Math.max(-1, similarity - SIMILARITY_SLACK)));
}

function angleBelow(similarity: number): number {
  if (similarity === -Infinity) return Infinity; // a single centroid has no competitor
  return Math.acos(Math.min(1, Math.max(-1, similarity + SIMILARITY_SLACK)));
}

/** Largest of `shiftAngles` over `centroids` (0 if none); exact even where float32 sort keys tie. */
function maxShiftOf(shiftAngles: Float64Array, centroids: Int32Array): number {
  let max = 0;
  for (let i = 0; i < centroids.length; i++) max = Math.max(max, shiftAngles[centroids[i]]);
  return max;
}

interface CentroidUpdate {
  centroids: Float32Array;
  /** Angle each centroid moved by. */
  shiftAngles: Float64Array;
  /** Largest 1 − cos(old, new) over the centroids. */
  maxShift: number;
}

/** Assignment, member sums and angle bounds of the Lloyd iterations. */
class LloydState {
  readonly cluster: Int32Array;
  readonly counts: Int32Array;
  /** Float64 sum of the member rows of each cluster (k × dim). */
  private readonly sums: Float64Array;
  /** Upper bound on the angle between each point and its centroid. */
  private readonly upper: Float64Array;
  /** Lower bound on the angle between each point and every other centroid. */
  private readonly lower: Float64Array;

  constructor(
    private readonly points: Float32Array,
    private readonly n: number,
    private readonly dim: number,
    private readonly k: number,
    private readonly kernel: DistanceKernel,
  ) {
    this.cluster = new Int32Array(n);
    this.counts = new Int32Array(k);
    this.sums = new Float64Array(k * dim);
    this.upper = new Float64Array(n);
    this.lower = new Float64Array(n);
  }

  async assignAll(centroids: Float32Array): Promise<void> {
    const { points, n, dim, k, cluster, sums } = this;
    const nearest = await this.kernel.nearestTwo(points, n, centroids, k, dim);
    for (let i = 0; i < n; i++) {
      const c = nearest.cluster[i];
      cluster[i] = c;
      this.counts[c]++;
      this.upper[i] = angleAbove(nearest.similarity[i]);
      this.lower[i] = angleBelow(nearest.runnerUp[i]);
      const p = i * dim;
      const q = c * dim;
      for (let j = 0; j < dim; j++) sums[q + j] += points[p + j];
    }
  }

  /** Mean cosine distance to the assigned centroids, from the member sums: 1 − Σ_c sum_c · centroid_c / n. */
  objective(centroids: Float32Array): number {
    let total = 0;
    for (let i = 0; i < this.sums.length; i++) total += this.sums[i] * centroids[i];
    return 1 - total / this.n;
  }

  /** New centroids = normalised member sums; a cluster that is empty or sums to zero keeps its centroid. */
  updatedCentroids(centroids: Float32Array): CentroidUpdate {
    const { dim, sums } = this;
    const next = new Float32Array(centroids);
    const shiftAngles = new Float64Array(this.k);
    let maxShift = 0;
    for (let c = 0; c < this.k; c++) {
      const q = c * dim;
      let squared = 0;
      for (let j = 0; j < dim; j++) squared += sums[q + j] * sums[q + j];
      if (this.counts[c] === 0 || !(squared > 0)) continue;
      const scale = 1 / Math.sqrt(squared);
      let dot = 0;
      let oldSquared = 0;
      let newSquared = 0;
      for (let j = 0; j < dim; j++) {
        const value = Math.fround(sums[q + j] * scale);
        next[q + j] = value;
        dot += value * centroids[q + j];
        oldSquared += centroids[q + j] * centroids[q + j];
        newSquared += value * value;
      }
      const cos = Math.min(1, Math.max(-1, dot / Math.sqrt(oldSquared * newSquared)));
      shiftAngles[c] = Math.acos(cos);
      maxShift = Math.max(maxShift, 1 - cos);
    }
    return { centroids: next, shiftAngles, maxShift };
  }

  /** Re-assigns every point whose bounds no longer prove its assignment after the centroids moved. */
  async reassign(centroids: Float32Array, shiftAngles: Float64Array): Promise<{ recomputed: number; reassigned: number }> {
    const { n, dim, k, cluster, upper, lower } = this;
    const moversFirst = argsort(Float32Array.from(shiftAngles), true);
    const bigMovers = moversFirst.subarray(0, Math.min(BIG_MOVERS, k));
    // Largest shift outside the big movers: how far every other centroid may have come closer.
    const residualShift = maxShiftOf(shiftAngles, moversFirst.subarray(bigMovers.length));
    // Plain Hamerly: the lower bound covers every centroid but a point's own, so it shrinks by the
    // largest shift among the others — the top mover's, or the runner-up's for its own members.
    const top = moversFirst[0];
    const topShift = maxShiftOf(shiftAngles, moversFirst);
    const secondShift = maxShiftOf(shiftAngles, moversFirst.subarray(1));
    // Points the big-mover pass could at best spare from recomputation.
    let spared = 0;
    for (let i = 0; i < n; i++) {
      const c = cluster[i];
      upper[i] += shiftAngles[c];
      if (upper[i] < lower[i] - residualShift && !(upper[i] < lower[i] - (c === top ? secondShift : topShift))) spared++;
    }
    if (spared >= n * BIG_MOVER_PASS_MIN_SPARED) {
      await this.boundBigMovers(centroids, bigMovers, residualShift);
    } else {
      for (let i = 0; i < n; i++) lower[i] -= cluster[i] === top ? secondShift : topShift;
    }

    const candidates = new Int32Array(n);
    let count = 0;
    for (let i = 0; i < n; i++) if (!(upper[i] < lower[i])) candidates[count++] = i;

    let reassigned = 0;
    if (count === n) {
      const nearest = await this.kernel.nearestTwo(this.points, n, centroids, k, dim);
      for (let i = 0; i < n; i++) {
        if (this.apply(i, nearest.cluster[i], nearest.similarity[i], nearest.runnerUp[i])) reassigned++;
      }
      return { recomputed: n, reassigned };
    }
    // Hamerly's second test: tighten the upper bound to the exact angle to the point's own centroid
    // (a cheap dot product) and recompute against all k centroids only if the bounds still overlap.
    const buffer = new Float32Array(Math.min(count, GATHER_ROWS) * dim);
    const ownCluster = new Int32Array(Math.min(count, GATHER_ROWS));
    const pending = new Int32Array(Math.min(count, GATHER_ROWS));
    let recomputed = 0;
    for (let start = 0; start < count; start += GATHER_ROWS) {
      const rows = Math.min(GATHER_ROWS, count - start);
      for (let r = 0; r < rows; r++) {
        const i = candidates[start + r];
        buffer.set(this.points.subarray(i * dim, (i + 1) * dim), r * dim);
        ownCluster[r] = cluster[i];
      }
      const own = await this.kernel.assignedSimilarity(buffer, rows, centroids, k, dim, ownCluster);
      let stillOpen = 0;
      for (let r = 0; r < rows; r++) {
        const i = candidates[start + r];
        upper[i] = angleAbove(own[r]);
        if (upper[i] < lower[i]) continue;
        buffer.copyWithin(stillOpen * dim, r * dim, (r + 1) * dim);
        pending[stillOpen++] = i;
      }
      if (stillOpen === 0) continue;
      const nearest = await this.kernel.nearestTwo(buffer, stillOpen, centroids, k, dim);
      for (let r = 0; r < stillOpen; r++) {
        if (this.apply(pending[r], nearest.cluster[r], nearest.similarity[r], nearest.runnerUp[r])) reassigned++;
      }
      recomputed += stillOpen;
    }
    return { recomputed, reassigned };
  }

  /**
   * Tightens the bounds after a move in which a few centroids moved far: instead of lowering every
   * lower bound by the largest shift, measure the exact similarity of every point to the big movers
   * (an n × |bigMovers| product) and lower the bound only by the largest remaining shift.
   */
  private async boundBigMovers(centroids: Float32Array, bigMovers: Int32Array, residualShift: number): Promise<void> {
    const { n, dim, cluster, upper, lower } = this;
    const movers = bigMovers.length;
    const moverRows = new Float32Array(movers * dim);
    for (let b = 0; b < movers; b++) moverRows.set(centroids.subarray(bigMovers[b] * dim, (bigMovers[b] + 1) * dim), b * dim);
    for (let start = 0; start < n; start += GATHER_ROWS) {
      const rows = Math.min(GATHER_ROWS, n - start);
      const sims = await this.kernel.similarities(this.points.subarray(start * dim), rows, moverRows, movers, dim);
      for (let r = 0; r < rows; r++) {
        const i = start + r;
        let closestOther = -Infinity;
        for (let b = 0; b < movers; b++) {
          const similarity = sims[r * movers + b];
          if (bigMovers[b] === cluster[i]) upper[i] = Math.min(upper[i], angleAbove(similarity));
          else if (similarity > closestOther) closestOther = similarity;
        }
        lower[i] = Math.min(lower[i] - residualShift, angleBelow(closestOther));
      }
    }
  }

  /**
   * Moves the points farthest from their centroids into empty clusters (one each, lowest cluster id
   * first, farthest point first with ties by index), skipping points that are the last member of
   * their cluster. Returns the number of clusters repaired.
   */
  async repairEmptyClusters(centroids: Float32Array): Promise<number> {
    const { n, dim, k, counts } = this;
    if (counts.every((count) => count > 0)) return 0;
    const similarity = await this.kernel.assignedSimilarity(this.points, n, centroids, k, dim, this.cluster);
    const farthestFirst = argsort(similarity);
    let next = 0;
    let repaired = 0;
    for (let empty = 0; empty < k; empty++) {
      if (counts[empty] > 0) continue;
      while (next < n && counts[this.cluster[farthestFirst[next]]] < 2) next++;
      if (next === n || similarity[farthestFirst[next]] > 1 - REPAIR_MIN_DISTANCE) break;
      const point = farthestFirst[next++];
      this.move(point, empty);
      // The update puts the repaired centroid on this point; force an exact recomputation next time.
      this.upper[point] = Infinity;
      repaired++;
    }
    return repaired;
  }

  /** Records a kernel result for point `i`; returns whether its cluster changed. */
  private apply(i: number, c: number, similarity: number, runnerUp: number): boolean {
    this.upper[i] = angleAbove(similarity);
    this.lower[i] = angleBelow(runnerUp);
    if (c === this.cluster[i]) return false;
    this.move(i, c);
    return true;
  }

  private move(i: number, to: number): void {
    const { dim, points, sums } = this;
    const from = this.cluster[i];
    this.cluster[i] = to;
    this.counts[from]--;
    this.counts[to]++;
    const p = i * dim;
    const qFrom = from * dim;
    const qTo = to * dim;
    for (let j = 0; j < dim; j++) {
      const value = points[p + j];
      sums[qFrom + j] -= value;
      sums[qTo + j] += value;
    }
  }
}
