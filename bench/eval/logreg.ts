/**
 * Multinomial logistic regression (softmax, L2 on the weights, not the bias), fitted full-batch with
 * L-BFGS. The data-sized work — logits X·W, the cross-entropy, and the gradient Xᵀ(P − Y) — runs in
 * one onnxruntime graph built in code with onnx-proto (as src/kernels/graphs.ts does), over row
 * blocks; only the d·c parameters live in JS (Float64).
 *
 * Objective: f(W, b) = (1/n) Σᵢ −log softmax(xᵢW + b)[yᵢ] + (λ/2)‖W‖².
 * Features are standardised (per-column mean and standard deviation of the training subset) before
 * fitting; the same transform is applied to the evaluation set.
 */
import onnxProto from 'onnx-proto';
import type { onnx as Onnx } from 'onnx-proto';
import { InferenceSession, Tensor } from 'onnxruntime-node';

const { onnx } = onnxProto;
const { FLOAT, INT32, INT64 } = onnx.TensorProto.DataType;
const AttributeType = onnx.AttributeProto.AttributeType;

const tensorInfo = (name: string, elemType: number, dims: string[]): Onnx.IValueInfoProto => ({
  name,
  type: { tensorType: { elemType, shape: { dim: dims.map((dimParam) => ({ dimParam })) } } },
});
const intAttr = (name: string, i: number): Onnx.IAttributeProto => ({ name, type: AttributeType.INT, i });

function encodeModel(graph: Onnx.IGraphProto): Uint8Array {
  return onnx.ModelProto.encode({ irVersion: 8, opsetImport: [{ domain: '', version: 17 }], producerName: 'protoprune-eval', graph }).finish();
}

/**
 * `x[n,d]`, `y[n,c]` (one-hot), `w[d,c]`, `b[c]` → `nll[]` (Σ −log p of the true class), `gw[d,c]` =
 * xᵀ(p − y) and `gb[c]` = Σ (p − y): sums over the block, not means.
 */
export function lossGradModel(): Uint8Array {
  return encodeModel({
    name: 'softmax_loss_grad',
    initializer: [{ name: 'rows', dataType: INT64, dims: [1], int64Data: [0] }],
    input: [tensorInfo('x', FLOAT, ['n', 'd']), tensorInfo('y', FLOAT, ['n', 'c']), tensorInfo('w', FLOAT, ['d', 'c']), tensorInfo('b', FLOAT, ['c'])],
    output: [tensorInfo('nll', FLOAT, []), tensorInfo('gw', FLOAT, ['d', 'c']), tensorInfo('gb', FLOAT, ['c'])],
    node: [
      { opType: 'Gemm', input: ['x', 'w', 'b'], output: ['z'] },
      { opType: 'LogSoftmax', input: ['z'], output: ['logp'], attribute: [intAttr('axis', 1)] },
      { opType: 'Mul', input: ['y', 'logp'], output: ['ylogp'] },
      { opType: 'ReduceSum', input: ['ylogp'], output: ['ll'], attribute: [intAttr('keepdims', 0)] },
      { opType: 'Neg', input: ['ll'], output: ['nll'] },
      { opType: 'Exp', input: ['logp'], output: ['p'] },
      { opType: 'Sub', input: ['p', 'y'], output: ['g'] },
      { opType: 'Gemm', input: ['x', 'g'], output: ['gw'], attribute: [intAttr('transA', 1)] },
      { opType: 'ReduceSum', input: ['g', 'rows'], output: ['gb'], attribute: [intAttr('keepdims', 0)] },
    ],
  });
}

/** `x[n,d]`, `w[d,c]`, `b[c]` → `label[n]` (int32 argmax of the logits). */
export function predictModel(): Uint8Array {
  return encodeModel({
    name: 'softmax_predict',
    input: [tensorInfo('x', FLOAT, ['n', 'd']), tensorInfo('w', FLOAT, ['d', 'c']), tensorInfo('b', FLOAT, ['c'])],
    output: [tensorInfo('label', INT32, ['n'])],
    node: [
      { opType: 'Gemm', input: ['x', 'w', 'b'], output: ['z'] },
      { opType: 'ArgMax', input: ['z'], output: ['label64'], attribute: [intAttr('axis', 1), intAttr('keepdims', 0)] },
      { opType: 'Cast', input: ['label64'], output: ['label'], attribute: [intAttr('to', INT32)] },
    ],
  });
}

export interface Standardizer {
  mean: Float32Array;
  scale: Float32Array;
}

