import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  balancedQuotas,
  buildHierarchy,
  defaultLevels,
  hierarchicalQuotas,
  type PrototypeHierarchy,
  upperLevelSizes,
} from '../../src/core/hierarchical.js';
import { fitKMeans } from '../../src/core/kmeans.js';
import { Rng } from '../../src/core/random.js';
import { JsDistanceKernel } from '../../src/kernels/js.js';
import { plantedClusters, randomUnitRows } from '../helpers/planted.js';

const kernel = new JsDistanceKernel();
const sum = (values: ArrayLike<number>) => Array.from(values).reduce((a, b) => a + b, 0);

describe('balancedQuotas', () => {
  it('keeps groups below the even share whole and splits the rest evenly, extras to lower ids', () => {
    // Even share 3: the 1 and the 2 are kept whole; 9 left for the groups of 10 and 5 → 5 and 4.
    expect(Array.from(balancedQuotas(Int32Array.of(2, 10, 5, 1), 12))).toEqual([2, 5, 4, 1]);
    expect(Array.from(balancedQuotas(Int32Array.of(4, 4, 4), 7))).toEqual([3, 2, 2]);
    expect(Array.from(balancedQuotas(Int32Array.of(3, 0, 2), 100))).toEqual([3, 0, 2]);
    expect(Array.from(balancedQuotas(new Int32Array(0), 5))).toEqual([]);
    expect(() => balancedQuotas(Int32Array.of(1), -1)).toThrow(RangeError);
    expect(() => balancedQuotas(Int32Array.of(-1), 1)).toThrow(RangeError);
  });

  it('is max-min fair: sums to min(budget, total), caps at sizes, and no uncapped group is 2 below another', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 50 }), { maxLength: 30 }), fc.integer({ min: 0, max: 800 }), (list, budget) => {
        const sizes = Int32Array.from(list);
        const quotas = balancedQuotas(sizes, budget);
        expect(sum(quotas)).toBe(Math.min(budget, sum(sizes)));
        const largest = Math.max(0, ...quotas);
        sizes.forEach((size, g) => {
          expect(quotas[g]).toBeGreaterThanOrEqual(0);
          expect(quotas[g]).toBeLessThanOrEqual(size);
          if (quotas[g] < size) expect(quotas[g]).toBeGreaterThanOrEqual(largest - 1);
        });
      }),
    );
  });
});

describe('upperLevelSizes and defaultLevels', () => {
  it('puts round(√k) nodes at the top and shrinks geometrically in between, never above the level below', () => {
    expect(upperLevelSizes(1000, 3)).toEqual([178, 32]);
    expect(upperLevelSizes(40, 3)).toEqual([16, 6]);
    expect(upperLevelSizes(40, 2)).toEqual([6]);
    expect(upperLevelSizes(2, 3)).toEqual([2, 1]);
    expect(upperLevelSizes(1, 3)).toEqual([1, 1]);
    for (const levels of [1, 4, 2.5]) expect(() => upperLevelSizes(40, levels)).toThrow(RangeError);
    expect(() => upperLevelSizes(0, 2)).toThrow(RangeError);
  });

  it('uses three levels from 16 prototypes on (2 or more children per node on average), two below', () => {
    expect(defaultLevels(15)).toBe(2);
    expect(defaultLevels(16)).toBe(3);
  });
});

/** Quota of every node of every level: prototype quotas summed up the tree (index 0 = prototypes). */
function nodeQuotas(tree: PrototypeHierarchy, prototypeQuotas: Int32Array): Int32Array[] {
  const levels = [prototypeQuotas];
  for (const level of tree.upperLevels) {
    const below = levels[levels.length - 1];
    const quotas = new Int32Array(level.nodeCount);
    below.forEach((q, child) => (quotas[level.parentOfChild[child]] += q));
    levels.push(quotas);
  }
  return levels;
}

