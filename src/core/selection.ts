import { randomKey } from './random.js';
import { floatSortKeys, identity, sortByKey } from './sort.js';


/** `fraction` in (0, 1] keeps `Math.round(fraction × N)` items (halves round up); `count` is clamped to N. */
export type SelectionBudget = { fraction: number } | { count: number };

export interface SelectionInput {
  /** Prototypicality score per item (higher = harder). */
  scores: Float32Array;
  /** Cluster id per item, ≥ 0. */
  clusters: Int32Array;
  /** 32-bit hash of each item's external id (see `fnv1a32`), the source of seeded randomness. */
  idHashes: Uint32Array;
}

export interface SelectionOptions {
  order: SelectionOrder;
  budget: SelectionBudget;
  /** `cluster`: every cluster keeps the same fraction of its items (default `none`). */
  balance?: 'none' | 'cluster';
  /** Seed of the `random` order and of the within-bin sampling of `stratified` (default 0). */
  seed?: number;
  /** `stratified`: fraction β of the hardest items set aside as likely outliers (default 0.1). */
  outlierFraction?: number;
  /** `stratified`: number of equal-width score bins (default 50). */
  bins?: number;
  /**
   * `hierarchical`: items each cluster keeps (index = cluster id, never above its size, summing to
   * the budget), from `hierarchicalQuotas` over the prototypes (core/hierarchical.ts).
   */
  quotas?: Int32Array;
}

/** `stratified`'s defaults. */
export const DEFAULT_OUTLIER_FRACTION = 0.1;
export const DEFAULT_BINS = 50;

/** Items a budget keeps out of `n`. */
export function budgetSize(budget: SelectionBudget, n: number): number {
  if ('fraction' in budget) {
    const { fraction } = budget;
    if (!(fraction > 0 && fraction <= 1)) throw new RangeError(`budget fraction must be in (0, 1], got ${fraction}`);
    return Math.min(n, Math.round(fraction * n));
  }
  const { count } = budget;
  if (!Number.isInteger(count) || count < 0) throw new RangeError(`budget count must be a non-negative integer, got ${count}`);
  return Math.min(n, count);
}

/**
 * Selects items to keep; returns their indices in output order. Items must be given sorted by
 * external id, so "ties by id" is "ties by index" throughout.
 *
 * - `hardest`: score descending; `easiest`: score ascending.
 * - `random`: ascending `randomKey(seed, idHash)`, so the order of existing items does not change
 *   when the dataset grows.
 * - `stratified`: Coverage-centric Coreset Selection (Zheng et al., ICLR 2023). The ⌊β·N⌋ hardest
 *   items are set aside; the remaining score range is cut into `bins` equal-width bins; the budget
 *   is spread over the non-empty bins smallest first, each taking min(its size, ⌊remaining budget /
 *   bins left⌋), a seeded random sample within each bin. If the budget exceeds the items left after
 *   setting aside β, all of them are kept and the set-aside items fill the rest, least hard first,
 *   so the size is always exact. Output order is the `random` order.
 * - `moderate`: Moderate Coreset (Xia et al., ICLR 2023), label-free: the items whose score is
 *   closest to the median score of their group (the dataset, or their cluster under
 *   `balance: 'cluster'`), dropping both the most prototypical and the hardest. Output order is
 *   |score − median| ascending.
 *
 * With `balance: 'cluster'` each cluster's quota is ⌊B·n_c/N⌋ plus one for the clusters with the
 * largest remainders (ties by lower cluster id) until the quotas sum to the budget B; the order is
 * applied within each cluster (for `stratified`, the whole procedure runs per cluster), and the
 * output keeps the order's global order. Ties are broken by index in every order.
 */
export function select(input: SelectionInput, options: SelectionOptions): Int32Array {
  return selectWithRule(input, options).chosen;
}

/**
 * How one group (the whole dataset, or one cluster under `balance: 'cluster'`) decides about an
 * item that is not in it: the boundary its own selection drew, so a new item is kept exactly when it
 * would rank inside the kept part of its group.
 */
export type GroupRule =
  | { kind: 'none' }
  | { kind: 'all' }
  | { kind: 'scoreAtLeast'; score: number }
  | { kind: 'scoreAtMost'; score: number }
  | { kind: 'keyAtMost'; key: number }
  | { kind: 'scoreNear'; center: number; radius: number }
  | { kind: 'bins'; outlierFrom: number; low: number; width: number; bins: number; maxKey: Float64Array };

