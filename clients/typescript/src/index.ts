/**
 * The typed TypeScript client of the protoprune REST API: `raw` is an openapi-fetch client typed by
 * the generated `openapi.d.ts` (every operation of openapi/openapi.json), and the methods wrap the
 * calls most programs make — ingest, streamed selections and exports, scoring, jobs.
 */
import createFetchClient, { type Client } from 'openapi-fetch';
import { ProtopruneError, refusedItems } from './errors.js';
import { EMBEDDING_FRAME_MEDIA_TYPE, encodeEmbeddingFrames, type EmbeddingBatch } from './frames.js';
import { ndjsonLines } from './ndjson.js';
import type { operations, paths } from './openapi.js';
import { retryingFetch, sleep, type RetryOptions } from './retry.js';

export { ProtopruneError, parseRetryAfter, refusedItems, type ItemProblem } from './errors.js';
export { EMBEDDING_FRAME_MEDIA_TYPE, encodeEmbeddingFrames, type EmbeddingBatch } from './frames.js';
export { ndjsonLines } from './ndjson.js';
export type { RetryOptions } from './retry.js';
export type { components, operations, paths } from './openapi.js';

type JsonAnswer<Op extends keyof operations, Status extends keyof operations[Op]['responses']> = operations[Op]['responses'][Status] extends {
  content: { 'application/json': infer Body };
}
  ? Body
  : never;
type JsonBody<Op extends keyof operations> = operations[Op] extends { requestBody?: { content: { 'application/json': infer Body } } } ? Body : never;
type QueryOf<Op extends keyof operations> = NonNullable<operations[Op]['parameters']['query']>;

export type Dataset = JsonAnswer<'getDataset', 200>;
export type CreateDatasetRequest = JsonBody<'createDataset'>;
export type Job = JsonAnswer<'getJob', 200>;
export type IngestResult = JsonAnswer<'ingestItems', 200>;
export type IngestOutcome = IngestResult['items'][number];
export type SelectionPage = JsonAnswer<'selectItems', 200>;
export type ScoreRequest = JsonBody<'scoreItems'>;
export type ScoreResult = JsonAnswer<'scoreItems', 200>;
export type Stats = JsonAnswer<'getDatasetStats', 200>;
export type Prototypes = JsonAnswer<'getPrototypes', 200>;
export type Duplicates = JsonAnswer<'listDuplicates', 200>;
export type ApiKey = JsonAnswer<'revokeApiKey', 200>;
export type MintedApiKey = JsonAnswer<'createApiKey', 201>;
export type CreateApiKeyRequest = JsonBody<'createApiKey'>;
export type Manifest = JsonAnswer<'createManifest', 201>;
export type CreateManifestRequest = JsonBody<'createManifest'>;
export type ManifestPage = JsonAnswer<'listManifests', 200>;
export type MetadataFilter = NonNullable<NonNullable<ScoreRequest['policy']>['filter']>;
/** GET …/selection's parameters, with `filter` as an object; the format, cursor and page size are the method's. */
export type SelectionQuery = Omit<QueryOf<'selectItems'>, 'filter' | 'format' | 'cursor' | 'limit'> & { filter?: MetadataFilter };
/** GET …/scores's parameters, with `filter` as an object. */
export type ScoreExportQuery = Omit<QueryOf<'exportScores'>, 'filter' | 'format'> & { filter?: MetadataFilter };
export type DuplicatesQuery = Omit<QueryOf<'listDuplicates'>, 'format'>;

/** One line of a streamed selection. */
export interface SelectionRow {
  externalId: string;
}

/** One line of the score export (NDJSON), easiest first. */
export interface ScoreRow {
  externalId: string;
  score: number;
  cluster: number;
  percentile: number;
  prototypeVersion: number;
  duplicateOf: string | null;
  duplicateSimilarity: number | null;
  duplicateGroup: string | null;
  metadata: Record<string, unknown>;
}

/** What a streamed selection's headers say about it. */
export interface SelectionInfo {
  prototypeVersion: number;
  total: number;
  matched: number;
  size: number;
  /** The policy that ran, e.g. `hardest` or `random+cluster`. */
  policy: string;
  imbalance: SelectionPage['imbalance'];
  dedup: { jobId: string; dropped: number } | null;
}

