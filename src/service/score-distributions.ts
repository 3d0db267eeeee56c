import type { KeepRule } from '../core/selection.js';
import { sortScores } from '../core/scores.js';
import type { Sql } from '../store/database.js';
import { readScoreColumns, type ScoreColumns } from '../store/scores.js';

/** A dataset's score distribution under one version, and the selection boundaries computed on it. */
export interface Distribution {
  version: number;
  loadedAt: number;
  columns: ScoreColumns;
  sorted: Float32Array;
  /** Keep rules by policy (see score.ts). */
  rules: Map<string, KeepRule>;
}

const DISTRIBUTION_TTL_MS = 10_000;

/**
 * Each dataset's score distribution, reused across score calls for a few seconds: reading a
 * million scores costs ~1 s, a score call must not.
 */
export class ScoreDistributions {
  private readonly byDataset = new Map<string, Distribution>();

  async get(db: Sql, datasetId: string, version: number): Promise<Distribution> {
    const cached = this.byDataset.get(datasetId);
    if (cached && cached.version === version && Date.now() - cached.loadedAt < DISTRIBUTION_TTL_MS) return cached;
    const columns = await readScoreColumns(db, datasetId, version);
    const fresh: Distribution = { version, loadedAt: Date.now(), columns, sorted: sortScores(columns.scores), rules: new Map() };
    this.byDataset.set(datasetId, fresh);
    return fresh;
  }
}
