import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  applyCentroidDelta,
  centroidDelta,
  centroidDrift,
  DEFAULT_REFIT_THRESHOLDS,
  miniBatchUpdate,
  type MiniBatchUpdate,
  shouldRefit,
} from '../../src/core/incremental.js';
import { fitKMeans } from '../../src/core/kmeans.js';
import { Rng } from '../../src/core/random.js';
import { OrtDistanceKernel } from '../../src/kernels/ort.js';
import { dot, gaussian, plantedClusters } from '../helpers/planted.js';

let kernel: OrtDistanceKernel;
beforeAll(async () => {
  kernel = await OrtDistanceKernel.create();
});
afterAll(async () => {
  await kernel.dispose();
});

async function objective(points: Float32Array, n: number, centroids: Float32Array, k: number, dim: number): Promise<number> {
  const { similarity } = await kernel.nearest(points, n, centroids, k, dim);
  let total = 0;
  for (const s of similarity) total += 1 - s;
  return total / n;
}

/** Rotates every centre a fixed angle toward a fresh random direction, re-normalised. */
function driftedCentres(centres: Float32Array, k: number, dim: number, amount: number, rng: Rng): Float32Array {
  const out = new Float32Array(centres.length);
  for (let c = 0; c < k; c++) {
    let norm = 0;
    const row = new Float64Array(dim);
    for (let j = 0; j < dim; j++) {
      row[j] = centres[c * dim + j] + (amount * gaussian(rng)) / Math.sqrt(dim);
      norm += row[j] ** 2;
    }
    for (let j = 0; j < dim; j++) out[c * dim + j] = row[j] / Math.sqrt(norm);
  }
  return out;
}

describe('miniBatchUpdate', () => {
  it('moves a centroid toward new points with learning rate 1/count, then re-normalises', () => {
    const centroids = new Float32Array([1, 0, 0, 1]);
    const counts = new Int32Array([3, 5]);
    const batch = new Float32Array([0, 1, 0, 1]);
    const { centroids: next, counts: nextCounts } = miniBatchUpdate(centroids, counts, 2, 2, batch, 2, new Int32Array([0, 0]));
    // Running mean with 3 prior members at (1, 0) and two new at (0, 1): (3, 2) / 5, normalised.
    expect(next[0]).toBeCloseTo(3 / Math.hypot(3, 2), 6);
    expect(next[1]).toBeCloseTo(2 / Math.hypot(3, 2), 6);
    expect(Array.from(next.subarray(2))).toEqual([0, 1]);
    expect(Array.from(nextCounts)).toEqual([5, 5]);
    // Inputs are untouched.
    expect(Array.from(centroids)).toEqual([1, 0, 0, 1]);
    expect(Array.from(counts)).toEqual([3, 5]);
  });

  it('lets an empty cluster take its first point outright', () => {
    const { centroids } = miniBatchUpdate(new Float32Array([1, 0, 1, 0]), new Int32Array([4, 0]), 2, 2, new Float32Array([0, 1]), 1, new Int32Array([1]));
    expect(Array.from(centroids)).toEqual([1, 0, 0, 1]);
  });

  it('rejects cluster ids outside [0, k)', () => {
    expect(() => miniBatchUpdate(new Float32Array(4), new Int32Array(2), 2, 2, new Float32Array(2), 1, new Int32Array([2]))).toThrow(RangeError);
  });

  it('tracks a drifting stream to within a few percent of a full fit', async () => {
    const k = 10;
    const dim = 32;
    const noise = 0.25;
    const initial = plantedClusters({ seed: 21, clusters: k, perCluster: 60, dim, noise });
    const fit = await fitKMeans(initial.points, initial.n, dim, { k, seed: 1, kernel });

    // The stream comes from the same groups after their centres drifted. The fit's own members keep
    // weighing on the running means (a tenth of the final counts), so the match is close, not exact.
    const rng = new Rng(22);
    const centres = driftedCentres(initial.centres, k, dim, 0.3, rng);
    const streamSize = 6000;
    const stream = new Float32Array(streamSize * dim);
    for (let i = 0; i < streamSize; i++) {
      let norm = 0;
      const c = rng.nextInt(k);
      for (let j = 0; j < dim; j++) {
        stream[i * dim + j] = centres[c * dim + j] + (noise * gaussian(rng)) / Math.sqrt(dim);
        norm += stream[i * dim + j] ** 2;
      }
      for (let j = 0; j < dim; j++) stream[i * dim + j] /= Math.sqrt(norm);
    }

    let centroids = fit.centroids;
    let counts = fit.counts;
    const batchSize = 200;
    for (let start = 0; start < streamSize; start += batchSize) {
      const batch = stream.subarray(start * dim, (start + batchSize) * dim);
      const { cluster } = await kernel.nearest(batch, batchSize, centroids, k, dim);
      ({ centroids, counts } = miniBatchUpdate(centroids, counts, k, dim, batch, batchSize, cluster));
    }
    expect(counts.reduce((a, b) => a + b, 0)).toBe(initial.n + streamSize);
    for (let c = 0; c < k; c++) expect(dot(centroids, c, centroids, c, dim)).toBeCloseTo(1, 5);

    const full = await fitKMeans(stream, streamSize, dim, { k, seed: 1, kernel });
    const fullObjective = full.objectiveHistory[full.objectiveHistory.length - 1];
    const staleObjective = await objective(stream, streamSize, fit.centroids, k, dim);
    const streamedObjective = await objective(stream, streamSize, centroids, k, dim);
    expect(staleObjective).toBeGreaterThan(fullObjective * 1.1);
    expect(streamedObjective).toBeLessThan(fullObjective * 1.03);

    const drift = centroidDrift(fit.centroids, centroids, k, dim);
    expect(drift.mean).toBeGreaterThan(DEFAULT_REFIT_THRESHOLDS.meanDrift);
    expect(shouldRefit(drift, streamSize / (initial.n + streamSize)).refit).toBe(true);
  });
});