/** What the score export's headers say about it. */
export interface ScoreExportInfo {
  prototypeVersion: number;
  total: number;
  matched: number;
  /** The dedup run that filled the duplicate columns, or null. */
  dedupJobId: string | null;
}

/** Parsed rows of a streamed answer, read as they arrive. Not iterating it at all: `cancel()` frees the server's snapshot. */
export interface RowStream<Row, Info> extends AsyncIterable<Row> {
  readonly info: Info;
  cancel(): Promise<void>;
}

/** What a manifest's id stream's headers say about it. */
export interface ManifestIdsInfo {
  prototypeVersion: number;
  count: number;
  /** SHA-256 of the ids in order, each id's UTF-8 bytes followed by a NUL byte. */
  sha256: string;
}

/** The raw bytes of a streamed answer (e.g. CSV or Parquet to write to a file). */
export interface ByteStream<Info> {
  readonly info: Info;
  readonly body: ReadableStream<Uint8Array>;
}

export interface ImageItem {
  externalId: string;
  /** The file's bytes: JPEG, PNG, WebP, GIF or TIFF. */
  image: Uint8Array;
  metadata?: Record<string, unknown>;
}

export interface ClientOptions {
  /** The server, e.g. http://127.0.0.1:8080 (a path prefix is kept). */
  baseUrl: string;
  /** Sent as `Authorization: Bearer <apiKey>`; omit for a server with AUTH_DISABLED=true. */
  apiKey?: string;
  /** The fetch to use (default: the global one). */
  fetch?: (request: Request) => Promise<Response>;
  /** Retries of refused (429/503) idempotent calls. */
  retry?: RetryOptions;
}

export interface WaitOptions {
  /** Called with the job after every poll, the last (finished) one included. */
  onProgress?: (job: Job) => void;
  signal?: AbortSignal;
  /** Between polls (default 500 ms). */
  intervalMs?: number;
}

/** Most ids the server's existence lookup takes per request. */
export const EXISTENCE_LOOKUP_LIMIT = 10_000;

const FINISHED_STATES: ReadonlySet<Job['state']> = new Set(['succeeded', 'failed', 'cancelled']);

type Answer<Data> = { data?: Data; error?: unknown; response: Response };
type DataOf<R> = R extends { data: infer Data } ? Data : never;

/** The answer's data, or its error as a ProtopruneError. */
async function unwrap<R extends Answer<unknown>>(call: Promise<R>): Promise<DataOf<R>> {
  const { data, error, response } = await call;
  if (!response.ok) throw ProtopruneError.fromResponse(response, error);
  return data as DataOf<R>;
}

/** A streamed answer's unread body and its headers, or its error as a ProtopruneError. */
async function streamed(call: Promise<Answer<ReadableStream<Uint8Array> | null>>): Promise<{ body: ReadableStream<Uint8Array>; response: Response }> {
  const { data, error, response } = await call;
  if (!response.ok) throw ProtopruneError.fromResponse(response, error);
  // openapi-fetch hands over no stream for an empty body (an empty selection).
  return { body: data ?? new ReadableStream({ start: (controller) => controller.close() }), response };
}

/** An ingest refused as a whole (no item could be used), as the outcome of a batch: every item failing on its own. */
function refusedBatch(error: unknown): IngestResult | null {
  const failures = refusedItems(error);
  if (!failures) return null;
  return {
    prototypeVersion: null,
    scheduledJobId: null,
    counts: { stored: 0, updated: 0, failed: failures.length },
    items: failures.map(({ externalId, code, message }) => ({ externalId, status: 'error' as const, code, message })),
  };
}

/** The outcome of a synchronous ingest (no `async=true`: a 200 with its items, never a 202 job). */
async function asBatchOutcome(call: Promise<IngestResult | Job>): Promise<IngestResult> {
  try {
    return (await call) as IngestResult;
  } catch (error) {
    const refused = refusedBatch(error);
    if (refused) return refused;
    throw error;
  }
}

function intHeader(response: Response, name: string): number {
  return Number(response.headers.get(name) ?? Number.NaN);
}

