import { Type, type TLiteral, type TSchema } from '@sinclair/typebox';
import {
  DEFAULT_BINS,
  DEFAULT_OUTLIER_FRACTION,
  DEFAULT_SELECTION_ORDER,
  REQUESTED_ORDER_NAMES,
  SELECTION_ORDER_NAMES,
  type RequestedOrder,
  type SelectionOrder,
} from '../../../core/selection.js';
import { MAX_DIMENSION, MAX_K } from '../../../service/datasets.js';
import { DEFAULT_GROUP_PAGE_LIMIT, MAX_GROUP_PAGE_LIMIT, DATASET_NAME_MAX_LENGTH, DATASET_NAME_PATTERN, EXTERNAL_ID_MAX_LENGTH, KEY_MAX_DATASETS, KEY_NAME_MAX_LENGTH, MAX_SELECTION_BINS } from '../../../service/limits.js';
import { DEDUP_KEEPS, type DedupKeep } from '../../../service/dedup-stage.js';
import { FILTER_LIMITS, FILTER_OPS } from '../../../service/metadata-filter.js';
import { DEFAULT_SCORE_POLICY } from '../../../service/score.js';
import { MAX_PAGE_LIMIT } from '../../../service/selection.js';
import { DatasetSettingsInputSchema, DatasetSettingsSchema } from '../../../service/settings.js';

/** Schemas of the /v1 API. Each has an $id so OpenAPI lists it once under components. */

const Nullable = <T extends TSchema>(schema: T) => Type.Union([schema, Type.Null()]);
const DateTime = Type.String({ format: 'date-time' });

export const DatasetParams = Type.Object({ dataset: Type.String({ description: 'Dataset name', minLength: 1, maxLength: DATASET_NAME_MAX_LENGTH }) });
export const ItemParams = Type.Object({
  dataset: Type.String({ minLength: 1, maxLength: DATASET_NAME_MAX_LENGTH }),
  externalId: Type.String({ description: 'The item’s external id (percent-encoded)', minLength: 1, maxLength: EXTERNAL_ID_MAX_LENGTH }),
});

const OrderDescription =
  'auto (default): the service picks from the data (README: order=auto) and says which; hardest/easiest: by score; random: seeded baseline; stratified: CCS (drop the β hardest, fill equal-width score bins evenly); ' +
  'moderate: closest to the median score; hierarchical: balanced hierarchical sampling over the prototypes (Vo et al. 2024)';
/**
 * The orders of the selection registry, as a union of their literals. Typed as one literal of the
 * union SelectionOrder: TypeBox (and fastify's type provider) infer unions only from tuples, and the
 * registry's names are an array.
 */
const orderSchema = (options: { description: string; default?: RequestedOrder }) =>
  Type.Union(REQUESTED_ORDER_NAMES.map((name) => Type.Literal(name)), options) as unknown as TLiteral<RequestedOrder>;
export const Order = orderSchema({ description: OrderDescription });

export const Balance = Type.Union([Type.Literal('none'), Type.Literal('cluster')], { description: 'cluster: every cluster keeps the same fraction' });

/** An order that ran: never auto. */
const AppliedOrder = Type.Union(SELECTION_ORDER_NAMES.map((name) => Type.Literal(name))) as unknown as TLiteral<SelectionOrder>;

/** The policy a selection ran, and how it moved the clusters' shares. */
export const AppliedPolicy = Type.Object(
  {
    order: AppliedOrder,
    balance: Balance,
    auto: Nullable(
      Type.Object(
        {
          order: AppliedOrder,
          balance: Balance,
          keptPerCluster: Type.Number({ description: 'Kept items per non-empty cluster' }),
          clusterScoreCv: Type.Number({ description: 'Coefficient of variation of the clusters’ mean scores' }),
        },
        { description: 'What order=auto measured and chose (null when the request named its order)' },
      ),
    ),
  },
  { description: 'The order and balance that ran' },
);

export const Imbalance = Nullable(
  Type.Object(
    {
      minSurvival: Type.Number(),
      maxSurvival: Type.Number(),
      maxMinRatio: Nullable(Type.Number({ description: 'null when a cluster keeps nothing' })),
      survivalCv: Type.Number({ description: 'Coefficient of variation of kept / size over the non-empty clusters' }),
      randomSurvivalCv: Type.Number({ description: 'The survival CV uniform random sampling of the same size gives in expectation' }),
    },
    { description: 'Imbalance amplification: how the selection changed the clusters’ shares, next to random sampling (null for an empty selection)' },
  ),
);
/** Which member of a near-duplicate group a dedup-then-prune selection keeps. */
const DedupKeepSchema = (options: { description?: string } = {}) => Type.Union(DEDUP_KEEPS.map((k) => Type.Literal(k)), options) as unknown as TLiteral<DedupKeep>;


