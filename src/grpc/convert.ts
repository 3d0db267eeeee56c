/**
 * Translation between protobuf messages (as @grpc/proto-loader presents them, see LOADER_OPTIONS)
 * and the service layer's inputs and views. No logic beyond shape and encoding lives here.
 */
import { float32FromLittleEndian } from '../embedding/vectors.js';
import type { ApiKeyView } from '../service/auth.js';
import type { Dataset, CreateDatasetInput } from '../service/datasets.js';
import type { DuplicateReport } from '../service/duplicates.js';
import { ServiceError } from '../service/errors.js';
import { textProblem } from '../service/text.js';
import type { ItemOutcome } from '../service/ingest.js';
import type { ItemView } from '../service/items.js';
import type { JobView } from '../service/jobs.js';
import type { PrototypeStatus } from '../service/prototypes.js';
import type { ScoreResult, CandidateScore, ScorePolicy } from '../service/score.js';
import type { SelectionRequest } from '../service/selection.js';
import type { DatasetStats } from '../service/stats.js';

// ---- enums: `PREFIX_SOME_VALUE` ⇄ 'some-value' ------------------------------------------------

function fromEnum<T extends string>(prefix: string, value: unknown, allowed: readonly T[], field: string, code: string): T | undefined {
  if (value === undefined || value === null || value === `${prefix}UNSPECIFIED` || value === 0) return undefined;
  const name = typeof value === 'string' && value.startsWith(prefix) ? value.slice(prefix.length).toLowerCase().replace(/_/g, '-') : null;
  if (name === null || !(allowed as readonly string[]).includes(name)) {
    throw new ServiceError('invalid', code, `${field} has an unknown value ${String(value)}`, { field });
  }
  return name as T;
}

function toEnum(prefix: string, value: string): string {
  return prefix + value.toUpperCase().replace(/-/g, '_');
}

const ORDERS = ['hardest', 'easiest', 'random', 'stratified'] as const;
const BALANCES = ['none', 'cluster'] as const;

// ---- scalars ---------------------------------------------------------------------------------

/** RFC 3339 in UTC, or '' for no time. */
export function timestamp(value: Date | string | null | undefined): string {
  if (value === null || value === undefined) return '';
  return new Date(value).toISOString();
}

function opt<T>(value: T | null | undefined): T | undefined {
  return value === null ? undefined : value;
}

// ---- messages in -----------------------------------------------------------------------------

export interface RefitThresholdsMsg {
  meanDrift?: number;
  maxDrift?: number;
  arrivedFraction?: number;
}

export interface SettingsMsg {
  seed?: number;
  minItemsForFit?: number;
  autoRefit?: boolean;
  refit?: RefitThresholdsMsg | null;
  duplicateEpsilon?: number;
  maxIterations?: number;
  tolerance?: number;
}

export interface CreateDatasetMsg {
  name: string;
  dimension?: number;
  k?: number;
  settings?: SettingsMsg | null;
}

function defined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined && v !== null)) as Partial<T>;
}

export function createDatasetInput(req: CreateDatasetMsg): Omit<CreateDatasetInput, 'dimension'> & { dimension?: number } {
  const s = req.settings ?? {};
  const settings: CreateDatasetInput['settings'] = defined({
    seed: s.seed,
    minItemsForFit: s.minItemsForFit,
    autoRefit: s.autoRefit,
    duplicateEpsilon: s.duplicateEpsilon,
    maxIterations: s.maxIterations,
    tolerance: s.tolerance,
  });
  const refit = defined({ meanDrift: s.refit?.meanDrift, maxDrift: s.refit?.maxDrift, arrivedFraction: s.refit?.arrivedFraction });
  if (Object.keys(refit).length > 0) settings.refit = refit;
  return { name: req.name, dimension: req.dimension, k: req.k ?? null, settings };
}