function selectionInfo(response: Response): SelectionInfo {
  const imbalance = response.headers.get('x-selection-imbalance');
  const dedupJob = response.headers.get('x-dedup-job');
  return {
    prototypeVersion: intHeader(response, 'x-prototype-version'),
    total: intHeader(response, 'x-selection-total'),
    matched: intHeader(response, 'x-selection-matched'),
    size: intHeader(response, 'x-selection-size'),
    policy: response.headers.get('x-selection-policy') ?? '',
    imbalance: imbalance === null ? null : (JSON.parse(imbalance) as SelectionInfo['imbalance']),
    dedup: dedupJob === null ? null : { jobId: dedupJob, dropped: intHeader(response, 'x-selection-dedup-dropped') },
  };
}

function exportInfo(response: Response): ScoreExportInfo {
  return {
    prototypeVersion: intHeader(response, 'x-prototype-version'),
    total: intHeader(response, 'x-export-total'),
    matched: intHeader(response, 'x-export-matched'),
    dedupJobId: response.headers.get('x-dedup-job'),
  };
}

function manifestIdsInfo(response: Response): ManifestIdsInfo {
  return { prototypeVersion: intHeader(response, 'x-prototype-version'), count: intHeader(response, 'x-manifest-count'), sha256: response.headers.get('x-manifest-sha256') ?? '' };
}

function rowStream<Row, Info>(body: ReadableStream<Uint8Array>, info: Info): RowStream<Row, Info> {
  return { info, [Symbol.asyncIterator]: () => ndjsonLines<Row>(body), cancel: () => body.cancel() };
}

const filterParameter = (filter: MetadataFilter | undefined) => (filter === undefined ? undefined : JSON.stringify(filter));

export class ProtopruneClient {
  /** The openapi-fetch client: every operation, typed (`raw.GET('/v1/datasets/{dataset}', …)`). */
  readonly raw: Client<paths>;

  constructor(options: ClientOptions) {
    const baseFetch = options.fetch ?? ((request: Request) => globalThis.fetch(request));
    this.raw = createFetchClient<paths>({
      baseUrl: options.baseUrl.replace(/\/+$/, ''),
      fetch: retryingFetch(baseFetch, options.retry),
      headers: options.apiKey ? { authorization: `Bearer ${options.apiKey}` } : {},
    });
  }

  listDatasets(): Promise<Dataset[]> {
    return unwrap(this.raw.GET('/v1/datasets')).then((list) => list.datasets);
  }

  getDataset(dataset: string): Promise<Dataset> {
    return unwrap(this.raw.GET('/v1/datasets/{dataset}', { params: { path: { dataset } } }));
  }

  /** Give `dimension` for precomputed embeddings; omit it for images embedded by the server's model. */
  createDataset(request: CreateDatasetRequest): Promise<Dataset> {
    return unwrap(this.raw.POST('/v1/datasets', { body: request }));
  }

  async deleteDataset(dataset: string): Promise<void> {
    await unwrap(this.raw.DELETE('/v1/datasets/{dataset}', { params: { path: { dataset } } }));
  }

  /**
   * Stores images (at most MAX_ITEMS_PER_REQUEST, and within BODY_LIMIT_BYTES as base64 JSON);
   * re-sending an id replaces it. Each item succeeds or fails on its own, also when all fail.
   */
  ingestImages(dataset: string, items: readonly ImageItem[]): Promise<IngestResult> {
    const body = {
      items: items.map(({ externalId, image, metadata }) => ({ externalId, image: Buffer.from(image.buffer, image.byteOffset, image.byteLength).toString('base64'), metadata })),
    };
    return asBatchOutcome(unwrap(this.raw.POST('/v1/datasets/{dataset}/items', { params: { path: { dataset } }, body })));
  }

  /**
   * Stores precomputed float32 embeddings as one binary body (not bounded by MAX_ITEMS_PER_REQUEST,
   * only by BODY_LIMIT_BYTES). `results: 'errors'` lists only the failed items (the counts cover all).
   */
  ingestEmbeddings(dataset: string, batch: EmbeddingBatch, options: { results?: 'all' | 'errors' } = {}): Promise<IngestResult> {
    const frames = encodeEmbeddingFrames(batch);
    const call = this.raw.POST('/v1/datasets/{dataset}/items', {
      params: { path: { dataset }, query: options.results ? { results: options.results } : {} },
      body: frames,
      bodySerializer: (bytes) => bytes,
      headers: { 'content-type': EMBEDDING_FRAME_MEDIA_TYPE },
    });
    return asBatchOutcome(unwrap(call));
  }

