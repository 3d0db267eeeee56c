import { createHash } from 'node:crypto';
import { chooseAutoPolicy, imbalanceReport, type AppliedPolicy, type ImbalanceReport } from '../core/auto-policy.js';
import { buildHierarchy, hierarchicalQuotas } from '../core/hierarchical.js';
import { budgetSize, quotasOfSizes, select, type RequestedOrder, type SelectionOptions, type SelectionOrder } from '../core/selection.js';
import { isUuid } from '../store/datasets.js';
import {
  copyRankedExternalIds,
  countScores,
  decodeTextColumn,
  isSerializationFailure,
  rankedClusterCounts,
  rankedExternalIds,
  storeRankedSelection,
  streamAtActiveVersion,
  type RankedOrder,
  type RankedQuery,
} from '../store/ranked-selection.js';
import { readSelectionSlice, saveSelection, sweepSelections, touchSelection, type SelectionSummary } from '../store/selections.js';
import { fnv1a32 } from '../core/random.js';
import { externalIdsOf } from '../store/items.js';
import { clusterScoreStats, readAtActiveVersion, readScoreColumns, scoresPerCluster } from '../store/scores.js';
import type { Sql } from '../store/database.js';
import type { ServiceContext } from './context.js';
import { getDataset, type Dataset } from './datasets.js';
import { ServiceError } from './errors.js';
import { MAX_SELECTION_BINS } from './limits.js';
import { checkDedupRequest, stageDedup, type DedupOutcome, type DedupRequest } from './dedup-stage.js';
import { checkMetadataFilter, type MetadataFilter } from './metadata-filter.js';
import type { ItemFilter } from '../store/metadata-filter.js';

export interface SelectionRequest {
  /** `auto`: the service picks the order and balance from the data (`resolveOrder`). */
  order: RequestedOrder;
  /** Keep this fraction of the dataset, in (0, 1]. Exactly one of fraction and count. */
  fraction?: number;
  /** Keep this many items (clamped to the dataset size). */
  count?: number;
  balance?: 'none' | 'cluster';
  seed?: number;
  /** `stratified`: fraction of the hardest items set aside as likely outliers (CCS β). */
  outlierFraction?: number;
  /** `stratified`: number of equal-width score bins. */
  bins?: number;
  /** Select among the items whose metadata matches; the budget applies to them. */
  filter?: MetadataFilter;
  /** Dedup, then prune: near-duplicates go first, then the policy runs over what remains. */
  dedup?: DedupRequest;
}

export type { AppliedPolicy };

/** What a selection reports beyond its ids. */
export interface SelectionReport {
  policy: AppliedPolicy;
  /** How the selection changed the clusters' shares, next to random sampling's; null for an empty selection. */
  imbalance: ImbalanceReport | null;
}

export interface Selection extends SelectionReport {
  /** The prototype version whose scores decided the selection. */
  version: number;
  /** Items in the dataset (scored under that version). */
  total: number;
  /** Items the selection chose from: those matching its filter (`total` without one). */
  matched: number;
  /** The dedup step of a dedup-then-prune selection (how many it dropped); null without one. */
  dedup: DedupOutcome | null;
  /** Selected external ids, in the policy's order. */
  externalIds: string[];
}

function noPrototypes(dataset: Dataset): never {
  throw new ServiceError('conflict', 'NO_PROTOTYPES', `dataset ${dataset.name} has no prototypes yet: ingest more items or request a refit`, {
    dataset: dataset.name,
  });
}

function invalid(field: string, message: string): never {
  throw new ServiceError('invalid', 'INVALID_SELECTION', message, { field });
}

