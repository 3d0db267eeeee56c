/**
 * Translation between protobuf messages (the types generated from proto/ by `npm run proto`, as
 * @grpc/proto-loader presents them, see LOADER_OPTIONS) and the service layer's inputs and views.
 * No logic beyond shape and encoding lives here.
 */
import type { AutoPolicy, ImbalanceReport } from '../core/auto-policy.js';
import { DEFAULT_SELECTION_ORDER, REQUESTED_ORDER_NAMES } from '../core/selection.js';
import { float32FromLittleEndian } from '../embedding/vectors.js';
import type * as pb from '../generated/proto/protoprune/v1/protoprune.js';
import type { ApiKeyView } from '../service/auth.js';
import type { Dataset, CreateDatasetInput } from '../service/datasets.js';
import type { DedupRunView, DuplicateGroupView } from '../service/dedup.js';
import { ServiceError } from '../service/errors.js';
import { FILTER_OPS, type MetadataFilter } from '../service/metadata-filter.js';
import { DEDUP_KEEPS, type DedupOutcome, type DedupRequest } from '../service/dedup-stage.js';
import { textProblem } from '../service/text.js';
import type { ItemView } from '../service/items.js';
import type { JobView } from '../service/jobs.js';
import type { PrototypeStatus } from '../service/prototypes.js';
import type { ScoreResult, CandidateScore, ScorePolicy } from '../service/score.js';
import type { ExportRow } from '../service/score-export.js';
import type { AppliedPolicy, SelectionRequest } from '../service/selection.js';
import { DatasetSettingsSchema, type DatasetSettings, type DatasetSettingsInput } from '../service/settings.js';
import type { DatasetStats } from '../service/stats.js';
import type { ItemOutcome } from '../service/ingest-items.js';

/**
 * A message as the server sends it: proto3 lets any field be left out (it reads as its default),
 * and an unset message field may be given as null.
 */
export type Outgoing<T> = T extends readonly (infer E)[] ? Outgoing<E>[] : T extends object ? { [K in keyof T]?: Outgoing<T[K]> | null } : T;

// ---- enums: 'some-value' ⇄ `PREFIX_SOME_VALUE` ------------------------------------------------

type EnumSuffix<N extends string> = N extends `${infer Head}-${infer Tail}` ? `${Uppercase<Head>}_${EnumSuffix<Tail>}` : Uppercase<N>;

/** The proto enum value named like `name`; typed, so a name without its enum value does not compile. */
function toEnum<P extends string, N extends string>(prefix: P, name: N): `${P}${EnumSuffix<N>}` {
  return `${prefix}${name.toUpperCase().replaceAll('-', '_')}` as `${P}${EnumSuffix<N>}`;
}

/** The name among `allowed` whose enum value `value` is; undefined for UNSPECIFIED (or unset). */
function fromEnum<T extends string>(prefix: string, value: string | number | null | undefined, allowed: readonly T[], field: string, code: string): T | undefined {
  if (value === undefined || value === null || value === `${prefix}UNSPECIFIED` || value === 0) return undefined;
  const name = allowed.find((candidate) => toEnum(prefix, candidate) === value);
  if (name === undefined) throw new ServiceError('invalid', code, `${field} has an unknown value ${String(value)}`, { field });
  return name;
}

const BALANCES = ['none', 'cluster'] as const;

function filterJson(text: string, field: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new ServiceError('invalid', 'INVALID_FILTER', `${field} is not JSON`, { field });
  }
}

/** A MetadataFilter message as the service's filter (which validates it); unset or empty: none. */
export function metadataFilter(msg: pb.MetadataFilter | null | undefined): MetadataFilter | undefined {
  if (!msg || (msg.containsJson === '' && (msg.where ?? []).length === 0)) return undefined;
  return {
    ...(msg.containsJson !== '' && { contains: filterJson(msg.containsJson, 'filter.contains_json') as Record<string, unknown> }),
    where: (msg.where ?? []).map((c, i) => {
      const field = `filter.where[${i}]`;
      const op = fromEnum('FILTER_OP_', c.op, FILTER_OPS, `${field}.op`, 'INVALID_FILTER');
      if (op === undefined) throw new ServiceError('invalid', 'INVALID_FILTER', `${field}.op must be set`, { field: `${field}.op` });
      return { field: c.field, op, ...(c.valueJson !== '' && { value: filterJson(c.valueJson, `${field}.value_json`) }) };
    }),
  };
}