  /** Which of `externalIds` the dataset holds (in their order, each once), in lookups of EXISTENCE_LOOKUP_LIMIT ids. */
  async findExistingItems(dataset: string, externalIds: readonly string[]): Promise<string[]> {
    const found: string[] = [];
    for (let at = 0; at < externalIds.length; at += EXISTENCE_LOOKUP_LIMIT) {
      const body = { externalIds: externalIds.slice(at, at + EXISTENCE_LOOKUP_LIMIT) };
      const answer = await unwrap(this.raw.POST('/v1/datasets/{dataset}/items/existing', { params: { path: { dataset } }, body }));
      found.push(...answer.externalIds);
    }
    return [...new Set(found)];
  }

  /**
   * One JSON page of a selection (`limit` ids, default 1000); pass its `nextCursor` (with the same
   * query) for the next page. The pages together are exactly the selection the first page computed.
   */
  selectPage(dataset: string, query: SelectionQuery, page: { cursor?: string; limit?: number } = {}): Promise<SelectionPage> {
    const { filter, ...rest } = query;
    const call = this.raw.GET('/v1/datasets/{dataset}/selection', {
      params: { path: { dataset }, query: { ...rest, filter: filterParameter(filter), ...page, format: 'json' } },
    });
    return unwrap(call) as Promise<SelectionPage>;
  }

  /** The whole selection, id by id in policy order, streamed (NDJSON) in constant memory. */
  async streamSelection(dataset: string, query: SelectionQuery): Promise<RowStream<SelectionRow, SelectionInfo>> {
    const { body, response } = await this.selectionStream(dataset, query, 'ndjson');
    return rowStream(body, selectionInfo(response));
  }

  /** The whole selection as the server's NDJSON or CSV bytes. */
  async downloadSelection(dataset: string, query: SelectionQuery, format: 'ndjson' | 'csv'): Promise<ByteStream<SelectionInfo>> {
    const { body, response } = await this.selectionStream(dataset, query, format);
    return { body, info: selectionInfo(response) };
  }

  private selectionStream(dataset: string, query: SelectionQuery, format: 'ndjson' | 'csv') {
    const { filter, ...rest } = query;
    return streamed(
      this.raw.GET('/v1/datasets/{dataset}/selection', {
        params: { path: { dataset }, query: { ...rest, filter: filterParameter(filter), format } },
        parseAs: 'stream',
      }),
    );
  }

  /** Every item's score, easiest first, streamed (NDJSON) in constant memory. */
  async streamScores(dataset: string, query: ScoreExportQuery = {}): Promise<RowStream<ScoreRow, ScoreExportInfo>> {
    const { body, response } = await this.scoreStream(dataset, query, 'ndjson');
    return rowStream(body, exportInfo(response));
  }

  /** The score export as the server's NDJSON, CSV or Parquet bytes. */
  async downloadScores(dataset: string, query: ScoreExportQuery, format: 'ndjson' | 'csv' | 'parquet'): Promise<ByteStream<ScoreExportInfo>> {
    const { body, response } = await this.scoreStream(dataset, query, format);
    return { body, info: exportInfo(response) };
  }

  private scoreStream(dataset: string, query: ScoreExportQuery, format: 'ndjson' | 'csv' | 'parquet') {
    const { filter, ...rest } = query;
    return streamed(
      this.raw.GET('/v1/datasets/{dataset}/scores', {
        params: { path: { dataset }, query: { ...rest, filter: filterParameter(filter), format } },
        parseAs: 'stream',
      }),
    );
  }

  /** Scores new images (base64) or embeddings without storing them, with keep/skip decisions. */
  score(dataset: string, request: ScoreRequest): Promise<ScoreResult> {
    return unwrap(this.raw.POST('/v1/datasets/{dataset}/score', { params: { path: { dataset } }, body: request }));
  }

  stats(dataset: string, options: { filter?: MetadataFilter } = {}): Promise<Stats> {
    return unwrap(this.raw.GET('/v1/datasets/{dataset}/stats', { params: { path: { dataset }, query: { filter: filterParameter(options.filter) } } }));
  }

  prototypes(dataset: string): Promise<Prototypes> {
    return unwrap(this.raw.GET('/v1/datasets/{dataset}/prototypes', { params: { path: { dataset } } }));
  }

