import type { JobRow } from '../store/jobs.js';
import type { AnyItem } from './ingest-items.js';

/**
 * A refit's record on its job row. `version` and `snapshotAt` are its checkpoint (written with the
 * new prototype set; `snapshotAt` is not part of what the handler returns), `previousVersion` is
 * written with the switch, the rest when it succeeds.
 */
export interface RefitResult {
  version: number;
  snapshotAt?: string;
  previousVersion: number | null;
  /** Absent only when a resumed cleanup found its set already gone. */
  k?: number;
  fitItems?: number;
  objective?: number | null;
  /** Phase durations in milliseconds (readMs, fitMs, rescoreWriteMs, switchMs, totalMs). */
  timings: Record<string, number>;
}

/** A background ingest's record on its job row: the counts so far, written after every chunk. */
export interface IngestJobResult {
  counts: { stored: number; updated: number; failed: number };
  /** One entry per failed item, in request order. */
  errors: { externalId: string; index: number; code: string; message: string }[];
  prototypeVersion: number | null;
  /** Refits (or first fits) the chunks scheduled. */
  scheduledJobIds: string[];
}

/** What a background ingest stores, held in the memory of the process that took the request. */
export interface IngestPayload {
  /** The dataset's name, as the request gave it (each chunk is an ordinary ingest into it). */
  dataset: string;
  items: readonly AnyItem[];
  /** The transport the items came by (metrics). */
  transport: string;
}

/**
 * Every kind of job, each with its params (stored on the row), its result (merged into the row
 * as the job goes) and its payload: what only the submitting process holds (`undefined` for a
 * kind whose row is all it needs, so it can be queued and resumed by any worker).
 */
export interface JobKinds {
  refit: { params: { reason: string }; result: RefitResult; payload: undefined };
  ingest: { params: { items: number; transport: string }; result: IngestJobResult; payload: IngestPayload };
}

export type JobKind = keyof JobKinds;
export type JobParams<K extends JobKind> = JobKinds[K]['params'];
export type JobResult<K extends JobKind> = JobKinds[K]['result'];
export type JobPayload<K extends JobKind> = JobKinds[K]['payload'];

type FieldType = 'number' | 'string' | 'object' | 'number-or-null';

/** The type of each result field, for reading a stored result back (listing a field twice or missing one does not compile). */
const RESULT_FIELDS: { [K in JobKind]: Record<keyof JobResult<K>, FieldType> } = {
  refit: { version: 'number', snapshotAt: 'string', previousVersion: 'number-or-null', k: 'number', fitItems: 'number', objective: 'number-or-null', timings: 'object' },
  ingest: { counts: 'object', errors: 'object', prototypeVersion: 'number-or-null', scheduledJobIds: 'object' },
};

export const JOB_KINDS = Object.keys(RESULT_FIELDS) as JobKind[];

export function isJobKind(kind: string): kind is JobKind {
  return Object.hasOwn(RESULT_FIELDS, kind);
}

function hasType(value: unknown, type: FieldType): boolean {
  if (type === 'number-or-null') return value === null || typeof value === 'number';
  if (type === 'object') return typeof value === 'object' && value !== null;
  return typeof value === type;
}

/** A job row of kind `K` with its params and result typed (see jobOf). */
export interface Job<K extends JobKind> extends Omit<JobRow, 'kind' | 'params' | 'result'> {
  kind: K;
  params: Partial<JobParams<K>>;
  result: Partial<JobResult<K>>;
}

/**
 * Reads a stored row as a job of `kind` (throws when it is of another kind). Its result holds
 * only the fields the row recorded with the right type: a checkpoint not written yet, or written
 * by hand with a wrong type, is absent.
 */
export function jobOf<K extends JobKind>(kind: K, row: JobRow): Job<K> {
  if (row.kind !== kind) throw new Error(`job ${row.id} is of kind ${row.kind}, not ${kind}`);
  const result: Record<string, unknown> = {};
  const fields: Record<string, FieldType> = RESULT_FIELDS[kind];
  for (const [field, type] of Object.entries(fields)) {
    if (row.result && Object.hasOwn(row.result, field) && hasType(row.result[field], type)) result[field] = row.result[field];
  }
  return { ...row, kind, params: row.params as Partial<JobParams<K>>, result: result as Partial<JobResult<K>> };
}
