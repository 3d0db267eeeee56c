import { InferenceSession, Tensor } from 'onnxruntime-node';
import { assignedSimilarityModel, nearestCentroidModel, nearestTwoModel, pairwiseDotModel } from './graphs.js';
import {
  checkAssignment,
  checkMatrix,
  type DistanceKernel,
  type NearestResult,
  type NearestTwoResult,
} from './types.js';

export interface OrtKernelOptions {
  /** Threads for one ORT run (default 2, the machine's core count). */
  intraOpNumThreads?: number;
  /**
   * Upper bound on the floats of the intermediate block one run materialises — `rows × k` for the
   * nearest-centroid graphs, `rows × dim` for `assignedSimilarity` (default 2^22, 16 MiB).
   * Rows per run are further clamped to [256, 8192].
   */
  maxBlockElements?: number;
}

const DEFAULT_MAX_BLOCK_ELEMENTS = 1 << 22;
const MIN_BATCH_ROWS = 256;
const MAX_BATCH_ROWS = 8192;

interface Sessions {
  nearest: InferenceSession;
  nearestTwo: InferenceSession;
  assigned: InferenceSession;
  pairwise: InferenceSession;
}

/** Distance kernel backed by onnxruntime graphs built in code; sessions are created once and reused. */
export class OrtDistanceKernel implements DistanceKernel {
  private disposed = false;

  private constructor(
    private readonly sessions: Sessions,
    private readonly maxBlockElements: number,
  ) {}

  static async create(options: OrtKernelOptions = {}): Promise<OrtDistanceKernel> {
    const intraOpNumThreads = options.intraOpNumThreads ?? 2;
    if (!Number.isInteger(intraOpNumThreads) || intraOpNumThreads < 1) {
      throw new RangeError(`intraOpNumThreads must be a positive integer, got ${intraOpNumThreads}`);
    }
    const maxBlockElements = options.maxBlockElements ?? DEFAULT_MAX_BLOCK_ELEMENTS;
    if (!Number.isInteger(maxBlockElements) || maxBlockElements < 1) {
      throw new RangeError(`maxBlockElements must be a positive integer, got ${maxBlockElements}`);
    }
    const sessionOptions: InferenceSession.SessionOptions = {
      intraOpNumThreads,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
    };
    const [nearest, nearestTwo, assigned, pairwise] = await Promise.all(
      [nearestCentroidModel(), nearestTwoModel(), assignedSimilarityModel(), pairwiseDotModel()].map((model) =>
        InferenceSession.create(model, sessionOptions),
      ),
    );
    return new OrtDistanceKernel({ nearest, nearestTwo, assigned, pairwise }, maxBlockElements);
  }

  /** Rows per run when each row materialises `width` intermediate floats. */
  batchRows(width: number): number {
    return Math.min(MAX_BATCH_ROWS, Math.max(MIN_BATCH_ROWS, Math.floor(this.maxBlockElements / Math.max(1, width))));
  }

  async nearest(points: Float32Array, n: number, centroids: Float32Array, k: number, dim: number): Promise<NearestResult> {
    this.assertLive();
    checkCentroidInputs(points, n, centroids, k, dim);
    const cluster = new Int32Array(n);
    const similarity = new Float32Array(n);
    const centroidTensor = matrix(centroids, k, dim);
    const step = this.batchRows(k);
    for (let start = 0; start < n; start += step) {
      const rows = Math.min(step, n - start);
      const out = await this.sessions.nearest.run({
        points: matrix(points.subarray(start * dim), rows, dim),
        centroids: centroidTensor,
      });
      similarity.set(out.similarity.data as Float32Array, start);
      cluster.set(out.cluster.data as Int32Array, start);
    }
    return { cluster, similarity };
  }

  async nearestTwo(points: Float32Array, n: number, centroids: Float32Array, k: number, dim: number): Promise<NearestTwoResult> {
    this.assertLive();
    checkCentroidInputs(points, n, centroids, k, dim);
    // TopK(2) needs at least two candidates; with one centroid there is no runner-up.
    if (k === 1) return { ...(await this.nearest(points, n, centroids, k, dim)), runnerUp: new Float32Array(n).fill(-Infinity) };
    const cluster = new Int32Array(n);
    const similarity = new Float32Array(n);
    const runnerUp = new Float32Array(n);
    const centroidTensor = matrix(centroids, k, dim);
    const step = this.batchRows(k);
    for (let start = 0; start < n; start += step) {
      const rows = Math.min(step, n - start);
      const out = await this.sessions.nearestTwo.run({
        points: matrix(points.subarray(start * dim), rows, dim),
        centroids: centroidTensor,
      });
      const top2 = out.top2.data as Float32Array;
      const top2Cluster = out.top2Cluster.data as Int32Array;
      for (let r = 0; r < rows; r++) {
        similarity[start + r] = top2[2 * r];
        runnerUp[start + r] = top2[2 * r + 1];
        cluster[start + r] = top2Cluster[2 * r];
      }
    }
    return { cluster, similarity, runnerUp };
  }

  async assignedSimilarity(
    points: Float32Array,
    n: number,
    centroids: Float32Array,
    k: number,
    dim: number,
    cluster: Int32Array,
  ): Promise<Float32Array> {
    this.assertLive();
    checkCentroidInputs(points, n, centroids, k, dim);
    checkAssignment(cluster, n, k);
    const similarity = new Float32Array(n);
    const centroidTensor = matrix(centroids, k, dim);
    const step = this.batchRows(dim);
    for (let start = 0; start < n; start += step) {
      const rows = Math.min(step, n - start);
      const out = await this.sessions.assigned.run({
        points: matrix(points.subarray(start * dim), rows, dim),
        centroids: centroidTensor,
        cluster: new Tensor('int32', cluster.subarray(start, start + rows), [rows]),
      });
      similarity.set(out.similarity.data as Float32Array, start);
    }
    return similarity;
  }

  async similarities(a: Float32Array, na: number, b: Float32Array, nb: number, dim: number): Promise<Float32Array> {
    this.assertLive();
    checkMatrix('a', a, na, dim);
    checkMatrix('b', b, nb, dim);
    if (na === 0 || nb === 0) return new Float32Array(na * nb);
    const out = await this.sessions.pairwise.run({ a: matrix(a, na, dim), b: matrix(b, nb, dim) });
    return out.similarities.data as Float32Array;
  }

  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    for (const session of Object.values(this.sessions)) await session.release();
  }

  private assertLive(): void {
    if (this.disposed) throw new Error('OrtDistanceKernel has been disposed');
  }
}

/** A `[rows, dim]` tensor over the leading rows of `data`, without copying. */
function matrix(data: Float32Array, rows: number, dim: number): Tensor {
  return new Tensor('float32', data.subarray(0, rows * dim), [rows, dim]);
}

function checkCentroidInputs(points: Float32Array, n: number, centroids: Float32Array, k: number, dim: number): void {
  checkMatrix('points', points, n, dim);
  checkMatrix('centroids', centroids, k, dim);
  if (k < 1) throw new RangeError('at least one centroid is required');
}
