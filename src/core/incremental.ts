export interface MiniBatchUpdate {
  /** k × dim unit centroids after the batch (untouched rows are copied unchanged). */
  centroids: Float32Array;
  /** Per-centroid counts including the batch. */
  counts: Int32Array;
}

/**
 * Mini-batch k-means step (Sculley 2010) on the sphere. `batchCluster` is each batch row's nearest
 * centroid, already computed with the current centroids. Rows are applied in order: centroid c
 * gains one count per row and moves toward the row with learning rate 1/count, i.e.
 * c ← (1 − 1/count)·c + x/count (a running mean seeded with the fit's counts). Touched centroids
 * are re-normalised after the batch. Pure: inputs are not modified.
 */
export function miniBatchUpdate(
  centroids: Float32Array,
  counts: Int32Array,
  k: number,
  dim: number,
  batch: Float32Array,
  batchSize: number,
  batchCluster: Int32Array,
): MiniBatchUpdate {
  if (centroids.length < k * dim) throw new RangeError(`centroids holds ${centroids.length} values, expected ${k * dim}`);
  if (counts.length < k) throw new RangeError(`counts holds ${counts.length} values, expected ${k}`);
  if (batch.length < batchSize * dim) throw new RangeError(`batch holds ${batch.length} values, expected ${batchSize * dim}`);
  if (batchCluster.length < batchSize) throw new RangeError(`batchCluster holds ${batchCluster.length} values, expected ${batchSize}`);

  // Float64 working rows for the touched centroids only.
  const slot = new Int32Array(k).fill(-1);
  const touched: number[] = [];
  for (let i = 0; i < batchSize; i++) {
    const c = batchCluster[i];
    if (!(c >= 0 && c < k)) throw new RangeError(`batchCluster[${i}] = ${c} is outside [0, ${k})`);
    if (slot[c] < 0) {
      slot[c] = touched.length;
      touched.push(c);
    }
  }
  const work = new Float64Array(touched.length * dim);
  for (let s = 0; s < touched.length; s++) {
    for (let j = 0; j < dim; j++) work[s * dim + j] = centroids[touched[s] * dim + j];
  }

  const nextCounts = Int32Array.from(counts.subarray(0, k));
  for (let i = 0; i < batchSize; i++) {
    const c = batchCluster[i];
    const rate = 1 / ++nextCounts[c];
    const w = slot[c] * dim;
    const p = i * dim;
    for (let j = 0; j < dim; j++) work[w + j] += rate * (batch[p + j] - work[w + j]);
  }

  const nextCentroids = Float32Array.from(centroids.subarray(0, k * dim));
  for (let s = 0; s < touched.length; s++) {
    const w = s * dim;
    let squared = 0;
    for (let j = 0; j < dim; j++) squared += work[w + j] * work[w + j];
    // Rows that cancel out exactly keep their previous centroid rather than become NaN.
    if (!(squared > 0)) continue;
    const scale = 1 / Math.sqrt(squared);
    const q = touched[s] * dim;
    for (let j = 0; j < dim; j++) nextCentroids[q + j] = work[w + j] * scale;
  }
  return { centroids: nextCentroids, counts: nextCounts };
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
