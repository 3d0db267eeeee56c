import { describe, expect, it } from 'vitest';
import { fitSampleSize, REFIT_DEFAULTS, rescoreParts } from '../../src/service/refit.js';

describe('how a refit bounds its memory', () => {
  it('fits on every item of a small dataset and on ~512 per centroid of a large one, within the byte budget', () => {
    expect(fitSampleSize(10_000, 100, 256)).toBe(10_000);
    expect(fitSampleSize(10_000_000, 1000, 256)).toBe(512_000);
    // 512 MiB of 2,048-d float32 vectors: 65,536 rows, fewer than 512 × 1000.
    expect(fitSampleSize(10_000_000, 1000, 2048)).toBe(65_536);
    // Never fewer than k, whatever the budget says.
    expect(fitSampleSize(10_000_000, 1000, 256, { ...REFIT_DEFAULTS, sampleBytes: 1024 })).toBe(1000);
  });

  it('splits the rescore into id ranges that cover the dataset once', () => {
    const parts = rescoreParts(3, { n: 1_000_000, minId: 17n, maxId: 1_000_016n }, 100_000);
    expect(parts).toHaveLength(10);
    expect(parts[0].from).toBe('17');
    expect(parts.at(-1)!.to).toBe('1000017');
    for (let p = 1; p < parts.length; p++) expect(parts[p].from).toBe(parts[p - 1].to);
    expect(parts.every((p) => p.version === 3)).toBe(true);
    // One item: one part holding it.
    expect(rescoreParts(1, { n: 1, minId: 5n, maxId: 5n }, 100_000)).toEqual([{ version: 1, from: '5', to: '6' }]);
    // Sparse ids (other datasets in between): still about n / partItems parts, none empty of range.
    const sparse = rescoreParts(1, { n: 250_000, minId: 1n, maxId: 9_000_000_000n }, 100_000);
    expect(sparse).toHaveLength(3);
  });
});