// ---- scalars ---------------------------------------------------------------------------------

/** RFC 3339 in UTC, or '' for no time. */
export function timestamp(value: Date | string | null | undefined): string {
  if (value === null || value === undefined) return '';
  return new Date(value).toISOString();
}

function opt<T>(value: T | null | undefined): T | undefined {
  return value === null ? undefined : value;
}

/** The fields among `keys` that `message` sets (proto3 `optional`: unset is undefined; messages: null). */
function setFields<T extends object, K extends keyof T>(message: T | null | undefined, keys: readonly K[]): Partial<Pick<T, K>> {
  const present: Partial<Pick<T, K>> = {};
  for (const key of keys) if (message?.[key] !== undefined && message[key] !== null) present[key] = message[key];
  return present;
}

// ---- messages in -----------------------------------------------------------------------------

/** A setting is a field of the same name in the proto's DatasetSettings (test/contract/registries.test.ts checks it). */
const SETTING_KEYS = Object.keys(DatasetSettingsSchema.properties) as (keyof DatasetSettings & keyof pb.DatasetSettings)[];
const REFIT_KEYS = Object.keys(DatasetSettingsSchema.properties.refit.properties) as (keyof DatasetSettings['refit'] & keyof pb.RefitThresholds)[];

function settingsInput(message: pb.DatasetSettings | null | undefined): DatasetSettingsInput {
  const { refit, ...settings } = setFields(message, SETTING_KEYS);
  const thresholds = setFields(refit, REFIT_KEYS);
  return Object.keys(thresholds).length > 0 ? { ...settings, refit: thresholds } : settings;
}

export function createDatasetInput(req: pb.CreateDatasetRequest): Omit<CreateDatasetInput, 'dimension'> & { dimension?: number } {
  return { name: req.name, dimension: req.dimension, k: req.k ?? null, settings: settingsInput(req.settings) };
}

export interface ItemError {
  code: string;
  message: string;
}

export interface DecodedItem {
  externalId: string;
  embedding?: ArrayLike<number>;
  image?: Uint8Array;
  metadata?: unknown;
}

/**
 * Decodes one item's wire encoding: exactly one of embedding, embedding_f32le and image, and (for
 * an ingest item) metadata JSON. Content checks (dimension, finiteness, metadata shape) stay with
 * the service.
 */
export function decodeItem(msg: pb.IngestItem | pb.ScoreCandidate): DecodedItem | { error: ItemError } {
  const hasFloats = (msg.embedding?.length ?? 0) > 0;
  const hasBytes = (msg.embeddingF32le?.length ?? 0) > 0;
  const hasImage = (msg.image?.length ?? 0) > 0;
  if (Number(hasFloats) + Number(hasBytes) + Number(hasImage) !== 1) {
    return { error: { code: 'INVALID_ITEM', message: 'give exactly one of embedding, embedding_f32le and image' } };
  }
  const item: DecodedItem = { externalId: msg.externalId };
  if (hasFloats) item.embedding = msg.embedding;
  else if (hasBytes) {
    const bytes = msg.embeddingF32le;
    if (bytes.byteLength % 4 !== 0) {
      return { error: { code: 'INVALID_ENCODING', message: `embedding_f32le has ${bytes.byteLength} bytes, not a multiple of 4 (float32)` } };
    }
    item.embedding = float32FromLittleEndian(bytes);
  } else item.image = msg.image;
  if ('metadataJson' in msg && msg.metadataJson) return withMetadata(item, msg.metadataJson);
  return item;
}