/** Per-column mean and 1/std (std floored at 1e-6 of the largest) of the rows `rows` of x. */
export function fitStandardizer(x: Float32Array, d: number, rows: ArrayLike<number>): Standardizer {
  const n = rows.length;
  const sum = new Float64Array(d);
  const sq = new Float64Array(d);
  for (let r = 0; r < n; r++) {
    const o = rows[r] * d;
    for (let j = 0; j < d; j++) {
      const v = x[o + j];
      sum[j] += v;
      sq[j] += v * v;
    }
  }
  const mean = new Float32Array(d);
  const std = new Float64Array(d);
  for (let j = 0; j < d; j++) {
    mean[j] = sum[j] / n;
    std[j] = Math.sqrt(Math.max(0, sq[j] / n - (sum[j] / n) ** 2));
  }
  const floor = Math.max(...std) * 1e-6 || 1;
  const scale = Float32Array.from(std, (s) => 1 / Math.max(s, floor));
  return { mean, scale };
}

/** The standardised rows `rows` of x as a new row-major matrix. */
export function standardize(x: Float32Array, d: number, rows: ArrayLike<number>, s: Standardizer): Float32Array {
  const out = new Float32Array(rows.length * d);
  for (let r = 0; r < rows.length; r++) {
    const o = rows[r] * d;
    const t = r * d;
    for (let j = 0; j < d; j++) out[t + j] = (x[o + j] - s.mean[j]) * s.scale[j];
  }
  return out;
}

export interface FitOptions {
  /** L2 strength λ on the weights (mean-loss convention). */
  lambda: number;
  maxIterations: number;
  /** Stop when max |∇f| ≤ gtol. */
  gtol: number;
  /** Or when the relative decrease of f over one iteration is below ftol. */
  ftol: number;
  /** L-BFGS memory. */
  memory?: number;
  /** Rows per ORT run. */
  blockRows?: number;
}

export interface FitResult {
  w: Float32Array;
  b: Float32Array;
  iterations: number;
  evaluations: number;
  loss: number;
  gradMax: number;
  converged: boolean;
  reason: 'gtol' | 'ftol' | 'max-iterations' | 'line-search';
  seconds: number;
}

export class SoftmaxRegression {
  private constructor(
    private readonly lossGrad: InferenceSession,
    private readonly predictor: InferenceSession,
  ) {}

  static async create(threads = 2): Promise<SoftmaxRegression> {
    const options: InferenceSession.SessionOptions = { intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all' };
    return new SoftmaxRegression(await InferenceSession.create(lossGradModel(), options), await InferenceSession.create(predictModel(), options));
  }

  async dispose(): Promise<void> {
    await this.lossGrad.release();
    await this.predictor.release();
  }

  /** Mean negative log-likelihood and its gradient sums for parameters (w, b) over all rows. */
  async lossAndGradient(x: Float32Array, y: Float32Array, n: number, d: number, c: number, w: Float32Array, b: Float32Array, blockRows = 8192) {
    const gw = new Float64Array(d * c);
    const gb = new Float64Array(c);
    let nll = 0;
    const wt = new Tensor('float32', w, [d, c]);
    const bt = new Tensor('float32', b, [c]);
    for (let start = 0; start < n; start += blockRows) {
      const rows = Math.min(blockRows, n - start);
      const out = await this.lossGrad.run({
        x: new Tensor('float32', x.subarray(start * d, (start + rows) * d), [rows, d]),
        y: new Tensor('float32', y.subarray(start * c, (start + rows) * c), [rows, c]),
        w: wt,
        b: bt,
      });
      nll += (out.nll.data as Float32Array)[0];
      const ogw = out.gw.data as Float32Array;
      for (let i = 0; i < gw.length; i++) gw[i] += ogw[i];
      const ogb = out.gb.data as Float32Array;
      for (let i = 0; i < c; i++) gb[i] += ogb[i];
    }
    return { nll, gw, gb };
  }

  async fit(x: Float32Array, labels: ArrayLike<number>, n: number, d: number, c: number, options: FitOptions): Promise<FitResult> {
    const started = performance.now();
    const y = new Float32Array(n * c);
    for (let i = 0; i < n; i++) y[i * c + labels[i]] = 1;
    const size = d * c + c;
    const { lambda } = options;
    const memory = options.memory ?? 10;
    const w32 = new Float32Array(d * c);
    const b32 = new Float32Array(c);
    let evaluations = 0;
    const evaluate = async (theta: Float64Array): Promise<{ f: number; g: Float64Array }> => {
      evaluations++;
      for (let i = 0; i < d * c; i++) w32[i] = theta[i];
      for (let i = 0; i < c; i++) b32[i] = theta[d * c + i];
      const { nll, gw, gb } = await this.lossAndGradient(x, y, n, d, c, w32, b32, options.blockRows);
      const g = new Float64Array(size);
      let reg = 0;
      for (let i = 0; i < d * c; i++) {
        reg += theta[i] * theta[i];
        g[i] = gw[i] / n + lambda * theta[i];
      }
      for (let i = 0; i < c; i++) g[d * c + i] = gb[i] / n;
      return { f: nll / n + (lambda / 2) * reg, g };
    };
    const result = await lbfgs(evaluate, new Float64Array(size), { ...options, memory });
    for (let i = 0; i < d * c; i++) w32[i] = result.theta[i];
    for (let i = 0; i < c; i++) b32[i] = result.theta[d * c + i];
    return {
      w: w32,
      b: b32,
      iterations: result.iterations,
      evaluations,
      loss: result.f,
      gradMax: result.gradMax,
      converged: result.reason === 'gtol' || result.reason === 'ftol',
      reason: result.reason,
      seconds: (performance.now() - started) / 1000,
    };
  }

  async predict(x: Float32Array, n: number, d: number, c: number, w: Float32Array, b: Float32Array, blockRows = 8192): Promise<Int32Array> {
    const labels = new Int32Array(n);
    const wt = new Tensor('float32', w, [d, c]);
    const bt = new Tensor('float32', b, [c]);
    for (let start = 0; start < n; start += blockRows) {
      const rows = Math.min(blockRows, n - start);
      const out = await this.predictor.run({ x: new Tensor('float32', x.subarray(start * d, (start + rows) * d), [rows, d]), w: wt, b: bt });
      labels.set(out.label.data as Int32Array, start);
    }
    return labels;
  }
}

const dot = (a: Float64Array, b: Float64Array): number => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
};
const maxAbs = (a: Float64Array): number => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
};

