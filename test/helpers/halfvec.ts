import { Rng } from '../../src/core/random.js';

/** IEEE 754 binary16 rounding (nearest, ties to even) of a number, as pgvector's `halfvec` cast does. */
export function f16round(x: number): number {
  if (x === 0 || !Number.isFinite(x)) return x;
  const a = Math.abs(x);
  let e = Math.floor(Math.log2(a));
  if (a < 2 ** e) e--;
  if (a >= 2 ** (e + 1)) e++;
  const ulp = 2 ** (Math.max(e, -14) - 10); // below 2^-14: subnormal spacing 2^-24
  const q = a / ulp;
  let r = Math.floor(q);
  const frac = q - r;
  if (frac > 0.5 || (frac === 0.5 && r % 2 === 1)) r++;
  return Math.sign(x) * r * ulp;
}

/** What ingest stores for an embedding: float32 values, L2-normalised in float64, stored as float32. */
export function storedForm(values: ArrayLike<number>): Float32Array {
  const x = Float32Array.from(values as ArrayLike<number>);
  let squared = 0;
  for (const v of x) squared += v * v;
  const scale = 1 / Math.sqrt(squared);
  return x.map((v) => v * scale);
}

/** Cosine similarity in float64 of two float32 vectors (brute force, no normalisation assumed). */
export function cosine64(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return dot / Math.sqrt(na * nb);
}

export interface MisorderedPair {
  /** The query: on the halfvec grid and exactly unit (0.75 and seven 0.25, then zeros), so halfvec(probe) = probe. */
  probe: Float32Array;
  /** Nearer to the probe in halfvec arithmetic, farther in exact float32: what an index-only answer would return. */
  halfvecNearest: Float32Array;
  /** The exact nearest of the two. */
  exactNearest: Float32Array;
  /** Cosine distances of each to the probe, exact (float64 of the float32 values) and after halfvec rounding. */
  distances: { halfvecNearest: { exact: number; halfvec: number }; exactNearest: { exact: number; halfvec: number } };
}

/**
 * Two stored near-duplicates of a probe whose order by halfvec distance is the opposite of their
 * order by exact distance, each way by at least 2e-6 (20× pgvector's float32 rounding at these
 * sizes), both at similarity ≈ 0.9998. Found by a seeded search over perturbations of the probe's
 * eight non-zero components (the other components are zero, so the pair is the same for any dimension ≥ 8).
 */
export function halfvecMisorderedPair(dim: number): MisorderedPair {
  const width = 8;
  const probe8 = [0.75, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25];
  const rng = new Rng(2024);
  const candidates = Array.from({ length: 1500 }, () => {
    const stored = storedForm(probe8.map((v) => v + (rng.next() * 2 - 1) * 0.01));
    return { stored, exact: 1 - cosine64(stored, probe8), halfvec: 1 - cosine64(Array.from(stored, f16round), probe8) };
  });
  let best: { gap: number; h: (typeof candidates)[number]; e: (typeof candidates)[number] } | null = null;
  for (const h of candidates) {
    for (const e of candidates) {
      const gap = Math.min(h.exact - e.exact, e.halfvec - h.halfvec);
      if (!best || gap > best.gap) best = { gap, h, e };
    }
  }
  if (!best || best.gap < 2e-6) throw new Error(`no misordered pair with a 2e-6 margin (best ${best?.gap})`);
  const widen = (v: ArrayLike<number>) => {
    const out = new Float32Array(dim);
    out.set(Array.from(v).slice(0, width));
    return out;
  };
  return {
    probe: widen(probe8),
    halfvecNearest: widen(best.h.stored),
    exactNearest: widen(best.e.stored),
    distances: { halfvecNearest: { exact: best.h.exact, halfvec: best.h.halfvec }, exactNearest: { exact: best.e.exact, halfvec: best.e.halfvec } },
  };
}

/** A unit vector near `base`: base + Gaussian noise of norm ≈ `noise`, re-normalised (float32). */
export function nearCopy(base: Float32Array, noise: number, rng: Rng): Float32Array {
  const sigma = noise / Math.sqrt(base.length);
  const gaussian = () => Math.sqrt(-2 * Math.log(1 - rng.next())) * Math.cos(2 * Math.PI * rng.next());
  return storedForm(Array.from(base, (v) => v + sigma * gaussian()));
}
