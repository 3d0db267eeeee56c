import { describe, expect, it } from 'vitest';
import { normalizeRows } from '../../src/core/normalize.js';

describe('normalizeRows', () => {
  it('scales every valid row to unit length without changing its direction', () => {
    const input = new Float32Array([3, 4, 0, -1, 1, 1, 1e-20, 0, 0, 2e30, 0, 0]);
    const { rows, invalidRows } = normalizeRows(input, 4, 3);
    expect(invalidRows.length).toBe(0);
    expect(Array.from(rows.subarray(0, 3))).toEqual([Math.fround(0.6), Math.fround(0.8), 0]);
    const third = 1 / Math.sqrt(3);
    for (const [j, expected] of [-third, third, third].entries()) expect(rows[3 + j]).toBeCloseTo(expected, 6);
    expect(Array.from(rows.subarray(6))).toEqual([1, 0, 0, 1, 0, 0]);
    expect(input[0]).toBe(3);
  });

  it('reports zero and non-finite rows and writes them as zeros instead of NaN', () => {
    const input = new Float32Array([0, 0, 1, 1, NaN, 1, 2, 2, Infinity, 0, 5, 0, 0, 0, 0, -Infinity, 1, 1]);
    const { rows, invalidRows } = normalizeRows(input, 6, 3);
    expect(Array.from(invalidRows)).toEqual([1, 2, 4, 5]);
    for (const bad of [1, 2, 4, 5]) expect(Array.from(rows.subarray(bad * 3, bad * 3 + 3))).toEqual([0, 0, 0]);
    expect(rows.some(Number.isNaN)).toBe(false);
    expect(Array.from(rows.subarray(0, 3))).toEqual([0, 0, 1]);
    expect(Array.from(rows.subarray(9, 12))).toEqual([0, 1, 0]);
  });

  it('normalises in place when given the input as output', () => {
    const data = new Float32Array([0, 2, 0, 0, 0, 0]);
    const { rows, invalidRows } = normalizeRows(data, 2, 3, data);
    expect(rows).toBe(data);
    expect(Array.from(data)).toEqual([0, 1, 0, 0, 0, 0]);
    expect(Array.from(invalidRows)).toEqual([1]);
  });

  it('rejects inconsistent sizes', () => {
    expect(() => normalizeRows(new Float32Array(5), 2, 3)).toThrow(RangeError);
    expect(() => normalizeRows(new Float32Array(6), 2, 3, new Float32Array(3))).toThrow(RangeError);
    expect(() => normalizeRows(new Float32Array(6), 2, 0)).toThrow(RangeError);
  });
});
