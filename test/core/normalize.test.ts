import { describe, expect, it } from 'vitest';
import { normalizeInto } from '../../src/core/normalize.js';

describe('normalizeInto', () => {
  it('writes each valid vector at its offset, scaled to unit length without changing its direction', () => {
    const out = new Float32Array(12);
    for (const [i, v] of [[3, 4, 0], [-1, 1, 1], [1e-20, 0, 0], [2e30, 0, 0]].entries()) expect(normalizeInto(v, 3, 'd', out, i * 3)).toBeNull();
    expect(Array.from(out.subarray(0, 3))).toEqual([Math.fround(0.6), Math.fround(0.8), 0]);
    const third = 1 / Math.sqrt(3);
    for (const [j, expected] of [-third, third, third].entries()) expect(out[3 + j]).toBeCloseTo(expected, 6);
    for (const [j, expected] of [1, 0, 0, 1, 0, 0].entries()) expect(out[6 + j]).toBeCloseTo(expected, 6);
  });

  it('names the problem of a vector it cannot normalise', () => {
    const out = new Float32Array(3);
    expect(normalizeInto([1, 2], 3, 'd', out, 0)?.code).toBe('DIMENSION_MISMATCH');
    expect(normalizeInto(undefined, 3, 'd', out, 0)?.code).toBe('DIMENSION_MISMATCH');
    expect(normalizeInto([1, NaN, 1], 3, 'd', out, 0)?.code).toBe('NON_FINITE_VALUE');
    expect(normalizeInto([1, Infinity, 1], 3, 'd', out, 0)?.code).toBe('NON_FINITE_VALUE');
    // Finite in float64, ±Infinity in float32.
    expect(normalizeInto([1, 3.5e38, 1], 3, 'd', out, 0)?.code).toBe('NON_FINITE_VALUE');
    expect(normalizeInto([0, 0, 0], 3, 'd', out, 0)?.code).toBe('ZERO_VECTOR');
  });

  it('gives Float32Array input (binary ingest) the same results and problems as number arrays', () => {
    const rows = [[3, 4, 0], [-1, 1, 1], [1e-30, 0, 3e-30], [3e38, 3e38, -3e38], [0, 0, 0], [1, NaN, 1], [1, 1, -Infinity]];
    for (const row of rows) {
      const fromNumbers = new Float32Array(6).fill(7);
      const fromFloats = new Float32Array(6).fill(7);
      const a = normalizeInto(row, 3, 'd', fromNumbers, 3);
      const b = normalizeInto(Float32Array.from(row), 3, 'd', fromFloats, 3);
      expect(b).toEqual(a);
      if (a === null) expect(Array.from(fromFloats)).toEqual(Array.from(fromNumbers));
    }
    expect(normalizeInto(Float32Array.from([1, 1, NaN]), 3, 'd', new Float32Array(3), 0)?.message).toMatch(/value 2 /);
    expect(normalizeInto(new Float32Array(2), 3, 'd', new Float32Array(3), 0)?.code).toBe('DIMENSION_MISMATCH');
  });
});
