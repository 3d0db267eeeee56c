import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  defaultInitSampleSize,
  defaultK,
  defaultNInit,
  defaultWarmupSampleSize,
  fitKMeans,
  restartSeed,
  type KMeansProgress,
  type KMeansResult,
} from '../../src/core/kmeans.js';
import { Rng } from '../../src/core/random.js';
import { JsDistanceKernel } from '../../src/kernels/js.js';
import { OrtDistanceKernel } from '../../src/kernels/ort.js';
import { dot, plantedClusters, randomUnitRows, samePartition } from '../helpers/planted.js';

let ort: OrtDistanceKernel;
const js = new JsDistanceKernel();
beforeAll(async () => {
  ort = await OrtDistanceKernel.create();
});
afterAll(async () => {
  await ort.dispose();
});

/** Mean cosine distance of each point to its nearest centroid, computed directly. */
function nearestObjective(points: Float32Array, n: number, centroids: Float32Array, k: number, dim: number): number {
  let total = 0;
  for (let i = 0; i < n; i++) {
    let best = -Infinity;
    for (let c = 0; c < k; c++) best = Math.max(best, dot(points, i, centroids, c, dim));
    total += 1 - best;
  }
  return total / n;
}

/** Unit-normalised float64 mean of the rows of each cluster (the spherical k-means centroid). */
function normalisedMeans(points: Float32Array, cluster: Int32Array, k: number, dim: number): Float64Array {
  const sums = new Float64Array(k * dim);
  for (let i = 0; i < cluster.length; i++) for (let j = 0; j < dim; j++) sums[cluster[i] * dim + j] += points[i * dim + j];
  for (let c = 0; c < k; c++) {
    let norm = 0;
    for (let j = 0; j < dim; j++) norm += sums[c * dim + j] ** 2;
    for (let j = 0; j < dim; j++) sums[c * dim + j] /= Math.sqrt(norm);
  }
  return sums;
}

function expectNonIncreasing(history: ArrayLike<number>): void {
  for (let t = 1; t < history.length; t++) expect(history[t]).toBeLessThanOrEqual(history[t - 1] + 1e-9);
}

describe('defaultK', () => {
  it('follows clamp(round(sqrt(n / 2)), 2, 1000), capped at n', () => {
    expect(defaultK(0)).toBe(0);
    expect(defaultK(1)).toBe(1);
    expect(defaultK(2)).toBe(2);
    expect(defaultK(8)).toBe(2);
    expect(defaultK(200)).toBe(10);
    expect(defaultK(20_000)).toBe(100);
    expect(defaultK(1_000_000)).toBe(707);
    expect(defaultK(10_000_000)).toBe(1000);
    expect(() => defaultK(-1)).toThrow(RangeError);
  });

  it('samples about 8 candidates per centroid for k-means++, within [4096, 16384] unless k is larger', () => {
    expect(defaultInitSampleSize(1_000_000, 1000)).toBe(8000);
    expect(defaultInitSampleSize(1_000_000, 10)).toBe(4096);
    expect(defaultInitSampleSize(1_000_000, 5000)).toBe(16384);
    expect(defaultInitSampleSize(1_000_000, 20_000)).toBe(20_000);
    expect(defaultInitSampleSize(300, 10)).toBe(300);
  });
});

