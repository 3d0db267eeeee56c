import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findNearDuplicates, type DuplicateGroup } from '../../src/core/dedup.js';
import { fitKMeans } from '../../src/core/kmeans.js';
import { Rng } from '../../src/core/random.js';
import { JsDistanceKernel } from '../../src/kernels/js.js';
import { OrtDistanceKernel } from '../../src/kernels/ort.js';
import { dot, gaussian, plantedClusters } from '../helpers/planted.js';

let kernel: OrtDistanceKernel;
beforeAll(async () => {
  kernel = await OrtDistanceKernel.create();
});
afterAll(async () => {
  await kernel.dispose();
});

/** A unit row near `source`: source plus noise of norm ≈ `noise`. */
function perturbed(points: Float32Array, source: number, dim: number, noise: number, rng: Rng): Float32Array {
  const row = new Float32Array(dim);
  let norm = 0;
  for (let j = 0; j < dim; j++) {
    row[j] = points[source * dim + j] + (noise * gaussian(rng)) / Math.sqrt(dim);
    norm += row[j] ** 2;
  }
  return row.map((v) => v / Math.sqrt(norm));
}

/** The documented rule, straightforwardly: greedy per cluster over all earlier kept items. */
function bruteForce(points: Float32Array, n: number, dim: number, clusters: Int32Array, scores: Float32Array, epsilon: number): Omit<DuplicateGroup, 'similarities'>[] {
  const byCluster = new Map<number, number[]>();
  for (let i = 0; i < n; i++) byCluster.set(clusters[i], [...(byCluster.get(clusters[i]) ?? []), i]);
  const groups = new Map<number, number[]>();
  for (const members of byCluster.values()) {
    members.sort((a, b) => scores[b] - scores[a] || a - b);
    const kept: number[] = [];
    for (const i of members) {
      let best = -Infinity;
      let bestKept = -1;
      for (const j of kept) {
        const s = dot(points, i, points, j, dim);
        if (s > best) [best, bestKept] = [s, j];
      }
      if (best >= 1 - epsilon - 1e-6) groups.set(bestKept, [...(groups.get(bestKept) ?? []), i]);
      else kept.push(i);
    }
  }
  return [...groups.entries()].sort((a, b) => a[0] - b[0]).map(([kept, duplicates]) => ({ kept, duplicates: duplicates.sort((a, b) => a - b) }));
}

/** The groups without their similarities (checked on their own where it matters). */
function shapes(groups: DuplicateGroup[]): Omit<DuplicateGroup, 'similarities'>[] {
  return groups.map(({ kept, duplicates }) => ({ kept, duplicates }));
}

