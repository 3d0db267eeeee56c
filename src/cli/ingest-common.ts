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

/** Orders anything with an external id by it (code unit order, as the server sorts ties). */
export function byExternalId(a: { externalId: string }, b: { externalId: string }): number {
  return a.externalId < b.externalId ? -1 : a.externalId > b.externalId ? 1 : 0;
}

/**
 * The failures of a run: every one counted, the first FAILURES_KEPT kept to report — a run where
 * every file fails must not hold a message per file.
 */
export class Failures {
  static readonly KEPT = 10_000;
  private readonly kept: Failure[] = [];
  count = 0;

  add(failure: Failure): void {
    this.count++;
    if (this.kept.length < Failures.KEPT) this.kept.push({ externalId: failure.externalId, code: failure.code, message: failure.message });
  }

  addAll(failures: Iterable<Failure>): void {
    for (const failure of failures) this.add(failure);
  }

  /** The kept failures by external id. */
  list(): Failure[] {
    return [...this.kept].sort(byExternalId);
  }

  /** Counted but not kept. */
  get omitted(): number {
    return this.count - this.kept.length;
  }

  /** For --json: the count, the kept failures, and how many were left out. */
  summary(): { failed: number; failures: Failure[]; failuresOmitted: number } {
    return { failed: this.count, failures: this.list(), failuresOmitted: this.omitted };
  }

  /** The failures as lines: a count, then one line per failure (the first `shown`). */
  lines(noun: string, shown = 50): string[] {
    if (this.count === 0) return [];
    const lines = [`${plural(this.count, noun)} failed:`];
    for (const f of this.list().slice(0, shown)) lines.push(`  ${printableId(f.externalId)}  ${f.code}  ${oneLine(f.message)}`);
    if (this.count > shown) lines.push(`  … and ${this.count - shown} more (--json lists the first ${Failures.KEPT})`);
    return lines;
  }

  /** The progress bar's note. */
  note(): string {
    return this.count > 0 ? `${this.count} failed` : '';
  }
}

/** An id as one line: quoted as JSON when it holds a line break or another control character. */
function printableId(id: string): string {
  return /[\u0000-\u001f\u007f]/.test(id) ? JSON.stringify(id) : id;
}

/** A message on one line of at most 200 characters (decoders report several). */
function oneLine(message: string): string {
  const flat = message.replace(/\s*\n\s*/g, ' | ');
  return flat.length > 200 ? `${flat.slice(0, 199)}…` : flat;
}
