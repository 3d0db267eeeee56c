import { select, type SelectionOptions, type SelectionOrder } from '../core/selection.js';
import type { Sql } from '../store/database.js';
import { fnv1a32 } from '../core/random.js';
import { externalIdsOf, readScoreColumns, readScoredItems, type ScoredItems } from '../store/items.js';
import type { ServiceContext } from './context.js';
import { getDataset, type Dataset } from './datasets.js';
import { ServiceError } from './errors.js';

export interface SelectionRequest {
  order: SelectionOrder;
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
}

export interface Selection {
  /** The prototype version whose scores decided the selection. */
  version: number;
  /** Items in the dataset (scored under that version). */
  total: number;
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
  if (r.bins !== undefined && !(Number.isInteger(r.bins) && r.bins >= 1 && r.bins <= 10_000)) invalid('bins', 'bins must be an integer from 1 to 10000');
}

/**
 * Reads the active version and its scores in one REPEATABLE READ snapshot: a version switch
 * committing meanwhile cannot mix versions or remove the scores being read.
 */
export async function readActiveScores(ctx: ServiceContext, dataset: Dataset, withVectors = false): Promise<{ version: number; items: ScoredItems }> {
  return ctx.db.transaction(async (tx: Sql) => {
    await tx.query('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ');
    const [row] = await tx.query<{ version: number | null }>('SELECT active_version AS version FROM datasets WHERE id = $1', [dataset.id]);
    if (!row || row.version === null) noPrototypes(dataset);
    const items = await readScoredItems(tx, dataset.id, row.version!, withVectors ? dataset.dimension : null);
    return { version: row.version!, items };
  });
}

/** A computed selection: item row ids in policy order, read back to external ids page by page. */
export interface SelectionHandle {
  /** The prototype version whose scores decided the selection. */
  version: number;
  /** Items in the dataset (scored under that version). */
  total: number;
  /** Item row ids of the selection, in the policy's order. */
  itemIds: Float64Array;
}

/** External ids are read back in chunks of this many rows: memory stays bounded however large the selection. */
export const ID_CHUNK = 5000;

/** The core's options for a (checked) request; defaults: no balance, seed 0. */
export function selectionOptions(request: SelectionRequest): SelectionOptions {
  return {
    order: request.order,
    budget: request.fraction !== undefined ? { fraction: request.fraction } : { count: request.count! },
    balance: request.balance ?? 'none',
    seed: request.seed ?? 0,
    outlierFraction: request.outlierFraction,
    bins: request.bins,
  };
}

/** Runs a selection policy over the active version's scores; ties are broken by external id. */
export async function computeSelection(ctx: ServiceContext, datasetName: string, request: SelectionRequest): Promise<SelectionHandle> {
  checkSelectionRequest(request);
  return selectFrom(ctx, await getDataset(ctx, datasetName), request);
}