describe('fitKMeans on planted clusters', () => {
  // Tight groups: k-means++ then seeds every group with near certainty (within-group cosine
  // distance ≈ 0.04 against ≈ 1 between groups).
  const clusters = 8;
  const dim = 32;
  const data = plantedClusters({ seed: 1, clusters, perCluster: 120, dim, noise: 0.2 });
  // Append the exact planted centres, and outliers: random directions far from every centre.
  const outliers = randomUnitRows(new Rng(2), 6, dim);
  const n = data.n + clusters + outliers.length / dim;
  const points = new Float32Array(n * dim);
  points.set(data.points);
  points.set(data.centres, data.n * dim);
  points.set(outliers, (data.n + clusters) * dim);

  it('recovers the planted partition for several seeds', async () => {
    for (const seed of [1, 2, 3, 4]) {
      const fit = await fitKMeans(points, n, dim, { k: clusters, seed, kernel: ort });
      expect(samePartition(fit.cluster.subarray(0, data.n), data.labels)).toBe(true);
      expect(fit.converged).toBe(true);
      // Each planted centre lands in the cluster of its own group.
      for (let c = 0; c < clusters; c++) expect(fit.cluster[data.n + c]).toBe(fit.cluster[c]);
    }
  });

  it('scores the planted centres lowest and the outliers highest', async () => {
    const fit = await fitKMeans(points, n, dim, { k: clusters, seed: 5, kernel: ort });
    const scores = Array.from(fit.similarity, (s) => 1 - s);
    for (let c = 0; c < clusters; c++) {
      const centreScore = scores[data.n + c];
      for (let i = 0; i < data.n; i++) if (data.labels[i] === c) expect(centreScore).toBeLessThan(scores[i]);
    }
    const hardest = Array.from(scores.keys()).sort((a, b) => scores[b] - scores[a]).slice(0, outliers.length / dim);
    expect(hardest.sort((a, b) => a - b)).toEqual(Array.from({ length: outliers.length / dim }, (_, o) => data.n + clusters + o));
  });

  it('returns unit centroids equal to the normalised cluster means, and exact nearest assignments', async () => {
    const fit = await fitKMeans(points, n, dim, { k: clusters, seed: 6, kernel: ort, tolerance: 0 });
    const means = normalisedMeans(points, fit.cluster, clusters, dim);
    for (let i = 0; i < fit.centroids.length; i++) expect(Math.abs(fit.centroids[i] - means[i])).toBeLessThan(1e-6);
    const nearest = await js.nearest(points, n, fit.centroids, clusters, dim);
    expect(Array.from(fit.cluster)).toEqual(Array.from(nearest.cluster));
    for (let i = 0; i < n; i++) expect(Math.abs(fit.similarity[i] - nearest.similarity[i])).toBeLessThan(1e-5);
    const counts = new Int32Array(clusters);
    for (const c of fit.cluster) counts[c]++;
    expect(Array.from(fit.counts)).toEqual(Array.from(counts));
    const objective = fit.objectiveHistory[fit.objectiveHistory.length - 1];
    expect(Math.abs(objective - nearestObjective(points, n, fit.centroids, clusters, dim))).toBeLessThan(1e-6);
  });

  it('gives the same clustering through the ORT and the JS kernel', async () => {
    const viaOrt = await fitKMeans(points, n, dim, { k: clusters, seed: 9, kernel: ort });
    const viaJs = await fitKMeans(points, n, dim, { k: clusters, seed: 9, kernel: js });
    expect(Array.from(viaOrt.cluster)).toEqual(Array.from(viaJs.cluster));
    for (let i = 0; i < viaOrt.centroids.length; i++) expect(Math.abs(viaOrt.centroids[i] - viaJs.centroids[i])).toBeLessThan(1e-5);
  });
});

describe('fitKMeans determinism', () => {
  const data = plantedClusters({ seed: 3, clusters: 20, perCluster: 60, dim: 24, noise: 1.2 });

  it('is bit-identical for the same seed and differs across seeds', async () => {
    const options = { k: 25, kernel: ort, tolerance: 0, maxIterations: 50 };
    const a = await fitKMeans(data.points, data.n, data.dim, { ...options, seed: 7 });
    const b = await fitKMeans(data.points, data.n, data.dim, { ...options, seed: 7 });
    const c = await fitKMeans(data.points, data.n, data.dim, { ...options, seed: 8 });
    expect(Buffer.from(a.centroids.buffer).equals(Buffer.from(b.centroids.buffer))).toBe(true);
    expect(Buffer.from(a.similarity.buffer).equals(Buffer.from(b.similarity.buffer))).toBe(true);
    expect(Array.from(a.cluster)).toEqual(Array.from(b.cluster));
    expect(Array.from(a.objectiveHistory)).toEqual(Array.from(b.objectiveHistory));
    expect(Buffer.from(a.centroids.buffer).equals(Buffer.from(c.centroids.buffer))).toBe(false);
  });
});