describe('buildHierarchy and hierarchicalQuotas on random prototypes', () => {
  const k = 60;
  const dim = 16;
  const rng = new Rng(7);
  const centroids = randomUnitRows(rng, k, dim);
  // Skewed counts with a few empty prototypes.
  const counts = Int32Array.from({ length: k }, () => (rng.next() < 0.1 ? 0 : Math.floor(200 * rng.next() ** 3)));
  const total = sum(counts);
  const build = () => buildHierarchy(centroids, k, dim, counts, { seed: 3, kernel });

  it('builds the default three levels with consistent parents and item counts', async () => {
    const tree = await build();
    expect(tree.upperLevels.map((level) => level.nodeCount)).toEqual(upperLevelSizes(k, 3));
    let childCounts: Int32Array = counts;
    for (const level of tree.upperLevels) {
      expect(level.parentOfChild).toHaveLength(childCounts.length);
      expect(level.centroids).toHaveLength(level.nodeCount * dim);
      const expected = new Int32Array(level.nodeCount);
      childCounts.forEach((count, child) => {
        expect(level.parentOfChild[child]).toBeGreaterThanOrEqual(0);
        expect(level.parentOfChild[child]).toBeLessThan(level.nodeCount);
        expected[level.parentOfChild[child]] += count;
      });
      expect(level.itemCounts).toEqual(expected);
      childCounts = level.itemCounts;
    }
    expect((await buildHierarchy(centroids, k, dim, counts, { seed: 3, kernel, levels: 2 })).upperLevels.map((l) => l.nodeCount)).toEqual([8]);
    await expect(buildHierarchy(centroids, k, dim, counts.subarray(1), { seed: 3, kernel })).rejects.toThrow(RangeError);
  });

  it('gives quotas that sum to min(budget, total), never exceed a prototype, and are deterministic by seed', async () => {
    const tree = await build();
    const again = await build();
    expect(again.upperLevels.map((l) => l.parentOfChild)).toEqual(tree.upperLevels.map((l) => l.parentOfChild));
    for (const budget of [0, 1, 7, 100, Math.floor(total / 3), total - 1, total, total + 10]) {
      const quotas = hierarchicalQuotas(tree, budget);
      expect(sum(quotas)).toBe(Math.min(budget, total));
      counts.forEach((count, c) => {
        expect(quotas[c]).toBeGreaterThanOrEqual(0);
        expect(quotas[c]).toBeLessThanOrEqual(count);
      });
      expect(hierarchicalQuotas(again, budget)).toEqual(quotas);
    }
    expect(() => hierarchicalQuotas(tree, 1.5)).toThrow(RangeError);
  });

  it('splits top-down: the top level balances the budget, each node balances its quota over its children', async () => {
    const tree = await build();
    const budget = Math.floor(total / 4);
    const quotas = nodeQuotas(tree, hierarchicalQuotas(tree, budget));
    const top = tree.upperLevels.length;
    expect(quotas[top]).toEqual(balancedQuotas(tree.upperLevels[top - 1].itemCounts, budget));
    for (let l = top; l >= 1; l--) {
      const { parentOfChild, nodeCount } = tree.upperLevels[l - 1];
      const childCounts = l > 1 ? tree.upperLevels[l - 2].itemCounts : counts;
      for (let node = 0; node < nodeCount; node++) {
        const children = Array.from(parentOfChild.keys()).filter((child) => parentOfChild[child] === node);
        const split = balancedQuotas(Int32Array.from(children, (c) => childCounts[c]), quotas[l][node]);
        expect(Int32Array.from(children, (c) => quotas[l - 1][c])).toEqual(split);
      }
    }
  });
});