export interface LbfgsResult {
  theta: Float64Array;
  f: number;
  gradMax: number;
  iterations: number;
  reason: FitResult['reason'];
}

/**
 * Limited-memory BFGS (Nocedal & Wright, Alg. 7.4/7.5) with a backtracking Armijo line search
 * (c₁ = 1e-4), for a smooth convex objective. Curvature pairs with sᵀy ≤ 1e-12·‖s‖‖y‖ are skipped.
 */
export async function lbfgs(
  evaluate: (theta: Float64Array) => Promise<{ f: number; g: Float64Array }>,
  theta0: Float64Array,
  options: { maxIterations: number; gtol: number; ftol: number; memory: number },
): Promise<LbfgsResult> {
  let theta = theta0;
  let { f, g } = await evaluate(theta);
  const ss: Float64Array[] = [];
  const ys: Float64Array[] = [];
  const rhos: number[] = [];
  let iterations = 0;
  let reason: FitResult['reason'] = 'max-iterations';
  if (maxAbs(g) <= options.gtol) reason = 'gtol';
  while (reason === 'max-iterations' && iterations < options.maxIterations) {
    // Two-loop recursion: direction = −H·g.
    const q = Float64Array.from(g);
    const alphas = new Array<number>(ss.length);
    for (let i = ss.length - 1; i >= 0; i--) {
      alphas[i] = rhos[i] * dot(ss[i], q);
      for (let j = 0; j < q.length; j++) q[j] -= alphas[i] * ys[i][j];
    }
    const gamma = ss.length > 0 ? dot(ss[ss.length - 1], ys[ys.length - 1]) / dot(ys[ys.length - 1], ys[ys.length - 1]) : 1 / Math.max(1e-12, Math.sqrt(dot(g, g)));
    for (let j = 0; j < q.length; j++) q[j] *= gamma;
    for (let i = 0; i < ss.length; i++) {
      const beta = rhos[i] * dot(ys[i], q);
      for (let j = 0; j < q.length; j++) q[j] += ss[i][j] * (alphas[i] - beta);
    }
    const direction = q.map((v) => -v);
    let slope = dot(g, direction);
    if (slope >= 0) {
      // Not a descent direction (numerical trouble): restart from steepest descent.
      ss.length = ys.length = rhos.length = 0;
      for (let j = 0; j < direction.length; j++) direction[j] = -g[j] / Math.max(1e-12, Math.sqrt(dot(g, g)));
      slope = dot(g, direction);
    }
    let step = 1;
    let next: { f: number; g: Float64Array } | null = null;
    let candidate = theta;
    for (let tries = 0; tries < 40; tries++) {
      candidate = theta.map((v, j) => v + step * direction[j]);
      const trial = await evaluate(candidate);
      if (Number.isFinite(trial.f) && trial.f <= f + 1e-4 * step * slope) {
        next = trial;
        break;
      }
      step *= 0.5;
    }
    iterations++;
    if (!next) {
      reason = 'line-search';
      break;
    }
    const s = candidate.map((v, j) => v - theta[j]);
    const y = next.g.map((v, j) => v - g[j]);
    const sy = dot(s, y);
    if (sy > 1e-12 * Math.sqrt(dot(s, s) * dot(y, y))) {
      ss.push(s);
      ys.push(y);
      rhos.push(1 / sy);
      if (ss.length > options.memory) {
        ss.shift();
        ys.shift();
        rhos.shift();
      }
    }
    const decrease = (f - next.f) / Math.max(Math.abs(f), Math.abs(next.f), 1);
    theta = candidate;
    f = next.f;
    g = next.g;
    if (maxAbs(g) <= options.gtol) reason = 'gtol';
    else if (decrease >= 0 && decrease < options.ftol) reason = 'ftol';
  }
  return { theta, f, gradMax: maxAbs(g), iterations, reason };
}
