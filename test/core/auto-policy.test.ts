import { describe, expect, it } from 'vitest';
import { AUTO_MIN_KEPT_PER_CLUSTER, AUTO_UNEVEN_CLUSTERS_CV, chooseAutoPolicy, imbalanceReport } from '../../src/core/auto-policy.js';

describe('order=auto: the rule', () => {
  const even = [0.05, 0.05, 0.05, 0.05];
  const uneven = [0.03, 0.05, 0.07, 0.09];
  const sizes = [1000, 1000, 1000, 1000];

  it(`draws at random, balanced by cluster, below ${AUTO_MIN_KEPT_PER_CLUSTER} kept per non-empty cluster`, () => {
    const below = chooseAutoPolicy(sizes, uneven, 4 * AUTO_MIN_KEPT_PER_CLUSTER - 1);
    expect(below).toMatchObject({ order: 'random', balance: 'cluster' });
    expect(below.keptPerCluster).toBeCloseTo(AUTO_MIN_KEPT_PER_CLUSTER - 0.25, 9);
    // Empty clusters do not count: the same budget over two clusters is plenty.
    expect(chooseAutoPolicy([1000, 0, 1000, 0], uneven, 4 * AUTO_MIN_KEPT_PER_CLUSTER - 1).order).toBe('hardest');
  });

  it(`keeps the hardest from ${AUTO_MIN_KEPT_PER_CLUSTER} per cluster on, balanced when the clusters' mean scores vary by a CV ≥ ${AUTO_UNEVEN_CLUSTERS_CV}`, () => {
    const unevenChoice = chooseAutoPolicy(sizes, uneven, 4 * AUTO_MIN_KEPT_PER_CLUSTER);
    expect(unevenChoice).toMatchObject({ order: 'hardest', balance: 'cluster' });
    // mean 0.06, population sd √0.0005 ≈ 0.02236: CV ≈ 0.3727
    expect(unevenChoice.clusterScoreCv).toBeCloseTo(Math.sqrt(0.0005) / 0.06, 9);
    expect(chooseAutoPolicy(sizes, even, 4 * AUTO_MIN_KEPT_PER_CLUSTER)).toMatchObject({ order: 'hardest', balance: 'none', clusterScoreCv: 0 });
  });
});

describe('imbalance report', () => {
  it('survival per non-empty cluster, its max/min and CV, and random sampling’s expected CV', () => {
    const report = imbalanceReport([100, 200, 0, 100], [10, 60, 0, 30])!;
    // survival 0.1, 0.3, 0.3 (the empty cluster left out); f = 100 / 400 = 0.25
    expect(report.minSurvival).toBeCloseTo(0.1, 12);
    expect(report.maxSurvival).toBeCloseTo(0.3, 12);
    expect(report.maxMinRatio).toBeCloseTo(3, 12);
    const mean = 0.7 / 3;
    const sd = Math.sqrt(((0.1 - mean) ** 2 + 2 * (0.3 - mean) ** 2) / 3);
    expect(report.survivalCv).toBeCloseTo(sd / mean, 12);
    const f = 0.25;
    expect(report.randomSurvivalCv).toBeCloseTo(Math.sqrt(((1 - f) / (f * 100) + (1 - f) / (f * 200) + (1 - f) / (f * 100)) / 3), 12);
    expect(imbalanceReport([10, 10], [0, 5])!.maxMinRatio).toBeNull();
    expect(imbalanceReport([10, 10], [0, 0])).toBeNull();
  });
});
