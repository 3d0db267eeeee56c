import { describe, expect, it } from 'vitest';
import { fnv1a32, randomKey, Rng } from '../../src/core/random.js';
import { budgetSize, clusterQuotas, decideKeep, select, SELECTION_ORDER_NAMES, selectWithRule, type SelectionInput, type SelectionOptions, type SelectionOrder } from '../../src/core/selection.js';

const ORDERS: SelectionOrder[] = SELECTION_ORDER_NAMES;

/** Items sorted by external id, with quantised scores so that ties are common. */
function dataset(n: number, clusters: number, seed: number): SelectionInput & { ids: string[] } {
  const rng = new Rng(seed);
  const ids = Array.from({ length: n }, (_, i) => `img-${String(i).padStart(7, '0')}`);
  return {
    ids,
    scores: Float32Array.from({ length: n }, () => Math.floor(rng.next() * 200) / 200),
    clusters: Int32Array.from({ length: n }, () => Math.min(clusters - 1, Math.floor(rng.next() ** 2 * clusters))),
    idHashes: Uint32Array.from(ids, fnv1a32),
  };
}

function expectDistinctIndices(selected: Int32Array, n: number): void {
  expect(new Set(selected).size).toBe(selected.length);
  for (const i of selected) expect(i >= 0 && i < n).toBe(true);
}

describe('budgetSize', () => {
  it('rounds fraction × N half up and clamps counts to N', () => {
    expect(budgetSize({ fraction: 0.5 }, 3)).toBe(2);
    expect(budgetSize({ fraction: 0.25 }, 6)).toBe(2);
    expect(budgetSize({ fraction: 0.1 }, 4)).toBe(0);
    expect(budgetSize({ fraction: 1 }, 7)).toBe(7);
    expect(budgetSize({ count: 5 }, 3)).toBe(3);
    expect(budgetSize({ count: 0 }, 3)).toBe(0);
  });

  it('rejects fractions outside (0, 1] and non-integer or negative counts', () => {
    for (const fraction of [0, -0.1, 1.01, Number.NaN]) expect(() => budgetSize({ fraction }, 10)).toThrow(RangeError);
    for (const count of [-1, 1.5, Number.NaN]) expect(() => budgetSize({ count }, 10)).toThrow(RangeError);
  });
});

describe('select: sizes', () => {
  const data = dataset(1003, 7, 1);
  const n = data.scores.length;
  for (const order of ORDERS) {
    for (const balance of ['none', 'cluster'] as const) {
      it(`${order} with balance=${balance} returns exactly the budget`, () => {
        for (const fraction of [0.001, 0.1, 0.25, 1 / 3, 0.5, 0.95, 1]) {
          const selected = select(data, { order, balance, budget: { fraction }, seed: 3 });
          expect(selected.length).toBe(Math.round(fraction * n));
          expectDistinctIndices(selected, n);
        }
        for (const count of [0, 1, 7, 500, n, n + 5]) {
          const selected = select(data, { order, balance, budget: { count }, seed: 3 });
          expect(selected.length).toBe(Math.min(count, n));
          expectDistinctIndices(selected, n);
        }
      });
    }
  }

  it('handles an empty dataset', () => {
    const empty = { scores: new Float32Array(0), clusters: new Int32Array(0), idHashes: new Uint32Array(0) };
    for (const order of ORDERS) expect(select(empty, { order, budget: { fraction: 0.5 }, balance: 'cluster' }).length).toBe(0);
  });
});