/** `item` with its metadata parsed from `json`, or the metadata's problem. */
function withMetadata(item: DecodedItem, json: string): DecodedItem | { error: ItemError } {
  try {
    item.metadata = JSON.parse(json);
  } catch {
    return { error: { code: 'INVALID_METADATA', message: 'metadata_json is not valid JSON' } };
  }
  const problem = textProblem(item.metadata, 'metadata_json');
  if (problem) return { error: { code: problem.code, message: problem.message } };
  return item;
}

/**
 * Decodes packed embeddings: the bytes are copied once into one Float32Array, and each item's
 * embedding is a view of its row. A block whose byte length is not n × dim float32 values, or
 * whose metadata list is neither empty nor one per id, is refused whole (INVALID_PACKED).
 */
export function decodePacked(packed: pb.PackedEmbeddings): { externalId: string; decoded: DecodedItem | { error: ItemError } }[] {
  const ids = packed.externalIds ?? [];
  const bytes = packed.vectorsF32le ?? new Uint8Array(0);
  const metadata = packed.metadataJson ?? [];
  const n = ids.length;
  if (n === 0 ? bytes.byteLength > 0 || metadata.length > 0 : bytes.byteLength % (4 * n) !== 0) {
    throw new ServiceError('invalid', 'INVALID_PACKED', `packed.vectors_f32le has ${bytes.byteLength} bytes: not ${n} vectors of float32 values`, { field: 'packed.vectors_f32le' });
  }
  if (metadata.length !== 0 && metadata.length !== n) {
    throw new ServiceError('invalid', 'INVALID_PACKED', `packed.metadata_json has ${metadata.length} entries; give none or one per external id (${n})`, { field: 'packed.metadata_json' });
  }
  const dim = n === 0 ? 0 : bytes.byteLength / 4 / n;
  const vectors = float32FromLittleEndian(bytes);
  return ids.map((externalId, i) => {
    const item: DecodedItem = { externalId, embedding: vectors.subarray(i * dim, (i + 1) * dim) };
    return { externalId, decoded: metadata[i] ? withMetadata(item, metadata[i]) : item };
  });
}

/**
 * Decodes a batch (then `packed`'s items, if given); the items that decoded go to the service and
 * `merge` puts its per-item results back beside the decoding failures, in the original order.
 */
export function decodeBatch<R>(messages: readonly (pb.IngestItem | pb.ScoreCandidate)[], packed?: pb.PackedEmbeddings | null) {
  const entries = messages.map((m) => ({ externalId: m.externalId, decoded: decodeItem(m) }));
  if (packed) entries.push(...decodePacked(packed));
  const good: DecodedItem[] = [];
  const at: number[] = [];
  const failed = new Map<number, ItemError>();
  entries.forEach(({ decoded }, i) => {
    if ('error' in decoded) failed.set(i, decoded.error);
    else {
      good.push(decoded);
      at.push(i);
    }
  });
  return {
    good,
    merge(results: readonly R[], failure: (externalId: string, error: ItemError) => R): R[] {
      const out = new Array<R>(entries.length);
      at.forEach((i, j) => (out[i] = results[j]));
      for (const [i, error] of failed) out[i] = failure(entries[i].externalId, error);
      return out;
    },
  };
}

/** An unset order (UNSPECIFIED) is DEFAULT_SELECTION_ORDER, as in the REST API. */
export function selectionRequest(req: pb.SelectRequest): SelectionRequest {
  return {
    order: fromEnum('SELECTION_ORDER_', req.order, REQUESTED_ORDER_NAMES, 'order', 'INVALID_SELECTION') ?? DEFAULT_SELECTION_ORDER,
    fraction: req.fraction,
    count: req.count,
    balance: fromEnum('BALANCE_', req.balance, BALANCES, 'balance', 'INVALID_SELECTION'),
    seed: req.seed,
    outlierFraction: req.outlierFraction,
    bins: req.bins,
    filter: metadataFilter(req.filter),
    ...(req.dedup && { dedup: dedupRequest(req.dedup) }),
  };
}

