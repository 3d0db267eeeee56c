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
  /** Items the set was scored over (all of the dataset's at the switch). */
  fitItems?: number;
  /** Items the fit itself read (a sample of a large dataset). */
  sampleItems?: number;
  /** Mean cosine distance of every item to its nearest centroid. */
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

/** One part of a refit's rescore: the dataset's items with ids in [from, to), scored under `version`. */
export interface RescorePart {
  version: number;
  /** Item ids as decimal strings (bigserial values). */
  from: string;
  to: string;
}

/** What a rescore part reports back: items scored, per cluster, and their summed distance. */
export interface RescorePartResult {
  n: number;
  counts: number[];
  distanceSum: number;
}

/** A SemDeDup run's record on its job row: the version it pinned (its checkpoint, with its parts), then its totals. */
export interface DedupResult {
  version: number;
  epsilon: number;
  /** Clusters and items it compares within (as counted when it started). */
  clusters: number;
  items: number;
  /** Members of the largest cluster: what bounds a part's memory. */
  largestCluster: number;
  /** Items kept in their cluster but almost as near another (compared there too, in the second stage); set when that stage is planned. */
  boundaryItems: number;
  /** Groups found and the items they would drop. */
  groups: number;
  duplicates: number;
  /** Phase durations in milliseconds (planMs, compareMs, totalMs). */
  timings: Record<string, number>;
}

/**
 * One part of a SemDeDup run: whole clusters of `version`. Stage "clusters" compares each within
 * itself at `epsilon`; stage "boundary" compares each cluster's kept items with the boundary items
 * the first stage aimed at it.
 */
export interface DedupPart {
  stage: 'clusters' | 'boundary';
  version: number;
  epsilon: number;
  clusters: number[];
  /** Each cluster's members when counted (sizes the read; the cluster may have grown since). */
  sizes: number[];
}

export interface DedupPartResult {
  items: number;
  /** Pairs the part added. */
  duplicates: number;
  /** Boundary items it recorded (stage "clusters"). */
  boundary: number;
}

/**
 * Every kind of job, each with its params (stored on the row), its result (merged into the row
 * as the job goes), its payload: what only the submitting process holds (`undefined` for a kind
 * whose row is all it needs, so it can be queued and resumed by any worker), and its parts: the
 * pieces any replica's worker can claim while the job runs (`never` for a kind that has none).
 */
export interface JobKinds {
  refit: { params: { reason: string }; result: RefitResult; payload: undefined; part: RescorePart; partResult: RescorePartResult };
  ingest: { params: { items: number; transport: string }; result: IngestJobResult; payload: IngestPayload; part: never; partResult: never };
  dedup: { params: { epsilon: number }; result: DedupResult; payload: undefined; part: DedupPart; partResult: DedupPartResult };
}

export type JobKind = keyof JobKinds;
export type JobParams<K extends JobKind> = JobKinds[K]['params'];
export type JobResult<K extends JobKind> = JobKinds[K]['result'];
export type JobPayload<K extends JobKind> = JobKinds[K]['payload'];
export type JobPart<K extends JobKind> = JobKinds[K]['part'];
export type JobPartResult<K extends JobKind> = JobKinds[K]['partResult'];
/** The kinds whose jobs have parts. */
export type PartedJobKind = { [K in JobKind]: [JobPart<K>] extends [never] ? never : K }[JobKind];

type FieldType = 'number' | 'string' | 'object' | 'number-or-null';

/** The type of each result field, for reading a stored result back (listing a field twice or missing one does not compile). */
const RESULT_FIELDS: { [K in JobKind]: Record<keyof JobResult<K>, FieldType> } = {
  refit: { version: 'number', snapshotAt: 'string', previousVersion: 'number-or-null', k: 'number', fitItems: 'number', sampleItems: 'number', objective: 'number-or-null', timings: 'object' },
  ingest: { counts: 'object', errors: 'object', prototypeVersion: 'number-or-null', scheduledJobIds: 'object' },
  dedup: { version: 'number', epsilon: 'number', clusters: 'number', items: 'number', largestCluster: 'number', boundaryItems: 'number', groups: 'number', duplicates: 'number', timings: 'object' },
};

export const JOB_KINDS = Object.keys(RESULT_FIELDS) as JobKind[];

/** The type of each part field (as RESULT_FIELDS; a part row missing one is refused). */
const PART_FIELDS: { [K in PartedJobKind]: Record<keyof JobPart<K>, FieldType> } = {
  refit: { version: 'number', from: 'string', to: 'string' },
  dedup: { stage: 'string', version: 'number', epsilon: 'number', clusters: 'object', sizes: 'object' },
};

export const PARTED_JOB_KINDS = Object.keys(PART_FIELDS) as PartedJobKind[];

export function hasParts(kind: string): kind is PartedJobKind {
  return Object.hasOwn(PART_FIELDS, kind);
}

/** Reads a stored part's params as a part of `kind`; throws when a field is missing or of another type. */
export function partOf<K extends PartedJobKind>(kind: K, params: Record<string, unknown>): JobPart<K> {
  for (const [field, type] of Object.entries(PART_FIELDS[kind] as Record<string, FieldType>)) {
    if (!hasType(params[field], type)) throw new Error(`a ${kind} part has no valid ${field}`);
  }
  return params as unknown as JobPart<K>;
}

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