/** `computeSelection` for a dataset already looked up and a request already checked. */
async function selectFrom(ctx: ServiceContext, dataset: Dataset, request: SelectionRequest): Promise<SelectionHandle> {
  const { version, columns } = await ctx.db.transaction(async (tx: Sql) => {
    await tx.query('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ');
    const [row] = await tx.query<{ version: number | null }>('SELECT active_version AS version FROM datasets WHERE id = $1', [dataset.id]);
    if (!row || row.version === null) noPrototypes(dataset);
    return { version: row.version!, columns: await readScoreColumns(tx, dataset.id, row.version!) };
  });
  const chosen = select({ scores: columns.scores, clusters: columns.clusters, idHashes: columns.idHashes }, selectionOptions(request));
  const itemIds = new Float64Array(chosen.length);
  for (let i = 0; i < chosen.length; i++) itemIds[i] = columns.itemIds[chosen[i]];
  return { version, total: columns.n, itemIds };
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

/** Selects external ids of a dataset by a pruning policy, all at once (see `computeSelection`). */
export async function selectItems(ctx: ServiceContext, datasetName: string, request: SelectionRequest): Promise<Selection> {
  const handle = await computeSelection(ctx, datasetName, request);
  const externalIds: string[] = [];
  for await (const chunk of selectedExternalIds(ctx, handle.itemIds)) externalIds.push(...chunk);
  return { version: handle.version, total: handle.total, externalIds };
}

export interface SelectionPage extends Selection {
  /** Size of the whole selection. */
  size: number;
  /** Pass back as `cursor` for the next page; null on the last page. */
  nextCursor: string | null;
}

export const MAX_PAGE_LIMIT = 10_000;

interface Cursor {
  /** Prototype version of the first page. */
  v: number;
  /** Offset into the selection. */
  o: number;
  /** Hash of the request, so a cursor cannot be replayed with other parameters. */
  h: string;
}

function requestKey(datasetName: string, request: SelectionRequest): string {
  return JSON.stringify([datasetName, request.order, request.fraction ?? null, request.count ?? null, request.balance ?? 'none', request.seed ?? 0, request.outlierFraction ?? null, request.bins ?? null]);
}

function badCursor(message: string): never {
  throw new ServiceError('invalid', 'INVALID_CURSOR', message, { field: 'cursor' });
}

function decodeCursor(text: string): Cursor {
  try {
    const c = JSON.parse(Buffer.from(text, 'base64url').toString('utf8')) as Cursor;
    if (Number.isInteger(c.v) && Number.isInteger(c.o) && c.o >= 0 && typeof c.h === 'string') return c;
  } catch {
    // fall through
  }
  return badCursor('cursor is not one this server issued');
}

/**
 * Recently computed selections, so paging through one costs one computation, not one per page.
 * A few entries of 8 bytes per selected item; entries expire after a minute.
 */
const PAGE_CACHE_TTL_MS = 60_000;
const PAGE_CACHE_SIZE = 4;
const pageCache = new WeakMap<ServiceContext, Map<string, { handle: SelectionHandle; at: number }>>();

/** `request` must be checked already. */
async function cachedSelection(ctx: ServiceContext, datasetName: string, request: SelectionRequest): Promise<SelectionHandle> {
  let cache = pageCache.get(ctx);
  if (!cache) pageCache.set(ctx, (cache = new Map()));
  const key = requestKey(datasetName, request);
  const now = Date.now();
  for (const [k, entry] of cache) if (now - entry.at > PAGE_CACHE_TTL_MS) cache.delete(k);
  const hit = cache.get(key);
  const dataset = await getDataset(ctx, datasetName);
  if (hit && hit.handle.version === dataset.activeVersion) return hit.handle;
  const handle = await selectFrom(ctx, dataset, request);
  cache.delete(key);
  cache.set(key, { handle, at: now });
  while (cache.size > PAGE_CACHE_SIZE) cache.delete(cache.keys().next().value!);
  return handle;
}

/**
 * One page of a selection. The cursor pins the prototype version: when a refit switched versions
 * since the first page, the cursor is refused (CURSOR_STALE) and the caller starts over.
 */
export async function selectPage(ctx: ServiceContext, datasetName: string, request: SelectionRequest, page: { cursor?: string; limit: number }): Promise<SelectionPage> {
  checkSelectionRequest(request);
  if (!(Number.isInteger(page.limit) && page.limit >= 1 && page.limit <= MAX_PAGE_LIMIT)) {
    invalid('limit', `limit must be an integer from 1 to ${MAX_PAGE_LIMIT}`);
  }
  const hash = String(fnv1a32(requestKey(datasetName, request)));
  const cursor = page.cursor ? decodeCursor(page.cursor) : null;
  if (cursor && cursor.h !== hash) badCursor('cursor belongs to a selection with other parameters');
  const handle = await cachedSelection(ctx, datasetName, request);
  if (cursor && cursor.v !== handle.version) {
    throw new ServiceError('conflict', 'CURSOR_STALE', `prototype version changed from ${cursor.v} to ${handle.version} since the first page; start again without a cursor`, {
      cursorVersion: cursor.v,
      activeVersion: handle.version,
    });
  }
  const from = Math.min(cursor?.o ?? 0, handle.itemIds.length);
  const to = Math.min(from + page.limit, handle.itemIds.length);
  const externalIds: string[] = [];
  for await (const chunk of selectedExternalIds(ctx, handle.itemIds, from, to)) externalIds.push(...chunk);
  const nextCursor = to < handle.itemIds.length ? Buffer.from(JSON.stringify({ v: handle.version, o: to, h: hash } satisfies Cursor)).toString('base64url') : null;
  return { version: handle.version, total: handle.total, size: handle.itemIds.length, externalIds, nextCursor };
}