/** Validates a selection request's parameters (also used for the policy of a score call). */
export function checkSelectionRequest(r: SelectionRequest): void {
  if ((r.fraction === undefined) === (r.count === undefined)) invalid('fraction', 'give exactly one of fraction and count');
  if (r.fraction !== undefined && !(r.fraction > 0 && r.fraction <= 1)) invalid('fraction', 'fraction must be in (0, 1]');
  if (r.count !== undefined && !(Number.isInteger(r.count) && r.count >= 0)) invalid('count', 'count must be a non-negative integer');
  if (r.seed !== undefined && !Number.isSafeInteger(r.seed)) invalid('seed', 'seed must be an integer');
  if (r.outlierFraction !== undefined && !(r.outlierFraction >= 0 && r.outlierFraction < 1)) invalid('outlierFraction', 'outlierFraction must be in [0, 1)');
  if (r.bins !== undefined && !(Number.isInteger(r.bins) && r.bins >= 1 && r.bins <= MAX_SELECTION_BINS)) invalid('bins', `bins must be an integer from 1 to ${MAX_SELECTION_BINS}`);
  checkMetadataFilter(r.filter);
  if (r.dedup !== undefined) checkDedupRequest(r.dedup);
}

/** A computed selection: item row ids in policy order, read back to external ids page by page. */
export interface SelectionHandle extends SelectionReport {
  /** The prototype version whose scores decided the selection. */
  version: number;
  /** Items in the dataset (scored under that version). */
  total: number;
  /** Items matching the request's filter. */
  matched: number;
  dedup: DedupOutcome | null;
  /** Item row ids of the selection, in the policy's order. */
  itemIds: Float64Array;
}

/** External ids are read back in chunks of this many rows: memory stays bounded however large the selection. */
export const ID_CHUNK = 5000;

/** The core's options for a (checked) request; defaults: no balance, seed 0. */
export function selectionOptions(request: SelectionRequest): SelectionOptions {
  if (request.order === 'auto') throw new Error('order=auto must be resolved first (resolveOrder)');
  return {
    order: request.order,
    budget: request.fraction !== undefined ? { fraction: request.fraction } : { count: request.count! },
    balance: request.balance ?? 'none',
    seed: request.seed ?? 0,
    outlierFraction: request.outlierFraction,
    bins: request.bins,
  };
}

/**
 * Orders the database serves from its score index: hardest and easiest, with or without cluster
 * balance. The rest run in memory (`computeSelection`).
 */
function rankedOrderOf(request: SelectionRequest): RankedOrder | null {
  return request.order === 'hardest' || request.order === 'easiest' ? request.order : null;
}

/** The items a selection chooses from, in its snapshot: counts by stage and the store's predicate. */
interface Population {
  /** Items scored under the version. */
  total: number;
  /** Of those, the ones matching the filter. */
  matched: number;
  /** The dedup step, when the request has one. */
  dedup: DedupOutcome | null;
  /** What the policy then runs over (null: every item). */
  predicate: ItemFilter | null;
  /** Items the policy runs over: the matched ones the dedup step left. */
  remaining: number;
  /** Items the policy keeps: the budget of the matched items, at most what the dedup step left. */
  size: number;
}

/**
 * Resolves a (checked) request's population in the snapshot `tx` reads: the filter, then the dedup
 * step (staged in `tx`), and the budget — a fraction is of the matched items, so dedup-then-prune
 * reaches the requested final size when enough items remain.
 */
async function populationOf(tx: Sql, dataset: Dataset, version: number, request: SelectionRequest): Promise<Population> {
  const filter = checkMetadataFilter(request.filter);
  const total = await countScores(tx, dataset.id, version);
  const matched = filter === null ? total : await countScores(tx, dataset.id, version, filter);
  const dedup = request.dedup ? await stageDedup(tx, dataset, version, request.dedup, request.seed ?? 0, filter) : null;
  const predicate = dedup === null ? filter : { ...(filter ?? { contains: null, where: [] }), withoutDedupDrops: true };
  // The step's drops are counted among the matched items, so this is exact.
  const remaining = matched - (dedup?.dropped ?? 0);
  return { total, matched, dedup, predicate, remaining, size: Math.min(budgetSize(selectionOptions(request).budget, matched), remaining) };
}

/**
 * The ranked query for a (checked) request in the snapshot `tx` reads: the budget resolved against
 * the population (see `populationOf`), and per-cluster quotas as the core computes them.
 */
