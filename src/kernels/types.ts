/** Nearest-centroid assignment for a block of points. */
export interface NearestResult {
  /** Index of the most similar centroid for each point (lowest index on exact ties). */
  cluster: Int32Array;
  /** Dot product with that centroid, i.e. cosine similarity for unit rows. */
  similarity: Float32Array;
}

/** Nearest-centroid assignment plus the runner-up similarity (used for k-means pruning bounds). */
export interface NearestTwoResult extends NearestResult {
  /** Second-highest dot product over the centroids; −Infinity when there is only one centroid. */
  runnerUp: Float32Array;
}

/**
 * Dot-product kernels over row-major float32 matrices. Rows are expected to be L2-normalised,
 * so dot products are cosine similarities. Every method works in bounded batches: memory is
 * O(batch × k) or O(batch × dim), never O(n × k), except `similarities`, whose caller bounds it.
 */
export interface DistanceKernel {
  /** For each of the `n` rows of `points`, the centroid (of `k`) with the highest dot product. */
  nearest(points: Float32Array, n: number, centroids: Float32Array, k: number, dim: number): Promise<NearestResult>;

  /** Like `nearest`, and also the second-highest dot product of each row. */
  nearestTwo(points: Float32Array, n: number, centroids: Float32Array, k: number, dim: number): Promise<NearestTwoResult>;

  /** `points[i] · centroids[cluster[i]]` for each of the `n` rows. */
  assignedSimilarity(
    points: Float32Array,
    n: number,
    centroids: Float32Array,
    k: number,
    dim: number,
    cluster: Int32Array,
  ): Promise<Float32Array>;

  /** The full `na × nb` row-major block of dot products `a[i] · b[j]`. The caller bounds `na × nb`. */
  similarities(a: Float32Array, na: number, b: Float32Array, nb: number, dim: number): Promise<Float32Array>;

  /** Releases native resources; the kernel must not be used afterwards. */
  dispose(): Promise<void>;
}

/** Throws unless `data` holds at least `rows × dim` values and the sizes are sane. */
export function checkMatrix(name: string, data: Float32Array, rows: number, dim: number): void {
  if (!Number.isInteger(rows) || rows < 0) throw new RangeError(`${name}: row count must be a non-negative integer, got ${rows}`);
  if (!Number.isInteger(dim) || dim < 1) throw new RangeError(`${name}: dim must be a positive integer, got ${dim}`);
  if (data.length < rows * dim) {
    throw new RangeError(`${name}: expected at least ${rows}×${dim} = ${rows * dim} values, got ${data.length}`);
  }
}

/** Throws unless `cluster` has `n` entries, each a valid index into `k` centroids. */
export function checkAssignment(cluster: Int32Array, n: number, k: number): void {
  if (cluster.length < n) throw new RangeError(`cluster: expected ${n} entries, got ${cluster.length}`);
  for (let i = 0; i < n; i++) {
    const c = cluster[i];
    if (c < 0 || c >= k) throw new RangeError(`cluster[${i}] = ${c} is outside [0, ${k})`);
  }
}
