export interface MiniBatchUpdate {
  /** k × dim unit centroids after the batch (untouched rows are copied unchanged). */
  centroids: Float32Array;
  /** Per-centroid counts including the batch. */
  counts: Int32Array;
}

/**
 * What one batch moves the centroids by, kept apart from the centroids so that batches ingested
 * concurrently can be folded later, one after another: per touched centroid, the sum of the batch
 * rows assigned to it and their count.
 */
export interface CentroidDelta {
  /** Touched centroids, ascending. */
  clusters: Int32Array;
  /** Rows of the batch per touched centroid. */
  counts: Int32Array;
  /** clusters.length × dim sums of those rows. */
  sums: Float32Array;
  /** Rows of the batch. */
  items: number;
}

/** The batch's delta; `batchCluster` is each row's nearest centroid (of k). Pure. */
export function centroidDelta(batch: Float32Array, batchSize: number, dim: number, batchCluster: Int32Array, k: number): CentroidDelta {
  if (batch.length < batchSize * dim) throw new RangeError(`batch holds ${batch.length} values, expected ${batchSize * dim}`);
  if (batchCluster.length < batchSize) throw new RangeError(`batchCluster holds ${batchCluster.length} values, expected ${batchSize}`);
  const rows = new Int32Array(k);
  for (let i = 0; i < batchSize; i++) {
    const c = batchCluster[i];
    if (!(c >= 0 && c < k)) throw new RangeError(`batchCluster[${i}] = ${c} is outside [0, ${k})`);
    rows[c]++;
  }
  const slot = new Int32Array(k).fill(-1);
  const touched: number[] = [];
  for (let c = 0; c < k; c++) {
    if (rows[c] === 0) continue;
    slot[c] = touched.length;
    touched.push(c);
  }
  // Summed in float64: a batch's rows per centroid can number thousands.
  const work = new Float64Array(touched.length * dim);
  for (let i = 0; i < batchSize; i++) {
    const w = slot[batchCluster[i]] * dim;
    const p = i * dim;
    for (let j = 0; j < dim; j++) work[w + j] += batch[p + j];
  }
  return { clusters: Int32Array.from(touched), counts: Int32Array.from(touched, (c) => rows[c]), sums: Float32Array.from(work), items: batchSize };
}

/**
 * Mini-batch k-means step (Sculley 2010) on the sphere: centroid c with n items, gaining m rows of
 * sum s, becomes the running mean (n·c + s) / (n + m) — what moving toward each row with learning
 * rate 1/count, one row at a time, arrives at — re-normalised. A row that cancels out exactly keeps
 * its previous centroid rather than become NaN. Pure: inputs are not modified.
 */
export function applyCentroidDelta(centroids: Float32Array, counts: Int32Array, k: number, dim: number, delta: CentroidDelta): MiniBatchUpdate {
  if (centroids.length < k * dim) throw new RangeError(`centroids holds ${centroids.length} values, expected ${k * dim}`);
  if (counts.length < k) throw new RangeError(`counts holds ${counts.length} values, expected ${k}`);
  if (delta.sums.length < delta.clusters.length * dim) throw new RangeError(`delta sums hold ${delta.sums.length} values, expected ${delta.clusters.length * dim}`);
  const nextCentroids = Float32Array.from(centroids.subarray(0, k * dim));
  const nextCounts = Int32Array.from(counts.subarray(0, k));
  const row = new Float64Array(dim);
  for (let s = 0; s < delta.clusters.length; s++) {
    const c = delta.clusters[s];
    if (!(c >= 0 && c < k)) throw new RangeError(`delta cluster ${c} is outside [0, ${k})`);
    const before = nextCounts[c];
    nextCounts[c] = before + delta.counts[s];
    let squared = 0;
    for (let j = 0; j < dim; j++) {
      row[j] = (before * centroids[c * dim + j] + delta.sums[s * dim + j]) / nextCounts[c];
      squared += row[j] * row[j];
    }
    if (!(squared > 0)) continue;
    const scale = 1 / Math.sqrt(squared);
    for (let j = 0; j < dim; j++) nextCentroids[c * dim + j] = row[j] * scale;
  }
  return { centroids: nextCentroids, counts: nextCounts };
}