  /** Queues a full refit (asking while one is queued or running gives that job). */
  requestRefit(dataset: string): Promise<Job> {
    return unwrap(this.raw.POST('/v1/datasets/{dataset}/prototypes/refit', { params: { path: { dataset } } }));
  }

  /** Queues a SemDeDup run at ε (default: the dataset's duplicateEpsilon). */
  requestDedup(dataset: string, options: { epsilon?: number } = {}): Promise<Job> {
    return unwrap(this.raw.POST('/v1/datasets/{dataset}/duplicates/jobs', { params: { path: { dataset } }, body: options }));
  }

  /** One page of near-duplicate groups of a completed dedup run. */
  duplicates(dataset: string, query: DuplicatesQuery = {}): Promise<Duplicates> {
    const call = this.raw.GET('/v1/datasets/{dataset}/duplicates', { params: { path: { dataset }, query: { ...query, format: 'json' } } });
    return unwrap(call) as Promise<Duplicates>;
  }

  /** Saves a selection's (or a score export's) ordered ids as a manifest, fetched unchanged after any refit or ingest. */
  createManifest(dataset: string, request: CreateManifestRequest): Promise<Manifest> {
    return unwrap(this.raw.POST('/v1/datasets/{dataset}/manifests', { params: { path: { dataset } }, body: request }));
  }

  /** One page of the dataset's manifests, newest first (metadata only); pass its `nextCursor` for the next. */
  listManifests(dataset: string, page: { cursor?: string; limit?: number } = {}): Promise<ManifestPage> {
    return unwrap(this.raw.GET('/v1/datasets/{dataset}/manifests', { params: { path: { dataset }, query: page } }));
  }

  getManifest(id: string): Promise<Manifest> {
    return unwrap(this.raw.GET('/v1/manifests/{id}', { params: { path: { id }, query: { format: 'json' } } })) as Promise<Manifest>;
  }

  /** A manifest's ids in their stored order, streamed (NDJSON) in constant memory. */
  async streamManifestIds(id: string): Promise<RowStream<SelectionRow, ManifestIdsInfo>> {
    const { body, response } = await this.manifestStream(id, 'ndjson');
    return rowStream(body, manifestIdsInfo(response));
  }

  /** A manifest's ids as the server's NDJSON, CSV or Parquet bytes. */
  async downloadManifestIds(id: string, format: 'ndjson' | 'csv' | 'parquet'): Promise<ByteStream<ManifestIdsInfo>> {
    const { body, response } = await this.manifestStream(id, format);
    return { body, info: manifestIdsInfo(response) };
  }

  private manifestStream(id: string, format: 'ndjson' | 'csv' | 'parquet') {
    return streamed(this.raw.GET('/v1/manifests/{id}', { params: { path: { id }, query: { format } }, parseAs: 'stream' }));
  }

  async deleteManifest(id: string): Promise<void> {
    await unwrap(this.raw.DELETE('/v1/manifests/{id}', { params: { path: { id } } }));
  }

  getJob(id: string, options: { signal?: AbortSignal } = {}): Promise<Job> {
    return unwrap(this.raw.GET('/v1/jobs/{id}', { params: { path: { id } }, signal: options.signal }));
  }

  /** Polls a job until it succeeded, failed or was cancelled, and returns it in that state. */
  async waitForJob(id: string, options: WaitOptions = {}): Promise<Job> {
    const signal = options.signal ?? new AbortController().signal;
    for (;;) {
      const job = await this.getJob(id, { signal });
      options.onProgress?.(job);
      if (FINISHED_STATES.has(job.state)) return job;
      await sleep(options.intervalMs ?? 500, signal);
    }
  }

  createApiKey(request: CreateApiKeyRequest): Promise<MintedApiKey> {
    return unwrap(this.raw.POST('/v1/keys', { body: request }));
  }

  listApiKeys(): Promise<ApiKey[]> {
    return unwrap(this.raw.GET('/v1/keys')).then((list) => list.keys);
  }

  revokeApiKey(id: string): Promise<ApiKey> {
    return unwrap(this.raw.DELETE('/v1/keys/{id}', { params: { path: { id } } }));
  }
}

export function createClient(options: ClientOptions): ProtopruneClient {
  return new ProtopruneClient(options);
}
