import type { SelectionOrder } from './selection.js';

/**
 * `order=auto`: the policy picked from the data, by a rule the README states.
 *
 * Sorscher et al.: with plenty of data keep the hardest, with little keep the easiest — but keeping
 * the easiest collapses whole classes (on Fashion-MNIST, 64% accuracy at 10% kept against 82% for
 * random), and keeping the hardest while classes sit at different distances from their prototypes
 * amplifies imbalance (8.5 points below random at 10%). What stays safe is measured per prototype:
 * when each cluster keeps few items, which of them are "hard" is noise, and a random draw stratified
 * by cluster keeps every cluster's share; when each keeps many, the hardest pay off, per cluster
 * whenever clusters score unevenly (so no cluster is emptied for sitting farther from its centroid).
 */

/** Below this many kept items per non-empty cluster, `auto` draws at random (stratified by cluster). */
export const AUTO_MIN_KEPT_PER_CLUSTER = 100;
/** From this coefficient of variation of the clusters' mean scores on, `auto` balances the hardest by cluster. */
export const AUTO_UNEVEN_CLUSTERS_CV = 0.1;

export interface AutoPolicy {
  order: 'random' | 'hardest';
  balance: 'none' | 'cluster';
  /** Items kept per non-empty cluster: the budget over the clusters that hold items. */
  keptPerCluster: number;
  /** Coefficient of variation of the non-empty clusters' mean scores. */
  clusterScoreCv: number;
}

/** The policy a selection ran: the order and balance asked for, or what `auto` chose and why. */
export interface AppliedPolicy {
  order: SelectionOrder;
  balance: 'none' | 'cluster';
  /** What `order=auto` measured and chose; null when the request named its order. */
  auto: AutoPolicy | null;
}

/** Coefficient of variation (population standard deviation over mean) of `values`; 0 for none or a zero mean. */
function cv(values: ArrayLike<number>): number {
  const n = values.length;
  if (n === 0) return 0;
  let mean = 0;
  for (let i = 0; i < n; i++) mean += values[i];
  mean /= n;
  if (mean === 0) return 0;
  let variance = 0;
  for (let i = 0; i < n; i++) variance += (values[i] - mean) ** 2;
  return Math.sqrt(variance / n) / mean;
}

/** The rule: random + balance=cluster below AUTO_MIN_KEPT_PER_CLUSTER kept per cluster, else hardest, balanced when clusters score unevenly. */
export function chooseAutoPolicy(clusterSizes: ArrayLike<number>, clusterMeanScores: ArrayLike<number>, size: number): AutoPolicy {
  const means: number[] = [];
  for (let c = 0; c < clusterSizes.length; c++) if (clusterSizes[c] > 0) means.push(clusterMeanScores[c]);
  const keptPerCluster = means.length === 0 ? 0 : size / means.length;
  const clusterScoreCv = cv(means);
  if (keptPerCluster < AUTO_MIN_KEPT_PER_CLUSTER) return { order: 'random', balance: 'cluster', keptPerCluster, clusterScoreCv };
  return { order: 'hardest', balance: clusterScoreCv >= AUTO_UNEVEN_CLUSTERS_CV ? 'cluster' : 'none', keptPerCluster, clusterScoreCv };
}

/**
 * How a selection changes the clusters' shares ("pruning amplifies imbalance"): survival = kept /
 * size of each non-empty cluster; its spread next to what uniform random sampling of the same size
 * gives in expectation (every survival equal to the kept fraction f; sampling spread
 * √((1 − f)/(f·n_c)) per cluster, without the finite-population correction).
 */
export interface ImbalanceReport {
  minSurvival: number;
  maxSurvival: number;
  /** maxSurvival / minSurvival; null when some cluster keeps nothing. */
  maxMinRatio: number | null;
  /** Coefficient of variation of the clusters' survival. */
  survivalCv: number;
  /** The survival CV uniform random sampling gives in expectation (root mean square over clusters of its sampling CV). */
  randomSurvivalCv: number;
}

export function imbalanceReport(clusterSizes: ArrayLike<number>, kept: ArrayLike<number>): ImbalanceReport | null {
  const survival: number[] = [];
  let total = 0;
  let keptTotal = 0;
  for (let c = 0; c < clusterSizes.length; c++) {
    if (clusterSizes[c] === 0) continue;
    const k = c < kept.length ? kept[c] : 0;
    survival.push(k / clusterSizes[c]);
    total += clusterSizes[c];
    keptTotal += k;
  }
  if (survival.length === 0 || keptTotal === 0) return null;
  const f = keptTotal / total;
  let sumSquares = 0;
  for (let c = 0; c < clusterSizes.length; c++) if (clusterSizes[c] > 0) sumSquares += (1 - f) / (f * clusterSizes[c]);
  const minSurvival = Math.min(...survival);
  const maxSurvival = Math.max(...survival);
  return {
    minSurvival,
    maxSurvival,
    maxMinRatio: minSurvival === 0 ? null : maxSurvival / minSurvival,
    survivalCv: cv(survival),
    randomSurvivalCv: Math.sqrt(sumSquares / survival.length),
  };
}