const Epsilon = Type.Number({ minimum: 0, maximum: 2, description: 'similarity ≥ 1 − ε is a duplicate; default: the dataset’s' });


export const CreateDatasetBody = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: DATASET_NAME_MAX_LENGTH, pattern: DATASET_NAME_PATTERN }),
    dimension: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: MAX_DIMENSION,
        description: 'Embedding-only dataset of this dimension (at most 4,000: the near-duplicate index is pgvector HNSW, on halfvec above 2,000). Omit for an image dataset embedded by the server’s model.',
      }),
    ),
    k: Type.Optional(Nullable(Type.Integer({ minimum: 1, maximum: MAX_K, description: 'Prototypes; omitted: round(√(N/2)) clamped to [2, settings.maxK] at each full fit' }))),
    settings: Type.Optional(DatasetSettingsInputSchema),
  },
  { $id: 'CreateDataset', additionalProperties: false },
);

export const Dataset = Type.Object(
  {
    name: Type.String(),
    dimension: Type.Integer(),
    k: Nullable(Type.Integer()),
    model: Nullable(Type.Object({ name: Type.String(), sha256: Type.String() })),
    activeVersion: Nullable(Type.Integer()),
    settings: DatasetSettingsSchema,
    createdAt: DateTime,
    updatedAt: DateTime,
  },
  { $id: 'Dataset' },
);

export const DatasetList = Type.Object({ datasets: Type.Array(Type.Ref(Dataset)) }, { $id: 'DatasetList' });

export const Embedding = Type.Union([Type.Array(Type.Number()), Type.String({ description: 'base64 of little-endian float32' })]);

export const IngestBody = Type.Object(
  {
    items: Type.Array(
      Type.Object(
        {
          externalId: Type.String({ minLength: 1, maxLength: EXTERNAL_ID_MAX_LENGTH }),
          image: Type.Optional(Type.String({ description: 'base64 of a JPEG, PNG, WebP, GIF or TIFF file' })),
          embedding: Type.Optional(Embedding),
          metadata: Type.Optional(Type.Object({}, { additionalProperties: true })),
        },
        { additionalProperties: false },
      ),
      { minItems: 1, description: 'At most MAX_ITEMS_PER_REQUEST items; each has exactly one of image and embedding' },
    ),
  },
  { $id: 'IngestRequest', additionalProperties: false },
);

export const ItemError = Type.Object({
  externalId: Type.String(),
  status: Type.Literal('error'),
  code: Type.String(),
  message: Type.String(),
});

export const IngestResponse = Type.Object(
  {
    prototypeVersion: Nullable(Type.Integer()),
    scheduledJobId: Nullable(Type.String()),
    counts: Type.Object({ stored: Type.Integer(), updated: Type.Integer(), failed: Type.Integer() }),
    items: Type.Array(
      Type.Union([
        Type.Object({
          externalId: Type.String(),
          status: Type.Union([Type.Literal('stored'), Type.Literal('updated')]),
          score: Nullable(Type.Number()),
          cluster: Nullable(Type.Integer()),
        }),
        ItemError,
      ]),
    ),
  },
  { $id: 'IngestResponse' },
);

/** Selection ids per JSON page when the request gives no `limit`. */
export const DEFAULT_PAGE_LIMIT = 1000;

const FILTER_DESCRIPTION =
  'Only items whose metadata matches, as JSON: `{"contains": {…}, "where": [{"field": "a.b", "op": "eq|ne|lt|lte|gt|gte|in|exists|missing", "value": …}]}` — ' +
  '`contains` is JSON containment (`metadata @> contains`, GIN-indexed); every condition must hold. eq/ne compare JSON values (a missing field equals nothing); ' +
  'lt/lte/gt/gte compare a number with a number or a string with a string (byte order), false otherwise; in takes an array; exists/missing take no value.';

/** A metadata filter in a query string: its JSON text. */
export const FilterParam = Type.String({ maxLength: 32_768, description: FILTER_DESCRIPTION });

