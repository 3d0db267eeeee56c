import type { Sql } from '../store/database.js';
import { findPrototypeSetRow, loadPrototypeSet, type PrototypeSet } from '../store/prototypes.js';

/**
 * Centroids of each dataset's active prototype set, cached in process. Every use checks the set's
 * id and revision in the database (one small query), so an update by another process or a new
 * version is never missed; only the k × d centroid transfer is saved.
 */
export class PrototypeCache {
  private readonly sets = new Map<string, PrototypeSet>();

  async get(db: Sql, datasetId: string, version: number, dim: number): Promise<PrototypeSet> {
    const row = await findPrototypeSetRow(db, datasetId, version);
    if (!row) throw new Error(`prototype set ${version} of dataset ${datasetId} is missing`);
    const cached = this.sets.get(datasetId);
    if (cached && cached.setId === row.setId && cached.revision === row.revision) return cached;
    const loaded = await loadPrototypeSet(db, row, dim);
    this.sets.set(datasetId, loaded);
    return loaded;
  }

  /** Records the state a successful transaction just wrote (call after commit). */
  put(datasetId: string, set: PrototypeSet): void {
    this.sets.set(datasetId, set);
  }

  forget(datasetId: string): void {
    this.sets.delete(datasetId);
  }
}