describe('select: orders', () => {
  const data = dataset(2000, 5, 2);
  const indices = Array.from(data.scores.keys());

  it('hardest is score descending and easiest score ascending, ties by index', () => {
    const hardest = select(data, { order: 'hardest', budget: { count: 600 } });
    const easiest = select(data, { order: 'easiest', budget: { count: 600 } });
    const byHardest = [...indices].sort((a, b) => data.scores[b] - data.scores[a] || a - b);
    const byEasiest = [...indices].sort((a, b) => data.scores[a] - data.scores[b] || a - b);
    expect(Array.from(hardest)).toEqual(byHardest.slice(0, 600));
    expect(Array.from(easiest)).toEqual(byEasiest.slice(0, 600));
  });

  it('breaks all-equal scores by index', () => {
    const flat = { scores: new Float32Array(6).fill(0.5), clusters: new Int32Array(6), idHashes: Uint32Array.from([9, 8, 7, 6, 5, 4]) };
    expect(Array.from(select(flat, { order: 'hardest', budget: { count: 3 } }))).toEqual([0, 1, 2]);
    expect(Array.from(select(flat, { order: 'easiest', budget: { count: 3 } }))).toEqual([0, 1, 2]);
  });

  it('random is a function of (seed, id hash): same seed same order, other seeds differ', () => {
    const a = select(data, { order: 'random', budget: { fraction: 0.3 }, seed: 5 });
    const b = select(data, { order: 'random', budget: { fraction: 0.3 }, seed: 5 });
    const c = select(data, { order: 'random', budget: { fraction: 0.3 }, seed: 6 });
    expect(Array.from(a)).toEqual(Array.from(b));
    expect(Array.from(a)).not.toEqual(Array.from(c));
    // Roughly a third of the first selection reappears under another seed, as chance predicts.
    const overlap = Array.from(c).filter((i) => new Set(a).has(i)).length;
    expect(overlap / a.length).toBeGreaterThan(0.2);
    expect(overlap / a.length).toBeLessThan(0.4);
    for (let r = 1; r < a.length; r++) expect(randomKey(5, data.idHashes[a[r - 1]])).toBeLessThanOrEqual(randomKey(5, data.idHashes[a[r]]));
  });

  it('random keeps the relative order of existing items when the dataset grows', () => {
    const grown = dataset(3000, 5, 2);
    // Interleave new ids: the grown dataset's items are still sorted by id, so indices shift.
    const mergedIds = [...data.ids, ...grown.ids.slice(2000).map((id) => `${id}-new`)].sort();
    const merged = {
      scores: new Float32Array(mergedIds.length),
      clusters: new Int32Array(mergedIds.length),
      idHashes: Uint32Array.from(mergedIds, fnv1a32),
    };
    const before = Array.from(select(data, { order: 'random', budget: { fraction: 1 }, seed: 1 }), (i) => data.ids[i]);
    const after = Array.from(select(merged, { order: 'random', budget: { fraction: 1 }, seed: 1 }), (i) => mergedIds[i]);
    const existing = new Set(data.ids);
    expect(after.filter((id) => existing.has(id))).toEqual(before);
  });

  it('random breaks id-hash collisions by index', () => {
    const colliding = { scores: new Float32Array(4), clusters: new Int32Array(4), idHashes: Uint32Array.from([7, 7, 7, 7]) };
    expect(Array.from(select(colliding, { order: 'random', budget: { count: 4 }, seed: 99 }))).toEqual([0, 1, 2, 3]);
  });
});

describe('select: balance = cluster', () => {
  const data = dataset(2501, 9, 3);
  const n = data.scores.length;
  const sizes = new Array<number>(9).fill(0);
  for (const c of data.clusters) sizes[c]++;

  // hierarchical balances by the prototype hierarchy instead (evenly, not proportionally): test/core/hierarchical.test.ts.
  for (const order of ORDERS.filter((o) => o !== 'hierarchical')) {
    it(`${order} keeps floor or ceil of the same fraction of every cluster`, () => {
      for (const budget of [{ fraction: 0.1 }, { fraction: 0.37 }, { count: 1 }, { count: 1234 }]) {
        const size = budgetSize(budget, n);
        const selected = select(data, { order, budget, balance: 'cluster', seed: 4 });
        expect(selected.length).toBe(size);
        const perCluster = new Array<number>(9).fill(0);
        for (const i of selected) perCluster[data.clusters[i]]++;
        sizes.forEach((clusterSize, c) => {
          const share = (size * clusterSize) / n;
          expect(perCluster[c] === Math.floor(share) || perCluster[c] === Math.ceil(share)).toBe(true);
        });
      }
    });
  }

  it('hardest takes the hardest items of each cluster and keeps the global hardest-first order', () => {
    const selected = select(data, { order: 'hardest', budget: { fraction: 0.3 }, balance: 'cluster' });
    const chosen = new Set(selected);
    for (let c = 0; c < 9; c++) {
      const members = Array.from(data.scores.keys()).filter((i) => data.clusters[i] === c);
      members.sort((a, b) => data.scores[b] - data.scores[a] || a - b);
      const taken = members.filter((i) => chosen.has(i)).length;
      expect(members.slice(0, taken).every((i) => chosen.has(i))).toBe(true);
    }
    for (let r = 1; r < selected.length; r++) {
      const [a, b] = [selected[r - 1], selected[r]];
      expect(data.scores[a] > data.scores[b] || (data.scores[a] === data.scores[b] && a < b)).toBe(true);
    }
  });

  it('gives leftover quota to the largest remainders, ties to the lower cluster id', () => {
    expect(Array.from(clusterQuotas(new Int32Array([0, 1, 2]), 1))).toEqual([1, 0, 0]);
    expect(Array.from(clusterQuotas(new Int32Array([0, 1, 2]), 2))).toEqual([1, 1, 0]);
    // Sizes 5, 3, 2 with budget 5: shares 2.5, 1.5, 1 → floors 2, 1, 1 and one left for cluster 0 (remainder tie with 1).
    expect(Array.from(clusterQuotas(new Int32Array([0, 0, 0, 0, 0, 1, 1, 1, 2, 2]), 5))).toEqual([3, 1, 1]);
    // Sizes 1, 6 with budget 3: shares 3/7 and 18/7 → floors 0, 2; remainders 3 and 4 → cluster 1.
    expect(Array.from(clusterQuotas(new Int32Array([1, 1, 0, 1, 1, 1, 1]), 3))).toEqual([0, 3]);
  });

  it('rejects negative cluster ids', () => {
    const bad = { scores: new Float32Array(2), clusters: new Int32Array([0, -1]), idHashes: new Uint32Array(2) };
    expect(() => select(bad, { order: 'hardest', budget: { count: 1 }, balance: 'cluster' })).toThrow(RangeError);
  });
});