/** A metadata filter in a JSON body (validated in full by the service: INVALID_FILTER). */
export const MetadataFilter = Type.Object(
  {
    contains: Type.Optional(Type.Object({}, { additionalProperties: true, description: 'An object the metadata must contain' })),
    where: Type.Optional(
      Type.Array(
        Type.Object(
          {
            field: Type.String({ description: 'A metadata key, or a dotted path (camera.model)' }),
            op: Type.Union(FILTER_OPS.map((op) => Type.Literal(op))),
            value: Type.Optional(Type.Unknown({ description: 'A string, number, boolean or null; an array of them for in; none for exists/missing' })),
          },
          { additionalProperties: false },
        ),
        { maxItems: FILTER_LIMITS.conditions },
      ),
    ),
  },
  { additionalProperties: false, description: FILTER_DESCRIPTION },
);

/** What the dedup step of a dedup-then-prune selection did. */
export const DedupOutcome = Type.Object(
  {
    jobId: Type.String({ description: 'The dedup run whose groups were used' }),
    epsilon: Type.Number(),
    keep: DedupKeepSchema(),
    dropped: Type.Integer({ description: 'Items (of the matched ones) dropped as near-duplicates before the policy ran; the policy then dropped matched − dropped − size' }),
  },
  { description: 'The dedup step (null without dedup=true)' },
);

export const StatsQuery = Type.Object({ filter: Type.Optional(FilterParam) }, { additionalProperties: false });

export const SelectionQuery = Type.Object(
  {
    order: Type.Optional(orderSchema({ description: OrderDescription, default: DEFAULT_SELECTION_ORDER })),
    fraction: Type.Optional(Type.Number({ description: 'Keep this fraction, in (0, 1]' })),
    count: Type.Optional(Type.Integer({ minimum: 0, description: 'Keep this many (instead of fraction)' })),
    balance: Type.Optional(Balance),
    seed: Type.Optional(Type.Integer()),
    outlierFraction: Type.Optional(Type.Number({ minimum: 0, exclusiveMaximum: 1, description: `stratified: β, the hardest fraction set aside (default ${DEFAULT_OUTLIER_FRACTION})` })),
    bins: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_SELECTION_BINS, description: `stratified: score bins (default ${DEFAULT_BINS})` })),
    filter: Type.Optional(FilterParam),
    dedup: Type.Optional(Type.Boolean({ description: 'Dedup, then prune: drop SemDeDup near-duplicates first (one member of each group stays), then apply the policy to what remains; `fraction` is of the items before dedup' })),
    epsilon: Type.Optional({ ...Epsilon, description: 'dedup: the run at this ε (newest completed of the active version); default the dataset’s duplicateEpsilon' }),
    dedupJob: Type.Optional(Type.String({ maxLength: 64, description: 'dedup: this dedup job’s run instead' })),
    dedupKeep: Type.Optional(DedupKeepSchema({ description: 'dedup: which member of a group stays — farthest from its prototype (SemDeDup’s choice, default), closest, random (by seed), or the highest/lowest number in metadata field dedupKeepField' })),
    dedupKeepField: Type.Optional(Type.String({ maxLength: 1024, description: 'dedup: the numeric metadata field (key or dotted path) of dedupKeep=highest|lowest' })),
    format: Type.Optional(Type.Union([Type.Literal('json'), Type.Literal('ndjson'), Type.Literal('csv')], { description: 'Overrides the Accept header' })),
    cursor: Type.Optional(Type.String({ description: 'json: nextCursor of the previous page' })),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_PAGE_LIMIT, description: `json: ids per page (default ${DEFAULT_PAGE_LIMIT})` })),
  },
  { additionalProperties: false },
);

export const SelectionPage = Type.Object(
  {
    prototypeVersion: Type.Integer(),
    total: Type.Integer({ description: 'Items in the dataset' }),
    matched: Type.Integer({ description: 'Items matching the filter, which the budget applies to (total without a filter)' }),
    dedup: Nullable(DedupOutcome),
    policy: AppliedPolicy,
    imbalance: Imbalance,
    size: Type.Integer({ description: 'Items in the whole selection' }),
    externalIds: Type.Array(Type.String()),
    nextCursor: Nullable(Type.String()),
  },
  { $id: 'SelectionPage' },
);