async function planRanked(
  tx: Sql,
  dataset: Dataset,
  version: number,
  order: RankedOrder,
  request: SelectionRequest,
): Promise<{ query: RankedQuery; population: Population; imbalance: ImbalanceReport | null }> {
  const population = await populationOf(tx, dataset, version, request);
  const sizes = clusterSizesOf(await scoresPerCluster(tx, dataset.id, version, population.predicate));
  if ((request.balance ?? 'none') === 'none') {
    const query: RankedQuery = { datasetId: dataset.id, version, order, size: population.size, quotas: null, filter: population.predicate };
    const kept = clusterSizesOf(await rankedClusterCounts(tx, query), sizes.length);
    return { population, query, imbalance: imbalanceReport(sizes, kept) };
  }
  const quotas = quotasOfSizes(sizes, population.size);
  const query: RankedQuery = {
    datasetId: dataset.id,
    version,
    order,
    size: population.size,
    quotas: Array.from(quotas, (quota, cluster) => ({ cluster, quota })),
    filter: population.predicate,
  };
  return { population, query, imbalance: imbalanceReport(sizes, quotas) };
}

/** Per-cluster counts as an array indexed by cluster (at least `length` long). */
function clusterSizesOf(counts: { cluster: number; n: number }[], length = 0): Int32Array<ArrayBuffer> {
  const sizes = new Int32Array(counts.reduce((k, c) => Math.max(k, c.cluster + 1), length));
  for (const c of counts) sizes[c.cluster] = c.n;
  return sizes;
}

/**
 * The request with a concrete order: `auto` becomes what `chooseAutoPolicy` picks from the matched
 * items' per-cluster counts and mean scores under the active version (read in a snapshot of its own).
 */
async function resolveOrder(ctx: ServiceContext, dataset: Dataset, request: SelectionRequest): Promise<{ request: SelectionRequest; policy: AppliedPolicy }> {
  if (request.order !== 'auto') return { request, policy: { order: request.order, balance: request.balance ?? 'none', auto: null } };
  const filter = checkMetadataFilter(request.filter);
  const read = await readAtActiveVersion(ctx.db, dataset.id, (tx, version) => clusterScoreStats(tx, dataset.id, version, filter));
  if (!read) noPrototypes(dataset);
  const stats = read.value;
  const sizes = clusterSizesOf(stats);
  const means = new Float64Array(sizes.length);
  for (const c of stats) means[c.cluster] = c.mean;
  const matched = sizes.reduce((sum, n) => sum + n, 0);
  const budget = request.fraction !== undefined ? { fraction: request.fraction } : { count: request.count! };
  const auto = chooseAutoPolicy(sizes, means, budgetSize(budget, matched));
  return { request: { ...request, order: auto.order, balance: auto.balance }, policy: { order: auto.order, balance: auto.balance, auto } };
}

/** A selection streamed in policy order: its version, counts, and the external ids chunk by chunk. */
export interface SelectionStream extends SelectionReport {
  version: number;
  total: number;
  matched: number;
  /** The dedup step of a dedup-then-prune selection; null without one. */
  dedup: DedupOutcome | null;
  size: number;
  externalIds: AsyncIterable<string[]>;
  /** Ends the stream and frees what it holds; call it when the consumer goes away (a no-op once done). */
  cancel: () => void;
}

/**
 * Opens a selection as a stream. Hardest/easiest stream from the database in one snapshot (one
 * COPY in policy order; nothing of the selection is held in memory); the other orders run the
 * core over the score columns and read the chosen ids back in chunks.
 */
export async function streamSelection(ctx: ServiceContext, datasetName: string, asked: SelectionRequest): Promise<SelectionStream> {
  checkSelectionRequest(asked);
  const dataset = await getDataset(ctx, datasetName);
  const { request, policy } = await resolveOrder(ctx, dataset, asked);
  const order = rankedOrderOf(request);
  if (order === null) {
    const handle = await selectFrom(ctx, dataset, request, policy);
    return {
      version: handle.version,
      total: handle.total,
      matched: handle.matched,
      dedup: handle.dedup,
      policy,
      imbalance: handle.imbalance,
      size: handle.itemIds.length,
      externalIds: selectedExternalIds(ctx, handle.itemIds),
      cancel: () => undefined,
    };
  }
  const stream = await streamAtActiveVersion(ctx.db, dataset.id, async (tx, version) => {
    const { query, population, imbalance } = await planRanked(tx, dataset, version, order, request);
    return {
      head: { total: population.total, matched: population.matched, dedup: population.dedup, policy, imbalance, size: query.size },
      chunks: copyRankedExternalIds(tx, query),
    };
  });
  if (!stream) noPrototypes(dataset);
  return { version: stream.version, ...stream.head, externalIds: inChunksOf(ID_CHUNK, decodeTextColumn(stream.chunks)), cancel: stream.cancel };
}