describe('select: stratified (CCS)', () => {
  /** 100 items in 4 score bins over [0, 1] of sizes 10, 20, 30, 40, plus the range's end points. */
  function binnedDataset(): SelectionInput {
    const scores: number[] = [0, 1];
    const sizes = [10, 20, 30, 40];
    sizes.forEach((size, b) => {
      // Bins are [0, .25), [.25, .5), [.5, .75), [.75, 1]; the end points already sit in bins 0 and 3.
      const count = size - (b === 0 || b === 3 ? 1 : 0);
      for (let j = 0; j < count; j++) scores.push(b * 0.25 + 0.05 + (0.15 * j) / count);
    });
    const n = scores.length;
    return {
      scores: Float32Array.from(scores),
      clusters: new Int32Array(n),
      idHashes: Uint32Array.from({ length: n }, (_, i) => fnv1a32(`id-${i}`)),
    };
  }

  function perBin(data: SelectionInput, selected: Int32Array): number[] {
    const counts = [0, 0, 0, 0];
    for (const i of selected) counts[Math.min(3, Math.floor(data.scores[i] / 0.25))]++;
    return counts;
  }

  const stratified = (budget: SelectionOptions['budget'], extra: Partial<SelectionOptions> = {}): SelectionOptions => ({
    order: 'stratified',
    budget,
    bins: 4,
    outlierFraction: 0,
    seed: 1,
    ...extra,
  });

  it('fills the budget evenly over bins, smallest bins first', () => {
    const data = binnedDataset();
    // 40 over sizes 10, 20, 30, 40: ⌊40/4⌋ = 10 each.
    expect(perBin(data, select(data, stratified({ count: 40 })))).toEqual([10, 10, 10, 10]);
    // 41: 10, ⌊31/3⌋ = 10, ⌊21/2⌋ = 10, and the largest bin takes the remaining 11.
    expect(perBin(data, select(data, stratified({ count: 41 })))).toEqual([10, 10, 10, 11]);
    // 70: the 10-bin is exhausted (10), then ⌊60/3⌋ = 20, ⌊40/2⌋ = 20, 20.
    expect(perBin(data, select(data, stratified({ count: 70 })))).toEqual([10, 20, 20, 20]);
    // 90: 10, ⌊80/3⌋ = 26 capped at 20, ⌊60/2⌋ = 30, 30.
    expect(perBin(data, select(data, stratified({ count: 90 })))).toEqual([10, 20, 30, 30]);
  });

  it('covers every non-empty bin once the budget allows', () => {
    const rng = new Rng(12);
    // Skewed scores: most mass is easy, a thin tail spreads over the upper bins.
    const n = 5000;
    const scores = Float32Array.from({ length: n }, () => rng.next() ** 6);
    const data = { scores, clusters: new Int32Array(n), idHashes: Uint32Array.from({ length: n }, (_, i) => fnv1a32(`x${i}`)) };
    const bins = 50;
    const outlierFraction = 0.1;
    const hardestFirst = Array.from(scores.keys()).sort((a, b) => scores[b] - scores[a] || a - b);
    const kept = hardestFirst.slice(Math.floor(outlierFraction * n));
    const low = Math.min(...kept.map((i) => scores[i]));
    const high = Math.max(...kept.map((i) => scores[i]));
    const binOf = (s: number) => Math.min(bins - 1, Math.floor(((s - low) / (high - low)) * bins));
    const nonEmpty = new Set(kept.map((i) => binOf(scores[i])));
    expect(nonEmpty.size).toBeGreaterThan(20);
    const selected = select(data, { order: 'stratified', budget: { count: nonEmpty.size }, bins, outlierFraction, seed: 2 });
    expect(new Set(Array.from(selected, (i) => binOf(scores[i])))).toEqual(nonEmpty);
    // An easiest-first selection of the same size covers only the lowest bins.
    const easiest = select(data, { order: 'easiest', budget: { count: nonEmpty.size } });
    expect(new Set(Array.from(easiest, (i) => binOf(scores[i]))).size).toBeLessThan(5);
  });

  it('sets aside the hardest β fraction, taking them back least hard first only when the budget needs them', () => {
    const data = binnedDataset();
    const hardestFirst = Array.from(data.scores.keys()).sort((a, b) => data.scores[b] - data.scores[a] || a - b);
    const outliers = hardestFirst.slice(0, 10);
    const without = new Set(select(data, stratified({ count: 90 }, { outlierFraction: 0.1 })));
    expect(outliers.some((i) => without.has(i))).toBe(false);
    const beyond = new Set(select(data, stratified({ count: 95 }, { outlierFraction: 0.1 })));
    expect(beyond.size).toBe(95);
    // All 90 non-outliers, then the five least hard outliers.
    expect(hardestFirst.slice(10).every((i) => beyond.has(i))).toBe(true);
    expect(outliers.filter((i) => beyond.has(i))).toEqual(outliers.slice(5));
  });

  it('samples within bins by seed and outputs in the seeded random order', () => {
    const data = binnedDataset();
    const a = select(data, stratified({ count: 40 }, { seed: 1 }));
    const b = select(data, stratified({ count: 40 }, { seed: 1 }));
    const c = select(data, stratified({ count: 40 }, { seed: 2 }));
    expect(Array.from(a)).toEqual(Array.from(b));
    expect(new Set(a)).not.toEqual(new Set(c));
    for (let r = 1; r < a.length; r++) expect(randomKey(1, data.idHashes[a[r - 1]])).toBeLessThan(randomKey(1, data.idHashes[a[r]]));
  });

  it('puts every item in one bin when all kept scores are equal', () => {
    const flat = { scores: new Float32Array(10).fill(0.3), clusters: new Int32Array(10), idHashes: Uint32Array.from({ length: 10 }, (_, i) => i) };
    expect(select(flat, { order: 'stratified', budget: { count: 4 }, seed: 1 }).length).toBe(4);
  });

  it('validates its parameters', () => {
    const data = binnedDataset();
    expect(() => select(data, stratified({ count: 5 }, { bins: 0 }))).toThrow(RangeError);
    expect(() => select(data, stratified({ count: 5 }, { outlierFraction: 1 }))).toThrow(RangeError);
    expect(() => select(data, stratified({ count: 5 }, { outlierFraction: -0.1 }))).toThrow(RangeError);
  });
});

