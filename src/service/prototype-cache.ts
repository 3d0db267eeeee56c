import type { Sql } from '../store/database.js';
import { findPrototypeSetRow, loadPrototypeSet, type PrototypeSet } from '../store/prototypes.js';
import { ServiceError } from './errors.js';

/** Centroid bytes the cache holds at most (the most recently used set always stays). */
export const PROTOTYPE_CACHE_MAX_BYTES = 256 * 2 ** 20;

function bytesOf(set: PrototypeSet): number {
  return set.centroids.byteLength + set.fitCentroids.byteLength + set.counts.byteLength;
}

/**
 * Centroids of each dataset's active prototype set, cached in process, keyed by dataset id (a
 * dataset deleted and created again under its name has a new id, so it never meets the old
 * entry). Every use checks the set's id and revision in the database (one small query) — a set
 * id is never reused, and every mini-batch update bumps the revision — so an update by another
 * process or a new version is never missed; only the k × d centroid transfer is saved. Entries are
 * evicted least recently used beyond `maxBytes`, so sets of datasets deleted by another replica do
 * not pile up.
 */
export class PrototypeCache {
  /** In use order: the least recently used first. */
  private readonly sets = new Map<string, PrototypeSet>();
  private bytes = 0;

  constructor(private readonly maxBytes = PROTOTYPE_CACHE_MAX_BYTES) {}

  async get(db: Sql, datasetId: string, version: number, dim: number): Promise<PrototypeSet> {
    const row = await findPrototypeSetRow(db, datasetId, version);
    // The version this request read was superseded and cleaned up, or the dataset deleted, meanwhile.
    if (!row) {
      throw new ServiceError('conflict', 'PROTOTYPES_CHANGED', `prototype version ${version} was replaced (or its dataset deleted) while this request ran; retry`, {
        version,
      });
    }
    const cached = this.sets.get(datasetId);
    if (cached && cached.setId === row.setId && cached.revision === row.revision) {
      this.remember(datasetId, cached);
      return cached;
    }
    const loaded = await loadPrototypeSet(db, row, dim);
    this.remember(datasetId, loaded);
    return loaded;
  }

  /** Records the state a successful transaction just wrote (call after commit). */
  put(datasetId: string, set: PrototypeSet): void {
    this.remember(datasetId, set);
  }

  forget(datasetId: string): void {
    const old = this.sets.get(datasetId);
    if (!old) return;
    this.sets.delete(datasetId);
    this.bytes -= bytesOf(old);
  }

  /** Datasets with a cached set (for tests and diagnostics). */
  get size(): number {
    return this.sets.size;
  }

  private remember(datasetId: string, set: PrototypeSet): void {
    this.forget(datasetId);
    this.sets.set(datasetId, set);
    this.bytes += bytesOf(set);
    for (const [id, oldest] of this.sets) {
      if (this.bytes <= this.maxBytes || id === datasetId) break;
      this.sets.delete(id);
      this.bytes -= bytesOf(oldest);
    }
  }
}