type StratifiedTrace = Extract<GroupRule, { kind: 'none' | 'scoreAtMost' | 'bins' }>;

/** A selection's boundaries, to decide keep/skip for items scored later without re-running it. */
export interface KeepRule {
  balance: 'none' | 'cluster';
  seed: number;
  /** Index 0 for `balance: 'none'`, else the cluster id. */
  groups: GroupRule[];
}

/**
 * Would an item with this score, cluster and id hash be kept by the selection `rule` came from?
 * Hardest/easiest compare the score with the group's last kept score, random compares the item's
 * seeded key with the last kept key, stratified skips set-aside outliers and compares the key with
 * the last kept key of the item's score bin. A group with no items (a cluster nobody is in yet)
 * keeps: nothing like the item is stored.
 */
export function decideKeep(rule: KeepRule, score: number, cluster: number, idHash: number): boolean {
  const group = rule.groups[rule.balance === 'cluster' ? cluster : 0];
  if (group === undefined) return true;
  const key = () => randomKey(rule.seed, idHash);
  switch (group.kind) {
    case 'none':
      return false;
    case 'all':
      return true;
    case 'scoreAtLeast':
      return score >= group.score;
    case 'scoreAtMost':
      return score <= group.score;
    case 'keyAtMost':
      return key() <= group.key;
    case 'scoreNear':
      // Rounded as the selection ranked it (float32 distances).
      return Math.fround(Math.abs(score - group.center)) <= group.radius;
    case 'bins': {
      if (score >= group.outlierFrom) return false;
      const bin = group.width > 0 ? Math.max(0, Math.min(group.bins - 1, Math.floor((score - group.low) / group.width))) : 0;
      return key() <= group.maxKey[bin];
    }
  }
}

/** What an order's implementation gets: checked inputs, the budget already resolved to a size. */
interface OrderParameters {
  size: number;
  balance: 'none' | 'cluster';
  seed: number;
  outlierFraction?: number;
  bins?: number;
  quotas?: Int32Array;
}

type OrderImplementation = (input: SelectionInput, parameters: OrderParameters) => { chosen: Int32Array; rule: KeepRule };

type RankedOrder = 'hardest' | 'easiest' | 'random';

/** hardest/easiest by score, random by seeded key: the first `size` of one ranking (per cluster quota when balanced). */
function rankedOrder(order: RankedOrder): OrderImplementation {
  return (input, { size, balance, seed }) => {
    const { scores, clusters, idHashes } = input;
    const keys = order === 'random' ? randomKeys(seed, idHashes) : null;
    const ranked = sortByKey(identity(scores.length), keys ?? floatSortKeys(scores, order === 'hardest'));
    const chosen = balance === 'none' ? ranked.slice(0, size) : takeByQuota(ranked, clusters, clusterQuotas(clusters, size));
    return { chosen, rule: { balance, seed, groups: boundaryRules(order, input, keys, chosen, balance) } };
  };
}

/**
 * Balanced hierarchical sampling (Vo et al. 2024): each cluster keeps its given quota, drawn at
 * random by seed within the cluster; the quotas come from the hierarchy over the prototypes.
 */
function hierarchicalOrder(input: SelectionInput, { size, seed, quotas }: OrderParameters): { chosen: Int32Array; rule: KeepRule } {
  const { clusters, idHashes } = input;
  const counts = new Int32Array(Math.max(quotas?.length ?? 0, clusterCount(clusters)));
  for (let i = 0; i < clusters.length; i++) counts[clusters[i]]++;
  // Without the hierarchy (a caller with the scores only), one level: the clusters themselves, max-min fair.
  const perCluster = quotas ?? balancedQuotas(counts, size);
  let sum = 0;
  for (let c = 0; c < perCluster.length; c++) {
    sum += perCluster[c];
    if (perCluster[c] > counts[c]) throw new RangeError(`cluster ${c} has ${counts[c]} items, fewer than its quota ${perCluster[c]}`);
  }
  if (sum !== size) throw new RangeError(`hierarchical quotas sum to ${sum}, not the budget ${size}`);
  const keys = randomKeys(seed, idHashes);
  const chosen = takeByQuota(sortByKey(identity(clusters.length), keys), clusters, perCluster);
  return { chosen, rule: { balance: 'cluster', seed, groups: boundaryRules('random', input, keys, chosen, 'cluster') } };
}