describe('select: moderate', () => {
  const data = dataset(2001, 4, 11);
  const median = (values: number[]) => {
    const sorted = [...values].sort((a, b) => a - b);
    const mid = sorted.length >> 1;
    return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  };
  const byDistance = (indices: number[], center: (i: number) => number) =>
    [...indices].sort((a, b) => Math.fround(Math.abs(data.scores[a] - center(a))) - Math.fround(Math.abs(data.scores[b] - center(b))) || a - b);

  it('keeps the scores closest to the median, both extremes dropped, ties by index', () => {
    const all = Array.from(data.scores.keys());
    const m = median(Array.from(data.scores));
    const kept = select(data, { order: 'moderate', budget: { fraction: 0.4 } });
    expect(Array.from(kept)).toEqual(byDistance(all, () => m).slice(0, kept.length));
    const keptScores = Array.from(kept, (i) => data.scores[i]);
    expect(Math.min(...keptScores)).toBeGreaterThan(Math.min(...data.scores));
    expect(Math.max(...keptScores)).toBeLessThan(Math.max(...data.scores));
  });

  it('with balance=cluster measures each item against its own cluster’s median', () => {
    const members = (c: number) => Array.from(data.scores.keys()).filter((i) => data.clusters[i] === c);
    const medians = [0, 1, 2, 3].map((c) => median(members(c).map((i) => data.scores[i])));
    const kept = new Set(select(data, { order: 'moderate', budget: { fraction: 0.3 }, balance: 'cluster' }));
    for (let c = 0; c < 4; c++) {
      const inCluster = members(c);
      const quota = inCluster.filter((i) => kept.has(i)).length;
      expect(new Set(byDistance(inCluster, () => medians[c]).slice(0, quota))).toEqual(new Set(inCluster.filter((i) => kept.has(i))));
    }
  });
});