/** An ingest item or score candidate as received. */
export interface VectorItemMsg {
  externalId: string;
  embedding?: number[];
  embeddingF32le?: Uint8Array;
  image?: Uint8Array;
  metadataJson?: string;
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
 * Decodes one item's wire encoding: exactly one of embedding, embedding_f32le and image, and
 * metadata JSON. Content checks (dimension, finiteness, metadata shape) stay with the service.
 */
export function decodeItem(msg: VectorItemMsg, withMetadata: boolean): DecodedItem | { error: ItemError } {
  const hasFloats = (msg.embedding?.length ?? 0) > 0;
  const hasBytes = (msg.embeddingF32le?.length ?? 0) > 0;
  const hasImage = (msg.image?.length ?? 0) > 0;
  if (Number(hasFloats) + Number(hasBytes) + Number(hasImage) !== 1) {
    return { error: { code: 'INVALID_ITEM', message: 'give exactly one of embedding, embedding_f32le and image' } };
  }
  const item: DecodedItem = { externalId: msg.externalId };
  if (hasFloats) item.embedding = msg.embedding!;
  else if (hasBytes) {
    const bytes = msg.embeddingF32le!;
    if (bytes.byteLength % 4 !== 0) {
      return { error: { code: 'INVALID_ENCODING', message: `embedding_f32le has ${bytes.byteLength} bytes, not a multiple of 4 (float32)` } };
    }
    item.embedding = float32FromLittleEndian(bytes);
  } else item.image = msg.image!;
  if (withMetadata && msg.metadataJson) {
    try {
      item.metadata = JSON.parse(msg.metadataJson);
    } catch {
      return { error: { code: 'INVALID_METADATA', message: 'metadata_json is not valid JSON' } };
    }
    const problem = textProblem(item.metadata, 'metadata_json');
    if (problem) return { error: { code: problem.code, message: problem.message } };
  }
  return item;
}

/**
 * Decodes a batch; the items that decoded go to the service and `merge` puts its per-item results
 * back beside the decoding failures, in the original order.
 */
export function decodeBatch<R>(messages: readonly VectorItemMsg[], withMetadata: boolean) {
  const good: DecodedItem[] = [];
  const at: number[] = [];
  const failed = new Map<number, ItemError>();
  messages.forEach((m, i) => {
    const decoded = decodeItem(m, withMetadata);
    if ('error' in decoded) failed.set(i, decoded.error);
    else {
      good.push(decoded);
      at.push(i);
    }
  });
  return {
    good,
    merge(results: readonly R[], failure: (externalId: string, error: ItemError) => R): R[] {
      const out = new Array<R>(messages.length);
      at.forEach((i, j) => (out[i] = results[j]));
      for (const [i, error] of failed) out[i] = failure(messages[i].externalId, error);
      return out;
    },
  };
}

export interface SelectMsg {
  dataset: string;
  order?: string;
  fraction?: number;
  count?: number;
  balance?: string;
  seed?: number;
  outlierFraction?: number;
  bins?: number;
  chunkSize?: number;
}

export function selectionRequest(req: SelectMsg): SelectionRequest {
  const order = fromEnum('SELECTION_ORDER_', req.order, ORDERS, 'order', 'INVALID_SELECTION');
  if (order === undefined) throw new ServiceError('invalid', 'INVALID_SELECTION', 'order is required', { field: 'order' });
  return {
    order,
    fraction: req.fraction,
    count: req.count,
    balance: fromEnum('BALANCE_', req.balance, BALANCES, 'balance', 'INVALID_SELECTION'),
    seed: req.seed,
    outlierFraction: req.outlierFraction,
    bins: req.bins,
  };
}

export interface ScorePolicyMsg {
  order?: string;
  fraction?: number;
  balance?: string;
  seed?: number;
  epsilon?: number;
  outlierFraction?: number;
  bins?: number;
}

export function scorePolicy(msg: ScorePolicyMsg | null | undefined): Partial<ScorePolicy> {
  if (!msg) return {};
  return defined({
    order: fromEnum('SELECTION_ORDER_', msg.order, ORDERS, 'policy.order', 'INVALID_SELECTION'),
    fraction: msg.fraction,
    balance: fromEnum('BALANCE_', msg.balance, BALANCES, 'policy.balance', 'INVALID_SELECTION'),
    seed: msg.seed,
    epsilon: msg.epsilon,
    outlierFraction: msg.outlierFraction,
    bins: msg.bins,
  });
}

// ---- messages out ----------------------------------------------------------------------------

export function datasetMessage(d: Dataset) {
  const s = d.settings;
  return {
    id: d.id,
    name: d.name,
    dimension: d.dimension,
    k: opt(d.k),
    model: d.modelName !== null ? { name: d.modelName, sha256: d.modelSha256 ?? '' } : null,
    settings: {
      seed: s.seed,
      minItemsForFit: s.minItemsForFit,
      autoRefit: s.autoRefit,
      refit: { meanDrift: s.refit.meanDrift, maxDrift: s.refit.maxDrift, arrivedFraction: s.refit.arrivedFraction },
      duplicateEpsilon: s.duplicateEpsilon,
      maxIterations: s.maxIterations,
      tolerance: s.tolerance,
    },
    activeVersion: opt(d.activeVersion),
    createdAt: timestamp(d.createdAt),
    updatedAt: timestamp(d.updatedAt),
  };
}

export function itemOutcomeMessage(o: ItemOutcome) {
  if (o.status === 'error') {
    return { externalId: o.externalId, status: 'ITEM_STATUS_ERROR', errorCode: o.code, errorMessage: o.message };
  }
  return { externalId: o.externalId, status: toEnum('ITEM_STATUS_', o.status), score: opt(o.score), cluster: opt(o.cluster) };
}

export function jobMessage(j: JobView) {
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

export function candidateMessage(c: CandidateScore) {
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

export function scoreResultMessage(r: ScoreResult, items: unknown[]) {
  return {
    prototypeVersion: r.prototypeVersion,
    policy: {
      order: toEnum('SELECTION_ORDER_', r.policy.order),
      fraction: r.policy.fraction,
      balance: toEnum('BALANCE_', r.policy.balance),
      seed: r.policy.seed,
      epsilon: r.policy.epsilon,
    },
    items,
  };
}

export function prototypeStatusMessage(p: PrototypeStatus) {
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

export function duplicateReportMessage(r: DuplicateReport) {
  return { prototypeVersion: r.version, epsilon: r.epsilon, groups: r.groups, duplicateCount: r.duplicateCount };
}

export function statsMessage(s: DatasetStats) {
  return {
    dataset: s.dataset,
    itemCount: s.itemCount,
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

export function itemMessage(i: ItemView) {
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

export function apiKeyMessage(key: ApiKeyView) {
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
