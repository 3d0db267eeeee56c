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
    maxK: Type.Integer({
      minimum: 2,
      maximum: 1000,
      default: 1000,
      description: 'Largest number of prototypes a full fit chooses by itself (√(n/2), at most 1000); a dataset created with k keeps its k',
    }),
  },
  { additionalProperties: false },
);

export type DatasetSettings = Static<typeof DatasetSettingsSchema>;

type ProtoScalar = 'int64' | 'uint32' | 'bool' | 'double';

/**
 * Each setting's field number and scalar type in the proto's DatasetSettings and RefitThresholds
 * messages, which `npm run proto` writes from this schema (a setting without an entry does not
 * compile; a number once used is never reused).
 */
export const SETTINGS_PROTO_FIELDS: {
  [K in keyof DatasetSettings]: K extends 'refit' ? { field: number; refit: { [R in keyof DatasetSettings['refit']]: { field: number; type: ProtoScalar } } } : { field: number; type: ProtoScalar };
} = {
  seed: { field: 1, type: 'int64' },
  minItemsForFit: { field: 2, type: 'uint32' },
  autoRefit: { field: 3, type: 'bool' },
  refit: { field: 4, refit: { meanDrift: { field: 1, type: 'double' }, maxDrift: { field: 2, type: 'double' }, arrivedFraction: { field: 3, type: 'double' } } },
  duplicateEpsilon: { field: 5, type: 'double' },
  maxIterations: { field: 6, type: 'uint32' },
  tolerance: { field: 7, type: 'double' },
  maxK: { field: 8, type: 'uint32' },
};

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
