import { ProtopruneError, type Dataset, type ProtopruneClient } from '../../clients/typescript/src/index.js';
import { plural, type Output } from './output.js';

export interface EnsureDataset {
  name: string;
  /** Create the dataset when it does not exist (else that is an error). */
  create: boolean;
  /** Embedding-only datasets: the vectors' dimension; undefined: an image dataset. */
  dimension?: number;
  k?: number;
}

/** The dataset to ingest into, created first when it is missing and creating is allowed. */
export async function ensureDataset(client: ProtopruneClient, wanted: EnsureDataset, out: Output): Promise<{ dataset: Dataset; created: boolean }> {
  try {
    return { dataset: await client.getDataset(wanted.name), created: false };
  } catch (error) {
    if (!(error instanceof ProtopruneError) || error.code !== 'DATASET_NOT_FOUND' || !wanted.create) throw error;
  }
  const dataset = await client.createDataset({ name: wanted.name, dimension: wanted.dimension, k: wanted.k });
  out.note(`created ${wanted.dimension === undefined ? 'image' : `${wanted.dimension}-d embedding`} dataset ${wanted.name}`);
  return { dataset, created: true };
}

export interface Failure {
  /** The file or row (its external id). */
  externalId: string;
  code: string;
  message: string;
}

/** A message on one line of at most 200 characters (decoders report several). */
function oneLine(message: string): string {
  const flat = message.replace(/\s*\n\s*/g, ' | ');
  return flat.length > 200 ? `${flat.slice(0, 199)}…` : flat;
}

/** The failures of an ingest as lines: a count, then one line per failure (the first `shown`). */
export function failureLines(failures: readonly Failure[], noun: string, shown = 50): string[] {
  if (failures.length === 0) return [];
  const lines = [`${plural(failures.length, noun)} failed:`];
  for (const f of failures.slice(0, shown)) lines.push(`  ${f.externalId}  ${f.code}  ${oneLine(f.message)}`);
  if (failures.length > shown) lines.push(`  … and ${failures.length - shown} more (--json lists all)`);
  return lines;
}
