import {
  checkAssignment,
  checkMatrix,
  type DistanceKernel,
  type NearestResult,
  type NearestTwoResult,
} from './types.js';

/**
 * Plain-JS reference kernel: straightforward loops with float64 accumulation. Used to cross-check
 * the ORT kernel and as the baseline in the benchmark; far too slow for production sizes.
 */
export class JsDistanceKernel implements DistanceKernel {
  async nearest(points: Float32Array, n: number, centroids: Float32Array, k: number, dim: number): Promise<NearestResult> {
    const { cluster, similarity } = await this.nearestTwo(points, n, centroids, k, dim);
    return { cluster, similarity };
  }

  async nearestTwo(points: Float32Array, n: number, centroids: Float32Array, k: number, dim: number): Promise<NearestTwoResult> {
    checkMatrix('points', points, n, dim);
    checkMatrix('centroids', centroids, k, dim);
    if (k < 1) throw new RangeError('at least one centroid is required');
    const cluster = new Int32Array(n);
    const similarity = new Float32Array(n);
    const runnerUp = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      let best = -Infinity;
      let second = -Infinity;
      let bestIndex = 0;
      for (let c = 0; c < k; c++) {
        const dot = rowDot(points, i * dim, centroids, c * dim, dim);
        // Strict comparison keeps the lowest index on exact ties, as ORT's ArgMax/TopK do.
        if (dot > best) {
          second = best;
          best = dot;
          bestIndex = c;
        } else if (dot > second) {
          second = dot;
        }
      }
      cluster[i] = bestIndex;
      similarity[i] = best;
      runnerUp[i] = second;
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
    checkMatrix('points', points, n, dim);
    checkMatrix('centroids', centroids, k, dim);
    checkAssignment(cluster, n, k);
    const similarity = new Float32Array(n);
    for (let i = 0; i < n; i++) similarity[i] = rowDot(points, i * dim, centroids, cluster[i] * dim, dim);
    return similarity;
  }

  async similarities(a: Float32Array, na: number, b: Float32Array, nb: number, dim: number): Promise<Float32Array> {
    checkMatrix('a', a, na, dim);
    checkMatrix('b', b, nb, dim);
    const out = new Float32Array(na * nb);
    for (let i = 0; i < na; i++) {
      for (let j = 0; j < nb; j++) out[i * nb + j] = rowDot(a, i * dim, b, j * dim, dim);
    }
    return out;
  }

  async dispose(): Promise<void> {}
}

function rowDot(a: Float32Array, aOffset: number, b: Float32Array, bOffset: number, dim: number): number {
  let dot = 0;
  for (let j = 0; j < dim; j++) dot += a[aOffset + j] * b[bOffset + j];
  return dot;
}