/** Moderate Coreset (see `select`): nearest to the group's median score first. */
function moderateOrder(input: SelectionInput, { size, balance, seed }: OrderParameters): { chosen: Int32Array; rule: KeepRule } {
  const { scores, clusters } = input;
  const n = scores.length;
  const count = balance === 'cluster' ? clusterCount(clusters) : 1;
  const groupOf = (i: number) => (balance === 'cluster' ? clusters[i] : 0);
  const members: number[][] = Array.from({ length: count }, () => []);
  for (let i = 0; i < n; i++) members[groupOf(i)].push(scores[i]);
  const medians = members.map((list) => {
    if (list.length === 0) return 0;
    const sorted = Float64Array.from(list).sort();
    const mid = sorted.length >> 1;
    return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  });
  const distance = Float32Array.from(scores, (score, i) => Math.abs(score - medians[groupOf(i)]));
  const ranked = sortByKey(identity(n), floatSortKeys(distance, false));
  const chosen = balance === 'none' ? ranked.slice(0, size) : takeByQuota(ranked, clusters, clusterQuotas(clusters, size));
  const sizes = members.map((list) => list.length);
  const kept = new Int32Array(count);
  const radius = new Float64Array(count).fill(-Infinity);
  for (const i of chosen) {
    const g = groupOf(i);
    kept[g]++;
    radius[g] = Math.max(radius[g], distance[i]);
  }
  const groups = Array.from({ length: count }, (_, g): GroupRule => {
    if (sizes[g] === 0 || kept[g] === sizes[g]) return { kind: 'all' };
    if (kept[g] === 0) return { kind: 'none' };
    return { kind: 'scoreNear', center: medians[g], radius: radius[g] };
  });
  return { chosen, rule: { balance, seed, groups } };
}

/** Coverage-centric Coreset Selection (see `select`). */
function stratifiedOrder(input: SelectionInput, parameters: OrderParameters): { chosen: Int32Array; rule: KeepRule } {
  const { scores, clusters, idHashes } = input;
  const n = scores.length;
  const { size, balance, seed } = parameters;
  const outlierFraction = parameters.outlierFraction ?? DEFAULT_OUTLIER_FRACTION;
  const bins = parameters.bins ?? DEFAULT_BINS;
  if (!(outlierFraction >= 0 && outlierFraction < 1)) throw new RangeError(`outlierFraction must be in [0, 1), got ${outlierFraction}`);
  if (!Number.isInteger(bins) || bins < 1) throw new RangeError(`bins must be a positive integer, got ${bins}`);
  const keys = randomKeys(seed, idHashes);
  const stratify: Stratification = {
    scores,
    outlierFraction,
    bins,
    randomKeys: keys,
    hardestKeys: floatSortKeys(scores, true),
    easiestKeys: floatSortKeys(scores, false),
    outlier: new Uint8Array(n),
  };

  const ranked = sortByKey(identity(n), keys);
  const selected = new Uint8Array(n);
  const groups: GroupRule[] = [];
  if (balance === 'none') {
    groups.push(n === 0 ? { kind: 'all' } : selectStratified(ranked, size, stratify, selected));
  } else {
    const quotas = clusterQuotas(clusters, size);
    const { members, starts } = groupByCluster(ranked, clusters, quotas.length);
    for (let c = 0; c < quotas.length; c++) {
      const group = members.subarray(starts[c], starts[c + 1]);
      groups.push(group.length === 0 ? { kind: 'all' } : selectStratified(group, quotas[c], stratify, selected));
    }
  }
  const output = new Int32Array(size);
  let m = 0;
  for (let r = 0; r < n; r++) if (selected[ranked[r]]) output[m++] = ranked[r];
  return { chosen: output, rule: { balance, seed, groups } };
}

/**
 * The selection orders by name: the REST enum and the gRPC enum mapping (SELECTION_ORDER_<NAME>)
 * derive from this registry. A new order is an entry here plus its proto enum value (and a test).
 */