function dedupRequest(msg: pb.DedupStage): DedupRequest {
  return {
    epsilon: msg.epsilon,
    jobId: msg.jobId,
    keep: fromEnum('DEDUP_KEEP_', msg.keep, DEDUP_KEEPS, 'dedup.keep', 'INVALID_DEDUP'),
    ...(msg.keepField !== '' && { keepField: msg.keepField }),
  };
}

function autoChoiceMessage(a: AutoPolicy | null): Outgoing<pb.AutoChoice> | null {
  return a && { order: toEnum('SELECTION_ORDER_', a.order), balance: toEnum('BALANCE_', a.balance), keptPerCluster: a.keptPerCluster, clusterScoreCv: a.clusterScoreCv };
}

export function selectionPolicyMessage(p: AppliedPolicy): Outgoing<pb.SelectionPolicy> {
  return { order: toEnum('SELECTION_ORDER_', p.order), balance: toEnum('BALANCE_', p.balance), auto: autoChoiceMessage(p.auto) };
}

export function imbalanceMessage(r: ImbalanceReport | null): Outgoing<pb.ImbalanceReport> | null {
  return r && { ...r, maxMinRatio: opt(r.maxMinRatio) };
}

export function dedupOutcomeMessage(d: DedupOutcome | null): Outgoing<pb.DedupOutcome> | null {
  return d && { jobId: d.jobId, epsilon: d.epsilon, keep: toEnum('DEDUP_KEEP_', d.keep), dropped: d.dropped };
}

export function scorePolicy(msg: pb.ScorePolicy | null | undefined): Partial<ScorePolicy> {
  const fields = setFields(msg, ['fraction', 'seed', 'epsilon', 'outlierFraction', 'bins']);
  const order = fromEnum('SELECTION_ORDER_', msg?.order, REQUESTED_ORDER_NAMES, 'policy.order', 'INVALID_SELECTION');
  const balance = fromEnum('BALANCE_', msg?.balance, BALANCES, 'policy.balance', 'INVALID_SELECTION');
  const filter = metadataFilter(msg?.filter);
  return { ...(order && { order }), ...fields, ...(balance && { balance }), ...(filter && { filter }) };
}

// ---- messages out ----------------------------------------------------------------------------

export function datasetMessage(d: Dataset): Outgoing<pb.Dataset> {
  return {
    id: d.id,
    name: d.name,
    dimension: d.dimension,
    k: opt(d.k),
    model: d.modelName !== null ? { name: d.modelName, sha256: d.modelSha256 ?? '' } : null,
    // Field for field: a setting is named alike in both.
    settings: d.settings,
    activeVersion: opt(d.activeVersion),
    createdAt: timestamp(d.createdAt),
    updatedAt: timestamp(d.updatedAt),
  };
}

export function itemOutcomeMessage(o: ItemOutcome): Outgoing<pb.IngestItemResult> {
  if (o.status === 'error') {
    return { externalId: o.externalId, status: 'ITEM_STATUS_ERROR', errorCode: o.code, errorMessage: o.message };
  }
  return { externalId: o.externalId, status: toEnum('ITEM_STATUS_', o.status), score: opt(o.score), cluster: opt(o.cluster) };
}

export function jobMessage(j: JobView): Outgoing<pb.Job> {
  return {
    id: j.id,
    dataset: j.dataset ?? '',
    kind: j.kind,
    state: toEnum('JOB_STATE_', j.state),
    phase: j.phase ?? '',
    progress: { done: j.progress.done, total: j.progress.total, fraction: j.progress.fraction },
    resultJson: j.result === null || j.result === undefined ? '' : JSON.stringify(j.result),
    error: j.error ?? '',
    attempts: j.attempts,
    createdAt: timestamp(j.createdAt),
    startedAt: timestamp(j.startedAt),
    finishedAt: timestamp(j.finishedAt),
  };
}

export function candidateMessage(c: CandidateScore): Outgoing<pb.CandidateScore> {
  if (c.status === 'error') {
    return { externalId: c.externalId, status: 'CANDIDATE_STATUS_ERROR', errorCode: c.code, errorMessage: c.message };
  }
  return {
    externalId: c.externalId,
    status: 'CANDIDATE_STATUS_SCORED',
    score: c.score,
    cluster: c.cluster,
    percentile: c.percentile,
    nearest: c.nearest,
    duplicate: c.duplicate,
    decision: toEnum('DECISION_', c.decision),
    reason: toEnum('DECISION_REASON_', c.reason),
  };
}