describe('centroidDrift', () => {
  it('is 1 − cos per centroid, with mean and max', () => {
    const reference = new Float32Array([1, 0, 0, 1, 1, 0]);
    const current = new Float32Array([1, 0, 1, 1, -1, 0]);
    const drift = centroidDrift(reference, current, 3, 2);
    expect(drift.perCentroid[0]).toBe(0);
    expect(drift.perCentroid[1]).toBeCloseTo(1 - Math.SQRT1_2, 6);
    expect(drift.perCentroid[2]).toBe(2);
    expect(drift.max).toBe(2);
    expect(drift.mean).toBeCloseTo((1 - Math.SQRT1_2 + 2) / 3, 6);
  });
});

describe('shouldRefit', () => {
  const still = { mean: 0, max: 0 };
  it('stays put while every signal is under its threshold', () => {
    expect(shouldRefit(still, 0.1)).toEqual({ refit: false, reasons: [] });
    expect(shouldRefit({ mean: 0.009, max: 0.049 }, 0.19).refit).toBe(false);
  });

  it('names each threshold reached', () => {
    expect(shouldRefit({ mean: 0.01, max: 0.01 }, 0).reasons).toEqual(['meanDrift']);
    expect(shouldRefit({ mean: 0.001, max: 0.06 }, 0).reasons).toEqual(['maxDrift']);
    expect(shouldRefit(still, 0.2).reasons).toEqual(['arrivedFraction']);
    expect(shouldRefit({ mean: 0.5, max: 0.5 }, 0.5).reasons).toEqual(['meanDrift', 'maxDrift', 'arrivedFraction']);
  });

  it('accepts custom thresholds and validates the arrived fraction', () => {
    expect(shouldRefit(still, 0.05, { meanDrift: 1, maxDrift: 1, arrivedFraction: 0.05 }).refit).toBe(true);
    expect(() => shouldRefit(still, 1.5)).toThrow(RangeError);
    expect(() => shouldRefit(still, Number.NaN)).toThrow(RangeError);
  });
});