describe('findNearDuplicates', () => {
  const dim = 32;
  const base = plantedClusters({ seed: 2, clusters: 6, perCluster: 50, dim, noise: 0.8 });

  it('finds planted exact duplicates at ε = 0, keeping the lowest index of equal-score copies', async () => {
    // Items 0..299 are distinct; append copies: item 5 twice, item 17 once, item 120 three times.
    const sources = [5, 5, 17, 120, 120, 120];
    const n = base.n + sources.length;
    const points = new Float32Array(n * dim);
    points.set(base.points);
    sources.forEach((source, s) => points.set(base.points.subarray(source * dim, (source + 1) * dim), (base.n + s) * dim));
    const fit = await fitKMeans(points, n, dim, { k: 6, seed: 1, kernel });
    const scores = fit.similarity.map((s) => 1 - s);

    const groups = await findNearDuplicates(points, n, dim, fit.cluster, scores, { epsilon: 0, kernel });
    expect(shapes(groups)).toEqual([
      { kept: 5, duplicates: [300, 301] },
      { kept: 17, duplicates: [302] },
      { kept: 120, duplicates: [303, 304, 305] },
    ]);
  });

  it('finds planted near-duplicates at a suitable ε, keeps the less prototypical copy, and nothing else', async () => {
    const rng = new Rng(8);
    const sources = [3, 44, 101, 150, 299];
    const n = base.n + sources.length;
    const points = new Float32Array(n * dim);
    points.set(base.points);
    sources.forEach((source, s) => points.set(perturbed(base.points, source, dim, 0.01, rng), (base.n + s) * dim));
    const fit = await fitKMeans(points, n, dim, { k: 6, seed: 1, kernel });
    const scores = fit.similarity.map((s) => 1 - s);
    sources.forEach((source, s) => {
      expect(fit.cluster[base.n + s]).toBe(fit.cluster[source]);
      expect(dot(points, source, points, base.n + s, dim)).toBeGreaterThan(1 - 1e-3);
    });

    expect(shapes(await findNearDuplicates(points, n, dim, fit.cluster, scores, { epsilon: 0, kernel }))).toEqual([]);
    const groups = await findNearDuplicates(points, n, dim, fit.cluster, scores, { epsilon: 1e-3, kernel });
    const expected = sources
      .map((source, s) => {
        const copy = base.n + s;
        const keepSource = scores[source] > scores[copy] || (scores[source] === scores[copy] && source < copy);
        return keepSource ? { kept: source, duplicates: [copy] } : { kept: copy, duplicates: [source] };
      })
      .sort((a, b) => a.kept - b.kept);
    expect(shapes(groups)).toEqual(expected);
  });

  it('compares only within a cluster', async () => {
    const points = new Float32Array([1, 0, 1, 0, 0, 1]);
    const scores = new Float32Array([0.1, 0.1, 0.1]);
    expect(shapes(await findNearDuplicates(points, 3, 2, new Int32Array([0, 1, 1]), scores, { epsilon: 0, kernel }))).toEqual([]);
    expect(shapes(await findNearDuplicates(points, 3, 2, new Int32Array([1, 1, 0]), scores, { epsilon: 0, kernel }))).toEqual([{ kept: 0, duplicates: [1] }]);
  });

  it('judges against kept items only and picks the most similar one', async () => {
    const unit = (deg: number) => [Math.cos((deg * Math.PI) / 180), Math.sin((deg * Math.PI) / 180)];
    // Directions at 0°, 10°, 20° and 9°, visited in that order (scores descending).
    const points = Float32Array.from([0, 10, 20, 9].flatMap(unit));
    const scores = new Float32Array([0.9, 0.8, 0.7, 0.6]);
    const clusters = new Int32Array(4);
    const epsilon = 1 - Math.cos((13 * Math.PI) / 180);
    // 10° duplicates 0°. 20° is within 13° only of the 10° item, which was not kept, so it is kept.
    // 9° is within 13° of both kept items and nearer 0°.
    expect(shapes(await findNearDuplicates(points, 4, 2, clusters, scores, { epsilon, kernel }))).toEqual([{ kept: 0, duplicates: [1, 3] }]);
    // At 11° it is nearer the kept 20° item.
    points.set(unit(11), 6);
    expect(shapes(await findNearDuplicates(points, 4, 2, clusters, scores, { epsilon, kernel }))).toEqual([
      { kept: 0, duplicates: [1] },
      { kept: 2, duplicates: [3] },
    ]);
  });

  it('gives the same groups in small blocks and tiles as a brute-force greedy pass', async () => {
    const rng = new Rng(3);
    const n = 400;
    const d = 8;
    // One big cluster of points that come in loose families, so duplicates and chains abound.
    const families = plantedClusters({ seed: 4, clusters: 40, perCluster: 10, dim: d, noise: 0.15 });
    const clusters = Int32Array.from({ length: n }, (_, i) => (i % 7 === 0 ? 1 : 0));
    const scores = Float32Array.from({ length: n }, () => Math.floor(rng.next() * 50) / 50);
    const epsilon = 0.01;
    const expected = bruteForce(families.points, n, d, clusters, scores, epsilon);
    expect(expected.length).toBeGreaterThan(20);
    for (const options of [{}, { blockRows: 3, tileRows: 2 }, { blockRows: 64, tileRows: 5 }, { blockRows: 1, tileRows: 1 }]) {
      const groups = await findNearDuplicates(families.points, n, d, clusters, scores, { epsilon, kernel, ...options });
      expect(shapes(groups)).toEqual(expected);
    }
    const viaJs = await findNearDuplicates(families.points, n, d, clusters, scores, { epsilon, kernel: new JsDistanceKernel(), blockRows: 50 });
    expect(shapes(viaJs)).toEqual(expected);
    // Each duplicate's similarity is its cosine to the kept item.
    for (const group of viaJs) {
      group.duplicates.forEach((dup, j) => expect(group.similarities[j]).toBeCloseTo(dot(families.points, group.kept, families.points, dup, d), 5));
    }
  });

  it('validates its arguments', async () => {
    const points = new Float32Array([1, 0, 0, 1]);
    const ok = { epsilon: 0.1, kernel };
    await expect(findNearDuplicates(points, 2, 2, new Int32Array([0, -1]), new Float32Array(2), ok)).rejects.toThrow(RangeError);
    await expect(findNearDuplicates(points, 2, 2, new Int32Array(2), new Float32Array(2), { ...ok, epsilon: -0.1 })).rejects.toThrow(RangeError);
    await expect(findNearDuplicates(points, 2, 2, new Int32Array(2), new Float32Array(2), { ...ok, blockRows: 0 })).rejects.toThrow(RangeError);
    await expect(findNearDuplicates(points, 3, 2, new Int32Array(3), new Float32Array(3), ok)).rejects.toThrow(RangeError);
  });
});