export function scoredItemMessage(r: ExportRow): Outgoing<pb.ScoredItem> {
  return {
    externalId: r.externalId,
    score: r.score,
    cluster: r.cluster,
    percentile: r.percentile,
    duplicateOf: r.duplicateOf,
    duplicateSimilarity: r.duplicateSimilarity,
    duplicateGroup: r.duplicateGroup,
    metadataJson: r.metadata,
  };
}

export function scoreResultMessage(r: ScoreResult, items: Outgoing<pb.CandidateScore>[]): Outgoing<pb.ScoreBatchResponse> {
  return {
    prototypeVersion: r.prototypeVersion,
    policy: {
      order: toEnum('SELECTION_ORDER_', r.policy.order),
      fraction: r.policy.fraction,
      balance: toEnum('BALANCE_', r.policy.balance),
      seed: r.policy.seed,
      epsilon: r.policy.epsilon,
      auto: autoChoiceMessage(r.policy.auto),
    },
    matched: opt(r.matched),
    items,
  };
}

export function prototypeStatusMessage(p: PrototypeStatus): Outgoing<pb.PrototypeStatus> {
  return {
    version: opt(p.version),
    k: opt(p.k),
    clusterSizes: p.clusterSizes,
    revision: p.revision,
    fitItems: p.fitItems,
    itemsSinceFit: p.itemsSinceFit,
    arrivedFraction: p.arrivedFraction,
    drift: p.drift,
    objective: opt(p.objective),
    fittedAt: timestamp(p.fittedAt),
    refitJob: p.refitJob ? jobMessage(p.refitJob) : null,
  };
}

export function duplicateReportMessage(run: DedupRunView, groups: DuplicateGroupView[], nextPageToken: string | null): Outgoing<pb.DuplicateReport> {
  return {
    jobId: run.jobId,
    prototypeVersion: run.version,
    epsilon: run.epsilon,
    groupCount: run.groups,
    duplicateCount: run.duplicates,
    groups,
    nextPageToken: nextPageToken ?? '',
  };
}

export function statsMessage(s: DatasetStats): Outgoing<pb.DatasetStats> {
  return {
    dataset: s.dataset,
    itemCount: s.itemCount,
    matched: s.matched,
    scoredCount: s.scoredCount,
    prototypeVersion: opt(s.prototypeVersion),
    k: opt(s.k),
    histogram: s.histogram,
    clusterSizes: s.clusterSizes,
    drift: s.drift,
    arrivedFraction: s.arrivedFraction,
    lastRefit: s.lastRefit ? { version: s.lastRefit.version, fittedAt: timestamp(s.lastRefit.fittedAt) } : null,
    refitJob: s.refitJob ? jobMessage(s.refitJob) : null,
    ingest: {
      lastHour: s.ingest.lastHour,
      lastDay: s.ingest.last24Hours,
      hourly: s.ingest.hourly.map((h) => ({ hour: timestamp(h.hour), items: h.items })),
    },
  };
}

export function itemMessage(i: ItemView): Outgoing<pb.Item> {
  return {
    externalId: i.externalId,
    metadataJson: JSON.stringify(i.metadata ?? {}),
    createdAt: timestamp(i.createdAt),
    updatedAt: timestamp(i.updatedAt),
    score: opt(i.score),
    cluster: opt(i.cluster),
    prototypeVersion: opt(i.prototypeVersion),
  };
}

export function apiKeyMessage(key: ApiKeyView): Outgoing<pb.ApiKey> {
  return {
    id: key.id,
    name: key.name,
    scopes: key.scopes,
    datasets: key.datasets,
    createdAt: timestamp(key.createdAt),
    lastUsedAt: timestamp(key.lastUsedAt),
    revokedAt: timestamp(key.revokedAt),
  };
}