/** Re-cuts `source` into arrays of `size` (the last one shorter, none empty): fewer, fuller messages and writes downstream. */
export async function* inChunksOf(size: number, source: AsyncIterable<string[]> | Iterable<string[]>): AsyncGenerator<string[]> {
  let chunk: string[] = [];
  for await (const ids of source) {
    for (const id of ids) {
      chunk.push(id);
      if (chunk.length === size) {
        yield chunk;
        chunk = [];
      }
    }
  }
  if (chunk.length > 0) yield chunk;
}

/**
 * Runs a selection policy in memory over the active version's scores (the core; ties are broken by
 * external id). `streamSelection` serves hardest/easiest from the database instead, with the same result.
 */
export async function computeSelection(ctx: ServiceContext, datasetName: string, asked: SelectionRequest): Promise<SelectionHandle> {
  checkSelectionRequest(asked);
  const dataset = await getDataset(ctx, datasetName);
  const { request, policy } = await resolveOrder(ctx, dataset, asked);
  return selectFrom(ctx, dataset, request, policy);
}

/** `computeSelection` for a dataset already looked up and a request already checked and resolved. */
async function selectFrom(ctx: ServiceContext, dataset: Dataset, request: SelectionRequest, policy: AppliedPolicy): Promise<SelectionHandle> {
  const read = await readAtActiveVersion(ctx.db, dataset.id, async (tx, version) => {
    const population = await populationOf(tx, dataset, version, request);
    const columns = await readScoreColumns(tx, dataset.id, version, population.remaining, population.predicate);
    const prototypes = request.order === 'hierarchical' ? await ctx.prototypes.get(tx, dataset.id, version, dataset.dimension) : null;
    return { population, columns, prototypes };
  });
  if (!read) noPrototypes(dataset);
  const { version, value } = read;
  const { columns, population, prototypes } = value;
  const sizes = clusterSizesOfColumn(columns.clusters, prototypes?.k ?? 0);
  // The budget as the resolved count: a fraction is of the matched items, not of what dedup left.
  const options: SelectionOptions = { ...selectionOptions(request), budget: { count: population.size } };
  if (prototypes !== null) {
    const tree = await buildHierarchy(prototypes.centroids, prototypes.k, prototypes.dim, sizes, { seed: request.seed ?? 0, kernel: ctx.kernel });
    options.quotas = hierarchicalQuotas(tree, population.size);
  }
  const chosen = select({ scores: columns.scores, clusters: columns.clusters, idHashes: columns.idHashes }, options);
  const itemIds = new Float64Array(chosen.length);
  const kept = new Int32Array(sizes.length);
  for (let i = 0; i < chosen.length; i++) {
    itemIds[i] = columns.itemIds[chosen[i]];
    kept[columns.clusters[chosen[i]]]++;
  }
  return { version, total: population.total, matched: population.matched, dedup: population.dedup, policy, imbalance: imbalanceReport(sizes, kept), itemIds };
}

/** Items per cluster of a cluster column (at least `length` clusters). */
function clusterSizesOfColumn(clusters: Int32Array, length: number): Int32Array {
  let k = length;
  for (let i = 0; i < clusters.length; i++) k = Math.max(k, clusters[i] + 1);
  const sizes = new Int32Array(k);
  for (let i = 0; i < clusters.length; i++) sizes[clusters[i]]++;
  return sizes;
}

/**
 * External ids of `itemIds[from, to)` in order, a chunk of ID_CHUNK at a time. Items deleted after
 * the selection was computed are left out.
 */
export async function* selectedExternalIds(ctx: ServiceContext, itemIds: Float64Array, from = 0, to = itemIds.length): AsyncGenerator<string[]> {
  for (let at = from; at < to; at += ID_CHUNK) {
    const ids = await externalIdsOf(ctx.db, itemIds.subarray(at, Math.min(to, at + ID_CHUNK)));
    yield ids.filter((id): id is string => id !== null);
  }
}

