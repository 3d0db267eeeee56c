import type { DistanceKernel } from '../kernels/types.js';
import { floatSortKeys, identity, sortByKey } from './sort.js';

export interface DuplicateGroup {
  /** The item that stays. */
  kept: number;
  /** Items judged near-duplicates of it, ascending. */
  duplicates: number[];
  /** Cosine similarity of each duplicate to the kept item (parallel to `duplicates`). */
  similarities: number[];
}

export interface NearDuplicateOptions {
  /** Items with cosine similarity ≥ 1 − ε to a kept item are duplicates; ε in [0, 2]. */
  epsilon: number;
  kernel: DistanceKernel;
  /** Items decided per block; a block is compared with earlier kept items in tiles (default 512). */
  blockRows?: number;
  /** Kept items per kernel tile, bounding one similarity block to blockRows × tileRows (default 8192). */
  tileRows?: number;
}

/** Keeps exact duplicates (similarity 1 up to float32 rounding) duplicates at ε = 0. */
export const SIMILARITY_TOLERANCE = 1e-6;

/**
 * SemDeDup (Abbas et al., 2023) within clusters. Each cluster's items are visited from the least
 * prototypical to the most (score descending, ties by index) — SemDeDup keeps the example farthest
 * from its centroid. An item whose cosine similarity to an already-kept item of its cluster is
 * ≥ 1 − ε − 1e-6 becomes a duplicate of the most similar kept item (the earlier-kept one on ties);
 * otherwise it is kept. Returns the groups with at least one duplicate, ordered by kept index.
 *
 * Similarities go through the kernel in blocks: no buffer larger than blockRows × tileRows
 * similarities, or a cluster's own rows, is allocated, however large the cluster.
 */
export async function findNearDuplicates(
  points: Float32Array,
  n: number,
  dim: number,
  clusters: Int32Array,
  scores: Float32Array,
  options: NearDuplicateOptions,
): Promise<DuplicateGroup[]> {
  const { epsilon, kernel } = options;
  const blockRows = options.blockRows ?? 512;
  const tileRows = options.tileRows ?? 8192;
  if (!Number.isInteger(n) || n < 0) throw new RangeError(`n must be a non-negative integer, got ${n}`);
  if (!Number.isInteger(dim) || dim < 1) throw new RangeError(`dim must be a positive integer, got ${dim}`);
  if (points.length < n * dim) throw new RangeError(`points holds ${points.length} values, expected ${n * dim}`);
  if (clusters.length < n || scores.length < n) throw new RangeError(`clusters and scores must hold ${n} values`);
  if (!(epsilon >= 0 && epsilon <= 2)) throw new RangeError(`epsilon must be in [0, 2], got ${epsilon}`);
  if (!Number.isInteger(blockRows) || blockRows < 1) throw new RangeError(`blockRows must be a positive integer, got ${blockRows}`);
  if (!Number.isInteger(tileRows) || tileRows < 1) throw new RangeError(`tileRows must be a positive integer, got ${tileRows}`);
  const threshold = 1 - epsilon - SIMILARITY_TOLERANCE;

  // Visiting order: by cluster, then score descending, then index (stable sorts keep the latter).
  const hardestFirst = sortByKey(identity(n), floatSortKeys(scores.subarray(0, n), true));
  let k = 0;
  for (let i = 0; i < n; i++) {
    if (clusters[i] < 0) throw new RangeError(`clusters[${i}] = ${clusters[i]} is negative`);
    k = Math.max(k, clusters[i] + 1);
  }
  const starts = new Int32Array(k + 1);
  for (let i = 0; i < n; i++) starts[clusters[i] + 1]++;
  for (let c = 0; c < k; c++) starts[c + 1] += starts[c];
  const cursor = starts.slice(0, k);
  const visitOrder = new Int32Array(n);
  for (let r = 0; r < n; r++) visitOrder[cursor[clusters[hardestFirst[r]]]++] = hardestFirst[r];

  /** duplicateOf[i] = the kept item i duplicates, or −1. */
  const duplicateOf = new Int32Array(n).fill(-1);
  const similarityToKept = new Float32Array(n);
  for (let c = 0; c < k; c++) {
    if (starts[c + 1] - starts[c] < 2) continue;
    await dedupCluster(visitOrder.subarray(starts[c], starts[c + 1]));
  }

  const groups = new Map<number, DuplicateGroup>();
  for (let i = 0; i < n; i++) {
    const kept = duplicateOf[i];
    if (kept < 0) continue;
    const group = groups.get(kept);
    if (group) {
      group.duplicates.push(i);
      group.similarities.push(similarityToKept[i]);
    } else groups.set(kept, { kept, duplicates: [i], similarities: [similarityToKept[i]] });
  }
  return [...groups.values()].sort((a, b) => a.kept - b.kept);

  async function dedupCluster(members: Int32Array): Promise<void> {
    const m = members.length;
    const rows = new Float32Array(m * dim);
    for (let r = 0; r < m; r++) rows.set(points.subarray(members[r] * dim, (members[r] + 1) * dim), r * dim);
    // Rows of the kept members, in the order they were kept.
    const keptRows = new Float32Array(m * dim);
    const keptItems = new Int32Array(m);
    let keptCount = 0;
    const bestSimilarity = new Float32Array(blockRows);
    const bestKept = new Int32Array(blockRows);

    for (let start = 0; start < m; start += blockRows) {
      const size = Math.min(blockRows, m - start);
      const block = rows.subarray(start * dim, (start + size) * dim);
      bestSimilarity.fill(-Infinity);
      bestKept.fill(-1);
      // Against members kept in earlier blocks.
      for (let tile = 0; tile < keptCount; tile += tileRows) {
        const tileSize = Math.min(tileRows, keptCount - tile);
        const sims = await kernel.similarities(block, size, keptRows.subarray(tile * dim), tileSize, dim);
        for (let r = 0; r < size; r++) {
          for (let t = 0; t < tileSize; t++) {
            if (sims[r * tileSize + t] > bestSimilarity[r]) {
              bestSimilarity[r] = sims[r * tileSize + t];
              bestKept[r] = keptItems[tile + t];
            }
          }
        }
      }
      // Within the block, in visiting order, against the block's members kept so far.
      const inBlock = await kernel.similarities(block, size, block, size, dim);
      const keptInBlock: number[] = [];
      for (let r = 0; r < size; r++) {
        for (const earlier of keptInBlock) {
          if (inBlock[r * size + earlier] > bestSimilarity[r]) {
            bestSimilarity[r] = inBlock[r * size + earlier];
            bestKept[r] = members[start + earlier];
          }
        }
        if (bestSimilarity[r] >= threshold) {
          duplicateOf[members[start + r]] = bestKept[r];
          similarityToKept[members[start + r]] = bestSimilarity[r];
        } else {
          keptInBlock.push(r);
          keptRows.set(block.subarray(r * dim, (r + 1) * dim), keptCount * dim);
          keptItems[keptCount++] = members[start + r];
        }
      }
    }
  }
}