describe('Lloyd iterations', () => {
  // Overlapping groups and more centroids than groups: many iterations and far-moving centroids.
  const data = plantedClusters({ seed: 4, clusters: 30, perCluster: 100, dim: 16, noise: 1.5 });
  const k = 40;

  it('never increase the objective', async () => {
    for (const seed of [1, 2, 3]) {
      const fit = await fitKMeans(data.points, data.n, data.dim, { k, seed, kernel: ort, tolerance: 0, maxIterations: 100 });
      expect(fit.iterations).toBeGreaterThan(3);
      expectNonIncreasing(fit.objectiveHistory);
      expect(fit.objectiveHistory[fit.objectiveHistory.length - 1]).toBeLessThan(fit.objectiveHistory[0]);
    }
  });

  it('match plain unpruned Lloyd from the same seeds step for step', async () => {
    const seeds = await fitKMeans(data.points, data.n, data.dim, { k, seed: 11, kernel: ort, maxIterations: 0 });
    const progress: KMeansProgress[] = [];
    const fit = await fitKMeans(data.points, data.n, data.dim, {
      k,
      seed: 11,
      kernel: ort,
      tolerance: 0,
      maxIterations: 100,
      onProgress: (p) => progress.push(p),
    });
    expect(progress.every((p) => p.repaired === 0)).toBe(true);
    expect(progress.slice(2).some((p) => p.recomputed < data.n / 2)).toBe(true);

    // Reference: every point against every centroid, every iteration.
    let centroids = seeds.centroids;
    let assignment = (await js.nearest(data.points, data.n, centroids, k, data.dim)).cluster;
    for (let t = 1; t <= fit.iterations; t++) {
      centroids = Float32Array.from(normalisedMeans(data.points, assignment, k, data.dim));
      assignment = (await js.nearest(data.points, data.n, centroids, k, data.dim)).cluster;
      expect(Math.abs(fit.objectiveHistory[t] - nearestObjective(data.points, data.n, centroids, k, data.dim))).toBeLessThan(1e-6);
    }
    expect(Array.from(fit.cluster)).toEqual(Array.from(assignment));
  });

  it('repair an empty cluster by moving in the farthest point, keeping the objective non-increasing', async () => {
    const planted = plantedClusters({ seed: 6, clusters: 3, perCluster: 50, dim: 8, noise: 0.3 });
    // Seeds: two planted centres, a third centre's neighbour… and a direction no point is near.
    const nowhere = new Float32Array(8);
    nowhere[0] = 1;
    const nearOnly = [planted.centres.subarray(0, 8), planted.centres.subarray(8, 16), planted.centres.subarray(16, 24)];
    const initial = new Float32Array(4 * 8);
    nearOnly.forEach((centre, c) => initial.set(centre, c * 8));
    // Point the fourth seed away from every point: the negated mean of all points.
    const mean = new Float64Array(8);
    for (let i = 0; i < planted.n; i++) for (let j = 0; j < 8; j++) mean[j] -= planted.points[i * 8 + j];
    const norm = Math.hypot(...mean);
    for (let j = 0; j < 8; j++) initial[3 * 8 + j] = mean[j] / norm;
    for (let i = 0; i < planted.n; i++) expect(dot(planted.points, i, initial, 3, 8)).toBeLessThan(0);

    const before = await js.assignedSimilarity(planted.points, planted.n, initial, 4, 8, (await js.nearest(planted.points, planted.n, initial, 4, 8)).cluster);
    let farthest = 0;
    for (let i = 1; i < planted.n; i++) if (before[i] < before[farthest]) farthest = i;

    const progress: KMeansProgress[] = [];
    const fit = await fitKMeans(planted.points, planted.n, 8, {
      k: 4,
      seed: 1,
      kernel: ort,
      initialCentroids: initial,
      maxIterations: 1,
      onProgress: (p) => progress.push(p),
    });
    expect(progress[1].repaired).toBe(1);
    // The empty centroid now sits on the previously farthest point.
    for (let j = 0; j < 8; j++) expect(fit.centroids[3 * 8 + j]).toBeCloseTo(planted.points[farthest * 8 + j], 6);
    expect(fit.cluster[farthest]).toBe(3);
    expect(fit.counts.every((count) => count > 0)).toBe(true);
    expectNonIncreasing(fit.objectiveHistory);
  });

  it('leave a cluster empty when every point already sits on its centroid', async () => {
    // Two distinct directions, duplicated; three clusters cannot all be non-empty.
    const points = new Float32Array([1, 0, 1, 0, 0, 1, 0, 1, 1, 0]);
    const fit = await fitKMeans(points, 5, 2, { k: 3, seed: 1, kernel: js, maxIterations: 5 });
    expect([...fit.counts].sort()).toEqual([0, 2, 3]);
    expect(fit.objectiveHistory[fit.objectiveHistory.length - 1]).toBeLessThan(1e-6);
    expect(fit.converged).toBe(true);
  });

  it('handle k = 1 and k = n', async () => {
    const rng = new Rng(4);
    const points = randomUnitRows(rng, 7, 5);
    const one = await fitKMeans(points, 7, 5, { k: 1, seed: 1, kernel: ort });
    expect(Array.from(one.cluster)).toEqual(new Array(7).fill(0));
    const mean = normalisedMeans(points, one.cluster, 1, 5);
    for (let j = 0; j < 5; j++) expect(one.centroids[j]).toBeCloseTo(mean[j], 6);
    const all = await fitKMeans(points, 7, 5, { k: 7, seed: 1, kernel: ort });
    expect(new Set(all.cluster).size).toBe(7);
    for (const s of all.similarity) expect(s).toBeCloseTo(1, 5);
  });

  it('validate their options', async () => {
    const points = randomUnitRows(new Rng(1), 10, 3);
    const base = { seed: 1, kernel: js };
    await expect(fitKMeans(points, 10, 3, { ...base, k: 0 })).rejects.toThrow(RangeError);
    await expect(fitKMeans(points, 10, 3, { ...base, k: 11 })).rejects.toThrow(RangeError);
    await expect(fitKMeans(points, 11, 3, { ...base, k: 2 })).rejects.toThrow(RangeError);
    await expect(fitKMeans(points, 10, 3, { ...base, k: 2, maxIterations: -1 })).rejects.toThrow(RangeError);
    await expect(fitKMeans(points, 10, 3, { ...base, k: 2, tolerance: Number.NaN })).rejects.toThrow(RangeError);
    await expect(fitKMeans(points, 10, 3, { ...base, k: 4, initSampleSize: 3 })).rejects.toThrow(RangeError);
    await expect(fitKMeans(points, 10, 3, { ...base, k: 2, initialCentroids: new Float32Array(5) })).rejects.toThrow(RangeError);
    await expect(fitKMeans(points, 10, 3, { ...base, k: 2, initialCentroids: new Float32Array([1, 0, 0, 0, 0, 0]) })).rejects.toThrow(/row 1/);
  });
});

