import { Type, type Static } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { DEFAULT_REFIT_THRESHOLDS } from '../core/incremental.js';

/**
 * Per-dataset pruning settings, stored as datasets.settings (jsonb), declared once: the service's
 * type, the defaults, the REST request and response schemas (and so OpenAPI), validation and the
 * gRPC conversion (by field name) all derive from this schema. A new setting is a property here,
 * a field of the proto's DatasetSettings message, and its consumer.
 */
const RefitThresholdsSchema = Type.Object(
  {
    meanDrift: Type.Number({ exclusiveMinimum: 0, default: DEFAULT_REFIT_THRESHOLDS.meanDrift, description: 'Mean centroid drift (1 − cos) since the last full fit that schedules a refit' }),
    maxDrift: Type.Number({ exclusiveMinimum: 0, default: DEFAULT_REFIT_THRESHOLDS.maxDrift, description: 'Largest single-centroid drift that schedules a refit' }),
    arrivedFraction: Type.Number({
      exclusiveMinimum: 0,
      maximum: 1,
      default: DEFAULT_REFIT_THRESHOLDS.arrivedFraction,
      description: 'Fraction of items arrived since the last full fit that schedules a refit',
    }),
  },
  { additionalProperties: false },
);

export const DatasetSettingsSchema = Type.Object(
  {
    seed: Type.Integer({ default: 0, description: 'Seed of k-means initialisation (refits are reproducible)' }),
    minItemsForFit: Type.Integer({ minimum: 1, default: 1000, description: 'The first fit runs once the dataset holds this many items' }),
    autoRefit: Type.Boolean({ default: true, description: 'Schedule a refit automatically when drift or growth passes `refit`' }),
    refit: RefitThresholdsSchema,
    duplicateEpsilon: Type.Number({ minimum: 0, maximum: 2, default: 0.05, description: 'Near-duplicate threshold ε: cosine similarity ≥ 1 − ε counts as a duplicate' }),
    maxIterations: Type.Integer({ minimum: 0, default: 30, description: 'Lloyd iteration cap of full fits' }),
    tolerance: Type.Number({ minimum: 0, default: 1e-4, description: 'Convergence tolerance of full fits' }),
  },
  { additionalProperties: false },
);

export type DatasetSettings = Static<typeof DatasetSettingsSchema>;

/** The settings a create request may give: any of them, refit thresholds too (unset: the default). */
export const DatasetSettingsInputSchema = Type.Partial(
  Type.Object({ ...DatasetSettingsSchema.properties, refit: Type.Partial(RefitThresholdsSchema) }, { additionalProperties: false }),
);

export type DatasetSettingsInput = Static<typeof DatasetSettingsInputSchema>;

export const DEFAULT_SETTINGS: Readonly<DatasetSettings> = Object.freeze(Value.Create(DatasetSettingsSchema));

/** Stored settings over the defaults (older rows may lack newer keys). */
export function resolveSettings(stored: Record<string, unknown> | null | undefined): DatasetSettings {
  const s = (stored ?? {}) as Partial<DatasetSettings>;
  return { ...DEFAULT_SETTINGS, ...s, refit: { ...DEFAULT_SETTINGS.refit, ...(s.refit ?? {}) } };
}

/** The first rule `settings` breaks, as the field (e.g. `refit.maxDrift`) and what it must be; null when none. */
export function settingsProblem(settings: DatasetSettings): { field: string; message: string } | null {
  const error = Value.Errors(DatasetSettingsSchema, settings).First();
  if (error) return { field: error.path.slice(1).replaceAll('/', '.'), message: error.message };
  const unsafe = Object.entries(DatasetSettingsSchema.properties).find(
    ([key, property]) => property.type === 'integer' && !Number.isSafeInteger(settings[key as keyof DatasetSettings]),
  );
  return unsafe ? { field: unsafe[0], message: 'Expected a safe integer' } : null;
}
