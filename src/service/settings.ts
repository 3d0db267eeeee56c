import { DEFAULT_REFIT_THRESHOLDS, type RefitThresholds } from '../core/incremental.js';

/** Per-dataset pruning settings, stored as datasets.settings (jsonb). */
export interface DatasetSettings {
  /** Seed of k-means initialisation (refits are reproducible). */
  seed: number;
  /** The first full fit is scheduled automatically once the dataset holds this many items. */
  minItemsForFit: number;
  /** Schedule a refit automatically when drift or growth passes `refit`. */
  autoRefit: boolean;
  refit: RefitThresholds;
  /** Near-duplicate threshold: cosine similarity ≥ 1 − ε counts as a duplicate. */
  duplicateEpsilon: number;
  /** Lloyd iteration cap and tolerance of full fits. */
  maxIterations: number;
  tolerance: number;
}

export const DEFAULT_SETTINGS: Readonly<DatasetSettings> = Object.freeze({
  seed: 0,
  minItemsForFit: 1000,
  autoRefit: true,
  refit: { ...DEFAULT_REFIT_THRESHOLDS },
  duplicateEpsilon: 0.05,
  maxIterations: 30,
  tolerance: 1e-4,
});

/** Stored settings over the defaults (older rows may lack newer keys). */
export function resolveSettings(stored: Record<string, unknown> | null | undefined): DatasetSettings {
  const s = (stored ?? {}) as Partial<DatasetSettings>;
  return { ...DEFAULT_SETTINGS, ...s, refit: { ...DEFAULT_SETTINGS.refit, ...(s.refit ?? {}) } };
}
