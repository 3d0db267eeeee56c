/**
 * Prototypicality score of each item: cosine distance `1 − similarity` to its nearest centroid,
 * clamped at 0 (float rounding can push a unit-norm dot product a hair above 1). Low = prototypical
 * ("easy"), high = far from every prototype ("hard").
 */
export function scoresFromSimilarity(similarity: Float32Array): Float32Array {
  const scores = new Float32Array(similarity.length);
  for (let i = 0; i < similarity.length; i++) scores[i] = Math.max(0, 1 - similarity[i]);
  return scores;
}

/** Ascending copy of `scores`, the input that `percentileOf` expects. */
export function sortScores(scores: Float32Array): Float32Array {
  return Float32Array.from(scores).sort();
}

/**
 * Percentile of `score` within a dataset: the fraction of the dataset's scores that are ≤ `score`,
 * in [0, 1] (so the hardest item is at 1, and equal scores share a percentile). `sortedScores`
 * must be ascending (see `sortScores`); an empty dataset gives 0.
 */
export function percentileOf(sortedScores: Float32Array, score: number): number {
  if (sortedScores.length === 0) return 0;
  return countAtMost(sortedScores, score) / sortedScores.length;
}

/** Number of entries of ascending `sorted` that are ≤ `value` (an upper-bound binary search). */
function countAtMost(sorted: Float32Array, value: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid] <= value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
