import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JsDistanceKernel } from '../../src/kernels/js.js';
import { OrtDistanceKernel } from '../../src/kernels/ort.js';
import type { DistanceKernel } from '../../src/kernels/types.js';
import { Rng } from '../../src/core/random.js';
import { randomUnitRows } from '../helpers/planted.js';

const TOLERANCE = 1e-5;

/** Straight float64 dot product, independent of both kernels. */
function dot(a: Float32Array, i: number, b: Float32Array, j: number, dim: number): number {
  let sum = 0;
  for (let t = 0; t < dim; t++) sum += a[i * dim + t] * b[j * dim + t];
  return sum;
}

const shapes = [
  { n: 1, k: 1, dim: 3 },
  { n: 777, k: 13, dim: 3 },
  { n: 300, k: 1, dim: 64 },
  { n: 1001, k: 7, dim: 5 },
  { n: 1500, k: 100, dim: 512 },
  { n: 2, k: 300, dim: 17 },
];

describe('ORT and JS kernels agree', () => {
  const js = new JsDistanceKernel();
  let ort: OrtDistanceKernel;
  // A small block budget forces many batches, including a ragged last one.
  let ortSmallBatches: OrtDistanceKernel;

  beforeAll(async () => {
    ort = await OrtDistanceKernel.create();
    ortSmallBatches = await OrtDistanceKernel.create({ intraOpNumThreads: 1, maxBlockElements: 1000 });
  });
  afterAll(async () => {
    await ort.dispose();
    await ortSmallBatches.dispose();
  });

  for (const { n, k, dim } of shapes) {
    it(`nearest and nearestTwo for n=${n}, k=${k}, dim=${dim}`, async () => {
      const rng = new Rng(n * 31 + k * 7 + dim);
      const points = randomUnitRows(rng, n, dim);
      const centroids = randomUnitRows(rng, k, dim);
      const reference = await js.nearestTwo(points, n, centroids, k, dim);
      for (const kernel of [ort, ortSmallBatches]) {
        const two = await kernel.nearestTwo(points, n, centroids, k, dim);
        const one = await kernel.nearest(points, n, centroids, k, dim);
        for (let i = 0; i < n; i++) {
          for (const result of [one, two]) {
            expect(Math.abs(result.similarity[i] - reference.similarity[i])).toBeLessThan(TOLERANCE);
            if (result.cluster[i] !== reference.cluster[i]) {
              // Only a float-level tie may pick a different centroid.
              const gap = dot(points, i, centroids, reference.cluster[i], dim) - dot(points, i, centroids, result.cluster[i], dim);
              expect(Math.abs(gap)).toBeLessThan(TOLERANCE);
            }
          }
          if (k === 1) expect(two.runnerUp[i]).toBe(-Infinity);
          else expect(Math.abs(two.runnerUp[i] - reference.runnerUp[i])).toBeLessThan(TOLERANCE);
        }
      }
      // The reference itself is right: its similarity is the maximum of the exact dot products.
      for (let i = 0; i < Math.min(n, 50); i++) {
        let best = -Infinity;
        for (let c = 0; c < k; c++) best = Math.max(best, dot(points, i, centroids, c, dim));
        expect(Math.abs(reference.similarity[i] - best)).toBeLessThan(TOLERANCE);
      }
    });

    it(`assignedSimilarity and similarities for n=${n}, k=${k}, dim=${dim}`, async () => {
      const rng = new Rng(n + k + dim);
      const points = randomUnitRows(rng, n, dim);
      const centroids = randomUnitRows(rng, k, dim);
      const cluster = Int32Array.from({ length: n }, () => rng.nextInt(k));
      const reference = await js.assignedSimilarity(points, n, centroids, k, dim, cluster);
      const block = await ort.similarities(points, n, centroids, k, dim);
      expect(block.length).toBe(n * k);
      for (const kernel of [ort, ortSmallBatches]) {
        const assigned = await kernel.assignedSimilarity(points, n, centroids, k, dim, cluster);
        for (let i = 0; i < n; i++) {
          expect(Math.abs(assigned[i] - reference[i])).toBeLessThan(TOLERANCE);
          expect(Math.abs(reference[i] - dot(points, i, centroids, cluster[i], dim))).toBeLessThan(TOLERANCE);
        }
      }
      for (let i = 0; i < n; i += Math.max(1, Math.floor(n / 40))) {
        for (let c = 0; c < k; c++) expect(Math.abs(block[i * k + c] - dot(points, i, centroids, c, dim))).toBeLessThan(TOLERANCE);
      }
    });
  }

  it('both break exact ties toward the lowest centroid index', async () => {
    const dim = 3;
    // Centroids 1 and 2 are identical, and so are 0 and 3.
    const centroids = new Float32Array([0, 1, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0]);
    const points = new Float32Array([1, 0, 0, 0, 1, 0, 0.6, 0.8, 0]);
    for (const kernel of [js, ort] as DistanceKernel[]) {
      const one = await kernel.nearest(points, 3, centroids, 4, dim);
      const two = await kernel.nearestTwo(points, 3, centroids, 4, dim);
      expect(Array.from(one.cluster)).toEqual([1, 0, 0]);
      expect(Array.from(two.cluster)).toEqual([1, 0, 0]);
      // The runner-up of a tied pair is the tied value itself.
      expect(Array.from(two.runnerUp)).toEqual([1, 1, Math.fround(0.8)]);
    }
  });

  it('reads the right rows from views that start inside a larger buffer', async () => {
    const dim = 4;
    const rng = new Rng(5);
    const backing = randomUnitRows(rng, 40, dim);
    const points = backing.subarray(3 * dim, 23 * dim);
    const centroids = backing.subarray(30 * dim, 35 * dim);
    const copyPoints = Float32Array.from(points);
    const copyCentroids = Float32Array.from(centroids);
    const fromViews = await ortSmallBatches.nearestTwo(points, 20, centroids, 5, dim);
    const fromCopies = await js.nearestTwo(copyPoints, 20, copyCentroids, 5, dim);
    expect(Array.from(fromViews.cluster)).toEqual(Array.from(fromCopies.cluster));
    const block = await ort.similarities(points, 20, centroids, 5, dim);
    const reference = await js.similarities(copyPoints, 20, copyCentroids, 5, dim);
    for (let i = 0; i < block.length; i++) expect(Math.abs(block[i] - reference[i])).toBeLessThan(TOLERANCE);
  });

  it('handles empty inputs', async () => {
    const centroids = new Float32Array([1, 0]);
    for (const kernel of [js, ort] as DistanceKernel[]) {
      expect((await kernel.nearest(new Float32Array(0), 0, centroids, 1, 2)).cluster.length).toBe(0);
      expect((await kernel.similarities(new Float32Array(0), 0, centroids, 1, 2)).length).toBe(0);
    }
  });

  it('rejects inconsistent shapes and bad assignments', async () => {
    for (const kernel of [js, ort] as DistanceKernel[]) {
      await expect(kernel.nearest(new Float32Array(5), 2, new Float32Array(3), 1, 3)).rejects.toThrow(RangeError);
      await expect(kernel.nearest(new Float32Array(6), 2, new Float32Array(0), 0, 3)).rejects.toThrow(RangeError);
      await expect(kernel.similarities(new Float32Array(6), 2, new Float32Array(2), 1, 3)).rejects.toThrow(RangeError);
      await expect(
        kernel.assignedSimilarity(new Float32Array(6), 2, new Float32Array(3), 1, 3, new Int32Array([0, 1])),
      ).rejects.toThrow(RangeError);
    }
  });

  it('batches nearest-centroid runs by k within the configured bounds', () => {
    expect(ort.batchRows(1000)).toBe(4194);
    expect(ort.batchRows(1)).toBe(8192);
    expect(ort.batchRows(1 << 20)).toBe(256);
  });
});

describe('OrtDistanceKernel lifecycle', () => {
  it('validates its options', async () => {
    await expect(OrtDistanceKernel.create({ intraOpNumThreads: 0 })).rejects.toThrow(RangeError);
    await expect(OrtDistanceKernel.create({ maxBlockElements: 0.5 })).rejects.toThrow(RangeError);
  });

  it('refuses work after dispose', async () => {
    const kernel = await OrtDistanceKernel.create({ intraOpNumThreads: 1 });
    await kernel.dispose();
    await kernel.dispose();
    await expect(kernel.nearest(new Float32Array([1, 0]), 1, new Float32Array([1, 0]), 1, 2)).rejects.toThrow(/disposed/);
  });
});