describe('select: validation', () => {
  it('rejects mismatched lengths, NaN scores and non-integer seeds', () => {
    const ok = { scores: new Float32Array(3), clusters: new Int32Array(3), idHashes: new Uint32Array(3) };
    expect(() => select({ ...ok, clusters: new Int32Array(2) }, { order: 'hardest', budget: { count: 1 } })).toThrow(RangeError);
    expect(() => select({ ...ok, scores: new Float32Array([0, Number.NaN, 1]) }, { order: 'hardest', budget: { count: 1 } })).toThrow(RangeError);
    expect(() => select(ok, { order: 'random', budget: { count: 1 }, seed: 0.5 })).toThrow(RangeError);
    expect(() => select(ok, { order: 'bogus' as SelectionOrder, budget: { count: 1 } })).toThrow(RangeError);
  });
});

describe('select at scale', () => {
  it('selects from a million items quickly with every policy', () => {
    const n = 1_000_000;
    const rng = new Rng(1);
    const input = {
      scores: Float32Array.from({ length: n }, () => rng.next()),
      clusters: Int32Array.from({ length: n }, () => rng.nextInt(1000)),
      idHashes: Uint32Array.from({ length: n }, () => rng.nextUint32()),
    };
    for (const order of ORDERS) {
      for (const balance of ['none', 'cluster'] as const) {
        const started = performance.now();
        const selected = select(input, { order, balance, budget: { fraction: 0.3 }, seed: 1 });
        const seconds = (performance.now() - started) / 1000;
        expect(selected.length).toBe(300_000);
        // Generous for a shared 2-core machine; the typical time is well under a second.
        expect(seconds).toBeLessThan(4);
      }
    }
  });
});

describe('decideKeep: the selection boundary applied to single items', () => {
  /** Continuous scores, so an item's decision is never a tie with another item's score. */
  function continuous(n: number, clusters: number, seed: number): SelectionInput {
    const rng = new Rng(seed);
    const ids = Array.from({ length: n }, (_, i) => `x-${String(i).padStart(6, '0')}`);
    return {
      scores: Float32Array.from({ length: n }, () => rng.next()),
      clusters: Int32Array.from({ length: n }, () => Math.floor(rng.next() * clusters)),
      idHashes: Uint32Array.from(ids, fnv1a32),
    };
  }

  for (const order of ORDERS) {
    for (const balance of ['none', 'cluster'] as const) {
      for (const fraction of [0.05, 0.3, 0.85]) {
        it(`${order}, balance ${balance}, fraction ${fraction}: agrees with select on every stored item`, () => {
          const input = continuous(3000, 7, 11);
          const { chosen, rule } = selectWithRule(input, { order, balance, budget: { fraction }, seed: 5 });
          expect(chosen).toEqual(select(input, { order, balance, budget: { fraction }, seed: 5 }));
          const kept = new Uint8Array(input.scores.length);
          for (const i of chosen) kept[i] = 1;
          let disagreements = 0;
          for (let i = 0; i < input.scores.length; i++) {
            if (decideKeep(rule, input.scores[i], input.clusters[i], input.idHashes[i]) !== (kept[i] === 1)) disagreements++;
          }
          expect(disagreements).toBe(0);
        });
      }
    }
  }

  it('keeps items of a cluster nobody is in yet, and nothing under a zero budget', () => {
    const input = continuous(500, 3, 2);
    const { rule } = selectWithRule(input, { order: 'hardest', balance: 'cluster', budget: { fraction: 0.5 } });
    expect(decideKeep(rule, 0, 9, 123)).toBe(true);
    const none = selectWithRule(input, { order: 'hardest', budget: { count: 0 } }).rule;
    expect(decideKeep(none, 1.9, 0, 123)).toBe(false);
  });

  it('hardest keeps a new item iff it is at least as hard as the last kept one', () => {
    const input = continuous(1000, 1, 3);
    const { chosen, rule } = selectWithRule(input, { order: 'hardest', budget: { fraction: 0.3 } });
    const bar = Math.min(...Array.from(chosen, (i) => input.scores[i]));
    expect(decideKeep(rule, bar + 1e-6, 0, 1)).toBe(true);
    expect(decideKeep(rule, bar - 1e-6, 0, 1)).toBe(false);
  });
});