export const SELECTION_ORDERS = {
  hardest: rankedOrder('hardest'),
  easiest: rankedOrder('easiest'),
  random: rankedOrder('random'),
  stratified: stratifiedOrder,
  moderate: moderateOrder,
  hierarchical: hierarchicalOrder,
} satisfies Record<string, OrderImplementation>;

export type SelectionOrder = keyof typeof SELECTION_ORDERS;

export const SELECTION_ORDER_NAMES = Object.keys(SELECTION_ORDERS) as SelectionOrder[];

/** What a request may name: an order, or `auto` (the service picks one: core/auto-policy.ts). */
export type RequestedOrder = SelectionOrder | 'auto';
export const REQUESTED_ORDER_NAMES: RequestedOrder[] = [...SELECTION_ORDER_NAMES, 'auto'];

/** The order of a selection request that names none (REST and gRPC alike). */
export const DEFAULT_SELECTION_ORDER: RequestedOrder = 'auto';

/** `select`, plus the rule that decides for items outside the dataset (see `decideKeep`). */
export function selectWithRule(input: SelectionInput, options: SelectionOptions): { chosen: Int32Array; rule: KeepRule } {
  const { scores, clusters, idHashes } = input;
  const n = scores.length;
  if (clusters.length !== n || idHashes.length !== n) {
    throw new RangeError(`scores, clusters and idHashes must have equal lengths (${n}, ${clusters.length}, ${idHashes.length})`);
  }
  for (let i = 0; i < n; i++) if (Number.isNaN(scores[i])) throw new RangeError(`scores[${i}] is NaN`);
  const size = budgetSize(options.budget, n);
  const seed = options.seed ?? 0;
  if (!Number.isInteger(seed)) throw new RangeError(`seed must be an integer, got ${seed}`);
  if (!Object.hasOwn(SELECTION_ORDERS, options.order)) throw new RangeError(`unknown order: ${String(options.order)}`);
  return SELECTION_ORDERS[options.order](input, { size, balance: options.balance ?? 'none', seed, outlierFraction: options.outlierFraction, bins: options.bins, quotas: options.quotas });
}

/** Per-group boundaries of a hardest/easiest/random selection, from what it kept. */
function boundaryRules(
  order: RankedOrder,
  { scores, clusters }: SelectionInput,
  keys: Uint32Array | null,
  chosen: Int32Array,
  balance: 'none' | 'cluster',
): GroupRule[] {
  const groupOf = (i: number) => (balance === 'cluster' ? clusters[i] : 0);
  const count = balance === 'cluster' ? clusterCount(clusters) : 1;
  const sizes = new Int32Array(count);
  for (let i = 0; i < scores.length; i++) sizes[groupOf(i)]++;
  const kept = new Int32Array(count);
  // The last kept item of each group in the order's ranking: the smallest score (hardest), the
  // largest (easiest) or the largest key (random).
  const bar = new Float64Array(count).fill(order === 'hardest' ? Infinity : -Infinity);
  for (const i of chosen) {
    const g = groupOf(i);
    kept[g]++;
    if (order === 'hardest') bar[g] = Math.min(bar[g], scores[i]);
    else if (order === 'easiest') bar[g] = Math.max(bar[g], scores[i]);
    else bar[g] = Math.max(bar[g], keys![i]);
  }
  return Array.from({ length: count }, (_, g): GroupRule => {
    if (sizes[g] === 0 || kept[g] === sizes[g]) return { kind: 'all' };
    if (kept[g] === 0) return { kind: 'none' };
    if (order === 'hardest') return { kind: 'scoreAtLeast', score: bar[g] };
    if (order === 'easiest') return { kind: 'scoreAtMost', score: bar[g] };
    return { kind: 'keyAtMost', key: bar[g] };
  });
}

function randomKeys(seed: number, idHashes: Uint32Array): Uint32Array {
  const keys = new Uint32Array(idHashes.length);
  for (let i = 0; i < keys.length; i++) keys[i] = randomKey(seed, idHashes[i]);
  return keys;
}

/** Number of clusters (max id + 1) after checking the ids. */
function clusterCount(clusters: Int32Array): number {
  let max = -1;
  for (let i = 0; i < clusters.length; i++) {
    const c = clusters[i];
    if (c < 0) throw new RangeError(`clusters[${i}] = ${c} is negative`);
    if (c > max) max = c;
  }
  return max + 1;
}