/** Selects external ids of a dataset by a pruning policy, all at once (see `streamSelection`). */
export async function selectItems(ctx: ServiceContext, datasetName: string, request: SelectionRequest): Promise<Selection> {
  const stream = await streamSelection(ctx, datasetName, request);
  const externalIds: string[] = [];
  for await (const chunk of stream.externalIds) for (const id of chunk) externalIds.push(id);
  return { version: stream.version, total: stream.total, matched: stream.matched, dedup: stream.dedup, policy: stream.policy, imbalance: stream.imbalance, externalIds };
}

export interface SelectionPage extends Selection {
  /** Size of the whole selection (as the first page computed it). */
  size: number;
  /** Pass back as `cursor` for the next page; null on the last page. */
  nextCursor: string | null;
}

export const MAX_PAGE_LIMIT = 10_000;

/**
 * A stored selection is kept this long after the last page read it (it is extended at most once a
 * minute, so paging does not write a row per page).
 */
export const STORED_SELECTION_TTL_MS = 15 * 60_000;
const TOUCH_AFTER_MS = 60_000;
/** Stored selections kept per dataset, most recently used first; older ones answer CURSOR_STALE. */
export const STORED_SELECTIONS_PER_DATASET = 16;
/** Reads per page at most when items deleted since the first page leave gaps to fill. */
const MAX_READS_PER_PAGE = 8;
/** Positions a stored selection can have: a bytea holds at most 1 GB, 8 bytes per id. */
const MAX_OFFSET = 2 ** 27;

interface Cursor {
  /** The stored selection (row of `selections`) the first page wrote. */
  s: string;
  /** Offset into it: the position after the last id handed out. */
  o: number;
  /** Hash of the request, so a cursor cannot be replayed with other parameters. */
  h: string;
}

function requestKey(datasetName: string, request: SelectionRequest): string {
  return JSON.stringify([
    datasetName,
    request.order,
    request.fraction ?? null,
    request.count ?? null,
    request.balance ?? 'none',
    request.seed ?? 0,
    request.outlierFraction ?? null,
    request.bins ?? null,
    // Absent without a filter: cursors issued before filters existed stay valid.
    ...(request.filter === undefined && request.dedup === undefined ? [] : [checkMetadataFilter(request.filter)?.key ?? null]),
    ...(request.dedup === undefined ? [] : [request.dedup.epsilon ?? null, request.dedup.jobId ?? null, request.dedup.keep ?? 'farthest', request.dedup.keepField ?? null]),
  ]);
}

function badCursor(message: string): never {
  throw new ServiceError('invalid', 'INVALID_CURSOR', message, { field: 'cursor' });
}

function staleCursor(reason: 'expired' | 'dataset_recreated' | 'legacy', message: string): never {
  throw new ServiceError('conflict', 'CURSOR_STALE', `${message}; start again without a cursor`, { reason });
}

function decodeCursor(text: string): Cursor | { legacy: true; h: string } {
  try {
    const c = JSON.parse(Buffer.from(text, 'base64url').toString('utf8')) as Partial<Cursor> & { v?: unknown };
    if (c && typeof c === 'object' && Number.isSafeInteger(c.o) && c.o! >= 0 && c.o! <= MAX_OFFSET && typeof c.h === 'string') {
      if (typeof c.s === 'string' && isUuid(c.s)) return { s: c.s, o: c.o!, h: c.h };
      // A cursor of the version-pinning format that came before stored selections.
      if (c.s === undefined && Number.isInteger(c.v)) return { legacy: true, h: c.h };
    }
  } catch {
    // fall through
  }
  return badCursor('cursor is not one this server issued');
}

function encodeCursor(cursor: Cursor): string {
  return Buffer.from(JSON.stringify(cursor)).toString('base64url');
}

/**
 * External ids of `limit` selected items from position `from` on, skipping items deleted since the
 * selection was computed (so a page stays full where it can); `read(from, count)` gives the item
 * ids at positions [from, from + count). Returns the ids and the position after the last one read.
 */