/** One batch's delta applied at once (see applyCentroidDelta). */
export function miniBatchUpdate(
  centroids: Float32Array,
  counts: Int32Array,
  k: number,
  dim: number,
  batch: Float32Array,
  batchSize: number,
  batchCluster: Int32Array,
): MiniBatchUpdate {
  return applyCentroidDelta(centroids, counts, k, dim, centroidDelta(batch, batchSize, dim, batchCluster, k));
}

export interface CentroidDrift {
  /** 1 − cos between each reference centroid and its current counterpart. */
  perCentroid: Float32Array;
  mean: number;
  max: number;
}

/** How far the centroids have moved since the last full fit, as cosine distances per centroid. */
export function centroidDrift(reference: Float32Array, current: Float32Array, k: number, dim: number): CentroidDrift {
  if (!Number.isInteger(k) || k < 1) throw new RangeError(`k must be a positive integer, got ${k}`);
  if (reference.length < k * dim || current.length < k * dim) throw new RangeError(`centroid arrays must hold ${k * dim} values`);
  const perCentroid = new Float32Array(k);
  let sum = 0;
  let max = 0;
  for (let c = 0; c < k; c++) {
    const q = c * dim;
    let dot = 0;
    let refSquared = 0;
    let curSquared = 0;
    for (let j = 0; j < dim; j++) {
      dot += reference[q + j] * current[q + j];
      refSquared += reference[q + j] * reference[q + j];
      curSquared += current[q + j] * current[q + j];
    }
    const norms = Math.sqrt(refSquared * curSquared);
    const drift = norms > 0 ? Math.max(0, 1 - dot / norms) : 0;
    perCentroid[c] = drift;
    sum += drift;
    max = Math.max(max, drift);
  }
  return { perCentroid, mean: sum / k, max };
}

export interface RefitThresholds {
  /** Refit when the mean centroid drift reaches this cosine distance. */
  meanDrift: number;
  /** Refit when any single centroid's drift reaches this cosine distance. */
  maxDrift: number;
  /** Refit when this fraction of the current items arrived after the last full fit. */
  arrivedFraction: number;
}

/**
 * Defaults: mean drift 0.01 (≈ 8° average rotation), max drift 0.05 (≈ 18° for one centroid),
 * arrived fraction 0.2 (a fifth of the data was never seen by the full fit). The first two catch a
 * shifting distribution, the last a growing one whose clustering may now be too coarse.
 */
export const DEFAULT_REFIT_THRESHOLDS: Readonly<RefitThresholds> = Object.freeze({
  meanDrift: 0.01,
  maxDrift: 0.05,
  arrivedFraction: 0.2,
});

export type RefitReason = 'meanDrift' | 'maxDrift' | 'arrivedFraction';

export interface RefitDecision {
  refit: boolean;
  /** Every threshold that was reached (empty when `refit` is false). */
  reasons: RefitReason[];
}

/**
 * Whether to replace the incrementally updated centroids with a full fit. `arrivedFraction` is
 * items added since the last full fit divided by the current total, in [0, 1].
 */
export function shouldRefit(
  drift: Pick<CentroidDrift, 'mean' | 'max'>,
  arrivedFraction: number,
  thresholds: RefitThresholds = DEFAULT_REFIT_THRESHOLDS,
): RefitDecision {
  if (!(arrivedFraction >= 0 && arrivedFraction <= 1)) throw new RangeError(`arrivedFraction must be in [0, 1], got ${arrivedFraction}`);
  const reasons: RefitReason[] = [];
  if (drift.mean >= thresholds.meanDrift) reasons.push('meanDrift');
  if (drift.max >= thresholds.maxDrift) reasons.push('maxDrift');
  if (arrivedFraction >= thresholds.arrivedFraction) reasons.push('arrivedFraction');
  return { refit: reasons.length > 0, reasons };
}