/** Largest-remainder quotas: each cluster keeps ⌊B·n_c/N⌋ or one more, summing exactly to B. */
export function clusterQuotas(clusters: Int32Array, budget: number): Int32Array {
  const sizes = new Int32Array(clusterCount(clusters));
  for (let i = 0; i < clusters.length; i++) sizes[clusters[i]]++;
  return quotasOfSizes(sizes, budget);
}

/** `clusterQuotas` from each cluster's item count (index = cluster id), for callers that only have counts. */
export function quotasOfSizes(sizes: Int32Array, budget: number): Int32Array {
  const k = sizes.length;
  let n = 0;
  for (let c = 0; c < k; c++) n += sizes[c];
  const quotas = new Int32Array(k);
  // B·n_c ≤ N² stays an exact integer in float64 for N < 2^26.
  const remainders = new Uint32Array(k);
  let assigned = 0;
  for (let c = 0; c < k; c++) {
    const share = budget * sizes[c];
    quotas[c] = Math.floor(share / n);
    remainders[c] = share - quotas[c] * n;
    assigned += quotas[c];
  }
  if (assigned < budget) {
    const largestFirst = new Uint32Array(k);
    for (let c = 0; c < k; c++) largestFirst[c] = ~remainders[c] >>> 0;
    const byRemainder = sortByKey(identity(k), largestFirst);
    for (let r = 0; assigned < budget; r++, assigned++) quotas[byRemainder[r]]++;
  }
  return quotas;
}

/** Walks `ranked` and keeps items while their cluster is under quota. */
function takeByQuota(ranked: Int32Array, clusters: Int32Array, quotas: Int32Array): Int32Array {
  let size = 0;
  for (let c = 0; c < quotas.length; c++) size += quotas[c];
  const taken = new Int32Array(quotas.length);
  const output = new Int32Array(size);
  let m = 0;
  for (let r = 0; r < ranked.length && m < size; r++) {
    const c = clusters[ranked[r]];
    if (taken[c] < quotas[c]) {
      taken[c]++;
      output[m++] = ranked[r];
    }
  }
  return output;
}

/** Stable counting sort of `ranked` by cluster: cluster c's items are `members[starts[c] .. starts[c + 1])`. */
function groupByCluster(ranked: Int32Array, clusters: Int32Array, k: number): { members: Int32Array; starts: Int32Array } {
  const starts = new Int32Array(k + 1);
  for (let r = 0; r < ranked.length; r++) starts[clusters[ranked[r]] + 1]++;
  for (let c = 0; c < k; c++) starts[c + 1] += starts[c];
  const cursor = starts.slice(0, k);
  const members = new Int32Array(ranked.length);
  for (let r = 0; r < ranked.length; r++) members[cursor[clusters[ranked[r]]]++] = ranked[r];
  return { members, starts };
}

interface Stratification {
  scores: Float32Array;
  randomKeys: Uint32Array;
  outlierFraction: number;
  bins: number;
  hardestKeys: Uint32Array;
  easiestKeys: Uint32Array;
  /** Marks set-aside items; groups are disjoint, so one mask serves them all. */
  outlier: Uint8Array;
}

/**
 * CCS on one group of items given in seeded random order: marks exactly `budget` of them in
 * `selected` (see `select`).
 */