async function fillPage(
  ctx: ServiceContext,
  size: number,
  from: number,
  limit: number,
  read: (from: number, count: number) => Promise<Float64Array>,
): Promise<{ externalIds: string[]; next: number }> {
  const externalIds: string[] = [];
  let at = from;
  for (let reads = 0; reads < MAX_READS_PER_PAGE && at < size && externalIds.length < limit; reads++) {
    // Never more positions than ids still wanted: the page cannot overshoot, so `at` is exact.
    const count = Math.min(size - at, limit - externalIds.length);
    const itemIds = await read(at, count);
    if (itemIds.length === 0) break; // the stored row is shorter than its size says (cannot happen)
    for await (const ids of selectedExternalIds(ctx, itemIds)) externalIds.push(...ids);
    at += itemIds.length;
  }
  return { externalIds, next: at };
}

/**
 * One page of a selection. The first page (no cursor) computes the selection; when more pages
 * follow it stores the ordered item ids (table `selections`) and the cursor names that stored
 * selection and an offset. Every later page, on any replica, reads the stored ids: the pages
 * together are exactly the first page's selection — same prototype version, same item set —
 * whatever was ingested or refitted since, minus items deleted since (skipped, and the page filled
 * from further on). A cursor whose stored selection expired or was evicted, or whose dataset was
 * deleted and re-created, answers CURSOR_STALE.
 */
export async function selectPage(ctx: ServiceContext, datasetName: string, asked: SelectionRequest, page: { cursor?: string; limit: number }): Promise<SelectionPage> {
  checkSelectionRequest(asked);
  if (!(Number.isInteger(page.limit) && page.limit >= 1 && page.limit <= MAX_PAGE_LIMIT)) {
    invalid('limit', `limit must be an integer from 1 to ${MAX_PAGE_LIMIT}`);
  }
  const key = requestKey(datasetName, asked);
  const hash = String(fnv1a32(key));
  const cursor = page.cursor ? decodeCursor(page.cursor) : null;
  if (cursor && cursor.h !== hash) badCursor('cursor belongs to a selection with other parameters');
  if (cursor && 'legacy' in cursor) staleCursor('legacy', 'cursor is of an older format');
  const dataset = await getDataset(ctx, datasetName);
  const requestHash = createHash('sha256').update(key).digest('hex');

  if (!cursor) {
    const { request, policy } = await resolveOrder(ctx, dataset, asked);
    const order = rankedOrderOf(request);
    if (order !== null) return firstRankedPage(ctx, dataset, order, request, policy, requestHash, hash, page.limit);
    const handle = await selectFrom(ctx, dataset, request, policy);
    const size = handle.itemIds.length;
    const { externalIds, next } = await fillPage(ctx, size, 0, page.limit, async (from, count) => handle.itemIds.subarray(from, from + count));
    let nextCursor: string | null = null;
    if (next < size) {
      if (size > MAX_OFFSET) invalid('limit', `a selection of more than ${MAX_OFFSET} ids cannot be paged: stream it (format=ndjson or csv)`);
      const id = await saveSelection(
        ctx.db,
        { datasetId: dataset.id, version: handle.version, requestHash, total: handle.total, summary: summaryOf(handle), itemIds: handle.itemIds },
        STORED_SELECTION_TTL_MS,
        STORED_SELECTIONS_PER_DATASET,
      );
      nextCursor = encodeCursor({ s: id, o: next, h: hash });
    }
    return { version: handle.version, total: handle.total, matched: handle.matched, dedup: handle.dedup, policy, imbalance: handle.imbalance, size, externalIds, nextCursor };
  }

  const first = await readSelectionSlice(ctx.db, cursor.s, cursor.o, page.limit);
  if (!first) staleCursor('expired', 'the selection this cursor pages through is no longer stored (it expired, newer ones evicted it, or its dataset was deleted)');
  if (first.selection.datasetId !== dataset.id) {
    // Same name and parameters (the cursor's hash matched), another dataset id: the one the first page saw was deleted.
    staleCursor('dataset_recreated', `dataset ${datasetName} was deleted and created again since the first page`);
  }
  if (first.selection.requestHash !== requestHash) badCursor('cursor belongs to a selection with other parameters');
  const selection = first.selection;
  let firstRead = true;
  const { externalIds, next } = await fillPage(ctx, selection.size, cursor.o, page.limit, async (from, count) => {
    if (firstRead) return ((firstRead = false), first.itemIds);
    const slice = await readSelectionSlice(ctx.db, cursor.s, from, count);
    if (!slice) staleCursor('expired', 'the selection this cursor pages through expired while this page was read');
    return slice.itemIds;
  });
  if (selection.remainingMs < STORED_SELECTION_TTL_MS - TOUCH_AFTER_MS) await touchSelection(ctx.db, selection.id, STORED_SELECTION_TTL_MS);
  const end = Math.min(next, selection.size);
  const nextCursor = end < selection.size ? encodeCursor({ s: selection.id, o: end, h: hash }) : null;
  const { summary } = selection;
  return {
    version: selection.version,
    total: selection.total,
    matched: summary.matched ?? selection.total,
    dedup: summary.dedup ?? null,
    // Rows stored before policies were reported name none: the asked order, as it then ran.
    policy: (summary.policy as AppliedPolicy | undefined) ?? { order: asked.order === 'auto' ? 'hardest' : asked.order, balance: asked.balance ?? 'none', auto: null },
    imbalance: (summary.imbalance as ImbalanceReport | null | undefined) ?? null,
    size: selection.size,
    externalIds,
    nextCursor,
  };
}