export const ScoreBody = Type.Object(
  {
    items: Type.Array(
      Type.Object(
        {
          externalId: Type.String({ minLength: 1, maxLength: EXTERNAL_ID_MAX_LENGTH }),
          image: Type.Optional(Type.String({ description: 'base64 image file' })),
          embedding: Type.Optional(Embedding),
        },
        { additionalProperties: false },
      ),
      { minItems: 1 },
    ),
    policy: Type.Optional(
      Type.Object(
        {
          order: Type.Optional(Order),
          fraction: Type.Optional(Type.Number({ description: `in (0, 1]; default ${DEFAULT_SCORE_POLICY.fraction}` })),
          balance: Type.Optional(Balance),
          seed: Type.Optional(Type.Integer()),
          epsilon: Type.Optional(Type.Number({ minimum: 0, maximum: 2, description: 'near-duplicate threshold; default: the dataset’s' })),
          outlierFraction: Type.Optional(Type.Number({ minimum: 0, exclusiveMaximum: 1 })),
          bins: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_SELECTION_BINS })),
          filter: Type.Optional(MetadataFilter),
        },
        { additionalProperties: false },
      ),
    ),
  },
  { $id: 'ScoreRequest', additionalProperties: false },
);

export const ScoreResponse = Type.Object(
  {
    prototypeVersion: Type.Integer(),
    policy: Type.Object({ order: Order, fraction: Type.Number(), balance: Balance, seed: Type.Integer(), epsilon: Type.Number(), auto: AppliedPolicy.properties.auto }),
    matched: Nullable(Type.Integer({ description: 'Stored items the decisions and percentiles were taken against: those matching the policy’s filter (all without one); null when no item was scored' })),
    items: Type.Array(
      Type.Union([
        Type.Object({
          externalId: Type.String(),
          status: Type.Literal('scored'),
          score: Type.Number(),
          cluster: Type.Integer(),
          percentile: Type.Number(),
          nearest: Nullable(Type.Object({ externalId: Type.String(), similarity: Type.Number() })),
          duplicate: Type.Boolean(),
          decision: Type.Union([Type.Literal('keep'), Type.Literal('skip')]),
          reason: Type.Union([Type.Literal('policy-keep'), Type.Literal('policy-prune'), Type.Literal('near-duplicate')]),
        }),
        ItemError,
      ]),
    ),
  },
  { $id: 'ScoreResponse' },
);

export const Job = Type.Object(
  {
    id: Type.String(),
    dataset: Nullable(Type.String()),
    kind: Type.String(),
    state: Type.Union(['queued', 'running', 'succeeded', 'failed', 'cancelled'].map((s) => Type.Literal(s))),
    phase: Nullable(Type.String()),
    progress: Type.Object({ done: Type.Number(), total: Type.Number(), fraction: Type.Number() }),
    result: Nullable(Type.Object({}, { additionalProperties: true })),
    error: Nullable(Type.String()),
    attempts: Type.Integer(),
    createdAt: DateTime,
    startedAt: Nullable(DateTime),
    finishedAt: Nullable(DateTime),
  },
  { $id: 'Job' },
);

const Drift = Type.Object({ mean: Type.Number(), max: Type.Number() });

export const Prototypes = Type.Object(
  {
    version: Nullable(Type.Integer()),
    k: Nullable(Type.Integer()),
    clusterSizes: Type.Array(Type.Integer()),
    revision: Type.Integer(),
    fitItems: Type.Number(),
    itemsSinceFit: Type.Number(),
    arrivedFraction: Type.Number(),
    drift: Drift,
    objective: Nullable(Type.Number()),
    fittedAt: Nullable(DateTime),
    refitJob: Nullable(Type.Ref(Job)),
  },
  { $id: 'Prototypes' },
);


export const DedupJobBody = Type.Object({ epsilon: Type.Optional(Epsilon) }, { additionalProperties: false });


export const DuplicatesQuery = Type.Object(
  {
    epsilon: Type.Optional(Epsilon),
    job: Type.Optional(Type.String({ maxLength: 64, description: 'A dedup job id: its run instead of the newest of the active version at ε' })),
    format: Type.Optional(Type.Union([Type.Literal('json'), Type.Literal('ndjson'), Type.Literal('csv')], { description: 'Overrides the Accept header' })),
    cursor: Type.Optional(Type.String({ maxLength: 80, description: 'json: nextCursor of the previous page (it pins the run)' })),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_GROUP_PAGE_LIMIT, description: `json: groups per page (default ${DEFAULT_GROUP_PAGE_LIMIT})` })),
  },
  { additionalProperties: false },
);

export const ScoreExportQuery = Type.Object(
  {
    format: Type.Optional(Type.Union([Type.Literal('ndjson'), Type.Literal('csv'), Type.Literal('parquet')], { description: 'Overrides the Accept header (default NDJSON)' })),
    epsilon: Type.Optional(Epsilon),
    job: Type.Optional(Type.String({ maxLength: 64, description: 'A dedup job id of the active version: its groups fill the duplicate columns' })),
    filter: Type.Optional(FilterParam),
  },
  { additionalProperties: false },
);