function selectStratified(items: Int32Array, budget: number, context: Stratification, selected: Uint8Array): StratifiedTrace {
  if (budget === 0) return { kind: 'none' };
  const { scores, bins, outlier } = context;
  const m = items.length;
  // Hardest first with ties by index: a stable sort of the index-ordered items.
  const byIndex = Int32Array.from(items).sort();
  const hardestFirst = sortByKey(byIndex, context.hardestKeys);
  const outlierCount = Math.floor(context.outlierFraction * m);
  for (let r = 0; r < outlierCount; r++) outlier[hardestFirst[r]] = 1;

  if (budget >= m - outlierCount) {
    for (let r = outlierCount; r < m; r++) selected[hardestFirst[r]] = 1;
    // Set-aside items back in, least hard first; among equal scores lower index first.
    const easiestFirst = sortByKey(byIndex, context.easiestKeys);
    let missing = budget - (m - outlierCount);
    for (let r = 0; r < m && missing > 0; r++) {
      if (outlier[easiestFirst[r]]) {
        selected[easiestFirst[r]] = 1;
        missing--;
      }
    }
    let lastKept = -Infinity;
    for (let r = 0; r < m; r++) if (selected[items[r]] && scores[items[r]] > lastKept) lastKept = scores[items[r]];
    return { kind: 'scoreAtMost', score: lastKept };
  }

  let low = Infinity;
  let high = -Infinity;
  for (let r = outlierCount; r < m; r++) {
    const s = scores[hardestFirst[r]];
    if (s < low) low = s;
    if (s > high) high = s;
  }
  const width = (high - low) / bins;
  const binOf = (s: number): number => (width > 0 ? Math.min(bins - 1, Math.floor((s - low) / width)) : 0);

  // Bin the kept items, preserving the random order within each bin.
  const binStarts = new Int32Array(bins + 1);
  for (let r = 0; r < m; r++) if (!outlier[items[r]]) binStarts[binOf(scores[items[r]]) + 1]++;
  for (let b = 0; b < bins; b++) binStarts[b + 1] += binStarts[b];
  const cursor = binStarts.slice(0, bins);
  const binned = new Int32Array(m - outlierCount);
  for (let r = 0; r < m; r++) if (!outlier[items[r]]) binned[cursor[binOf(scores[items[r]])]++] = items[r];

  const binSizes = new Uint32Array(bins);
  for (let b = 0; b < bins; b++) binSizes[b] = binStarts[b + 1] - binStarts[b];
  const smallestFirst = Array.from(sortByKey(identity(bins), binSizes)).filter((b) => binSizes[b] > 0);
  const lastKeptRank = new Int32Array(bins).fill(-1);
  let remaining = budget;
  smallestFirst.forEach((b, position) => {
    const take = Math.min(binSizes[b], Math.floor(remaining / (smallestFirst.length - position)));
    for (let r = 0; r < take; r++) selected[binned[binStarts[b] + r]] = 1;
    if (take > 0) lastKeptRank[b] = take - 1;
    remaining -= take;
  });
  // Within a bin the kept items are a prefix of the seeded random order: its last key is the bar.
  const maxKey = new Float64Array(bins).fill(-1);
  for (let b = 0; b < bins; b++) if (lastKeptRank[b] >= 0) maxKey[b] = context.randomKeys[binned[binStarts[b] + lastKeptRank[b]]];
  const outlierFrom = outlierCount > 0 ? scores[hardestFirst[outlierCount - 1]] : Infinity;
  return { kind: 'bins', outlierFrom, low, width, bins, maxKey };
}

/**
 * `budget` split as evenly as possible across groups of the given sizes (max-min fair): a group
 * smaller than its even share is kept whole and its surplus goes to the others. Quotas sum to
 * min(budget, total); uncapped groups differ by at most one, the extra units going to the lower
 * ids (`quotasOfSizes` over equal weights).
 */
export function balancedQuotas(sizes: Int32Array, budget: number): Int32Array {
  if (!Number.isInteger(budget) || budget < 0) throw new RangeError(`budget must be a non-negative integer, got ${budget}`);
  const groups = sizes.length;
  let total = 0;
  for (let g = 0; g < groups; g++) {
    if (sizes[g] < 0) throw new RangeError(`sizes[${g}] = ${sizes[g]} is negative`);
    total += sizes[g];
  }
  const quotas = new Int32Array(groups);
  const smallestFirst = sortByKey(identity(groups), new Uint32Array(sizes));
  let remaining = Math.min(budget, total);
  let r = 0;
  for (; r < groups && sizes[smallestFirst[r]] * (groups - r) <= remaining; r++) {
    quotas[smallestFirst[r]] = sizes[smallestFirst[r]];
    remaining -= sizes[smallestFirst[r]];
  }
  // Every group left is larger than the even share of what remains, so none of them caps it.
  const uncapped = smallestFirst.slice(r).sort();
  const evenSplit = quotasOfSizes(new Int32Array(uncapped.length).fill(1), remaining);
  uncapped.forEach((g, i) => (quotas[g] = evenSplit[i]));
  return quotas;
}