/** What a stored selection keeps for its later pages. */
function summaryOf(counts: { total: number; matched: number; dedup: DedupOutcome | null } & SelectionReport): SelectionSummary {
  return {
    ...(counts.matched !== counts.total && { matched: counts.matched }),
    ...(counts.dedup && { dedup: counts.dedup }),
    policy: counts.policy,
    imbalance: counts.imbalance,
  };
}

/** Times a first page is tried when an identical stored selection was written meanwhile (REPEATABLE READ). */
const FIRST_PAGE_ATTEMPTS = 3;

/**
 * The first page of a hardest/easiest selection, in one snapshot: when more pages follow, the
 * database stores the ordered item ids itself (INSERT … SELECT, nothing through Node) and the page
 * is the stored row's head. Later pages read the stored ids like any other order's.
 */
async function firstRankedPage(
  ctx: ServiceContext,
  dataset: Dataset,
  order: RankedOrder,
  request: SelectionRequest,
  policy: AppliedPolicy,
  requestHash: string,
  hash: string,
  limit: number,
): Promise<SelectionPage> {
  for (let attempt = 1; ; attempt++) {
    try {
      const read = await readAtActiveVersion(ctx.db, dataset.id, async (tx, version) => {
        const { query, population, imbalance } = await planRanked(tx, dataset, version, order, request);
        const { total, matched, dedup } = population;
        if (query.size <= limit) return { total, matched, dedup, imbalance, size: query.size, externalIds: await rankedExternalIds(tx, query, query.size), stored: null };
        if (query.size > MAX_OFFSET) invalid('limit', `a selection of more than ${MAX_OFFSET} ids cannot be paged: stream it (format=ndjson or csv)`);
        const summary = summaryOf({ ...population, policy, imbalance });
        const stored = await storeRankedSelection(tx, query, { datasetId: dataset.id, version, requestHash, total, summary }, STORED_SELECTION_TTL_MS);
        // The head of the stored row, in the same snapshot: every item in it exists.
        const head = await readSelectionSlice(tx, stored, 0, limit);
        const externalIds = (await externalIdsOf(tx, head!.itemIds)) as string[];
        return { total, matched, dedup, imbalance, size: query.size, externalIds, stored };
      });
      if (!read) noPrototypes(dataset);
      const { total, matched, dedup, imbalance, size, externalIds, stored } = read.value;
      if (stored !== null) await sweepSelections(ctx.db, dataset.id, STORED_SELECTIONS_PER_DATASET);
      const nextCursor = stored === null ? null : encodeCursor({ s: stored, o: limit, h: hash });
      return { version: read.version, total, matched, dedup, policy, imbalance, size, externalIds, nextCursor };
    } catch (error) {
      if (!isSerializationFailure(error) || attempt === FIRST_PAGE_ATTEMPTS) throw error;
    }
  }
}