describe('warm-up on a sample', () => {
  it('is used for large n, refines the seeds on the sample, then converges on all points', async () => {
    const data = plantedClusters({ seed: 9, clusters: 5, perCluster: 700, dim: 48, noise: 0.3 });
    expect(defaultWarmupSampleSize(data.n, 5)).toBe(1280);
    expect(defaultWarmupSampleSize(2560, 5)).toBe(0);
    const progress: KMeansProgress[] = [];
    const fit = await fitKMeans(data.points, data.n, data.dim, { k: 5, seed: 2, kernel: ort, onProgress: (p) => progress.push(p) });
    expect(samePartition(fit.cluster, data.labels)).toBe(true);
    expect(fit.converged).toBe(true);
    const warmup = progress.filter((p) => p.phase === 'warmup');
    const full = progress.filter((p) => p.phase === 'full');
    expect(warmup.length).toBe(fit.warmupIterations + 1);
    expect(warmup[0].recomputed).toBe(1280);
    expect(full.length).toBe(fit.iterations + 1);
    expect(full[0].recomputed).toBe(data.n);
    // Phases run in order, and the full phase starts from the warm-up's centroids: nothing moves far.
    expect(progress.findIndex((p) => p.phase === 'full')).toBe(warmup.length);
    expect(full.slice(1).every((p) => p.maxShift < 0.01)).toBe(true);
    expectNonIncreasing(fit.objectiveHistory);
  });

  it('can be disabled or sized explicitly', async () => {
    const data = plantedClusters({ seed: 9, clusters: 5, perCluster: 700, dim: 48, noise: 0.3 });
    const phases = async (warmupSampleSize: number) => {
      const seen = new Set<string>();
      await fitKMeans(data.points, data.n, data.dim, { k: 5, seed: 2, kernel: ort, warmupSampleSize, onProgress: (p) => seen.add(p.phase) });
      return [...seen];
    };
    expect(await phases(0)).toEqual(['full']);
    expect(await phases(500)).toEqual(['warmup', 'full']);
    await expect(fitKMeans(data.points, data.n, data.dim, { k: 5, seed: 2, kernel: ort, warmupSampleSize: 4 })).rejects.toThrow(RangeError);
    await expect(fitKMeans(data.points, data.n, data.dim, { k: 5, seed: 2, kernel: ort, warmupSampleSize: data.n + 1 })).rejects.toThrow(RangeError);
  });
});

