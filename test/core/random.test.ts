import { describe, expect, it } from 'vitest';
import { fnv1a32, mix32, randomKey, Rng } from '../../src/core/random.js';

/** FNV-1a over TextEncoder's UTF-8 bytes: an independent formulation of the same hash. */
function referenceFnv1a(text: string): number {
  let hash = 0x811c9dc5;
  for (const byte of new TextEncoder().encode(text)) hash = Number((BigInt(hash ^ byte) * 0x01000193n) & 0xffffffffn);
  return hash >>> 0;
}

describe('fnv1a32', () => {
  it('matches the published FNV-1a 32-bit test vectors', () => {
    expect(fnv1a32('')).toBe(0x811c9dc5);
    expect(fnv1a32('a')).toBe(0xe40c292c);
    expect(fnv1a32('foobar')).toBe(0xbf9cf968);
  });

  it('hashes the UTF-8 encoding, including astral and lone surrogates', () => {
    for (const text of ['é', 'naïve café', '中文标识', 'img-😀-01.jpg', 'lone \ud800 high', 'lone \udc00 low', 'end \ud83d', '\u07ff\u0800\uffff']) {
      expect(fnv1a32(text)).toBe(referenceFnv1a(text));
    }
  });
});

describe('Rng', () => {
  it('is deterministic per seed and differs across seeds', () => {
    const a = new Rng(42);
    const b = new Rng(42);
    const c = new Rng(43);
    const fromA = Array.from({ length: 100 }, () => a.nextUint32());
    const fromB = Array.from({ length: 100 }, () => b.nextUint32());
    const fromC = Array.from({ length: 100 }, () => c.nextUint32());
    expect(fromA).toEqual(fromB);
    expect(fromA).not.toEqual(fromC);
  });

  it('reduces seeds modulo 2^32 and rejects non-integers', () => {
    expect(new Rng(-1).nextUint32()).toBe(new Rng(0xffffffff).nextUint32());
    expect(() => new Rng(1.5)).toThrow(RangeError);
  });

  it('draws floats in [0, 1) with a uniform mean', () => {
    const rng = new Rng(7);
    let sum = 0;
    for (let i = 0; i < 100_000; i++) {
      const x = rng.next();
      expect(x >= 0 && x < 1).toBe(true);
      sum += x;
    }
    expect(Math.abs(sum / 100_000 - 0.5)).toBeLessThan(0.005);
  });

  it('draws bounded integers uniformly (chi-squared) and validates the bound', () => {
    const rng = new Rng(9);
    const bins = 10;
    const draws = 100_000;
    const counts = new Array<number>(bins).fill(0);
    for (let i = 0; i < draws; i++) counts[rng.nextInt(bins)]++;
    const expected = draws / bins;
    const chiSquared = counts.reduce((sum, c) => sum + (c - expected) ** 2 / expected, 0);
    // 9 degrees of freedom: P(χ² > 27.9) ≈ 0.001.
    expect(chiSquared).toBeLessThan(27.9);
    expect(new Rng(1).nextInt(1)).toBe(0);
    expect(() => rng.nextInt(0)).toThrow(RangeError);
    expect(() => rng.nextInt(2.5)).toThrow(RangeError);
  });
});

describe('randomKey', () => {
  it('is a bijection of the id hash for a fixed seed', () => {
    const keys = new Set<number>();
    for (let h = 0; h < 50_000; h++) keys.add(randomKey(3, h));
    expect(keys.size).toBe(50_000);
  });

  it('changes the order with the seed', () => {
    const hashes = Array.from({ length: 200 }, (_, i) => fnv1a32(`item-${i}`));
    const order = (seed: number) => [...hashes].sort((a, b) => randomKey(seed, a) - randomKey(seed, b));
    expect(order(1)).toEqual(order(1));
    expect(order(1)).not.toEqual(order(2));
  });

  it('mixes single-bit input changes into about half the output bits', () => {
    let flipped = 0;
    for (let x = 0; x < 1000; x++) {
      const diff = mix32(x) ^ mix32(x ^ 1);
      for (let bit = 0; bit < 32; bit++) flipped += (diff >>> bit) & 1;
    }
    expect(flipped / 1000).toBeGreaterThan(14);
    expect(flipped / 1000).toBeLessThan(18);
  });
});