describe('balanced hierarchical sampling on a planted long tail', () => {
  // 10 well-separated concepts; the head has 10× the items of each tail concept. k-means at k = 40
  // tessellates each concept into prototypes roughly by mass, so the head owns many more of them.
  const concepts = 10;
  const tailSize = 100;
  const headFactor = 10;
  const dim = 32;
  const k = 40;
  const budgetFraction = 0.1;

  /** The planted points of concept 0 (the head) in full, and the first `tailSize` of every other. */
  function longTail(seed: number): { points: Float32Array; n: number; labels: Int32Array } {
    const planted = plantedClusters({ seed, clusters: concepts, perCluster: tailSize * headFactor, dim, noise: 0.6 });
    const kept: number[] = [];
    const taken = new Int32Array(concepts);
    for (let i = 0; i < planted.n; i++) {
      const concept = planted.labels[i];
      if (concept === 0 || taken[concept] < tailSize) {
        kept.push(i);
        taken[concept]++;
      }
    }
    const points = new Float32Array(kept.length * dim);
    kept.forEach((i, row) => points.set(planted.points.subarray(i * dim, (i + 1) * dim), row * dim));
    return { points, n: kept.length, labels: Int32Array.from(kept, (i) => planted.labels[i]) };
  }

  /**
   * Expected true-concept distribution of a selection taking `quotas[c]` items uniformly at random
   * from prototype c: each prototype's quota spread over the concepts of its items.
   */
  function conceptDistribution(quotas: Int32Array, cluster: Int32Array, counts: Int32Array, labels: Int32Array): Float64Array {
    const distribution = new Float64Array(concepts);
    for (let i = 0; i < labels.length; i++) distribution[labels[i]] += quotas[cluster[i]] / counts[cluster[i]];
    const selected = sum(distribution);
    return distribution.map((mass) => mass / selected);
  }

  /** Shannon entropy over ln(concepts): 1 for an even spread over the concepts, lower when skewed. */
  function normalisedEntropy(distribution: Float64Array): number {
    return -distribution.reduce((h, p) => h + (p > 0 ? p * Math.log(p) : 0), 0) / Math.log(concepts);
  }

  it.each([1, 2, 3])(
    'seed %i: at a 10% budget the head concept gets a smaller share, and the concept distribution a higher normalised entropy, than under random sampling or flat prototype balance',
    async (seed) => {
      const { points, n, labels } = longTail(seed);
      const fit = await fitKMeans(points, n, dim, { k, seed, kernel });
      const budget = Math.round(budgetFraction * n);
      const tree = await buildHierarchy(fit.centroids, k, dim, fit.counts, { seed, kernel });
      expect(tree.upperLevels).toHaveLength(2); // the default three levels at k = 40

      // The setup's premise: the head owns more prototypes than any tail concept.
      const headPrototypes = new Set(Array.from(labels.keys()).filter((i) => labels[i] === 0).map((i) => fit.cluster[i])).size;
      for (let concept = 1; concept < concepts; concept++) {
        const prototypes = new Set(Array.from(labels.keys()).filter((i) => labels[i] === concept).map((i) => fit.cluster[i])).size;
        expect(headPrototypes).toBeGreaterThan(prototypes);
      }

      // Uniform random sampling selects concepts in proportion to their sizes, in expectation.
      const random = conceptDistribution(fit.counts, fit.cluster, fit.counts, labels);
      const flat = conceptDistribution(balancedQuotas(fit.counts, budget), fit.cluster, fit.counts, labels);
      const hierarchical = conceptDistribution(hierarchicalQuotas(tree, budget), fit.cluster, fit.counts, labels);

      expect(hierarchical[0]).toBeLessThan(flat[0]);
      expect(hierarchical[0]).toBeLessThan(random[0]);
      expect(normalisedEntropy(hierarchical)).toBeGreaterThan(normalisedEntropy(flat));
      expect(normalisedEntropy(hierarchical)).toBeGreaterThan(normalisedEntropy(random));
      // The flat baseline is not a straw man: it already beats random sampling, only less so.
      expect(flat[0]).toBeLessThan(random[0]);
      expect(normalisedEntropy(flat)).toBeGreaterThan(normalisedEntropy(random));
    },
  );
});
