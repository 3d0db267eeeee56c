import {
  deleteDataset as deleteDatasetRow,
  findDatasetByName,
  HNSW_HALFVEC_MAX_DIMENSION,
  HNSW_VECTOR_MAX_DIMENSION,
  insertDataset,
  listDatasets as listDatasetRows,
  type DatasetRow,
} from '../store/datasets.js';
import type { Embedder } from '../embedding/embedder.js';
import type { ServiceContext } from './context.js';
import { ServiceError } from './errors.js';
import { DATASET_NAME_MAX_LENGTH, DATASET_NAME_PATTERN } from './limits.js';
import { DEFAULT_SETTINGS, resolveSettings, settingsProblem, type DatasetSettings, type DatasetSettingsInput } from './settings.js';

/**
 * Largest embedding dimension a dataset may have: 4,000, what pgvector's HNSW index holds as
 * halfvec (the near-duplicate index; see `annIndexKind` in store/datasets.ts). pgvector stores up
 * to 16,000 dimensions, but a dataset above 4,000 could have no near-duplicate index at all.
 */
export const MAX_DIMENSION = HNSW_HALFVEC_MAX_DIMENSION;
export const MAX_K = 100_000;
const NAME = new RegExp(DATASET_NAME_PATTERN);

export interface CreateDatasetInput {
  name: string;
  dimension: number;
  /** Number of prototypes; omitted: `defaultK(n)` at each full fit. */
  k?: number | null;
  settings?: DatasetSettingsInput;
  model?: { name: string; sha256: string } | null;
}

export interface Dataset extends Omit<DatasetRow, 'settings'> {
  settings: DatasetSettings;
}

export function toDataset(row: DatasetRow): Dataset {
  return { ...row, settings: resolveSettings(row.settings) };
}

function isUniqueViolation(error: unknown): boolean {
  return (error as { code?: string } | null)?.code === '23505';
}

function checkSettings(settings: DatasetSettings): void {
  const problem = settingsProblem(settings);
  if (problem) throw new ServiceError('invalid', 'INVALID_SETTINGS', `settings.${problem.field}: ${problem.message}`, { field: `settings.${problem.field}` });
}

export async function createDataset(ctx: ServiceContext, input: CreateDatasetInput): Promise<Dataset> {
  if (!NAME.test(input.name)) {
    throw new ServiceError('invalid', 'INVALID_NAME', `dataset name must be 1-${DATASET_NAME_MAX_LENGTH} characters of letters, digits, ".", "_" or "-", starting with a letter or digit`, {
      field: 'name',
    });
  }
  if (!Number.isInteger(input.dimension) || input.dimension < 1) {
    throw new ServiceError('invalid', 'INVALID_DIMENSION', `dimension must be an integer from 1 to ${MAX_DIMENSION}`, { field: 'dimension' });
  }
  if (input.dimension > MAX_DIMENSION) {
    const max = MAX_DIMENSION.toLocaleString('en-US');
    throw new ServiceError(
      'invalid',
      'DIMENSION_TOO_LARGE',
      `dimension ${input.dimension} is above the limit of ${max}: every dataset gets a pgvector HNSW near-duplicate index, ` +
        `which holds at most ${HNSW_VECTOR_MAX_DIMENSION.toLocaleString('en-US')} dimensions as vector and ${max} as halfvec; ` +
        `reduce the embeddings (e.g. with PCA) to at most ${max} dimensions`,
      { field: 'dimension', max: MAX_DIMENSION },
    );
  }
  const k = input.k ?? null;
  if (k !== null && (!Number.isInteger(k) || k < 1 || k > MAX_K)) {
    throw new ServiceError('invalid', 'INVALID_K', `k must be an integer from 1 to ${MAX_K}`, { field: 'k' });
  }
  const settings: DatasetSettings = {
    ...DEFAULT_SETTINGS,
    ...input.settings,
    refit: { ...DEFAULT_SETTINGS.refit, ...(input.settings?.refit ?? {}) },
  };
  checkSettings(settings);
  try {
    const row = await ctx.db.transaction((tx) =>
      insertDataset(tx, {
        name: input.name,
        dimension: input.dimension,
        k,
        settings,
        modelName: input.model?.name ?? null,
        modelSha256: input.model?.sha256 ?? null,
      }),
    );
    return toDataset(row);
  } catch (error) {
    if (isUniqueViolation(error)) throw new ServiceError('conflict', 'DATASET_EXISTS', `dataset ${input.name} already exists`, { name: input.name });
    throw error;
  }
}

export async function getDataset(ctx: ServiceContext, name: string): Promise<Dataset> {
  const row = await findDatasetByName(ctx.db, name);
  if (!row) throw new ServiceError('not_found', 'DATASET_NOT_FOUND', `dataset ${name} does not exist`, { name });
  return toDataset(row);
}

export async function listDatasets(ctx: ServiceContext): Promise<Dataset[]> {
  return (await listDatasetRows(ctx.db)).map(toDataset);
}

export async function deleteDataset(ctx: ServiceContext, name: string): Promise<void> {
  const dataset = await getDataset(ctx, name);
  await ctx.db.transaction((tx) => deleteDatasetRow(tx, dataset.id));
  ctx.prototypes.forget(dataset.id);
}

/** The server's image encoder; NO_ENCODER (503) for a process that loaded none. */
export function requireEmbedder(ctx: ServiceContext): Embedder {
  if (!ctx.embedder) throw new ServiceError('unavailable', 'NO_ENCODER', 'this server has no image encoder loaded');
  return ctx.embedder;
}

/** Creates a dataset for images embedded by this server's encoder (dimension and model identity recorded). */
export async function createImageDataset(ctx: ServiceContext, input: Omit<CreateDatasetInput, 'dimension' | 'model'>): Promise<Dataset> {
  const embedder = requireEmbedder(ctx);
  return createDataset(ctx, { ...input, dimension: embedder.dim, model: embedder.identity });
}
