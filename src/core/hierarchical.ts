import type { DistanceKernel } from '../kernels/types.js';
import { fitKMeans } from './kmeans.js';
import { Rng } from './random.js';
import { balancedQuotas } from './selection.js';
import { identity, sortByKey } from './sort.js';

export { balancedQuotas };

/**
 * Balanced hierarchical sampling (Vo et al., "Automatic data curation for self-supervised
 * learning: a clustering-based approach", 2024), over the dataset's prototypes.
 *
 * One k-means level places centroids roughly in proportion to density, so a head concept owns many
 * prototypes and a tail concept few: a budget split evenly across prototypes still follows the
 * head. k-means over those centroids sees each prototype once, whatever its item count, and so is
 * less biased towards dense regions; every further level flattens the concept distribution again.
 * Splitting the budget evenly top-down through that tree therefore serves concepts, not items.
 */

export interface HierarchyOptions {
  /** Levels including the prototypes (level 1): 2 or 3 (default `defaultLevels(k)`). */
  levels?: number;
  /** Any integer; the same seed, centroids and kernel configuration give the same tree. */
  seed: number;
  kernel: DistanceKernel;
}

/** One level above the prototypes: k-means over the centroids of the level below. */
export interface UpperLevel {
  nodeCount: number;
  /** The parent (a node of this level) of each node of the level below. */
  parentOfChild: Int32Array;
  /** Items under each node: the sum over its children. */
  itemCounts: Int32Array;
  /** nodeCount × dim row-major unit centroids. */
  centroids: Float32Array;
}

export interface PrototypeHierarchy {
  /** Items per prototype (level 1). */
  prototypeCounts: Int32Array;
  /** Levels 2..L, bottom-up: the last is the top. */
  upperLevels: UpperLevel[];
}

/** Below this many prototypes a three-level tree would average fewer than 2 children per node at some level. */
const THREE_LEVELS_MIN_PROTOTYPES = 16;

/** 3 levels from `THREE_LEVELS_MIN_PROTOTYPES` prototypes on, else 2. */
export function defaultLevels(k: number): number {
  return k >= THREE_LEVELS_MIN_PROTOTYPES ? 3 : 2;
}

/**
 * Node counts of levels 2..L for `k` prototypes: the top level has round(√k) nodes, the √(n/2)-style
 * rule of thumb applied to the prototypes, and the levels between shrink geometrically — level l has
 * round(k^(1 − (l − 1) / (2(L − 1)))) nodes, i.e. k^(1/4) children per node at L = 3. Each level has
 * at least one node and never more than the level below.
 */
export function upperLevelSizes(k: number, levels: number): number[] {
  if (!Number.isInteger(k) || k < 1) throw new RangeError(`k must be a positive integer, got ${k}`);
  if (levels !== 2 && levels !== 3) throw new RangeError(`levels must be 2 or 3, got ${levels}`);
  const sizes: number[] = [];
  let below = k;
  for (let level = 2; level <= levels; level++) {
    const exponent = 1 - (level - 1) / (2 * (levels - 1));
    below = Math.min(below, Math.max(1, Math.round(k ** exponent)));
    sizes.push(below);
  }
  return sizes;
}

/**
 * Hierarchical k-means over `k` prototypes (`centroids`: k × dim row-major unit rows, `counts`:
 * items per prototype): each level above the first clusters the centroids of the level below with
 * `fitKMeans` on the same kernel, `upperLevelSizes` nodes per level. The clustering is unweighted
 * on purpose (weighting by item counts would pull the upper centroids back towards the head);
 * counts only add up into node sizes, which cap the quotas.
 */
export async function buildHierarchy(
  centroids: Float32Array,
  k: number,
  dim: number,
  counts: Int32Array,
  options: HierarchyOptions,
): Promise<PrototypeHierarchy> {
  if (counts.length !== k) throw new RangeError(`counts must hold k = ${k} values, got ${counts.length}`);
  for (let c = 0; c < k; c++) if (counts[c] < 0) throw new RangeError(`counts[${c}] = ${counts[c]} is negative`);
  const levels = options.levels ?? defaultLevels(k);
  const rng = new Rng(options.seed);
  const upperLevels: UpperLevel[] = [];
  let below = { nodeCount: k, centroids, itemCounts: counts };
  for (const nodeCount of upperLevelSizes(k, levels)) {
    const fit = await fitKMeans(below.centroids, below.nodeCount, dim, { k: nodeCount, seed: rng.nextUint32(), kernel: options.kernel });
    const itemCounts = new Int32Array(nodeCount);
    for (let child = 0; child < below.nodeCount; child++) itemCounts[fit.cluster[child]] += below.itemCounts[child];
    const level = { nodeCount, parentOfChild: fit.cluster, itemCounts, centroids: fit.centroids };
    upperLevels.push(level);
    below = level;
  }
  return { prototypeCounts: Int32Array.from(counts), upperLevels };
}

/**
 * Per-prototype quotas for `budget` items, summing to min(budget, total items): the budget is split
 * evenly across the top-level nodes (`balancedQuotas`), then each node's quota evenly across its
 * children, level by level down to the prototypes.
 */
export function hierarchicalQuotas(tree: PrototypeHierarchy, budget: number): Int32Array {
  if (!Number.isInteger(budget) || budget < 0) throw new RangeError(`budget must be a non-negative integer, got ${budget}`);
  const { upperLevels, prototypeCounts } = tree;
  const top = upperLevels[upperLevels.length - 1];
  let quotas = balancedQuotas(top.itemCounts, budget);
  for (let l = upperLevels.length - 1; l >= 0; l--) {
    const childCounts = l > 0 ? upperLevels[l - 1].itemCounts : prototypeCounts;
    quotas = splitAmongChildren(quotas, upperLevels[l].parentOfChild, childCounts);
  }
  return quotas;
}

/** Each parent's quota split evenly across its children (`balancedQuotas` over their item counts). */
function splitAmongChildren(parentQuotas: Int32Array, parentOfChild: Int32Array, childCounts: Int32Array): Int32Array {
  const parents = parentQuotas.length;
  // Children grouped by parent, in index order: parent p's are `byParent[starts[p] .. starts[p + 1])`.
  const byParent = sortByKey(identity(parentOfChild.length), new Uint32Array(parentOfChild));
  const starts = new Int32Array(parents + 1);
  for (let c = 0; c < parentOfChild.length; c++) starts[parentOfChild[c] + 1]++;
  for (let p = 0; p < parents; p++) starts[p + 1] += starts[p];
  const quotas = new Int32Array(childCounts.length);
  for (let p = 0; p < parents; p++) {
    const children = byParent.subarray(starts[p], starts[p + 1]);
    const split = balancedQuotas(Int32Array.from(children, (c) => childCounts[c]), parentQuotas[p]);
    children.forEach((c, i) => (quotas[c] = split[i]));
  }
  return quotas;
}
