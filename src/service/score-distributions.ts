import type { KeepRule } from '../core/selection.js';
import type { AppliedPolicy } from '../core/auto-policy.js';
import { sortScores } from '../core/scores.js';
import type { Sql } from '../store/database.js';
import type { ItemFilter } from '../store/metadata-filter.js';
import { readScoreColumns, type ScoreColumns } from '../store/scores.js';

/** A dataset's score distribution under one version, and the selection boundaries computed on it. */
export interface Distribution {
  version: number;
  loadedAt: number;
  columns: ScoreColumns;
  sorted: Float32Array;
  /** Keep rules by policy, with the policy they resolved to (see score.ts). */
  rules: Map<string, { rule: KeepRule; applied: AppliedPolicy }>;
}

const DISTRIBUTION_TTL_MS = 10_000;
/** Distributions under metadata filters kept at most (the oldest goes first): each holds its items' score columns. */
const MAX_FILTERED = 32;

/**
 * Each dataset's score distribution (and under each metadata filter asked for, the matching
 * items'), reused across score calls for a few seconds: reading a million scores costs ~1 s, a
 * score call must not.
 */
export class ScoreDistributions {
  private readonly byDataset = new Map<string, Distribution>();
  private readonly byFilter = new Map<string, Distribution>();

  async get(db: Sql, datasetId: string, version: number, filter: (ItemFilter & { key: string }) | null = null): Promise<Distribution> {
    const cache = filter === null ? this.byDataset : this.byFilter;
    const key = filter === null ? datasetId : `${datasetId} ${filter.key}`;
    const cached = cache.get(key);
    if (cached && cached.version === version && Date.now() - cached.loadedAt < DISTRIBUTION_TTL_MS) return cached;
    const columns = await readScoreColumns(db, datasetId, version, undefined, filter);
    const fresh: Distribution = { version, loadedAt: Date.now(), columns, sorted: sortScores(columns.scores), rules: new Map() };
    cache.delete(key);
    cache.set(key, fresh);
    if (filter !== null && cache.size > MAX_FILTERED) cache.delete(cache.keys().next().value!);
    return fresh;
  }
}