describe('centroid deltas', () => {
  const dim = 5;
  const k = 3;
  const rng = new Rng(9);
  const unit = (n: number) => {
    const rows = new Float32Array(n * dim);
    for (let i = 0; i < n; i++) {
      let norm = 0;
      for (let j = 0; j < dim; j++) norm += (rows[i * dim + j] = gaussian(rng)) ** 2;
      for (let j = 0; j < dim; j++) rows[i * dim + j] /= Math.sqrt(norm);
    }
    return rows;
  };

  /** Sculley's step one row at a time (rate 1/count), re-normalised at the end of the batch: what a delta must reproduce. */
  function rowByRow(centroids: Float32Array, counts: Int32Array, batch: Float32Array, clusters: Int32Array) {
    const c = Float64Array.from(centroids);
    const n = Int32Array.from(counts);
    const touched = new Set<number>();
    clusters.forEach((cluster, i) => {
      touched.add(cluster);
      const rate = 1 / ++n[cluster];
      for (let j = 0; j < dim; j++) c[cluster * dim + j] += rate * (batch[i * dim + j] - c[cluster * dim + j]);
    });
    for (const cluster of touched) {
      const norm = Math.hypot(...c.subarray(cluster * dim, (cluster + 1) * dim));
      for (let j = 0; j < dim; j++) c[cluster * dim + j] /= norm;
    }
    return { centroids: c, counts: n };
  }

  it('sums each touched centroid\'s rows, and applying the sums equals the row-by-row running mean', () => {
    const centroids = unit(k);
    const counts = Int32Array.from([10, 3, 7]);
    const batch = unit(40);
    const clusters = Int32Array.from({ length: 40 }, (_, i) => (i * 7) % 2 === 0 ? 0 : 2); // centroid 1 untouched
    const delta = centroidDelta(batch, 40, dim, clusters, k);
    expect(Array.from(delta.clusters)).toEqual([0, 2]);
    expect(Array.from(delta.counts)).toEqual([clusters.filter((c) => c === 0).length, clusters.filter((c) => c === 2).length]);
    expect(delta.items).toBe(40);
    let sum0 = 0;
    clusters.forEach((c, i) => c === 0 && (sum0 += batch[i * dim]));
    expect(delta.sums[0]).toBeCloseTo(sum0, 5);

    const applied = applyCentroidDelta(centroids, counts, k, dim, delta);
    const expected = rowByRow(centroids, counts, batch, clusters);
    expect(Array.from(applied.counts)).toEqual(Array.from(expected.counts));
    for (let j = 0; j < k * dim; j++) expect(applied.centroids[j]).toBeCloseTo(expected.centroids[j], 5);
    expect(Array.from(applied.centroids.subarray(dim, 2 * dim))).toEqual(Array.from(centroids.subarray(dim, 2 * dim)));
    expect(Array.from(counts)).toEqual([10, 3, 7]); // inputs untouched
  });

  it('deltas folded one after another equal their batches applied in turn', () => {
    const centroids = unit(k);
    const counts = Int32Array.from([4, 4, 4]);
    const first = unit(12);
    const second = unit(9);
    const c1 = Int32Array.from({ length: 12 }, (_, i) => i % k);
    const c2 = Int32Array.from({ length: 9 }, (_, i) => (i * 2) % k);
    let folded: MiniBatchUpdate = { centroids, counts };
    for (const delta of [centroidDelta(first, 12, dim, c1, k), centroidDelta(second, 9, dim, c2, k)]) folded = applyCentroidDelta(folded.centroids, folded.counts, k, dim, delta);
    const once = miniBatchUpdate(centroids, counts, k, dim, first, 12, c1);
    const inTurn = miniBatchUpdate(once.centroids, once.counts, k, dim, second, 9, c2);
    expect(Array.from(folded.counts)).toEqual(Array.from(inTurn.counts));
    for (let j = 0; j < k * dim; j++) expect(folded.centroids[j]).toBeCloseTo(inTurn.centroids[j], 6);
  });

  it('refuses a cluster outside [0, k)', () => {
    expect(() => centroidDelta(unit(2), 2, dim, Int32Array.from([0, 3]), k)).toThrow(RangeError);
    const bad = { clusters: Int32Array.from([5]), counts: Int32Array.from([1]), sums: new Float32Array(dim), items: 1 };
    expect(() => applyCentroidDelta(unit(k), new Int32Array(k), k, dim, bad)).toThrow(RangeError);
  });
});
