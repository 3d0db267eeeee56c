import { describe, expect, it } from 'vitest';
import { Rng } from '../../src/core/random.js';
import { argsort, floatSortKeys, identity, sortByKey } from '../../src/core/sort.js';

describe('sortByKey', () => {
  it('sorts stably by key, matching a comparison sort with index tie-breaks', () => {
    const rng = new Rng(11);
    for (const [length, range] of [[0, 1], [1, 1], [1000, 5], [5000, 2 ** 32], [3000, 70_000]] as const) {
      const keys = Uint32Array.from({ length }, () => Math.floor(rng.next() * range));
      const sorted = sortByKey(identity(length), keys);
      const expected = Array.from({ length }, (_, i) => i).sort((a, b) => keys[a] - keys[b] || a - b);
      expect(Array.from(sorted)).toEqual(expected);
    }
  });

  it('sorts a subset of items, keeping their given order among ties', () => {
    const keys = new Uint32Array([5, 1, 5, 1, 0, 5]);
    expect(Array.from(sortByKey(new Int32Array([5, 2, 0, 3]), keys))).toEqual([3, 5, 2, 0]);
  });
});

describe('floatSortKeys / argsort', () => {
  it('orders floats numerically, with −0 equal to +0', () => {
    const values = new Float32Array([0.5, -2, Infinity, -0, 0, -Infinity, 1e-30, -1e-30, 3, 0.5]);
    const ascending = Array.from(argsort(values));
    const expected = Array.from(values.keys()).sort((a, b) => values[a] - values[b] || a - b);
    expect(ascending).toEqual(expected);
    const keys = floatSortKeys(values, false);
    expect(keys[3]).toBe(keys[4]);
  });

  it('sorts descending with ties still by ascending index', () => {
    const values = new Float32Array([1, 3, 2, 3, 1, -1]);
    expect(Array.from(argsort(values, true))).toEqual([1, 3, 2, 0, 4, 5]);
  });
});