describe('k-means++ on a sample', () => {
  it('seeds from a subsample when initSampleSize < n and still recovers planted clusters', async () => {
    const data = plantedClusters({ seed: 8, clusters: 12, perCluster: 400, dim: 64, noise: 0.15 });
    const fit = await fitKMeans(data.points, data.n, data.dim, { k: 12, seed: 3, kernel: ort, initSampleSize: 200 });
    expect(samePartition(fit.cluster, data.labels)).toBe(true);
  });

  it('seeds from a sample too large for a precomputed Gram matrix', async () => {
    const data = plantedClusters({ seed: 10, clusters: 6, perCluster: 1500, dim: 8, noise: 0.05 });
    const fit = await fitKMeans(data.points, data.n, data.dim, { k: 6, seed: 3, kernel: ort, initSampleSize: 9000, warmupSampleSize: 0, maxIterations: 0 });
    // k-means++ alone already puts one seed in every group.
    expect(samePartition(fit.cluster, data.labels)).toBe(true);
  });
});

describe('restarts (nInit)', () => {
  // Twelve overlapping groups and k = 12: single seeds end in different optima (two seeds in one
  // group, two groups under one centroid), only some recover the planted partition.
  const data = plantedClusters({ seed: 5, clusters: 12, perCluster: 40, dim: 16, noise: 0.6 });
  const k = 12;
  const seed = 1;
  // A function: the ORT kernel exists only once beforeAll ran.
  const base = () => ({ k, seed, kernel: ort });
  const final = (fit: KMeansResult): number => fit.objectiveHistory[fit.objectiveHistory.length - 1];
  const bytes = (a: ArrayBufferView): Buffer => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
  const expectSameFit = (a: KMeansResult, b: KMeansResult): void => {
    expect(bytes(a.centroids).equals(bytes(b.centroids))).toBe(true);
    expect(bytes(a.similarity).equals(bytes(b.similarity))).toBe(true);
    expect(Array.from(a.cluster)).toEqual(Array.from(b.cluster));
    expect(Array.from(a.counts)).toEqual(Array.from(b.counts));
    expect(Array.from(a.objectiveHistory)).toEqual(Array.from(b.objectiveHistory));
    expect([a.iterations, a.warmupIterations, a.converged]).toEqual([b.iterations, b.warmupIterations, b.converged]);
  };

  it('nInit = 1 is the single fit from `seed`, bit for bit, progress included', async () => {
    const progressOf = async (nInit: number | undefined) => {
      const progress: KMeansProgress[] = [];
      const fit = await fitKMeans(data.points, data.n, data.dim, { ...base(), nInit, onProgress: (p) => progress.push(p) });
      return { fit, progress };
    };
    const plain = await progressOf(undefined);
    const one = await progressOf(1);
    expectSameFit(one.fit, plain.fit);
    expect(one.progress).toEqual(plain.progress);
    expect(one.progress.every((p) => p.restart === 0)).toBe(true);
    expect(one.fit.restarts).toBe(1);
    expect(Array.from(one.fit.restartObjectives)).toEqual([final(one.fit)]);
    // Restart 0 of a longer run is that same fit, seeded by `seed` itself.
    expect(restartSeed(seed, 0)).toBe(seed);
    const four = await fitKMeans(data.points, data.n, data.dim, { ...base(), nInit: 4 });
    expect(four.restartObjectives[0]).toBe(final(plain.fit));
  });

  it('keep the first lowest of the single fits from the derived seeds', async () => {
    const nInit = 6;
    const seeds = Array.from({ length: nInit }, (_, r) => restartSeed(seed, r));
    expect(new Set(seeds).size).toBe(nInit);
    const singles: KMeansResult[] = [];
    for (const restartSeedValue of seeds) singles.push(await fitKMeans(data.points, data.n, data.dim, { ...base(), seed: restartSeedValue }));
    const objectives = singles.map(final);
    const lowest = Math.min(...objectives);
    const first = objectives.indexOf(lowest);
    // The data is such that restarts matter: the seed's own fit is not the best one.
    expect(objectives[0]).toBeGreaterThan(lowest);

    const progress: KMeansProgress[] = [];
    const fit = await fitKMeans(data.points, data.n, data.dim, { ...base(), nInit, onProgress: (p) => progress.push(p) });
    expect(fit.restarts).toBe(nInit);
    expect(Array.from(fit.restartObjectives)).toEqual(objectives);
    expect(final(fit)).toBe(lowest);
    expectSameFit(fit, singles[first]);
    expect(nearestObjective(data.points, data.n, fit.centroids, k, data.dim)).toBeCloseTo(lowest, 6);
    expectNonIncreasing(fit.objectiveHistory);

    // Progress: every restart in order, each from iteration 0, as many events as its single fit has iterations + 1.
    const restarts = progress.map((p) => p.restart);
    expect(restarts).toEqual([...restarts].sort((a, b) => a - b));
    singles.forEach((single, r) => {
      const own = progress.filter((p) => p.restart === r);
      expect(own.map((p) => p.iteration)).toEqual(Array.from({ length: single.iterations + 1 }, (_, t) => t));
      expect(own.map((p) => p.objective)).toEqual(Array.from(single.objectiveHistory));
    });
  });

  it('keep the earliest restart on ties', async () => {
    // k = n basis vectors: every restart puts one centroid on each point (objective exactly 0), in
    // an order of its own seeds.
    const size = 6;
    const basis = new Float32Array(size * size);
    for (let i = 0; i < size; i++) basis[i * size + i] = 1;
    const options = { k: size, seed, kernel: ort };
    const nInit = 4;
    const singles: KMeansResult[] = [];
    for (let r = 0; r < nInit; r++) singles.push(await fitKMeans(basis, size, size, { ...options, seed: restartSeed(seed, r) }));
    expect(singles.map(final)).toEqual(new Array(nInit).fill(0));
    // The restarts are told apart by their centroid order.
    expect(singles.slice(1).some((single) => !bytes(single.centroids).equals(bytes(singles[0].centroids)))).toBe(true);
    const fit = await fitKMeans(basis, size, size, { ...options, nInit });
    expect(Array.from(fit.restartObjectives)).toEqual(new Array(nInit).fill(0));
    expectSameFit(fit, singles[0]);
  });

  it('run each restart with its own warm-up', async () => {
    const progress: KMeansProgress[] = [];
    const fit = await fitKMeans(data.points, data.n, data.dim, { ...base(), nInit: 3, warmupSampleSize: 200, onProgress: (p) => progress.push(p) });
    for (let r = 0; r < 3; r++) {
      const phases = progress.filter((p) => p.restart === r).map((p) => p.phase);
      expect(phases[0]).toBe('warmup');
      expect(phases.lastIndexOf('warmup')).toBeLessThan(phases.indexOf('full'));
    }
    const single = await fitKMeans(data.points, data.n, data.dim, { ...base(), seed: restartSeed(seed, 2), warmupSampleSize: 200 });
    expect(fit.restartObjectives[2]).toBe(final(single));
  });

  it('are ignored when warm-starting from initialCentroids', async () => {
    const initialCentroids = (await fitKMeans(data.points, data.n, data.dim, { ...base(), seed: 9, maxIterations: 0 })).centroids;
    const progress: KMeansProgress[] = [];
    const warm = await fitKMeans(data.points, data.n, data.dim, { ...base(), initialCentroids, nInit: 5, onProgress: (p) => progress.push(p) });
    const once = await fitKMeans(data.points, data.n, data.dim, { ...base(), initialCentroids });
    expect(warm.restarts).toBe(1);
    expect(warm.restartObjectives.length).toBe(1);
    expect(progress.every((p) => p.restart === 0)).toBe(true);
    expectSameFit(warm, once);
  });

  it('validate nInit', async () => {
    for (const nInit of [0, -1, 1.5, Number.NaN]) {
      await expect(fitKMeans(data.points, data.n, data.dim, { ...base(), nInit })).rejects.toThrow(RangeError);
    }
  });
});

describe('defaultNInit', () => {
  it('restarts small fits several times and fits large data once', () => {
    expect(defaultNInit(1797, 10)).toBeGreaterThan(1);
    expect(defaultNInit(2000, defaultK(2000))).toBeGreaterThan(1);
    expect(defaultNInit(1_000_000, 1000)).toBe(1);
    expect(defaultNInit(1_000_000, defaultK(1_000_000))).toBe(1);
  });

  it('never grows with n, and stays within [1, 8]', () => {
    let previous = Infinity;
    for (let n = 10; n <= 10_000_000; n = Math.ceil(n * 1.3)) {
      const nInit = defaultNInit(n, defaultK(n));
      expect(Number.isInteger(nInit)).toBe(true);
      expect(nInit).toBeGreaterThanOrEqual(1);
      expect(nInit).toBeLessThanOrEqual(8);
      expect(nInit).toBeLessThanOrEqual(previous);
      previous = nInit;
    }
  });
});
