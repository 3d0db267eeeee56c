import { describe, expect, it } from 'vitest';
import { fitStandardizer, lbfgs, SoftmaxRegression, standardize } from '../../bench/eval/logreg.js';
import { parseIdx } from '../../bench/eval/fashion-mnist.js';
import { Rng } from '../../src/core/random.js';

/** Reference loss sum and gradient sums in plain JS (float64). */
function reference(x: Float32Array, labels: number[], n: number, d: number, c: number, w: Float32Array, b: Float32Array) {
  const gw = new Float64Array(d * c);
  const gb = new Float64Array(c);
  let nll = 0;
  for (let i = 0; i < n; i++) {
    const z = Array.from({ length: c }, (_, k) => {
      let s = b[k];
      for (let j = 0; j < d; j++) s += x[i * d + j] * w[j * c + k];
      return s;
    });
    const m = Math.max(...z);
    const lse = m + Math.log(z.reduce((s, v) => s + Math.exp(v - m), 0));
    nll += lse - z[labels[i]];
    for (let k = 0; k < c; k++) {
      const g = Math.exp(z[k] - lse) - (k === labels[i] ? 1 : 0);
      gb[k] += g;
      for (let j = 0; j < d; j++) gw[j * c + k] += x[i * d + j] * g;
    }
  }
  return { nll, gw, gb };
}

function toyData(n: number, d: number, c: number, seed: number) {
  const rng = new Rng(seed);
  const centres = Array.from({ length: c }, () => Array.from({ length: d }, () => 3 * (rng.next() - 0.5)));
  const x = new Float32Array(n * d);
  const labels: number[] = [];
  for (let i = 0; i < n; i++) {
    const k = i % c;
    labels.push(k);
    for (let j = 0; j < d; j++) x[i * d + j] = centres[k][j] + (rng.next() - 0.5);
  }
  return { x, labels };
}

describe('softmax regression (ORT graphs)', () => {
  it('computes the same loss and gradient as a plain-JS reference, across row blocks', async () => {
    const n = 37;
    const d = 5;
    const c = 4;
    const { x, labels } = toyData(n, d, c, 3);
    const rng = new Rng(9);
    const w = Float32Array.from({ length: d * c }, () => rng.next() - 0.5);
    const b = Float32Array.from({ length: c }, () => rng.next() - 0.5);
    const y = new Float32Array(n * c);
    labels.forEach((k, i) => (y[i * c + k] = 1));
    const model = await SoftmaxRegression.create(1);
    try {
      const got = await model.lossAndGradient(x, y, n, d, c, w, b, 8);
      const want = reference(x, labels, n, d, c, w, b);
      expect(got.nll).toBeCloseTo(want.nll, 3);
      for (let i = 0; i < d * c; i++) expect(got.gw[i]).toBeCloseTo(want.gw[i], 4);
      for (let i = 0; i < c; i++) expect(got.gb[i]).toBeCloseTo(want.gb[i], 4);
    } finally {
      await model.dispose();
    }
  });

  it('fits separable clusters to a converged optimum and predicts them', async () => {
    const n = 400;
    const d = 8;
    const c = 3;
    const { x, labels } = toyData(n, d, c, 5);
    const rows = Array.from({ length: n }, (_, i) => i);
    const s = fitStandardizer(x, d, rows);
    const xs = standardize(x, d, rows, s);
    const model = await SoftmaxRegression.create(1);
    try {
      const fit = await model.fit(xs, labels, n, d, c, { lambda: 1e-2, maxIterations: 200, gtol: 1e-6, ftol: 0 });
      expect(fit.converged).toBe(true);
      expect(fit.gradMax).toBeLessThanOrEqual(1e-6);
      const predicted = await model.predict(xs, n, d, c, fit.w, fit.b);
      const correct = labels.filter((k, i) => predicted[i] === k).length;
      expect(correct / n).toBeGreaterThan(0.98);
    } finally {
      await model.dispose();
    }
  });
});

describe('lbfgs', () => {
  it('minimises an ill-conditioned quadratic', async () => {
    const scales = [1, 10, 100, 1000];
    const target = [1, -2, 3, -4];
    const result = await lbfgs(
      async (t) => ({
        f: 0.5 * scales.reduce((s, a, i) => s + a * (t[i] - target[i]) ** 2, 0),
        g: Float64Array.from(scales, (a, i) => a * (t[i] - target[i])),
      }),
      new Float64Array(4),
      { maxIterations: 200, gtol: 1e-9, ftol: 0, memory: 5 },
    );
    expect(result.reason).toBe('gtol');
    for (let i = 0; i < 4; i++) expect(result.theta[i]).toBeCloseTo(target[i], 6);
  });
});

describe('standardizer', () => {
  it('centres and scales the chosen rows', () => {
    const x = Float32Array.from([1, 10, 3, 30, 100, 100]);
    const s = fitStandardizer(x, 2, [0, 1]);
    expect(Array.from(s.mean)).toEqual([2, 20]);
    const out = standardize(x, 2, [0, 1], s);
    expect(Array.from(out)).toEqual([-1, -1, 1, 1]);
  });
});

describe('parseIdx', () => {
  it('reads the header and data of a rank-3 unsigned-byte file', () => {
    const bytes = Uint8Array.from([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2, 5, 6, 7, 8]);
    const { dims, data } = parseIdx(bytes);
    expect(dims).toEqual([2, 1, 2]);
    expect(Array.from(data)).toEqual([5, 6, 7, 8]);
  });

  it('rejects wrong magic, element types and lengths', () => {
    expect(() => parseIdx(Uint8Array.from([1, 0, 8, 1, 0, 0, 0, 1, 0]))).toThrow(/magic/);
    expect(() => parseIdx(Uint8Array.from([0, 0, 9, 1, 0, 0, 0, 1, 0]))).toThrow(/unsigned byte/);
    expect(() => parseIdx(Uint8Array.from([0, 0, 8, 1, 0, 0, 0, 2, 0]))).toThrow(/bytes/);
  });
});