export const DuplicateGroup = Type.Object(
  {
    kept: Type.String({
      description: 'The item SemDeDup keeps in this group (the farthest from its prototype); a pair across a cluster boundary can make it a duplicate of another group’s kept item — following duplicates always ends at a kept item',
    }),
    duplicates: Type.Array(Type.String(), { description: 'Its near-duplicates, most similar first' }),
    similarities: Type.Array(Type.Number(), { description: 'Cosine similarity of each duplicate to the kept item' }),
  },
  { additionalProperties: false },
);

export const Duplicates = Type.Object(
  {
    jobId: Type.String({ description: 'The dedup job whose run this is' }),
    prototypeVersion: Type.Integer(),
    epsilon: Type.Number(),
    groupCount: Type.Integer({ description: 'Groups in the whole run' }),
    duplicateCount: Type.Integer({ description: 'Items the whole run would drop (all duplicates of all groups)' }),
    completedAt: Type.String({ format: 'date-time' }),
    groups: Type.Array(DuplicateGroup),
    nextCursor: Nullable(Type.String()),
  },
  { $id: 'Duplicates' },
);

export const Stats = Type.Object(
  {
    dataset: Type.String(),
    itemCount: Type.Integer({ description: 'Items (matching the filter, under one)' }),
    matched: Type.Integer({ description: 'Items matching the filter (itemCount); the counts, histogram and cluster sizes describe them' }),
    scoredCount: Type.Integer(),
    prototypeVersion: Nullable(Type.Integer()),
    k: Nullable(Type.Integer()),
    histogram: Type.Object({ binWidth: Type.Number(), counts: Type.Array(Type.Integer()) }, { description: 'Bin i holds scores in [i·w, (i+1)·w); the last bin also holds everything above' }),
    clusterSizes: Type.Array(Type.Integer()),
    drift: Drift,
    arrivedFraction: Type.Number(),
    lastRefit: Nullable(Type.Object({ version: Type.Integer(), fittedAt: DateTime })),
    refitJob: Nullable(Type.Ref(Job)),
    ingest: Type.Object({
      lastHour: Type.Integer(),
      last24Hours: Type.Integer(),
      hourly: Type.Array(Type.Object({ hour: DateTime, items: Type.Integer() })),
    }),
  },
  { $id: 'Stats' },
);

export const Item = Type.Object(
  {
    externalId: Type.String(),
    metadata: Type.Object({}, { additionalProperties: true }),
    score: Nullable(Type.Number()),
    cluster: Nullable(Type.Integer()),
    prototypeVersion: Nullable(Type.Integer()),
    createdAt: DateTime,
    updatedAt: DateTime,
  },
  { $id: 'Item' },
);

export const Scope = Type.Union([Type.Literal('read'), Type.Literal('write'), Type.Literal('admin')]);

export const CreateKeyBody = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: KEY_NAME_MAX_LENGTH }),
    scopes: Type.Array(Scope, { minItems: 1, description: 'admin implies write implies read' }),
    datasets: Type.Optional(
      Type.Array(Type.String({ minLength: 1, maxLength: DATASET_NAME_MAX_LENGTH, pattern: DATASET_NAME_PATTERN }), {
        maxItems: KEY_MAX_DATASETS,
        description: 'Limit the key to these datasets; empty or omitted: all. A key limited to datasets can only mint keys limited to a subset of them.',
      }),
    ),
  },
  { $id: 'CreateApiKey', additionalProperties: false },
);

export const ApiKey = Type.Object(
  {
    id: Type.String(),
    name: Type.String(),
    scopes: Type.Array(Scope),
    datasets: Type.Array(Type.String()),
    createdAt: DateTime,
    lastUsedAt: Nullable(DateTime),
    revokedAt: Nullable(DateTime),
  },
  { $id: 'ApiKey' },
);

export const MintedKey = Type.Intersect([ApiKey, Type.Object({ secret: Type.String({ description: 'Shown once; send as Authorization: Bearer <secret>' }) })], {
  $id: 'MintedApiKey',
});

export const ApiKeyList = Type.Object({ keys: Type.Array(Type.Ref(ApiKey)) }, { $id: 'ApiKeyList' });

export const KeyParams = Type.Object({ id: Type.String() });

/** Shared schemas the routes reference with Type.Ref. */
export const SHARED_SCHEMAS = [Dataset, Job, ApiKey];
